/* What the libFuzzer targets (tests/fuzz/fuzz_*.c) share: a route table like a configured one, and requests to
 * decide on, so a target that changes routes also runs them. Each target includes it once. A violated invariant
 * calls FUZZ_CHECK, which aborts: libFuzzer reports it as a crash with the input that caused it. */
#ifndef FUZZ_H
#define FUZZ_H
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt/ctl.h"
#include "rt/table.h"

#define FUZZ_CHECK(cond)                                                                                               \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);                               \
            abort();                                                                                                   \
        }                                                                                                              \
    } while (0)

/* The table weir builds from a configuration declaring one more variant ("blue") and sticky on a cookie. */
static inline rt_table_t *fuzz_base_table(void)
{
    rt_table_t *t = rt_table_new();

    FUZZ_CHECK(t != NULL);
    FUZZ_CHECK(rt_table_add_variant(t, "blue") >= 0);
    FUZZ_CHECK(rt_table_set_sticky(t, RT_STICKY_COOKIE, "wid") == 0);
    return t;
}

/* The state file of <t> must load back (over <base>) into an equal table with the same generation; a salt with a
 * line break, which no state file can carry, is the one exception. */
static inline void fuzz_state_round_trip(const rt_table_t *base, const rt_table_t *t)
{
    rt_buf_t state = RT_BUF_INIT;
    rt_table_t *back;
    char err[256];

    if (rt_ctl_dump_state(t, &state) == 0) {
        back = rt_ctl_load_state(base, state.p, state.len, err, sizeof(err));
        if (back == NULL) {
            fprintf(stderr, "the state file is refused: %s\n%.*s\n", err, (int)state.len, state.p);
            FUZZ_CHECK(back != NULL);
        }
        FUZZ_CHECK(rt_table_equal(t, back));
        FUZZ_CHECK(rt_table_generation(t) == rt_table_generation(back));
        rt_table_free(back);
    }
    rt_buf_dispose(&state);
}

/* Decides a few requests with <t>: as worker 0 and 1 (their own regex copies) and on the shared copies; all three
 * must agree, and the decision must name a variant and route of <t>. */
static inline void fuzz_decide_all(const rt_table_t *t)
{
    static const char long_value[] =
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab";
    static const rt_header_t hdrs[] = {
        {{"Host", 4}, {"shop.example.com", 16}},
        {{"X-User", 6}, {"bob-2", 5}},
        {{"Cookie", 6}, {"wid=42; user=booob; theme=dark", 30}},
        {{"X-Long", 6}, {long_value, sizeof(long_value) - 1}},
        {{"x-beta", 6}, {"", 0}},
    };
    static const struct {
        const char *method, *path;
        size_t nhdrs;
    } reqs[] = {
        {"GET", "/", 5},
        {"POST", "/api/v1/users/42?x=1", 5},
        {"DELETE", "/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab", 2},
        {"GET", "", 0},
    };
    size_t i;

    for (i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
        rt_request_t req = {{reqs[i].method, strlen(reqs[i].method)},
                            {reqs[i].path, strlen(reqs[i].path)},
                            hdrs,
                            reqs[i].nhdrs,
                            {"192.0.2.1", 9},
                            {NULL, 0}};
        rt_decision_t a, b, c;
        uint64_t rnd = 0x9e3779b97f4a7c15ull * (i + 1);

        rt_decide_worker(t, 0, &req, rnd, &a);
        rt_decide_worker(t, 1, &req, rnd, &b);
        rt_decide(t, &req, rnd, &c);
        FUZZ_CHECK(a.route == b.route && a.route == c.route && a.variant == b.variant && a.variant == c.variant);
        FUZZ_CHECK(a.mirror == b.mirror && a.mirror == c.mirror);
        FUZZ_CHECK(a.variant < rt_table_nvariants(t));
        FUZZ_CHECK(a.route < (int)rt_table_nroutes(t));
        FUZZ_CHECK(a.mirror < (int)rt_table_nvariants(t));
    }
}

#endif
