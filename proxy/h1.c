/* HTTP/1.x header blocks: split and validate, write what is forwarded (include/px/h1.h).
 * llhttp runs in strict mode before these functions see a block, but the scanner does not trust it: the llhttp
 * that distributions ship (8.1) lets a bare CR through at the start of a header value, so every name is checked
 * as a token and every value against the field-value characters here, whatever parsed the block first. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "common/macros.h"
#include "px/h1.h"

#define MAX_CONN_TOKENS 16

/* Character classes: C_TOKEN for header names (RFC 9110 §5.6.2 tchar), C_VALUE for the first line and header
 * values (§5.5: VCHAR, obs-text, SP and HTAB; never CR, LF, NUL, another control or DEL). */
#define C_TOKEN 1
#define C_VALUE 2
static const unsigned char cls[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 3, 2, 3, 3,
    3, 3, 3, 2, 2, 3, 3, 2, 3, 3, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 2, 3, 2, 3, 0, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
};

/* Returns whether every byte of [<p>, <end>) may appear in a first line or a header value. */
static int value_ok(const char *p, const char *end)
{
    for (; p < end; p++)
        if (!(cls[(unsigned char)*p] & C_VALUE))
            return 0;
    return 1;
}

int px_h1_span_ieq(rt_span_t s, const char *lower)
{
    size_t i;

    for (i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.p[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c + 32);
        if (lower[i] == '\0' || (unsigned char)lower[i] != c)
            return 0;
    }
    return lower[i] == '\0';
}

static int span_ieq_span(rt_span_t a, rt_span_t b)
{
    size_t i;

    if (a.len != b.len)
        return 0;
    for (i = 0; i < a.len; i++) {
        unsigned char x = (unsigned char)a.p[i], y = (unsigned char)b.p[i];
        if (x >= 'A' && x <= 'Z')
            x = (unsigned char)(x + 32);
        if (y >= 'A' && y <= 'Z')
            y = (unsigned char)(y + 32);
        if (x != y)
            return 0;
    }
    return 1;
}

static rt_span_t trim(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    return (rt_span_t){p, (size_t)(end - p)};
}

int px_h1_scan(const char *block, size_t len, rt_span_t *first_line, rt_header_t *hdrs, size_t max)
{
    const char *p = block, *end = block + len;
    int n = 0;
    int first = 1;

    while (p < end) {
        const char *eol, *lend, *colon = p;
        if (!first) {
            /* One pass over the name finds the colon. obs-fold (a line starting with whitespace) and whitespace
             * before the colon are request smuggling vectors (RFC 9112 §5.1, §5.2): refused, never repaired. */
            while (colon < end && *colon != ':' && *colon != '\n' && *colon != '\r') {
                if (!(cls[(unsigned char)*colon] & C_TOKEN))
                    return PX_H1_MALFORMED;
                colon++;
            }
            if (colon == end)
                return PX_H1_MALFORMED;
            if (*colon != ':') {
                if (colon != p)
                    return PX_H1_MALFORMED; /* a line without a colon */
                colon = NULL;               /* the empty line, or a bare CR */
            } else if (colon == p) {
                return PX_H1_MALFORMED;
            }
        }
        eol = memchr(colon != NULL ? colon : p, '\n', (size_t)(end - (colon != NULL ? colon : p)));
        if (eol == NULL)
            return PX_H1_MALFORMED;
        lend = (eol > p && eol[-1] == '\r') ? eol - 1 : eol;
        /* A CR anywhere but before the LF, or any other control byte, could end the line for the next parser
         * and not for this one (RFC 9112 §2.2): refused. */
        if (!value_ok(first || colon == NULL ? p : colon + 1, lend))
            return PX_H1_MALFORMED;
        if (first) {
            *first_line = (rt_span_t){p, (size_t)(lend - p)};
            first = 0;
        } else if (colon == NULL) {
            if (lend != p)
                return PX_H1_MALFORMED;                  /* a CR inside a line without a colon */
            return eol + 1 == end ? n : PX_H1_MALFORMED; /* the empty line ends the block */
        } else {
            if ((size_t)n == max)
                return PX_H1_TOO_MANY;
            hdrs[n].name = (rt_span_t){p, (size_t)(colon - p)};
            hdrs[n].value = trim(colon + 1, lend);
            n++;
        }
        p = eol + 1;
    }
    return PX_H1_MALFORMED;
}

int px_h1_request_line(rt_span_t line, rt_span_t *method, rt_span_t *target)
{
    const char *end = line.p + line.len;
    const char *sp1 = memchr(line.p, ' ', line.len), *sp2;

    if (sp1 == NULL || sp1 == line.p)
        return -1;
    sp2 = memchr(sp1 + 1, ' ', (size_t)(end - sp1 - 1));
    if (sp2 == NULL || sp2 == sp1 + 1)
        return -1;
    *method = (rt_span_t){line.p, (size_t)(sp1 - line.p)};
    *target = (rt_span_t){sp1 + 1, (size_t)(sp2 - sp1 - 1)};
    return 0;
}

/* An output cursor that remembers overflow, so the builders check once at the end. */
typedef struct {
    char *p, *end;
    int overflow;
} out_t;

static void put(out_t *o, const char *s, size_t n)
{
    if (o->overflow || (size_t)(o->end - o->p) < n) {
        o->overflow = 1;
        return;
    }
    memcpy(o->p, s, n);
    o->p += n;
}

#define PUT_LIT(o, lit) put((o), (lit), sizeof(lit) - 1)

static void put_str(out_t *o, const char *s)
{
    put(o, s, strlen(s));
}

static void put_header(out_t *o, const rt_header_t *h)
{
    put(o, h->name.p, h->name.len);
    PUT_LIT(o, ": ");
    put(o, h->value.p, h->value.len);
    PUT_LIT(o, "\r\n");
}

/* Forwarded header lines are copied in runs: lines that are contiguous in the received block and already in the
 * form "Name: value\r\n" go out with one memcpy. Any other line (no or more spaces after the colon, trailing
 * whitespace) is rewritten in that form. */
typedef struct {
    const char *p, *end; /* the pending run of received bytes, empty when p == end */
} run_t;

static void run_flush(out_t *o, run_t *r)
{
    if (r->end != r->p)
        put(o, r->p, (size_t)(r->end - r->p));
    r->p = r->end = NULL;
}

static void run_add(out_t *o, run_t *r, const rt_header_t *h)
{
    const char *line = h->name.p, *vend = h->value.p + h->value.len;

    /* px_h1_scan trimmed the value up to its line end, so *vend == '\r' means CRLF follows right there. */
    if (h->value.p != line + h->name.len + 2 || line[h->name.len + 1] != ' ' || *vend != '\r') {
        run_flush(o, r);
        put_header(o, h);
        return;
    }
    if (r->end != line) {
        run_flush(o, r);
        r->p = line;
    }
    r->end = vend + 2;
}

/* Collects the comma-separated tokens of every Connection header: the headers they name are hop-by-hop too.
 * <framing> (when given) is set when a token names a header that frames or addresses the message, however many
 * tokens come before it. */
static size_t connection_tokens(const rt_header_t *hdrs, size_t n, rt_span_t *tok, size_t max, int *framing)
{
    size_t i, ntok = 0;

    for (i = 0; i < n; i++) {
        const char *p, *end;
        if (hdrs[i].name.len != 10 || !px_h1_span_ieq(hdrs[i].name, "connection"))
            continue;
        p = hdrs[i].value.p;
        end = p + hdrs[i].value.len;
        while (p < end) {
            const char *comma = memchr(p, ',', (size_t)(end - p));
            const char *tend = comma ? comma : end;
            rt_span_t t = trim(p, tend);
            if (t.len > 0) {
                if (framing != NULL && (px_h1_span_ieq(t, "content-length") || px_h1_span_ieq(t, "transfer-encoding") ||
                                        px_h1_span_ieq(t, "host")))
                    *framing = 1;
                if (ntok < max)
                    tok[ntok++] = t;
            }
            p = tend + (comma ? 1 : 0);
        }
    }
    return ntok;
}

int px_h1_check(const rt_header_t *hdrs, size_t n, unsigned flags)
{
    size_t i, nhost = 0;
    int framing = 0;

    connection_tokens(hdrs, n, NULL, 0, &framing);
    if (framing)
        return PX_H1_BAD_CONNECTION;
    for (i = 0; i < n; i++)
        if (hdrs[i].name.len == 4 && px_h1_span_ieq(hdrs[i].name, "host"))
            nhost++;
    if (((flags & PX_H1_HOST_ONE) && nhost > 1) || ((flags & PX_H1_HOST_REQUIRED) && nhost != 1))
        return PX_H1_BAD_HOST;
    return 0;
}

/* Headers that describe one connection, not the message (RFC 9110 §7.6.1), and so are never relayed. */
static int is_hop_by_hop(rt_span_t name, const rt_span_t *tok, size_t ntok, int keep_upgrade)
{
    size_t i;

    switch (name.len) {
    case 2:
        if (px_h1_span_ieq(name, "te"))
            return 1;
        break;
    case 7:
        if (px_h1_span_ieq(name, "trailer"))
            return 1;
        if (px_h1_span_ieq(name, "upgrade"))
            return !keep_upgrade;
        break;
    case 10:
        if (px_h1_span_ieq(name, "connection") || px_h1_span_ieq(name, "keep-alive"))
            return 1;
        break;
    case 16:
        if (px_h1_span_ieq(name, "proxy-connection"))
            return 1;
        break;
    }
    for (i = 0; i < ntok; i++)
        if (span_ieq_span(name, tok[i]) && !(keep_upgrade && px_h1_span_ieq(name, "upgrade")))
            return 1;
    return 0;
}

size_t px_h1_build_request(char *buf, size_t cap, const px_h1_fwd_req_t *req, const rt_header_t *hdrs, size_t n)
{
    out_t o = {buf, buf + cap, 0};
    rt_span_t tok[MAX_CONN_TOKENS];
    size_t ntok = connection_tokens(hdrs, n, tok, ARRAY_SIZE(tok), NULL);
    size_t i;
    int has_host = 0;
    run_t run = {NULL, NULL};

    put(&o, req->method.p, req->method.len);
    PUT_LIT(&o, " ");
    put(&o, req->target.p, req->target.len);
    PUT_LIT(&o, " HTTP/1.1\r\n");
    for (i = 0; i < n; i++) {
        rt_span_t name = hdrs[i].name;
        if (is_hop_by_hop(name, tok, ntok, req->upgrade))
            continue;
        if (name.len == 15 && px_h1_span_ieq(name, "x-forwarded-for"))
            continue; /* re-written below, all values joined */
        if (name.len == 17 && px_h1_span_ieq(name, "x-forwarded-proto"))
            continue;
        if (name.len == 4 && px_h1_span_ieq(name, "host"))
            has_host = 1;
        run_add(&o, &run, &hdrs[i]);
    }
    run_flush(&o, &run);
    if (!has_host && req->host != NULL) {
        PUT_LIT(&o, "Host: ");
        put_str(&o, req->host);
        PUT_LIT(&o, "\r\n");
    }
    PUT_LIT(&o, "X-Forwarded-For: ");
    for (i = 0; i < n; i++) {
        if (hdrs[i].name.len == 15 && px_h1_span_ieq(hdrs[i].name, "x-forwarded-for") && hdrs[i].value.len > 0) {
            put(&o, hdrs[i].value.p, hdrs[i].value.len);
            PUT_LIT(&o, ", ");
        }
    }
    put_str(&o, req->client_ip);
    PUT_LIT(&o, "\r\nX-Forwarded-Proto: http\r\n");
    if (req->upgrade)
        PUT_LIT(&o, "Connection: upgrade\r\n");
    PUT_LIT(&o, "\r\n");
    return o.overflow ? 0 : (size_t)(o.p - buf);
}

size_t px_h1_build_response(char *buf, size_t cap, const px_h1_fwd_res_t *res, const rt_header_t *hdrs, size_t n)
{
    out_t o = {buf, buf + cap, 0};
    rt_span_t tok[MAX_CONN_TOKENS];
    size_t ntok = connection_tokens(hdrs, n, tok, ARRAY_SIZE(tok), NULL);
    size_t i;
    run_t run = {NULL, NULL};

    put(&o, res->status_line.p, res->status_line.len);
    PUT_LIT(&o, "\r\n");
    for (i = 0; i < n; i++) {
        if (is_hop_by_hop(hdrs[i].name, tok, ntok, res->upgrade))
            continue;
        if (res->dechunk && hdrs[i].name.len == 17 && px_h1_span_ieq(hdrs[i].name, "transfer-encoding"))
            continue;
        run_add(&o, &run, &hdrs[i]);
    }
    run_flush(&o, &run);
    if (res->upgrade)
        PUT_LIT(&o, "Connection: upgrade\r\n");
    else if (res->close)
        PUT_LIT(&o, "Connection: close\r\n");
    else if (res->keep_alive)
        PUT_LIT(&o, "Connection: keep-alive\r\n");
    if (res->extra != NULL)
        put_str(&o, res->extra);
    if (res->variant != NULL) {
        PUT_LIT(&o, "x-weir-variant: ");
        put_str(&o, res->variant);
        PUT_LIT(&o, "\r\n");
    }
    PUT_LIT(&o, "\r\n");
    return o.overflow ? 0 : (size_t)(o.p - buf);
}

void px_h1_addr_text(const struct sockaddr *sa, char *out)
{
    const unsigned char *b;
    char *p = out;
    int i;

    if (sa->sa_family == AF_INET6) {
        if (inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, PX_H1_ADDR_TEXT) == NULL)
            out[0] = '\0';
        return;
    }
    b = (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
    for (i = 0; i < 4; i++) {
        unsigned v = b[i];
        if (v >= 100)
            *p++ = (char)('0' + v / 100);
        if (v >= 10)
            *p++ = (char)('0' + v / 10 % 10);
        *p++ = (char)('0' + v % 10);
        *p++ = i < 3 ? '.' : '\0';
    }
}

const char *px_h1_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 413:
        return "Content Too Large";
    case 431:
        return "Request Header Fields Too Large";
    case 499:
        return "Client Closed Request";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "";
    }
}

size_t px_h1_build_local(char *buf, size_t cap, int status, const char *body, int close, const char *variant)
{
    size_t blen = strlen(body);
    int n = snprintf(buf, cap, "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n%s%s%s%s\r\n%s",
                     status, px_h1_reason(status), blen, close ? "Connection: close\r\n" : "",
                     variant ? "x-weir-variant: " : "", variant ? variant : "", variant ? "\r\n" : "", body);
    if (n < 0 || (size_t)n >= cap)
        return 0;
    return (size_t)n;
}
