/* Admin listener (SPEC §5): GET /metrics, /stats, /healthz, /readyz (include/px/admin.h). Requests are small and
 * answered one at a time per connection; keep-alive and pipelined requests are served in order. This is not the
 * data path, so a malloc per connection and a rendered body per response are fine here.
 *
 * Bounds. At most ADMIN_MAX_CONNS connections (more get a 503 and a close). One timer per connection: a request head
 * must be complete within `header-timeout` of the connection or of its first byte (else 408 and close, as on the
 * data path); a connection between keep-alive requests, or whose response the client does not take, is closed after
 * `idle-timeout`. A request head over ADMIN_BUF gets 431 and a close. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "px/admin.h"
#include "px/h1.h"
#include "px/log.h"
#include "px/server.h"
#include "px/stats.h"
#include "rt/buf.h"

#define ADMIN_BUF 8192
#define ADMIN_MAX_CONNS 256 /* scrapers and probes open a few each; far above that is a flood */
#define CT_TEXT "text/plain; charset=utf-8"
#define CT_PROM "text/plain; version=0.0.4; charset=utf-8"
#define CT_JSON "application/json"

typedef struct admin_conn_s {
    uv_tcp_t tcp;
    uv_write_t wreq;
    uv_timer_t timer; /* header-timeout or idle-timeout, see the top of the file */
    struct admin_conn_s *next, *prev;
    unsigned nhandles; /* handles whose close callback has not run */
    int counted;       /* holds a slot of <nconns> */
    size_t len;        /* bytes in <in> */
    size_t req_len;    /* bytes of <in> taken by the request being answered */
    int reading;
    int writing;     /* a response is in flight; nothing else is parsed meanwhile */
    int close_after; /* the response being written is the last one */
    rt_buf_t body;   /* the response body in flight */
    char head[512];  /* the status line and headers in flight */
    char in[ADMIN_BUF];
} admin_conn_t;

/* One parsed request head, as spans into admin_conn_t.in. */
typedef struct admin_req_s {
    const char *method, *path, *query; /* <query> NULL when the target has no '?' */
    size_t method_len, path_len, query_len;
    int keep_alive;
    int has_body;
} admin_req_t;

static uv_tcp_t listener;
static int listening;
static admin_conn_t *conns;
static unsigned nconns;
static px_ratelimit_t refuse_log = {.interval_ms = 10000};

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void on_timer(uv_timer_t *t);

static void on_closed(uv_handle_t *h)
{
    admin_conn_t *a = h->data;

    if (--a->nhandles > 0)
        return;
    if (a->counted)
        nconns--;
    if (a->prev != NULL)
        a->prev->next = a->next;
    else
        conns = a->next;
    if (a->next != NULL)
        a->next->prev = a->prev;
    rt_buf_dispose(&a->body);
    free(a);
}

/* Idempotent. */
static void do_close(admin_conn_t *a)
{
    if (!uv_is_closing((uv_handle_t *)&a->tcp)) {
        uv_close((uv_handle_t *)&a->tcp, on_closed);
        uv_close((uv_handle_t *)&a->timer, on_closed);
    }
}

static void arm(admin_conn_t *a, uint64_t ms)
{
    uv_timer_start(&a->timer, on_timer, ms, 0);
}

static void set_reading(admin_conn_t *a, int on)
{
    if (on == a->reading)
        return;
    if (on ? uv_read_start((uv_stream_t *)&a->tcp, on_alloc, on_read) != 0
           : uv_read_stop((uv_stream_t *)&a->tcp) != 0) {
        do_close(a);
        return;
    }
    a->reading = on;
}

static void process(admin_conn_t *a);

static void on_written(uv_write_t *req, int status)
{
    admin_conn_t *a = req->data;

    a->writing = 0;
    if (status < 0 || a->close_after || uv_is_closing((uv_handle_t *)&a->tcp)) {
        do_close(a);
        return;
    }
    memmove(a->in, a->in + a->req_len, a->len - a->req_len);
    a->len -= a->req_len;
    a->req_len = 0;
    rt_buf_reset(&a->body);
    /* a pipelined request already begun has header-timeout from now; otherwise the connection is idle */
    arm(a, a->len > 0 ? px_server.cfg->header_timeout_ms : px_server.cfg->idle_timeout_ms);
    process(a);
}

/* Sends the status line, headers and a->body (not its bytes for HEAD). <extra> is more header lines, or "". */
static void send_response(admin_conn_t *a, const admin_req_t *r, int status, const char *ctype, const char *extra)
{
    uv_buf_t b[2];
    int n, head_only = r != NULL && r->method_len == 4 && memcmp(r->method, "HEAD", 4) == 0;

    a->close_after = a->close_after || r == NULL || !r->keep_alive || r->has_body;
    n = snprintf(a->head, sizeof(a->head), "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s\r\n",
                 status, px_h1_reason(status), ctype, a->body.len, extra,
                 a->close_after ? "Connection: close\r\n" : "");
    if (n < 0 || (size_t)n >= sizeof(a->head)) {
        do_close(a);
        return;
    }
    b[0] = uv_buf_init(a->head, (unsigned)n);
    b[1] = uv_buf_init(a->body.p, head_only ? 0 : (unsigned)a->body.len);
    a->writing = 1;
    a->wreq.data = a;
    arm(a, px_server.cfg->idle_timeout_ms); /* for the client to take the response */
    if (uv_write(&a->wreq, (uv_stream_t *)&a->tcp, b, b[1].len > 0 ? 2 : 1, on_written) != 0) {
        a->writing = 0;
        do_close(a);
    }
}

static void send_text(admin_conn_t *a, const admin_req_t *r, int status, const char *text)
{
    rt_buf_reset(&a->body);
    if (rt_buf_puts(&a->body, text) != 0) {
        do_close(a);
        return;
    }
    send_response(a, r, status, CT_TEXT, "");
}

/* Sends what a renderer appended to a->body, or 503 when it could not (out of memory). */
static void send_rendered(admin_conn_t *a, const admin_req_t *r, const char *ctype)
{
    if (a->body.len == 0)
        send_text(a, r, 503, "out of memory\n");
    else
        send_response(a, r, 200, ctype, "");
}

/* The value of ?window= as whole seconds 1..PX_STATS_WINDOW_MAX: 0 when absent, -1 when malformed. The last
 * occurrence wins; other parameters are ignored. */
static long window_param(const admin_req_t *r)
{
    const char *p = r->query, *end = r->query + r->query_len;
    long secs = 0;

    while (p != NULL && p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p)), *stop = amp ? amp : end;
        if ((size_t)(stop - p) > 7 && memcmp(p, "window=", 7) == 0) {
            char v[32];
            uint64_t ms;
            size_t vlen = (size_t)(stop - p - 7);
            if (vlen >= sizeof(v))
                return -1;
            memcpy(v, p + 7, vlen);
            v[vlen] = '\0';
            if (px_parse_duration_ms(v, &ms) != 0 || ms % 1000 != 0 || ms < 1000 ||
                ms > (uint64_t)PX_STATS_WINDOW_MAX * 1000)
                return -1;
            secs = (long)(ms / 1000);
        } else if ((size_t)(stop - p) == 7 && memcmp(p, "window=", 7) == 0) {
            return -1;
        }
        p = amp ? amp + 1 : end;
    }
    return secs;
}

static void route(admin_conn_t *a, const admin_req_t *r)
{
#define PATH_IS(lit) (r->path_len == sizeof(lit) - 1 && memcmp(r->path, lit, r->path_len) == 0)
    if (!(r->method_len == 3 && memcmp(r->method, "GET", 3) == 0) &&
        !(r->method_len == 4 && memcmp(r->method, "HEAD", 4) == 0)) {
        rt_buf_reset(&a->body);
        if (rt_buf_puts(&a->body, "only GET and HEAD\n") != 0)
            do_close(a);
        else
            send_response(a, r, 405, CT_TEXT, "Allow: GET, HEAD\r\n");
    } else if (PATH_IS("/healthz")) {
        send_text(a, r, 200, "ok\n");
    } else if (PATH_IS("/readyz")) {
        /* SPEC §5: ready when listening and upstreams are known: stable, which takes every request the weights
         * and routes do not send elsewhere, has an address now. (px_server.neps counts endpoint slots ever handed
         * out: it never drops when a name stops resolving or `set upstream` replaces the addresses.) */
        const rt_table_t *t = atomic_load(&px_server.table);
        unsigned stable = t != NULL ? rt_table_stable(t) : RT_MAX_VARIANTS;
        if (atomic_load(&px_server.draining))
            send_text(a, r, 503, "draining\n");
        else if (stable >= RT_MAX_VARIANTS || atomic_load(&px_server.variants[stable].neps) == 0)
            send_text(a, r, 503, "no upstreams\n");
        else
            send_text(a, r, 200, "ready\n");
    } else if (PATH_IS("/metrics")) {
        px_stats_prometheus(&a->body);
        send_rendered(a, r, CT_PROM);
    } else if (PATH_IS("/stats")) {
        long w = window_param(r);
        if (w < 0) {
            send_text(a, r, 400, "bad window: whole seconds from 1s to 300s, e.g. /stats?window=30s\n");
            return;
        }
        px_stats_json(&a->body, (unsigned)w);
        if (a->body.len > 0 && rt_buf_putc(&a->body, '\n') != 0)
            rt_buf_reset(&a->body);
        send_rendered(a, r, CT_JSON);
    } else {
        send_text(a, r, 404, "not found\n");
    }
#undef PATH_IS
}

/* Finds the first header <name> (case-insensitive) in the header lines [p, end). Returns 1 with its value, spaces
 * trimmed, in <*v>/<*vlen>, or 0. */
static int header_find(const char *p, const char *end, const char *name, const char **v, size_t *vlen)
{
    size_t nlen = strlen(name);

    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p)), *le = eol ? eol : end;
        if ((size_t)(le - p) > nlen && p[nlen] == ':' && strncasecmp(p, name, nlen) == 0) {
            const char *b = p + nlen + 1, *e = le;
            while (b < e && (*b == ' ' || *b == '\t'))
                b++;
            while (e > b && (e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
                e--;
            *v = b;
            *vlen = (size_t)(e - b);
            return 1;
        }
        p = le + 1;
    }
    return 0;
}

/* Returns whether some header <name> in [p, end) lists the token <tok> (comma-separated, case-insensitive). */
static int header_has(const char *p, const char *end, const char *name, const char *tok)
{
    size_t tlen = strlen(tok), vlen;
    const char *v;

    while (p < end && header_find(p, end, name, &v, &vlen)) {
        const char *ve = v + vlen;
        while (v < ve) {
            const char *c = memchr(v, ',', (size_t)(ve - v)), *te = c ? c : ve;
            while (v < te && (*v == ' ' || *v == '\t'))
                v++;
            while (te > v && (te[-1] == ' ' || te[-1] == '\t'))
                te--;
            if ((size_t)(te - v) == tlen && strncasecmp(v, tok, tlen) == 0)
                return 1;
            v = c ? c + 1 : ve;
        }
        p = memchr(ve, '\n', (size_t)(end - ve));
        if (p == NULL)
            break;
        p++;
    }
    return 0;
}

/* Parses the request line and the headers weir cares about. Returns 0, or -1 when the request line is malformed. */
static int parse_head(const char *p, size_t head_len, admin_req_t *r)
{
    const char *end = p + head_len, *eol = memchr(p, '\n', head_len), *sp1, *sp2, *q, *v;
    size_t llen, vlen;
    int http10;

    memset(r, 0, sizeof(*r));
    if (eol == NULL)
        return -1;
    llen = (size_t)(eol - p) - (eol > p && eol[-1] == '\r');
    if ((sp1 = memchr(p, ' ', llen)) == NULL || (sp2 = memchr(sp1 + 1, ' ', llen - (size_t)(sp1 + 1 - p))) == NULL)
        return -1;
    if ((size_t)(p + llen - (sp2 + 1)) != 8 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0)
        return -1;
    http10 = sp2[8] == '0';
    r->method = p;
    r->method_len = (size_t)(sp1 - p);
    r->path = sp1 + 1;
    q = memchr(r->path, '?', (size_t)(sp2 - r->path));
    r->path_len = (size_t)((q ? q : sp2) - r->path);
    if (q != NULL) {
        r->query = q + 1;
        r->query_len = (size_t)(sp2 - r->query);
    }
    if (http10)
        r->keep_alive = header_has(eol + 1, end, "connection", "keep-alive");
    else
        r->keep_alive = !header_has(eol + 1, end, "connection", "close");
    /* A request body is not expected here; rather than frame it, answer and close. */
    r->has_body = header_find(eol + 1, end, "transfer-encoding", &v, &vlen) ||
                  (header_find(eol + 1, end, "content-length", &v, &vlen) && !(vlen == 1 && v[0] == '0'));
    return 0;
}

/* Answers the next complete request in a->in, if there is one; otherwise reads on. */
static void process(admin_conn_t *a)
{
    admin_req_t r;
    char *crlf, *lf, *end;
    size_t head_len;

    if (a->writing || uv_is_closing((uv_handle_t *)&a->tcp))
        return;
    a->in[a->len] = '\0';
    crlf = strstr(a->in, "\r\n\r\n");
    lf = strstr(a->in, "\n\n");
    if (crlf != NULL && (lf == NULL || crlf + 2 <= lf))
        end = crlf + 4;
    else if (lf != NULL)
        end = lf + 2;
    else
        end = NULL;
    if (end == NULL) {
        if (a->len >= ADMIN_BUF - 1) {
            set_reading(a, 0);
            a->req_len = a->len;
            send_text(a, NULL, 431, "request too large\n");
        } else {
            set_reading(a, 1);
        }
        return;
    }
    set_reading(a, 0);
    head_len = (size_t)(end - a->in);
    a->req_len = head_len;
    if (parse_head(a->in, head_len, &r) != 0) {
        send_text(a, NULL, 400, "bad request\n");
        return;
    }
    route(a, &r);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    admin_conn_t *a = h->data;
    (void)suggested;

    *buf = uv_buf_init(a->in + a->len, (unsigned)(ADMIN_BUF - 1 - a->len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    admin_conn_t *a = s->data;
    (void)buf;

    if (nread < 0) {
        do_close(a);
        return;
    }
    if (a->len == 0 && nread > 0) /* the first byte of a request: its head has header-timeout from now */
        arm(a, px_server.cfg->header_timeout_ms);
    a->len += (size_t)nread;
    process(a);
}

static void on_timer(uv_timer_t *t)
{
    admin_conn_t *a = t->data;

    if (uv_is_closing((uv_handle_t *)&a->tcp))
        return;
    if (a->writing || a->len == 0) {
        do_close(a); /* idle, or the client does not take its response */
        return;
    }
    /* a request head not complete in time (as on the data path, SPEC §6: 408 and close) */
    set_reading(a, 0);
    a->req_len = a->len;
    send_text(a, NULL, 408, "request timeout\n");
}

/* For a connection that never got on the list (its stream could not be initialised). */
static void free_unlinked(uv_handle_t *h)
{
    free(h->data);
}

static void on_connection(uv_stream_t *server, int status)
{
    admin_conn_t *a;
    uint64_t skipped;
    int rc;

    if (status < 0) {
        px_log(PX_LOG_WARN, "admin", "accept: %s", uv_strerror(status));
        return;
    }
    /* Without uv_accept() libuv stops watching the listener, so every path below accepts, even to close. */
    if ((a = calloc(1, sizeof(*a))) == NULL) {
        px_log(PX_LOG_ERROR, "admin", "out of memory: the admin listener stops accepting");
        return;
    }
    a->timer.data = a;
    if ((rc = uv_timer_init(server->loop, &a->timer)) != 0) {
        free(a);
        goto fail;
    }
    if ((rc = uv_tcp_init(server->loop, &a->tcp)) != 0) {
        uv_close((uv_handle_t *)&a->timer, free_unlinked);
        goto fail;
    }
    a->tcp.data = a;
    a->nhandles = 2;
    rt_buf_init(&a->body);
    a->next = conns;
    if (conns != NULL)
        conns->prev = a;
    conns = a;
    if (uv_accept(server, (uv_stream_t *)&a->tcp) != 0) {
        do_close(a);
        return;
    }
    if (nconns >= ADMIN_MAX_CONNS) {
        if (px_ratelimit(&refuse_log, uv_now(server->loop), &skipped))
            px_log(PX_LOG_WARN, "admin", "connection refused: %u open (%llu more refused since the last report)",
                   ADMIN_MAX_CONNS, (unsigned long long)skipped);
        send_text(a, NULL, 503, "too many admin connections\n");
        return;
    }
    nconns++;
    a->counted = 1;
    arm(a, px_server.cfg->header_timeout_ms);
    set_reading(a, 1);
    return;
fail:
    px_log(PX_LOG_ERROR, "admin", "new connection: %s; the admin listener stops accepting", uv_strerror(rc));
}

int px_admin_start(uv_loop_t *loop, const px_hostport_t *addr)
{
    struct sockaddr_storage ss;
    int rc;

    if (strchr(addr->host, ':') != NULL)
        rc = uv_ip6_addr(addr->host, addr->port, (struct sockaddr_in6 *)&ss);
    else
        rc = uv_ip4_addr(addr->host, addr->port, (struct sockaddr_in *)&ss);
    if (rc != 0)
        return rc;
    if ((rc = uv_tcp_init(loop, &listener)) != 0)
        return rc;
    listening = 1;
    if ((rc = uv_tcp_bind(&listener, (const struct sockaddr *)&ss, 0)) != 0 ||
        (rc = uv_listen((uv_stream_t *)&listener, 128, on_connection)) != 0)
        return rc;
    return 0;
}

void px_admin_stop(void)
{
    admin_conn_t *a;

    if (listening) {
        listening = 0;
        uv_close((uv_handle_t *)&listener, NULL);
    }
    for (a = conns; a != NULL; a = a->next)
        do_close(a);
}
