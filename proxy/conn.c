/* Client connections: one HTTP/1.x request/response cycle at a time between a client and an upstream
 * (include/px/conn.h).
 *
 * Buffers. Each side reads into one pooled buffer: the client's <rbuf>, the upstream's <u->rbuf>. Bytes are
 * relayed straight from the buffer they were read into (no copy); while a write points into a buffer, that
 * buffer is never compacted, and a side whose buffer is full stops reading until the write completes. That is
 * the whole backpressure scheme: at most one buffer per direction, whatever the body size.
 *
 * Parsing. llhttp (strict) validates and frames both directions. Its on_headers_complete and on_message_complete
 * callbacks return HPE_PAUSED, which tells us where the header block and the message end; the header block is
 * then split by px_h1_scan() and rewritten by px_h1_build_*(). Body bytes are relayed with their framing as
 * received (Content-Length or chunked, trailers included), except for an HTTP/1.0 client that receives a chunked
 * response: it gets the body without the framing and the connection closes at its end.
 *
 * Lifecycle. px__conn_close() may be called more than once; the memory is recycled when the socket's close
 * callback has run. A request cycle (timer, write requests, parser, state) is attached at a request's first byte and
 * returned to the worker's pool when the connection goes idle. Every callback checks <closing> first.
 *
 * This file holds accept, the request side and the cycle; proxy/conn_res.c the response side. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/macros.h"
#include "conn-int.h"
#include "px/accesslog.h"
#include "px/log.h"

__thread rt_header_t px__conn_hdrs[PX_H1_MAX_HEADERS];

static void connect_next(px_conn_t *c);
static void update_read_state(px_conn_t *c);
static void cli_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* ---- parser callbacks: they only mark where llhttp should stop ---- */

static int on_headers_complete(llhttp_t *p)
{
    (void)p;
    return HPE_PAUSED;
}

static int on_message_complete(llhttp_t *p)
{
    (void)p;
    return HPE_PAUSED;
}

/* For an HTTP/1.0 client and a chunked response: compact the chunk data in place, so the relayed range holds
 * the body without its framing. The destination never passes the source: framing bytes only ever shrink. */
static int on_res_body(llhttp_t *p, const char *at, size_t len)
{
    px_conn_t *c = p->data;
    px_upconn_t *u = c->x->up;

    if (!c->x->dechunk)
        return 0;
    memmove(u->rbuf->data + c->x->dechunk_end, at, len);
    c->x->dechunk_end += len;
    return 0;
}

/* Constant from the start, so the workers that read them share nothing that is ever written. */
static const llhttp_settings_t req_settings = {
    .on_headers_complete = on_headers_complete,
    .on_message_complete = on_message_complete,
};
static const llhttp_settings_t res_settings = {
    .on_headers_complete = on_headers_complete,
    .on_message_complete = on_message_complete,
    .on_body = on_res_body,
};

/* ---- timer ---- */

static void on_timer(uv_timer_t *t)
{
    px_conn_t *c = t->data;
    enum timer_phase phase;
    uint64_t now;

    if (c == NULL || c->closing) /* a pooled cycle's timer, or a closing connection's */
        return;
    phase = c->x->phase;
    if (phase == PH_NONE)
        return;
    now = uv_now(&c->w->loop);
    if (c->x->deadline > now) { /* the phase moved on since the timer was armed: wait for its own deadline */
        uv_timer_start(t, on_timer, c->x->deadline - now, 0);
        return;
    }
    c->x->phase = PH_NONE;
    switch (phase) {
    case PH_NONE:
        break;
    case PH_IDLE:
    case PH_LINGER:
        px__conn_close(c, PX_END_CLI_TIMEOUT);
        break;
    case PH_HEADER:
        c->end = PX_END_CLI_TIMEOUT;
        c->x->close_after = 1;
        px__conn_local_reply(c, 408, "request header timeout\n");
        break;
    case PH_CONNECT:
        px_log(PX_LOG_WARN, "upstream", "connect %s: timed out", px_server.eps[c->x->up->ep].name);
        px_upstream_backoff(c->w, c->x->up->ep);
        px_upstream_close(c->x->up);
        c->x->up = NULL;
        connect_next(c);
        break;
    case PH_UPSTREAM:
        /* Nothing moved for upstream-timeout. Whose turn it was says whose fault that is: a client that does not
         * take its response or does not send the rest of its body is not a slow upstream. */
        if (c->x->writing) {
            c->x->err = PX_ERR_CLIENT_ABORT;
            px__conn_close(c, PX_END_CLI_TIMEOUT);
        } else if (c->x->res == RES_WAIT && c->x->req != REQ_DONE && !(c->x->up != NULL && c->x->up->writing)) {
            c->end = PX_END_CLI_TIMEOUT;
            c->x->close_after = 1;
            px__conn_local_reply(c, 408, "request body timeout\n");
        } else {
            if (c->x->up != NULL)
                px_log(PX_LOG_WARN, "upstream", "%s: silent for upstream-timeout", px_server.eps[c->x->up->ep].name);
            c->x->err = PX_ERR_TIMEOUT;
            px__conn_local_reply(c, 504, "upstream timed out\n");
        }
        break;
    }
}

void px__conn_arm(px_conn_t *c, enum timer_phase phase, uint64_t ms)
{
    px_cycle_t *x = c->x;

    x->phase = phase;
    x->deadline = uv_now(&c->w->loop) + ms;
    if (!uv_is_active((uv_handle_t *)&x->timer) || uv_timer_get_due_in(&x->timer) > ms)
        uv_timer_start(&x->timer, on_timer, ms, 0);
}

void px__conn_disarm(px_conn_t *c)
{
    c->x->phase = PH_NONE;
}

/* ---- accounting ---- */

/* Writes the access log line of the request in flight. Method and path come from the forwarded header block,
 * which is kept until the request ends while the log is on. */
static void log_request(px_conn_t *c, int variant, int status)
{
    px_accesslog_entry_t e;
    rt_span_t line = {0}, method = {0}, target = {0};

    memset(&e, 0, sizeof(e));
    if (c->x->upbuf != NULL && c->x->upbuf->len > 0) {
        const char *eol = memchr(c->x->upbuf->data, '\r', c->x->upbuf->len);
        line = (rt_span_t){c->x->upbuf->data, eol ? (size_t)(eol - c->x->upbuf->data) : 0};
        if (px_h1_request_line(line, &method, &target) == 0) {
            e.method = method;
            e.path = target;
        }
    }
    e.status = status;
    e.variant = variant >= 0 ? px_server.variants[variant].name : NULL;
    e.route = c->x->route >= 0 ? px_stats_route_name(c->x->route_slot) : NULL;
    e.upstream = c->x->last_ep >= 0 ? px_endpoint_text(&px_server.eps[c->x->last_ep]) : NULL;
    e.duration_ns = uv_hrtime() - c->x->start_ns;
    e.bytes = c->x->bytes_out;
    px_accesslog_write(&e);
}

/* Counts the request in flight once, when it ends: its status, its duration, and why weir answered itself or
 * gave up if it did. A request closed before any response byte reached the client is told by whose fault that
 * was: 502/504 when the upstream broke or went silent, 499 when the client left. */
static void account(px_conn_t *c)
{
    px_stats_t *st = c->w->stats;
    int variant, status;

    if (c->x == NULL || c->x->res == RES_NONE)
        return;
    variant = c->x->routed ? (int)c->x->variant : PX_STATS_NO_VARIANT;
    status = c->x->status;
    if (!c->x->res_started) {
        if (c->end == PX_END_SRV_CLOSED) {
            status = 502;
            if (c->x->err == PX_ERR_COUNT)
                c->x->err = PX_ERR_RESET;
        } else if (c->end == PX_END_SRV_TIMEOUT) {
            status = 504;
            c->x->err = PX_ERR_TIMEOUT;
        } else {
            status = 499;
            c->x->err = PX_ERR_CLIENT_ABORT;
        }
    }
    if (c->x->err != PX_ERR_COUNT)
        px_stats_proxy_error(st, variant, c->x->err);
    if (c->x->mirror != NULL) {
        px_mirror_detach(c->x->mirror, c->x->res_started ? status : 0);
        c->x->mirror = NULL;
    }
#ifndef WEIR_NO_STATS /* bench/: the same build without per-request counting, to measure what counting costs */
    px_stats_response(st, variant, c->x->by_route ? (int)c->x->route_slot : PX_STATS_WEIGHTED, status,
                      uv_hrtime() - c->x->start_ns, uv_now(&c->w->loop));
#endif
    if (px_accesslog_enabled())
        log_request(c, variant, status);
    c->x->res = RES_NONE;
}

/* ---- close ---- */

/* ---- fresh and idle lists, request cycles ---- */

static void ilist_remove(px_conn_t *c)
{
    px_worker_t *w = c->w;
    px_conn_t **head = c->ilist == IL_FRESH ? &w->fresh_head : &w->idle_head;
    px_conn_t **tail = c->ilist == IL_FRESH ? &w->fresh_tail : &w->idle_tail;

    if (c->ilist == IL_NONE)
        return;
    if (c->iprev != NULL)
        c->iprev->inext = c->inext;
    else
        *head = c->inext;
    if (c->inext != NULL)
        c->inext->iprev = c->iprev;
    else
        *tail = c->iprev;
    c->inext = c->iprev = NULL;
    c->ilist = IL_NONE;
}

/* Appends <c> to a list. Each list has one timeout, so appending in time order keeps it sorted by deadline. */
static void ilist_add(px_conn_t *c, uint8_t which, uint64_t timeout_ms)
{
    px_worker_t *w = c->w;
    px_conn_t **head = which == IL_FRESH ? &w->fresh_head : &w->idle_head;
    px_conn_t **tail = which == IL_FRESH ? &w->fresh_tail : &w->idle_tail;

    ilist_remove(c);
    c->ilist = which;
    c->deadline = uv_now(&w->loop) + timeout_ms;
    c->inext = NULL;
    c->iprev = *tail;
    if (*tail != NULL)
        (*tail)->inext = c;
    else
        *head = c;
    *tail = c;
}

/* Gives <c> a request cycle. Returns 0, or -1 when out of memory. */
static int attach(px_conn_t *c)
{
    px_worker_t *w = c->w;
    px_cycle_t *x = w->free_cycles;

    if (x != NULL) {
        w->free_cycles = x->next_free;
        UNPOISON_REGION(&x->parser, sizeof(*x) - offsetof(px_cycle_t, parser));
    } else {
        if ((x = malloc(sizeof(*x))) == NULL)
            return -1;
        if (uv_timer_init(&w->loop, &x->timer) != 0) {
            free(x);
            return -1;
        }
        w->nmalloc++;
        uv_unref((uv_handle_t *)&x->timer);
        w->ncycles++;
    }
    /* Everything from the parser on is per request; the timer and the requests before it keep their setup. */
    memset(&x->parser, 0, sizeof(*x) - offsetof(px_cycle_t, parser));
    x->timer.data = x->wreq.data = x->sreq.data = c;
    llhttp_init(&x->parser, HTTP_REQUEST, &req_settings);
    x->parser.data = c;
    x->err = PX_ERR_COUNT;
    x->last_ep = x->route = -1;
    px_h1_addr_text((const struct sockaddr *)&c->peer, x->ip);
    c->x = x;
    ilist_remove(c);
    return 0;
}

/* Returns the cycle of <c> to the pool. Only once no write request of it can still be pending on the socket. */
static void detach(px_conn_t *c)
{
    px_worker_t *w = c->w;
    px_cycle_t *x = c->x;

    if (x == NULL)
        return;
    /* The timer may keep running in the pool (lazy re-arming): it fires into a NULL connection and stops. */
    x->timer.data = NULL;
    px_buf_put(&w->bufs, x->upbuf);
    px_buf_put(&w->bufs, x->obuf);
    x->upbuf = x->obuf = NULL;
    x->next_free = w->free_cycles;
    w->free_cycles = x;
    c->x = NULL;
    /* The timer stays a live libuv handle in the pool; everything per request after it is off limits. */
    POISON_REGION(&x->parser, sizeof(*x) - offsetof(px_cycle_t, parser));
}

static void on_closed(uv_handle_t *h)
{
    px_conn_t *c = h->data;
    px_worker_t *w = c->w;

    /* The socket is closed and its cancelled writes have run: the cycle's requests are free to reuse. */
    detach(c);
    px_buf_put(&w->bufs, c->rbuf);
    c->rbuf = NULL;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    c->next = w->free_conns;
    w->free_conns = c;
    POISON_FREE(c, next);
    w->nconns--;
    atomic_fetch_sub_explicit(&px_server.ndownstream, 1, memory_order_relaxed);
    px__worker_conn_gone(w);
}

/* Idempotent. A client that goes away mid-request takes its upstream connection with it: it may still carry
 * part of the exchange, so it is never pooled. */
void px__conn_close(px_conn_t *c, enum px_end end)
{
    if (c->closing)
        return;
    c->closing = 1;
    if (c->end == PX_END_NONE)
        c->end = end;
    ilist_remove(c);
    if (c->x != NULL) {
        account(c);
        uv_timer_stop(&c->x->timer);
        if (c->x->up != NULL) {
            px_upstream_close(c->x->up);
            c->x->up = NULL;
        }
    }
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    px_conn_t *c = req->data;

    if (c->closing || status == UV_ECANCELED)
        return;
    if (status < 0)
        px__conn_close(c, PX_END_CLI_CLOSED);
}

/* Ends a connection whose last response was written: FIN first, then read and discard until the client closes
 * or LINGER_MS passes, so unread request bytes do not turn our close into a reset that destroys the response
 * before the client reads it. */
void px__conn_linger(px_conn_t *c)
{
    if (c->closing || c->x->lingering)
        return;
    c->x->lingering = 1;
    c->x->sreq.data = c;
    if (uv_shutdown(&c->x->sreq, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        px__conn_close(c, PX_END_NONE);
        return;
    }
    px__conn_arm(c, PH_LINGER, LINGER_MS);
    update_read_state(c);
}

/* ---- buffers ---- */

/* Drops client bytes that are no longer needed, unless an upstream write points into them. */
static void compact(px_conn_t *c)
{
    px_buf_t *b = c->rbuf;
    size_t keep = c->x->req == REQ_HEAD ? c->x->msg : c->x->fwd;

    if (b == NULL || keep == 0 || (c->x->up != NULL && c->x->up->writing))
        return;
    memmove(b->data, b->data + keep, b->len - keep);
    b->len -= keep;
    c->x->rpos -= keep;
    c->x->msg = c->x->msg > keep ? c->x->msg - keep : 0;
    c->x->fwd -= MIN(c->x->fwd, keep);
    c->x->up_end -= MIN(c->x->up_end, keep);
}

static void cli_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    px_conn_t *c = h->data;
    size_t room;
    (void)suggested;

    if (c->rbuf == NULL && (c->rbuf = px_buf_get(&c->w->bufs)) == NULL) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    if (c->x != NULL && c->x->lingering) {
        c->rbuf->len = 0;
    } else if (c->x != NULL && c->rbuf->len == px_server.bufsize) {
        compact(c);
    }
    room = px_server.bufsize - c->rbuf->len;
    /* libuv reads up to 32 times per event while reads fill the buffer. While a copy of this request waits for
     * its connection, nothing it queues can leave: in small reads, the body that one event brings in stays far
     * below the copy's cap, and the connection completes in the next loop pass instead of the copy being dropped
     * as overload behind a burst. */
    if (c->x != NULL && c->x->mirror != NULL && room > PX_MIRROR_CONNECTING_READ && px_mirror_connecting(c->x->mirror))
        room = PX_MIRROR_CONNECTING_READ;
    *buf = uv_buf_init(c->rbuf->data + c->rbuf->len, (unsigned)room);
}

static int idle(const px_conn_t *c)
{
    return c->x == NULL ||
           (c->x->req == REQ_HEAD && c->x->res == RES_NONE && (c->rbuf == NULL || c->rbuf->len == c->x->msg));
}

/* The one place that starts and stops reading the client (STYLE §2.3): read while there is room. */
static void update_read_state(px_conn_t *c)
{
    int want;

    if (c->closing)
        return;
    if (c->x == NULL || c->x->lingering || c->rbuf == NULL) {
        want = 1;
    } else {
        size_t keep = c->x->req == REQ_HEAD ? c->x->msg : c->x->fwd;
        int can_compact = keep > 0 && !(c->x->up != NULL && c->x->up->writing);
        want = c->rbuf->len < px_server.bufsize || can_compact;
    }
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, cli_alloc, cli_read) == 0)
            c->reading = 1;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
    /* An idle connection holds no buffer (STYLE §2.9: a parked keep-alive connection costs no 16 KiB). */
    if (idle(c) && c->rbuf != NULL && (c->x == NULL || !c->x->lingering)) {
        px_buf_put(&c->w->bufs, c->rbuf);
        c->rbuf = NULL;
        if (c->x != NULL)
            c->x->rpos = c->x->msg = c->x->fwd = c->x->up_end = 0;
    }
}

/* ---- writing to the client ---- */

static void on_cli_write(uv_write_t *req, int status);

#define MAX_SYNC_DEPTH 4 /* nested synchronous write completions before we let the loop run them */

/* Writes <bufs> on <s>: first directly (uv_try_write), and through uv_write only for what the socket did not take.
 * A write that completes at once runs <cb> right here, saving libuv's deferred callback and the epoll_ctl it
 * makes to stop watching for writability (two syscalls per proxied request). Nesting is bounded by <depth>, so a
 * burst of pipelined requests cannot grow the stack. Returns 0, or a negative UV_E* code (nothing was queued). */
static int write_fast(px_worker_t *w, uv_stream_t *s, uv_write_t *req, const uv_buf_t *bufs, unsigned n, uv_write_cb cb)
{
    uv_buf_t rest[2];
    unsigned i, k = 0;
    int sent = 0;

    if (w->write_depth < MAX_SYNC_DEPTH) {
        sent = uv_try_write(s, bufs, n);
        if (sent < 0 && sent != UV_EAGAIN)
            return sent;
        if (sent < 0)
            sent = 0;
    }
    for (i = 0; i < n; i++) {
        size_t len = bufs[i].len;
        if ((size_t)sent >= len) {
            sent -= (int)len;
            continue;
        }
        rest[k++] = uv_buf_init(bufs[i].base + sent, (unsigned)(len - (size_t)sent));
        sent = 0;
    }
    if (k == 0) {
        w->write_depth++;
        cb(req, 0);
        w->write_depth--;
        return 0;
    }
    return uv_write(req, s, rest, k, cb);
}

void px__conn_cli_write(px_conn_t *c, const uv_buf_t *bufs, unsigned n)
{
    c->x->writing = 1;
    if (write_fast(c->w, (uv_stream_t *)&c->tcp, &c->x->wreq, bufs, n, on_cli_write) != 0) {
        c->x->writing = 0;
        px__conn_close(c, PX_END_CLI_CLOSED);
    }
}

/* Who failed, for a local reply that can no longer be sent. */
static enum px_end end_of_status(int status)
{
    switch (status) {
    case 408:
        return PX_END_CLI_TIMEOUT;
    case 504:
        return PX_END_SRV_TIMEOUT;
    default:
        return status >= 500 ? PX_END_SRV_CLOSED : PX_END_PROTOCOL;
    }
}

/* Sends a response made by weir itself in place of an upstream's. Once a response head went out, or while a
 * client write is in flight (it holds the write request and may point into <obuf>), no other response can be
 * told: the connection closes, so the client sees its response end short rather than a 502 inside a body.
 * The connection closes after a reply when the request was not read to its end. */
void px__conn_local_reply(px_conn_t *c, int status, const char *body)
{
    uv_buf_t b;
    size_t len;

    px__conn_disarm(c);
    if (c->x->writing || c->x->obuf_sent) {
        if (c->x->err == PX_ERR_COUNT && status >= 502 && status <= 504)
            c->x->err = status == 503 ? PX_ERR_NO_ENDPOINT : status == 504 ? PX_ERR_TIMEOUT : PX_ERR_RESET;
        px__conn_close(c, end_of_status(status));
        return;
    }
    if (c->x->up != NULL) {
        px_upstream_close(c->x->up);
        c->x->up = NULL;
    }
    if (c->x->req != REQ_DONE || status == 400 || status == 408 || status == 431)
        c->x->close_after = 1;
    if (c->x->obuf == NULL && (c->x->obuf = px_buf_get(&c->w->bufs)) == NULL) {
        px__conn_close(c, PX_END_RESOURCE);
        return;
    }
    len = px_h1_build_local(c->x->obuf->data, px_server.bufsize, status, body, c->x->close_after,
                            c->x->routed && px_server.cfg->variant_header ? px_server.variants[c->x->variant].name
                                                                          : NULL);
    c->x->status = status;
    if (c->x->err == PX_ERR_COUNT && status >= 502 && status <= 504)
        c->x->err = status == 503 ? PX_ERR_NO_ENDPOINT : status == 504 ? PX_ERR_TIMEOUT : PX_ERR_CONNECT;
    c->x->res = RES_DONE;
    c->x->obuf_sent = 1;
    b = uv_buf_init(c->x->obuf->data, (unsigned)len);
    px__conn_cli_write(c, &b, 1);
}

static void on_cli_write(uv_write_t *req, int status)
{
    px_conn_t *c = req->data;
    px_upconn_t *u = c->x->up;

    c->x->writing = 0;
    if (c->closing || status == UV_ECANCELED)
        return;
    if (status < 0) {
        px__conn_close(c, PX_END_CLI_CLOSED);
        return;
    }
    px_buf_put(&c->w->bufs, c->x->obuf);
    c->x->obuf = NULL;
    c->x->res_started = 1;
    if (u != NULL) {
        c->x->bytes_out += c->x->res_end - u->fwd;
        u->fwd = c->x->res_end;
        if (c->x->tunnel) {
            px__conn_res_process(c);
            return;
        }
        if (c->x->res == RES_DONE && u->fwd >= (c->x->dechunk ? c->x->dechunk_end : u->rpos)) {
            px__conn_finish_cycle(c);
            return;
        }
        px__conn_res_process(c);
        return;
    }
    if (c->x->res == RES_DONE)
        px__conn_finish_cycle(c);
}

/* ---- the request side ---- */

static void on_up_write(uv_write_t *req, int status);

/* Writes what is pending for the upstream: the header block once, then the body bytes parsed so far. */
static void up_send(px_conn_t *c)
{
    px_upconn_t *u = c->x->up;
    uv_buf_t bufs[2];
    unsigned n = 0;

    if (u == NULL || !u->connected || u->writing)
        return;
    if (!c->x->upbuf_sent)
        bufs[n++] = uv_buf_init(c->x->upbuf->data, (unsigned)c->x->upbuf->len);
    if (c->x->rpos > c->x->fwd)
        bufs[n++] = uv_buf_init(c->rbuf->data + c->x->fwd, (unsigned)(c->x->rpos - c->x->fwd));
    if (n == 0)
        return;
    c->x->upbuf_sent = 1;
    c->x->up_end = c->x->rpos;
    u->writing = 1;
    if (write_fast(c->w, (uv_stream_t *)&u->tcp, &u->wreq, bufs, n, on_up_write) != 0) {
        u->writing = 0;
        px_upstream_close(u);
        c->x->up = NULL;
        c->x->err = PX_ERR_RESET;
        px__conn_local_reply(c, 502, "upstream write failed\n");
    }
}

/* A request may go out again on a fresh connection when a reused keep-alive connection turned out to be closed
 * by the upstream before it answered, and the request had no body: nothing of it can have been processed. */
int px__conn_retryable(const px_conn_t *c)
{
    return c->x->up != NULL && c->x->up->reused && c->x->res == RES_WAIT && !c->x->req_body && c->x->upbuf != NULL;
}

void px__conn_retry_fresh(px_conn_t *c)
{
    unsigned ep = c->x->up->ep;

    px_upstream_close(c->x->up);
    c->x->up = NULL;
    c->x->upbuf_sent = 0;
    /* A pooled connection would be as stale as this one: go around the pool. */
    while (c->w->eps[ep].idle != NULL)
        px_upstream_close(c->w->eps[ep].idle);
    if ((c->x->up = px_upstream_get(c->w, ep, c)) == NULL) {
        px__conn_local_reply(c, 502, "upstream connect failed\n");
        return;
    }
    px__conn_arm(c, PH_CONNECT, px_server.cfg->connect_timeout_ms);
}

static void on_up_write(uv_write_t *req, int status)
{
    px_upconn_t *u = req->data;
    px_conn_t *c = u->conn;

    u->writing = 0;
    if (u->closing || status == UV_ECANCELED || c == NULL)
        return;
    if (status < 0) {
        if (px__conn_retryable(c)) {
            px__conn_retry_fresh(c);
            return;
        }
        c->x->err = PX_ERR_RESET;
        px__conn_local_reply(c, 502, "upstream connection failed\n");
        return;
    }
    c->x->fwd = c->x->up_end;
    if (c->x->phase == PH_UPSTREAM) /* the upstream took request bytes: it is not silent */
        px__conn_arm(c, PH_UPSTREAM, px_server.cfg->upstream_timeout_ms);
    up_send(c); /* body bytes parsed while the previous write was in flight */
    px__conn_cli_process(c);
}

static void up_ready(px_conn_t *c)
{
    px_upconn_t *u = c->x->up;

    llhttp_init(&u->parser, HTTP_RESPONSE, &res_settings);
    u->parser.data = c;
    u->rpos = u->fwd = 0;
    if (u->rbuf != NULL)
        u->rbuf->len = 0;
    if (!u->reading) {
        if (uv_read_start((uv_stream_t *)&u->tcp, px__conn_up_alloc, px__conn_up_read) != 0) {
            c->x->err = PX_ERR_RESET;
            px__conn_local_reply(c, 502, "upstream connection failed\n");
            return;
        }
        u->reading = 1;
    }
    px__conn_arm(c, PH_UPSTREAM, px_server.cfg->upstream_timeout_ms);
    up_send(c);
}

void px__conn_on_up_connect(px_upconn_t *u, int status)
{
    px_conn_t *c = u->conn;

    if (c == NULL)
        return;
    if (status < 0) {
        px_log(PX_LOG_WARN, "upstream", "connect %s: %s", px_server.eps[u->ep].name, uv_strerror(status));
        px_upstream_backoff(c->w, u->ep);
        px_upstream_close(u);
        c->x->up = NULL;
        connect_next(c);
        return;
    }
    up_ready(c);
}

/* Tries the next endpoint of the request's variant; 502 when all were tried. */
static void connect_next(px_conn_t *c)
{
    const px_variant_t *v = &px_server.variants[c->x->variant];
    int pos = px_upstream_pick(c->w, c->x->variant, c->x->tried);
    unsigned ep;

    if (pos < 0) {
        px__conn_local_reply(c, 502, "no endpoint could be connected\n");
        return;
    }
    if (pos < 64)
        c->x->tried |= 1ull << pos;
    ep = v->eps[pos];
    c->x->last_ep = (int)ep;
    c->x->upbuf_sent = 0;
    if ((c->x->up = px_upstream_get(c->w, ep, c)) == NULL) {
        px__conn_local_reply(c, 502, "upstream connect failed\n");
        return;
    }
    if (c->x->up->connected)
        up_ready(c);
    else
        px__conn_arm(c, PH_CONNECT, px_server.cfg->connect_timeout_ms);
}

/* The request's header block is complete at <c->x->rpos>: decide where it goes and prepare what is sent. */
static void on_request_head(px_conn_t *c)
{
    const char *block = c->rbuf->data + c->x->msg;
    rt_span_t line, method, target;
    rt_request_t rq;
    rt_decision_t d;
    px_h1_fwd_req_t fr;
    const px_variant_t *v;
    const rt_table_t *t;
    int n;

    px__conn_disarm(c);
    c->x->req = REQ_BODY;
    c->x->res = RES_WAIT;
    n = px_h1_scan(block, c->x->rpos - c->x->msg, &line, px__conn_hdrs, PX_H1_MAX_HEADERS);
    if (n == PX_H1_TOO_MANY) {
        px__conn_local_reply(c, 431, "too many headers\n");
        return;
    }
    if (n < 0 || px_h1_request_line(line, &method, &target) != 0) {
        c->end = PX_END_PROTOCOL;
        px__conn_local_reply(c, 400, "bad request\n");
        return;
    }
    c->x->http10 = c->x->parser.http_major == 1 && c->x->parser.http_minor == 0;
    /* Framing named hop-by-hop, a second Host, or an HTTP/1.1 request without one: the upstream could read the
     * request differently from weir (RFC 9112 §3.2, RFC 9110 §7.6.1). */
    if (px_h1_check(px__conn_hdrs, (size_t)n, c->x->http10 ? PX_H1_HOST_ONE : PX_H1_HOST_REQUIRED) != 0) {
        c->end = PX_END_PROTOCOL;
        px__conn_local_reply(c, 400, "bad request\n");
        return;
    }
    c->x->keep_alive = llhttp_should_keep_alive(&c->x->parser) && !c->x->close_after;
    c->x->head = method.len == 4 && memcmp(method.p, "HEAD", 4) == 0;
    c->x->req_body = (c->x->parser.flags & F_CHUNKED) || c->x->parser.content_length > 0;
    c->x->upgrade = c->x->parser.upgrade;
    if (c->x->parser.flags & F_TRANSFER_ENCODING) {
        /* Only plain chunked is relayed: any other coding (even "gzip, chunked") is refused before an upstream
         * sees the request, as nginx does. */
        int i, ok = 1;
        for (i = 0; i < n; i++)
            if (px_h1_span_ieq(px__conn_hdrs[i].name, "transfer-encoding") &&
                !px_h1_span_ieq(px__conn_hdrs[i].value, "chunked"))
                ok = 0;
        if (!ok) {
            c->x->close_after = 1;
            px__conn_local_reply(c, 501, "unsupported transfer coding\n");
            return;
        }
    }
    if (c->x->parser.method == HTTP_CONNECT) {
        px__conn_local_reply(c, 405, "CONNECT is not supported\n");
        return;
    }

    memset(&rq, 0, sizeof(rq));
    rq.method = method;
    rq.path = target;
    rq.headers = px__conn_hdrs;
    rq.nheaders = (size_t)n;
    rq.client_ip = (rt_span_t){c->x->ip, strlen(c->x->ip)};
    t = atomic_load_explicit(&px_server.table, memory_order_acquire);
    rt_decide_worker(t, c->w->id, &rq, px_worker_rand(c->w), &d);
    if (d.key_missing && px_server.cfg->sticky_set_cookie) {
        /* A client without the cookie gets one now, and is placed by it, so its next requests land the same. */
        snprintf(c->x->cookie, sizeof(c->x->cookie), "%016llx", (unsigned long long)px_worker_rand(c->w));
        rq.sticky_override = (rt_span_t){c->x->cookie, 16};
        rt_decide_worker(t, c->w->id, &rq, px_worker_rand(c->w), &d);
    }
    c->x->variant = d.variant;
    c->x->route = d.route;
    c->x->routed = 1;
    c->x->by_route = d.by_route;
    if (d.route >= 0) {
        c->x->route_slot = px_worker_route_slot(c->w, t, (unsigned)d.route);
        px_stats_route_match(c->w->stats, c->x->route_slot);
    }
    v = &px_server.variants[c->x->variant];
    if (atomic_load_explicit(&v->neps, memory_order_acquire) == 0) {
        px__conn_local_reply(c, 503, "no endpoint for this variant\n");
        return;
    }

    if (c->x->upbuf == NULL && (c->x->upbuf = px_buf_get(&c->w->bufs)) == NULL) {
        px__conn_close(c, PX_END_RESOURCE);
        return;
    }
    memset(&fr, 0, sizeof(fr));
    fr.method = method;
    fr.target = target;
    fr.client_ip = c->x->ip;
    fr.host = px_server.eps[atomic_load_explicit(&v->eps[0], memory_order_acquire)].name;
    fr.upgrade = c->x->upgrade;
    c->x->upbuf->len = px_h1_build_request(c->x->upbuf->data, px_server.bufsize, &fr, px__conn_hdrs, (size_t)n);
    if (c->x->upbuf->len == 0) {
        px__conn_local_reply(c, 431, "request header block too large\n");
        return;
    }
    c->x->fwd = c->x->rpos; /* the header block is replaced by <upbuf> */
    c->x->tried = 0;
    if (d.mirror >= 0)
        c->x->mirror = px_mirror_start(c->w, (unsigned)d.mirror, c->x->upbuf->data, c->x->upbuf->len, c->x->req_body);
    connect_next(c);
}

static int llhttp_status(llhttp_errno_t err)
{
    /* A Transfer-Encoding other than chunked is something we do not implement, not something the client broke. */
    return err == HPE_INVALID_TRANSFER_ENCODING ? 501 : 400;
}

/* Parses what the client sent, as far as the current state allows, and relays request body bytes. */
void px__conn_cli_process(px_conn_t *c)
{
    llhttp_errno_t err;

    /* A synchronous write completion inside this loop may end the cycle (c->x goes back to the pool). */
    while (!c->closing && c->x != NULL && c->rbuf != NULL && !c->x->lingering) {
        px_buf_t *b = c->rbuf;
        if (c->x->tunnel) {
            c->x->rpos = b->len;
            up_send(c);
            break;
        }
        if (c->x->req == REQ_HEAD) {
            if (c->x->res != RES_NONE || c->x->rpos == b->len)
                break;
            err = llhttp_execute(&c->x->parser, b->data + c->x->rpos, b->len - c->x->rpos);
            if (err == HPE_OK) {
                c->x->rpos = b->len;
                if (c->x->rpos - c->x->msg > px_server.cfg->max_header_bytes)
                    px__conn_local_reply(c, 431, "request header block too large\n");
                break;
            }
            if (err == HPE_PAUSED) {
                c->x->rpos = (size_t)(llhttp_get_error_pos(&c->x->parser) - b->data);
                llhttp_resume(&c->x->parser);
                if (c->x->rpos - c->x->msg > px_server.cfg->max_header_bytes) {
                    px__conn_local_reply(c, 431, "request header block too large\n");
                    break;
                }
                on_request_head(c);
                continue;
            }
            c->end = PX_END_PROTOCOL;
            px_log(PX_LOG_DEBUG, "conn", "%s: bad request: %s", c->x->ip, llhttp_get_error_reason(&c->x->parser));
            px__conn_local_reply(c, llhttp_status(err), "bad request\n");
            break;
        }
        if (c->x->req == REQ_BODY) {
            size_t from = c->x->rpos;
            err = llhttp_execute(&c->x->parser, b->data + c->x->rpos, b->len - c->x->rpos);
            if (err == HPE_OK) {
                c->x->rpos = b->len;
            } else if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
                c->x->rpos = (size_t)(llhttp_get_error_pos(&c->x->parser) - b->data);
                c->x->req = REQ_DONE;
            } else {
                c->end = PX_END_PROTOCOL;
                if (c->x->res == RES_WAIT || c->x->res == RES_HEAD)
                    px__conn_local_reply(c, 400, "bad request body\n");
                else
                    px__conn_close(c, PX_END_PROTOCOL);
                break;
            }
            /* The copy gets its own bytes: it never holds the client's buffer, so it can never hold up the primary. */
            if (c->x->mirror != NULL &&
                px_mirror_feed(c->x->mirror, b->data + from, c->x->rpos - from, c->x->req == REQ_DONE) < 0)
                c->x->mirror = NULL;
            up_send(c);
        }
        break;
    }
    update_read_state(c);
}

static void cli_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    px_conn_t *c = s->data;
    (void)buf;

    if (c->closing)
        return;
    if (nread > 0) {
        if (c->x == NULL && attach(c) != 0) {
            px__conn_close(c, PX_END_RESOURCE);
            return;
        }
        if (c->x->lingering) {
            c->rbuf->len = 0;
            return;
        }
        if (c->x->req == REQ_HEAD && c->x->res == RES_NONE && c->rbuf->len == c->x->msg) {
            px__conn_arm(c, PH_HEADER, px_server.cfg->header_timeout_ms); /* the first byte of a request */
            c->x->start_ns = uv_hrtime();
        }
        c->rbuf->len += (size_t)nread;
        if (c->x->tunnel)
            px__conn_arm(c, PH_IDLE, px_server.cfg->idle_timeout_ms);
        px__conn_cli_process(c);
        return;
    }
    if (nread == 0 || nread == UV_ENOBUFS) {
        update_read_state(c);
        return;
    }
    /* EOF or error. Between requests that is a normal close; during one, the client gave up on it. */
    px__conn_close(c, PX_END_CLI_CLOSED);
}

/* ---- one cycle ends ---- */

void px__conn_finish_cycle(px_conn_t *c)
{
    px_upconn_t *u = c->x->up;

    if (u != NULL) {
        int reuse = c->x->req == REQ_DONE && u->connected && !c->x->upgrade && llhttp_should_keep_alive(&u->parser) &&
                    (u->rbuf == NULL || u->rpos == u->rbuf->len);
        c->x->up = NULL;
        if (reuse)
            px_upstream_release(u);
        else
            px_upstream_close(u);
    }
    account(c);
    px_buf_put(&c->w->bufs, c->x->upbuf);
    px_buf_put(&c->w->bufs, c->x->obuf);
    c->x->upbuf = c->x->obuf = NULL;
    px__conn_disarm(c);
    if (c->x->close_after || c->x->req != REQ_DONE || c->w->draining) {
        px__conn_linger(c);
        return;
    }
    /* Keep-alive: the next request starts where this one ended (pipelined bytes may be waiting). */
    c->x->req = REQ_HEAD;
    c->x->res = RES_NONE;
    c->x->msg = c->x->fwd = c->x->up_end = c->x->rpos;
    c->x->dechunk = c->x->head = c->x->req_body = c->x->routed = c->x->res_started = c->x->upgrade = 0;
    c->x->obuf_sent = c->x->up_eof = 0;
    c->x->status = 0;
    c->x->err = PX_ERR_COUNT;
    c->x->start_ns = uv_hrtime();
    c->x->last_ep = c->x->route = -1;
    c->x->bytes_out = 0;
    c->x->cookie[0] = '\0';
    llhttp_resume(&c->x->parser);
    if (c->rbuf != NULL && c->rbuf->len > c->x->rpos) {
        px__conn_arm(c, PH_HEADER, px_server.cfg->header_timeout_ms);
        px__conn_cli_process(c);
        return;
    }
    /* Idle: the cycle goes back to the pool and the connection waits on the idle list, holding no buffer. */
    detach(c);
    ilist_add(c, IL_IDLE, px_server.cfg->idle_timeout_ms);
    update_read_state(c);
}

/* ---- accept and drain ---- */

int px_conn_accept(px_worker_t *w, int lfd)
{
    px_conn_t *c = w->free_conns;
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);
    int fd, rc;

    if (c == NULL) {
        if ((c = malloc(sizeof(*c))) == NULL)
            return UV_ENOMEM;
        w->nmalloc++;
        c->next = NULL;
        w->free_conns = c;
    }
    /* libuv's error codes are the negated errno values on Unix. */
    if ((fd = accept4(lfd, (struct sockaddr *)&ss, &sslen, SOCK_NONBLOCK | SOCK_CLOEXEC)) < 0)
        return errno == EWOULDBLOCK ? UV_EAGAIN : -errno;
    w->free_conns = c->next;
    UNPOISON_REGION(c, sizeof(*c));
    memset(c, 0, sizeof(*c));
    c->w = w;
    if ((rc = uv_tcp_init(&w->loop, &c->tcp)) != 0) {
        close(fd);
        c->next = w->free_conns;
        w->free_conns = c;
        POISON_FREE(c, next);
        return rc;
    }
    c->tcp.data = c;
    c->next = w->conns;
    if (w->conns != NULL)
        w->conns->prev = c;
    w->conns = c;
    w->nconns++;
    atomic_fetch_add_explicit(&px_server.ndownstream, 1, memory_order_relaxed);
    if ((rc = uv_tcp_open(&c->tcp, fd)) != 0) {
        close(fd);
        px__conn_close(c, PX_END_CLI_CLOSED);
        return rc;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    memcpy(&c->peer, &ss, ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
    /* No cycle until the first byte: header-timeout runs from the accept through the fresh list. */
    ilist_add(c, IL_FRESH, px_server.cfg->header_timeout_ms);
    update_read_state(c);
    return 0;
}

void px_conn_drain_all(px_worker_t *w, int force)
{
    px_conn_t *c, *next;

    for (c = w->conns; c != NULL; c = next) {
        next = c->next;
        if (force || idle(c))
            px__conn_close(c, PX_END_DRAIN);
        else if (c->x != NULL)
            c->x->close_after = 1;
    }
}

/* Closes fresh connections that sent nothing within header-timeout and idle ones past idle-timeout. Both lists
 * are sorted by deadline, so the walk stops at the first connection still in time. */
void px_conn_sweep(px_worker_t *w)
{
    uint64_t now = uv_now(&w->loop);

    while (w->fresh_head != NULL && w->fresh_head->deadline <= now)
        px__conn_close(w->fresh_head, PX_END_CLI_TIMEOUT);
    while (w->idle_head != NULL && w->idle_head->deadline <= now)
        px__conn_close(w->idle_head, PX_END_CLI_TIMEOUT);
}

static void on_cycle_closed(uv_handle_t *h)
{
    free(CONTAINER_OF(h, px_cycle_t, timer));
}

void px_conn_close_cycles(px_worker_t *w)
{
    px_cycle_t *x;

    while ((x = w->free_cycles) != NULL) {
        w->free_cycles = x->next_free;
        uv_close((uv_handle_t *)&x->timer, on_cycle_closed);
    }
}

void px_conn_free_recycled(px_worker_t *w)
{
    px_conn_t *c;

    while ((c = w->free_conns) != NULL) {
        w->free_conns = c->next;
        UNPOISON_REGION(c, sizeof(*c));
        free(c);
    }
}
