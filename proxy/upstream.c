/* Upstream connections: endpoint choice, keep-alive pools, connect (include/px/upstream.h). */
#include <stdlib.h>
#include <string.h>

#include "common/macros.h"
#include "px/conn.h"
#include "px/log.h"
#include "px/mirror.h"
#include "px/upstream.h"

int px_upstream_pick(px_worker_t *w, unsigned variant, uint64_t tried)
{
    const px_variant_t *v = &px_server.variants[variant];
    uint64_t now = uv_now(&w->loop);
    unsigned i, start, fallback = (unsigned)-1, n = atomic_load_explicit(&v->neps, memory_order_acquire);

    if (n == 0)
        return -1;
    start = w->rr[variant]++ % n;
    for (i = 0; i < n; i++) {
        unsigned pos = (start + i) % n;
        if (pos < 64 && (tried & (1ull << pos)))
            continue;
        if (w->eps[atomic_load_explicit(&v->eps[pos], memory_order_acquire)].down_until > now) {
            if (fallback == (unsigned)-1)
                fallback = pos;
            continue;
        }
        return (int)pos;
    }
    /* Every untried endpoint is in backoff: try one anyway rather than fail a request that might succeed. */
    return fallback == (unsigned)-1 ? -1 : (int)fallback;
}

void px_upstream_backoff(px_worker_t *w, unsigned ep)
{
    w->eps[ep].down_until = uv_now(&w->loop) + PX_EP_BACKOFF_MS;
    atomic_store_explicit(&px_server.eps[ep].down_until, w->eps[ep].down_until, memory_order_relaxed);
}

static void pool_unlink(px_upconn_t *u)
{
    px_epstate_t *es = &u->w->eps[u->ep];

    if (u->prev != NULL)
        u->prev->next = u->next;
    else
        es->idle = u->next;
    if (u->next != NULL)
        u->next->prev = u->prev;
    u->next = u->prev = NULL;
    u->pooled = 0;
    es->nidle--;
}

static void on_closed(uv_handle_t *h)
{
    px_upconn_t *u = h->data;
    px_worker_t *w = u->w;

    px_buf_put(&w->bufs, u->rbuf);
    u->rbuf = NULL;
    u->next = w->free_upconns;
    w->free_upconns = u;
    POISON_FREE(u, next);
    w->nupconns--;
}

void px_upstream_close(px_upconn_t *u)
{
    if (u->closing)
        return;
    if (u->pooled)
        pool_unlink(u);
    u->closing = 1;
    u->conn = NULL;
    u->mirror = NULL;
    uv_close((uv_handle_t *)&u->tcp, on_closed);
}

static void on_connect(uv_connect_t *req, int status)
{
    px_upconn_t *u = req->data;

    if (status == UV_ECANCELED || u->closing)
        return;
    if (status == 0)
        u->connected = 1;
    if (u->mirror != NULL)
        px__mirror_on_connect(u, status);
    else
        px__conn_on_up_connect(u, status);
}

px_upconn_t *px_upstream_get(px_worker_t *w, unsigned ep, px_conn_t *conn)
{
    px_epstate_t *es = &w->eps[ep];
    unsigned gen = atomic_load_explicit(&px_server.eps[ep].cur, memory_order_acquire);
    px_upconn_t *u;
    int rc;

    /* Pooled connections to an address the name no longer resolves to are not reused: traffic follows DNS. */
    while ((u = es->idle) != NULL && u->addr_gen != gen)
        px_upstream_close(u);
    if (u != NULL) {
        pool_unlink(u);
        u->conn = conn;
        u->reused = 1;
        return u;
    }
    if ((u = w->free_upconns) != NULL) {
        UNPOISON_REGION(u, sizeof(*u));
        w->free_upconns = u->next;
    } else if ((u = malloc(sizeof(*u))) == NULL) {
        return NULL;
    } else {
        w->nmalloc++;
    }
    memset(u, 0, sizeof(*u));
    u->w = w;
    u->ep = ep;
    u->addr_gen = gen;
    u->conn = conn;
    if (uv_tcp_init(&w->loop, &u->tcp) != 0) {
        u->next = w->free_upconns;
        w->free_upconns = u;
        POISON_FREE(u, next);
        return NULL;
    }
    u->tcp.data = u;
    u->creq.data = u;
    u->wreq.data = u;
    w->nupconns++;
    uv_tcp_nodelay(&u->tcp, 1);
    rc = uv_tcp_connect(&u->creq, &u->tcp, px_endpoint_addr(&px_server.eps[ep]), on_connect);
    if (rc != 0) {
        px_log(PX_LOG_WARN, "upstream", "connect %s: %s", px_server.eps[ep].name, uv_strerror(rc));
        u->closing = 1;
        u->conn = NULL;
        uv_close((uv_handle_t *)&u->tcp, on_closed);
        return NULL;
    }
    return u;
}

void px_upstream_release(px_upconn_t *u)
{
    px_worker_t *w = u->w;
    px_epstate_t *es = &w->eps[u->ep];

    u->conn = NULL;
    u->mirror = NULL;
    px_buf_put(&w->bufs, u->rbuf); /* an idle connection holds no buffer */
    u->rbuf = NULL;
    u->rpos = u->fwd = 0;
    if (w->draining || es->nidle >= PX_POOL_MAX_IDLE) {
        px_upstream_close(u);
        return;
    }
    u->idle_since = uv_now(&w->loop);
    u->prev = NULL;
    u->next = es->idle;
    if (es->idle != NULL)
        es->idle->prev = u;
    es->idle = u;
    es->nidle++;
    u->pooled = 1;
    /* Keep reading: a pooled connection the upstream closes (or writes to) is noticed and dropped. One that cannot
     * be watched is not kept. */
    if (!u->reading) {
        if (uv_read_start((uv_stream_t *)&u->tcp, px__conn_up_alloc, px__conn_up_read) != 0) {
            px_upstream_close(u);
            return;
        }
        u->reading = 1;
    }
}

void px_upstream_expire(px_worker_t *w, uint64_t idle_ms)
{
    uint64_t now = uv_now(&w->loop);
    unsigned i;

    for (i = 0; i < atomic_load(&px_server.neps); i++) {
        px_upconn_t *u = w->eps[i].idle, *next;
        for (; u != NULL; u = next) {
            next = u->next;
            if (idle_ms == 0 || now - u->idle_since >= idle_ms)
                px_upstream_close(u);
        }
    }
}
