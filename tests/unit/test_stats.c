/* Counters of SPEC §5 (proxy/stats.c): sums over workers, the `show stats` text, the /stats JSON and /metrics
 * renderings for known inputs, the per-second window, percentiles, reset baselines and the route registry.
 * proxy/stats.c is not among the objects unit tests link, so it is included here; two fake workers carry the
 * counters (their only field the readers use is <stats>), and the readers' clock is replaced. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../proxy/stats.c"
#include "rt/alloc.h"
#include "th_json.h"

px_server_t px_server;

#define NW 2
#define MS 1000000ull /* ns per ms */
static px_worker_t workers[NW];
static rt_table_t *table;
static uint64_t fake_now; /* the readers' clock, ms */

static uint64_t fake_clock(void)
{
    return fake_now;
}

static px_stats_t *W(unsigned i)
{
    return workers[i].stats;
}

static void set_weights(uint32_t canary_bp, uint64_t gen)
{
    const char *names[] = {"canary"};
    const char *err = NULL;

    assert_int_equal(rt_table_set_weights(table, names, &canary_bp, 1, &err), 0);
    rt_table_set_generation(table, gen);
}

static int setup(void **state)
{
    unsigned i;
    (void)state;

    memset(&px_server, 0, sizeof(px_server));
    memset(workers, 0, sizeof(workers));
    px_server.variants[0].name = "canary";
    px_server.variants[1].name = "stable";
    px_server.nvariants = 2;
    px_server.workers = workers;
    px_server.nworkers = NW;
    for (i = 0; i < NW; i++)
        assert_non_null(workers[i].stats = px_stats_new(2));
    table = rt_table_new();
    assert_non_null(table);
    atomic_store(&px_server.table, table);
    clock_ms = fake_clock;
    fake_now = 0;
    have_base = 0;
    atomic_store(&nroutes, 0);
    atomic_store(&route_overflow, 0);
    return 0;
}

static int teardown(void **state)
{
    unsigned i;
    (void)state;

    for (i = 0; i < NW; i++)
        px_stats_free(workers[i].stats);
    rt_table_free(table);
    return 0;
}

/* Renders with <fn> into a fresh buffer; the caller frees the string. */
static char *render_text(void)
{
    rt_buf_t b = RT_BUF_INIT;
    px_stats_text(&b);
    assert_non_null(b.p);
    return b.p;
}

static char *render_json(unsigned window_s)
{
    rt_buf_t b = RT_BUF_INIT;
    px_stats_json(&b, window_s);
    assert_non_null(b.p);
    return b.p;
}

static char *render_prom(void)
{
    rt_buf_t b = RT_BUF_INIT;
    px_stats_prometheus(&b);
    assert_non_null(b.p);
    return b.p;
}

/* The number after "<key>": within the object that follows "<scope>" (the first occurrence of each). */
static double json_num(const char *doc, const char *scope, const char *key)
{
    char k[64];
    const char *p = strstr(doc, scope);

    assert_non_null(p);
    snprintf(k, sizeof(k), "\"%s\": ", key);
    p = strstr(p, k);
    assert_non_null(p);
    return strtod(p + strlen(k), NULL);
}

/* ---- a checker of the Prometheus text format 0.0.4 as promtool reads it ---- */

/* Every line is "# HELP", "# TYPE" or a sample; each family has HELP then TYPE exactly once, before its samples;
 * samples belong to the family declared last (histograms: _bucket/_sum/_count); label values are quoted with
 * valid escapes; values parse as floats. Returns the number of samples. */
static int prom_check(const char *text)
{
    char family[128] = "", type[32] = "", seen[64][128];
    int nseen = 0, nsamples = 0;
    const char *p = text;

    while (*p != '\0') {
        const char *eol = strchr(p, '\n');
        char line[1024];
        assert_non_null(eol);
        assert_true((size_t)(eol - p) < sizeof(line));
        memcpy(line, p, (size_t)(eol - p));
        line[eol - p] = '\0';
        p = eol + 1;
        assert_true(line[0] != '\0');
        if (strncmp(line, "# HELP ", 7) == 0) {
            char name[128];
            assert_int_equal(sscanf(line + 7, "%127s", name), 1);
            for (int i = 0; i < nseen; i++)
                assert_string_not_equal(seen[i], name);
            assert_true(nseen < 64);
            strcpy(seen[nseen++], name);
            strcpy(family, name);
            type[0] = '\0';
            assert_true(strlen(line + 7) > strlen(name) + 1); /* a help text follows */
        } else if (strncmp(line, "# TYPE ", 7) == 0) {
            char name[128], t[32];
            assert_int_equal(sscanf(line + 7, "%127s %31s", name, t), 2);
            assert_string_equal(name, family);
            assert_string_equal(type, "");
            assert_true(strcmp(t, "counter") == 0 || strcmp(t, "gauge") == 0 || strcmp(t, "histogram") == 0);
            strcpy(type, t);
        } else {
            char *q = line, *name_end, *end;
            size_t flen = strlen(family);
            assert_true(line[0] != '#');
            assert_string_not_equal(type, "");
            name_end = q + strcspn(q, "{ ");
            if (strcmp(type, "histogram") == 0) {
                assert_true(strncmp(q, family, flen) == 0);
                assert_true((size_t)(name_end - q) == flen + 7 || (size_t)(name_end - q) == flen + 4 ||
                            (size_t)(name_end - q) == flen + 6);
                assert_true(strncmp(q + flen, "_bucket", 7) == 0 || strncmp(q + flen, "_sum", 4) == 0 ||
                            strncmp(q + flen, "_count", 6) == 0);
            } else {
                assert_true((size_t)(name_end - q) == flen && strncmp(q, family, flen) == 0);
            }
            q = name_end;
            if (*q == '{') {
                q++;
                while (*q != '}') {
                    while ((*q >= 'a' && *q <= 'z') || *q == '_')
                        q++;
                    assert_true(q[0] == '=' && q[1] == '"');
                    q += 2;
                    while (*q != '"') {
                        assert_true(*q != '\0');
                        if (*q == '\\') {
                            q++;
                            assert_true(*q == '\\' || *q == '"' || *q == 'n');
                        }
                        q++;
                    }
                    q++;
                    if (*q == ',')
                        q++;
                    else
                        assert_int_equal(*q, '}');
                }
                q++;
            }
            assert_int_equal(*q, ' ');
            q++;
            if (strcmp(q, "+Inf") != 0) {
                strtod(q, &end);
                assert_true(end != q && *end == '\0');
            }
            nsamples++;
        }
    }
    return nsamples;
}

/* The output without the _bucket lines (they are checked apart). */
static char *without_buckets(const char *text)
{
    char *out = malloc(strlen(text) + 1), *o = out;
    const char *p = text;

    assert_non_null(out);
    while (*p != '\0') {
        const char *eol = strchr(p, '\n');
        size_t n = (size_t)(eol - p) + 1;
        if (strncmp(p, "weir_request_duration_seconds_bucket{", 37) != 0) {
            memcpy(o, p, n);
            o += n;
        }
        p += n;
    }
    *o = '\0';
    return out;
}

/* The value of the sample line that starts with <series>, or -1 when there is none. */
static double sample(const char *text, const char *series)
{
    char key[256];
    const char *p;

    snprintf(key, sizeof(key), "\n%s ", series);
    p = strstr(text, key);
    return p ? strtod(p + strlen(key), NULL) : -1;
}

/* ---- tests ---- */

static void test_bounds(void **state)
{
    (void)state;
    /* le is inclusive: a duration equal to a bound falls in that bucket */
    assert_int_equal(bucket_of(0), 0);
    assert_int_equal(bucket_of(100000), 0);
    assert_int_equal(bucket_of(100001), 1);
    assert_int_equal(bucket_of(2 * MS), 8);
    assert_int_equal(bucket_of(60000 * MS), NB - 2);
    assert_int_equal(bucket_of(60000 * MS + 1), NB - 1);
    assert_int_equal(bucket_of(UINT64_MAX), NB - 1);
    /* the le labels say the same as the bounds in ns, and grow */
    for (unsigned i = 0; i + 1 < NB; i++) {
        double le = strtod(bound_le[i], NULL);
        assert_true(le * 1e9 > (double)bound_ns[i] - 0.5 && le * 1e9 < (double)bound_ns[i] + 0.5);
        if (i > 0)
            assert_true(bound_ns[i] > bound_ns[i - 1]);
    }
    assert_string_equal(bound_le[NB - 1], "+Inf");
}

static void test_text_sums_workers(void **state)
{
    (void)state;
    for (int i = 0; i < 3; i++)
        px_stats_response(W(0), 0, PX_STATS_WEIGHTED, 200, MS, 5000);
    px_stats_response(W(1), 0, PX_STATS_WEIGHTED, 200, MS, 5000);
    px_stats_response(W(1), 0, PX_STATS_WEIGHTED, 204, MS, 5000);
    px_stats_response(W(1), 0, PX_STATS_WEIGHTED, 302, MS, 5000);
    px_stats_response(W(0), 1, PX_STATS_WEIGHTED, 404, MS, 5000);
    px_stats_response(W(1), 1, PX_STATS_WEIGHTED, 503, MS, 5000);
    px_stats_response(W(1), 1, PX_STATS_WEIGHTED, 101, MS, 5000); /* counted in requests, in no class */
    px_stats_response(W(0), PX_STATS_NO_VARIANT, PX_STATS_WEIGHTED, 400, MS, 5000);

    char *t = render_text();
    assert_string_equal(t, "ok\n"
                           "canary requests=6 2xx=5 3xx=1 4xx=0 5xx=0\n"
                           "stable requests=3 2xx=0 3xx=0 4xx=1 5xx=1\n"
                           "\n");
    free(t);
}

static void test_text_appends(void **state)
{
    rt_buf_t b = RT_BUF_INIT;
    (void)state;

    assert_int_equal(rt_buf_puts(&b, "prefix\n"), 0);
    px_stats_text(&b);
    assert_string_equal(b.p, "prefix\nok\ncanary requests=0 2xx=0 3xx=0 4xx=0 5xx=0\n"
                             "stable requests=0 2xx=0 3xx=0 4xx=0 5xx=0\n\n");
    rt_buf_dispose(&b);
}

static void test_json_exact(void **state)
{
    (void)state;
    set_weights(1000, 7);
    px_server.start_ms = 1000;
    fake_now = 13500;
    px_stats_response(W(0), 0, PX_STATS_WEIGHTED, 200, 2 * MS, 13000);
    px_stats_response(W(1), 0, PX_STATS_WEIGHTED, 200, 2 * MS, 13000);
    px_stats_response(W(1), 0, PX_STATS_WEIGHTED, 200, 2 * MS, 13400);
    px_stats_response(W(0), 0, PX_STATS_WEIGHTED, 503, 10 * MS, 12000);
    px_stats_response(W(0), 1, PX_STATS_WEIGHTED, 200, MS / 2, 13000);
    px_stats_response(W(1), 1, PX_STATS_WEIGHTED, 200, MS / 2, 13000);
    /* a developer's request that a header route sent to the canary: in the totals, not in "weighted" */
    px_stats_response(W(1), 0, (int)px_stats_route_slot("dev"), 500, 3 * MS, 13200);

    char *j = render_json(0);
    assert_string_equal(j, "{\"generation\": 7, \"uptime_seconds\": 12.5, \"window_seconds\": 60, "
                           "\"weights\": {\"canary\": 10.00, \"stable\": 90.00}, \"variants\": {"
                           "\"canary\": {\"requests\": 5, \"codes\": {\"200\": 3, \"500\": 1, \"503\": 1}, "
                           "\"window\": {\"requests\": 5, \"2xx\": 3, \"3xx\": 0, \"4xx\": 0, \"5xx\": 2, "
                           "\"error_rate\": 0.4, \"p50_ms\": 1.917, \"p90_ms\": 8.5, \"p99_ms\": 9.85}, "
                           "\"weighted\": {\"requests\": 4, \"codes\": {\"200\": 3, \"503\": 1}, "
                           "\"window\": {\"requests\": 4, \"2xx\": 3, \"3xx\": 0, \"4xx\": 0, \"5xx\": 1, "
                           "\"error_rate\": 0.25, \"p50_ms\": 1.833, \"p90_ms\": 8.8, \"p99_ms\": 9.88}}}, "
                           "\"stable\": {\"requests\": 2, \"codes\": {\"200\": 2}, "
                           "\"window\": {\"requests\": 2, \"2xx\": 2, \"3xx\": 0, \"4xx\": 0, \"5xx\": 0, "
                           "\"error_rate\": 0, \"p50_ms\": 0.4, \"p90_ms\": 0.48, \"p99_ms\": 0.498}, "
                           "\"weighted\": {\"requests\": 2, \"codes\": {\"200\": 2}, "
                           "\"window\": {\"requests\": 2, \"2xx\": 2, \"3xx\": 0, \"4xx\": 0, \"5xx\": 0, "
                           "\"error_rate\": 0, \"p50_ms\": 0.4, \"p90_ms\": 0.48, \"p99_ms\": 0.498}}}}}");
    assert_true(th_json_valid(j));
    free(j);

    /* an explicit window; the configured one when 0 */
    j = render_json(5);
    assert_true(th_json_valid(j));
    assert_non_null(strstr(j, "\"window_seconds\": 5,"));
    free(j);
    px_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.stats_window_ms = 30000;
    px_server.cfg = &cfg;
    j = render_json(0);
    assert_non_null(strstr(j, "\"window_seconds\": 30,"));
    free(j);
    px_server.cfg = NULL;
}

static void test_json_mirror_and_escaping(void **state)
{
    (void)state;
    fake_now = 2000;
    px_stats_mirror_response(W(0), 0, 200);
    px_stats_mirror_response(W(1), 0, 200);
    px_stats_mirror_response(W(1), 0, 500);
    px_stats_mirror_response(W(1), 0, 503);
    px_stats_mirror_mismatch(W(1), 0, 2000);
    px_stats_mirror_dropped(W(0), 0, PX_DROP_OVERLOAD);
    px_stats_mirror_dropped(W(0), 0, PX_DROP_OVERLOAD);
    px_stats_mirror_dropped(W(1), 0, PX_DROP_ERROR);

    char *j = render_json(60);
    assert_true(th_json_valid(j));
    assert_non_null(strstr(j, "\"p99_ms\": 0}}, \"mirror\": {\"requests\": 4, \"codes\": {\"200\": 2, \"500\": 1, "
                              "\"503\": 1}, \"dropped\": {\"overload\": 2, \"error\": 1}, \"mismatches\": 1, "
                              "\"mismatch_rate\": 0.25, \"window\": {\"mismatches\": 1}}}, \"stable\": {"));
    /* stable had no copies: no mirror object */
    assert_null(strstr(strstr(j, "\"stable\": {\"requests\""), "mirror"));
    free(j);

    /* names are escaped even though variant names never need it */
    px_server.variants[1].name = "a\"b\\c\n";
    j = render_json(60);
    assert_true(th_json_valid(j));
    assert_non_null(strstr(j, "\"a\\\"b\\\\c\\u000a\": {"));
    free(j);
}

/* Sets up the input of test_prometheus_exact across both workers. */
static void prom_input(void)
{
    set_weights(500, 3);
    px_stats_response(W(0), 0, PX_STATS_WEIGHTED, 200, MS, 1000);
    px_stats_response(W(1), 0, PX_STATS_WEIGHTED, 200, MS, 1000);
    px_stats_proxy_error(W(1), 0, PX_ERR_CONNECT);
    px_stats_response(W(1), 0, PX_STATS_WEIGHTED, 502, 3 * MS, 1000);
    px_stats_response(W(0), 1, PX_STATS_WEIGHTED, 404, MS / 10, 1000);
    px_stats_response(W(1), PX_STATS_NO_VARIANT, PX_STATS_WEIGHTED, 400, MS / 20, 1000);
    px_stats_mirror_response(W(0), 1, 200);
    px_stats_mirror_response(W(1), 1, 200);
    px_stats_mirror_dropped(W(1), 1, PX_DROP_OVERLOAD);
    px_stats_mirror_mismatch(W(0), 1, 1000);
    unsigned slot = px_stats_route_slot("beta");
    for (int i = 0; i < 3; i++)
        px_stats_route_match(W(i % 2), slot);
    atomic_store(&px_server.ndownstream, 4);
    atomic_store(&workers[0].nupconns, 2);
    atomic_store(&workers[1].nupconns, 3);
}

static const char prom_expected[] =
    "# HELP weir_requests_total Responses sent to clients, proxy-made ones included.\n"
    "# TYPE weir_requests_total counter\n"
    "weir_requests_total{variant=\"canary\",code=\"200\"} 2\n"
    "weir_requests_total{variant=\"canary\",code=\"502\"} 1\n"
    "weir_requests_total{variant=\"stable\",code=\"404\"} 1\n"
    "weir_requests_total{variant=\"none\",code=\"400\"} 1\n"
    "# HELP weir_request_duration_seconds Time from a request's start to its last response byte.\n"
    "# TYPE weir_request_duration_seconds histogram\n"
    "weir_request_duration_seconds_sum{variant=\"canary\"} 0.005\n"
    "weir_request_duration_seconds_count{variant=\"canary\"} 3\n"
    "weir_request_duration_seconds_sum{variant=\"stable\"} 0.0001\n"
    "weir_request_duration_seconds_count{variant=\"stable\"} 1\n"
    "weir_request_duration_seconds_sum{variant=\"none\"} 0.00005\n"
    "weir_request_duration_seconds_count{variant=\"none\"} 1\n"
    "# HELP weir_proxy_errors_total Requests weir answered itself or gave up on, by reason.\n"
    "# TYPE weir_proxy_errors_total counter\n"
    "weir_proxy_errors_total{variant=\"canary\",reason=\"connect\"} 1\n"
    "weir_proxy_errors_total{variant=\"canary\",reason=\"timeout\"} 0\n"
    "weir_proxy_errors_total{variant=\"canary\",reason=\"reset\"} 0\n"
    "weir_proxy_errors_total{variant=\"canary\",reason=\"no_endpoint\"} 0\n"
    "weir_proxy_errors_total{variant=\"canary\",reason=\"client_abort\"} 0\n"
    "weir_proxy_errors_total{variant=\"stable\",reason=\"connect\"} 0\n"
    "weir_proxy_errors_total{variant=\"stable\",reason=\"timeout\"} 0\n"
    "weir_proxy_errors_total{variant=\"stable\",reason=\"reset\"} 0\n"
    "weir_proxy_errors_total{variant=\"stable\",reason=\"no_endpoint\"} 0\n"
    "weir_proxy_errors_total{variant=\"stable\",reason=\"client_abort\"} 0\n"
    "weir_proxy_errors_total{variant=\"none\",reason=\"connect\"} 0\n"
    "weir_proxy_errors_total{variant=\"none\",reason=\"timeout\"} 0\n"
    "weir_proxy_errors_total{variant=\"none\",reason=\"reset\"} 0\n"
    "weir_proxy_errors_total{variant=\"none\",reason=\"no_endpoint\"} 0\n"
    "weir_proxy_errors_total{variant=\"none\",reason=\"client_abort\"} 0\n"
    "# HELP weir_mirror_requests_total Responses to mirrored copies, by status code.\n"
    "# TYPE weir_mirror_requests_total counter\n"
    "weir_mirror_requests_total{variant=\"stable\",code=\"200\"} 2\n"
    "# HELP weir_mirror_dropped_total Mirrored copies dropped, by reason.\n"
    "# TYPE weir_mirror_dropped_total counter\n"
    "weir_mirror_dropped_total{variant=\"canary\",reason=\"overload\"} 0\n"
    "weir_mirror_dropped_total{variant=\"canary\",reason=\"error\"} 0\n"
    "weir_mirror_dropped_total{variant=\"stable\",reason=\"overload\"} 1\n"
    "weir_mirror_dropped_total{variant=\"stable\",reason=\"error\"} 0\n"
    "weir_mirror_dropped_total{variant=\"none\",reason=\"overload\"} 0\n"
    "weir_mirror_dropped_total{variant=\"none\",reason=\"error\"} 0\n"
    "# HELP weir_mirror_mismatch_total Completed copies whose status class differs from the primary response's.\n"
    "# TYPE weir_mirror_mismatch_total counter\n"
    "weir_mirror_mismatch_total{variant=\"canary\"} 0\n"
    "weir_mirror_mismatch_total{variant=\"stable\"} 1\n"
    "weir_mirror_mismatch_total{variant=\"none\"} 0\n"
    "# HELP weir_route_matches_total Requests matched by each route.\n"
    "# TYPE weir_route_matches_total counter\n"
    "weir_route_matches_total{route=\"beta\"} 3\n"
    "# HELP weir_variant_weight_percent Share of weighted traffic sent to each variant.\n"
    "# TYPE weir_variant_weight_percent gauge\n"
    "weir_variant_weight_percent{variant=\"canary\"} 5.00\n"
    "weir_variant_weight_percent{variant=\"stable\"} 95.00\n"
    "# HELP weir_config_generation Generation of the routing state (bumped by every change).\n"
    "# TYPE weir_config_generation gauge\n"
    "weir_config_generation 3\n"
    "# HELP weir_connections Open connections: downstream from clients, upstream to variants.\n"
    "# TYPE weir_connections gauge\n"
    "weir_connections{side=\"downstream\"} 4\n"
    "weir_connections{side=\"upstream\"} 5\n"
    "# HELP weir_access_log_dropped_total Access log lines dropped: the log was too slow or failed.\n"
    "# TYPE weir_access_log_dropped_total counter\n"
    "weir_access_log_dropped_total 0\n";

static void test_prometheus_exact(void **state)
{
    (void)state;
    prom_input();
    char *m = render_prom();
    char *rest = without_buckets(m);

    assert_string_equal(rest, prom_expected);
    /* NB buckets per exported variant (canary, stable, none), plus the samples above */
    int nexpected = 0;
    for (const char *p = prom_expected; *p != '\0'; p = strchr(p, '\n') + 1)
        nexpected += *p != '#';
    assert_int_equal(prom_check(m), 3 * NB + nexpected);
    assert_int_equal(sample(m, "weir_request_duration_seconds_bucket{variant=\"canary\",le=\"0.0007\"}"), 0);
    assert_int_equal(sample(m, "weir_request_duration_seconds_bucket{variant=\"canary\",le=\"0.001\"}"), 2);
    assert_int_equal(sample(m, "weir_request_duration_seconds_bucket{variant=\"canary\",le=\"0.002\"}"), 2);
    assert_int_equal(sample(m, "weir_request_duration_seconds_bucket{variant=\"canary\",le=\"0.003\"}"), 3);
    assert_int_equal(sample(m, "weir_request_duration_seconds_bucket{variant=\"canary\",le=\"60\"}"), 3);
    assert_int_equal(sample(m, "weir_request_duration_seconds_bucket{variant=\"canary\",le=\"+Inf\"}"), 3);
    assert_int_equal(sample(m, "weir_request_duration_seconds_bucket{variant=\"stable\",le=\"0.0001\"}"), 1);
    assert_int_equal(sample(m, "weir_request_duration_seconds_bucket{variant=\"none\",le=\"0.0001\"}"), 1);
    /* buckets are cumulative, in order, and +Inf equals _count */
    for (int v = 0; v < 3; v++) {
        const char *name = v == 0 ? "canary" : v == 1 ? "stable" : "none";
        double prev = 0, x;
        char series[160];
        for (unsigned k = 0; k < NB; k++) {
            snprintf(series, sizeof(series), "weir_request_duration_seconds_bucket{variant=\"%s\",le=\"%s\"}", name,
                     bound_le[k]);
            x = sample(m, series);
            assert_true(x >= prev);
            prev = x;
        }
        snprintf(series, sizeof(series), "weir_request_duration_seconds_count{variant=\"%s\"}", name);
        assert_true(sample(m, series) == prev);
    }
    free(rest);
    free(m);
}

static void test_prometheus_idle(void **state)
{
    (void)state;
    /* nothing counted yet: no code series, no "none" row, histograms for every variant */
    char *m = render_prom();
    /* buckets, _sum and _count, reasons, mismatches, weights, generation, connections, access log drops */
    assert_int_equal(prom_check(m), 2 * (NB + 2) + 2 * PX_ERR_COUNT + 2 * PX_DROP_COUNT + 2 + 2 + 1 + 2 + 1);
    assert_null(strstr(m, "weir_requests_total{"));
    assert_null(strstr(m, "variant=\"none\""));
    assert_int_equal(sample(m, "weir_request_duration_seconds_count{variant=\"canary\"}"), 0);
    assert_int_equal(sample(m, "weir_request_duration_seconds_sum{variant=\"stable\"}"), 0);
    free(m);
}

static void test_window_forgets(void **state)
{
    win_t w;
    (void)state;

    for (int i = 0; i < 5; i++)
        px_stats_response(W(i % 2), 0, PX_STATS_WEIGHTED, 200, MS, 1000 * 1000 + 999);
    for (int i = 0; i < 3; i++)
        px_stats_response(W(0), 0, PX_STATS_WEIGHTED, 500, MS, 1030 * 1000);

    collect_window(0, 1030, 60, &w);
    assert_int_equal(w.c[W_REQ], 8);
    assert_int_equal(w.c[W_CLS + 3], 3);
    collect_window(0, 1030, 31, &w); /* seconds 1000..1030 */
    assert_int_equal(w.c[W_REQ], 8);
    collect_window(0, 1030, 30, &w); /* seconds 1001..1030 */
    assert_int_equal(w.c[W_REQ], 3);
    collect_window(0, 1030, 1, &w); /* the current second counts */
    assert_int_equal(w.c[W_REQ], 3);
    collect_window(0, 1059, 60, &w);
    assert_int_equal(w.c[W_REQ], 8);
    collect_window(0, 1060, 60, &w);
    assert_int_equal(w.c[W_REQ], 3);
    collect_window(0, 1090, 60, &w);
    assert_int_equal(w.c[W_REQ], 0);
    collect_window(1, 1030, 60, &w);
    assert_int_equal(w.c[W_REQ], 0);

    /* the slot of second 1000 is reused 300 s later and starts from zero */
    px_stats_response(W(0), 0, PX_STATS_WEIGHTED, 404, MS, 1300 * 1000);
    collect_window(0, 1300, 1, &w);
    assert_int_equal(w.c[W_REQ], 1);
    assert_int_equal(w.c[W_CLS + 2], 1);
    assert_int_equal(w.c[W_CLS], 0);

    /* the totals are not windowed */
    fake_now = 2000 * 1000;
    char *j = render_json(60);
    assert_true(th_json_valid(j));
    assert_int_equal(json_num(j, "\"canary\": {", "requests"), 9);
    assert_int_equal(json_num(j, "\"canary\": {\"requests\"", "window\": {\"requests"), 0);
    free(j);

    /* back at 1030 s: worker 0's second 1000 was overwritten by second 1300, which is not in this window (a stamp
     * past the reader's second counts only when it is one second ahead); worker 1's second 1000 still counts */
    fake_now = 1030 * 1000 + 500;
    j = render_json(60);
    assert_int_equal(json_num(j, "\"canary\": {\"requests\"", "window\": {\"requests"), 5);
    assert_int_equal(json_num(j, "\"canary\": {\"requests\"", "5xx"), 3);
    assert_int_equal(json_num(j, "\"canary\": {\"requests\"", "4xx"), 0);
    free(j);
}

static void test_window_in_json(void **state)
{
    (void)state;
    fake_now = 50 * 1000 + 10;
    for (int i = 0; i < 6; i++)
        px_stats_response(W(i % 2), 0, PX_STATS_WEIGHTED, i < 4 ? 200 : 503, MS, 20 * 1000);
    for (int i = 0; i < 2; i++)
        px_stats_response(W(i % 2), 0, PX_STATS_WEIGHTED, 503, MS, 50 * 1000);

    char *j = render_json(60);
    assert_int_equal(json_num(j, "\"canary\": {\"requests\"", "window\": {\"requests"), 8);
    assert_int_equal(json_num(j, "\"canary\": {\"requests\"", "5xx"), 4);
    assert_true(json_num(j, "\"canary\": {\"requests\"", "error_rate") == 0.5);
    free(j);
    j = render_json(10);
    assert_int_equal(json_num(j, "\"canary\": {\"requests\"", "window\": {\"requests"), 2);
    assert_true(json_num(j, "\"canary\": {\"requests\"", "error_rate") == 1);
    free(j);
    /* a window past the maximum is the maximum */
    j = render_json(100000);
    assert_non_null(strstr(j, "\"window_seconds\": 300,"));
    free(j);
}

/* Returns whether <got_ms> lies in the bucket of <truth_ms> or a neighbouring one. */
static int within_one_bucket(double got_ms, double truth_ms)
{
    int a = (int)bucket_of((uint64_t)(got_ms * 1e6)), b = (int)bucket_of((uint64_t)(truth_ms * 1e6));
    return a - b <= 1 && b - a <= 1;
}

static void test_percentiles(void **state)
{
    win_t w;
    (void)state;

    /* 1000 requests, 1..1000 ms: p50 500, p90 900, p99 990 */
    for (int i = 1; i <= 1000; i++)
        px_stats_response(W(i % 2), 0, PX_STATS_WEIGHTED, 200, (uint64_t)i * MS, 7000);
    collect_window(0, 7, 60, &w);
    assert_int_equal(w.c[W_REQ], 1000);
    double p50 = quantile_ms(&w.c[W_HIST], 0.5), p90 = quantile_ms(&w.c[W_HIST], 0.9),
           p99 = quantile_ms(&w.c[W_HIST], 0.99);
    assert_true(within_one_bucket(p50, 500));
    assert_true(within_one_bucket(p90, 900));
    assert_true(within_one_bucket(p99, 990));
    assert_true(p50 <= p90 && p90 <= p99);

    /* 99 fast requests and one slow one */
    for (int i = 0; i < 99; i++)
        px_stats_response(W(0), 1, PX_STATS_WEIGHTED, 200, 3 * MS / 10, 7000);
    px_stats_response(W(1), 1, PX_STATS_WEIGHTED, 200, 4000 * MS, 7000);
    collect_window(1, 7, 60, &w);
    assert_true(within_one_bucket(quantile_ms(&w.c[W_HIST], 0.5), 0.3));
    assert_true(within_one_bucket(quantile_ms(&w.c[W_HIST], 0.9), 0.3));
    assert_true(within_one_bucket(quantile_ms(&w.c[W_HIST], 0.99), 0.3));
    assert_true(within_one_bucket(quantile_ms(&w.c[W_HIST], 1.0), 4000));

    /* beyond the last bound: the largest finite bound; nothing: 0 */
    uint64_t h[NB] = {0};
    h[NB - 1] = 5;
    assert_true(quantile_ms(h, 0.5) == 60000);
    h[NB - 1] = 0;
    assert_true(quantile_ms(h, 0.99) == 0);
    /* one request: every percentile lies in its bucket */
    h[12] = 1; /* (7, 10] ms */
    assert_true(quantile_ms(h, 0.5) > 7 && quantile_ms(h, 0.99) <= 10);
}

static void test_reset(void **state)
{
    win_t w;
    (void)state;

    fake_now = 5000 * 1000 + 400;
    for (int i = 0; i < 4; i++)
        px_stats_response(W(i % 2), 0, PX_STATS_WEIGHTED, 200, MS, 4999 * 1000);
    for (int i = 0; i < 3; i++)
        px_stats_response(W(i % 2), 0, PX_STATS_WEIGHTED, 500, MS, 5000 * 1000);
    px_stats_route_match(W(0), px_stats_route_slot("r1"));
    px_stats_reset();

    char *t = render_text();
    assert_string_equal(t,
                        "ok\ncanary requests=0 2xx=0 3xx=0 4xx=0 5xx=0\nstable requests=0 2xx=0 3xx=0 4xx=0 5xx=0\n\n");
    free(t);
    collect_window(0, 5000, 60, &w);
    assert_int_equal(w.c[W_REQ], 0);
    char *m = render_prom();
    assert_int_equal(sample(m, "weir_route_matches_total{route=\"r1\"}"), 0);
    assert_null(strstr(m, "weir_requests_total{"));
    free(m);

    /* more in the reset's own second and in the next: only they count */
    px_stats_response(W(0), 0, PX_STATS_WEIGHTED, 503, MS, 5000 * 1000 + 700);
    px_stats_response(W(1), 0, PX_STATS_WEIGHTED, 200, MS, 5001 * 1000);
    fake_now = 5001 * 1000 + 1;
    t = render_text();
    assert_string_equal(t,
                        "ok\ncanary requests=2 2xx=1 3xx=0 4xx=0 5xx=1\nstable requests=0 2xx=0 3xx=0 4xx=0 5xx=0\n\n");
    free(t);
    collect_window(0, 5001, 60, &w);
    assert_int_equal(w.c[W_REQ], 2);
    assert_int_equal(w.c[W_CLS + 3], 1);
    char *j = render_json(60);
    assert_true(json_num(j, "\"canary\": {\"requests\"", "error_rate") == 0.5);
    free(j);

    /* the workers' own counters were not touched */
    assert_int_equal(LOAD(W(0)->rows[1][C_CODE + 100]), 2);
    assert_int_equal(LOAD(W(1)->rows[1][C_CODE + 100]), 3);

    /* a second reset starts from the new values */
    px_stats_reset();
    px_stats_response(W(1), 1, PX_STATS_WEIGHTED, 204, MS, 5001 * 1000);
    t = render_text();
    assert_string_equal(t,
                        "ok\ncanary requests=0 2xx=0 3xx=0 4xx=0 5xx=0\nstable requests=1 2xx=1 3xx=0 4xx=0 5xx=0\n\n");
    free(t);
    collect_window(1, 5001, 60, &w);
    assert_int_equal(w.c[W_REQ], 1);
    collect_window(0, 5001, 60, &w);
    assert_int_equal(w.c[W_REQ], 0);
}

static void test_routes(void **state)
{
    (void)state;
    unsigned a = px_stats_route_slot("alpha"), b = px_stats_route_slot("beta");

    assert_int_not_equal(a, b);
    assert_int_equal(px_stats_route_slot("alpha"), a);
    assert_string_equal(px_stats_route_name(a), "alpha");
    assert_string_equal(px_stats_route_name(b), "beta");
    assert_null(px_stats_route_name(b + 1));
    /* '~' may occur in a route name past its first character (Argo's NAME~N): such names get slots of their own */
    assert_int_equal(px_stats_route_slot("canary~1"), b + 1);
    assert_string_equal(px_stats_route_name(b + 1), "canary~1");
    assert_int_equal(px_stats_route_slot("x~other"), b + 2);
    assert_null(px_stats_route_name(b + 3));
    px_stats_route_match(W(0), a);
    px_stats_route_match(W(1), a);
    px_stats_route_match(W(1), b);
    px_stats_route_match(W(1), PX_STATS_ROUTES); /* out of range: ignored */

    char *m = render_prom();
    assert_int_equal(sample(m, "weir_route_matches_total{route=\"alpha\"}"), 2);
    assert_int_equal(sample(m, "weir_route_matches_total{route=\"beta\"}"), 1);
    assert_null(strstr(m, "route=\"" OTHER_ROUTE));
    free(m);

    /* past the limit, names share the last slot */
    char name[32];
    for (unsigned i = 4; i < PX_STATS_ROUTES - 1; i++) {
        snprintf(name, sizeof(name), "r%u", i);
        assert_int_equal(px_stats_route_slot(name), i);
    }
    assert_int_equal(px_stats_route_slot("one-too-many"), PX_STATS_ROUTES - 1);
    assert_int_equal(px_stats_route_slot("two-too-many"), PX_STATS_ROUTES - 1);
    assert_string_equal(px_stats_route_name(PX_STATS_ROUTES - 1), OTHER_ROUTE);
    assert_int_equal(px_stats_route_slot("alpha"), a);
    px_stats_route_match(W(0), PX_STATS_ROUTES - 1);
    m = render_prom();
    assert_int_equal(sample(m, "weir_route_matches_total{route=\"~other\"}"), 1);
    assert_int_equal(sample(m, "weir_route_matches_total{route=\"r254\"}"), 0);
    prom_check(m);
    free(m);
}

/* SPEC §5: responses a header route decided carry route="NAME" on weir_requests_total and the histogram; the series
 * without a route label count only the weight-decided ones; /stats totals hold both and "weighted" only the latter;
 * `show stats` counts every response. */
static void test_route_label(void **state)
{
    (void)state;
    unsigned dev = px_stats_route_slot("dev"), qa = px_stats_route_slot("qa"), idle = px_stats_route_slot("idle");
    px_stats_route_slot("never");

    fake_now = 3000;
    px_stats_response(W(0), 0, PX_STATS_WEIGHTED, 200, MS, 3000);
    px_stats_response(W(1), 0, PX_STATS_WEIGHTED, 200, MS, 3000);
    px_stats_response(W(0), 0, (int)dev, 500, 2 * MS, 3000);
    px_stats_response(W(1), 0, (int)dev, 500, 2 * MS, 3000);
    px_stats_response(W(1), 0, (int)dev, 200, 2 * MS, 3000);
    px_stats_response(W(0), 1, (int)qa, 404, MS / 10, 3000);
    px_stats_response(W(0), PX_STATS_NO_VARIANT, (int)dev, 400, MS / 10, 3000); /* no variant: no route either */
    (void)idle;

    char *m = render_prom();
    assert_int_equal(sample(m, "weir_requests_total{variant=\"canary\",code=\"200\"}"), 2);
    assert_int_equal(sample(m, "weir_requests_total{variant=\"canary\",code=\"500\"}"), -1);
    assert_int_equal(sample(m, "weir_requests_total{variant=\"canary\",route=\"dev\",code=\"500\"}"), 2);
    assert_int_equal(sample(m, "weir_requests_total{variant=\"canary\",route=\"dev\",code=\"200\"}"), 1);
    assert_int_equal(sample(m, "weir_requests_total{variant=\"stable\",route=\"qa\",code=\"404\"}"), 1);
    assert_int_equal(sample(m, "weir_requests_total{variant=\"stable\",code=\"404\"}"), -1);
    assert_int_equal(sample(m, "weir_requests_total{variant=\"none\",code=\"400\"}"), 1);
    assert_int_equal(sample(m, "weir_request_duration_seconds_count{variant=\"canary\"}"), 2);
    assert_int_equal(sample(m, "weir_request_duration_seconds_count{variant=\"canary\",route=\"dev\"}"), 3);
    assert_int_equal(sample(m, "weir_request_duration_seconds_bucket{variant=\"canary\",route=\"dev\",le=\"0.0015\"}"),
                     0);
    assert_int_equal(sample(m, "weir_request_duration_seconds_bucket{variant=\"canary\",route=\"dev\",le=\"0.002\"}"),
                     3);
    assert_int_equal(sample(m, "weir_request_duration_seconds_bucket{variant=\"canary\",route=\"dev\",le=\"+Inf\"}"),
                     3);
    assert_true(sample(m, "weir_request_duration_seconds_sum{variant=\"canary\",route=\"dev\"}") == 0.006);
    assert_int_equal(sample(m, "weir_request_duration_seconds_count{variant=\"stable\",route=\"qa\"}"), 1);
    /* a pair that never counted has no series: not the routes that decided nothing, not dev toward stable */
    assert_null(strstr(m, ",route=\"idle\""));
    assert_null(strstr(m, ",route=\"never\""));
    assert_null(strstr(m, "variant=\"stable\",route=\"dev\""));
    assert_null(strstr(m, "variant=\"canary\",route=\"qa\""));
    assert_null(strstr(m, "variant=\"none\",route="));
    /* label-less histograms for canary, stable and none, routed ones for (canary, dev) and (stable, qa); 3 route
     * code series, 2 label-less ones; 4 route-match series (every registered name); access log drops */
    assert_int_equal(prom_check(m), 5 * (NB + 2) + 3 + 2 + 3 * (PX_ERR_COUNT + PX_DROP_COUNT + 1) + 4 + 2 + 1 + 2 + 1);
    free(m);

    char *t = render_text();
    assert_string_equal(t,
                        "ok\ncanary requests=5 2xx=3 3xx=0 4xx=0 5xx=2\nstable requests=1 2xx=0 3xx=0 4xx=1 5xx=0\n\n");
    free(t);

    char *j = render_json(60);
    assert_true(th_json_valid(j));
    assert_non_null(strstr(j,
                           "\"canary\": {\"requests\": 5, \"codes\": {\"200\": 3, \"500\": 2}, \"window\": "
                           "{\"requests\": 5, \"2xx\": 3, \"3xx\": 0, \"4xx\": 0, \"5xx\": 2, \"error_rate\": 0.4, "));
    assert_non_null(strstr(j, "\"weighted\": {\"requests\": 2, \"codes\": {\"200\": 2}, \"window\": {\"requests\": 2, "
                              "\"2xx\": 2, \"3xx\": 0, \"4xx\": 0, \"5xx\": 0, \"error_rate\": 0, \"p50_ms\": 0.85, "));
    assert_non_null(strstr(j, "\"stable\": {\"requests\": 1, \"codes\": {\"404\": 1}, \"window\": {\"requests\": 1, "));
    assert_non_null(strstr(j,
                           "\"weighted\": {\"requests\": 0, \"codes\": {}, \"window\": {\"requests\": 0, \"2xx\": 0, "
                           "\"3xx\": 0, \"4xx\": 0, \"5xx\": 0, \"error_rate\": 0, \"p50_ms\": 0, \"p90_ms\": 0, "
                           "\"p99_ms\": 0}}}}}"));
    free(j);

    /* a reset zeroes the route series but keeps them; counting goes on from zero */
    px_stats_reset();
    m = render_prom();
    assert_int_equal(sample(m, "weir_request_duration_seconds_count{variant=\"canary\",route=\"dev\"}"), 0);
    assert_null(strstr(m, "weir_requests_total{"));
    free(m);
    px_stats_response(W(0), 0, (int)dev, 503, MS, 3000);
    m = render_prom();
    assert_int_equal(sample(m, "weir_requests_total{variant=\"canary\",route=\"dev\",code=\"503\"}"), 1);
    assert_int_equal(sample(m, "weir_request_duration_seconds_count{variant=\"canary\",route=\"dev\"}"), 1);
    free(m);
    j = render_json(60);
    assert_int_equal(json_num(j, "\"canary\": {", "requests"), 1);
    assert_int_equal(json_num(j, "\"canary\": {", "weighted\": {\"requests"), 0);
    free(j);
}

/* The route label's value is escaped, and the shared slot of routes past the limit is "~other". */
static void test_route_label_other_and_escaping(void **state)
{
    (void)state;
    px_server.variants[0].name = "ca\"n";
    px_stats_response(W(1), 0, PX_STATS_ROUTES - 1, 200, MS, 1000);
    px_stats_response(W(1), 0, PX_STATS_ROUTES, 200, MS, 1000); /* not a slot: weighted */
    char *m = render_prom();
    assert_int_equal(sample(m, "weir_requests_total{variant=\"ca\\\"n\",route=\"~other\",code=\"200\"}"), 1);
    assert_int_equal(sample(m, "weir_requests_total{variant=\"ca\\\"n\",code=\"200\"}"), 1);
    prom_check(m);
    free(m);
}

/* The window's two blocks: a header-routed response is in the totals' window only. */
static void test_window_blocks(void **state)
{
    win_t w;
    (void)state;
    unsigned dev = px_stats_route_slot("dev");

    px_stats_response(W(0), 0, PX_STATS_WEIGHTED, 200, MS, 40 * 1000);
    px_stats_response(W(1), 0, (int)dev, 503, MS, 40 * 1000);
    px_stats_response(W(1), 0, (int)dev, 503, MS, 41 * 1000);
    collect_window(0, 41, 60, &w);
    assert_int_equal(w.c[W_WEIGHTED + W_REQ], 1);
    assert_int_equal(w.c[W_WEIGHTED + W_CLS + 3], 0);
    assert_int_equal(w.c[W_ROUTED + W_REQ], 2);
    assert_int_equal(w.c[W_ROUTED + W_CLS + 3], 2);
    fake_now = 41 * 1000;
    char *j = render_json(60);
    assert_true(json_num(j, "\"canary\": {", "error_rate") > 0.66);
    assert_true(json_num(j, "\"weighted\": {", "error_rate") == 0);
    free(j);
}

static void test_ignores_bad_input(void **state)
{
    (void)state;
    px_stats_response(W(0), 0, PX_STATS_WEIGHTED, 99, MS, 1000);
    px_stats_response(W(0), 0, PX_STATS_WEIGHTED, 600, MS, 1000);
    px_stats_response(W(0), 2, PX_STATS_WEIGHTED, 200, MS, 1000);
    px_stats_response(W(0), -2, PX_STATS_WEIGHTED, 200, MS, 1000);
    px_stats_response(NULL, 0, PX_STATS_WEIGHTED, 200, MS, 1000);
    px_stats_proxy_error(W(0), 0, PX_ERR_COUNT);
    px_stats_proxy_error(NULL, 0, PX_ERR_CONNECT);
    px_stats_mirror_response(W(0), 5, 200);
    px_stats_mirror_dropped(W(0), 0, PX_DROP_COUNT);
    px_stats_mirror_mismatch(W(0), 7, 1000);
    px_stats_route_match(NULL, 0);
    assert_null(px_stats_new(RT_MAX_VARIANTS + 1));
    px_stats_free(NULL);

    fake_now = 1000;
    char *m = render_prom(), *t = render_text();
    assert_string_equal(t,
                        "ok\ncanary requests=0 2xx=0 3xx=0 4xx=0 5xx=0\nstable requests=0 2xx=0 3xx=0 4xx=0 5xx=0\n\n");
    assert_null(strstr(m, "} 1\n"));
    free(m);
    free(t);
}

/* A worker without counters (its allocation failed) and a process without workers are read as zeros. */
static void test_missing_workers(void **state)
{
    (void)state;
    px_stats_response(W(0), 0, PX_STATS_WEIGHTED, 200, MS, 1000);
    px_stats_free(workers[1].stats);
    workers[1].stats = NULL;
    char *t = render_text();
    assert_string_equal(t,
                        "ok\ncanary requests=1 2xx=1 3xx=0 4xx=0 5xx=0\nstable requests=0 2xx=0 3xx=0 4xx=0 5xx=0\n\n");
    free(t);
    px_stats_reset();
    px_server.workers = NULL;
    px_server.nworkers = 0;
    fake_now = 1000;
    char *j = render_json(0);
    assert_true(th_json_valid(j));
    free(j);
    px_server.workers = workers;
    px_server.nworkers = NW;
}

static size_t realloc_budget;
static void *failing_realloc(void *p, size_t n)
{
    if (n > realloc_budget)
        return NULL;
    return realloc(p, n);
}

/* Out of memory: nothing is appended rather than a truncated document. */
static void test_oom_appends_nothing(void **state)
{
    rt_allocator_t a = {malloc, calloc, failing_realloc, free};
    rt_buf_t b = RT_BUF_INIT;
    (void)state;

    prom_input();
    assert_int_equal(rt_buf_puts(&b, "keep"), 0);
    realloc_budget = 256;
    rt_set_allocator(&a);
    px_stats_prometheus(&b);
    assert_string_equal(b.p, "keep");
    px_stats_json(&b, 60);
    assert_string_equal(b.p, "keep");
    rt_set_allocator(NULL);
    rt_buf_dispose(&b);
}

/* Publishes <next> as the tables' readers see it, after telling the counters (as proxy/control.c does). */
static rt_table_t *publish_table(rt_table_t *next)
{
    static char names[RT_MAX_VARIANTS][PX_VARIANT_NAME_MAX + 1]; /* outlive the tables, as weir's interned ones */
    rt_table_t *cur = atomic_load(&px_server.table);
    unsigned v;

    px_stats_table_changing(cur, next);
    for (v = 0; v < rt_table_nvariants(next); v++) {
        if (rt_table_variant_name(next, v) != NULL) {
            strcpy(names[v], rt_table_variant_name(next, v));
            px_server.variants[v].name = names[v];
        }
    }
    px_server.nvariants = rt_table_nvariants(next);
    atomic_store(&px_server.table, next);
    if (cur != table)
        rt_table_free(cur);
    return next;
}

/* `del upstream exp1` takes exp1 out of every rendering, as it is out of `get weight`; a new variant given its slot
 * starts from zero: totals, window, route series. */
static void test_removed_and_reused_variant(void **state)
{
    (void)state;
    unsigned i, dev = px_stats_route_slot("dev");
    const char *err = NULL;
    char name[16];

    for (i = 0; i < NW; i++) {
        px_stats_free(workers[i].stats);
        assert_non_null(workers[i].stats = px_stats_new(RT_MAX_VARIANTS));
    }
    fake_now = 3000 * 1000;
    rt_table_t *t = rt_table_clone(table);
    assert_int_equal(rt_table_add_variant(t, "exp1"), 2);
    publish_table(t);
    px_stats_response(W(0), 2, PX_STATS_WEIGHTED, 200, MS, fake_now);
    px_stats_response(W(1), 2, PX_STATS_WEIGHTED, 500, MS, fake_now);
    px_stats_response(W(1), 2, (int)dev, 200, MS, fake_now);
    px_stats_mirror_dropped(W(0), 2, PX_DROP_ERROR);
    char *x = render_text();
    assert_non_null(strstr(x, "exp1 requests=3 2xx=2 3xx=0 4xx=0 5xx=1\n"));
    free(x);

    t = rt_table_clone(t);
    assert_int_equal(rt_table_del_variant(t, "exp1", &err), 0);
    publish_table(t);
    char *m = render_prom(), *j = render_json(60);
    x = render_text();
    assert_null(strstr(x, "exp1"));
    assert_string_equal(x,
                        "ok\ncanary requests=0 2xx=0 3xx=0 4xx=0 5xx=0\nstable requests=0 2xx=0 3xx=0 4xx=0 5xx=0\n\n");
    assert_null(strstr(j, "exp1"));
    assert_true(th_json_valid(j));
    assert_null(strstr(m, "exp1"));
    prom_check(m);
    free(x);
    free(j);
    free(m);

    /* a full table gives the removed slot to a new name */
    t = rt_table_clone(t);
    for (i = 3; i < RT_MAX_VARIANTS; i++) {
        snprintf(name, sizeof(name), "x%u", i);
        assert_int_equal(rt_table_add_variant(t, name), (int)i);
    }
    publish_table(t);
    t = rt_table_clone(t);
    assert_int_equal(rt_table_add_variant(t, "exp2"), 2);
    publish_table(t);
    x = render_text();
    assert_non_null(strstr(x, "\nexp2 requests=0 2xx=0 3xx=0 4xx=0 5xx=0\n"));
    free(x);
    j = render_json(60);
    assert_true(th_json_valid(j));
    assert_int_equal(json_num(j, "\"exp2\": {", "requests"), 0);
    assert_null(strstr(strstr(j, "\"exp2\": {"), "mirror"));
    assert_int_equal(json_num(strstr(j, "\"exp2\": {"), "\"window\"", "requests"), 0);
    free(j);
    m = render_prom();
    assert_null(strstr(m, "variant=\"exp2\",code="));
    assert_null(strstr(m, "variant=\"exp2\",route="));
    assert_int_equal(sample(m, "weir_request_duration_seconds_count{variant=\"exp2\"}"), 0);
    assert_int_equal(sample(m, "weir_mirror_dropped_total{variant=\"exp2\",reason=\"error\"}"), 0);
    assert_int_equal(sample(m, "weir_variant_weight_percent{variant=\"exp2\"}"), 0);
    prom_check(m);
    free(m);

    /* the new variant's own responses count from there */
    px_stats_response(W(0), 2, PX_STATS_WEIGHTED, 404, MS, fake_now);
    px_stats_response(W(0), 2, (int)dev, 200, MS, fake_now);
    x = render_text();
    assert_non_null(strstr(x, "\nexp2 requests=2 2xx=1 3xx=0 4xx=1 5xx=0\n"));
    free(x);
    j = render_json(60);
    assert_int_equal(json_num(strstr(j, "\"exp2\": {"), "\"window\"", "requests"), 2);
    free(j);
    m = render_prom();
    assert_int_equal(sample(m, "weir_requests_total{variant=\"exp2\",route=\"dev\",code=\"200\"}"), 1);
    free(m);
    t = atomic_load(&px_server.table);
    atomic_store(&px_server.table, table);
    rt_table_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bounds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_text_sums_workers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_text_appends, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_mirror_and_escaping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prometheus_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prometheus_idle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_window_forgets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_window_in_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_percentiles, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_routes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_route_label, setup, teardown),
        cmocka_unit_test_setup_teardown(test_route_label_other_and_escaping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_window_blocks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ignores_bad_input, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_workers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oom_appends_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_removed_and_reused_variant, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
