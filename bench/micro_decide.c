/*
 * micro_decide: nanoseconds per rt_decide() call on one thread.
 *
 *   micro_decide [ITERATIONS]        default 5,000,000 per case; each case also stops after 5 s
 *
 * The request looks like a browser's: GET with a query string and 10 headers, a cookie header among them. Routes
 * never match, so every one is evaluated; each tests a header the request lacks (a scan of all 10 headers) after a
 * method and a path condition that hold. The regex case runs one regexec() per route on a header that is present.
 * The thread cases run one regex route on one and on two threads at once: each thread as its own worker number
 * (rt_decide_worker(), a compiled copy per worker), and, for comparison, all on rt_decide()'s shared copy, which
 * glibc's regexec() locks. They print decisions per second over all threads.
 * Prints one line per case. Not a test: no thresholds.
 */
#include <pthread.h>
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

/* One thread's share of a case: <worker> is its worker number for rt_decide_worker(), or -1 for rt_decide(). */
typedef struct job_s {
    const rt_table_t *t;
    long iters;
    int worker;
    long done;    /* calls made */
    double secs;  /* their duration */
    uint64_t sum; /* of the decisions, so the calls cannot be optimised away */
} job_t;

static void decide(const job_t *j, const rt_request_t *req, uint64_t rnd, rt_decision_t *d)
{
    if (j->worker < 0)
        rt_decide(j->t, req, rnd, d);
    else
        rt_decide_worker(j->t, (unsigned)j->worker, req, rnd, d);
}

static void *run_job(void *arg)
{
    job_t *j = arg;
    rt_request_t req = {{"GET", 3},
                        {"/products/42?ref=home&utm_source=mail", 37},
                        headers,
                        sizeof(headers) / sizeof(headers[0]),
                        {"203.0.113.9", 11},
                        {NULL, 0}};
    uint64_t s = 12345 + (uint64_t)j->worker;
    double t0, limit;
    long i;

    for (i = 0; i < 100000; i++) { /* warm-up */
        rt_decision_t d;
        decide(j, &req, splitmix64(&s), &d);
        j->sum += d.variant;
    }
    t0 = now_s();
    limit = t0 + CASE_TIME_LIMIT_S;
    while (j->done < j->iters) {
        long chunk = j->iters - j->done < 65536 ? j->iters - j->done : 65536;
        for (i = 0; i < chunk; i++) {
            rt_decision_t d;
            decide(j, &req, splitmix64(&s), &d);
            j->sum += d.variant + (uint64_t)d.route;
        }
        j->done += chunk;
        if (now_s() > limit)
            break;
    }
    j->secs = now_s() - t0;
    return NULL;
}

static void run(const char *label, const rt_table_t *t, long iters)
{
    job_t j = {t, iters, 0, 0, 0, 0};

    run_job(&j);
    printf("%-44s %8.1f ns/decide  (%ld calls, checksum %llu)\n", label, j.secs * 1e9 / (double)j.done, j.done,
           (unsigned long long)(j.sum % 1000));
}

/* <nthreads> threads decide at once on <t>, each as worker number i, or all through rt_decide() when <shared>. */
static void run_threads(const char *label, const rt_table_t *t, long iters, int nthreads, int shared)
{
    pthread_t th[2];
    job_t j[2];
    double calls = 0, secs = 0;
    int i;

    for (i = 0; i < nthreads; i++) {
        j[i] = (job_t){t, iters, shared ? -1 : i, 0, 0, 0};
        if (pthread_create(&th[i], NULL, run_job, &j[i]) != 0) {
            fprintf(stderr, "micro_decide: pthread_create failed\n");
            exit(1);
        }
    }
    for (i = 0; i < nthreads; i++) {
        pthread_join(th[i], NULL);
        calls += (double)j[i].done;
        secs = j[i].secs > secs ? j[i].secs : secs;
    }
    printf("%-44s %8.2f M decisions/s  (%d thread%s, %.1f ns/decide each)\n", label, calls / secs / 1e6, nthreads,
           nthreads > 1 ? "s" : "", secs * 1e9 * nthreads / calls);
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
    {
        rt_table_t *t = rt_table_new();

        if (t == NULL) {
            fprintf(stderr, "micro_decide: cannot build the table\n");
            return 1;
        }
        add_routes(t, 1, 1);
        run_threads("routes=1 regex, own copy per worker", t, iters, 1, 0);
        run_threads("routes=1 regex, own copy per worker", t, iters, 2, 0);
        run_threads("routes=1 regex, one shared copy", t, iters, 1, 1);
        run_threads("routes=1 regex, one shared copy", t, iters, 2, 1);
        rt_table_free(t);
    }
    return 0;
}
