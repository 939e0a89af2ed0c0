/* The route table: variants, weights in basis points, sticky settings and routes, immutable once built.
 *
 * Lifecycle: the control thread builds a table with rt_table_new() + rt_table_add_variant() ... or derives one from
 * the current table with rt_table_clone() and the rt_table_set_* / rt_table_*_route calls, then publishes the
 * pointer; workers only call the const functions. A table is freed with rt_table_free() by its builder once no
 * worker uses it. Routes (with their compiled regexes) are shared between a table and its clones by a reference
 * count that only the building thread touches.
 *
 * Allocation goes through rt_malloc()/rt_free() (rt/alloc.h) so tests can check for leaks; compiled regexes are the
 * exception (regcomp() allocates with libc's malloc). */
#ifndef RT_TABLE_H
#define RT_TABLE_H
#include "rt/table-t.h"

typedef struct rt_table_s rt_table_t;

/* One condition of a route, as text (the control parser produces these; the table compiles them). */
enum rt_cond_kind {
    RT_COND_METHOD = 0, /* <value> is "GET" or "GET,POST"; exact, case-sensitive per RFC 9110 */
    RT_COND_PATH,       /* <op> applies to the path without the query */
    RT_COND_HEADER,     /* <name> is a header name (case-insensitive) or "cookie:NAME" */
};
enum rt_match_op {
    RT_MATCH_EXACT = 0, /* whole value equal */
    RT_MATCH_PREFIX,    /* value starts with */
    RT_MATCH_REGEX,     /* POSIX ERE matched against the whole value */
};
typedef struct rt_cond_spec_s {
    enum rt_cond_kind kind;
    enum rt_match_op op; /* unused for RT_COND_METHOD */
    const char *name;    /* RT_COND_HEADER only; NUL-terminated */
    const char *value;   /* NUL-terminated */
} rt_cond_spec_t;

typedef struct rt_route_spec_s {
    const char *name; /* [A-Za-z0-9][A-Za-z0-9_.:~-]{0,62} */
    enum rt_route_kind kind;
    const char *to;      /* variant name; NULL means "canary" */
    uint32_t percent_bp; /* RT_ROUTE_MIRROR only: share of matches copied, in basis points */
    const rt_cond_spec_t *conds;
    size_t nconds; /* 0 means every request matches */
} rt_route_spec_t;

/* Returns an empty table with the variants "canary" (index 0, weight 0) and "stable" (index 1) already declared,
 * sticky off, salt "", generation 0; or NULL when out of memory. */
rt_table_t *rt_table_new(void);

/* Returns a copy of <t> that shares its routes; the copy's generation equals <t>'s. NULL when out of memory. */
rt_table_t *rt_table_clone(const rt_table_t *t);

/* Releases <t> and drops its references to routes. Accepts NULL. */
void rt_table_free(rt_table_t *t);

/* Declares a variant (no-op if it exists). Variants keep declaration order, which is the bucket order after
 * canary and before stable. Returns its index, or -1 when the name is invalid or the table is full. */
int rt_table_add_variant(rt_table_t *t, const char *name);

/* Declares variant <name> if needed (as rt_table_add_variant()) and sets the endpoints given at run time, <addrs>
 * ("HOST:PORT HOST:PORT...", copied; the caller validated it), which replace the configured ones. Returns the
 * variant's index, or -1 when the name is invalid, the table is full or out of memory (<t> unchanged). */
int rt_table_set_upstreams(rt_table_t *t, const char *name, const char *addrs);
/* The run-time endpoints of variant <idx> as set by rt_table_set_upstreams(), or NULL: those of the configuration
 * (or none for a removed variant). Owned by <t>. */
const char *rt_table_upstreams(const rt_table_t *t, unsigned idx);

/* Removes variant <name> (`del upstream`): only one other than stable and canary, with weight 0 and no route
 * sending to it. Its index stays taken (indexes never shift: the proxy keys endpoints and counters by them) and is
 * reused first by the same name, then by any name once the table is full. Returns 0, or -1 with <*err> (static
 * text) and <t> unchanged. */
int rt_table_del_variant(rt_table_t *t, const char *name, const char **err);

/* Returns the index of <name> (need not be NUL-terminated), or -1 (also for a removed variant). */
int rt_table_find_variant(const rt_table_t *t, const char *name, size_t len);
/* Variant slots, removed ones included: indexes run from 0 to this minus 1. */
unsigned rt_table_nvariants(const rt_table_t *t);
/* The name of variant <idx>; NULL when <idx> is out of range or the variant was removed. */
const char *rt_table_variant_name(const rt_table_t *t, unsigned idx);
/* The name a removed variant had; NULL when <idx> is out of range or not removed. */
const char *rt_table_removed_name(const rt_table_t *t, unsigned idx);
uint32_t rt_table_weight_bp(const rt_table_t *t, unsigned idx); /* stable's is 10000 minus the others */
unsigned rt_table_stable(const rt_table_t *t);                  /* index of "stable" */
uint64_t rt_table_generation(const rt_table_t *t);
void rt_table_set_generation(rt_table_t *t, uint64_t gen);

/* Sets the weights of the non-stable variants named in <names> (n entries), the others keep theirs; stable gets
 * the rest. Returns 0, or -1 with <*err> (static text) when a name is unknown or "stable", a value is over 10000,
 * or the non-stable sum would exceed 10000; <t> is unchanged on error. */
int rt_table_set_weights(rt_table_t *t, const char *const *names, const uint32_t *bps, size_t n, const char **err);

/* Sticky settings. <name> is the header or cookie name (ignored for OFF/IP), an RFC 9110 token; <t> keeps a copy.
 * Returns 0, or -1 when <kind> is unknown, <name> is missing or not a token, or out of memory (<t> unchanged). */
int rt_table_set_sticky(rt_table_t *t, enum rt_sticky_kind kind, const char *name);
/* Sets the salt (copied; "" is valid) and the seed XXH64(salt, strlen(salt), 0). Returns 0, or -1 when <salt> is NULL
 * or out of memory (<t> unchanged). */
int rt_table_set_salt(rt_table_t *t, const char *salt);
enum rt_sticky_kind rt_table_sticky(const rt_table_t *t);
/* The header name (in lower case) or cookie name of `sticky header:`/`cookie:`, NULL for OFF/IP; owned by <t>. */
const char *rt_table_sticky_name(const rt_table_t *t);
const char *rt_table_salt(const rt_table_t *t);

/* Adds a route, or replaces the route of the same name in its place (order is first-set). Compiles regexes.
 * Returns 0, or -1 with a message in <err> (e.g. "invalid regex '(': ...", "unknown variant 'x'"); <t> is
 * unchanged on error. */
int rt_table_set_route(rt_table_t *t, const rt_route_spec_t *spec, char *err, size_t errlen);
/* Returns 0, or -1 when no route has that name. */
int rt_table_del_route(rt_table_t *t, const char *name);
void rt_table_del_routes(rt_table_t *t);
unsigned rt_table_nroutes(const rt_table_t *t);
const char *rt_table_route_name(const rt_table_t *t, unsigned idx);

/* Writes route <idx> in the syntax of the control command that sets it ("set header-route NAME to canary header
 * x-canary exact 1"), NUL-terminated, quoting tokens as the control tokenizer expects. Returns the length it
 * needed (like snprintf). */
size_t rt_table_format_route(const rt_table_t *t, unsigned idx, char *buf, size_t size);

/* Returns 1 when <a> and <b> route every request the same way (same variants, run-time endpoints, weights, sticky,
 * salt and routes in the same order), else 0. The control plane uses it to not bump the generation on a no-op change.
 */
int rt_table_equal(const rt_table_t *a, const rt_table_t *b);

/* Decides where <req> goes. <rnd> is a uniformly random 64-bit value from the caller, so the function is
 * deterministic: its high 32 bits give the random bucket (multiply-shift onto [0, 10000)), its low 32 bits the
 * mirror draw, so the two are independent. The sticky key is req->sticky_override when its len > 0, else the
 * configured one; sticky off ignores both. A missing or empty key gives a random bucket and key_missing = 1.
 * Never allocates (only glibc's regexec(), run for regex conditions, allocates and locks inside libc); safe to call
 * from any number of threads at once on the same table. */
void rt_decide(const rt_table_t *t, const rt_request_t *req, uint64_t rnd, rt_decision_t *out);
/* The same decision for the worker numbered <worker> (below RT_MAX_WORKERS; larger numbers act as rt_decide()),
 * which runs its own copy of each regex: glibc's regexec() locks the pattern it runs, so a shared copy would make
 * the workers wait for one another. A worker's copy is compiled, so allocated, at its first use by that worker;
 * only one thread at a time may use a given <worker> number on tables sharing routes. */
void rt_decide_worker(const rt_table_t *t, unsigned worker, const rt_request_t *req, uint64_t rnd, rt_decision_t *out);

/* The sticky bucket of <key>: XXH64(key, seed) mod 10000, exposed for tests and tools. */
uint32_t rt_table_bucket(const rt_table_t *t, const char *key, size_t len);

#endif
