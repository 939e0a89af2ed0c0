/* Counters for canary analysis (SPEC §5): per-worker, written only by the worker's own loop (relaxed atomic loads
 * and stores, no read-modify-write on the hot path), summed when read by the main thread. A reset does not touch
 * the workers' memory: readers subtract a baseline taken at reset time.
 *
 * Writers (worker threads) take the worker's own px_stats_t; readers (main thread only) format everything. */
#ifndef PX_STATS_H
#define PX_STATS_H
#include <stdint.h>

#include "rt/buf.h"
#include "rt/table.h"

#define PX_STATS_WINDOW_MAX 300  /* seconds of per-second history kept for /stats */
#define PX_STATS_ROUTES 256      /* route-match counter slots (route names get a slot when first seen) */
#define PX_STATS_NO_VARIANT (-1) /* a response made before any variant was chosen (e.g. a malformed request) */

typedef struct px_stats_s px_stats_t;

enum px_err_reason {
    PX_ERR_CONNECT = 0,  /* no endpoint of the variant could be connected */
    PX_ERR_TIMEOUT,      /* connect-timeout or upstream-timeout */
    PX_ERR_RESET,        /* the upstream closed or reset mid-exchange */
    PX_ERR_NO_ENDPOINT,  /* the variant has no endpoint at all */
    PX_ERR_CLIENT_ABORT, /* the client went away before its response ended */
    PX_ERR_COUNT
};

enum px_drop_reason {
    PX_DROP_OVERLOAD = 0, /* mirror-max-inflight or the copy's backlog cap reached */
    PX_DROP_ERROR,        /* the mirror endpoint failed */
    PX_DROP_COUNT
};

/* Allocates the counters of one worker for <nvariants> variants (px_server.variants order). NULL when out of
 * memory or when <nvariants> exceeds RT_MAX_VARIANTS. px_stats_free() accepts NULL. */
px_stats_t *px_stats_new(unsigned nvariants);
void px_stats_free(px_stats_t *s);

/* Writers: call only from the loop that owns <s>. <variant> is a variant index or PX_STATS_NO_VARIANT; an index out
 * of range, a NULL <s> or a status outside 100..599 is ignored. <now_ms> is a monotonic millisecond clock with
 * CLOCK_MONOTONIC's origin (uv_now of the loop) used for the per-second window; <duration_ns> runs from the
 * request's start to its last response byte. None of them locks; only px_stats_response() may allocate, once per
 * route slot and variant in the life of the worker (never per request).
 * px_stats_response: <route> is the counter slot (px_stats_route_slot) of the header route that decided the
 *   variant, or PX_STATS_WEIGHTED when the weights did (mirror routes included): SPEC §5's `route` label and the
 *   `weighted` object of /stats. A route slot is ignored with PX_STATS_NO_VARIANT. */
#define PX_STATS_WEIGHTED (-1)
void px_stats_response(px_stats_t *s, int variant, int route, int status, uint64_t duration_ns, uint64_t now_ms);
void px_stats_proxy_error(px_stats_t *s, int variant, enum px_err_reason reason);
void px_stats_route_match(px_stats_t *s, unsigned slot);
void px_stats_mirror_response(px_stats_t *s, int variant, int status);
void px_stats_mirror_dropped(px_stats_t *s, int variant, enum px_drop_reason reason);
void px_stats_mirror_mismatch(px_stats_t *s, int variant, uint64_t now_ms);

/* The counter slot of route <name> (the same name always gets the same slot; a new name takes the next free one,
 * PX_STATS_ROUTES - 1 is shared by all names past the limit). Thread-safe: workers call it once per route when
 * they first see a new table, so a mutex is cheap enough. */
unsigned px_stats_route_slot(const char *name);
/* The name of <slot> (stable for the life of the process): the registered name, "~other" for the shared slot
 * PX_STATS_ROUTES - 1 (a route name may hold '~' but not begin with it), NULL for a slot not handed out yet.
 * Thread-safe. */
const char *px_stats_route_name(unsigned slot);

/* Readers, main thread only; they read every worker's counters (px_server.workers[i].stats) and append to <out>:
 * the whole text or, when out of memory, nothing.
 * px_stats_text: the reply of `show stats`: "ok\n", one "VARIANT requests=N 2xx=N 3xx=N 4xx=N 5xx=N" line per
 *   variant (table order; totals since start or reset, header-routed requests included), then "\n".
 * px_stats_json: the /stats document (SPEC §5) on one line, no trailing newline; <window_s> 0 means the configured
 *   stats-window, more than PX_STATS_WINDOW_MAX means the maximum. Percentiles interpolate linearly within the
 *   histogram bucket that holds the rank (as histogram_quantile does). Each variant holds every response in
 *   "requests", "codes" and "window", and the weight-decided ones alone in "weighted": {"requests", "codes",
 *   "window"}. A variant that copies were mirrored to also gets "mirror": {"requests", "codes", "dropped":
 *   {"overload", "error"}, "mismatches", "mismatch_rate" (mismatches / copy responses, since start or reset),
 *   "window": {"mismatches"}}.
 * px_stats_prometheus: /metrics in text format 0.0.4. Responses made before a variant was chosen are exported
 *   with variant="none" once there are any. weir_requests_total and weir_request_duration_seconds carry
 *   route="NAME" for header-routed responses, from the first one a (route, variant) pair counted; the series
 *   without a route label count the weight-decided ones.
 * px_stats_reset: zeroes every counter as seen by the readers, totals and window alike.
 * Readers leave out variant slots that table <t> no longer names (`del upstream`), as `get weight` does.
 * px_stats_table_changing: call before <next> replaces <cur> (main thread). A variant slot that <next> names and <cur>
 *   does not (a new variant, possibly in the slot of a removed one) is zeroed for the readers, as a reset would,
 *   and the route series its old counts made are hidden: the new variant inherits nothing. Like a reset it only
 *   takes baselines in main-thread memory, never writing the workers' counters, and it runs before any worker can
 *   route to the new variant. A response of the removed variant still in flight then (it had weight 0 and no route
 *   when removed) that ends after it counts under the new variant. */
void px_stats_text(rt_buf_t *out);
void px_stats_json(rt_buf_t *out, unsigned window_s);
void px_stats_prometheus(rt_buf_t *out);
void px_stats_reset(void);
void px_stats_table_changing(const rt_table_t *cur, const rt_table_t *next);

#endif
