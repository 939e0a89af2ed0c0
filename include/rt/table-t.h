/* Types of the decision plane's boundary: the request view the proxy fills in, the decision it gets back,
 * and the limits of a route table. Only <stdint.h>/<stddef.h> and other -t.h files here. */
#ifndef RT_TABLE_T_H
#define RT_TABLE_T_H
#include <stddef.h>
#include <stdint.h>

#define RT_MAX_VARIANTS 16   /* stable, canary and up to 14 experiment destinations */
#define RT_MAX_ROUTES 256    /* routes in one table */
#define RT_MAX_CONDS 16      /* conditions in one route */
#define RT_ROUTE_NAME_MAX 63 /* bytes of a route name (SPEC §3) */
#define RT_MAX_WORKERS 256   /* worker indexes rt_decide_worker() keeps a regex copy for */

/* A byte span borrowed from the caller's buffer; not NUL-terminated. */
typedef struct rt_span_s {
    const char *p;
    size_t len;
} rt_span_t;

typedef struct rt_header_s {
    rt_span_t name; /* as received; matching is case-insensitive */
    rt_span_t value;
} rt_header_t;

/* A read-only view of one request, built by the proxy from the parser's output. Every span is borrowed and
 * needs to stay valid only for the duration of the rt_decide() call. */
typedef struct rt_request_s {
    rt_span_t method;           /* "GET" */
    rt_span_t path;             /* request target as received; matching uses the part before '?' */
    const rt_header_t *headers; /* in received order; a repeated header appears several times */
    size_t nheaders;
    rt_span_t client_ip;       /* textual client address, the key for `sticky ip` */
    rt_span_t sticky_override; /* when len > 0, used as the sticky key instead of the configured one */
} rt_request_t;

enum rt_sticky_kind {
    RT_STICKY_OFF = 0, /* a fresh random bucket per request */
    RT_STICKY_IP,      /* key: rt_request_t.client_ip */
    RT_STICKY_HEADER,  /* key: the first value of the header <sticky_name> */
    RT_STICKY_COOKIE,  /* key: the value of the cookie <sticky_name> */
};

enum rt_route_kind {
    RT_ROUTE_HEADER = 0, /* send matching requests to <to> */
    RT_ROUTE_MIRROR,     /* weights pick the primary; a share of matches is copied to <to> */
};

/* The outcome of rt_decide(); plain data, no pointers into the request. */
typedef struct rt_decision_s {
    unsigned variant;         /* index into the table's variants: where the request goes */
    int route;                /* index of the route that decided or matched, -1 when none did */
    int mirror;               /* variant index to send a copy to, -1 for no copy */
    uint32_t bucket;          /* [0, 10000): the bucket the weights were applied to (0 when a header route decided) */
    unsigned key_missing : 1; /* sticky is on but the request had no key: the bucket was random */
    unsigned by_route : 1;    /* a header route picked <variant>, not the weights (SPEC §5's route label) */
} rt_decision_t;

#endif
