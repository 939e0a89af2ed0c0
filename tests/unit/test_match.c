/* Route conditions and precedence (SPEC §3): every matcher, first route wins, header routes over weights, mirror
 * routes. Requests are built the way the proxy builds them: spans into one raw header block, not NUL-terminated. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "rt/parse.h"
#include "rt/table.h"

#include "rt_test.h"

/* A request as the proxy hands it over. <raw> is "Name: value\r\n..." and every span points into <buf>, so the
 * byte after a value is '\r', never a NUL. */
#define MAX_HDRS 16
typedef struct req_s {
    char buf[1024];
    rt_header_t hdrs[MAX_HDRS];
    rt_request_t req;
} req_t;

static const rt_request_t *mkreq(req_t *r, const char *method, const char *path, const char *raw)
{
    size_t mlen = strlen(method), plen = strlen(path), n = 0;
    char *p, *end;

    memset(r, 0, sizeof(*r));
    assert_true(mlen + plen + strlen(raw) + 2 < sizeof(r->buf));
    memcpy(r->buf, method, mlen);
    r->buf[mlen] = ' ';
    memcpy(r->buf + mlen + 1, path, plen);
    r->buf[mlen + 1 + plen] = ' ';
    p = r->buf + mlen + plen + 2;
    strcpy(p, raw);
    end = p + strlen(raw);
    r->req.method = (rt_span_t){r->buf, mlen};
    r->req.path = (rt_span_t){r->buf + mlen + 1, plen};
    while (p < end) {
        char *colon = strchr(p, ':'), *eol = strstr(p, "\r\n");
        assert_non_null(colon);
        assert_non_null(eol);
        assert_true(n < MAX_HDRS);
        r->hdrs[n].name = (rt_span_t){p, (size_t)(colon - p)};
        colon++;
        while (*colon == ' ')
            colon++;
        r->hdrs[n].value = (rt_span_t){colon, (size_t)(eol - colon)};
        n++;
        p = eol + 2;
    }
    r->req.headers = r->hdrs;
    r->req.nheaders = n;
    r->req.client_ip = (rt_span_t){"192.0.2.1", 9};
    return &r->req;
}

static void set_canary(rt_table_t *t, uint32_t bp)
{
    const char *names[] = {"canary"};

    assert_int_equal(rt_table_set_weights(t, names, &bp, 1, NULL), 0);
}

/* ---- one condition against one request ---- */

static const struct cond_case {
    const char *what;
    rt_cond_spec_t cond;
    const char *method, *path, *raw;
    int match;
} cond_cases[] = {
    {"method single", M("GET"), "GET", "/", "", 1},
    {"method list first", M("GET,POST"), "GET", "/", "", 1},
    {"method list second", M("GET,POST"), "POST", "/", "", 1},
    {"method not listed", M("GET,POST"), "PUT", "/", "", 0},
    {"method is case-sensitive", M("GET"), "get", "/", "", 0},
    {"method token, not prefix", M("GET"), "GETX", "/", "", 0},
    {"method token, not substring", M("POST"), "POS", "/", "", 0},
    {"method list is not substring", M("GET,POST"), "T,P", "/", "", 0},

    {"path exact", P(EXACT, "/api"), "GET", "/api", "", 1},
    {"path exact ignores query", P(EXACT, "/api"), "GET", "/api?x=1", "", 1},
    {"path exact, empty query", P(EXACT, "/api"), "GET", "/api?", "", 1},
    {"path exact, longer", P(EXACT, "/api"), "GET", "/api/", "", 0},
    {"path exact, shorter", P(EXACT, "/api"), "GET", "/ap", "", 0},
    {"path exact is case-sensitive", P(EXACT, "/api"), "GET", "/API", "", 0},
    {"path exact against the query", P(EXACT, "/api?x=1"), "GET", "/api?x=1", "", 0},
    {"path prefix", P(PREFIX, "/api"), "GET", "/api/v1/users", "", 1},
    {"path prefix equal", P(PREFIX, "/api"), "GET", "/api", "", 1},
    {"path prefix with query", P(PREFIX, "/api"), "GET", "/api/v1?q=2", "", 1},
    {"path prefix not reached past '?'", P(PREFIX, "/api"), "GET", "/ap?i", "", 0},
    {"path prefix miss", P(PREFIX, "/api"), "GET", "/v1/api", "", 0},
    {"path regex", P(REGEX, "/users/[0-9]+"), "GET", "/users/42", "", 1},
    {"path regex with query", P(REGEX, "/users/[0-9]+"), "GET", "/users/42?page=2", "", 1},
    {"path regex anchored at end", P(REGEX, "/users/[0-9]+"), "GET", "/users/42/x", "", 0},
    {"path regex anchored at start", P(REGEX, "/users/[0-9]+"), "GET", "/v2/users/42", "", 0},
    {"path regex alternation is anchored", P(REGEX, "/a|/b"), "GET", "/ab", "", 0},
    {"path regex alternation second", P(REGEX, "/a|/b"), "GET", "/b", "", 1},
    {"path regex query not matched", P(REGEX, "/a.*"), "GET", "/a?b", "", 1},
    {"path regex sees no query", P(REGEX, "/a.*b"), "GET", "/a?b", "", 0},
    {"path regex bracket with paren", P(REGEX, "/[)(]+"), "GET", "/)(", "", 1},

    {"header exact", H("x-canary", EXACT, "1"), "GET", "/", "X-Canary: 1\r\n", 1},
    {"header name case-insensitive", H("X-CANARY", EXACT, "1"), "GET", "/", "x-canary: 1\r\n", 1},
    {"header value case-sensitive", H("x-mode", EXACT, "On"), "GET", "/", "x-mode: on\r\n", 0},
    {"header exact longer", H("x-canary", EXACT, "1"), "GET", "/", "x-canary: 10\r\n", 0},
    {"header absent", H("x-canary", EXACT, "1"), "GET", "/", "x-other: 1\r\n", 0},
    {"header absent, no headers", H("x-canary", PREFIX, ""), "GET", "/", "", 0},
    {"header name is not a prefix", H("x-can", PREFIX, ""), "GET", "/", "x-canary: 1\r\n", 0},
    {"header later occurrence", H("x-canary", EXACT, "1"), "GET", "/", "x-canary: 0\r\nx-canary: 1\r\n", 1},
    {"header no occurrence matches", H("x-canary", EXACT, "1"), "GET", "/", "x-canary: 0\r\nX-Canary: 2\r\n", 0},
    {"header empty value exact", H("x-canary", EXACT, ""), "GET", "/", "x-canary: \r\n", 1},
    {"header prefix", H("user-agent", PREFIX, "Mozilla/"), "GET", "/", "User-Agent: Mozilla/5.0\r\n", 1},
    {"header prefix miss", H("user-agent", PREFIX, "Mozilla/"), "GET", "/", "User-Agent: curl/8\r\n", 0},
    {"header regex", H("x-user", REGEX, "[a-z]+-(1|2)"), "GET", "/", "x-user: bob-2\r\n", 1},
    {"header regex anchored", H("x-user", REGEX, "[a-z]+-(1|2)"), "GET", "/", "x-user: bob-22\r\n", 0},
    {"header regex on later occurrence", H("x-user", REGEX, "b.*"), "GET", "/", "x-user: al\r\nx-user: bo\r\n", 1},
    {"header regex empty value", H("x-user", REGEX, "a*"), "GET", "/", "x-user: \r\n", 1},

    {"cookie", H("cookie:user", EXACT, "bob"), "GET", "/", "Cookie: a=1; user=bob\r\n", 1},
    {"cookie first pair", H("cookie:user", EXACT, "bob"), "GET", "/", "Cookie: user=bob; a=1\r\n", 1},
    {"cookie prefix spelled in caps", H("Cookie:user", EXACT, "bob"), "GET", "/", "cookie: user=bob\r\n", 1},
    {"cookie in a second header", H("cookie:user", EXACT, "bob"), "GET", "/", "Cookie: a=1\r\nCookie: user=bob\r\n", 1},
    {"cookie whitespace around ';' and '='", H("cookie:user", EXACT, "bob"), "GET", "/",
     "Cookie: a=1 ;\tuser = bob ; c=3\r\n", 1},
    {"cookie trailing ';'", H("cookie:user", EXACT, "bob"), "GET", "/", "Cookie: user=bob;\r\n", 1},
    {"cookie no space after ';'", H("cookie:user", EXACT, "bob"), "GET", "/", "Cookie: a=1;user=bob\r\n", 1},
    {"cookie name is case-sensitive", H("cookie:user", EXACT, "bob"), "GET", "/", "Cookie: User=bob\r\n", 0},
    {"cookie name is not a prefix", H("cookie:user", EXACT, "bob"), "GET", "/", "Cookie: username=bob\r\n", 0},
    {"cookie name is not a suffix", H("cookie:user", EXACT, "bob"), "GET", "/", "Cookie: xuser=bob\r\n", 0},
    {"cookie value is the value", H("cookie:a", EXACT, "1"), "GET", "/", "Cookie: b=a; c=1\r\n", 0},
    {"cookie pair without '='", H("cookie:user", EXACT, "bob"), "GET", "/", "Cookie: user; user=bob\r\n", 1},
    {"cookie empty value", H("cookie:user", EXACT, ""), "GET", "/", "Cookie: user=; a=1\r\n", 1},
    {"cookie value holding '='", H("cookie:t", EXACT, "a=b"), "GET", "/", "Cookie: t=a=b\r\n", 1},
    {"cookie quoted value kept as written", H("cookie:user", EXACT, "\"bob\""), "GET", "/", "Cookie: user=\"bob\"\r\n",
     1},
    {"cookie quoted value is not bare", H("cookie:user", EXACT, "bob"), "GET", "/", "Cookie: user=\"bob\"\r\n", 0},
    {"cookie absent", H("cookie:user", PREFIX, ""), "GET", "/", "Cookie: a=1\r\n", 0},
    {"cookie only in another header", H("cookie:user", EXACT, "bob"), "GET", "/", "X-Cookie: user=bob\r\n", 0},
    {"cookie any occurrence", H("cookie:user", EXACT, "bob"), "GET", "/", "Cookie: user=al; user=bob\r\n", 1},
    {"cookie prefix", H("cookie:user", PREFIX, "bo"), "GET", "/", "Cookie: user=bob\r\n", 1},
    {"cookie regex", H("cookie:user", REGEX, "b[o]+b"), "GET", "/", "Cookie: user=booob; z=9\r\n", 1},
    {"cookie regex anchored", H("cookie:user", REGEX, "b[o]+"), "GET", "/", "Cookie: user=booob; z=9\r\n", 0},
    {"raw cookie header", H("cookie", PREFIX, "a=1"), "GET", "/", "Cookie: a=1; b=2\r\n", 1},
};

static void test_conditions(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cond_cases) / sizeof(cond_cases[0]); i++) {
        const struct cond_case *c = &cond_cases[i];
        rt_table_t *t = rt_table_new();
        rt_decision_t d;
        req_t r;

        assert_non_null(t);
        set_route(t, "r", RT_ROUTE_HEADER, NULL, 0, &c->cond, 1);
        rt_decide(t, mkreq(&r, c->method, c->path, c->raw), 0, &d);
        if ((d.route == 0) != c->match)
            fail_msg("case '%s': route %d, want %s", c->what, d.route, c->match ? "a match" : "none");
        assert_int_equal(d.variant, c->match ? 0u : rt_table_stable(t));
        rt_table_free(t);
    }
}

/* Every condition of a route must hold; one failing, in any position, sinks it. */
static void test_all_conditions_hold(void **state)
{
    rt_table_t *t = new_table();
    const rt_cond_spec_t conds[] = {
        M("GET,POST"),
        P(PREFIX, "/api"),
        H("x-canary", EXACT, "1"),
        H("cookie:user", REGEX, "b.b"),
    };
    static const struct {
        const char *method, *path, *raw;
        int match;
    } cases[] = {
        {"POST", "/api/x", "X-Canary: 1\r\nCookie: user=bob\r\n", 1},
        {"PUT", "/api/x", "X-Canary: 1\r\nCookie: user=bob\r\n", 0},
        {"POST", "/web/x", "X-Canary: 1\r\nCookie: user=bob\r\n", 0},
        {"POST", "/api/x", "X-Canary: 2\r\nCookie: user=bob\r\n", 0},
        {"POST", "/api/x", "X-Canary: 1\r\nCookie: user=bobby\r\n", 0},
        {"POST", "/api/x", "Cookie: user=bob\r\n", 0},
    };
    size_t i;

    set_route(t, "all", RT_ROUTE_HEADER, NULL, 0, conds, 4);
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rt_decision_t d;
        req_t r;
        rt_decide(t, mkreq(&r, cases[i].method, cases[i].path, cases[i].raw), 0, &d);
        if ((d.route == 0) != cases[i].match)
            fail_msg("case %zu: route %d", i, d.route);
    }
    rt_table_free(t);
    (void)state;
}

/* In first-set order, the first route that matches decides, whatever the weights. */
static void test_first_route_wins(void **state)
{
    rt_table_t *t = new_table();
    const rt_cond_spec_t api = P(PREFIX, "/api"), beta = H("x-beta", EXACT, "1");
    rt_decision_t d;
    req_t r;

    assert_int_equal(rt_table_add_variant(t, "blue"), 2);
    set_canary(t, 10000); /* the weights alone would pick canary */
    set_route(t, "to-stable", RT_ROUTE_HEADER, "stable", 0, &beta, 1);
    set_route(t, "to-blue", RT_ROUTE_HEADER, "blue", 0, &api, 1);

    rt_decide(t, mkreq(&r, "GET", "/api/v1", "x-beta: 1\r\n"), 0, &d);
    assert_int_equal(d.route, 0);
    assert_int_equal(d.variant, rt_table_stable(t));
    assert_int_equal(d.mirror, -1);
    assert_int_equal(d.bucket, 0);

    rt_decide(t, mkreq(&r, "GET", "/api/v1", "x-beta: 0\r\n"), 0, &d);
    assert_int_equal(d.route, 1);
    assert_int_equal(d.variant, 2);

    rt_decide(t, mkreq(&r, "GET", "/web", "x-beta: 0\r\n"), 0, &d);
    assert_int_equal(d.route, -1);
    assert_int_equal(d.variant, 0); /* weights: canary at 100 % */
    rt_table_free(t);
    (void)state;
}

/* A header route sends to canary by default even at weight 0; a route with no condition matches everything. */
static void test_header_route_beats_weights(void **state)
{
    rt_table_t *t = new_table();
    uint64_t s = 1;
    int i;

    set_route(t, "everyone", RT_ROUTE_HEADER, NULL, 0, NULL, 0);
    for (i = 0; i < 1000; i++) {
        rt_decision_t d;
        req_t r;
        rt_decide(t, mkreq(&r, "DELETE", "/x", ""), splitmix64(&s), &d);
        assert_int_equal(d.variant, 0);
        assert_int_equal(d.route, 0);
        assert_int_equal(d.mirror, -1);
        assert_int_equal(d.key_missing, 0);
    }
    rt_table_free(t);
    (void)state;
}

/* A mirror route: the weights pick the primary, a copy goes to the mirror variant unless it is the primary. */
static void test_mirror_route(void **state)
{
    rt_table_t *t = new_table();
    const rt_cond_spec_t api = P(PREFIX, "/api");
    rt_decision_t d;
    req_t r;
    uint64_t s = 7;
    int i;

    set_route(t, "shadow", RT_ROUTE_MIRROR, NULL, RT_BP_MAX, &api, 1);
    for (i = 0; i < 1000; i++) { /* canary at 0: every match is copied to canary */
        rt_decide(t, mkreq(&r, "GET", "/api", ""), splitmix64(&s), &d);
        assert_int_equal(d.variant, rt_table_stable(t));
        assert_int_equal(d.route, 0);
        assert_int_equal(d.mirror, 0);
    }
    rt_decide(t, mkreq(&r, "GET", "/web", ""), splitmix64(&s), &d);
    assert_int_equal(d.route, -1);
    assert_int_equal(d.mirror, -1);

    set_canary(t, 10000); /* the primary is the mirror variant: no copy */
    for (i = 0; i < 1000; i++) {
        rt_decide(t, mkreq(&r, "GET", "/api", ""), splitmix64(&s), &d);
        assert_int_equal(d.variant, 0);
        assert_int_equal(d.route, 0);
        assert_int_equal(d.mirror, -1);
    }

    set_canary(t, 0);
    set_route(t, "shadow", RT_ROUTE_MIRROR, "stable", RT_BP_MAX, &api, 1); /* mirror to stable: always primary */
    rt_decide(t, mkreq(&r, "GET", "/api", ""), splitmix64(&s), &d);
    assert_int_equal(d.route, 0);
    assert_int_equal(d.mirror, -1);

    set_route(t, "shadow", RT_ROUTE_MIRROR, NULL, 0, &api, 1); /* 0 %: matched, never copied */
    for (i = 0; i < 1000; i++) {
        rt_decide(t, mkreq(&r, "GET", "/api", ""), splitmix64(&s), &d);
        assert_int_equal(d.route, 0);
        assert_int_equal(d.mirror, -1);
    }
    rt_table_free(t);
    (void)state;
}

/* The mirror share is PERCENT of the matching requests whose primary is not the mirror variant, drawn
 * independently of the bucket: with canary at 50 % and a 25 % mirror, stable primaries are copied 25 % of the time. */
static void test_mirror_share_independent(void **state)
{
    rt_table_t *t = new_table();
    const int n = 400000;
    long stable = 0, copied = 0, canary_copied = 0;
    uint64_t s = 42;
    double p = 0.25, mean, var;
    rt_decision_t d;
    req_t r;
    int i;

    set_canary(t, 5000);
    set_route(t, "shadow", RT_ROUTE_MIRROR, NULL, 2500, NULL, 0);
    mkreq(&r, "GET", "/", "");
    for (i = 0; i < n; i++) {
        rt_decide(t, &r.req, splitmix64(&s), &d);
        if (d.variant == rt_table_stable(t)) {
            stable++;
            copied += d.mirror == 0;
        } else {
            canary_copied += d.mirror != -1;
        }
    }
    assert_int_equal(canary_copied, 0);
    mean = stable * p;
    var = stable * p * (1 - p);
    if ((copied - mean) * (copied - mean) > 25 * var) /* 5 sigma */
        fail_msg("copied %ld of %ld stable primaries, want about %.0f", copied, stable, mean);
    mean = n * 0.5;
    var = n * 0.25;
    if ((stable - mean) * (stable - mean) > 25 * var)
        fail_msg("stable %ld of %d", stable, n);
    rt_table_free(t);
    (void)state;
}

/* A header route to a declared extra variant; its decision carries bucket 0 and no key_missing even when sticky. */
static void test_header_route_extra_variant(void **state)
{
    rt_table_t *t = new_table();
    const rt_cond_spec_t c = H("x-exp", EXACT, "green");
    rt_decision_t d;
    req_t r;

    assert_int_equal(rt_table_add_variant(t, "green"), 2);
    assert_int_equal(rt_table_set_sticky(t, RT_STICKY_HEADER, "x-user"), 0);
    set_route(t, "exp", RT_ROUTE_HEADER, "green", 0, &c, 1);
    rt_decide(t, mkreq(&r, "GET", "/", "x-exp: green\r\n"), ~0ull, &d);
    assert_int_equal(d.variant, 2);
    assert_int_equal(d.bucket, 0);
    assert_int_equal(d.key_missing, 0);
    rt_decide(t, mkreq(&r, "GET", "/", "x-exp: blue\r\n"), ~0ull, &d);
    assert_int_equal(d.route, -1);
    assert_int_equal(d.key_missing, 1);
    rt_table_free(t);
    (void)state;
}

/* Sixteen routes, each with sixteen conditions, all evaluated: the last one matching still decides. */
static void test_many_routes(void **state)
{
    rt_table_t *t = new_table();
    rt_cond_spec_t conds[RT_MAX_CONDS];
    char names[16][16], values[16][16];
    rt_decision_t d;
    req_t r;
    int i, k;

    for (k = 0; k < 16; k++) {
        snprintf(names[k], sizeof(names[k]), "r%d", k);
        snprintf(values[k], sizeof(values[k]), "v%d", k);
        for (i = 0; i < RT_MAX_CONDS; i++)
            conds[i] = (rt_cond_spec_t)H("x-route", EXACT, values[k]);
        conds[3] = (rt_cond_spec_t)M("GET");
        conds[9] = (rt_cond_spec_t)P(REGEX, "/.*");
        set_route(t, names[k], RT_ROUTE_HEADER, NULL, 0, conds, RT_MAX_CONDS);
    }
    rt_decide(t, mkreq(&r, "GET", "/a", "x-route: v15\r\n"), 0, &d);
    assert_int_equal(d.route, 15);
    rt_decide(t, mkreq(&r, "GET", "/a", "x-route: v16\r\n"), 0, &d);
    assert_int_equal(d.route, -1);
    rt_decide(t, mkreq(&r, "POST", "/a", "x-route: v15\r\n"), 0, &d);
    assert_int_equal(d.route, -1);
    rt_table_free(t);
    (void)state;
}

/* ---- regexes refused before compiling, and compiled once per worker ---- */

/* SPEC §4: longer than 256 bytes, or bounded repetitions that expand past what compiles cheaply. The refused ones
 * must be refused without compiling: the first one alone, compiled, takes gigabytes. */
static void test_regex_too_complex(void **state)
{
    static const char *const refused[] = {
        "(((a{1,100}){1,100}){1,100}){1,100}", "((a{1,10}){1,10}){1,30}", /* 3,000 copies */
        "(a{1,50}){1,50}", "((a|b){1,40}){1,40}",
        "a{1,1000}", /* one bound alone: its optional copies nest, memory grows with its square */
        "a{256}", "a{32767}", "a{99999999999999999999}", "(x{2,}){1,255}(y{2,}){1,255}(z{2,}){1,255}",
        "a{1,255}b{1,255}c{1,255}d{1,255}e{1,255}f{1,255}g{1,255}h{1,255}",
        "((((((((((((((((((((((((((((((((((((((((a+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+"
        ")",
        "a{1,255}b{1,255}c{1,255}d{1,255}(e{1,255}f{1,255}g{1,255}h{1,255}", /* unclosed: counted all the same */
        /* copies of what may match nothing: seconds and gigabytes in glibc (found by fuzz_ctl, fuzz_state) */
        "((}{0}){1,100}){15}", "(a*){1,255}", "a**********{1,255}", "((a?){1,40}){1,40}", "(x{0,32}){0,32}",
        "(a|){1,100}", "(a|b?){3}", "(^){1,50}", "(\\<|b){3,}", "0*++++++++", "a{0,255}{2}", "x***********",
        "((((((((((((x*)*)*)*)*)*)*)*)*)*)*)", "x?******?*****",
        /* 11 operators one over another */ NULL, /* 257 bytes */
    };
    static const char *const accepted[] = {
        "^/api/v[0-9]+/.*$",
        "(foo|bar){1,3}",
        "[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}",
        "a{255}",
        "a{,255}",
        "(a*)+",
        "(a?){2}",
        "([a-z]+-?){1,5}",
        "(a|b*c){1,50}",
        "(^/v[0-9]+){1,3}",
        "x**********",
        "(((((((((x*)*)*)*)*)*)*)*)*)*",
        ".*?",         /* 10 operators one over another */
        "a\\{1000\\}", /* escaped: literal braces */
        "[{]1000}",    /* in a bracket: literal */
        "(.*a){100}",
        "[a-zA-Z0-9._%+-]{1,64}@[a-zA-Z0-9.-]{1,253}\\.[a-z]{2,63}",
        NULL, /* 256 bytes */
    };
    char big[300], err[256];
    size_t i;

    for (i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        rt_table_t *t = new_table();
        rt_cond_spec_t c = H("x-user", REGEX, refused[i]);
        rt_route_spec_t spec = {"r", RT_ROUTE_HEADER, NULL, 0, &c, 1};

        if (c.value == NULL) {
            memset(big, 'a', 257);
            big[257] = '\0';
            c.value = big;
        }
        err[0] = '\0';
        if (rt_table_set_route(t, &spec, err, sizeof(err)) == 0)
            fail_msg("'%.60s' was accepted", c.value);
        assert_string_equal(err, "regex too complex");
        assert_int_equal(rt_table_nroutes(t), 0);
        rt_table_free(t);
    }
    for (i = 0; i < sizeof(accepted) / sizeof(accepted[0]); i++) {
        rt_table_t *t = new_table();
        rt_cond_spec_t c = P(REGEX, accepted[i]);

        if (c.value == NULL) {
            memset(big, 'a', 256);
            big[256] = '\0';
            c.value = big;
        }
        set_route(t, "r", RT_ROUTE_HEADER, NULL, 0, &c, 1);
        rt_table_free(t);
    }
    (void)state;
}

static long nallocs;
static void *count_malloc(size_t n)
{
    nallocs++;
    return t_malloc(n);
}
static void *count_calloc(size_t n, size_t size)
{
    nallocs++;
    return t_calloc(n, size);
}
static const rt_allocator_t counting_allocator = {count_malloc, count_calloc, t_realloc, t_free};

/* Each worker number runs a regex through its own compiled copy, made at its first use (glibc's regexec() locks the
 * pattern it runs, so one shared copy makes the workers queue): one allocation per worker and regex condition,
 * none after, and the same decisions as the shared copy. A copy that cannot be made leaves that worker on the
 * shared one, for good. The table frees every copy (cmocka's leak check). */
static void test_regex_copy_per_worker(void **state)
{
    static const unsigned workers[] = {0, 1, RT_MAX_WORKERS - 1};
    rt_cond_spec_t conds[] = {P(REGEX, "/users/[0-9]+"), H("x-user", REGEX, "[a-z]+-(1|2)")};
    rt_table_t *t;
    rt_decision_t d;
    req_t r;
    long before;
    size_t i;

    rt_set_allocator(&counting_allocator);
    t = new_table();
    set_route(t, "r", RT_ROUTE_HEADER, NULL, 0, conds, 2);
    for (i = 0; i < sizeof(workers) / sizeof(workers[0]); i++) {
        before = nallocs;
        rt_decide_worker(t, workers[i], mkreq(&r, "GET", "/users/7", "x-user: bob-2\r\n"), 0, &d);
        assert_int_equal(d.route, 0);
        assert_int_equal(nallocs - before, 2); /* one copy of each pattern */
        rt_decide_worker(t, workers[i], mkreq(&r, "GET", "/users/7", "x-user: bob-22\r\n"), 0, &d);
        assert_int_equal(d.route, -1);
        rt_decide_worker(t, workers[i], mkreq(&r, "GET", "/users/x", "x-user: bob-1\r\n"), 0, &d);
        assert_int_equal(d.route, -1);
        assert_int_equal(nallocs - before, 2);
    }
    before = nallocs;
    rt_decide(t, mkreq(&r, "GET", "/users/7", "x-user: al-1\r\n"), 0, &d);
    assert_int_equal(d.route, 0);
    rt_decide_worker(t, RT_MAX_WORKERS, mkreq(&r, "GET", "/users/7", "x-user: al-1\r\n"), 0, &d);
    assert_int_equal(d.route, 0);
    assert_int_equal(nallocs - before, 0);

    fail_after = 0; /* worker 5 cannot make its copies: it matches with the shared ones */
    rt_decide_worker(t, 5, mkreq(&r, "GET", "/users/7", "x-user: bob-1\r\n"), 0, &d);
    assert_int_equal(d.route, 0);
    fail_after = -1;
    before = nallocs;
    rt_decide_worker(t, 5, mkreq(&r, "GET", "/users/7", "x-user: bob-11\r\n"), 0, &d);
    assert_int_equal(d.route, -1);
    assert_int_equal(nallocs - before, 0);
    rt_table_free(t);
    (void)state;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_conditions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_all_conditions_hold, setup, teardown),
        cmocka_unit_test_setup_teardown(test_first_route_wins, setup, teardown),
        cmocka_unit_test_setup_teardown(test_header_route_beats_weights, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mirror_route, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mirror_share_independent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_header_route_extra_variant, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_routes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_regex_too_complex, setup, teardown),
        cmocka_unit_test_setup_teardown(test_regex_copy_per_worker, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
