/* HTTP/1.x header blocks: splitting and validating a block (llhttp has framed it), and writing the block that is
 * forwarded (hop-by-hop headers removed, X-Forwarded-* added). Pure functions over spans: no I/O, no libuv, so
 * they are unit-tested alone. */
#ifndef PX_H1_H
#define PX_H1_H
#include <stddef.h>
#include <sys/socket.h>

#include "rt/table-t.h"

#define PX_H1_MAX_HEADERS 128

#define PX_H1_MALFORMED (-1)      /* px_h1_scan: a line without a colon, obs-fold, a bad character */
#define PX_H1_TOO_MANY (-2)       /* px_h1_scan: more than <max> headers */
#define PX_H1_BAD_CONNECTION (-3) /* px_h1_check: a Connection token names Content-Length, Transfer-Encoding, Host */
#define PX_H1_BAD_HOST (-4)       /* px_h1_check: a Host count that <flags> refuses */

/* Splits the header block <block> (<len> bytes, ending with the empty line) into its first line (without CRLF)
 * and up to <max> headers whose values have surrounding whitespace trimmed. The spans point into <block>.
 * Names must be tokens, and the first line and every value may hold only field-value characters (RFC 9110
 * §5.5: no CR, LF, NUL or other control but HTAB). Returns the number of headers, PX_H1_TOO_MANY, or
 * PX_H1_MALFORMED. */
int px_h1_scan(const char *block, size_t len, rt_span_t *first_line, rt_header_t *hdrs, size_t max);

#define PX_H1_HOST_ONE 1u      /* px_h1_check: more than one Host is refused */
#define PX_H1_HOST_REQUIRED 2u /* px_h1_check: exactly one Host (an HTTP/1.1 request, RFC 9112 §3.2) */

/* Refuses a header block that a proxy cannot relay faithfully: a Connection token naming a header that frames
 * or addresses the message (dropping it as hop-by-hop would relay the body under another framing, or strip the
 * Host), and the Host counts <flags> asks for. Returns 0, PX_H1_BAD_CONNECTION or PX_H1_BAD_HOST. */
int px_h1_check(const rt_header_t *hdrs, size_t n, unsigned flags);

/* Splits a request line "METHOD TARGET HTTP/1.x" into spans. Returns 0, or -1 when malformed. */
int px_h1_request_line(rt_span_t line, rt_span_t *method, rt_span_t *target);

/* What the forwarded request needs besides the received headers. */
typedef struct px_h1_fwd_req_s {
    rt_span_t method, target;
    const char *client_ip; /* appended to X-Forwarded-For */
    const char *host;      /* Host to add when the request has none (HTTP/1.0), e.g. "10.0.0.7:8080" */
    unsigned upgrade : 1;  /* keep Upgrade and send "Connection: upgrade" */
} px_h1_fwd_req_t;

/* Writes the request header block sent upstream: request line as HTTP/1.1, the received headers minus the
 * hop-by-hop ones (Connection, Keep-Alive, Proxy-Connection, TE, Trailer, Upgrade and every header named in
 * Connection), X-Forwarded-For appended to (all received values joined, then <client_ip>), X-Forwarded-Proto
 * set to http, Host added when missing. Transfer-Encoding and Content-Length pass unchanged: the body is relayed
 * with its framing. Returns the length written, or 0 when it does not fit in <cap>. */
size_t px_h1_build_request(char *out, size_t cap, const px_h1_fwd_req_t *req, const rt_header_t *hdrs, size_t n);

/* What the forwarded response needs besides the received headers. */
typedef struct px_h1_fwd_res_s {
    rt_span_t status_line;
    const char *variant;     /* value of x-weir-variant, or NULL for none */
    const char *extra;       /* complete header lines to add ("Name: value\r\n"...), or NULL */
    unsigned close : 1;      /* send "Connection: close" */
    unsigned keep_alive : 1; /* send "Connection: keep-alive" (an HTTP/1.0 client that asked for it) */
    unsigned dechunk : 1;    /* the body is relayed without its chunked framing: drop Transfer-Encoding */
    unsigned upgrade : 1;    /* a 101: keep Upgrade and send "Connection: upgrade" */
} px_h1_fwd_res_t;

/* Writes the response header block sent to the client: the status line as received, the received headers minus
 * the hop-by-hop ones, then the Connection and x-weir-variant headers <res> asks for. Returns the length, or 0
 * when it does not fit in <cap>. */
size_t px_h1_build_response(char *out, size_t cap, const px_h1_fwd_res_t *res, const rt_header_t *hdrs, size_t n);

/* Writes a complete response made by weir itself: status, a short text body, Content-Length, and
 * "Connection: close" when <close>. Returns the length, or 0 when it does not fit. */
size_t px_h1_build_local(char *out, size_t cap, int status, const char *body, int close, const char *variant);

/* Writes the address of <sa> (AF_INET or AF_INET6) as text for X-Forwarded-For into <out> (at least
 * PX_H1_ADDR_TEXT bytes), NUL-terminated. IPv4 is formatted by hand: it runs once per request, and the
 * snprintf behind inet_ntop cost a tenth of weir's user time per request. */
#define PX_H1_ADDR_TEXT 48
void px_h1_addr_text(const struct sockaddr *sa, char *out);

/* The reason phrase of <status> ("Bad Gateway"), "" when unknown. */
const char *px_h1_reason(int status);

/* Case-insensitive comparison of a span with a NUL-terminated lowercase literal. */
int px_h1_span_ieq(rt_span_t s, const char *lower);

#endif
