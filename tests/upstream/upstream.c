/* weir-upstream: a small HTTP/1.1 origin server for the integration tests and `make demo`.
 *
 *   weir-upstream --listen HOST:PORT [--listen HOST:PORT...] --name NAME [--port-file FILE]
 *
 * Several --listen flags serve the same paths on each address (e.g. 127.0.0.1:P and [::1]:P, for a host name that
 * resolves to either); --port-file gets the first one's port. One thread per connection, keep-alive, pipelining
 * (requests are answered in order). What it does is chosen by the request path (the query string is ignored):
 *
 *   (anything else)  200 "hello from NAME\n"
 *   /echo            200, body: the request line and header lines as received, a blank line, the decoded body;
 *                    each trailer line of a chunked request body comes back as a header `x-echo-trailer: LINE`
 *   /status/CODE     that status, body "CODE\n" (none for 1xx, 204, 304)
 *   /bytes/N         N bytes of th_pattern_byte() with Content-Length
 *   /chunked/N       the same, chunked
 *   /eof/N           the same, framed by closing the connection
 *   /trailers/N      the same, chunked, with the trailers `X-Trailer-Count: N` and `X-Trailer-Sum: S` (S as in /sink)
 *   /sink            reads a request body of any size and framing without keeping it; 200, body "N A B\n": the byte
 *                    count and the two sums of a Fletcher-style checksum over the bytes in order, all decimal, mod
 *                    2^64: A = sum of the bytes, B = sum of A after each byte
 *   /slowsink/BPS    the same, reading the body at about BPS bytes per second
 *   /upgrade         with `Upgrade: echo` and `Connection: upgrade`: 101, then a tunnel that sends back every byte
 *                    it receives complemented (~b), until the client closes; with `X-Close-After: N` the upstream
 *                    closes after N bytes. Without the headers: 400
 *   /slow/MS         200 after MS milliseconds
 *   /gate            200 once the gate is open (GET /__open opens it, GET /__shut shuts it; it starts shut)
 *   /gated-bytes/N   announces Content-Length 2N, sends N bytes of the pattern, the other N once the gate is open
 *   /gated-close/N   announces Content-Length N+1000, sends N bytes, the other 1,000 once the gate is open, closes
 *   /gated-eof/N     the same without Content-Length: the body ends when the connection closes
 *   /bighead/N       200 whose header block carries `X-Big:` with N bytes of 'a' (N up to 1 MiB)
 *   /hop             200 with hop-by-hop response headers (Connection: x-resp-hop, X-Resp-Hop, Keep-Alive,
 *                    Proxy-Connection) that a proxy must not pass on
 *   /close           200 with Connection: close, then closes
 *   /hang            never answers; the connection stays open until the client goes away
 *   /reset           closes with an RST, no answer
 *   /drop            reads the request, then closes (FIN) without an answer
 *   /reset-after/N   announces Content-Length 2N, sends N bytes of the pattern, then resets once they left the socket
 *   /reset-after-chunked/N  the same with a chunked body that never gets its last chunk
 * Hostile answers, for what a proxy must not relay or must not survive badly:
 *   /raw/TEXT        sends TEXT percent-decoded (%0D%0A for CRLF) as the whole response, then serves the next
 *                    request on the connection; /raw-close/TEXT closes after it
 *   /early-reset/N   does not read the request body: announces Content-Length N, sends the pattern as long as the
 *                    socket takes it (until it has been full for 300 ms, or N bytes), then resets
 *   /__count         the number of requests served (paths under /__ excluded), counted before the answer is sent,
 *                    so a client that has its answer finds its request counted
 *   /__gated         the number of requests waiting for the gate right now
 *   /__conns         the number of connections that carried such a request
 *   /__inflight      the number of such requests being handled right now
 *
 * Every response carries `x-upstream: NAME`, the interim 100 Continue included: a request with `Expect: 100-continue`
 * and a body gets it before the body is read.
 * HEAD gets the headers of GET without the body. SIGTERM or SIGINT: exit 0. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define IN_MAX (64 * 1024)    /* request head limit and read buffer */
#define OUT_CHUNK (16 * 1024) /* bodies are written in blocks of this size */
#define ECHO_MAX (256u << 20) /* /echo keeps at most this much body */
#define TRAILERS_MAX 512      /* request trailer bytes /echo reports */
#define MAX_LISTEN 4

static const char *name = "upstream";
static atomic_long nrequests, nconns, ninflight, ngated;

static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static bool gate_open;

typedef struct conn_s {
    int fd;
    char in[IN_MAX];
    size_t len;   /* bytes in <in> */
    bool counted; /* already counted in nconns */
} conn_t;

typedef struct req_s {
    char method[32];
    char path[2048];
    int minor;
    size_t head_len;          /* request line + headers + blank line, in conn->in */
    long long content_length; /* -1 when absent */
    bool chunked;
    bool close; /* Connection: close, or HTTP/1.0 without keep-alive */
    bool expect_continue;
    bool head;             /* HEAD */
    bool upgrade_echo;     /* Upgrade: echo */
    bool conn_upgrade;     /* Connection: upgrade */
    long long close_after; /* X-Close-After, -1 when absent */
} req_t;

/* Where body bytes go: kept (up to ECHO_MAX), or only counted and summed (<sum>), at <pace> bytes/s when set. */
typedef struct dbuf_s {
    char *p;
    size_t len, cap;
    bool overflow;
    bool sum;
    unsigned long long count, a, b;
    long pace;
} dbuf_t;

static void sleep_ms(long ms);

static void dbuf_add(dbuf_t *b, const char *p, size_t n)
{
    if (b == NULL || b->overflow)
        return;
    if (b->sum) {
        unsigned long long a = b->a, s = b->b;
        for (size_t i = 0; i < n; i++) {
            a += (unsigned char)p[i];
            s += a;
        }
        b->a = a;
        b->b = s;
        b->count += n;
        if (b->pace > 0)
            sleep_ms((long)(n * 1000 / (size_t)b->pace) + 1);
        return;
    }
    if (b->len + n > ECHO_MAX) {
        b->overflow = true;
        return;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        char *q = realloc(b->p, cap);
        if (q == NULL) {
            b->overflow = true;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static int send_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Reads more bytes into c->in. Returns the count, 0 on EOF, -1 on error or a full buffer. */
static ssize_t fill(conn_t *c)
{
    if (c->len >= sizeof(c->in))
        return -1;
    for (;;) {
        ssize_t n = recv(c->fd, c->in + c->len, sizeof(c->in) - c->len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n > 0)
            c->len += (size_t)n;
        return n;
    }
}

static void consume(conn_t *c, size_t n)
{
    memmove(c->in, c->in + n, c->len - n);
    c->len -= n;
}

/* Reads exactly <n> body bytes, from the buffer first; appends them to <out> when given. Returns 0 or -1. */
static int read_exact(conn_t *c, unsigned long long n, dbuf_t *out)
{
    while (n > 0) {
        if (c->len == 0 && fill(c) <= 0)
            return -1;
        size_t k = c->len < n ? c->len : (size_t)n;
        dbuf_add(out, c->in, k);
        consume(c, k);
        n -= k;
    }
    return 0;
}

/* Reads one CRLF-terminated line into <line> (without CRLF) and consumes it. Returns 0 or -1. */
static int read_line(conn_t *c, char *line, size_t linecap)
{
    for (;;) {
        char *eol = memmem(c->in, c->len, "\r\n", 2);
        if (eol != NULL) {
            size_t n = (size_t)(eol - c->in);
            if (n >= linecap)
                return -1;
            memcpy(line, c->in, n);
            line[n] = '\0';
            consume(c, n + 2);
            return 0;
        }
        if (fill(c) <= 0)
            return -1;
    }
}

/* Reads a chunked body into <out> (when given) and its trailer lines, each with CRLF, into <trailers> (when given). */
static int read_chunked(conn_t *c, dbuf_t *out, dbuf_t *trailers)
{
    char line[4096];
    for (;;) {
        if (read_line(c, line, sizeof(line)) < 0)
            return -1;
        char *end;
        errno = 0;
        unsigned long long size = strtoull(line, &end, 16);
        if (end == line || errno != 0 || (*end != '\0' && *end != ';' && *end != ' '))
            return -1;
        if (size == 0)
            break;
        if (read_exact(c, size, out) < 0)
            return -1;
        if (read_line(c, line, sizeof(line)) < 0 || line[0] != '\0')
            return -1;
    }
    for (;;) { /* trailers, up to the blank line */
        if (read_line(c, line, sizeof(line)) < 0)
            return -1;
        if (line[0] == '\0')
            return 0;
        if (trailers != NULL && trailers->len + strlen(line) + 2 <= TRAILERS_MAX) {
            dbuf_add(trailers, line, strlen(line));
            dbuf_add(trailers, "\r\n", 2);
        }
    }
}

static bool token_in_list(const char *list, const char *token)
{
    size_t tl = strlen(token);
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *s = p;
        while (*p && *p != ',')
            p++;
        const char *e = p;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if ((size_t)(e - s) == tl && strncasecmp(s, token, tl) == 0)
            return true;
    }
    return false;
}

/* Waits for a complete head in the buffer and parses it into <r>. Returns 0, 1 on a clean EOF before any byte of
 * a request, -1 on error. */
static int read_head(conn_t *c, req_t *r)
{
    char *end;
    while ((end = memmem(c->in, c->len, "\r\n\r\n", 4)) == NULL) {
        ssize_t n = fill(c);
        if (n == 0 && c->len == 0)
            return 1;
        if (n <= 0)
            return -1;
    }
    memset(r, 0, sizeof(*r));
    r->head_len = (size_t)(end - c->in) + 4;
    r->content_length = -1;
    r->close_after = -1;

    char *p = c->in, *eol = memmem(p, r->head_len, "\r\n", 2);
    char line[sizeof(r->path) + 64];
    size_t n = (size_t)(eol - p);
    if (n >= sizeof(line))
        return -1;
    memcpy(line, p, n);
    line[n] = '\0';
    char target[sizeof(r->path)];
    int major;
    if (sscanf(line, "%31s %2047s HTTP/%d.%d", r->method, target, &major, &r->minor) != 4 || major != 1)
        return -1;
    size_t plen = strcspn(target, "?");
    memcpy(r->path, target, plen);
    r->path[plen] = '\0';
    r->head = strcmp(r->method, "HEAD") == 0;
    bool keep_alive = false;
    r->close = false;

    for (p = eol + 2; p < c->in + r->head_len - 2; p = eol + 2) {
        eol = memmem(p, (size_t)(c->in + r->head_len - p), "\r\n", 2);
        n = (size_t)(eol - p);
        if (n >= sizeof(line))
            return -1;
        memcpy(line, p, n);
        line[n] = '\0';
        char *colon = strchr(line, ':');
        if (colon == NULL)
            return -1;
        *colon = '\0';
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        if (strcasecmp(line, "content-length") == 0) {
            char *e;
            errno = 0;
            long long cl = strtoll(v, &e, 10);
            if (e == v || errno != 0 || cl < 0)
                return -1;
            r->content_length = cl;
        } else if (strcasecmp(line, "transfer-encoding") == 0) {
            r->chunked = token_in_list(v, "chunked");
        } else if (strcasecmp(line, "connection") == 0) {
            if (token_in_list(v, "close"))
                r->close = true;
            if (token_in_list(v, "keep-alive"))
                keep_alive = true;
            if (token_in_list(v, "upgrade"))
                r->conn_upgrade = true;
        } else if (strcasecmp(line, "upgrade") == 0) {
            r->upgrade_echo = token_in_list(v, "echo");
        } else if (strcasecmp(line, "x-close-after") == 0) {
            r->close_after = strtoll(v, NULL, 10);
        } else if (strcasecmp(line, "expect") == 0) {
            r->expect_continue = strcasecmp(v, "100-continue") == 0;
        }
    }
    if (r->minor == 0 && !keep_alive)
        r->close = true;
    return 0;
}

static const char *reason(int code)
{
    switch (code) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 203:
        return "Non-Authoritative Information";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Status";
    }
}

/* Sends a status line and headers: x-upstream, Content-Type (not for a 101), the framing (<clen> >= 0: Content-Length;
 * -1: chunked; -2: none, the body ends at close; -3: no body at all), Connection: close when <close>, then <extra>
 * (CRLF terminated lines, or NULL). */
static int send_head(conn_t *c, int code, long long clen, bool close, const char *extra)
{
    char h[2048];
    int n = snprintf(h, sizeof(h), "HTTP/1.1 %d %s\r\nx-upstream: %s\r\n%s", code, reason(code), name,
                     code == 101 ? "" : "Content-Type: text/plain\r\n");
    if (clen >= 0)
        n += snprintf(h + n, sizeof(h) - (size_t)n, "Content-Length: %lld\r\n", clen);
    else if (clen == -1)
        n += snprintf(h + n, sizeof(h) - (size_t)n, "Transfer-Encoding: chunked\r\n");
    if (close)
        n += snprintf(h + n, sizeof(h) - (size_t)n, "Connection: close\r\n");
    n += snprintf(h + n, sizeof(h) - (size_t)n, "%s\r\n", extra ? extra : "");
    if ((size_t)n >= sizeof(h))
        return -1;
    return send_all(c->fd, h, (size_t)n);
}

/* 200 with one header of <n> bytes: send_head's fixed block is too small for it. */
static int send_big_head(conn_t *c, const req_t *r, size_t n, const char *body)
{
    size_t blen = strlen(body), cap = n + blen + 512;
    char *h = malloc(cap);
    int rc;
    if (h == NULL)
        return -1;
    size_t len = (size_t)snprintf(h, cap, "HTTP/1.1 200 OK\r\nx-upstream: %s\r\nContent-Length: %zu\r\n%sX-Big: ", name,
                                  blen, r->close ? "Connection: close\r\n" : "");
    memset(h + len, 'a', n);
    len += n;
    memcpy(h + len, "\r\n\r\n", 4);
    len += 4;
    if (!r->head) {
        memcpy(h + len, body, blen);
        len += blen;
    }
    rc = send_all(c->fd, h, len);
    free(h);
    return rc;
}

static int send_simple(conn_t *c, const req_t *r, int code, const char *body, bool close, const char *extra)
{
    bool nobody = code < 200 || code == 204 || code == 304;
    size_t blen = nobody ? 0 : strlen(body);
    if (send_head(c, code, nobody ? -3 : (long long)blen, close, extra) < 0)
        return -1;
    if (r->head || blen == 0)
        return 0;
    return send_all(c->fd, body, blen);
}

enum pattern_mode {
    PAT_LENGTH,      /* Content-Length */
    PAT_CHUNKED,     /* chunked */
    PAT_EOF,         /* until close */
    PAT_TRAILERS,    /* chunked, with trailers */
    PAT_CUT,         /* Content-Length 2N, only N bytes sent */
    PAT_CUT_CHUNKED, /* chunked without the last chunk */
};

/* Sends <total> bytes of the pattern framed as <mode>. */
static int send_pattern(conn_t *c, const req_t *r, unsigned long long total, enum pattern_mode mode)
{
    bool chunked = mode == PAT_CHUNKED || mode == PAT_TRAILERS || mode == PAT_CUT_CHUNKED;
    long long clen = mode == PAT_LENGTH ? (long long)total : mode == PAT_CUT ? 2 * (long long)total : -1;
    if (mode == PAT_EOF)
        clen = -2;
    if (send_head(c, 200, clen, mode == PAT_EOF,
                  mode == PAT_TRAILERS ? "Trailer: X-Trailer-Count, X-Trailer-Sum\r\n" : NULL) < 0)
        return -1;
    if (r->head)
        return 0;
    char blk[OUT_CHUNK + 32];
    unsigned long long off = 0;
    dbuf_t sum = {.sum = true};
    while (off < total) {
        size_t k = total - off < OUT_CHUNK ? (size_t)(total - off) : OUT_CHUNK;
        size_t hl = chunked ? (size_t)sprintf(blk, "%zx\r\n", k) : 0;
        for (size_t i = 0; i < k; i++)
            blk[hl + i] = th_pattern_byte((size_t)(off + i));
        dbuf_add(&sum, blk + hl, k);
        size_t n = hl + k;
        if (chunked) {
            memcpy(blk + n, "\r\n", 2);
            n += 2;
        }
        if (send_all(c->fd, blk, n) < 0)
            return -1;
        off += k;
    }
    if (mode == PAT_CHUNKED)
        return send_all(c->fd, "0\r\n\r\n", 5);
    if (mode == PAT_TRAILERS) {
        int n = snprintf(blk, sizeof(blk), "0\r\nX-Trailer-Count: %llu\r\nX-Trailer-Sum: %llu\r\n\r\n", total, sum.b);
        return send_all(c->fd, blk, (size_t)n);
    }
    return 0;
}

/* Sends bytes [from, to) of the pattern, unframed. */
static int send_range(conn_t *c, unsigned long long from, unsigned long long to)
{
    char blk[OUT_CHUNK];
    while (from < to) {
        size_t k = to - from < OUT_CHUNK ? (size_t)(to - from) : OUT_CHUNK;
        for (size_t i = 0; i < k; i++)
            blk[i] = th_pattern_byte((size_t)(from + i));
        if (send_all(c->fd, blk, k) < 0)
            return -1;
        from += k;
    }
    return 0;
}

static void wait_gate(void)
{
    pthread_mutex_lock(&gate_mu);
    atomic_fetch_add(&ngated, 1);
    while (!gate_open)
        pthread_cond_wait(&gate_cv, &gate_mu);
    atomic_fetch_sub(&ngated, 1);
    pthread_mutex_unlock(&gate_mu);
}

/* Decodes %XX escapes of <s> in place; returns the length, or -1 on a bad escape. */
static long percent_decode(char *s)
{
    size_t i = 0, o = 0;
    while (s[i] != '\0') {
        if (s[i] == '%') {
            unsigned v;
            if (sscanf(s + i + 1, "%2x", &v) != 1 || s[i + 1] == '\0' || s[i + 2] == '\0')
                return -1;
            s[o++] = (char)v;
            i += 3;
        } else {
            s[o++] = s[i++];
        }
    }
    return (long)o;
}

/* /early-reset/N: the pattern under Content-Length N for as long as the socket takes it, without reading the
 * request body. Returns when N bytes were sent or the socket stayed full for 300 ms. */
static void send_until_full(conn_t *c, unsigned long long total)
{
    char blk[OUT_CHUNK];
    unsigned long long off = 0;
    if (send_head(c, 200, (long long)total, false, NULL) < 0)
        return;
    while (off < total) {
        size_t k = total - off < OUT_CHUNK ? (size_t)(total - off) : OUT_CHUNK;
        for (size_t i = 0; i < k; i++)
            blk[i] = th_pattern_byte((size_t)(off + i));
        ssize_t n = send(c->fd, blk, k, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            off += (unsigned long long)n;
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return;
        struct pollfd pf = {.fd = c->fd, .events = POLLOUT};
        if (poll(&pf, 1, 300) == 0)
            return;
    }
}

/* Waits (bound 2 s) until what was sent on <c> left the socket, so a reset that follows cannot discard it. */
static void wait_sent(conn_t *c)
{
    for (int i = 0; i < 400; i++) {
        int pending = 0;
        if (ioctl(c->fd, TIOCOUTQ, &pending) < 0 || pending == 0)
            return;
        sleep_ms(5);
    }
}

/* The tunnel of /upgrade: sends back every byte complemented until the client closes, or <limit> bytes (when
 * >= 0) were sent back. */
static void tunnel(conn_t *c, long long limit)
{
    unsigned long long done = 0;
    for (;;) {
        if (c->len == 0 && fill(c) <= 0)
            return;
        size_t k = c->len;
        if (limit >= 0 && done + k > (unsigned long long)limit)
            k = (size_t)((unsigned long long)limit - done);
        for (size_t i = 0; i < k; i++)
            c->in[i] = (char)~c->in[i];
        if (send_all(c->fd, c->in, k) < 0)
            return;
        consume(c, k);
        done += k;
        if (limit >= 0 && done >= (unsigned long long)limit)
            return;
    }
}

static void wait_client_gone(conn_t *c)
{
    char sink[4096];
    for (;;) {
        ssize_t n = recv(c->fd, sink, sizeof(sink), 0);
        if (n == 0 || (n < 0 && errno != EINTR))
            return;
    }
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

static long parse_num(const char *s)
{
    char *e;
    errno = 0;
    long v = strtol(s, &e, 10);
    if (e == s || *e != '\0' || errno != 0 || v < 0)
        return -1;
    return v;
}

static int send_number(conn_t *c, const req_t *r, long v)
{
    char b[32];
    snprintf(b, sizeof(b), "%ld\n", v);
    return send_simple(c, r, 200, b, r->close, NULL);
}

/* Handles one request whose head is in c->in. Returns 0 to keep the connection, -1 to close it, 1 to reset it. */
static int handle(conn_t *c, req_t *r)
{
    const char *p = r->path;
    bool internal = strncmp(p, "/__", 3) == 0;
    bool echo = strcmp(p, "/echo") == 0;
    bool sink = strcmp(p, "/sink") == 0 || strncmp(p, "/slowsink/", 10) == 0;
    dbuf_t dump = {0}, trailers = {0}, sums = {.sum = true};
    dbuf_t *out = echo ? &dump : sink ? &sums : NULL;
    bool counted = false;
    int rc = 0;
    long v;

    if (strcmp(p, "/reset") == 0)
        return 1;
    if (strcmp(p, "/hang") == 0) {
        wait_client_gone(c);
        return -1;
    }
    if (!internal) {
        atomic_fetch_add(&ninflight, 1);
        if (!c->counted) {
            c->counted = true;
            atomic_fetch_add(&nconns, 1);
        }
    }
    if (echo)
        dbuf_add(&dump, c->in, r->head_len);
    consume(c, r->head_len);

    if (strcmp(p, "/upgrade") == 0) {
        if (!r->upgrade_echo || !r->conn_upgrade) {
            rc = send_simple(c, r, 400, "want Upgrade: echo and Connection: upgrade\n", r->close, NULL);
            goto out;
        }
        /* Counted before the tunnel, which lasts until the client goes. */
        atomic_fetch_add(&nrequests, 1);
        atomic_fetch_sub(&ninflight, 1);
        internal = true;
        counted = true;
        if (send_head(c, 101, -3, false, "Upgrade: echo\r\nConnection: Upgrade\r\n") == 0)
            tunnel(c, r->close_after);
        rc = -1;
        goto out;
    }
    if (sink && strncmp(p, "/slowsink/", 10) == 0 && (sums.pace = parse_num(p + 10)) <= 0) {
        send_simple(c, r, 400, "bad rate\n", true, NULL);
        rc = -1;
        goto out;
    }

    if (strncmp(p, "/early-reset/", 13) == 0 && (v = parse_num(p + 13)) >= 0) {
        send_until_full(c, (unsigned long long)v);
        rc = 1;
        goto out;
    }

    bool has_body = r->chunked || r->content_length > 0;
    if (has_body && r->expect_continue) {
        char cont[300];
        int n = snprintf(cont, sizeof(cont), "HTTP/1.1 100 Continue\r\nx-upstream: %s\r\n\r\n", name);
        if (send_all(c->fd, cont, (size_t)n) < 0) {
            rc = -1;
            goto out;
        }
    }
    if (r->chunked) {
        if (read_chunked(c, out, echo ? &trailers : NULL) < 0) {
            rc = -1;
            goto out;
        }
    } else if (r->content_length > 0 && read_exact(c, (unsigned long long)r->content_length, out) < 0) {
        rc = -1;
        goto out;
    }

    /* The request is all in: counted now, before any byte of the answer, so that a client holding its answer
     * always finds its request in /__count. */
    if (!internal) {
        atomic_fetch_add(&nrequests, 1);
        counted = true;
    }
    char body[256];
    snprintf(body, sizeof(body), "hello from %s\n", name);
    if (echo) {
        /* Each trailer line becomes one x-echo-trailer header. */
        char extra[TRAILERS_MAX * 2 + 1] = "";
        size_t el = 0;
        for (size_t i = 0; i < trailers.len;) {
            const char *eol = memmem(trailers.p + i, trailers.len - i, "\r\n", 2);
            el += (size_t)snprintf(extra + el, sizeof(extra) - el, "x-echo-trailer: %.*s\r\n",
                                   (int)(eol - trailers.p - i), trailers.p + i);
            i = (size_t)(eol - trailers.p) + 2;
        }
        if (dump.overflow) {
            send_simple(c, r, 500, "echo overflow\n", true, NULL);
            rc = -1;
        } else if (send_head(c, 200, (long long)dump.len, r->close, extra) < 0 ||
                   (!r->head && send_all(c->fd, dump.p, dump.len) < 0)) {
            rc = -1;
        }
    } else if (sink) {
        char b[96];
        snprintf(b, sizeof(b), "%llu %llu %llu\n", sums.count, sums.a, sums.b);
        rc = send_simple(c, r, 200, b, r->close, NULL);
    } else if (strcmp(p, "/drop") == 0) {
        rc = -1;
    } else if (strncmp(p, "/reset-after/", 13) == 0 && (v = parse_num(p + 13)) >= 0) {
        send_pattern(c, r, (unsigned long long)v, PAT_CUT);
        wait_sent(c);
        rc = 1;
    } else if (strncmp(p, "/reset-after-chunked/", 21) == 0 && (v = parse_num(p + 21)) >= 0) {
        send_pattern(c, r, (unsigned long long)v, PAT_CUT_CHUNKED);
        wait_sent(c);
        rc = 1;
    } else if (strncmp(p, "/trailers/", 10) == 0 && (v = parse_num(p + 10)) >= 0) {
        rc = send_pattern(c, r, (unsigned long long)v, PAT_TRAILERS);
    } else if (strncmp(p, "/status/", 8) == 0 && (v = parse_num(p + 8)) >= 100 && v <= 999) {
        char b[16];
        snprintf(b, sizeof(b), "%ld\n", v);
        rc = send_simple(c, r, (int)v, b, r->close, NULL);
    } else if (strncmp(p, "/bytes/", 7) == 0 && (v = parse_num(p + 7)) >= 0) {
        rc = send_pattern(c, r, (unsigned long long)v, PAT_LENGTH);
    } else if (strncmp(p, "/chunked/", 9) == 0 && (v = parse_num(p + 9)) >= 0) {
        rc = send_pattern(c, r, (unsigned long long)v, PAT_CHUNKED);
    } else if (strncmp(p, "/eof/", 5) == 0 && (v = parse_num(p + 5)) >= 0) {
        send_pattern(c, r, (unsigned long long)v, PAT_EOF);
        rc = -1;
    } else if (strncmp(p, "/slow/", 6) == 0 && (v = parse_num(p + 6)) >= 0) {
        sleep_ms(v);
        rc = send_simple(c, r, 200, body, r->close, NULL);
    } else if (strcmp(p, "/gate") == 0) {
        wait_gate();
        rc = send_simple(c, r, 200, body, r->close, NULL);
    } else if ((strncmp(p, "/gated-bytes/", 13) == 0 || strncmp(p, "/gated-close/", 13) == 0 ||
                strncmp(p, "/gated-eof/", 11) == 0) &&
               (v = parse_num(p + (p[7] == 'e' ? 11 : 13))) >= 0) {
        bool eof = p[7] == 'e', close_after = eof || p[7] == 'c';
        unsigned long long rest = close_after ? 1000 : (unsigned long long)v;
        rc = send_head(c, 200, eof ? -2 : (long long)v + (long long)rest, r->close || close_after, NULL);
        if (rc == 0 && !r->head) {
            rc = send_range(c, 0, (unsigned long long)v);
            wait_gate();
            if (rc == 0)
                rc = send_range(c, (unsigned long long)v, (unsigned long long)v + rest);
        }
        if (close_after)
            rc = -1;
    } else if ((strncmp(p, "/raw/", 5) == 0 || strncmp(p, "/raw-close/", 11) == 0) &&
               (v = percent_decode(r->path + (p[4] == '/' ? 5 : 11))) >= 0) {
        rc = send_all(c->fd, r->path + (p[4] == '/' ? 5 : 11), (size_t)v);
        if (p[4] != '/')
            rc = -1;
    } else if (strncmp(p, "/bighead/", 9) == 0 && (v = parse_num(p + 9)) >= 0 && v <= 1 << 20) {
        rc = send_big_head(c, r, (size_t)v, body);
    } else if (strcmp(p, "/hop") == 0) {
        rc = send_simple(c, r, 200, body, r->close,
                         "Connection: x-resp-hop\r\nX-Resp-Hop: 1\r\nKeep-Alive: timeout=30\r\n"
                         "Proxy-Connection: keep-alive\r\nX-End-To-End: 1\r\n");
    } else if (strcmp(p, "/close") == 0) {
        send_simple(c, r, 200, body, true, NULL);
        rc = -1;
    } else if (strcmp(p, "/__count") == 0) {
        rc = send_number(c, r, atomic_load(&nrequests));
    } else if (strcmp(p, "/__conns") == 0) {
        rc = send_number(c, r, atomic_load(&nconns));
    } else if (strcmp(p, "/__gated") == 0) {
        rc = send_number(c, r, atomic_load(&ngated));
    } else if (strcmp(p, "/__inflight") == 0) {
        rc = send_number(c, r, atomic_load(&ninflight));
    } else if (strcmp(p, "/__open") == 0 || strcmp(p, "/__shut") == 0) {
        pthread_mutex_lock(&gate_mu);
        gate_open = p[3] == 'o';
        pthread_cond_broadcast(&gate_cv);
        pthread_mutex_unlock(&gate_mu);
        rc = send_simple(c, r, 200, gate_open ? "open\n" : "shut\n", r->close, NULL);
    } else {
        rc = send_simple(c, r, 200, body, r->close, NULL);
    }
out:
    free(dump.p);
    free(trailers.p);
    if (!internal) {
        if (!counted)
            atomic_fetch_add(&nrequests, 1);
        atomic_fetch_sub(&ninflight, 1);
    }
    if (rc == 0 && r->close)
        rc = -1;
    return rc;
}

static void *serve(void *arg)
{
    conn_t *c = malloc(sizeof(*c));
    if (c == NULL) {
        close((int)(intptr_t)arg);
        return NULL;
    }
    c->fd = (int)(intptr_t)arg;
    c->len = 0;
    c->counted = false;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    req_t r;
    int rc;
    for (;;) {
        rc = read_head(c, &r);
        if (rc != 0) {
            if (rc < 0 && c->len > 0) {
                req_t bad = {.close = true};
                send_simple(c, &bad, 400, "bad request\n", true, NULL);
            }
            rc = -1;
            break;
        }
        rc = handle(c, &r);
        if (rc != 0)
            break;
    }
    if (rc == 1) {
        struct linger lg = {1, 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    } else {
        /* Closing with unread input sends an RST that can destroy the last response before the client reads it:
         * half-close, then read until the client closes too (bounded). */
        shutdown(c->fd, SHUT_WR);
        struct pollfd pf = {.fd = c->fd, .events = POLLIN};
        char sink[4096];
        while (poll(&pf, 1, 2000) > 0 && recv(c->fd, sink, sizeof(sink), 0) > 0) {
        }
    }
    close(c->fd);
    free(c);
    return NULL;
}

static void *on_signals(void *arg)
{
    int wfd = (int)(intptr_t)arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    int sig;
    while (sigwait(&set, &sig) != 0) {
    }
    if (write(wfd, "x", 1) < 0)
        _exit(0);
    return NULL;
}

static int listen_on(const char *hostport, char *shown, size_t shownlen)
{
    char host[256];
    const char *colon = strrchr(hostport, ':');
    if (colon == NULL || (size_t)(colon - hostport) >= sizeof(host))
        return -1;
    memcpy(host, hostport, (size_t)(colon - hostport));
    host[colon - hostport] = '\0';
    char *h = host;
    if (h[0] == '[') {
        h++;
        size_t l = strlen(h);
        if (l == 0 || h[l - 1] != ']')
            return -1;
        h[l - 1] = '\0';
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai;
    if (getaddrinfo(h[0] ? h : NULL, colon + 1, &hints, &ai) != 0)
        return -1;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 1024) < 0) {
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    int port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                        : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    snprintf(shown, shownlen, "%s%s%s:%d", strchr(h, ':') ? "[" : "", h, strchr(h, ':') ? "]" : "", port);
    return fd;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: weir-upstream --listen HOST:PORT [--listen HOST:PORT...] --name NAME [--port-file FILE]\n"
               "A test and demo HTTP/1.1 server; see tests/upstream/upstream.c for its paths.\n");
}

int main(int argc, char **argv)
{
    const char *listen_addr[MAX_LISTEN], *port_file = NULL;
    int nlisten = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "weir-upstream: %s: missing value or unknown flag\n", argv[i]);
            return 2;
        }
        if (strcmp(argv[i], "--listen") == 0 && nlisten < MAX_LISTEN)
            listen_addr[nlisten++] = argv[++i];
        else if (strcmp(argv[i], "--name") == 0)
            name = argv[++i];
        else if (strcmp(argv[i], "--port-file") == 0)
            port_file = argv[++i];
        else {
            fprintf(stderr, "weir-upstream: %s: unknown flag\n", argv[i]);
            return 2;
        }
    }
    if (nlisten == 0) {
        usage(stderr);
        return 2;
    }

    /* Signals are taken by one thread with sigwait; every other thread inherits the blocked mask. */
    /* A shell starts background jobs with SIGINT ignored, and an ignored signal never reaches sigwait. */
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    char shown[MAX_LISTEN][300];
    struct pollfd pf[MAX_LISTEN + 1];
    for (int i = 0; i < nlisten; i++) {
        pf[i] = (struct pollfd){.fd = listen_on(listen_addr[i], shown[i], sizeof(shown[i])), .events = POLLIN};
        if (pf[i].fd < 0) {
            fprintf(stderr, "weir-upstream: cannot listen on %s: %s\n", listen_addr[i], strerror(errno));
            return 1;
        }
    }
    int pfd[2];
    if (pipe(pfd) < 0)
        return 1;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 512 * 1024);
    pthread_t tid;
    if (pthread_create(&tid, &attr, on_signals, (void *)(intptr_t)pfd[1]) != 0)
        return 1;

    if (port_file != NULL) {
        const char *port = strrchr(shown[0], ':') + 1;
        FILE *f = fopen(port_file, "w");
        if (f == NULL || fprintf(f, "%s\n", port) < 0 || fclose(f) != 0) {
            fprintf(stderr, "weir-upstream: cannot write %s\n", port_file);
            return 1;
        }
    }
    for (int i = 0; i < nlisten; i++)
        printf("listening on %s\n", shown[i]);
    fflush(stdout);

    pf[nlisten] = (struct pollfd){.fd = pfd[0], .events = POLLIN};
    for (;;) {
        if (poll(pf, (nfds_t)nlisten + 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (pf[nlisten].revents)
            break;
        for (int i = 0; i < nlisten; i++) {
            if (!(pf[i].revents & POLLIN))
                continue;
            int fd = accept4(pf[i].fd, NULL, NULL, SOCK_CLOEXEC);
            if (fd < 0)
                continue;
            if (pthread_create(&tid, &attr, serve, (void *)(intptr_t)fd) != 0)
                close(fd);
        }
    }
    for (int i = 0; i < nlisten; i++)
        close(pf[i].fd);
    pthread_attr_destroy(&attr);
    return 0;
}
