/*
 * micro_decide: nanoseconds per rt_decide() call on one thread.
 *
 *   micro_decide [ITERATIONS]        default 5,000,000 per case; each case also stops after 5 s
 *
 * The request looks like a browser's: GET with a query string and 10 headers, a cookie header among them. Routes
 * never match, so every one is evaluated; each tests a header the request lacks (a scan of all 10 headers) after a
 * method and a path condition that hold. The regex case runs one regexec() per route on a header that is present.
 * Prints one line per case. Not a test: no thresholds.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rt/table.h"

enum { CASE_TIME_LIMIT_S = 5 };

static const rt_header_t headers[] = {
    {{"Host", 4}, {"shop.example.com", 16}},
    {{"User-Agent", 10}, {"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0", 70}},
    {{"Accept", 6}, {"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", 65}},
    {{"Accept-Language", 15}, {"en-US,en;q=0.5", 14}},
    {{"Accept-Encoding", 15}, {"gzip, deflate, br", 17}},
    {{"Referer", 7}, {"https://shop.example.com/cart", 29}},
    {{"Connection", 10}, {"keep-alive", 10}},
    {{"Cookie", 6}, {"theme=dark; session=8f14e45fceea167a5a36dedd4bea2543; lang=en", 62}},
    {{"Upgrade-Insecure-Requests", 25}, {"1", 1}},
    {{"X-Request-Id", 12}, {"3b1f1c2e-9d0a-4f53-8a55-6f0d2b7c9e11", 36}},
};

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void add_routes(rt_table_t *t, int n, int regex)
{
    char name[32], hdr[32];
    int i;

    for (i = 0; i < n; i++) {
        rt_cond_spec_t conds[3] = {
            {RT_COND_METHOD, RT_MATCH_EXACT, NULL, "GET,POST"},
            {RT_COND_PATH, RT_MATCH_PREFIX, NULL, "/"},
            {RT_COND_HEADER, regex ? RT_MATCH_REGEX : RT_MATCH_EXACT, hdr, regex ? "(on|yes|1)" : "1"},
        };
        rt_route_spec_t spec = {name, i % 4 == 3 ? RT_ROUTE_MIRROR : RT_ROUTE_HEADER, NULL, 100, conds, 3};
        char err[256];

        snprintf(name, sizeof(name), "route-%d", i);
        if (regex) /* present, so every route runs its regex (and fails) */
            snprintf(hdr, sizeof(hdr), "x-request-id");
        else /* absent: each route scans every header */
            snprintf(hdr, sizeof(hdr), "x-canary-%d", i);
        if (rt_table_set_route(t, &spec, err, sizeof(err)) != 0) {
            fprintf(stderr, "micro_decide: %s\n", err);
            exit(1);
        }
    }
}

static void run(const char *label, const rt_table_t *t, long iters)
{
    rt_request_t req = {{"GET", 3},
                        {"/products/42?ref=home&utm_source=mail", 37},
                        headers,
                        sizeof(headers) / sizeof(headers[0]),
                        {"203.0.113.9", 11},
                        {NULL, 0}};
    uint64_t s = 12345, sink = 0;
    double t0, t1, limit;
    long i, done = 0;

    for (i = 0; i < 100000; i++) { /* warm-up */
        rt_decision_t d;
        rt_decide(t, &req, splitmix64(&s), &d);
        sink += d.variant;
    }
    t0 = now_s();
    limit = t0 + CASE_TIME_LIMIT_S;
    while (done < iters) {
        long chunk = iters - done < 65536 ? iters - done : 65536;
        for (i = 0; i < chunk; i++) {
            rt_decision_t d;
            rt_decide(t, &req, splitmix64(&s), &d);
            sink += d.variant + (uint64_t)d.route;
        }
        done += chunk;
        if (now_s() > limit)
            break;
    }
    t1 = now_s();
    printf("%-44s %8.1f ns/decide  (%ld calls, checksum %llu)\n", label, (t1 - t0) * 1e9 / (double)done, done,
           (unsigned long long)(sink % 1000));
}

int main(int argc, char **argv)
{
    static const struct {
        const char *label;
        int routes, regex;
        enum rt_sticky_kind sticky;
        const char *sticky_name;
    } cases[] = {
        {"routes=0 sticky=off", 0, 0, RT_STICKY_OFF, NULL},
        {"routes=0 sticky=cookie:session", 0, 0, RT_STICKY_COOKIE, "session"},
        {"routes=0 sticky=header:x-request-id", 0, 0, RT_STICKY_HEADER, "x-request-id"},
        {"routes=16 sticky=off", 16, 0, RT_STICKY_OFF, NULL},
        {"routes=16 sticky=cookie:session", 16, 0, RT_STICKY_COOKIE, "session"},
        {"routes=64 sticky=off", 64, 0, RT_STICKY_OFF, NULL},
        {"routes=16 regex on a present header", 16, 1, RT_STICKY_OFF, NULL},
    };
    long iters = argc > 1 ? atol(argv[1]) : 5000000;
    size_t i;

    if (iters <= 0) {
        fprintf(stderr, "usage: micro_decide [ITERATIONS]\n");
        return 2;
    }
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rt_table_t *t = rt_table_new();
        const char *canary = "canary";
        uint32_t bp = 1000;

        if (t == NULL || rt_table_set_weights(t, &canary, &bp, 1, NULL) != 0 ||
            rt_table_set_sticky(t, cases[i].sticky, cases[i].sticky_name) != 0 ||
            rt_table_set_salt(t, "rollout-1") != 0) {
            fprintf(stderr, "micro_decide: cannot build the table\n");
            return 1;
        }
        add_routes(t, cases[i].routes, cases[i].regex);
        run(cases[i].label, t, iters);
        rt_table_free(t);
    }
    return 0;
}
