/* Worker threads: one libuv loop each, with its own SO_REUSEPORT listeners (include/px/worker.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "common/macros.h"

#include "px/conn.h"
#include "px/log.h"
#include "px/mirror.h"
#include "px/upstream.h"
#include "px/worker.h"

#define TICK_MS 1000

static void on_connection(uv_stream_t *server, int status)
{
    px_worker_t *w = server->data;

    if (status < 0) {
        px_log(PX_LOG_WARN, "worker", "accept: %s", uv_strerror(status));
        return;
    }
    if (w->nconns >= w->max_conns) {
        /* Not accepting makes libuv stop watching this listener: later connections wait in the kernel's backlog
         * until px__worker_conn_gone() makes room. */
        w->paused[(uv_tcp_t *)server - w->listeners] = 1;
        return;
    }
    px_conn_accept(w, server);
}

static void on_tick(uv_timer_t *t)
{
    px_worker_t *w = t->data;

    px_conn_sweep(w);
    px_upstream_expire(w, px_server.cfg->idle_timeout_ms);
    /* The steady-state check of tests/integration/test_steady_state.c: once the pools have warmed up, serving more
     * requests allocates nothing, so this number stops moving. */
    px_log(PX_LOG_DEBUG, "worker", "worker %u: %llu objects from malloc", w->id,
           (unsigned long long)(w->nmalloc + w->bufs.nmalloc));
}

/* Idle and fresh connections have no timer of their own: a tick closes them, a few times per timeout. */
static uint64_t tick_ms(void)
{
    uint64_t t = TICK_MS;

    t = MIN(t, px_server.cfg->idle_timeout_ms / 8);
    t = MIN(t, px_server.cfg->header_timeout_ms / 8);
    return MAX(t, 5);
}

static void close_listeners(px_worker_t *w)
{
    unsigned i;

    if (w->listeners_closed)
        return;
    w->listeners_closed = 1;
    for (i = 0; i < w->nlisteners; i++)
        uv_close((uv_handle_t *)&w->listeners[i], NULL);
}

/* Once draining and without client connections, close what keeps the loop alive so uv_run() returns. */
static void maybe_stop(px_worker_t *w)
{
    if (!w->draining || w->nconns > 0 || w->stopping)
        return;
    w->stopping = 1;
    px_conn_close_cycles(w);
    px_mirror_cancel_all(w);
    px_upstream_expire(w, 0);
    uv_close((uv_handle_t *)&w->tick, NULL);
    /* <wakeup> stays open until the loop has nothing else: main may still send to it until <exited> is set. */
    uv_unref((uv_handle_t *)&w->wakeup);
}

void px__worker_conn_gone(px_worker_t *w)
{
    unsigned i;

    for (i = 0; i < w->nlisteners && w->nconns < w->max_conns; i++) {
        if (w->paused[i] && !w->listeners_closed) {
            w->paused[i] = 0;
            px_conn_accept(w, (uv_stream_t *)&w->listeners[i]);
        }
    }
    maybe_stop(w);
}

static void on_wakeup(uv_async_t *a)
{
    px_worker_t *w = a->data;
    int how = atomic_exchange(&w->drain_req, 0);
    const rt_table_t *t = atomic_load_explicit(&px_server.table, memory_order_acquire);

    /* A safe point: no decision of this thread is in progress, and every later one reads the new table. */
    atomic_store(&w->acked_gen, rt_table_generation(t));
    uv_async_send(px_server.on_ack);
    if (how == 0 || w->stopping)
        return;
    w->draining = 1;
    close_listeners(w);
    px_upstream_expire(w, 0);
    px_conn_drain_all(w, how == 2);
    px_mirror_cancel_all(w); /* SPEC: copies in flight are cancelled at drain */
    maybe_stop(w);
}

unsigned px_worker_route_slot(px_worker_t *w, const rt_table_t *t, unsigned idx)
{
    /* Keyed by generation, not by address: a freed table's address can come back for a newer one. */
    if (w->slots_gen != rt_table_generation(t) + 1) {
        unsigned i, n = rt_table_nroutes(t);
        for (i = 0; i < n; i++)
            w->route_slots[i] = (uint16_t)px_stats_route_slot(rt_table_route_name(t, i));
        w->slots_gen = rt_table_generation(t) + 1;
    }
    return w->route_slots[idx];
}

uint64_t px_worker_rand(px_worker_t *w)
{
    /* splitmix64: one add and a few multiplies; plenty for bucket and mirror draws. */
    uint64_t z = (w->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

int px_worker_init(px_worker_t *w, unsigned id, const int *fds, unsigned nfds)
{
    int rc;

    memset(w, 0, sizeof(*w));
    w->id = id;
    if ((rc = uv_loop_init(&w->loop)) != 0)
        return rc;
    px_bufpool_init(&w->bufs, px_server.bufsize, 1024);
    /* sized for every slot: `set upstream` and DNS add variants and endpoints while the worker runs */
    w->eps = calloc(PX_MAX_ENDPOINTS, sizeof(*w->eps));
    w->rr = calloc(RT_MAX_VARIANTS, sizeof(*w->rr));
    w->listeners = calloc(nfds ? nfds : 1, sizeof(*w->listeners));
    w->listen_fds = calloc(nfds ? nfds : 1, sizeof(int));
    w->paused = calloc(nfds ? nfds : 1, 1);
    w->max_conns = (unsigned)(px_server.cfg->max_connections / px_server.nworkers);
    if (w->max_conns == 0)
        w->max_conns = 1;
    w->stats = px_stats_new(RT_MAX_VARIANTS);
    if (w->eps == NULL || w->rr == NULL || w->listeners == NULL || w->listen_fds == NULL || w->paused == NULL ||
        w->stats == NULL)
        return UV_ENOMEM;
    memcpy(w->listen_fds, fds, nfds * sizeof(int));
    w->nlisteners = nfds;
    if (getrandom(&w->rng, sizeof(w->rng), 0) != sizeof(w->rng))
        w->rng = uv_hrtime() ^ ((uint64_t)id << 32);
    pthread_mutex_init(&w->wake_lock, NULL);
    uv_async_init(&w->loop, &w->wakeup, on_wakeup);
    w->wakeup.data = w;
    uv_timer_init(&w->loop, &w->tick);
    w->tick.data = w;
    return 0;
}

void *px__worker_main(void *arg)
{
    px_worker_t *w = arg;
    unsigned i;
    int rc;

    {
        /* "weir-w<N>" in ps -L, top -H, /proc/PID/task/TID/comm and the control socket's error replies */
        char name[16];
        snprintf(name, sizeof(name), "weir-w%u", w->id);
        pthread_setname_np(pthread_self(), name);
    }
    for (i = 0; i < w->nlisteners; i++) {
        uv_tcp_init(&w->loop, &w->listeners[i]);
        w->listeners[i].data = w;
        if ((rc = uv_tcp_open(&w->listeners[i], w->listen_fds[i])) != 0 ||
            (rc = uv_listen((uv_stream_t *)&w->listeners[i], 4096, on_connection)) != 0) {
            px_log(PX_LOG_ERROR, "worker", "listen: %s", uv_strerror(rc));
            abort();
        }
    }
    uv_timer_start(&w->tick, on_tick, tick_ms(), tick_ms());
    uv_run(&w->loop, UV_RUN_DEFAULT);
    pthread_mutex_lock(&w->wake_lock);
    atomic_store(&w->exited, 1);
    uv_close((uv_handle_t *)&w->wakeup, NULL);
    pthread_mutex_unlock(&w->wake_lock);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    uv_async_send(px_server.on_ack);
    return NULL;
}

void px_worker_request(px_worker_t *w, int how)
{
    int cur = atomic_load(&w->drain_req);

    /* "close now" wins over "drain". */
    if (how > cur)
        atomic_store(&w->drain_req, how);
    pthread_mutex_lock(&w->wake_lock);
    if (!atomic_load(&w->exited))
        uv_async_send(&w->wakeup);
    pthread_mutex_unlock(&w->wake_lock);
}

void px_worker_join(px_worker_t *w)
{
    px_upconn_t *u;

    pthread_join(w->thread, NULL);
    if (uv_loop_close(&w->loop) != 0)
        px_log(PX_LOG_WARN, "worker", "loop %u closed with handles open", w->id);
    px_conn_free_recycled(w);
    px_mirror_free_recycled(w);
    while ((u = w->free_upconns) != NULL) {
        w->free_upconns = u->next;
        free(u);
    }
    px_bufpool_dispose(&w->bufs);
    pthread_mutex_destroy(&w->wake_lock);
    /* The counters stay readable until main frees them with px_worker_free_stats(). */
    free(w->eps);
    free(w->rr);
    free(w->listeners);
    free(w->listen_fds);
    free(w->paused);
}
