/* The process: variants and their endpoints, the workers, the published route table, drain state.
 * Built by main() before any worker starts; afterwards the table pointer, the drain flag and (from the main thread,
 * proxy/resolve.c) the variants' endpoints change. */
#ifndef PX_SERVER_H
#define PX_SERVER_H

#include <netinet/in.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "px/config.h"
#include "rt/table.h"

#define PX_IO_BUF_MIN (64 * 1024) /* smallest I/O buffer: see proxy/main.c */

typedef struct px_worker_s px_worker_t;

#define PX_MAX_ENDPOINTS 1024  /* endpoint slots of the process: every resolved address of every variant */
#define PX_VARIANT_EPS_MAX 256 /* endpoints of one variant */

/* One address of a variant. Slots are handed out by proxy/resolve.c on the main thread as names resolve and
 * `set upstream` changes variants; a slot given up waits behind every other free slot before it is reused, so a
 * worker still holding its index a moment later connects where it meant to. */
typedef struct px_endpoint_s {
    unsigned variant;            /* index into px_server.variants (= the route table's variant index) */
    char name[PX_HOST_MAX + 16]; /* "host:port" as configured: logs, and Host for HTTP/1.0 requests */
    /* The address, double-buffered: the main thread writes the slot workers are not reading, then flips <cur>
     * (release); a worker reads <cur> (acquire) and copies nothing, connect() takes the address at once. */
    struct sockaddr_storage addr[2];
    atomic_uint cur;                 /* counts address changes; the low bit selects the slot */
    atomic_uint_fast64_t down_until; /* loop time before which some worker skips it (refused): `show upstreams` */
} px_endpoint_t;

/* The address to connect to for <ep>. */
static inline const struct sockaddr *px_endpoint_addr(px_endpoint_t *ep)
{
    return (const struct sockaddr *)&ep->addr[atomic_load_explicit(&ep->cur, memory_order_acquire) & 1];
}

/* A variant's endpoints, rewritten in place by the main thread: a worker may read a list that is half old, half
 * new for a moment, and every entry it reads is an endpoint slot that exists. */
typedef struct px_variant_s {
    char name[PX_VARIANT_NAME_MAX + 1];
    _Atomic unsigned eps[PX_VARIANT_EPS_MAX]; /* indexes into px_server.eps */
    atomic_uint neps;
} px_variant_t;

typedef struct px_server_s {
    px_config_t *cfg;
    px_variant_t variants[RT_MAX_VARIANTS];
    unsigned nvariants; /* variant slots in use (main thread; grows with `set upstream`) */
    px_endpoint_t *eps; /* [PX_MAX_ENDPOINTS] */
    atomic_uint neps;   /* endpoint slots handed out so far: 0 while no upstream address is known */
    px_worker_t *workers;
    unsigned nworkers;
    size_t bufsize;                   /* capacity of every pooled I/O buffer: PX_IO_BUF_MIN or header block + 4 KiB */
    _Atomic(rt_table_t *) table;      /* the table new requests use */
    atomic_int draining;              /* set on SIGTERM/SIGINT */
    atomic_uint_fast64_t ndownstream; /* open client connections, all workers */
    uint64_t start_ms;                /* uv_hrtime()/1e6 at start */
    uv_async_t *on_ack;               /* main loop: a worker acknowledged a table generation or exited */
} px_server_t;

extern px_server_t px_server;

#endif
