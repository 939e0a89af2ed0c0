/* Routing through the real weir (SPEC §3 and the routing requests of §4): the observed split by weight, weights 0
 * and 100, a sticky rollout whose cohorts only grow, sticky buckets as the contract computes them, sticky cookies,
 * the sticky salt, header routes with each kind of condition, their order, `to VARIANT`, `del route` and
 * `show routes`, x-weir-variant, and a three-way split with an extra variant.
 *
 * Bounds: when each of n requests goes to a variant with probability p, the count k must satisfy
 * |k - np| <= 5 sd with sd = sqrt(np(1-p)), a false alarm about once in 1.7 million checks. Sticky cohorts depend
 * only on the hash of the keys, so the checks on them are deterministic: they hold in every run or in none. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>

/* The contract names the sticky hash (XXH64, SPEC §3); the header-only build needs no library at link time. */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "harness.h"

enum { ST = 0, CA, EX, NV }; /* the upstreams' indices in env->up, and the variants they serve */
static const char *const vname[NV] = {"stable", "canary", "exp"};

#define NCONN 4      /* keep-alive connections a load is spread over */
#define NREQ 2000    /* requests per weight */
#define NUSERS 2000  /* sticky population */
#define MAX_ARGS 48  /* of one weir or weirctl command line */
#define REQ_MAX 1024 /* bytes of one formatted request */

/* --- helpers -------------------------------------------------------------------------------------------------- */

/* Starts the upstreams "stable", "canary" and, with <exp>, "exp" (at env->up[ST], [CA], [EX]), then weir ahead of
 * them with the extra NULL-terminated flags. */
static void start(th_env_t *env, bool exp, ...)
{
    const char *args[MAX_ARGS];
    size_t n = 0;
    for (int v = 0; v < (exp ? NV : EX); v++)
        assert_int_equal(th_upstream_start(env, vname[v]), v);
    args[n++] = "--stable";
    args[n++] = env->up[ST].addr;
    args[n++] = "--canary";
    args[n++] = env->up[CA].addr;
    if (exp) {
        args[n++] = "--upstream";
        args[n++] = "exp";
        args[n++] = env->up[EX].addr;
    }
    va_list ap;
    va_start(ap, exp);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL) {
        assert_true(n < MAX_ARGS - 1);
        args[n++] = a;
    }
    va_end(ap);
    args[n] = NULL;
    th_weir_start(env, args);
}

/* Formats a keep-alive request into <buf>: <extra> is "" or header lines, each ending in CRLF. */
static const char *req(char *buf, const char *method, const char *target, const char *extra)
{
    bool body = strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0;
    int n = snprintf(buf, REQ_MAX, "%s %s HTTP/1.1\r\nHost: test\r\n%s%s\r\n", method, target,
                     body ? "Content-Length: 0\r\n" : "", extra);
    assert_true(n > 0 && n < REQ_MAX);
    return buf;
}

static int variant_index(const char *name)
{
    for (int v = 0; v < NV; v++)
        if (strcmp(name, vname[v]) == 0)
            return v;
    return -1;
}

/* Sends <raw> on <c> and reads the response into <r>. Returns the variant whose upstream answered (x-upstream);
 * fails the test on no response, a status other than 200, or an unknown upstream. */
#define ask_resp(c, raw, r) ask_resp_at((c), (raw), (r), __FILE__, __LINE__)
static int ask_resp_at(th_conn_t *c, const char *raw, th_resp_t *r, const char *file, int line)
{
    if (th_conn_send(c, raw, strlen(raw)) < 0 ||
        th_conn_read_response(c, r, strncmp(raw, "HEAD ", 5) == 0, TH_TIMEOUT_MS) < 0) {
        print_error("ERROR: no complete response to: %.200s\n", raw);
        _fail(file, line);
    }
    const char *who = th_header(r, "x-upstream");
    int v = who != NULL ? variant_index(who) : -1;
    if (r->status != 200 || v < 0) {
        print_error("ERROR: got %d from upstream %s to: %.200s\n", r->status, who ? who : "(none)", raw);
        _fail(file, line);
    }
    return v;
}

/* ask_resp() that keeps only the variant. */
#define ask(c, raw) ask_at((c), (raw), __FILE__, __LINE__)
static int ask_at(th_conn_t *c, const char *raw, const char *file, int line)
{
    th_resp_t r = {0};
    int v = ask_resp_at(c, raw, &r, file, line);
    th_resp_free(&r);
    return v;
}

/* Asserts that <raw> on <c> is answered by variant <want>. */
#define assert_routed(c, raw, want) assert_routed_at((c), (raw), (want), __FILE__, __LINE__)
static void assert_routed_at(th_conn_t *c, const char *raw, int want, const char *file, int line)
{
    int v = ask_at(c, raw, file, line);
    if (v != want) {
        print_error("ERROR: routed to %s, want %s: %.200s\n", vname[v], vname[want], raw);
        _fail(file, line);
    }
}

/* Sends <n> requests <raw> round-robin over NCONN fresh keep-alive connections. Adds to counts[variant] and, when
 * <percon> is given, to percon[connection][variant]. */
#define split(env, raw, n, counts, percon) split_at((env), (raw), (n), (counts), (percon), __FILE__, __LINE__)
static void split_at(th_env_t *env, const char *raw, int n, int counts[NV], int (*percon)[NV], const char *file,
                     int line)
{
    th_conn_t *c[NCONN];
    for (int i = 0; i < NCONN; i++)
        c[i] = th_conn_open(env->port);
    for (int i = 0; i < n; i++) {
        int v = ask_at(c[i % NCONN], raw, file, line);
        counts[v]++;
        if (percon != NULL)
            percon[i % NCONN][v]++;
    }
    for (int i = 0; i < NCONN; i++)
        th_conn_close(c[i]);
}

static double root(double x) /* no libm in the test link */
{
    double r = x > 1 ? x : 1;
    for (int i = 0; i < 60; i++)
        r = (r + x / r) / 2;
    return x > 0 ? r : 0;
}

/* Asserts that <k> of <n> is within 5 standard deviations of the binomial mean for probability <p> (exact when p
 * is 0 or 1). */
#define assert_binomial(k, n, p, what) assert_binomial_at((k), (n), (p), (what), __FILE__, __LINE__)
static void assert_binomial_at(long k, long n, double p, const char *what, const char *file, int line)
{
    double mean = (double)n * p, var = (double)n * p * (1 - p), d = (double)k - mean;
    if (d * d <= 25 * var + 1e-9)
        return;
    print_error("ERROR: %s: %ld of %ld, expected %.2f +- %.2f (5 sd)\n", what, k, n, mean, 5 * root(var));
    _fail(file, line);
}

/* Runs weirctl -s <sock> with the NULL-terminated request tokens in <ap> into <r>; returns the command as text. */
static char *run_ctl(th_env_t *env, th_run_t *r, va_list ap)
{
    char *argv[MAX_ARGS];
    int n = 0;
    argv[n++] = (char *)th_weirctl_bin();
    argv[n++] = "-s";
    argv[n++] = env->sock;
    char *text = th_strdup("weirctl");
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL) {
        assert_true(n < MAX_ARGS - 1);
        argv[n++] = (char *)a;
        text = th_fmt("%s '%s'", text, a);
    }
    argv[n] = NULL;
    th_run(env, r, argv);
    return text;
}

/* Runs a control request that must succeed; returns its data lines (weirctl's stdout). */
#define ctl(env, ...) ctl_at((env), __FILE__, __LINE__, __VA_ARGS__, (const char *)NULL)
static char *ctl_at(th_env_t *env, const char *file, int line, ...)
{
    th_run_t r;
    va_list ap;
    va_start(ap, line);
    char *text = run_ctl(env, &r, ap);
    va_end(ap);
    if (r.status != 0) {
        print_error("ERROR: %s exited %d: %s%s\n", text, r.status, r.err, r.out);
        _fail(file, line);
    }
    return r.out;
}

/* Runs a control request that must be refused: weirctl exits 1 with a message on stderr. */
#define ctl_refused(env, ...) ctl_refused_at((env), __FILE__, __LINE__, __VA_ARGS__, (const char *)NULL)
static void ctl_refused_at(th_env_t *env, const char *file, int line, ...)
{
    th_run_t r;
    va_list ap;
    va_start(ap, line);
    char *text = run_ctl(env, &r, ap);
    va_end(ap);
    if (r.status != 1 || r.err[0] == '\0') {
        print_error("ERROR: %s: want exit 1 with an error, got %d, stderr: %s\n", text, r.status, r.err);
        _fail(file, line);
    }
}

/* Asserts that `get weight` has the line "<variant> <value>" (two decimals, SPEC §4). */
#define assert_weight(env, variant, value) assert_weight_at((env), (variant), (value), __FILE__, __LINE__)
static void assert_weight_at(th_env_t *env, const char *variant, const char *value, const char *file, int line)
{
    char *out = ctl_at(env, file, line, "get", "weight", (const char *)NULL);
    char *want = th_fmt("%s %s", variant, value);
    for (char *l = out, *e; *l; l = e + (*e != '\0')) {
        e = l + strcspn(l, "\n");
        if ((size_t)(e - l) == strlen(want) && strncmp(l, want, strlen(want)) == 0)
            return;
    }
    print_error("ERROR: `get weight` has no line \"%s\":\n%s\n", want, out);
    _fail(file, line);
}

/* Splits one data line of `show routes` into tokens, undoing the control protocol's quoting. Returns the count. */
static int tokenize(const char *line, char *tok[], int max)
{
    int n = 0;
    const char *p = line;
    for (;;) {
        while (*p == ' ')
            p++;
        if (*p == '\0')
            return n;
        assert_true(n < max);
        char *t = th_alloc(strlen(p) + 1), *o = t;
        if (*p == '"') {
            for (p++; *p && *p != '"'; p++)
                *o++ = (*p == '\\' && p[1]) ? *++p : *p;
            assert_int_equal(*p, '"');
            p++;
        } else {
            while (*p && *p != ' ')
                *o++ = *p++;
        }
        *o = '\0';
        tok[n++] = t;
    }
}

/* Splits <text> into its lines (modified in place); returns the count. */
static int lines(char *text, char *line[], int max)
{
    int n = 0;
    for (char *l = text, *e; *l; l = e + 1) {
        e = l + strcspn(l, "\n");
        bool last = *e == '\0';
        *e = '\0';
        if (*l != '\0') {
            assert_true(n < max);
            line[n++] = l;
        }
        if (last)
            break;
    }
    return n;
}

/* Records the variant of every user "user-<u>" (header x-user) into <out>, asking twice on different connections
 * and failing when the two answers differ. Returns how many users got variant <count>. */
#define cohort(env, out, count) cohort_at((env), (out), (count), __FILE__, __LINE__)
static int cohort_at(th_env_t *env, int out[NUSERS], int count, const char *file, int line)
{
    th_conn_t *c[NCONN];
    for (int i = 0; i < NCONN; i++)
        c[i] = th_conn_open(env->port);
    char buf[REQ_MAX], hdr[64];
    int n = 0;
    for (int u = 0; u < NUSERS; u++) {
        snprintf(hdr, sizeof(hdr), "x-user: user-%d\r\n", u);
        req(buf, "GET", "/", hdr);
        int a = ask_at(c[u % NCONN], buf, file, line);
        int b = ask_at(c[(u + 1) % NCONN], buf, file, line);
        if (a != b) {
            print_error("ERROR: user-%d went to %s, then to %s at the same weight\n", u, vname[a], vname[b]);
            _fail(file, line);
        }
        out[u] = a;
        n += a == count;
    }
    for (int i = 0; i < NCONN; i++)
        th_conn_close(c[i]);
    return n;
}

/* The sticky bucket of SPEC §3: XXH64(key, seed) mod 10000 with seed = XXH64(salt, 0). */
static unsigned bucket(const char *salt, const char *key)
{
    uint64_t seed = XXH64(salt, strlen(salt), 0);
    return (unsigned)(XXH64(key, strlen(key), seed) % 10000);
}

/* --- split by weight ------------------------------------------------------------------------------------------ */

static void test_split_5_flag(void **state)
{
    th_env_t *env = *state;
    start(env, false, "--weight", "canary", "5", NULL);
    char buf[REQ_MAX];
    int n[NV] = {0};
    split(env, req(buf, "GET", "/", ""), NREQ, n, NULL);
    assert_int_equal(n[ST] + n[CA], NREQ);
    assert_binomial(n[CA], NREQ, 0.05, "canary share at --weight canary 5");
    /* the header names the upstream that really served each request */
    assert_int_equal(th_upstream_stat(env, CA, "/__count"), n[CA]);
    assert_int_equal(th_upstream_stat(env, ST, "/__count"), n[ST]);
    th_weir_stop(env);
}

static void test_split_50_flag(void **state)
{
    th_env_t *env = *state;
    start(env, false, "--weight", "canary", "50", NULL);
    char buf[REQ_MAX];
    int n[NV] = {0}, per[NCONN][NV] = {{0}};
    split(env, req(buf, "GET", "/", ""), NREQ, n, per);
    assert_int_equal(n[ST] + n[CA], NREQ);
    assert_binomial(n[CA], NREQ, 0.5, "canary share at --weight canary 50");
    /* each request is split on its own, not each connection */
    for (int i = 0; i < NCONN; i++)
        assert_binomial(per[i][CA], NREQ / NCONN, 0.5, th_fmt("canary share on connection %d", i));
    assert_int_equal(th_upstream_stat(env, CA, "/__count"), n[CA]);
    th_weir_stop(env);
}

static void test_split_ctl(void **state)
{
    th_env_t *env = *state;
    /* two workers: a change must reach both before weirctl returns (SPEC §4) */
    start(env, false, "--workers", "2", NULL);
    char buf[REQ_MAX];
    req(buf, "GET", "/", "");

    ctl(env, "set", "weight", "5");
    assert_weight(env, "canary", "5.00");
    assert_weight(env, "stable", "95.00");
    int n[NV] = {0};
    split(env, buf, NREQ, n, NULL);
    assert_binomial(n[CA], NREQ, 0.05, "canary share after `set weight 5`");

    ctl(env, "set", "weight", "50");
    assert_weight(env, "canary", "50.00");
    int m[NV] = {0}, per[NCONN][NV] = {{0}};
    split(env, buf, NREQ, m, per);
    assert_binomial(m[CA], NREQ, 0.5, "canary share after `set weight 50`");
    for (int i = 0; i < NCONN; i++)
        assert_binomial(per[i][CA], NREQ / NCONN, 0.5, th_fmt("canary share on connection %d", i));

    /* basis points: 0.05 % is one request in 2,000, not 5 % */
    ctl(env, "set", "weight", "0.05");
    assert_weight(env, "canary", "0.05");
    int f[NV] = {0};
    split(env, buf, NREQ, f, NULL);
    assert_binomial(f[CA], NREQ, 0.0005, "canary share after `set weight 0.05`");

    assert_int_equal(th_upstream_stat(env, CA, "/__count"), n[CA] + m[CA] + f[CA]);
    th_weir_stop(env);
}

static void test_weight_0_and_100(void **state)
{
    th_env_t *env = *state;
    start(env, false, "--workers", "2", NULL); /* the default weight is canary 0 */
    char buf[REQ_MAX];
    req(buf, "GET", "/", "");
    int n[NV] = {0};
    split(env, buf, NREQ, n, NULL);
    assert_int_equal(n[CA], 0);
    assert_int_equal(th_upstream_stat(env, CA, "/__count"), 0);

    /* variant-header is off by default */
    th_conn_t *c = th_conn_open(env->port);
    th_resp_t r = {0};
    ask_resp(c, buf, &r);
    assert_int_equal(th_header_count(&r, "x-weir-variant"), 0);

    ctl(env, "set", "weight", "100");
    int m[NV] = {0};
    split(env, buf, NREQ, m, NULL);
    assert_int_equal(m[CA], NREQ);
    assert_int_equal(th_upstream_stat(env, CA, "/__count"), NREQ);
    assert_int_equal(th_upstream_stat(env, ST, "/__count"), NREQ + 1);

    ctl(env, "set", "weight", "0");
    int z[NV] = {0};
    split(env, buf, NREQ / 2, z, NULL);
    assert_int_equal(z[CA], 0);
    assert_int_equal(th_upstream_stat(env, CA, "/__count"), NREQ);
    th_weir_stop(env);
}

static void test_three_way_split(void **state)
{
    th_env_t *env = *state;
    start(env, true, "--workers", "2", NULL);
    char buf[REQ_MAX];
    req(buf, "GET", "/", "");

    ctl(env, "set", "weight", "canary", "10", "exp", "20");
    assert_weight(env, "canary", "10.00");
    assert_weight(env, "exp", "20.00");
    assert_weight(env, "stable", "70.00");
    int n[NV] = {0};
    split(env, buf, NREQ, n, NULL);
    assert_int_equal(n[ST] + n[CA] + n[EX], NREQ);
    assert_binomial(n[CA], NREQ, 0.10, "canary share at canary 10 exp 20");
    assert_binomial(n[EX], NREQ, 0.20, "exp share at canary 10 exp 20");
    assert_binomial(n[ST], NREQ, 0.70, "stable share at canary 10 exp 20");
    assert_int_equal(th_upstream_stat(env, EX, "/__count"), n[EX]);

    /* `set weight PERCENT` changes the canary alone; exp keeps its 20 % */
    ctl(env, "set", "weight", "30");
    assert_weight(env, "exp", "20.00");
    assert_weight(env, "stable", "50.00");
    int m[NV] = {0};
    split(env, buf, NREQ, m, NULL);
    assert_binomial(m[CA], NREQ, 0.30, "canary share at canary 30 exp 20");
    assert_binomial(m[EX], NREQ, 0.20, "exp share at canary 30 exp 20");
    assert_binomial(m[ST], NREQ, 0.50, "stable share at canary 30 exp 20");

    /* a sum over 100 is refused and changes nothing */
    ctl_refused(env, "set", "weight", "canary", "90", "exp", "20");
    assert_weight(env, "canary", "30.00");
    assert_weight(env, "exp", "20.00");
    th_weir_stop(env);
}

/* --- sticky --------------------------------------------------------------------------------------------------- */

static void test_sticky_rollout(void **state)
{
    th_env_t *env = *state;
    start(env, false, "--sticky", "header:x-user", "--workers", "2", NULL);
    static const char *const step[] = {"0", "0.05", "1", "5", "25", "100"};
    static const double pct[] = {0, 0.05, 1, 5, 25, 100};
    int *was = th_alloc(NUSERS * sizeof(int)), *now = th_alloc(NUSERS * sizeof(int));
    for (int u = 0; u < NUSERS; u++)
        was[u] = ST;
    for (size_t s = 0; s < sizeof(step) / sizeof(step[0]); s++) {
        ctl(env, "set", "weight", step[s]);
        int k = cohort(env, now, CA);
        for (int u = 0; u < NUSERS; u++)
            if (was[u] == CA && now[u] != CA)
                fail_msg("user-%d was on the canary before weight %s and is back on %s", u, step[s], vname[now[u]]);
        assert_binomial(k, NUSERS, pct[s] / 100, th_fmt("canary cohort at weight %s", step[s]));
        memcpy(was, now, NUSERS * sizeof(int));
    }
    th_weir_stop(env);
}

/* The cohort is the one SPEC §3 defines: bucket XXH64(key, XXH64(salt, 0)) mod 10000; canary takes the lowest
 * buckets, the other variants the next ones in declaration order, stable the rest. */
static void test_sticky_buckets_follow_contract(void **state)
{
    th_env_t *env = *state;
    start(env, true, "--sticky", "header:x-user", "--sticky-salt", "pod-template-1", NULL);
    ctl(env, "set", "weight", "canary", "25", "exp", "10");
    const char *salts[] = {"pod-template-1", "rollout 2"}; /* from the flag, then over the socket (with a space) */
    int *got = th_alloc(NUSERS * sizeof(int));
    for (int s = 0; s < 2; s++) {
        if (s > 0)
            ctl(env, "set", "sticky-salt", salts[s]);
        cohort(env, got, CA);
        for (int u = 0; u < NUSERS; u++) {
            char key[32];
            snprintf(key, sizeof(key), "user-%d", u);
            unsigned b = bucket(salts[s], key);
            int want = b < 2500 ? CA : b < 3500 ? EX : ST;
            if (got[u] != want)
                fail_msg("salt '%s': %s (bucket %u) went to %s, want %s", salts[s], key, b, vname[got[u]], vname[want]);
        }
    }
    th_weir_stop(env);
}

static void test_sticky_salt_new_cohort(void **state)
{
    th_env_t *env = *state;
    start(env, false, "--sticky", "header:x-user", "--weight", "canary", "50", "--workers", "2", NULL);
    int *a = th_alloc(NUSERS * sizeof(int)), *b = th_alloc(NUSERS * sizeof(int)),
        *again = th_alloc(NUSERS * sizeof(int));
    assert_binomial(cohort(env, a, CA), NUSERS, 0.5, "canary cohort with the empty salt");

    ctl(env, "set", "sticky-salt", "release-2");
    assert_binomial(cohort(env, b, CA), NUSERS, 0.5, "canary cohort with salt release-2");
    int moved = 0;
    for (int u = 0; u < NUSERS; u++)
        moved += a[u] != b[u];
    /* an independent cohort: each user changes side with probability 1/2 */
    assert_binomial(moved, NUSERS, 0.5, "users whose variant changed with the new salt");

    /* the cohort is a function of the salt: the old salt gives the old cohort back */
    ctl(env, "set", "sticky-salt", "");
    cohort(env, again, CA);
    for (int u = 0; u < NUSERS; u++)
        if (again[u] != a[u])
            fail_msg("user-%d: %s with the empty salt, then %s with it again", u, vname[a[u]], vname[again[u]]);

    /* without its sticky key a request gets a random bucket */
    char buf[REQ_MAX];
    int n[NV] = {0};
    split(env, req(buf, "GET", "/", ""), NREQ / 2, n, NULL);
    assert_binomial(n[CA], NREQ / 2, 0.5, "canary share of requests without x-user");
    th_weir_stop(env);
}

/* Returns the value NAME=VALUE of a Set-Cookie "NAME=VALUE; Path=/; HttpOnly" for cookie <name>; fails otherwise. */
#define given_cookie(r, name) given_cookie_at((r), (name), __FILE__, __LINE__)
static char *given_cookie_at(const th_resp_t *r, const char *name, const char *file, int line)
{
    const char *sc = th_header(r, "set-cookie");
    size_t nl = strlen(name);
    if (th_header_count(r, "set-cookie") != 1 || strncmp(sc, name, nl) != 0 || sc[nl] != '=') {
        print_error("ERROR: want one Set-Cookie: %s=...; Path=/; HttpOnly, got %d, first: %s\n", name,
                    th_header_count(r, "set-cookie"), sc ? sc : "(none)");
        _fail(file, line);
    }
    const char *v = sc + nl + 1;
    size_t vl = strcspn(v, ";");
    bool octets = vl > 0;
    for (size_t i = 0; i < vl; i++) /* RFC 6265 cookie-octet */
        octets &= v[i] > 0x20 && v[i] < 0x7f && v[i] != '"' && v[i] != ',' && v[i] != '\\';
    if (!octets || strcmp(v + vl, "; Path=/; HttpOnly") != 0) {
        print_error("ERROR: Set-Cookie is \"%s\", want \"%s=<value>; Path=/; HttpOnly\"\n", sc, name);
        _fail(file, line);
    }
    return th_fmt("%.*s", (int)vl, v);
}

static void test_sticky_set_cookie(void **state)
{
    th_env_t *env = *state;
    start(env, false, "--sticky", "cookie:wid", "--sticky-set-cookie", "on", "--weight", "canary", "50", "--workers",
          "2", NULL);
    enum { CLIENTS = 40, REPLAYS = 20 };
    char *cookie[CLIENTS];
    int first[CLIENTS], ncanary = 0;
    char buf[REQ_MAX];
    th_conn_t *fresh = th_conn_open(env->port);
    th_conn_t *c[NCONN];
    for (int i = 0; i < NCONN; i++)
        c[i] = th_conn_open(env->port);
    for (int k = 0; k < CLIENTS; k++) {
        th_resp_t r = {0};
        /* half of them carry other cookies, but not wid */
        first[k] = ask_resp(fresh, req(buf, "GET", "/", k % 2 ? "Cookie: other=1; widx=2\r\n" : ""), &r);
        cookie[k] = given_cookie(&r, "wid");
        ncanary += first[k] == CA;
        for (int j = 0; j < k; j++)
            if (strcmp(cookie[j], cookie[k]) == 0)
                fail_msg("clients %d and %d were given the same cookie %s", j, k, cookie[k]);
        for (int i = 0; i < REPLAYS; i++) {
            const char *hdr = th_fmt(i % 2 ? "Cookie: wid=%s\r\n" : "Cookie: a=1; wid=%s; b=2\r\n", cookie[k]);
            int v = ask_resp(c[i % NCONN], req(buf, "GET", "/", hdr), &r);
            if (v != first[k])
                fail_msg("client %d (wid=%s) was put on %s, then sent to %s on replay %d", k, cookie[k],
                         vname[first[k]], vname[v], i);
            if (th_header_count(&r, "set-cookie") != 0)
                fail_msg("client %d got a new cookie although it sent wid: %s", k, th_header(&r, "set-cookie"));
        }
        th_resp_free(&r);
    }
    /* both variants were handed out, in proportion to the weight */
    assert_binomial(ncanary, CLIENTS, 0.5, "clients first put on the canary");
    th_weir_stop(env);
}

static void test_sticky_cookie_without_set_cookie(void **state)
{
    th_env_t *env = *state;
    start(env, false, "--sticky", "cookie:wid", "--weight", "canary", "50", NULL);
    th_conn_t *c = th_conn_open(env->port);
    char buf[REQ_MAX], hdr[64];
    th_resp_t r = {0};
    int nocookie = 0, users = 0;
    for (int i = 0; i < NREQ / 2; i++) {
        nocookie += ask_resp(c, req(buf, "GET", "/", ""), &r) == CA;
        if (th_header_count(&r, "set-cookie") != 0)
            fail_msg("sticky-set-cookie is off, yet weir set: %s", th_header(&r, "set-cookie"));
    }
    assert_binomial(nocookie, NREQ / 2, 0.5, "canary share of requests without the cookie");
    for (int u = 0; u < NUSERS / 4; u++) {
        snprintf(hdr, sizeof(hdr), "Cookie: wid=u%d\r\n", u);
        req(buf, "GET", "/", hdr);
        int a = ask(c, buf), b = ask(c, buf);
        if (a != b)
            fail_msg("cookie wid=u%d went to %s, then %s", u, vname[a], vname[b]);
        users += a == CA;
    }
    assert_binomial(users, NUSERS / 4, 0.5, "canary cohort of cookie users");
    th_weir_stop(env);
}

/* --- header routes -------------------------------------------------------------------------------------------- */

static void test_header_route_exact(void **state)
{
    th_env_t *env = *state;
    start(env, false, "--workers", "2", NULL);
    th_conn_t *c = th_conn_open(env->port);
    char buf[REQ_MAX];
    ctl(env, "set", "header-route", "dev", "header", "x-canary", "exact", "1");
    for (int i = 0; i < 50; i++) {
        assert_routed(c, req(buf, "GET", "/", "x-canary: 1\r\n"), CA);
        assert_routed(c, req(buf, "GET", "/", ""), ST);
    }
    assert_routed(c, req(buf, "GET", "/", "X-CANARY: 1\r\n"), CA); /* header names are case-insensitive */
    assert_routed(c, req(buf, "GET", "/", "x-canary: 10\r\n"), ST);
    assert_routed(c, req(buf, "GET", "/", "x-canary: 0\r\n"), ST);
    assert_routed(c, req(buf, "GET", "/", "x-canary: \r\n"), ST);

    /* a header route wins whatever the weights */
    ctl(env, "set", "weight", "50");
    int n[NV] = {0};
    split(env, req(buf, "GET", "/", "x-canary: 1\r\n"), 200, n, NULL);
    assert_int_equal(n[CA], 200);
    ctl(env, "set", "weight", "100");
    ctl(env, "set", "header-route", "pin", "to", "stable", "header", "x-pin", "exact", "yes");
    int m[NV] = {0};
    split(env, req(buf, "GET", "/", "x-pin: yes\r\n"), 200, m, NULL);
    assert_int_equal(m[ST], 200);
    assert_routed(c, req(buf, "GET", "/", ""), CA);
    th_weir_stop(env);
}

static void test_route_cookie_condition(void **state)
{
    th_env_t *env = *state;
    start(env, false, NULL);
    th_conn_t *c = th_conn_open(env->port);
    char buf[REQ_MAX];
    ctl(env, "set", "header-route", "beta", "header", "cookie:beta", "exact", "yes");
    assert_routed(c, req(buf, "GET", "/", "Cookie: beta=yes\r\n"), CA);
    assert_routed(c, req(buf, "GET", "/", "Cookie: a=1; beta=yes; c=2\r\n"), CA);
    assert_routed(c, req(buf, "GET", "/", "Cookie: a=1; beta=yes\r\n"), CA);
    assert_routed(c, req(buf, "GET", "/", "Cookie: beta=no\r\n"), ST);
    assert_routed(c, req(buf, "GET", "/", "Cookie: beta=yesno\r\n"), ST);
    assert_routed(c, req(buf, "GET", "/", "Cookie: xbeta=yes\r\n"), ST);
    assert_routed(c, req(buf, "GET", "/", "Cookie: betax=yes\r\n"), ST);
    assert_routed(c, req(buf, "GET", "/", "beta: yes\r\n"), ST); /* a header of that name is not the cookie */
    assert_routed(c, req(buf, "GET", "/", ""), ST);

    ctl(env, "set", "header-route", "group", "header", "cookie:group", "prefix", "beta-");
    assert_routed(c, req(buf, "GET", "/", "Cookie: group=beta-7\r\n"), CA);
    assert_routed(c, req(buf, "GET", "/", "Cookie: group=alpha-7\r\n"), ST);
    th_weir_stop(env);
}

static void test_route_path_and_method(void **state)
{
    th_env_t *env = *state;
    start(env, false, NULL);
    th_conn_t *c = th_conn_open(env->port);
    char buf[REQ_MAX];
    ctl(env, "set", "header-route", "api", "path", "prefix", "/api/");
    ctl(env, "set", "header-route", "ver", "path", "regex", "/v[0-9]+/[a-z]+");
    ctl(env, "set", "header-route", "one", "path", "exact", "/exact");
    ctl(env, "set", "header-route", "writes", "method", "POST,PUT");
    ctl(env, "set", "header-route", "all3", "method", "GET", "path", "prefix", "/both", "header", "x-both", "exact",
        "1");

    static const struct {
        const char *method, *target, *extra;
        int want;
    } cases[] = {
        {"GET", "/api/x", "", CA},
        {"GET", "/api/", "", CA},
        {"GET", "/api/x?y=1", "", CA},
        {"GET", "/api", "", ST},
        {"GET", "/apix", "", ST},
        {"GET", "/api?to=/api/", "", ST}, /* the query is not part of the path */
        {"GET", "/v2/items", "", CA},
        {"GET", "/v10/a", "", CA},
        {"GET", "/v2/items?page=2", "", CA},
        {"GET", "/x/v2/items", "", ST}, /* the regex must match the whole path: anchored at the start */
        {"GET", "/v2/items/3", "", ST}, /* ... and at the end */
        {"GET", "/v2/", "", ST},
        {"GET", "/vx/items", "", ST},
        {"GET", "/exact", "", CA},
        {"GET", "/exact?q=1", "", CA},
        {"GET", "/exact/", "", ST},
        {"GET", "/exactly", "", ST},
        {"POST", "/", "", CA},
        {"PUT", "/", "", CA},
        {"GET", "/", "", ST},
        {"DELETE", "/", "", ST},
        {"GET", "/both", "x-both: 1\r\n", CA},
        {"GET", "/both/x", "x-both: 1\r\n", CA},
        {"GET", "/both", "", ST},                 /* all conditions of a route must hold */
        {"GET", "/other", "x-both: 1\r\n", ST},   /* ... the path too */
        {"DELETE", "/both", "x-both: 1\r\n", ST}, /* ... and the method */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_routed(c, req(buf, cases[i].method, cases[i].target, cases[i].extra), cases[i].want);
    th_weir_stop(env);
}

static void test_route_order_and_to(void **state)
{
    th_env_t *env = *state;
    start(env, true, NULL);
    th_conn_t *c = th_conn_open(env->port);
    char buf[REQ_MAX];
    const char *one = req(buf, "GET", "/", "x-t: 1\r\n");
    char buf2[REQ_MAX];
    const char *twelve = req(buf2, "GET", "/", "x-t: 12\r\n");

    ctl(env, "set", "header-route", "first", "to", "exp", "header", "x-t", "exact", "1");
    ctl(env, "set", "header-route", "second", "header", "x-t", "prefix", "1");
    for (int i = 0; i < 20; i++) {
        assert_routed(c, one, EX); /* both match: the first set wins */
        assert_routed(c, twelve, CA);
    }
    /* setting a route again replaces it in its place: still first */
    ctl(env, "set", "header-route", "first", "to", "stable", "header", "x-t", "exact", "1");
    assert_routed(c, one, ST);
    assert_routed(c, twelve, CA);

    /* a route to an undeclared variant is refused and changes nothing */
    ctl_refused(env, "set", "header-route", "third", "to", "nosuch", "header", "x-t", "exact", "3");
    char *routes = ctl(env, "show", "routes");
    char *line[8];
    assert_int_equal(lines(routes, line, 8), 2);

    ctl(env, "del", "route", "first");
    assert_routed(c, one, CA);
    ctl(env, "del", "route", "second");
    assert_routed(c, one, ST);
    assert_routed(c, twelve, ST);
    th_weir_stop(env);
}

static void test_routes_show_and_del(void **state)
{
    th_env_t *env = *state;
    start(env, true, NULL);
    th_conn_t *c = th_conn_open(env->port);
    char buf[REQ_MAX];
    static const char *const names[] = {"zeta", "alpha", "mid", "team", "cook"};
    ctl(env, "set", "header-route", "zeta", "header", "x-z", "exact", "1");
    ctl(env, "set", "header-route", "alpha", "to", "exp", "path", "regex", "/a[0-9]+", "method", "GET,HEAD");
    ctl(env, "set", "header-route", "mid", "path", "prefix", "/mid/");
    ctl(env, "set", "header-route", "team", "header", "x-team", "exact", "blue team \"b\"");
    ctl(env, "set", "header-route", "cook", "to", "exp", "header", "cookie:c", "prefix", "v");
    ctl(env, "set", "header-route", "zeta", "header", "x-z", "exact", "2"); /* replaced, keeps its place */

    char *shown = ctl(env, "show", "routes");
    char *copy = th_strdup(shown);
    char *line[16];
    int n = lines(copy, line, 16);
    assert_int_equal(n, 5);
    char *tok[5][32];
    int ntok[5];
    for (int i = 0; i < n; i++) {
        ntok[i] = tokenize(line[i], tok[i], 32);
        if (ntok[i] < 4 || strcmp(tok[i][0], "set") != 0 || strcmp(tok[i][1], "header-route") != 0 ||
            strcmp(tok[i][2], names[i]) != 0)
            fail_msg("`show routes` line %d is \"%s\", want `set header-route %s ...` (set order)", i, line[i],
                     names[i]);
    }

    const char *z2 = "x-z: 2\r\n", *team = "x-team: blue team \"b\"\r\n";
    assert_routed(c, req(buf, "GET", "/", z2), CA);
    assert_routed(c, req(buf, "GET", "/", "x-z: 1\r\n"), ST);
    assert_routed(c, req(buf, "GET", "/a12", ""), EX);
    assert_routed(c, req(buf, "HEAD", "/a12", ""), EX);
    assert_routed(c, req(buf, "GET", "/a12b", ""), ST);
    assert_routed(c, req(buf, "POST", "/a12", ""), ST);
    assert_routed(c, req(buf, "GET", "/mid/x", ""), CA);
    assert_routed(c, req(buf, "GET", "/", team), CA);
    assert_routed(c, req(buf, "GET", "/", "x-team: blue team\r\n"), ST);
    assert_routed(c, req(buf, "GET", "/", "Cookie: c=v1\r\n"), EX);

    /* deleting a route gives its requests back to the weights (canary 0 here) */
    ctl(env, "del", "route", "mid");
    assert_routed(c, req(buf, "GET", "/mid/x", ""), ST);
    ctl_refused(env, "del", "route", "mid");
    ctl(env, "del", "routes");
    assert_string_equal(ctl(env, "show", "routes"), "");
    assert_routed(c, req(buf, "GET", "/", z2), ST);
    assert_routed(c, req(buf, "GET", "/a12", ""), ST);
    assert_routed(c, req(buf, "GET", "/", team), ST);
    assert_routed(c, req(buf, "GET", "/", "Cookie: c=v1\r\n"), ST);

    /* each line of `show routes` is the request that sets that route: replaying them restores the same list */
    for (int i = 0; i < n; i++) {
        th_run_t r;
        char *argv[40] = {(char *)th_weirctl_bin(), "-s", env->sock};
        for (int t = 0; t < ntok[i]; t++)
            argv[3 + t] = tok[i][t];
        argv[3 + ntok[i]] = NULL;
        th_run(env, &r, argv);
        if (r.status != 0)
            fail_msg("replaying `%s` failed (%d): %s", line[i], r.status, r.err);
    }
    assert_string_equal(ctl(env, "show", "routes"), shown);
    assert_routed(c, req(buf, "GET", "/", z2), CA);
    assert_routed(c, req(buf, "GET", "/a12", ""), EX);
    assert_routed(c, req(buf, "GET", "/mid/x", ""), CA);
    assert_routed(c, req(buf, "GET", "/", team), CA);
    th_weir_stop(env);
}

/* --- x-weir-variant ------------------------------------------------------------------------------------------- */

static void test_variant_header(void **state)
{
    th_env_t *env = *state;
    start(env, true, "--variant-header", "on", "--weight", "canary", "50", NULL);
    ctl(env, "set", "header-route", "e", "to", "exp", "header", "x-exp", "exact", "1");
    th_conn_t *c = th_conn_open(env->port);
    char buf[REQ_MAX];
    th_resp_t r = {0};
    int n[NV] = {0};
    for (int i = 0; i < 300; i++) {
        const char *raw = req(buf, "GET", i % 3 ? "/" : "/echo", i % 10 == 0 ? "x-exp: 1\r\n" : "");
        int v = ask_resp(c, raw, &r);
        n[v]++;
        const char *h = th_header(&r, "x-weir-variant");
        if (th_header_count(&r, "x-weir-variant") != 1 || strcmp(h, vname[v]) != 0)
            fail_msg("response %d from %s carries %d x-weir-variant, first %s", i, vname[v],
                     th_header_count(&r, "x-weir-variant"), h ? h : "(none)");
    }
    assert_int_equal(n[EX], 30);
    assert_binomial(n[CA], 270, 0.5, "canary share of requests without x-exp");
    th_weir_stop(env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_split_5_flag, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_split_50_flag, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_split_ctl, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_weight_0_and_100, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_three_way_split, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_sticky_rollout, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_sticky_buckets_follow_contract, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_sticky_salt_new_cohort, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_sticky_set_cookie, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_sticky_cookie_without_set_cookie, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_header_route_exact, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_route_cookie_condition, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_route_path_and_method, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_route_order_and_to, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_routes_show_and_del, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_variant_header, th_setup, th_teardown),
    };
    th_filter_from_env();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
