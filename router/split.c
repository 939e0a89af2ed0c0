/* The weighted split: bucket ranges in a fixed order, and the sticky key and its bucket. */
#include <string.h>
#include <xxhash.h>

#include "table-int.h"

/* Canary first, then the other non-stable variants as declared, stable last: raising a weight only moves buckets
 * off stable's range (and shifts later ranges), so canary's cohort only grows as its weight grows. */
void rt__split_update(rt_table_t *t)
{
    unsigned i, n = 0;
    uint32_t upper = 0;

    for (i = 0; i < t->nvariants; i++) {
        if (i == t->stable)
            continue;
        upper += t->weight[i];
        t->order[n] = (uint8_t)i;
        t->upper[n++] = (uint16_t)upper;
    }
    t->weight[t->stable] = RT_BP_MAX - upper;
    t->order[n] = (uint8_t)t->stable;
    t->upper[n] = RT_BP_MAX;
}

static int first_header(const rt_request_t *req, const char *lower, size_t len, rt_span_t *value)
{
    size_t i;

    for (i = 0; i < req->nheaders; i++) {
        const rt_header_t *h = &req->headers[i];
        if (h->name.len == len && rt__name_eq(lower, h->name.p, len)) {
            *value = h->value;
            return 1;
        }
    }
    return 0;
}

int rt__split_sticky_bucket(const rt_table_t *t, const rt_request_t *req, uint32_t *bucket)
{
    rt__cookie_iter_t it = {0, 0};
    rt_span_t key = {NULL, 0};

    switch (t->sticky) {
    case RT_STICKY_OFF:
        return 0;
    case RT_STICKY_IP:
        key = req->client_ip;
        break;
    case RT_STICKY_HEADER:
        first_header(req, t->sticky_name, t->sticky_namelen, &key);
        break;
    case RT_STICKY_COOKIE:
        rt__cookie_next(req, t->sticky_name, t->sticky_namelen, &it, &key);
        break;
    }
    if (req->sticky_override.len > 0)
        key = req->sticky_override;
    if (key.len == 0) /* an empty value identifies nobody: one shared bucket for all would skew the split */
        return 0;
    *bucket = (uint32_t)(XXH64(key.p, key.len, t->seed) % RT_BP_MAX);
    return 1;
}

uint32_t rt_table_bucket(const rt_table_t *t, const char *key, size_t len)
{
    return (uint32_t)(XXH64(key, len, t->seed) % RT_BP_MAX);
}
