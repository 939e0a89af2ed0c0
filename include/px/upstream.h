/* Upstream connections: endpoint choice (round-robin, refusal backoff), per-worker keep-alive pools, connect.
 * An upstream connection is owned by exactly one client connection while in use, by its endpoint's pool while
 * idle, and by nobody while closing (its memory returns to the worker's freelist in its close callback). */
#ifndef PX_UPSTREAM_H
#define PX_UPSTREAM_H
#include <llhttp.h>
#include <uv.h>

#include "px/buf.h"
#include "px/worker.h"

#define PX_EP_BACKOFF_MS 2000 /* an endpoint that refused a connection is skipped this long */
#define PX_POOL_MAX_IDLE 256  /* idle connections kept per endpoint and worker */

struct px_upconn_s {
    uv_tcp_t tcp; /* tcp.data == this */
    uv_connect_t creq;
    uv_write_t wreq;
    px_worker_t *w;
    px_conn_t *conn;            /* the owner while in use by a client connection */
    struct px_mirror_s *mirror; /* the owner while in use by a mirrored copy; both NULL while pooled */
    px_upconn_t *next, *prev;   /* pool list, or the worker's freelist (next only) */
    unsigned ep;                /* index into px_server.eps */
    llhttp_t parser;            /* response parser, re-initialised per request */
    px_buf_t *rbuf;             /* bytes read from the upstream; NULL while pooled */
    size_t rpos;                /* bytes the parser consumed */
    size_t fwd;                 /* bytes before this offset have been written to the client */
    uint64_t idle_since;        /* loop time when it entered the pool */
    unsigned addr_gen;          /* the endpoint's address generation (px_endpoint_t.cur) it was connected to */
    unsigned connected : 1, reused : 1, closing : 1, writing : 1, reading : 1, pooled : 1;
};

/* Picks the endpoint of <variant> to try next, round-robin, skipping endpoints in backoff and those whose bit is
 * set in <tried> (bit i = i-th endpoint of the variant). Returns the position within the variant's endpoint list,
 * or -1 when every endpoint was tried. */
int px_upstream_pick(px_worker_t *w, unsigned variant, uint64_t tried);

/* Returns a connection to endpoint <ep> for <conn>: an idle pooled one (reused = 1, connected = 1), or a new one
 * whose connect is in progress (the connection module's px__conn_on_up_connect runs when it completes).
 * Returns NULL when out of memory or when the connect could not even start. */
px_upconn_t *px_upstream_get(px_worker_t *w, unsigned ep, px_conn_t *conn);

/* Gives a healthy connection whose response ended cleanly back to its endpoint's pool (or closes it when the
 * pool is full or the worker drains). */
void px_upstream_release(px_upconn_t *u);

/* Closes <u>; idempotent. The memory is recycled in the close callback. */
void px_upstream_close(px_upconn_t *u);

/* Marks <ep> as refusing for PX_EP_BACKOFF_MS. */
void px_upstream_backoff(px_worker_t *w, unsigned ep);

/* Closes pooled connections idle for longer than <idle_ms> (all of them when <idle_ms> is 0). */
void px_upstream_expire(px_worker_t *w, uint64_t idle_ms);

#endif
