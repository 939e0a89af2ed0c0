/* Counters for canary analysis (SPEC §5) and their three renderings: `show stats`, the /stats JSON document and
 * /metrics in Prometheus text format 0.0.4.
 *
 * Every worker owns one px_stats_t and is its only writer: a counter is an _Atomic uint64_t bumped with a relaxed
 * load and a relaxed store (no locked instruction on the request path, no allocation). The main thread reads with
 * relaxed loads and sums over the workers; it never writes a worker's counters, so a reset keeps a baseline and
 * subtracts it.
 *
 * The /stats window is a ring of PX_STATS_WINDOW_MAX one-second slots per worker and variant, each stamped with its
 * absolute second plus one (monotonic ms / 1000 + 1), 0 meaning "no second". A writer that finds another stamp in
 * the slot of the current second reuses the slot: it stamps it STAMP_NONE, zeroes it and stamps it, with fences so
 * that a reader which saw any of the zeroed counts also sees the stamp change (a seqlock whose sequence is the
 * stamp). The rings (and the rows) are mapped anonymous memory: zero as mapped, so "no second" needs no writing,
 * and a variant that never counts anything costs no resident page. Every worker has rings for RT_MAX_VARIANTS
 * variants (`set upstream` adds variants at run time): stamping them all at start made every worker 3 MiB resident.
 *
 * A response is counted either as weight-decided (the variant's row, block 0 of the window) or as decided by a
 * header route (a route row of that route slot and variant, block 1 of the window), never both, so each costs the
 * same few stores. Totals are the sum of the two, which stays monotonic however the reads interleave with the
 * writes; a difference (weighted = total - routed) would not. Route rows are allocated on a (route, variant)
 * pair's first response in each worker, since 256 route slots times every variant would be megabytes per worker
 * when few routes ever decide anything. */
#include <pthread.h>
#include <sys/mman.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/macros.h"
#include "px/accesslog.h"
#include "px/server.h"
#include "px/stats.h"
#include "px/tls.h"
#include "px/worker.h"
#include "rt/parse.h"
#include "rt/table.h"

#define NCODES 500   /* status codes 100..599 */
#define NB 36        /* latency buckets: 35 finite upper bounds and +Inf */
#define STAMP_NONE 0 /* a ring slot's stamp: no second counted there (zero pages need no initialising) */
/* The shared slot's name. A route name may hold '~' but never starts with it (SPEC §3, rt_table's name check), so
 * no registered name equals it and px_stats_route_slot() never hands out this name's slot by name. */
#define OTHER_ROUTE "~other"

/* Upper bounds of the latency buckets (an observation falls in the first bucket whose bound it does not exceed,
 * as Prometheus' `le` says), in ns, and the same as `le` label values in seconds. About 1.5x apart, so a
 * percentile read off them is within one bucket's width: 0.1 ms to 60 s. */
static const uint64_t bound_ns[NB - 1] = {
    100000,     150000,     200000,     300000,      500000,      700000,      1000000,     1500000,     2000000,
    3000000,    5000000,    7000000,    10000000,    15000000,    20000000,    30000000,    50000000,    70000000,
    100000000,  150000000,  200000000,  300000000,   500000000,   700000000,   1000000000,  1500000000,  2000000000,
    3000000000, 5000000000, 7000000000, 10000000000, 15000000000, 20000000000, 30000000000, 60000000000,
};
static const char *const bound_le[NB] = {
    "0.0001", "0.00015", "0.0002", "0.0003", "0.0005", "0.0007", "0.001", "0.0015", "0.002", "0.003", "0.005", "0.007",
    "0.01",   "0.015",   "0.02",   "0.03",   "0.05",   "0.07",   "0.1",   "0.15",   "0.2",   "0.3",   "0.5",   "0.7",
    "1",      "1.5",     "2",      "3",      "5",      "7",      "10",    "15",     "20",    "30",    "60",    "+Inf",
};

static const char *const err_name[PX_ERR_COUNT] = {"connect", "timeout", "reset", "no_endpoint", "client_abort"};
static const char *const drop_name[PX_DROP_COUNT] = {"overload", "error"};

/* The totals of one variant (or of "no variant"): offsets into a row of counters. The first R_N also make up a
 * route row (the responses a header route sent to a variant). */
enum {
    C_CODE = 0,                     /* [NCODES] responses by status (weight-decided ones in a variant's row) */
    C_HIST = C_CODE + NCODES,       /* [NB] latency, per bucket (not cumulative) */
    C_SUM = C_HIST + NB,            /* latency sum, ns */
    R_N = C_SUM + 1,                /* the end of what a route row holds */
    C_ERR = R_N,                    /* [PX_ERR_COUNT] */
    C_MCODE = C_ERR + PX_ERR_COUNT, /* [NCODES] mirror responses by status */
    C_DROP = C_MCODE + NCODES,      /* [PX_DROP_COUNT] */
    C_MISMATCH = C_DROP + PX_DROP_COUNT,
    C_ROW
};

/* One second of one variant in the window ring. 32-bit counts: a second of one worker never sees 4e9 requests.
 * Responses are counted in one of two blocks of W_BLK counts: W_WEIGHTED + W_x or W_ROUTED + W_x. */
enum {
    W_REQ = 0,
    W_CLS,                  /* [4] 2xx, 3xx, 4xx, 5xx */
    W_HIST = W_CLS + 4,     /* [NB] */
    W_BLK = W_HIST + NB,    /* the size of a block */
    W_WEIGHTED = 0,         /* block of the responses whose variant the weights picked */
    W_ROUTED = W_BLK,       /* block of those a header route sent */
    W_MISMATCH = 2 * W_BLK, /* mirrored copies whose status class differed */
    W_N
};

typedef struct sec_s {
    _Atomic uint64_t stamp; /* the absolute second counted here plus one, STAMP_NONE when unused or being reused */
    _Atomic uint32_t c[W_N];
} sec_t;

/* A slot as a reader saw it; also the reset baseline of a slot (main thread only). */
typedef struct snap_s {
    uint64_t stamp; /* as sec_t's */
    uint32_t c[W_N];
} snap_t;

typedef _Atomic uint64_t row_t[C_ROW];

/* The responses one header route sent to one variant, and their values at the last reset (main thread only). */
typedef struct rrow_s {
    _Atomic uint64_t c[R_N];
    uint64_t base[R_N];
    uint64_t hidden; /* responses counted before its variant slot went to a new variant: no series for them */
} rrow_t;

struct px_stats_s {
    unsigned nv;
    row_t *rows;              /* [nv + 1] (mapped); row 0 is PX_STATS_NO_VARIANT, row v + 1 is variant v */
    _Atomic uint64_t *routes; /* [PX_STATS_ROUTES] */
    _Atomic(rrow_t *) *rrows; /* [PX_STATS_ROUTES][nv]; NULL until the pair's first response */
    rrow_t *other_rows;       /* [nv] (mapped): the rows of the shared slot PX_STATS_ROUTES - 1 */
    sec_t *ring;              /* [nv][PX_STATS_WINDOW_MAX] (mapped) */
    snap_t *ring_base;        /* [nv][PX_STATS_WINDOW_MAX] (mapped): the ring at the last reset; main thread only */
};

/* Summed totals, as the readers see them (main thread only). */
typedef struct agg_s {
    uint64_t rows[RT_MAX_VARIANTS + 1][C_ROW];
    uint64_t routes[PX_STATS_ROUTES];
} agg_t;

/* A window summed over the workers, for one variant. */
typedef struct win_s {
    uint64_t c[W_N];
} win_t;

/* One route row summed over the workers (main thread only). */
typedef struct rsum_s {
    uint64_t c[R_N];
} rsum_t;

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)
#define ADD(x, n) atomic_store_explicit(&(x), LOAD(x) + (n), memory_order_relaxed)
#define INC(x) ADD(x, 1)

static agg_t agg_now, agg_base;               /* readers' scratch and the reset baseline */
static uint64_t totals[RT_MAX_VARIANTS][R_N]; /* readers' scratch: rows plus route rows, since start or reset */
static int have_base;

/* Route name registry: insertions under <routes_lock> (workers map a new table's routes to slots); a slot's name is
 * written before <nroutes> is published and never changes, so px_stats_route_name() needs no lock. */
static pthread_mutex_t routes_lock = PTHREAD_MUTEX_INITIALIZER;
static char route_names[PX_STATS_ROUTES - 1][RT_ROUTE_NAME_MAX + 1];
static atomic_uint nroutes;
static atomic_int route_overflow; /* some name was given the shared slot */

static uint64_t mono_ms(void)
{
    struct timespec ts;

    /* uv_hrtime() and the loops' uv_now() count from the same CLOCK_MONOTONIC origin. */
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t (*clock_ms)(void) = mono_ms; /* the readers' clock; unit tests replace it */

/* ---- allocation -------------------------------------------------------------------------------------------- */

/* Cache-line aligned and zeroed, so two workers' counters never share a line. */
static void *zalloc(size_t n)
{
    void *p;

    n = (n + 63) & ~(size_t)63;
    if (n == 0 || posix_memalign(&p, 64, n) != 0)
        return NULL;
    memset(p, 0, n);
    return p;
}

/* Zeroed memory whose pages become resident only when written: anonymous mappings (page aligned, so also cache-line
 * aligned). malloc + memset would touch every page. */
static void *pages_new(size_t n)
{
    void *p = mmap(NULL, n ? n : 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void pages_free(void *p, size_t n)
{
    if (p != NULL)
        munmap(p, n ? n : 1);
}

static size_t rows_bytes(unsigned nv)
{
    return sizeof(row_t) * (nv + 1);
}

static size_t ring_bytes(unsigned nv, size_t elem)
{
    return elem * nv * PX_STATS_WINDOW_MAX;
}

px_stats_t *px_stats_new(unsigned nvariants)
{
    px_stats_t *s;
    size_t i;

    if (nvariants > RT_MAX_VARIANTS || (s = calloc(1, sizeof(*s))) == NULL)
        return NULL;
    s->nv = nvariants;
    s->rows = pages_new(rows_bytes(nvariants));
    s->routes = zalloc(sizeof(*s->routes) * PX_STATS_ROUTES);
    s->rrows = zalloc(sizeof(*s->rrows) * PX_STATS_ROUTES * (nvariants ? nvariants : 1));
    s->ring = pages_new(ring_bytes(nvariants, sizeof(sec_t)));
    s->ring_base = pages_new(ring_bytes(nvariants, sizeof(snap_t)));
    if (s->rows == NULL || s->routes == NULL || s->rrows == NULL || s->ring == NULL || s->ring_base == NULL) {
        px_stats_free(s);
        return NULL;
    }
    /* The shared slot's rows exist from the start: a route row that cannot be allocated later counts there. */
    if ((s->other_rows = pages_new(sizeof(rrow_t) * nvariants)) == NULL) {
        px_stats_free(s);
        return NULL;
    }
    for (i = 0; i < nvariants; i++)
        atomic_init(&s->rrows[(size_t)(PX_STATS_ROUTES - 1) * nvariants + i], &s->other_rows[i]);
    return s;
}

void px_stats_free(px_stats_t *s)
{
    size_t i;

    if (s == NULL)
        return;
    for (i = 0; s->rrows != NULL && i < (size_t)(PX_STATS_ROUTES - 1) * s->nv; i++)
        free(atomic_load_explicit(&s->rrows[i], memory_order_relaxed));
    pages_free(s->other_rows, sizeof(rrow_t) * s->nv);
    free(s->rrows);
    pages_free(s->rows, rows_bytes(s->nv));
    free(s->routes);
    pages_free(s->ring, ring_bytes(s->nv, sizeof(sec_t)));
    pages_free(s->ring_base, ring_bytes(s->nv, sizeof(snap_t)));
    free(s);
}

/* ---- writers (the owning worker's loop) -------------------------------------------------------------------- */

static unsigned bucket_of(uint64_t ns)
{
    unsigned lo = 0, hi = NB - 1; /* answer in [lo, hi]; hi = NB - 1 is +Inf */

    while (lo < hi) {
        unsigned mid = (lo + hi) / 2;
        if (ns <= bound_ns[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* The ring slot of variant <v> for the second of <now_ms>, reused first if it holds an older second. */
static sec_t *second_of(px_stats_t *s, unsigned v, uint64_t now_ms)
{
    uint64_t sec = now_ms / 1000, stamp = sec + 1;
    sec_t *w = &s->ring[(size_t)v * PX_STATS_WINDOW_MAX + sec % PX_STATS_WINDOW_MAX];
    unsigned i;

    if (LOAD(w->stamp) != stamp) {
        atomic_store_explicit(&w->stamp, STAMP_NONE, memory_order_relaxed);
        atomic_thread_fence(memory_order_release);
        for (i = 0; i < W_N; i++)
            atomic_store_explicit(&w->c[i], 0, memory_order_relaxed);
        atomic_store_explicit(&w->stamp, stamp, memory_order_release);
    }
    return w;
}

/* The row of <variant>, or NULL when it is out of range (or <s> is missing). */
static _Atomic uint64_t *row_of(px_stats_t *s, int variant)
{
    if (s == NULL || variant < PX_STATS_NO_VARIANT || variant >= (int)s->nv)
        return NULL;
    return s->rows[variant + 1];
}

/* The route row of slot <slot> and variant <v>, allocated on first use; the shared slot's when out of memory. The
 * release store publishes the zeroed row to readers before they can find it. */
static _Atomic uint64_t *route_row(px_stats_t *s, unsigned slot, unsigned v)
{
    _Atomic(rrow_t *) *p = &s->rrows[(size_t)slot * s->nv + v];
    rrow_t *rr = atomic_load_explicit(p, memory_order_relaxed);

    if (rr == NULL) {
        if ((rr = zalloc(sizeof(*rr))) == NULL)
            return route_row(s, PX_STATS_ROUTES - 1, v);
        atomic_store_explicit(p, rr, memory_order_release);
    }
    return rr->c;
}

void px_stats_response(px_stats_t *s, int variant, int route, int status, uint64_t duration_ns, uint64_t now_ms)
{
    _Atomic uint64_t *r = row_of(s, variant);
    unsigned b, blk = W_WEIGHTED;

    if (r == NULL || status < 100 || status > 599)
        return;
    if (route >= 0 && route < PX_STATS_ROUTES && variant >= 0) {
        r = route_row(s, (unsigned)route, (unsigned)variant);
        blk = W_ROUTED;
    }
    b = bucket_of(duration_ns);
    INC(r[C_CODE + status - 100]);
    INC(r[C_HIST + b]);
    ADD(r[C_SUM], duration_ns);
    if (variant >= 0) {
        sec_t *w = second_of(s, (unsigned)variant, now_ms);
        INC(w->c[blk + W_REQ]);
        if (status >= 200)
            INC(w->c[blk + W_CLS + status / 100 - 2]);
        INC(w->c[blk + W_HIST + b]);
    }
}

void px_stats_proxy_error(px_stats_t *s, int variant, enum px_err_reason reason)
{
    _Atomic uint64_t *r = row_of(s, variant);

    if (r != NULL && (unsigned)reason < PX_ERR_COUNT)
        INC(r[C_ERR + reason]);
}

void px_stats_route_match(px_stats_t *s, unsigned slot)
{
    if (s != NULL && slot < PX_STATS_ROUTES)
        INC(s->routes[slot]);
}

void px_stats_mirror_response(px_stats_t *s, int variant, int status)
{
    _Atomic uint64_t *r = row_of(s, variant);

    if (r != NULL && status >= 100 && status <= 599)
        INC(r[C_MCODE + status - 100]);
}

void px_stats_mirror_dropped(px_stats_t *s, int variant, enum px_drop_reason reason)
{
    _Atomic uint64_t *r = row_of(s, variant);

    if (r != NULL && (unsigned)reason < PX_DROP_COUNT)
        INC(r[C_DROP + reason]);
}

void px_stats_mirror_mismatch(px_stats_t *s, int variant, uint64_t now_ms)
{
    _Atomic uint64_t *r = row_of(s, variant);

    if (r == NULL)
        return;
    INC(r[C_MISMATCH]);
    if (variant >= 0)
        INC(second_of(s, (unsigned)variant, now_ms)->c[W_MISMATCH]);
}

/* ---- route registry ---------------------------------------------------------------------------------------- */

unsigned px_stats_route_slot(const char *name)
{
    unsigned i, n;

    pthread_mutex_lock(&routes_lock);
    n = atomic_load_explicit(&nroutes, memory_order_relaxed);
    for (i = 0; i < n; i++)
        if (strcmp(route_names[i], name) == 0)
            break;
    if (i == n) {
        if (n < PX_STATS_ROUTES - 1) {
            snprintf(route_names[n], sizeof(route_names[n]), "%s", name);
            atomic_store_explicit(&nroutes, n + 1, memory_order_release);
        } else {
            i = PX_STATS_ROUTES - 1;
            atomic_store(&route_overflow, 1);
        }
    }
    pthread_mutex_unlock(&routes_lock);
    return i;
}

const char *px_stats_route_name(unsigned slot)
{
    if (slot == PX_STATS_ROUTES - 1)
        return OTHER_ROUTE;
    if (slot < atomic_load_explicit(&nroutes, memory_order_acquire))
        return route_names[slot];
    return NULL;
}

/* ---- reading ----------------------------------------------------------------------------------------------- */

/* Copies slot <w> into <out>. Returns 0 when it holds no second, or is being reused by its writer right now (the
 * second it is being reused for has next to nothing in it yet). */
static int read_sec(sec_t *w, snap_t *out)
{
    int tries;
    unsigned i;

    for (tries = 0; tries < 3; tries++) {
        uint64_t s1 = atomic_load_explicit(&w->stamp, memory_order_acquire), s2;
        if (s1 == STAMP_NONE)
            return 0;
        for (i = 0; i < W_N; i++)
            out->c[i] = atomic_load_explicit(&w->c[i], memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        s2 = atomic_load_explicit(&w->stamp, memory_order_relaxed);
        if (s1 == s2) {
            out->stamp = s1;
            return 1;
        }
    }
    return 0;
}

static px_stats_t *stats_of(unsigned i)
{
    return px_server.workers != NULL ? px_server.workers[i].stats : NULL;
}

/* Sums every worker's totals into <a>, without any baseline. */
static void collect_raw(agg_t *a)
{
    unsigned i, v, k;

    memset(a, 0, sizeof(*a));
    for (i = 0; i < px_server.nworkers; i++) {
        px_stats_t *s = stats_of(i);
        if (s == NULL)
            continue;
        for (v = 0; v <= s->nv; v++)
            for (k = 0; k < C_ROW; k++)
                a->rows[v][k] += LOAD(s->rows[v][k]);
        for (k = 0; k < PX_STATS_ROUTES; k++)
            a->routes[k] += LOAD(s->routes[k]);
    }
}

static uint64_t minus(uint64_t x, uint64_t base)
{
    return x > base ? x - base : 0;
}

static rrow_t *rrow_of(px_stats_t *s, unsigned slot, unsigned v)
{
    return atomic_load_explicit(&s->rrows[(size_t)slot * s->nv + v], memory_order_acquire);
}

/* Sums the row of route slot <slot> and variant <v> over the workers into <out>, each minus its value at the last
 * reset. Returns whether the pair ever counted a response (a reset does not hide its series). */
static int collect_route(unsigned slot, unsigned v, rsum_t *out)
{
    unsigned i, j;
    int seen = 0;

    memset(out, 0, sizeof(*out));
    for (i = 0; i < px_server.nworkers; i++) {
        px_stats_t *s = stats_of(i);
        uint64_t n = 0;
        rrow_t *rr;
        if (s == NULL || v >= s->nv || (rr = rrow_of(s, slot, v)) == NULL)
            continue;
        for (j = 0; j < R_N; j++) {
            uint64_t x = LOAD(rr->c[j]);
            if (j >= C_HIST && j < C_SUM)
                n += x;
            out->c[j] += minus(x, rr->base[j]);
        }
        if (n > rr->hidden)
            seen = 1;
    }
    return seen;
}

/* The totals since start or the last reset, into agg_now, and every variant's responses (weighted and
 * header-routed) into totals[]. */
static const agg_t *collect(void)
{
    unsigned v, k, j;
    rsum_t rs;

    collect_raw(&agg_now);
    if (have_base) {
        for (v = 0; v <= RT_MAX_VARIANTS; v++)
            for (k = 0; k < C_ROW; k++)
                agg_now.rows[v][k] = minus(agg_now.rows[v][k], agg_base.rows[v][k]);
        for (k = 0; k < PX_STATS_ROUTES; k++)
            agg_now.routes[k] = minus(agg_now.routes[k], agg_base.routes[k]);
    }
    for (v = 0; v < RT_MAX_VARIANTS; v++) {
        memcpy(totals[v], agg_now.rows[v + 1], sizeof(totals[v]));
        for (k = 0; k < PX_STATS_ROUTES && v < px_server.nvariants; k++)
            if (collect_route(k, v, &rs))
                for (j = 0; j < R_N; j++)
                    totals[v][j] += rs.c[j];
    }
    return &agg_now;
}

/* Sums variant <v>'s seconds (now_s - window_s, now_s] over the workers, minus what each slot held at the last
 * reset when it still counts the same second. A stamp one second ahead of <now_s> is let in: a worker's clock may
 * be read a moment after ours. */
static void collect_window(unsigned v, uint64_t now_s, unsigned window_s, win_t *out)
{
    unsigned i, k, j;
    snap_t snap;

    memset(out, 0, sizeof(*out));
    for (i = 0; i < px_server.nworkers; i++) {
        px_stats_t *s = stats_of(i);
        if (s == NULL || v >= s->nv)
            continue;
        for (k = 0; k < PX_STATS_WINDOW_MAX; k++) {
            size_t idx = (size_t)v * PX_STATS_WINDOW_MAX + k;
            const snap_t *base = &s->ring_base[idx];
            /* stamps are seconds plus one */
            if (!read_sec(&s->ring[idx], &snap) || snap.stamp > now_s + 2 || snap.stamp - 1 + window_s <= now_s)
                continue;
            for (j = 0; j < W_N; j++)
                out->c[j] += base->stamp == snap.stamp ? minus(snap.c[j], base->c[j]) : snap.c[j];
        }
    }
}

/* Takes the baseline of variant <v>'s counters (all variants and the route matches when <v> is -1): what the readers
 * subtract from then on. <forget>: also hide the route series the variant's counts so far made. Writes main-thread
 * memory only. */
static void rebase(int v, int forget)
{
    unsigned i, j, first = v < 0 ? 0 : (unsigned)v, end;
    size_t k, slot;

    if (!have_base)
        memset(&agg_base, 0, sizeof(agg_base));
    have_base = 1;
    if (v < 0) {
        collect_raw(&agg_base);
    } else {
        collect_raw(&agg_now); /* scratch: collect() refills it */
        memcpy(agg_base.rows[v + 1], agg_now.rows[v + 1], sizeof(agg_base.rows[v + 1]));
    }
    for (i = 0; i < px_server.nworkers; i++) {
        px_stats_t *s = stats_of(i);
        if (s == NULL)
            continue;
        end = v < 0 ? s->nv : MIN((unsigned)v + 1, s->nv);
        for (k = (size_t)first * PX_STATS_WINDOW_MAX; k < (size_t)end * PX_STATS_WINDOW_MAX; k++)
            if (!read_sec(&s->ring[k], &s->ring_base[k]) && s->ring_base[k].stamp != STAMP_NONE)
                s->ring_base[k].stamp = STAMP_NONE; /* a page never written stays unwritten */
        for (slot = 0; slot < PX_STATS_ROUTES; slot++)
            for (k = first; k < end; k++) {
                rrow_t *rr = rrow_of(s, (unsigned)slot, (unsigned)k);
                uint64_t n = 0;
                for (j = 0; rr != NULL && j < R_N; j++) {
                    rr->base[j] = LOAD(rr->c[j]);
                    n += j >= C_HIST && j < C_SUM ? rr->base[j] : 0;
                }
                if (rr != NULL && forget)
                    rr->hidden = n;
            }
    }
}

void px_stats_reset(void)
{
    rebase(-1, 0);
}

void px_stats_table_changing(const rt_table_t *cur, const rt_table_t *next)
{
    unsigned v, n = MIN(rt_table_nvariants(next), RT_MAX_VARIANTS);

    for (v = 0; v < n; v++)
        if (rt_table_variant_name(next, v) != NULL &&
            (v >= rt_table_nvariants(cur) || rt_table_variant_name(cur, v) == NULL))
            rebase((int)v, 1);
}

/* ---- formatting helpers ------------------------------------------------------------------------------------ */

/* An output in progress: on the first failed append everything it added is taken back at the end. */
typedef struct out_s {
    rt_buf_t *b;
    size_t start;
    int failed;
} out_t;

static void put(out_t *o, const char *s)
{
    if (!o->failed && rt_buf_puts(o->b, s) != 0)
        o->failed = 1;
}

static void putf(out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(out_t *o, const char *fmt, ...)
{
    va_list ap;

    if (o->failed)
        return;
    va_start(ap, fmt);
    if (rt_buf_vprintf(o->b, fmt, ap) != 0)
        o->failed = 1;
    va_end(ap);
}

/* <x> with at most <decimals> decimals and no trailing zeros ("0.25", "12", "0"): valid in JSON and Prometheus. */
static void put_num(out_t *o, double x, int decimals)
{
    char tmp[64], *e;
    int n = snprintf(tmp, sizeof(tmp), "%.*f", decimals, x);

    if (n <= 0 || (size_t)n >= sizeof(tmp)) {
        put(o, "0");
        return;
    }
    if (strchr(tmp, '.') != NULL) {
        for (e = tmp + n - 1; *e == '0'; e--)
            *e = '\0';
        if (*e == '.')
            *e = '\0';
    }
    put(o, strcmp(tmp, "-0") == 0 ? "0" : tmp);
}

/* A JSON string literal. */
static void put_jstr(out_t *o, const char *s)
{
    put(o, "\"");
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            putf(o, "\\%c", c);
        else if (c < 0x20)
            putf(o, "\\u%04x", c);
        else
            putf(o, "%c", c);
    }
    put(o, "\"");
}

/* A Prometheus label value, between the quotes. */
static void put_lval(out_t *o, const char *s)
{
    for (; *s != '\0'; s++) {
        if (*s == '\\' || *s == '"')
            putf(o, "\\%c", *s);
        else if (*s == '\n')
            put(o, "\\n");
        else
            putf(o, "%c", *s);
    }
}

static void finish(out_t *o)
{
    if (o->failed)
        rt_buf_truncate(o->b, o->start);
}

static unsigned nvariants(void)
{
    return px_server.nvariants < RT_MAX_VARIANTS ? px_server.nvariants : RT_MAX_VARIANTS;
}

/* The name of variant slot <v>; NULL for a slot table <t> does not name, as `get weight` does not: a removed
 * variant's (`del upstream`), whose counters belong to no variant now. (px_server.variants[] is renamed from the
 * table before a table is published, on this thread.) */
static const char *variant_name(const rt_table_t *t, unsigned v)
{
    if (t != NULL && (v >= rt_table_nvariants(t) || rt_table_variant_name(t, v) == NULL))
        return NULL;
    return px_server.variants[v].name;
}

static uint64_t sum_codes(const uint64_t *row, unsigned first)
{
    uint64_t n = 0;
    unsigned k;

    for (k = 0; k < NCODES; k++)
        n += row[first + k];
    return n;
}

static uint64_t sum_class(const uint64_t *row, unsigned cls)
{
    uint64_t n = 0;
    unsigned k;

    for (k = (cls - 1) * 100; k < cls * 100; k++)
        n += row[C_CODE + k];
    return n;
}

/* The <q> quantile (0 < q <= 1) of the latency histogram <h>, in ms; 0 when it is empty. Interpolates linearly
 * within the bucket where the cumulative count reaches q * total (as Prometheus' histogram_quantile does), taking
 * 0 as the lower edge of the first bucket; a rank in the +Inf bucket gives the largest finite bound, 60000. */
static double quantile_ms(const uint64_t *h, double q)
{
    uint64_t total = 0, cum = 0;
    double rank;
    unsigned i;

    for (i = 0; i < NB; i++)
        total += h[i];
    if (total == 0)
        return 0;
    rank = q * (double)total;
    for (i = 0; i < NB; i++) {
        double lo, hi;
        if (h[i] == 0)
            continue;
        if ((double)(cum + h[i]) >= rank) {
            if (i == NB - 1)
                break;
            lo = i == 0 ? 0 : (double)bound_ns[i - 1];
            hi = (double)bound_ns[i];
            return (lo + (hi - lo) * (rank - (double)cum) / (double)h[i]) / 1e6;
        }
        cum += h[i];
    }
    return (double)bound_ns[NB - 2] / 1e6;
}

/* ---- show stats ------------------------------------------------------------------------------------------- */

void px_stats_text(rt_buf_t *out)
{
    out_t o = {out, out->len, 0};
    const rt_table_t *t = atomic_load(&px_server.table);
    unsigned v, n = nvariants();
    const char *name;

    collect(); /* into totals[] */
    put(&o, "ok\n");
    for (v = 0; v < n; v++) {
        const uint64_t *r = totals[v];
        if ((name = variant_name(t, v)) == NULL)
            continue;
        putf(&o, "%s requests=%llu 2xx=%llu 3xx=%llu 4xx=%llu 5xx=%llu\n", name,
             (unsigned long long)sum_codes(r, C_CODE), (unsigned long long)sum_class(r, 2),
             (unsigned long long)sum_class(r, 3), (unsigned long long)sum_class(r, 4),
             (unsigned long long)sum_class(r, 5));
    }
    put(&o, "\n");
    finish(&o);
}

/* ---- /stats ------------------------------------------------------------------------------------------------ */

static unsigned default_window_s(void)
{
    uint64_t ms = px_server.cfg != NULL ? px_server.cfg->stats_window_ms : 60000;
    return (unsigned)(ms / 1000);
}

/* {"200": N, ...}: the non-zero codes of a row, ascending. */
static void put_codes(out_t *o, const uint64_t *row, unsigned first)
{
    unsigned k;
    int any = 0;

    put(o, "{");
    for (k = 0; k < NCODES; k++) {
        if (row[first + k] == 0)
            continue;
        putf(o, "%s\"%u\": %llu", any ? ", " : "", k + 100, (unsigned long long)row[first + k]);
        any = 1;
    }
    put(o, "}");
}

/* The "window" object of one block of W_BLK window counts. */
static void put_window_json(out_t *o, const uint64_t *c)
{
    uint64_t req = c[W_REQ];

    putf(o, "{\"requests\": %llu, \"2xx\": %llu, \"3xx\": %llu, \"4xx\": %llu, \"5xx\": %llu, \"error_rate\": ",
         (unsigned long long)req, (unsigned long long)c[W_CLS], (unsigned long long)c[W_CLS + 1],
         (unsigned long long)c[W_CLS + 2], (unsigned long long)c[W_CLS + 3]);
    put_num(o, req ? (double)c[W_CLS + 3] / (double)req : 0, 6);
    put(o, ", \"p50_ms\": ");
    put_num(o, quantile_ms(&c[W_HIST], 0.50), 3);
    put(o, ", \"p90_ms\": ");
    put_num(o, quantile_ms(&c[W_HIST], 0.90), 3);
    put(o, ", \"p99_ms\": ");
    put_num(o, quantile_ms(&c[W_HIST], 0.99), 3);
    put(o, "}");
}

/* "requests": N, "codes": {...}, "window": {...} of a row's first R_N counts and a block of window counts. */
static void put_counts_json(out_t *o, const uint64_t *r, const uint64_t *win)
{
    putf(o, "\"requests\": %llu, \"codes\": ", (unsigned long long)sum_codes(r, C_CODE));
    put_codes(o, r, C_CODE);
    put(o, ", \"window\": ");
    put_window_json(o, win);
}

/* The "mirror" object of a variant that copies were sent to: its responses by code, drops by reason, mismatches
 * (copies whose status class differed from the primary's) and mismatch_rate = mismatches / copy responses, since
 * start or reset; "window" holds the mismatches of the window. */
static void put_mirror_json(out_t *o, const uint64_t *r, const win_t *w)
{
    uint64_t nresp = sum_codes(r, C_MCODE);
    unsigned k;

    putf(o, ", \"mirror\": {\"requests\": %llu, \"codes\": ", (unsigned long long)nresp);
    put_codes(o, r, C_MCODE);
    put(o, ", \"dropped\": {");
    for (k = 0; k < PX_DROP_COUNT; k++)
        putf(o, "%s\"%s\": %llu", k ? ", " : "", drop_name[k], (unsigned long long)r[C_DROP + k]);
    putf(o, "}, \"mismatches\": %llu, \"mismatch_rate\": ", (unsigned long long)r[C_MISMATCH]);
    put_num(o, nresp ? (double)r[C_MISMATCH] / (double)nresp : 0, 6);
    putf(o, ", \"window\": {\"mismatches\": %llu}}", (unsigned long long)w->c[W_MISMATCH]);
}

static int mirror_seen(const uint64_t *r)
{
    unsigned k;

    for (k = 0; k < PX_DROP_COUNT; k++)
        if (r[C_DROP + k] != 0)
            return 1;
    return r[C_MISMATCH] != 0 || sum_codes(r, C_MCODE) != 0;
}

void px_stats_json(rt_buf_t *out, unsigned window_s)
{
    out_t o = {out, out->len, 0};
    const agg_t *a = collect();
    const rt_table_t *t = atomic_load(&px_server.table);
    uint64_t now = clock_ms();
    unsigned v, j, n = nvariants();
    uint64_t all[W_BLK];
    const char *name, *sep = "";
    char bp[16];
    win_t w;

    if (window_s == 0)
        window_s = default_window_s();
    if (window_s < 1)
        window_s = 1;
    if (window_s > PX_STATS_WINDOW_MAX)
        window_s = PX_STATS_WINDOW_MAX;
    putf(&o, "{\"generation\": %llu, \"uptime_seconds\": ", (unsigned long long)(t ? rt_table_generation(t) : 0));
    put_num(&o, now > px_server.start_ms ? (double)(now - px_server.start_ms) / 1000.0 : 0, 3);
    putf(&o, ", \"window_seconds\": %u, \"weights\": {", window_s);
    for (v = 0; v < n; v++) {
        if ((name = variant_name(t, v)) == NULL)
            continue;
        rt_format_bp(t != NULL ? rt_table_weight_bp(t, v) : 0, bp);
        put(&o, sep);
        put_jstr(&o, name);
        putf(&o, ": %s", bp);
        sep = ", ";
    }
    put(&o, "}, \"variants\": {");
    sep = "";
    for (v = 0; v < n; v++) {
        const uint64_t *r = a->rows[v + 1];
        if ((name = variant_name(t, v)) == NULL)
            continue;
        collect_window(v, now / 1000, window_s, &w);
        for (j = 0; j < W_BLK; j++)
            all[j] = w.c[W_WEIGHTED + j] + w.c[W_ROUTED + j];
        put(&o, sep);
        sep = ", ";
        put_jstr(&o, name);
        put(&o, ": {");
        put_counts_json(&o, totals[v], all);
        put(&o, ", \"weighted\": {");
        put_counts_json(&o, r, &w.c[W_WEIGHTED]);
        put(&o, "}");
        if (mirror_seen(r))
            put_mirror_json(&o, r, &w);
        put(&o, "}");
    }
    put(&o, "}}");
    finish(&o);
}

/* ---- /metrics ---------------------------------------------------------------------------------------------- */

static void family(out_t *o, const char *name, const char *type, const char *help)
{
    putf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static int row_nonzero(const uint64_t *r)
{
    unsigned k;

    for (k = 0; k < C_ROW; k++)
        if (r[k] != 0)
            return 1;
    return 0;
}

/* The rows to export, in order: every variant of table <t> (removed ones left out), then "none" (responses made
 * before a variant was chosen) when it has counted anything. Returns how many of <rows>/<names>/<idx> it filled;
 * <idx> holds the variant index, -1 for "none". */
static unsigned export_rows(const agg_t *a, const rt_table_t *t, const uint64_t *rows[], const char *names[], int idx[])
{
    unsigned v, k = 0, n = nvariants();

    for (v = 0; v < n; v++) {
        if ((names[k] = variant_name(t, v)) == NULL)
            continue;
        rows[k] = a->rows[v + 1];
        idx[k++] = (int)v;
    }
    if (row_nonzero(a->rows[0])) {
        rows[k] = a->rows[0];
        idx[k] = -1;
        names[k++] = "none";
    }
    return k;
}

/* Seconds from a nanosecond sum, exactly ("1.5", "0.000123"). */
static void put_seconds(out_t *o, uint64_t ns)
{
    char frac[16];
    int i = snprintf(frac, sizeof(frac), "%09llu", (unsigned long long)(ns % 1000000000)) - 1;

    while (i >= 0 && frac[i] == '0')
        frac[i--] = '\0';
    putf(o, "%llu%s%s", (unsigned long long)(ns / 1000000000), frac[0] ? "." : "", frac);
}

/* "NAME{variant="V"" and, for a header route, ",route="R"": a series with its labels still open. */
static void open_series(out_t *o, const char *name, const char *variant, const char *route)
{
    putf(o, "%s{variant=\"", name);
    put_lval(o, variant);
    if (route != NULL) {
        put(o, "\",route=\"");
        put_lval(o, route);
    }
    put(o, "\"");
}

/* One series per non-zero status code of the NCODES counts from <r>[<first>]. */
static void put_code_series(out_t *o, const char *name, const char *variant, const char *route, const uint64_t *r,
                            unsigned first)
{
    unsigned k;

    for (k = 0; k < NCODES; k++)
        if (r[first + k] != 0) {
            open_series(o, name, variant, route);
            putf(o, ",code=\"%u\"} %llu\n", k + 100, (unsigned long long)r[first + k]);
        }
}

/* The cumulative buckets, _sum and _count of the latency histogram in <r>. */
static void put_histogram(out_t *o, const char *variant, const char *route, const uint64_t *r)
{
    uint64_t cum = 0;
    unsigned k;

    for (k = 0; k < NB; k++) {
        cum += r[C_HIST + k];
        open_series(o, "weir_request_duration_seconds_bucket", variant, route);
        putf(o, ",le=\"%s\"} %llu\n", bound_le[k], (unsigned long long)cum);
    }
    open_series(o, "weir_request_duration_seconds_sum", variant, route);
    put(o, "} ");
    put_seconds(o, r[C_SUM]);
    put(o, "\n");
    open_series(o, "weir_request_duration_seconds_count", variant, route);
    putf(o, "} %llu\n", (unsigned long long)cum);
}

void px_stats_prometheus(rt_buf_t *out)
{
    out_t o = {out, out->len, 0};
    const agg_t *a = collect();
    const rt_table_t *t = atomic_load(&px_server.table);
    const uint64_t *rows[RT_MAX_VARIANTS + 1];
    const char *names[RT_MAX_VARIANTS + 1];
    int idx[RT_MAX_VARIANTS + 1];
    unsigned v, k, nr = export_rows(a, t, rows, names, idx), nrt;
    uint64_t ups = 0;
    char bp[16];
    rsum_t rs;

    /* Code-labelled series only where non-zero (500 possible codes per variant); the histogram and the
     * reason-labelled series always, so rate() over them has a series to work on from the start. The series
     * without a route label count weight-decided responses; a header route's get route="NAME" once it counted. */
    family(&o, "weir_requests_total", "counter", "Responses sent to clients, proxy-made ones included.");
    for (v = 0; v < nr; v++)
        put_code_series(&o, "weir_requests_total", names[v], NULL, rows[v], C_CODE);
    for (v = 0; v < nr; v++)
        for (k = 0; k < PX_STATS_ROUTES && idx[v] >= 0; k++)
            if (px_stats_route_name(k) != NULL && collect_route(k, (unsigned)idx[v], &rs))
                put_code_series(&o, "weir_requests_total", names[v], px_stats_route_name(k), rs.c, C_CODE);

    family(&o, "weir_request_duration_seconds", "histogram", "Time from a request's start to its last response byte.");
    for (v = 0; v < nr; v++)
        put_histogram(&o, names[v], NULL, rows[v]);
    for (v = 0; v < nr; v++)
        for (k = 0; k < PX_STATS_ROUTES && idx[v] >= 0; k++)
            if (px_stats_route_name(k) != NULL && collect_route(k, (unsigned)idx[v], &rs))
                put_histogram(&o, names[v], px_stats_route_name(k), rs.c);

    family(&o, "weir_proxy_errors_total", "counter", "Requests weir answered itself or gave up on, by reason.");
    for (v = 0; v < nr; v++)
        for (k = 0; k < PX_ERR_COUNT; k++) {
            put(&o, "weir_proxy_errors_total{variant=\"");
            put_lval(&o, names[v]);
            putf(&o, "\",reason=\"%s\"} %llu\n", err_name[k], (unsigned long long)rows[v][C_ERR + k]);
        }

    family(&o, "weir_mirror_requests_total", "counter", "Responses to mirrored copies, by status code.");
    for (v = 0; v < nr; v++)
        put_code_series(&o, "weir_mirror_requests_total", names[v], NULL, rows[v], C_MCODE);

    family(&o, "weir_mirror_dropped_total", "counter", "Mirrored copies dropped, by reason.");
    for (v = 0; v < nr; v++)
        for (k = 0; k < PX_DROP_COUNT; k++) {
            put(&o, "weir_mirror_dropped_total{variant=\"");
            put_lval(&o, names[v]);
            putf(&o, "\",reason=\"%s\"} %llu\n", drop_name[k], (unsigned long long)rows[v][C_DROP + k]);
        }

    family(&o, "weir_mirror_mismatch_total", "counter",
           "Completed copies whose status class differs from the primary response's.");
    for (v = 0; v < nr; v++) {
        put(&o, "weir_mirror_mismatch_total{variant=\"");
        put_lval(&o, names[v]);
        putf(&o, "\"} %llu\n", (unsigned long long)rows[v][C_MISMATCH]);
    }

    family(&o, "weir_route_matches_total", "counter", "Requests matched by each route.");
    nrt = atomic_load_explicit(&nroutes, memory_order_acquire);
    for (k = 0; k < PX_STATS_ROUTES; k++) {
        if (k >= nrt && (k != PX_STATS_ROUTES - 1 || !atomic_load(&route_overflow)))
            continue;
        put(&o, "weir_route_matches_total{route=\"");
        put_lval(&o, px_stats_route_name(k));
        putf(&o, "\"} %llu\n", (unsigned long long)a->routes[k]);
    }

    family(&o, "weir_variant_weight_percent", "gauge", "Share of weighted traffic sent to each variant.");
    for (v = 0; v < nr; v++) {
        if (idx[v] < 0)
            continue;
        rt_format_bp(t != NULL ? rt_table_weight_bp(t, (unsigned)idx[v]) : 0, bp);
        put(&o, "weir_variant_weight_percent{variant=\"");
        put_lval(&o, names[v]);
        putf(&o, "\"} %s\n", bp);
    }

    family(&o, "weir_config_generation", "gauge", "Generation of the routing state (bumped by every change).");
    putf(&o, "weir_config_generation %llu\n", (unsigned long long)(t ? rt_table_generation(t) : 0));

    family(&o, "weir_connections", "gauge", "Open connections: downstream from clients, upstream to variants.");
    for (k = 0; k < px_server.nworkers && px_server.workers != NULL; k++)
        ups += atomic_load(&px_server.workers[k].nupconns);
    putf(&o, "weir_connections{side=\"downstream\"} %llu\n", (unsigned long long)atomic_load(&px_server.ndownstream));
    putf(&o, "weir_connections{side=\"upstream\"} %llu\n", (unsigned long long)ups);

    family(&o, "weir_access_log_dropped_total", "counter", "Access log lines dropped: the log was too slow or failed.");
    putf(&o, "weir_access_log_dropped_total %llu\n", (unsigned long long)px_accesslog_dropped());

    if (px_tls_in_use()) { /* a weir without TLS exports no TLS series */
        family(&o, "weir_tls_handshake_errors_total", "counter", "TLS handshakes that failed, by side and reason.");
        for (k = 0; k < PX_TLS_NREASONS; k++)
            putf(&o, "weir_tls_handshake_errors_total{side=\"downstream\",reason=\"%s\"} %llu\n", px_tls_reason_name(k),
                 (unsigned long long)px_tls_handshake_errors(k));
        family(&o, "weir_tls_reload_errors_total", "counter",
               "Certificate reloads (SIGHUP) that failed: the old ones kept.");
        putf(&o, "weir_tls_reload_errors_total %llu\n", (unsigned long long)px_tls_reload_errors());
    }
    finish(&o);
}
