/* The route table's building API: variants, weights, sticky settings, routes (set, replace, delete, errors),
 * the control syntax written back, equality, and clones sharing routes. */
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

static void test_new_defaults(void **state)
{
    rt_table_t *t = new_table();

    assert_int_equal(rt_table_nvariants(t), 2);
    assert_string_equal(rt_table_variant_name(t, 0), "canary");
    assert_string_equal(rt_table_variant_name(t, 1), "stable");
    assert_null(rt_table_variant_name(t, 2));
    assert_int_equal(rt_table_stable(t), 1);
    assert_int_equal(rt_table_weight_bp(t, 0), 0);
    assert_int_equal(rt_table_weight_bp(t, 1), 10000);
    assert_int_equal(rt_table_sticky(t), RT_STICKY_OFF);
    assert_null(rt_table_sticky_name(t));
    assert_string_equal(rt_table_salt(t), "");
    assert_int_equal(rt_table_generation(t), 0);
    assert_int_equal(rt_table_nroutes(t), 0);
    assert_null(rt_table_route_name(t, 0));
    rt_table_set_generation(t, 41);
    assert_int_equal(rt_table_generation(t), 41);
    rt_table_free(t);
    rt_table_free(NULL);
    (void)state;
}

static void test_variants(void **state)
{
    static const char *const bad[] = {
        "", "Blue", "-blue", "blue_1", "blue.1", "b lue", "abcdefghijklmnopqrstuvwxyz0123456"}; /* 33 chars */
    rt_table_t *t = new_table();
    char name[8];
    size_t i;

    assert_int_equal(rt_table_add_variant(t, "blue"), 2);
    assert_int_equal(rt_table_add_variant(t, "blue"), 2); /* no-op */
    assert_int_equal(rt_table_add_variant(t, "canary"), 0);
    assert_int_equal(rt_table_add_variant(t, "abcdefghijklmnopqrstuvwxyz012345"), 3); /* 32 chars */
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (rt_table_add_variant(t, bad[i]) != -1)
            fail_msg("accepted variant name '%s'", bad[i]);
    assert_int_equal(rt_table_find_variant(t, "bluez", 4), 2); /* <name> need not be NUL-terminated */
    assert_int_equal(rt_table_find_variant(t, "stable", 6), 1);
    assert_int_equal(rt_table_find_variant(t, "stab", 4), -1);
    assert_int_equal(rt_table_find_variant(t, "green", 5), -1);
    for (i = 4; i < RT_MAX_VARIANTS; i++) {
        snprintf(name, sizeof(name), "v%zu", i);
        assert_int_equal(rt_table_add_variant(t, name), (int)i);
    }
    assert_int_equal(rt_table_add_variant(t, "one-more"), -1);
    assert_int_equal(rt_table_add_variant(t, "v4"), 4); /* an existing one still resolves when full */
    assert_int_equal(rt_table_nvariants(t), RT_MAX_VARIANTS);
    rt_table_free(t);
    (void)state;
}

static void test_weights(void **state)
{
    rt_table_t *t = new_table();
    const char *names[] = {"canary", "blue", "canary"};
    uint32_t bps[] = {500, 2000, 750};
    const char *err = NULL;

    assert_int_equal(rt_table_add_variant(t, "blue"), 2);
    assert_int_equal(rt_table_set_weights(t, names, bps, 1, &err), 0);
    assert_int_equal(rt_table_weight_bp(t, 0), 500);
    assert_int_equal(rt_table_weight_bp(t, 1), 9500);
    assert_int_equal(rt_table_set_weights(t, names + 1, bps + 1, 1, &err), 0); /* canary keeps its weight */
    assert_int_equal(rt_table_weight_bp(t, 0), 500);
    assert_int_equal(rt_table_weight_bp(t, 2), 2000);
    assert_int_equal(rt_table_weight_bp(t, 1), 7500);
    assert_int_equal(rt_table_set_weights(t, names, bps, 3, &err), 0); /* a later value for a name wins */
    assert_int_equal(rt_table_weight_bp(t, 0), 750);
    assert_int_equal(rt_table_weight_bp(t, 1), 7250);
    bps[0] = 8000;
    assert_int_equal(rt_table_set_weights(t, names, bps, 2, &err), 0); /* sum exactly 100 */
    assert_int_equal(rt_table_weight_bp(t, 1), 0);
    rt_table_free(t);
    (void)state;
}

static void test_weight_errors(void **state)
{
    static const struct {
        const char *names[3];
        uint32_t bps[3];
        size_t n;
        const char *err;
    } cases[] = {
        {{"green"}, {100}, 1, "unknown variant"},
        {{"canary", "nope"}, {100, 100}, 2, "unknown variant"},
        {{"stable"}, {100}, 1, "stable gets the rest and takes no weight"},
        {{"canary"}, {10001}, 1, "weight out of range"},
        {{"canary", "blue"}, {6000, 4001}, 2, "weights add up to more than 100"},
        {{"blue"}, {9001}, 1, "weights add up to more than 100"}, /* with canary's 1000 kept */
    };
    const char *c = "canary";
    uint32_t bp = 1000;
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rt_table_t *t = new_table(), *before;
        const char *err = NULL;

        assert_int_equal(rt_table_add_variant(t, "blue"), 2);
        assert_int_equal(rt_table_set_weights(t, &c, &bp, 1, NULL), 0);
        before = rt_table_clone(t);
        assert_non_null(before);
        assert_int_equal(rt_table_set_weights(t, cases[i].names, cases[i].bps, cases[i].n, &err), -1);
        assert_non_null(err);
        assert_string_equal(err, cases[i].err);
        assert_int_equal(rt_table_set_weights(t, cases[i].names, cases[i].bps, cases[i].n, NULL), -1);
        assert_true(rt_table_equal(t, before)); /* unchanged */
        assert_int_equal(rt_table_weight_bp(t, 0), 1000);
        assert_int_equal(rt_table_weight_bp(t, 1), 9000);
        rt_table_free(before);
        rt_table_free(t);
    }
    (void)state;
}

static void test_sticky_settings(void **state)
{
    rt_table_t *t = new_table();

    assert_int_equal(rt_table_set_sticky(t, RT_STICKY_HEADER, "X-User-Id"), 0);
    assert_int_equal(rt_table_sticky(t), RT_STICKY_HEADER);
    assert_string_equal(rt_table_sticky_name(t), "x-user-id"); /* header names are case-insensitive */
    assert_int_equal(rt_table_set_sticky(t, RT_STICKY_COOKIE, "Session"), 0);
    assert_string_equal(rt_table_sticky_name(t), "Session"); /* cookie names are not */
    assert_int_equal(rt_table_set_sticky(t, RT_STICKY_COOKIE, ""), -1);
    assert_int_equal(rt_table_set_sticky(t, RT_STICKY_HEADER, "x user"), -1);
    assert_int_equal(rt_table_set_sticky(t, RT_STICKY_HEADER, NULL), -1);
    assert_int_equal(rt_table_set_sticky(t, (enum rt_sticky_kind)9, "x"), -1);
    assert_int_equal(rt_table_sticky(t), RT_STICKY_COOKIE); /* unchanged by the failures */
    assert_string_equal(rt_table_sticky_name(t), "Session");
    assert_int_equal(rt_table_set_sticky(t, RT_STICKY_IP, "ignored"), 0);
    assert_null(rt_table_sticky_name(t));
    assert_int_equal(rt_table_set_sticky(t, RT_STICKY_OFF, NULL), 0);

    assert_int_equal(rt_table_set_salt(t, "rollout-7f9c"), 0);
    assert_string_equal(rt_table_salt(t), "rollout-7f9c");
    assert_int_equal(rt_table_bucket(t, "alice", 5), XXH64("alice", 5, XXH64("rollout-7f9c", 12, 0)) % 10000);
    assert_int_equal(rt_table_set_salt(t, NULL), -1);
    assert_string_equal(rt_table_salt(t), "rollout-7f9c");
    assert_int_equal(rt_table_set_salt(t, ""), 0);
    assert_int_equal(rt_table_bucket(t, "alice", 5), XXH64("alice", 5, XXH64("", 0, 0)) % 10000);
    rt_table_free(t);
    (void)state;
}

static void expect_names(const rt_table_t *t, const char *const *names, unsigned n)
{
    unsigned i;

    assert_int_equal(rt_table_nroutes(t), n);
    for (i = 0; i < n; i++)
        assert_string_equal(rt_table_route_name(t, i), names[i]);
}

static void test_routes_set_replace_del(void **state)
{
    rt_table_t *t = new_table();
    const rt_cond_spec_t a = H("x-a", EXACT, "1"), b = P(PREFIX, "/b");
    const char *abc[] = {"a", "b.2", "C_3-x"}, *ac[] = {"a", "C_3-x"}, *c[] = {"C_3-x"};
    char buf[256];

    set_route(t, "a", RT_ROUTE_HEADER, NULL, 0, &a, 1);
    set_route(t, "b.2", RT_ROUTE_HEADER, "stable", 0, &a, 1);
    set_route(t, "C_3-x", RT_ROUTE_MIRROR, NULL, 100, NULL, 0);
    expect_names(t, abc, 3);
    set_route(t, "a12345678901234567890123456789012345678901234567890123456789012", RT_ROUTE_HEADER, NULL, 0, &a, 1);
    assert_int_equal(rt_table_del_route(t, "a12345678901234567890123456789012345678901234567890123456789012"), 0);
    /* SPEC §3's charset: Argo names the alternatives of a rule NAME~1, NAME~2, and ':' namespaces a route. */
    set_route(t, "canary-header~1", RT_ROUTE_HEADER, NULL, 0, &a, 1);
    set_route(t, "ns:rollout.x_y~2", RT_ROUTE_HEADER, NULL, 0, &a, 1);
    assert_int_equal(rt_table_del_route(t, "canary-header~1"), 0);
    assert_int_equal(rt_table_del_route(t, "ns:rollout.x_y~2"), 0);

    set_route(t, "b.2", RT_ROUTE_MIRROR, NULL, 5000, &b, 1); /* replaced in place, kind may change */
    expect_names(t, abc, 3);
    rt_table_format_route(t, 1, buf, sizeof(buf));
    assert_string_equal(buf, "set mirror-route b.2 50.00 to canary path prefix /b");

    assert_int_equal(rt_table_del_route(t, "nope"), -1);
    assert_int_equal(rt_table_del_route(t, "B.2"), -1); /* names are case-sensitive */
    expect_names(t, abc, 3);
    assert_int_equal(rt_table_del_route(t, "b.2"), 0);
    expect_names(t, ac, 2);
    assert_int_equal(rt_table_del_route(t, "b.2"), -1);
    assert_int_equal(rt_table_del_route(t, "a"), 0);
    expect_names(t, c, 1);
    set_route(t, "a", RT_ROUTE_HEADER, NULL, 0, &a, 1); /* set again after delete: goes last */
    assert_string_equal(rt_table_route_name(t, 1), "a");
    rt_table_del_routes(t);
    assert_int_equal(rt_table_nroutes(t), 0);
    rt_table_del_routes(t);
    rt_table_free(t);
    (void)state;
}

/* Every rejected route leaves the table exactly as it was, with a message naming the problem. */
static void test_route_errors(void **state)
{
    static const rt_cond_spec_t ok = H("x-a", EXACT, "1"), re_open = P(REGEX, "("), re_brace = H("x", REGEX, "a{2"),
                                re_stray = P(REGEX, "a)|(b"), re_stray2 = P(REGEX, "/x)"), meth_empty = M(""),
                                meth_comma = M("GET,"), meth_space = M("GET, POST"),
                                hdr_bad = H("x canary", EXACT, "1"), hdr_empty = H("", EXACT, "1"),
                                cookie_empty = H("cookie:", EXACT, "1"), cookie_bad = H("cookie:a b", EXACT, "1"),
                                op_bad = {RT_COND_PATH, (enum rt_match_op)7, NULL, "/"},
                                kind_bad = {(enum rt_cond_kind)9, RT_MATCH_EXACT, NULL, "/"},
                                no_value = {RT_COND_PATH, RT_MATCH_EXACT, NULL, NULL},
                                no_name = {RT_COND_HEADER, RT_MATCH_EXACT, NULL, "1"};
    static const rt_cond_spec_t many[RT_MAX_CONDS + 1] = {0};
    static const struct {
        rt_route_spec_t spec;
        const char *err; /* the message starts with this */
    } cases[] = {
        {{"", RT_ROUTE_HEADER, NULL, 0, &ok, 1}, "invalid route name ''"},
        {{NULL, RT_ROUTE_HEADER, NULL, 0, &ok, 1}, "invalid route name"},
        {{"a b", RT_ROUTE_HEADER, NULL, 0, &ok, 1}, "invalid route name 'a b'"},
        {{"a/b", RT_ROUTE_HEADER, NULL, 0, &ok, 1}, "invalid route name 'a/b'"},
        {{"a123456789012345678901234567890123456789012345678901234567890123", RT_ROUTE_HEADER, NULL, 0, &ok, 1},
         "invalid route name"}, /* 64 chars */
        {{"~1", RT_ROUTE_HEADER, NULL, 0, &ok, 1}, "invalid route name '~1'"},
        {{"-a", RT_ROUTE_HEADER, NULL, 0, &ok, 1}, "invalid route name '-a'"},
        {{".a", RT_ROUTE_HEADER, NULL, 0, &ok, 1}, "invalid route name '.a'"},
        {{"a~b/c", RT_ROUTE_HEADER, NULL, 0, &ok, 1}, "invalid route name 'a~b/c'"},
        {{"a\"b", RT_ROUTE_HEADER, NULL, 0, &ok, 1}, "invalid route name 'a\"b'"},
        {{"r", RT_ROUTE_HEADER, "green", 0, &ok, 1}, "unknown variant 'green'"},
        {{"r", (enum rt_route_kind)5, NULL, 0, &ok, 1}, "unknown route kind"},
        {{"r", RT_ROUTE_MIRROR, NULL, 10001, &ok, 1}, "mirror percent out of range"},
        {{"r", RT_ROUTE_HEADER, NULL, 0, &re_open, 1}, "invalid regex '(': "},
        {{"r", RT_ROUTE_HEADER, NULL, 0, &re_brace, 1}, "invalid regex 'a{2': "},
        {{"r", RT_ROUTE_HEADER, NULL, 0, &re_stray, 1}, "invalid regex 'a)|(b': "},
        {{"r", RT_ROUTE_HEADER, NULL, 0, &re_stray2, 1}, "invalid regex '/x)': "},
        {{"r", RT_ROUTE_HEADER, NULL, 0, &meth_empty, 1}, "invalid method list ''"},
        {{"r", RT_ROUTE_HEADER, NULL, 0, &meth_comma, 1}, "invalid method list 'GET,'"},
        {{"r", RT_ROUTE_HEADER, NULL, 0, &meth_space, 1}, "invalid method list 'GET, POST'"},
        {{"r", RT_ROUTE_HEADER, NULL, 0, &hdr_bad, 1}, "invalid header name 'x canary'"},
        {{"r", RT_ROUTE_HEADER, NULL, 0, &hdr_empty, 1}, "invalid header name ''"},
        {{"r", RT_ROUTE_HEADER, NULL, 0, &cookie_empty, 1}, "invalid header name 'cookie:'"},
        {{"r", RT_ROUTE_HEADER, NULL, 0, &cookie_bad, 1}, "invalid cookie name 'cookie:a b'"},
        {{"r", RT_ROUTE_HEADER, NULL, 0, &op_bad, 1}, "unknown match operator"},
        {{"r", RT_ROUTE_HEADER, NULL, 0, &kind_bad, 1}, "unknown condition kind"},
        {{"r", RT_ROUTE_HEADER, NULL, 0, &no_value, 1}, "condition without a value"},
        {{"r", RT_ROUTE_HEADER, NULL, 0, &no_name, 1}, "header condition without a name"},
        {{"r", RT_ROUTE_HEADER, NULL, 0, many, RT_MAX_CONDS + 1}, "too many conditions"},
        {{"r", RT_ROUTE_HEADER, NULL, 0, NULL, 1}, "missing conditions"},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rt_table_t *t = new_table(), *before;
        const char *names[] = {"r", "other"};
        char err[256] = "", small[8] = "xxxxxxx";

        /* The same name is already set: a failed replace must keep the old route. */
        set_route(t, "r", RT_ROUTE_HEADER, NULL, 0, &ok, 1);
        set_route(t, "other", RT_ROUTE_MIRROR, NULL, 100, &ok, 1);
        before = rt_table_clone(t);
        assert_non_null(before);
        assert_int_equal(rt_table_set_route(t, &cases[i].spec, err, sizeof(err)), -1);
        if (strncmp(err, cases[i].err, strlen(cases[i].err)) != 0)
            fail_msg("case %zu: error '%s', want '%s...'", i, err, cases[i].err);
        assert_true(rt_table_equal(t, before));
        expect_names(t, names, 2);
        assert_int_equal(rt_table_set_route(t, &cases[i].spec, small, sizeof(small)), -1);
        assert_int_equal(strlen(small), sizeof(small) - 1); /* truncated, terminated */
        assert_int_equal(rt_table_set_route(t, &cases[i].spec, NULL, 0), -1);
        rt_table_free(before);
        rt_table_free(t);
    }
    (void)state;
}

static void test_too_many_routes(void **state)
{
    rt_table_t *t = new_table();
    const rt_cond_spec_t c = H("x-a", EXACT, "1");
    rt_route_spec_t spec = {"one-more", RT_ROUTE_HEADER, NULL, 0, &c, 1};
    char name[16], err[128] = "";
    unsigned i;

    for (i = 0; i < RT_MAX_ROUTES; i++) {
        snprintf(name, sizeof(name), "r%u", i);
        set_route(t, name, RT_ROUTE_HEADER, NULL, 0, &c, 1);
    }
    assert_int_equal(rt_table_set_route(t, &spec, err, sizeof(err)), -1);
    assert_string_equal(err, "too many routes (at most 256)");
    set_route(t, "r17", RT_ROUTE_HEADER, "stable", 0, &c, 1); /* replacing still works when full */
    assert_int_equal(rt_table_nroutes(t), RT_MAX_ROUTES);
    assert_string_equal(rt_table_route_name(t, 17), "r17");
    rt_table_free(t);
    (void)state;
}

static void test_format_route(void **state)
{
    static const rt_cond_spec_t c1[] = {H("X-Canary", EXACT, "1")},
                                c2[] = {M("GET,POST"), P(PREFIX, "/api"), H("cookie:User", EXACT, "bob")},
                                c3[] = {P(REGEX, "/a b/[0-9]+"), H("x-q", EXACT, "say \"hi\""), H("x-e", PREFIX, "")},
                                c4[] = {H("x-bs", REGEX, "a\\.b"), P(EXACT, "/\t")},
                                c5[] = {H("Cookie:sid", PREFIX, "x")};
    static const struct {
        rt_route_spec_t spec;
        const char *want;
    } cases[] = {
        {{"r", RT_ROUTE_HEADER, NULL, 0, c1, 1}, "set header-route r to canary header x-canary exact 1"},
        {{"r", RT_ROUTE_HEADER, "stable", 0, c2, 3},
         "set header-route r to stable method GET,POST path prefix /api header cookie:User exact bob"},
        {{"r", RT_ROUTE_MIRROR, NULL, 1250, c2, 3},
         "set mirror-route r 12.50 to canary method GET,POST path prefix /api header cookie:User exact bob"},
        {{"m.1", RT_ROUTE_MIRROR, "blue", 5, NULL, 0}, "set mirror-route m.1 0.05 to blue"},
        {{"all", RT_ROUTE_HEADER, NULL, 0, NULL, 0}, "set header-route all to canary"},
        {{"r", RT_ROUTE_MIRROR, NULL, 10000, c3, 3},
         "set mirror-route r 100.00 to canary path regex \"/a b/[0-9]+\" header x-q exact \"say \\\"hi\\\"\" "
         "header x-e prefix \"\""},
        {{"r", RT_ROUTE_HEADER, NULL, 0, c4, 2},
         "set header-route r to canary header x-bs regex \"a\\\\.b\" "
         "path exact \"/\t\""},
        {{"r", RT_ROUTE_HEADER, NULL, 0, c5, 1}, "set header-route r to canary header cookie:sid prefix x"},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rt_table_t *t = new_table();
        char buf[512], small[10];
        size_t n, k;
        char err[128] = "";

        assert_int_equal(rt_table_add_variant(t, "blue"), 2);
        assert_int_equal(rt_table_set_route(t, &cases[i].spec, err, sizeof(err)), 0);
        n = rt_table_format_route(t, 0, buf, sizeof(buf));
        assert_string_equal(buf, cases[i].want);
        assert_int_equal(n, strlen(cases[i].want));
        /* Like snprintf: the needed length whatever the room, and a terminated prefix. */
        for (k = 0; k <= sizeof(small); k++) {
            memset(small, 'z', sizeof(small));
            assert_int_equal(rt_table_format_route(t, 0, small, k), n);
            if (k > 0) {
                assert_int_equal(strlen(small), k - 1);
                assert_memory_equal(small, cases[i].want, k - 1);
            }
        }
        assert_int_equal(rt_table_format_route(t, 1, buf, sizeof(buf)), 0);
        assert_string_equal(buf, "");
        rt_table_free(t);
    }
    (void)state;
}

static rt_table_t *base_table(void)
{
    static const rt_cond_spec_t c[] = {H("x-a", EXACT, "1"), P(REGEX, "/x.*")};
    rt_table_t *t = new_table();
    const char *n = "canary";
    uint32_t bp = 500;

    assert_int_equal(rt_table_add_variant(t, "blue"), 2);
    assert_int_equal(rt_table_set_weights(t, &n, &bp, 1, NULL), 0);
    assert_int_equal(rt_table_set_sticky(t, RT_STICKY_HEADER, "x-user"), 0);
    assert_int_equal(rt_table_set_salt(t, "s1"), 0);
    set_route(t, "r1", RT_ROUTE_HEADER, NULL, 0, c, 2);
    set_route(t, "r2", RT_ROUTE_MIRROR, "blue", 300, c, 1);
    return t;
}

static void change_weight(rt_table_t *t)
{
    const char *n = "canary";
    uint32_t bp = 501;

    assert_int_equal(rt_table_set_weights(t, &n, &bp, 1, NULL), 0);
}
static void change_salt(rt_table_t *t)
{
    assert_int_equal(rt_table_set_salt(t, "s2"), 0);
}
static void change_sticky_kind(rt_table_t *t)
{
    assert_int_equal(rt_table_set_sticky(t, RT_STICKY_COOKIE, "x-user"), 0);
}
static void change_sticky_name(rt_table_t *t)
{
    assert_int_equal(rt_table_set_sticky(t, RT_STICKY_HEADER, "x-uid"), 0);
}
static void add_variant(rt_table_t *t)
{
    assert_int_equal(rt_table_add_variant(t, "green"), 3);
}
static void change_route_value(rt_table_t *t)
{
    const rt_cond_spec_t c[] = {H("x-a", EXACT, "2"), P(REGEX, "/x.*")};
    set_route(t, "r1", RT_ROUTE_HEADER, NULL, 0, c, 2);
}
static void change_route_op(rt_table_t *t)
{
    const rt_cond_spec_t c[] = {H("x-a", PREFIX, "1"), P(REGEX, "/x.*")};
    set_route(t, "r1", RT_ROUTE_HEADER, NULL, 0, c, 2);
}
static void change_route_cond_order(rt_table_t *t)
{
    const rt_cond_spec_t c[] = {P(REGEX, "/x.*"), H("x-a", EXACT, "1")};
    set_route(t, "r1", RT_ROUTE_HEADER, NULL, 0, c, 2);
}
static void change_route_to(rt_table_t *t)
{
    const rt_cond_spec_t c[] = {H("x-a", EXACT, "1"), P(REGEX, "/x.*")};
    set_route(t, "r1", RT_ROUTE_HEADER, "blue", 0, c, 2);
}
static void change_route_percent(rt_table_t *t)
{
    const rt_cond_spec_t c[] = {H("x-a", EXACT, "1")};
    set_route(t, "r2", RT_ROUTE_MIRROR, "blue", 301, c, 1);
}
static void change_route_order(rt_table_t *t)
{
    const rt_cond_spec_t c[] = {H("x-a", EXACT, "1"), P(REGEX, "/x.*")};
    assert_int_equal(rt_table_del_route(t, "r1"), 0);
    set_route(t, "r1", RT_ROUTE_HEADER, NULL, 0, c, 2);
}
static void del_route(rt_table_t *t)
{
    assert_int_equal(rt_table_del_route(t, "r2"), 0);
}
/* Not a change: the same routes, spelled differently or set again. */
static void same_weight(rt_table_t *t)
{
    const char *n[] = {"canary", "blue"};
    uint32_t bp[] = {500, 0};
    assert_int_equal(rt_table_set_weights(t, n, bp, 2, NULL), 0);
}
static void same_route_reset(rt_table_t *t)
{
    const rt_cond_spec_t c[] = {H("X-A", EXACT, "1"), P(REGEX, "/x.*")};
    set_route(t, "r1", RT_ROUTE_HEADER, "canary", 0, c, 2);
}
static void same_header_route_percent(rt_table_t *t)
{
    const rt_cond_spec_t c[] = {H("x-a", EXACT, "1"), P(REGEX, "/x.*")};
    set_route(t, "r1", RT_ROUTE_HEADER, NULL, 4000, c, 2); /* a header route has no percent */
}
static void same_generation(rt_table_t *t)
{
    rt_table_set_generation(t, 99);
}
static void same_sticky_name_case(rt_table_t *t)
{
    assert_int_equal(rt_table_set_sticky(t, RT_STICKY_HEADER, "X-User"), 0);
}

static void test_equal(void **state)
{
    static const struct {
        const char *what;
        void (*change)(rt_table_t *);
        int equal;
    } cases[] = {
        {"weight", change_weight, 0},
        {"salt", change_salt, 0},
        {"sticky kind", change_sticky_kind, 0},
        {"sticky name", change_sticky_name, 0},
        {"new variant", add_variant, 0},
        {"route value", change_route_value, 0},
        {"route op", change_route_op, 0},
        {"route condition order", change_route_cond_order, 0},
        {"route destination", change_route_to, 0},
        {"route percent", change_route_percent, 0},
        {"route order", change_route_order, 0},
        {"route deleted", del_route, 0},
        {"same weights again", same_weight, 1},
        {"same route set again", same_route_reset, 1},
        {"percent of a header route", same_header_route_percent, 1},
        {"generation", same_generation, 1},
        {"sticky header name case", same_sticky_name_case, 1},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rt_table_t *a = base_table(), *b = base_table(), *c;

        assert_true(rt_table_equal(a, b)); /* built apart: compared by content */
        c = rt_table_clone(a);
        assert_non_null(c);
        assert_true(rt_table_equal(a, c));
        cases[i].change(c);
        if (rt_table_equal(a, c) != cases[i].equal || rt_table_equal(c, a) != cases[i].equal ||
            rt_table_equal(b, c) != cases[i].equal)
            fail_msg("'%s': equal should be %d", cases[i].what, cases[i].equal);
        rt_table_free(c);
        rt_table_free(b);
        rt_table_free(a);
    }
    (void)state;
}

/* A clone shares the routes; changing either side leaves the other intact, and freeing in any order leaks nothing. */
static void test_clone_shares_routes(void **state)
{
    const rt_cond_spec_t c = H("x-canary", REGEX, "1|yes");
    rt_header_t h = {{"X-Canary", 8}, {"yes", 3}};
    rt_request_t req = {{"GET", 3}, {"/", 1}, &h, 1, {"", 0}, {"", 0}};
    rt_table_t *a = new_table(), *b;
    rt_decision_t d;
    char buf[128];

    set_route(a, "r", RT_ROUTE_HEADER, NULL, 0, &c, 1);
    rt_table_set_generation(a, 12);
    b = rt_table_clone(a);
    assert_non_null(b);
    assert_int_equal(rt_table_generation(b), 12);
    assert_int_equal(rt_table_del_route(a, "r"), 0);
    rt_decide(a, &req, 0, &d);
    assert_int_equal(d.route, -1);
    rt_decide(b, &req, 0, &d);
    assert_int_equal(d.route, 0);
    assert_int_equal(d.variant, 0);
    rt_table_format_route(b, 0, buf, sizeof(buf));
    assert_string_equal(buf, "set header-route r to canary header x-canary regex 1|yes");

    rt_table_free(a);
    a = rt_table_clone(b);
    assert_non_null(a);
    rt_table_free(b); /* the route lives on in <a> */
    rt_decide(a, &req, 0, &d);
    assert_int_equal(d.route, 0);
    rt_table_del_routes(a);
    assert_int_equal(rt_table_nroutes(a), 0);
    rt_table_free(a);
    (void)state;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_new_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_variants, setup, teardown),
        cmocka_unit_test_setup_teardown(test_weights, setup, teardown),
        cmocka_unit_test_setup_teardown(test_weight_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sticky_settings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_routes_set_replace_del, setup, teardown),
        cmocka_unit_test_setup_teardown(test_route_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_many_routes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_format_route, setup, teardown),
        cmocka_unit_test_setup_teardown(test_equal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clone_shares_routes, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
