/* rt_decide(): routes first, in first-set order, then the weights. Reads the table only; no allocation but a
 * worker's first compile of its regex copies. */
#include "table-int.h"

void rt_decide(const rt_table_t *t, const rt_request_t *req, uint64_t rnd, rt_decision_t *out)
{
    rt_decide_worker(t, RT_MAX_WORKERS, req, rnd, out);
}

void rt_decide_worker(const rt_table_t *t, unsigned worker, const rt_request_t *req, uint64_t rnd, rt_decision_t *out)
{
    const rt__route_t *hit = NULL;
    uint32_t bucket;
    unsigned i;

    out->route = -1;
    out->mirror = -1;
    out->key_missing = 0;
    out->by_route = 0;
    if (t->nroutes > 0) {
        rt__reqctx_t ctx;

        rt__reqctx_init(&ctx, req);
        for (i = 0; i < t->nroutes; i++) {
            const rt__route_t *r = t->routes[i];
            if (rt__route_may_match(r, &ctx) && rt__route_matches(r, worker, req, &ctx)) {
                hit = r;
                out->route = (int)i;
                break;
            }
        }
    }
    if (hit != NULL && hit->kind == RT_ROUTE_HEADER) {
        out->variant = hit->to;
        out->bucket = 0;
        out->by_route = 1;
        return;
    }
    if (!rt__split_sticky_bucket(t, req, &bucket)) {
        bucket = rt__split_random_bucket(rnd);
        out->key_missing = t->sticky != RT_STICKY_OFF;
    }
    out->bucket = bucket;
    out->variant = rt__split_pick(t, bucket);
    if (hit != NULL && out->variant != hit->to && rt__split_mirror_draw(rnd) < hit->percent_bp)
        out->mirror = (int)hit->to;
}
