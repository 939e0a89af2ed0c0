/* Mirrored copies (include/px/mirror.h).
 *
 * A copy owns: a queue of pooled buffers holding the bytes still to send (header block first), one upstream
 * connection, one timer, and a response parser that only looks for the status and the end of the message. */
#include <stdlib.h>
#include <string.h>

#include <llhttp.h>

#include "common/macros.h"
#include "px/log.h"
#include "px/mirror.h"
#include "px/server.h"
#include "px/stats.h"
#include "px/upstream.h"

struct px_mirror_s {
    uv_timer_t timer; /* connect-timeout, then upstream-timeout */
    px_worker_t *w;
    px_mirror_t *next, *prev; /* the worker's copies in flight; <next> links the freelist */
    px_upconn_t *up;
    unsigned variant;
    px_buf_t *qhead, *qtail; /* bytes to send, oldest first */
    size_t queued;           /* bytes waiting in the queue */
    px_buf_t *inflight;      /* the buffers the write in flight points into, oldest first */
    llhttp_t parser;
    int primary_status;    /* 0 until the primary ended */
    int status;            /* the copy's response status, 0 until known */
    unsigned attached : 1, /* the primary may still feed or detach */
        req_done : 1,      /* every byte of the request was queued */
        res_done : 1,      /* the copy's response ended */
        closing : 1, counted : 1, res_counted : 1,
        timer_closed : 1, /* finish() is over: the object is free once the primary let go of it too */
        keep_alive : 1;   /* the copy's response allows reusing its connection (known at its end) */
};

static int on_headers_complete(llhttp_t *p);
static int on_message_complete(llhttp_t *p);
/* Constant from the start, so the workers that read them share nothing that is ever written. */
static const llhttp_settings_t settings = {
    .on_headers_complete = on_headers_complete,
    .on_message_complete = on_message_complete,
};

static void put_chain(px_worker_t *w, px_buf_t *b)
{
    while (b != NULL) {
        px_buf_t *next = b->next;
        px_buf_put(&w->bufs, b);
        b = next;
    }
}
static __thread char discard[16384];

static void pump(px_mirror_t *m);

static int on_headers_complete(llhttp_t *p)
{
    px_mirror_t *m = p->data;

    m->status = p->status_code;
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    px_mirror_t *m = p->data;

    if (p->status_code >= 200 || p->status_code == 101) {
        m->res_done = 1;
        /* Asked here: once the callback returns, llhttp resets the flags the answer depends on. */
        m->keep_alive = llhttp_should_keep_alive(p);
    }
    return 0;
}

/* Both statuses known: count the copy's response, and a mismatch when their classes differ. */
static void compare(px_mirror_t *m)
{
    if (m->counted || m->status == 0 || m->primary_status == 0 || !m->res_done)
        return;
    m->counted = 1;
    if (m->status / 100 != m->primary_status / 100)
        px_stats_mirror_mismatch(m->w->stats, (int)m->variant, uv_now(&m->w->loop));
}

/* Recycles a finished copy once nothing points at it: its timer is closed and its primary detached (the
 * primary keeps its pointer until px_mirror_detach, or until px_mirror_feed told it the copy is gone). */
static void recycle(px_mirror_t *m)
{
    px_worker_t *w = m->w;

    if (!m->timer_closed || m->attached)
        return;
    m->next = w->free_mirrors;
    w->free_mirrors = m;
    POISON_FREE(m, next);
}

static void on_timer_closed(uv_handle_t *h)
{
    px_mirror_t *m = h->data;

    m->timer_closed = 1;
    recycle(m);
}

/* Ends the copy: <reason> >= 0 counts a drop. The object goes back to the freelist when its timer is closed and
 * its primary detached (recycle). */
static void finish(px_mirror_t *m, int drop_reason)
{
    px_worker_t *w = m->w;

    if (m->closing)
        return;
    m->closing = 1;
    if (drop_reason >= 0)
        px_stats_mirror_dropped(w->stats, (int)m->variant, (enum px_drop_reason)drop_reason);
    if (m->up != NULL) {
        px_upconn_t *u = m->up;
        m->up = NULL;
        px_upstream_close(u); /* the exchange did not end cleanly: the connection cannot be reused */
    }
    w->mirror_queued -= m->queued;
    m->queued = 0;
    put_chain(w, m->qhead);
    m->qhead = m->qtail = NULL;
    /* A write in flight still points into <inflight>: closing the connection above cancels it first. */
    put_chain(w, m->inflight);
    m->inflight = NULL;
    if (m->prev != NULL)
        m->prev->next = m->next;
    else
        w->mirrors = m->next;
    if (m->next != NULL)
        m->next->prev = m->prev;
    w->nmirrors--;
    uv_close((uv_handle_t *)&m->timer, on_timer_closed);
}

/* The copy's own exchange ended well: count it, give its connection back, and wait for the primary's status
 * (to compare) unless the primary is already done. */
static void maybe_done(px_mirror_t *m)
{
    px_upconn_t *u = m->up;

    if (!m->res_done || !m->req_done || m->queued > 0 || m->inflight != NULL)
        return;
    if (!m->res_counted) {
        m->res_counted = 1;
        px_stats_mirror_response(m->w->stats, (int)m->variant, m->status);
    }
    if (u != NULL) {
        m->up = NULL;
        u->mirror = NULL;
        /* Pooled connections are watched with the client side's callbacks. */
        uv_read_stop((uv_stream_t *)&u->tcp);
        u->reading = 0;
        if (u->connected && m->keep_alive)
            px_upstream_release(u);
        else
            px_upstream_close(u);
    }
    uv_timer_stop(&m->timer);
    if (m->attached)
        return;
    compare(m);
    finish(m, -1);
}

static void on_timer(uv_timer_t *t)
{
    px_mirror_t *m = t->data;

    if (m->closing)
        return;
    finish(m, PX_DROP_ERROR);
}

static void on_write(uv_write_t *req, int status)
{
    px_upconn_t *u = req->data;
    px_mirror_t *m = u->mirror;

    u->writing = 0;
    if (u->closing || status == UV_ECANCELED || m == NULL)
        return;
    put_chain(m->w, m->inflight);
    m->inflight = NULL;
    if (status < 0) {
        finish(m, PX_DROP_ERROR);
        return;
    }
    pump(m);
}

/* Queued buffers handed to one write: a whole queue at its cap (full buffers and the partial tail one). */
#define PUMP_MAX_BUFS (PX_MIRROR_MAX_QUEUE / PX_IO_BUF_MIN + 1)

/* Writes everything queued in one write; one write in flight at a time. Writing the whole backlog at once is what
 * lets a copy catch up with a primary that fed it several buffers per loop pass: libuv reads a client up to 32
 * times per event, so one pass can bring in more than a few buffers' worth. */
static void pump(px_mirror_t *m)
{
    px_upconn_t *u = m->up;
    uv_buf_t ub[PUMP_MAX_BUFS];
    unsigned n = 0;

    if (m->closing || u == NULL || !u->connected || u->writing)
        return;
    if (m->qhead == NULL) {
        maybe_done(m);
        return;
    }
    m->inflight = m->qhead;
    while (m->qhead != NULL && n < PUMP_MAX_BUFS) {
        px_buf_t *b = m->qhead;
        ub[n++] = uv_buf_init(b->data, (unsigned)b->len);
        m->queued -= b->len;
        m->w->mirror_queued -= b->len;
        m->qhead = b->next;
        if (m->qhead == NULL || n == PUMP_MAX_BUFS)
            b->next = NULL; /* ends the in-flight chain */
    }
    if (m->qhead == NULL)
        m->qtail = NULL;
    u->writing = 1;
    u->wreq.data = u;
    if (uv_write(&u->wreq, (uv_stream_t *)&u->tcp, ub, n, on_write) != 0) {
        u->writing = 0;
        finish(m, PX_DROP_ERROR);
    }
}

static int enqueue(px_mirror_t *m, const char *data, size_t len)
{
    px_worker_t *w = m->w;

    while (len > 0) {
        px_buf_t *b = m->qtail;
        size_t room, n;
        if (b == NULL || b->len == px_server.bufsize) {
            if ((b = px_buf_get(&w->bufs)) == NULL)
                return -1;
            if (m->qtail != NULL)
                m->qtail->next = b;
            else
                m->qhead = b;
            m->qtail = b;
        }
        room = px_server.bufsize - b->len;
        n = len < room ? len : room;
        memcpy(b->data + b->len, data, n);
        b->len += n;
        m->queued += n;
        w->mirror_queued += n;
        data += n;
        len -= n;
    }
    return 0;
}

/* Returns 0, or -1 when the copy was dropped. */
static int start_reading(px_mirror_t *m)
{
    px_upconn_t *u = m->up;

    llhttp_init(&m->parser, HTTP_RESPONSE, &settings);
    m->parser.data = m;
    if (u->reading)
        uv_read_stop((uv_stream_t *)&u->tcp);
    u->reading = 0;
    if (uv_read_start((uv_stream_t *)&u->tcp, px__mirror_up_alloc, px__mirror_up_read) != 0) {
        finish(m, PX_DROP_ERROR);
        return -1;
    }
    u->reading = 1;
    uv_timer_start(&m->timer, on_timer, px_server.cfg->upstream_timeout_ms, 0);
    return 0;
}

void px__mirror_on_connect(px_upconn_t *u, int status)
{
    px_mirror_t *m = u->mirror;

    if (m == NULL || m->closing)
        return;
    if (status < 0) {
        px_upstream_backoff(m->w, u->ep);
        finish(m, PX_DROP_ERROR);
        return;
    }
    if (start_reading(m) == 0)
        pump(m);
}

void px__mirror_up_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    /* The copy's response is only parsed and discarded: one scratch buffer per thread serves every copy. */
    *buf = uv_buf_init(discard, sizeof(discard));
}

void px__mirror_up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    px_upconn_t *u = s->data;
    px_mirror_t *m = u->mirror;
    llhttp_errno_t err;

    if (u->closing || m == NULL || m->closing || nread == 0)
        return;
    if (nread < 0) {
        if (!m->res_done && nread == UV_EOF && m->status != 0 && llhttp_message_needs_eof(&m->parser) &&
            llhttp_finish(&m->parser) == HPE_OK)
            m->res_done = 1;
        if (m->res_done) {
            u->connected = 0; /* closed: never pooled */
            maybe_done(m);
        } else {
            finish(m, PX_DROP_ERROR);
        }
        return;
    }
    uv_timer_start(&m->timer, on_timer, px_server.cfg->upstream_timeout_ms, 0);
    err = llhttp_execute(&m->parser, buf->base, (size_t)nread);
    if (err != HPE_OK) {
        finish(m, PX_DROP_ERROR);
        return;
    }
    maybe_done(m);
}

px_mirror_t *px_mirror_start(px_worker_t *w, unsigned variant, const char *head, size_t len, int body)
{
    static const char mark[] = "x-weir-mirror: 1\r\n\r\n";
    int pos = px_upstream_pick(w, variant, 0);
    px_mirror_t *m;

    /* Unlike a primary request, a copy is not worth a connection attempt to an endpoint that refused a moment ago:
     * with a dead canary that attempt would cost the primary path a socket, a connect and a close per request. */
    if (pos < 0 || w->eps[px_server.variants[variant].eps[pos]].down_until > uv_now(&w->loop)) {
        px_stats_mirror_dropped(w->stats, (int)variant, PX_DROP_ERROR);
        return NULL;
    }
    if (w->nmirrors >= px_server.cfg->mirror_max_inflight) {
        px_stats_mirror_dropped(w->stats, (int)variant, PX_DROP_OVERLOAD);
        return NULL;
    }
    if ((m = w->free_mirrors) != NULL) {
        UNPOISON_REGION(m, sizeof(*m));
        w->free_mirrors = m->next;
    } else if ((m = malloc(sizeof(*m))) == NULL) {
        return NULL;
    } else {
        w->nmalloc++;
    }
    memset(m, 0, sizeof(*m));
    m->w = w;
    m->variant = variant;
    m->req_done = !body;
    if (uv_timer_init(&w->loop, &m->timer) != 0) {
        m->next = w->free_mirrors;
        w->free_mirrors = m;
        POISON_FREE(m, next);
        px_stats_mirror_dropped(w->stats, (int)variant, PX_DROP_ERROR);
        return NULL;
    }
    m->timer.data = m;
    m->next = w->mirrors;
    if (w->mirrors != NULL)
        w->mirrors->prev = m;
    w->mirrors = m;
    w->nmirrors++;
    /* The primary's header block with one more header, so the canary can tell a copy from a real request. */
    if (len < 2 || enqueue(m, head, len - 2) != 0 || enqueue(m, mark, sizeof(mark) - 1) != 0) {
        finish(m, PX_DROP_OVERLOAD);
        return NULL;
    }
    m->up = px_upstream_get(w, px_server.variants[variant].eps[pos], NULL);
    if (m->up == NULL) {
        finish(m, PX_DROP_ERROR);
        return NULL;
    }
    m->up->mirror = m;
    m->up->wreq.data = m->up;
    if (m->up->connected) {
        if (start_reading(m) == 0)
            pump(m);
    } else {
        uv_timer_start(&m->timer, on_timer, px_server.cfg->connect_timeout_ms, 0);
    }
    if (m->closing) /* dropped already: the primary never holds it */
        return NULL;
    m->attached = 1; /* from here on, the object stays ours until the primary detaches */
    return m;
}

int px_mirror_connecting(const px_mirror_t *m)
{
    return !m->closing && m->up != NULL && !m->up->connected;
}

/* Every path where the primary forgets the copy goes through here: the last of the two to let go recycles it. */
static void let_go(px_mirror_t *m)
{
    m->attached = 0;
    recycle(m);
}

int px_mirror_feed(px_mirror_t *m, const char *data, size_t len, int last)
{
    if (m->closing) {
        let_go(m);
        return -1;
    }
    if (m->queued + len > PX_MIRROR_MAX_QUEUE || m->w->mirror_queued + len > PX_MIRROR_MAX_WORKER_QUEUE ||
        enqueue(m, data, len) != 0) {
        finish(m, PX_DROP_OVERLOAD);
        let_go(m);
        return -1;
    }
    if (last)
        m->req_done = 1;
    pump(m);
    if (m->closing) {
        let_go(m);
        return -1;
    }
    return 0;
}

void px_mirror_detach(px_mirror_t *m, int status)
{
    if (m->closing) {
        let_go(m);
        return;
    }
    m->attached = 0;
    if (!m->req_done) {
        finish(m, PX_DROP_ERROR); /* the copy would never see the end of its request */
        return;
    }
    m->primary_status = status;
    if (m->res_counted) { /* the copy was only waiting for this */
        compare(m);
        finish(m, -1);
    }
}

void px_mirror_cancel_all(px_worker_t *w)
{
    while (w->mirrors != NULL)
        finish(w->mirrors, PX_DROP_ERROR);
}

void px_mirror_free_recycled(px_worker_t *w)
{
    px_mirror_t *m;

    while ((m = w->free_mirrors) != NULL) {
        w->free_mirrors = m->next;
        UNPOISON_REGION(m, sizeof(*m));
        free(m);
    }
}
