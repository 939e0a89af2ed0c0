/* The process: variants and their endpoints, the workers, the published route table, drain state.
 * Built by main() before any worker starts; afterwards the table pointer, the drain flag and (from the main thread,
 * proxy/resolve.c) the variants' endpoints change. */
#ifndef PX_SERVER_H
#define PX_SERVER_H

#include <arpa/inet.h>
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

/* An address an endpoint connects to, with its text for logs ("IP:PORT", "[IPv6]:PORT"). Immutable once
 * published, and kept until weir exits (proxy/resolve.c interns one per address ever used). */
typedef struct px_epaddr_s {
    struct sockaddr_storage sa;
    char text[INET6_ADDRSTRLEN + 8];
} px_epaddr_t;

/* One address of a variant. Slots are handed out by proxy/resolve.c on the main thread as names resolve and
 * `set upstream` changes variants; a slot given up waits behind every other free slot before it is reused, so a
 * worker still holding its index a moment later connects where it meant to. Every field is published with a
 * single atomic store of a pointer to immutable, never-freed data (names and addresses are interned): a worker
 * that loaded a pointer may use it for as long as it likes, whatever the main thread does to the slot since. */
typedef struct px_endpoint_s {
    _Atomic unsigned variant;   /* index into px_server.variants (= the route table's variant index) */
    _Atomic(const char *) name; /* "host:port" as configured: logs, and Host for HTTP/1.0 requests */
    _Atomic(const px_epaddr_t *) addr;
    atomic_uint cur;                 /* counts address changes: pooled connections to an older one are not reused */
    atomic_uint_fast64_t down_until; /* loop time before which some worker skips it (refused): `show upstreams` */
} px_endpoint_t;

/* The address to connect to for <ep>, a slot some variant listed (so it has one). */
static inline const struct sockaddr *px_endpoint_addr(px_endpoint_t *ep)
{
    return (const struct sockaddr *)&atomic_load_explicit(&ep->addr, memory_order_acquire)->sa;
}

/* The text of the address <ep> connects to now, "IP:PORT": the access log's `upstream`. */
static inline const char *px_endpoint_text(px_endpoint_t *ep)
{
    return atomic_load_explicit(&ep->addr, memory_order_acquire)->text;
}

/* A variant's endpoints, rewritten in place by the main thread (entries first, then <neps>, release): a worker
 * that loads <neps> (acquire) once and then the entries below it may read a list that is half old, half new for a
 * moment, and every entry it reads is an endpoint slot that exists and has an address. <name> is interned, as the
 * endpoints' names are, because a variant slot freed by `del upstream` may be declared again under another name. */
typedef struct px_variant_s {
    _Atomic(const char *) name;
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
