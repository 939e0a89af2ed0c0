/* The weighted split (SPEC §3 step 2): the share of each weight, the bucket order, sticky keys and their
 * buckets, stickiness, monotonic cohorts and salts. Random streams come from a seeded splitmix64. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>
#include <xxhash.h>

#include "rt/parse.h"
#include "rt/table.h"

#include "rt_test.h"

static void set_weight(rt_table_t *t, const char *name, uint32_t bp)
{
    const char *err = NULL;

    if (rt_table_set_weights(t, &name, &bp, 1, &err) != 0)
        fail_msg("set weight %s %u: %s", name, bp, err);
}

/* Fails unless <k> successes out of <n> trials are within 5 standard deviations of a Binomial(n, p) mean. Five
 * sigma keeps a correct split from failing by chance (about 1 in 1.7 million) while a bias of a few sigma shows. */
static void expect_binomial(const char *what, long k, long n, double p)
{
    double mean = (double)n * p, var = (double)n * p * (1 - p), dev = (double)k - mean;

    if (dev * dev > 25 * var + 1) /* + 1: p = 0 or 1 leaves no room for a count off by one */
        fail_msg("%s: %ld of %ld, want about %.1f (5 sigma = %.1f^2)", what, k, n, mean, 25 * var);
}

static rt_request_t plain_request(void)
{
    rt_request_t r = {{"GET", 3}, {"/", 1}, NULL, 0, {"198.51.100.7", 12}, {NULL, 0}};
    return r;
}

/* sticky off: the canary's observed share at each weight is the weight, within binomial bounds. 2,000,000 draws
 * put 200 expected hits on 0.01 %, with sigma ~14, so off-by-one-bucket mistakes (+100 %) show. */
static void test_distribution(void **state)
{
    static const uint32_t weights[] = {0, 1, 50, 500, 5000, 9999, 10000};
    const long n = 2000000;
    rt_request_t req = plain_request();
    size_t i;

    for (i = 0; i < sizeof(weights) / sizeof(weights[0]); i++) {
        rt_table_t *t = new_table();
        uint64_t s = 0x5eed0000u + i;
        long canary = 0, j;
        char what[32];

        set_weight(t, "canary", weights[i]);
        for (j = 0; j < n; j++) {
            rt_decision_t d;
            rt_decide(t, &req, splitmix64(&s), &d);
            canary += d.variant == 0;
            if (d.bucket >= 10000 || d.key_missing || d.route != -1 || d.mirror != -1)
                fail_msg("bad decision: bucket %u", d.bucket);
        }
        snprintf(what, sizeof(what), "canary at %u bp", weights[i]);
        expect_binomial(what, canary, n, weights[i] / 10000.0);
        rt_table_free(t);
    }
    (void)state;
}

/* The random bucket is spread evenly over [0, 10000): 100 bins of 100 buckets, each within binomial bounds. */
static void test_random_bucket_uniform(void **state)
{
    static long bins[100];
    const long n = 1000000;
    rt_table_t *t = new_table();
    rt_request_t req = plain_request();
    uint64_t s = 99;
    long j;

    memset(bins, 0, sizeof(bins));
    for (j = 0; j < n; j++) {
        rt_decision_t d;
        rt_decide(t, &req, splitmix64(&s), &d);
        assert_true(d.bucket < 10000);
        bins[d.bucket / 100]++;
    }
    for (j = 0; j < 100; j++)
        expect_binomial("bin", bins[j], n, 0.01);
    rt_table_free(t);
    (void)state;
}

/* The smallest <rnd> whose random bucket is <b> (the bucket is the multiply-shift of rnd's high 32 bits). */
static uint64_t rnd_for_bucket(uint32_t b)
{
    return (((uint64_t)b << 32) + 9999) / 10000 << 32;
}

/* Buckets go canary first, then the other non-stable variants in declared order, stable last. */
static void test_bucket_order(void **state)
{
    static const struct {
        uint32_t bucket;
        const char *variant;
    } cases[] = {
        {0, "canary"},   {999, "canary"}, {1000, "blue"},   {2999, "blue"},
        {3000, "green"}, {5999, "green"}, {6000, "stable"}, {9999, "stable"},
    };
    rt_table_t *t = new_table();
    rt_request_t req = plain_request();
    size_t i;

    assert_int_equal(rt_table_add_variant(t, "blue"), 2);
    assert_int_equal(rt_table_add_variant(t, "green"), 3);
    set_weight(t, "green", 3000); /* set out of order on purpose: declaration order counts */
    set_weight(t, "canary", 1000);
    set_weight(t, "blue", 2000);
    assert_int_equal(rt_table_weight_bp(t, rt_table_stable(t)), 4000);
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rt_decision_t d;
        rt_decide(t, &req, rnd_for_bucket(cases[i].bucket), &d);
        assert_int_equal(d.bucket, cases[i].bucket);
        assert_string_equal(rt_table_variant_name(t, d.variant), cases[i].variant);
    }
    /* A variant at weight 0 owns no bucket; its neighbours close up. */
    set_weight(t, "blue", 0);
    for (i = 0; i < 10000; i++) {
        rt_decision_t d;
        rt_decide(t, &req, rnd_for_bucket((uint32_t)i), &d);
        assert_int_equal(d.variant, i < 1000 ? 0u : i < 4000 ? 3u : 1u);
    }
    rt_table_free(t);
    (void)state;
}

/* Canary at 100 % or 0 % is absolute, whatever <rnd>. */
static void test_extremes(void **state)
{
    static const uint64_t rnds[] = {0, 1, 0xffffffffull, 0xffffffff00000000ull, ~0ull, 0x8000000000000000ull};
    rt_table_t *t = new_table();
    rt_request_t req = plain_request();
    size_t i;

    for (i = 0; i < sizeof(rnds) / sizeof(rnds[0]); i++) {
        rt_decision_t d;
        set_weight(t, "canary", 0);
        rt_decide(t, &req, rnds[i], &d);
        assert_int_equal(d.variant, 1);
        set_weight(t, "canary", 10000);
        rt_decide(t, &req, rnds[i], &d);
        assert_int_equal(d.variant, 0);
    }
    rt_table_free(t);
    (void)state;
}

static uint32_t expected_bucket(const char *salt, const char *key, size_t len)
{
    return (uint32_t)(XXH64(key, len, XXH64(salt, strlen(salt), 0)) % 10000);
}

/* Where the sticky key comes from, and what happens without one. */
static void test_sticky_keys(void **state)
{
    static const rt_header_t hdrs[] = {
        {{"Host", 4}, {"example.com", 11}},         {{"X-User", 6}, {"alice", 5}},
        {{"Cookie", 6}, {"theme=dark", 10}},        {{"x-user", 6}, {"bob", 3}},
        {{"cookie", 6}, {"a=1; sid=s-42 ; z", 17}}, {{"x-empty", 7}, {"", 0}},
        {{"Cookie", 6}, {"sid=later", 9}},
    };
    static const struct {
        enum rt_sticky_kind kind;
        const char *name;
        const char *override;
        const char *key; /* NULL: no key, a random bucket */
    } cases[] = {
        {RT_STICKY_IP, NULL, NULL, "198.51.100.7"},
        {RT_STICKY_HEADER, "x-user", NULL, "alice"}, /* the first of two, name case-insensitive */
        {RT_STICKY_HEADER, "X-USER", NULL, "alice"},
        {RT_STICKY_HEADER, "host", NULL, "example.com"},
        {RT_STICKY_HEADER, "x-none", NULL, NULL},
        {RT_STICKY_HEADER, "x-empty", NULL, NULL}, /* an empty value is no key */
        {RT_STICKY_COOKIE, "sid", NULL, "s-42"},   /* from the second Cookie header, spaces dropped */
        {RT_STICKY_COOKIE, "theme", NULL, "dark"},
        {RT_STICKY_COOKIE, "Sid", NULL, NULL}, /* cookie names are case-sensitive */
        {RT_STICKY_COOKIE, "z", NULL, NULL},   /* a pair without '=' */
        {RT_STICKY_COOKIE, "none", "gen-123", "gen-123"},
        {RT_STICKY_COOKIE, "sid", "gen-123", "gen-123"}, /* the override wins over the configured key */
        {RT_STICKY_IP, NULL, "gen-9", "gen-9"},
        {RT_STICKY_OFF, NULL, "gen-9", NULL}, /* sticky off: always random, never "missing" */
        {RT_STICKY_HEADER, "x-none", "", NULL},
    };
    const char *salt = "rollout-2";
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rt_table_t *t = new_table();
        rt_request_t req = plain_request();
        uint64_t s = 1000 + i;
        int j;

        req.headers = hdrs;
        req.nheaders = sizeof(hdrs) / sizeof(hdrs[0]);
        if (cases[i].override != NULL)
            req.sticky_override = (rt_span_t){cases[i].override, strlen(cases[i].override)};
        assert_int_equal(rt_table_set_sticky(t, cases[i].kind, cases[i].name), 0);
        assert_int_equal(rt_table_set_salt(t, salt), 0);
        set_weight(t, "canary", 5000);
        for (j = 0; j < 32; j++) {
            uint64_t rnd = splitmix64(&s);
            rt_decision_t d;

            rt_decide(t, &req, rnd, &d);
            if (cases[i].key != NULL) {
                uint32_t b = expected_bucket(salt, cases[i].key, strlen(cases[i].key));
                if (d.bucket != b || d.key_missing)
                    fail_msg("case %zu: bucket %u, want %u of '%s'", i, d.bucket, b, cases[i].key);
                assert_int_equal(rt_table_bucket(t, cases[i].key, strlen(cases[i].key)), b);
            } else {
                assert_int_equal(d.bucket, (uint32_t)(((rnd >> 32) * 10000) >> 32));
                assert_int_equal(d.key_missing, cases[i].kind != RT_STICKY_OFF);
            }
            assert_int_equal(d.variant, d.bucket < 5000 ? 0u : 1u);
        }
        rt_table_free(t);
    }
    (void)state;
}

/* The same key lands on the same variant whatever <rnd>, and its bucket is exactly XXH64(key, seed) % 10000. */
static void test_sticky_same_key(void **state)
{
    rt_table_t *t = new_table();
    rt_header_t h = {{"x-user", 6}, {NULL, 0}};
    rt_request_t req = plain_request();
    uint64_t s = 5;
    char key[32];
    int i, j;

    req.headers = &h;
    req.nheaders = 1;
    assert_int_equal(rt_table_set_sticky(t, RT_STICKY_HEADER, "x-user"), 0);
    assert_int_equal(rt_table_set_salt(t, "pod-template-6d4f"), 0);
    set_weight(t, "canary", 2500);
    for (i = 0; i < 2000; i++) {
        rt_decision_t first, d;
        int n = snprintf(key, sizeof(key), "user-%d", i);

        h.value = (rt_span_t){key, (size_t)n};
        rt_decide(t, &req, splitmix64(&s), &first);
        assert_int_equal(first.bucket, expected_bucket("pod-template-6d4f", key, (size_t)n));
        assert_int_equal(first.variant, first.bucket < 2500 ? 0u : 1u);
        for (j = 0; j < 8; j++) {
            rt_decide(t, &req, splitmix64(&s), &d);
            assert_int_equal(d.variant, first.variant);
            assert_int_equal(d.bucket, first.bucket);
        }
    }
    rt_table_free(t);
    (void)state;
}

#define NKEYS 100000

/* A rollout walks the canary weight up; a key that reached the canary stays there at every later step, and the
 * cohort at each step is the weight's share of the keys. */
static void test_sticky_monotonic(void **state)
{
    static const uint32_t walk[] = {0, 5, 100, 500, 2500, 10000};
    static unsigned char on[NKEYS];
    rt_table_t *t = new_table();
    rt_header_t h = {{"Cookie", 6}, {NULL, 0}};
    rt_request_t req = plain_request();
    uint64_t s = 77;
    char cookie[48];
    size_t w;
    int i;

    req.headers = &h;
    req.nheaders = 1;
    memset(on, 0, sizeof(on));
    assert_int_equal(rt_table_set_sticky(t, RT_STICKY_COOKIE, "uid"), 0);
    assert_int_equal(rt_table_set_salt(t, "release-42"), 0);
    for (w = 0; w < sizeof(walk) / sizeof(walk[0]); w++) {
        long canary = 0;
        char what[32];

        set_weight(t, "canary", walk[w]);
        for (i = 0; i < NKEYS; i++) {
            rt_decision_t d;
            int n = snprintf(cookie, sizeof(cookie), "lang=en; uid=%08x", (unsigned)i * 2654435761u);

            h.value = (rt_span_t){cookie, (size_t)n};
            rt_decide(t, &req, splitmix64(&s), &d);
            assert_int_equal(d.key_missing, 0);
            if (on[i] && d.variant != 0)
                fail_msg("key %d left the canary at %u bp", i, walk[w]);
            on[i] = d.variant == 0;
            canary += on[i];
        }
        snprintf(what, sizeof(what), "cohort at %u bp", walk[w]);
        expect_binomial(what, canary, NKEYS, walk[w] / 10000.0);
    }
    rt_table_free(t);
    (void)state;
}

/* A new salt draws a new cohort: two salts' 10 % cohorts overlap like independent draws (w^2 of the keys), not
 * like the same users (w). */
static void test_salt_new_cohort(void **state)
{
    static unsigned char in_a[NKEYS];
    const double w = 0.10;
    rt_table_t *a = new_table(), *b = new_table();
    long na = 0, nb = 0, both = 0;
    char key[32];
    int i;

    assert_int_equal(rt_table_set_sticky(a, RT_STICKY_IP, NULL), 0);
    assert_int_equal(rt_table_set_sticky(b, RT_STICKY_IP, NULL), 0);
    assert_int_equal(rt_table_set_salt(a, "rollout-a"), 0);
    assert_int_equal(rt_table_set_salt(b, "rollout-b"), 0);
    set_weight(a, "canary", 1000);
    set_weight(b, "canary", 1000);
    for (i = 0; i < NKEYS; i++) {
        rt_request_t req = plain_request();
        rt_decision_t da, db;
        int n = snprintf(key, sizeof(key), "10.%d.%d.%d", i >> 16, (i >> 8) & 255, i & 255);

        req.client_ip = (rt_span_t){key, (size_t)n};
        rt_decide(a, &req, 0, &da);
        rt_decide(b, &req, 0, &db);
        in_a[i] = da.variant == 0;
        na += da.variant == 0;
        nb += db.variant == 0;
        both += da.variant == 0 && db.variant == 0;
    }
    expect_binomial("cohort a", na, NKEYS, w);
    expect_binomial("cohort b", nb, NKEYS, w);
    expect_binomial("overlap", both, NKEYS, w * w);

    /* The same salt set again draws the same cohort. */
    assert_int_equal(rt_table_set_salt(b, "rollout-a"), 0);
    for (i = 0; i < NKEYS; i++) {
        rt_request_t req = plain_request();
        rt_decision_t d;
        int n = snprintf(key, sizeof(key), "10.%d.%d.%d", i >> 16, (i >> 8) & 255, i & 255);

        req.client_ip = (rt_span_t){key, (size_t)n};
        rt_decide(b, &req, 0, &d);
        assert_int_equal(d.variant == 0, in_a[i]);
    }
    rt_table_free(a);
    rt_table_free(b);
    (void)state;
}

/* With extra variants, raising the canary still only moves buckets onto the canary. */
static void test_monotonic_with_extra_variants(void **state)
{
    rt_table_t *t = new_table();
    uint32_t w, b;

    assert_int_equal(rt_table_add_variant(t, "blue"), 2);
    set_weight(t, "blue", 2000);
    for (w = 0; w + 100 <= 8000; w += 100) {
        rt_request_t req = plain_request();
        for (b = 0; b < 10000; b += 7) {
            rt_decision_t lo, hi;
            set_weight(t, "canary", w);
            rt_decide(t, &req, rnd_for_bucket(b), &lo);
            set_weight(t, "canary", w + 100);
            rt_decide(t, &req, rnd_for_bucket(b), &hi);
            if (lo.variant == 0 && hi.variant != 0)
                fail_msg("bucket %u left the canary going from %u to %u bp", b, w, w + 100);
            assert_int_equal(hi.variant == 0, b < w + 100);
        }
    }
    rt_table_free(t);
    (void)state;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_distribution, setup, teardown),
        cmocka_unit_test_setup_teardown(test_random_bucket_uniform, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bucket_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_extremes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sticky_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sticky_same_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sticky_monotonic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_salt_new_cohort, setup, teardown),
        cmocka_unit_test_setup_teardown(test_monotonic_with_extra_variants, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
