/* Worker threads: one libuv loop each, with its own SO_REUSEPORT listeners (include/px/worker.h). */
#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "common/macros.h"

#include "px/conn.h"
#include "px/log.h"
#include "px/mirror.h"
#include "px/upstream.h"
#include "px/worker.h"

#define TICK_MS 1000

/* Connections accepted per readiness of a listener: the rest wait for the next loop iteration, so a burst of
 * connects does not hold back the reads of connections already open. */
#define ACCEPT_BATCH 64
/* After accept failed for lack of descriptors or memory, the listeners are not watched for this long (or until one
 * of the worker's connections closes); HAProxy waits 100 ms too. */
#define ACCEPT_RETRY_MS 100
/* At most one accept warning per worker and this many milliseconds; the others are counted in the next one. */
#define ACCEPT_WARN_MS 1000

static void on_listener(uv_poll_t *p, int status, int events);
static void block_accepting(px_worker_t *w, int err);

/* Starts or stops watching the listeners, the one place that does: a worker accepts while it has room under its
 * share of max-connections, is not waiting out a resource error, and is not draining. Connections it does not
 * accept wait in the kernel's backlog. */
static void update_accepting(px_worker_t *w)
{
    int want = !w->listeners_closed && !w->accept_blocked && w->nconns < w->max_conns;
    unsigned i;
    int rc;

    for (i = 0; i < w->nlisteners; i++) {
        px_listener_t *l = &w->listeners[i];
        if (want && !l->polling) {
            if ((rc = uv_poll_start(&l->poll, UV_READABLE, on_listener)) != 0) {
                block_accepting(w, rc); /* and stop the listeners started already */
                update_accepting(w);
                return;
            }
            l->polling = 1;
        } else if (!want && l->polling) {
            uv_poll_stop(&l->poll);
            l->polling = 0;
        }
    }
}

static void warn_accept(px_worker_t *w, int err)
{
    uint64_t now = uv_now(&w->loop);
    char more[64] = "";

    if (now < w->accept_quiet_until) {
        w->accept_suppressed++;
        return;
    }
    w->accept_quiet_until = now + ACCEPT_WARN_MS;
    if (w->accept_suppressed > 0)
        snprintf(more, sizeof(more), " (and %u more accept errors since the last warning)", w->accept_suppressed);
    w->accept_suppressed = 0;
    px_log(PX_LOG_WARN, "worker", "worker %u: accept: %s%s%s", w->id, uv_strerror(err),
           err == UV_EMFILE || err == UV_ENFILE ? ": new connections wait until descriptors free up" : "", more);
}

static void on_accept_retry(uv_timer_t *t)
{
    px_worker_t *w = t->data;

    w->accept_blocked = 0;
    update_accepting(w);
}

/* Out of descriptors or memory (or anything unexpected, which would fail again as soon as retried): the listeners
 * are not watched rather than retried at once, so a worker neither spins nor floods the log; it tries again when
 * one of its connections closes (px__worker_conn_gone) or ACCEPT_RETRY_MS later. */
static void block_accepting(px_worker_t *w, int err)
{
    warn_accept(w, err);
    w->accept_blocked = 1;
    uv_timer_start(&w->accept_retry, on_accept_retry, ACCEPT_RETRY_MS, 0);
}

/* Errors accept(2) reports for one connection (Linux passes a new socket's pending network error on): the next
 * connection may well be accepted. */
static int per_connection_error(int err)
{
    switch (-err) {
    case ECONNABORTED:
    case EINTR:
    case EPROTO:
    case ENETDOWN:
    case ENOPROTOOPT:
    case EHOSTDOWN:
    case ENONET:
    case EHOSTUNREACH:
    case EOPNOTSUPP:
    case ENETUNREACH:
    case EPERM: /* a firewall rule refused it */
        return 1;
    default:
        return 0;
    }
}

static void on_listener(uv_poll_t *p, int status, int events)
{
    px_listener_t *l = p->data;
    px_worker_t *w = l->w;
    unsigned n;
    int rc = status;

    (void)events;
    for (n = 0; rc >= 0 && n < ACCEPT_BATCH && w->nconns < w->max_conns; n++) {
        rc = px_conn_accept(w, l->fd);
        if (rc < 0 && per_connection_error(rc)) {
            if (rc != UV_ECONNABORTED && rc != UV_EINTR)
                warn_accept(w, rc);
            rc = 0;
        }
    }
    if (rc < 0 && rc != UV_EAGAIN)
        block_accepting(w, rc);
    update_accepting(w);
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
    for (i = 0; i < w->nlisteners; i++) {
        /* uv_close() stops the poll at once; the descriptor is ours to close. */
        uv_close((uv_handle_t *)&w->listeners[i].poll, NULL);
        w->listeners[i].polling = 0;
        close(w->listeners[i].fd);
    }
    uv_timer_stop(&w->accept_retry);
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
    uv_close((uv_handle_t *)&w->accept_retry, NULL);
    /* <wakeup> stays open until the loop has nothing else: main may still send to it until <exited> is set. */
    uv_unref((uv_handle_t *)&w->wakeup);
}

void px__worker_conn_gone(px_worker_t *w)
{
    /* The closed connection gave a descriptor back: worth trying again before the retry timer. */
    if (w->accept_blocked) {
        w->accept_blocked = 0;
        uv_timer_stop(&w->accept_retry);
    }
    update_accepting(w);
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
    unsigned i;
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
    w->max_conns = (unsigned)(px_server.cfg->max_connections / px_server.nworkers);
    if (w->max_conns == 0)
        w->max_conns = 1;
    w->stats = px_stats_new(RT_MAX_VARIANTS);
    if (w->eps == NULL || w->rr == NULL || w->listeners == NULL || w->stats == NULL)
        return UV_ENOMEM;
    if (getrandom(&w->rng, sizeof(w->rng), 0) != sizeof(w->rng))
        w->rng = uv_hrtime() ^ ((uint64_t)id << 32);
    pthread_mutex_init(&w->wake_lock, NULL);
    /* The handles are set up here, on main's thread before the worker's starts, so that a failure stops the start
     * with a message instead of a worker thread without a way to report it. */
    if ((rc = uv_async_init(&w->loop, &w->wakeup, on_wakeup)) != 0 || (rc = uv_timer_init(&w->loop, &w->tick)) != 0 ||
        (rc = uv_timer_init(&w->loop, &w->accept_retry)) != 0)
        return rc;
    w->wakeup.data = w;
    w->tick.data = w;
    w->accept_retry.data = w;
    for (i = 0; i < nfds; i++) {
        px_listener_t *l = &w->listeners[i];
        if ((rc = uv_poll_init_socket(&w->loop, &l->poll, fds[i])) != 0)
            return rc;
        l->poll.data = l;
        l->fd = fds[i];
        l->w = w;
        w->nlisteners++;
    }
    return 0;
}

void *px__worker_main(void *arg)
{
    px_worker_t *w = arg;

    {
        /* "weir-w<N>" in ps -L, top -H, /proc/PID/task/TID/comm and the control socket's error replies */
        char name[16];
        snprintf(name, sizeof(name), "weir-w%u", w->id);
        pthread_setname_np(pthread_self(), name);
    }
    update_accepting(w);
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
}
