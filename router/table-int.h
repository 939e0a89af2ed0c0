/* Private layout of the route table, shared by the router's own files (table.c, match.c, split.c, decide.c) and
 * nothing else: the proxy and the control plane see only include/rt/table.h. */
#ifndef RT_TABLE_INT_H
#define RT_TABLE_INT_H
#include <regex.h>

#include "rt/parse.h"
#include "rt/table.h"

/* One compiled condition. <name> and <value> point into the route's own allocation. */
typedef struct rt__cond_s {
    uint8_t kind;      /* enum rt_cond_kind */
    uint8_t op;        /* enum rt_match_op; RT_MATCH_EXACT for RT_COND_METHOD */
    uint8_t cookie;    /* RT_COND_HEADER given as "cookie:NAME": <name> is the cookie's name */
    uint8_t has_re;    /* <re> was compiled and must be regfree()d */
    uint32_t namelen;  /* bytes of <name>, so the hot path needs no strlen */
    uint32_t valuelen; /* bytes of <value> */
    const char *name;  /* header name in lower case, or the cookie name as written; "" otherwise */
    const char *value; /* as given; for RT_COND_METHOD the comma-separated list */
    regex_t re;        /* "^(" value ")$", REG_EXTENDED | REG_NOSUB */
    regex_t **copies;  /* regexes: [RT_MAX_WORKERS] each worker's own compiled copy of <re>, NULL until its first use,
                        * or &re when compiling it failed; written only by that worker (match.c pattern_for) */
} rt__cond_t;

/* A route, immutable once built and shared by the tables that hold it (a clone takes a reference). */
typedef struct rt__route_s {
    unsigned refs;               /* tables holding it; only the building thread changes it */
    enum rt_route_kind kind;     /* header route or mirror route */
    unsigned to;                 /* variant index: the destination, or the mirror copy's */
    uint32_t percent_bp;         /* mirror routes: share of matches copied; 0 for header routes */
    unsigned nconds;             /* 0: every request matches */
    uint8_t order[RT_MAX_CONDS]; /* evaluation order, cheapest first; conds[] stays in the order given */
    uint64_t need[4];            /* rt__name_bit() of every header the conditions read: all must be present */
    char name[RT_ROUTE_NAME_MAX + 1];
    rt__cond_t conds[];
} rt__route_t;

struct rt_table_s {
    uint64_t gen;                     /* set by the control plane; not part of rt_table_equal() */
    uint64_t seed;                    /* XXH64(salt, strlen(salt), 0) */
    unsigned nvariants;               /* at least 2: canary (0) and stable (1) */
    unsigned stable;                  /* index of "stable" */
    enum rt_sticky_kind sticky;       /* where the sticky key comes from */
    char *sticky_name;                /* header name (lower case) or cookie name; NULL for OFF/IP */
    size_t sticky_namelen;            /* bytes of <sticky_name> */
    char *salt;                       /* never NULL */
    uint32_t weight[RT_MAX_VARIANTS]; /* basis points; stable's entry is 10000 minus the others */
    uint8_t order[RT_MAX_VARIANTS];   /* bucket order: canary, the others as declared, stable */
    uint16_t upper[RT_MAX_VARIANTS];  /* variant order[i] owns the buckets [upper[i - 1], upper[i]) */
    uint8_t namelen[RT_MAX_VARIANTS]; /* bytes of names[i] */
    uint8_t gone[RT_MAX_VARIANTS];    /* removed by `del upstream`: the slot keeps its name for the state file */
    char *upstreams[RT_MAX_VARIANTS]; /* endpoints set at run time ("ADDR ADDR..."), NULL: as configured */
    char names[RT_MAX_VARIANTS][RT_VARIANT_NAME_MAX + 1];
    unsigned nroutes; /* routes in first-set order */
    rt__route_t *routes[RT_MAX_ROUTES];
};

/* ASCII lower case of every byte, so header names compare without locale or branches. */
extern const unsigned char rt__lower[256];

/* Returns 1 when <p>/<len> equals <lower> (already lower case, <len> bytes) ignoring ASCII case, else 0. */
static inline int rt__name_eq(const char *lower, const char *p, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++)
        if (rt__lower[(unsigned char)p[i]] != (unsigned char)lower[i])
            return 0;
    return 1;
}

/* A bit in [0, 256) for a header name, the same whatever its case, from its length and three of its bytes: constant
 * time, since it runs for every header of every request. */
static inline unsigned rt__name_bit(const char *p, size_t len)
{
    uint32_t x;

    if (len == 0)
        return 0;
    x = (uint32_t)len ^ (uint32_t)rt__lower[(unsigned char)p[0]] << 8 ^
        (uint32_t)rt__lower[(unsigned char)p[len >> 1]] << 16 ^ (uint32_t)rt__lower[(unsigned char)p[len - 1]] << 24;
    return (x * 0x9e3779b1u) >> 24;
}

/* What rt_decide() works out once per request for all routes. */
typedef struct rt__reqctx_s {
    size_t pathlen;    /* bytes of the path before '?' */
    uint64_t names[4]; /* a Bloom filter of the request's header names (rt__name_bit): a route needing a header
                        * whose bit is clear fails without scanning the headers */
} rt__reqctx_t;

/* Returns 1 when <s> is a non-empty RFC 9110 token of <len> bytes, else 0. */
int rt__is_token(const char *s, size_t len);

/* Formats <fmt> into <err> (at most <errlen> bytes, NUL-terminated; nothing written when <err> is NULL or <errlen>
 * is 0) and returns -1, so an error path reads "return rt__fail(err, errlen, ...)". */
int rt__fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Walks the cookies of every Cookie header of a request, in order. Zero-initialize before the first call. */
typedef struct rt__cookie_iter_s {
    size_t hdr; /* index of the header being read */
    size_t off; /* offset of the next pair in that header's value */
} rt__cookie_iter_t;

/* Finds the next cookie named <name> (<namelen> bytes, case-sensitive) and stores its value (surrounding
 * whitespace dropped, quotes kept) in <value>. Returns 1 when found, 0 when there are no more. */
int rt__cookie_next(const rt_request_t *req, const char *name, size_t namelen, rt__cookie_iter_t *it, rt_span_t *value);

/* Compiles <spec> into a new route with one reference, sending to variant <to>. Returns 0, or -1 with a message in
 * <err> (nothing allocated then). */
int rt__route_build(const rt_route_spec_t *spec, unsigned to, rt__route_t **out, char *err, size_t errlen);

/* Drops one reference to <r>, freeing it with its regexes at zero. Accepts NULL. */
void rt__route_release(rt__route_t *r);

/* Returns 1 when <a> and <b> have the same name, kind, destination, percent and conditions in the same order. */
int rt__route_same(const rt__route_t *a, const rt__route_t *b);

/* Returns 0 when <r> reads a header that <ctx>'s request certainly lacks, so it cannot match; 1 when it may. */
static inline int rt__route_may_match(const rt__route_t *r, const rt__reqctx_t *ctx)
{
    return ((r->need[0] & ~ctx->names[0]) | (r->need[1] & ~ctx->names[1]) | (r->need[2] & ~ctx->names[2]) |
            (r->need[3] & ~ctx->names[3])) == 0;
}

/* Fills <ctx> for <req>. */
void rt__reqctx_init(rt__reqctx_t *ctx, const rt_request_t *req);

/* Returns 1 when every condition of <r> holds for <req>, else 0 (rt__route_may_match() is a cheaper first check
 * of the same). A regex condition runs <worker>'s own copy of the pattern (compiled, so allocated, on that worker's
 * first use), or the shared one when <worker> is RT_MAX_WORKERS or more; glibc's regexec() may allocate and locks
 * the copy it runs. */
int rt__route_matches(const rt__route_t *r, unsigned worker, const rt_request_t *req, const rt__reqctx_t *ctx);

/* Recomputes <t>'s bucket order and ranges from its weights; call after any change of variants or weights. */
void rt__split_update(rt_table_t *t);

/* Returns the variant that owns <bucket> (in [0, 10000)). */
static inline unsigned rt__split_pick(const rt_table_t *t, uint32_t bucket)
{
    unsigned i = 0;

    while (bucket >= t->upper[i]) /* stable's upper is 10000, so this stops */
        i++;
    return t->order[i];
}

/* Stores in <bucket> the sticky bucket of <req> under <t>'s settings and returns 1, or returns 0 when <t> is not
 * sticky or <req> carries no (non-empty) key. */
int rt__split_sticky_bucket(const rt_table_t *t, const rt_request_t *req, uint32_t *bucket);

/* The random bucket and the mirror draw, both in [0, 10000), from disjoint halves of <rnd> (multiply-shift of the
 * high and the low 32 bits), so they are independent of each other. */
static inline uint32_t rt__split_random_bucket(uint64_t rnd)
{
    return (uint32_t)(((rnd >> 32) * RT_BP_MAX) >> 32);
}
static inline uint32_t rt__split_mirror_draw(uint64_t rnd)
{
    return (uint32_t)(((rnd & 0xffffffffu) * RT_BP_MAX) >> 32);
}

#endif
