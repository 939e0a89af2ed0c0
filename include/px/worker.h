/* A worker: one thread, one libuv loop, its own listening sockets (SO_REUSEPORT), connections, buffers and
 * upstream keep-alive pools. Nothing in here is touched by another thread except through uv_async. */
#ifndef PX_WORKER_H
#define PX_WORKER_H
#include <pthread.h>
#include <uv.h>

#include "px/buf.h"
#include "px/server.h"
#include "px/stats.h"

typedef struct px_conn_s px_conn_t;
typedef struct px_upconn_s px_upconn_t;

/* Per worker and endpoint: keep-alive pool and failure backoff. */
typedef struct px_epstate_s {
    px_upconn_t *idle; /* most recently used first */
    unsigned nidle;
    uint64_t down_until; /* loop time (ms) before which a refusing endpoint is skipped */
} px_epstate_t;

/* A listening socket of a worker, bound and listening since main(). weir accepts itself on a uv_poll_t rather than
 * through uv_listen(): libuv's accept loop retries an accept that fails for lack of descriptors at once and forever,
 * where a worker must stop watching the socket and let the connections wait in the kernel's backlog. */
typedef struct px_listener_s {
    uv_poll_t poll;
    int fd;
    px_worker_t *w;
    int polling; /* 1 while <poll> is started */
} px_listener_t;

struct px_worker_s {
    unsigned id;
    uv_loop_t loop;
    px_listener_t *listeners; /* [nlisteners] */
    unsigned nlisteners;
    unsigned max_conns;          /* this worker's share of max-connections */
    uv_timer_t accept_retry;     /* ends <accept_blocked> a short while later (worker.c) */
    int accept_blocked;          /* accept failed for lack of descriptors or memory: listeners not watched */
    uint64_t accept_quiet_until; /* loop time before which accept warnings are only counted */
    unsigned accept_suppressed;  /* accept warnings counted, not logged, since the last one logged */
    uv_async_t wakeup;           /* main -> worker: drain or stop */
    uv_timer_t tick;             /* once a second: expire idle upstream connections */
    pthread_t thread;
    px_bufpool_t bufs;
    px_stats_t *stats;                   /* this worker's counters (SPEC §5) */
    uint64_t slots_gen;                  /* generation + 1 of the table <route_slots> were computed for; 0 for none */
    uint16_t route_slots[RT_MAX_ROUTES]; /* route index -> counter slot, for <slots_of> */
    px_epstate_t *eps;                   /* [px_server.neps] */
    unsigned *rr;                        /* [px_server.nvariants] round-robin cursors */
    uint64_t rng;                        /* splitmix64 state */
    px_conn_t *conns;                    /* every open client connection (drain walks it) */
    unsigned nconns;
    px_conn_t *free_conns;              /* recycled, closed connection objects */
    px_conn_t *fresh_head, *fresh_tail; /* accepted, no byte yet: oldest first (header-timeout) */
    px_conn_t *idle_head, *idle_tail;   /* keep-alive between requests: oldest first (idle-timeout) */
    struct px_cycle_s *free_cycles;     /* pooled request cycles (conn.c), timers initialised */
    unsigned ncycles;
    px_upconn_t *free_upconns;
    struct px_mirror_s *mirrors;      /* copies in flight */
    struct px_mirror_s *free_mirrors; /* recycled copy objects */
    unsigned nmirrors;
    size_t mirror_queued; /* bytes queued by all copies of this worker (PX_MIRROR_MAX_WORKER_QUEUE) */
    /* nesting of write completions run synchronously (conn.c write_fast) */
    unsigned write_depth;
    /* connection, cycle, upstream and copy objects that came from malloc (not a freelist) */
    uint64_t nmalloc;
    atomic_uint nupconns;           /* open upstream connections (read by the metrics of the main thread) */
    atomic_int drain_req;           /* main asks: 1 = drain gracefully, 2 = close everything now */
    atomic_uint_fast64_t acked_gen; /* generation of the newest table this worker has switched to */
    atomic_int exited;              /* the loop has ended: nothing left to acknowledge */
    pthread_mutex_t wake_lock;      /* orders px_worker_request() against the closing of <wakeup> */
    int draining;
    int listeners_closed;
    int stopping; /* the loop is winding down: close handles as they become idle */
};

/* Prepares <w> (loop, pools, handles) for <nfds> listening sockets in <fds>, which it takes over (they are closed when
 * it drains). Returns 0 or a negative UV_E* code. */
int px_worker_init(px_worker_t *w, unsigned id, const int *fds, unsigned nfds);
/* The thread's body: runs the worker's loop until drain ends it. */
void *px__worker_main(void *arg);
/* Thread-safe: wakes the worker, which acknowledges the current table generation (px_server.on_ack), and asks it
 * to drain (<how> 1) or to close everything at once (<how> 2); <how> 0 only acknowledges. */
void px_worker_request(px_worker_t *w, int how);
/* Joins the thread and frees the loop and pools. */
void px_worker_join(px_worker_t *w);

/* The counter slot of route <idx> of table <t>. The mapping is recomputed when the worker first sees a new table. */
unsigned px_worker_route_slot(px_worker_t *w, const rt_table_t *t, unsigned idx);

/* The next pseudo-random 64-bit value of the worker's stream. */
uint64_t px_worker_rand(px_worker_t *w);

/* Called by the connection module when a connection closes, so drain can finish. */
void px__worker_conn_gone(px_worker_t *w);

#endif
