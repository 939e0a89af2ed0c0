/* Per-variant counters through the real binary (SPEC §5): /metrics values and format, the /stats window and its
 * ?window= parameter, `show stats` and `reset stats` on the control socket, 502 under the variant whose endpoint
 * is down, 499 for a client that leaves before its response, route matches and mirrored copies. One worker, so
 * every count is exact. The counters are updated when a request ends, which may be a moment after the client has
 * its last byte: tests poll for the expected total, then check every figure exactly. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"
#include "th_json.h"

/* ---- helpers ---- */

static void wait_admin(th_env_t *env)
{
    if (!th_wait_port(env->admin_port, TH_TIMEOUT_MS, &env->weir))
        fail_msg("admin port %d not open", env->admin_port);
}

/* The body of GET <path> on the admin listener (freed at teardown); fails unless the status is <want>. */
static char *admin_get(th_env_t *env, const char *path, int want, const char *want_ctype)
{
    th_resp_t r = {0};
    th_get(env->admin_port, path, &r);
    if (r.status != want)
        fail_msg("GET %s: status %d, want %d: %s", path, r.status, want, r.body);
    if (want_ctype != NULL) {
        const char *ct = th_header(&r, "content-type");
        assert_non_null(ct);
        assert_string_equal(ct, want_ctype);
    }
    char *body = th_strdup(r.body);
    th_resp_free(&r);
    return body;
}

static char *metrics(th_env_t *env)
{
    return admin_get(env, "/metrics", 200, "text/plain; version=0.0.4; charset=utf-8");
}

/* The value of the sample <series> (e.g. `weir_requests_total{variant="stable",code="200"}`) in <text>, or -1
 * when the series is absent. */
static double value_of(const char *text, const char *series)
{
    size_t n = strlen(series);
    const char *p = text;

    while ((p = strstr(p, series)) != NULL) {
        if ((p == text || p[-1] == '\n') && p[n] == ' ')
            return strtod(p + n + 1, NULL);
        p += n;
    }
    return -1;
}

#define assert_metric(text, series, want) assert_metric_at((text), (series), (want), __FILE__, __LINE__)
static void assert_metric_at(const char *text, const char *series, double want, const char *file, int line)
{
    double got = value_of(text, series);
    if (got != want) {
        print_error("ERROR: %s is %g, want %g\n--- /metrics ---\n%s\n", series, got, want, text);
        _fail(file, line);
    }
}

typedef struct wait_metric_s {
    th_env_t *env;
    const char *series;
    double want;
} wait_metric_t;

static bool metric_reached(void *arg)
{
    wait_metric_t *w = arg;
    th_resp_t r = {0};
    bool yes = th_try_get(w->env->admin_port, "/metrics", &r) == 0 && r.status == 200 &&
               value_of(r.body, w->series) == w->want;
    th_resp_free(&r);
    return yes;
}

/* Polls /metrics until <series> equals <want>; fails after TH_TIMEOUT_MS. */
#define wait_metric(env, series, want) wait_metric_at((env), (series), (want), __FILE__, __LINE__)
static void wait_metric_at(th_env_t *env, const char *series, double want, const char *file, int line)
{
    wait_metric_t w = {env, series, want};
    if (!th_poll(metric_reached, &w, TH_TIMEOUT_MS)) {
        char *m = metrics(env);
        print_error("ERROR: %s never reached %g\n--- /metrics ---\n%s\n", series, want, m);
        _fail(file, line);
    }
}

/* Sends <line> (with its "\n") on a fresh connection to the control socket and returns the reply up to and
 * including its blank line (freed at teardown). */
static char *ctl(th_env_t *env, const char *line)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct timespec t0, t;
    char buf[65536];
    size_t len = 0;
    int fd = -1;

    if (strlen(env->sock) >= sizeof(sa.sun_path))
        fail_msg("control socket path too long: %s", env->sock);
    memcpy(sa.sun_path, env->sock, strlen(env->sock) + 1);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) { /* the socket may appear a moment after the data port */
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(fd >= 0);
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
            break;
        close(fd);
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 > TH_TIMEOUT_MS)
            fail_msg("cannot connect to the control socket %s: %s", env->sock, strerror(errno));
        usleep(10000);
    }
    struct timeval tv = {.tv_sec = TH_TIMEOUT_MS / 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    assert_int_equal(write(fd, line, strlen(line)), (ssize_t)strlen(line));
    for (;;) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
        if (n <= 0)
            fail_msg("control reply to '%s' incomplete: %.*s", line, (int)len, buf);
        len += (size_t)n;
        buf[len] = '\0';
        if (len >= 2 && strcmp(buf + len - 2, "\n\n") == 0 && (len == 2 || strstr(buf, "\n\n") == buf + len - 2))
            break;
        assert_true(len < sizeof(buf) - 1);
    }
    close(fd);
    return th_strdup(buf);
}

static int start_stable(th_env_t *env)
{
    int u = th_upstream_start(env, "stable");
    th_weir_startl(env, "--stable", env->up[u].addr, NULL);
    wait_admin(env);
    return u;
}

static void get_status(th_env_t *env, int code, int times)
{
    char path[32];
    snprintf(path, sizeof(path), "/status/%d", code);
    for (int i = 0; i < times; i++) {
        th_resp_t r = {0};
        th_get(env->port, path, &r);
        assert_int_equal(r.status, code);
        th_resp_free(&r);
    }
}

/* The traffic of most tests: 7 x 200, 3 x 503, 2 x 404 through stable; then waits until all 12 are counted. */
static void send_traffic(th_env_t *env)
{
    get_status(env, 200, 7);
    get_status(env, 503, 3);
    get_status(env, 404, 2);
    wait_metric(env, "weir_request_duration_seconds_count{variant=\"stable\"}", 12);
}

/* ---- tests ---- */

static void test_metrics_requests_by_code(void **state)
{
    th_env_t *env = *state;
    start_stable(env);
    send_traffic(env);

    /* a malformed request gets weir's own 400 before any variant is chosen */
    th_resp_t r = {0};
    assert_int_equal(
        th_http(env->port, "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", &r), 0);
    assert_int_equal(r.status, 400);
    wait_metric(env, "weir_requests_total{variant=\"none\",code=\"400\"}", 1);
    wait_metric(env, "weir_connections{side=\"downstream\"}", 0);

    char *m = metrics(env);
    assert_metric(m, "weir_requests_total{variant=\"stable\",code=\"200\"}", 7);
    assert_metric(m, "weir_requests_total{variant=\"stable\",code=\"503\"}", 3);
    assert_metric(m, "weir_requests_total{variant=\"stable\",code=\"404\"}", 2);
    assert_metric(m, "weir_requests_total{variant=\"canary\",code=\"200\"}", -1); /* no zero code series */
    assert_metric(m, "weir_request_duration_seconds_bucket{variant=\"stable\",le=\"+Inf\"}", 12);
    assert_metric(m, "weir_request_duration_seconds_count{variant=\"stable\"}", 12);
    assert_metric(m, "weir_request_duration_seconds_count{variant=\"canary\"}", 0);
    assert_metric(m, "weir_request_duration_seconds_bucket{variant=\"canary\",le=\"+Inf\"}", 0);
    assert_true(value_of(m, "weir_request_duration_seconds_sum{variant=\"stable\"}") > 0);
    assert_metric(m, "weir_request_duration_seconds_count{variant=\"none\"}", 1);
    assert_metric(m, "weir_proxy_errors_total{variant=\"stable\",reason=\"connect\"}", 0);
    assert_metric(m, "weir_proxy_errors_total{variant=\"stable\",reason=\"client_abort\"}", 0);
    assert_metric(m, "weir_mirror_dropped_total{variant=\"canary\",reason=\"overload\"}", 0);
    assert_metric(m, "weir_mirror_mismatch_total{variant=\"stable\"}", 0);
    assert_metric(m, "weir_variant_weight_percent{variant=\"stable\"}", 100);
    assert_metric(m, "weir_variant_weight_percent{variant=\"canary\"}", 0);
    assert_metric(m, "weir_config_generation", 0);
    assert_metric(m, "weir_connections{side=\"downstream\"}", 0);
    assert_true(value_of(m, "weir_connections{side=\"upstream\"}") >= 0);
    /* each family is declared once */
    const char *p = strstr(m, "# TYPE weir_requests_total counter\n");
    assert_non_null(p);
    assert_null(strstr(p + 1, "# TYPE weir_requests_total "));
    assert_non_null(strstr(m, "# TYPE weir_request_duration_seconds histogram\n"));
    assert_non_null(strstr(m, "# TYPE weir_connections gauge\n"));
    th_weir_stop(env);
}

static void test_stats_json(void **state)
{
    th_env_t *env = *state;
    start_stable(env);
    send_traffic(env);

    char *j = admin_get(env, "/stats?window=60s", 200, "application/json");
    assert_true(th_json_valid(j));
    assert_non_null(strstr(j, "\"window_seconds\": 60, \"weights\": {\"canary\": 0.00, \"stable\": 100.00}, "));
    assert_non_null(strstr(j, "\"stable\": {\"requests\": 12, \"codes\": {\"200\": 7, \"404\": 2, \"503\": 3}, "
                              "\"window\": {\"requests\": 12, \"2xx\": 7, \"3xx\": 0, \"4xx\": 2, \"5xx\": 3, "
                              "\"error_rate\": 0.25, \"p50_ms\": "));
    assert_non_null(strstr(j, "\"canary\": {\"requests\": 0, \"codes\": {}, \"window\": {\"requests\": 0, \"2xx\": 0, "
                              "\"3xx\": 0, \"4xx\": 0, \"5xx\": 0, \"error_rate\": 0, \"p50_ms\": 0, \"p90_ms\": 0, "
                              "\"p99_ms\": 0}, \"weighted\": {\"requests\": 0, \"codes\": {}, \"window\": "
                              "{\"requests\": 0, \"2xx\": 0, \"3xx\": 0, \"4xx\": 0, \"5xx\": 0, \"error_rate\": 0, "
                              "\"p50_ms\": 0, \"p90_ms\": 0, \"p99_ms\": 0}}}"));
    double p50 = strtod(strstr(strstr(j, "\"stable\": {\"requests\""), "\"p50_ms\": ") + 10, NULL);
    double p99 = strtod(strstr(strstr(j, "\"stable\": {\"requests\""), "\"p99_ms\": ") + 10, NULL);
    assert_true(p50 > 0 && p50 <= p99);
    assert_non_null(strstr(j, "{\"generation\": 0, \"uptime_seconds\": "));

    /* the default window is stats-window; other valid spellings */
    j = admin_get(env, "/stats", 200, "application/json");
    assert_true(th_json_valid(j));
    assert_non_null(strstr(j, "\"window_seconds\": 60,"));
    j = admin_get(env, "/stats?window=1s", 200, NULL);
    assert_non_null(strstr(j, "\"window_seconds\": 1,"));
    j = admin_get(env, "/stats?window=5m", 200, NULL);
    assert_non_null(strstr(j, "\"window_seconds\": 300,"));
    j = admin_get(env, "/stats?x=1&window=30s", 200, NULL);
    assert_non_null(strstr(j, "\"window_seconds\": 30,"));

    /* bad windows */
    const char *bad[] = {"0s", "301s", "1500ms", "abc", "", "30", "-1s", "10m"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *path = th_fmt("/stats?window=%s", bad[i]);
        char *body = admin_get(env, path, 400, NULL);
        assert_non_null(strstr(body, "window"));
    }
    th_weir_stop(env);
}

static void test_stats_window_config(void **state)
{
    th_env_t *env = *state;
    int u = th_upstream_start(env, "stable");
    th_weir_startl(env, "--stable", env->up[u].addr, "--stats-window", "2m", NULL);
    wait_admin(env);
    char *j = admin_get(env, "/stats", 200, "application/json");
    assert_non_null(strstr(j, "\"window_seconds\": 120,"));
    th_weir_stop(env);
}

static void test_show_stats_and_reset(void **state)
{
    th_env_t *env = *state;
    start_stable(env);
    send_traffic(env);

    assert_string_equal(ctl(env, "show stats\n"), "ok\n"
                                                  "canary requests=0 2xx=0 3xx=0 4xx=0 5xx=0\n"
                                                  "stable requests=12 2xx=7 3xx=0 4xx=2 5xx=3\n"
                                                  "\n");
    char *js = ctl(env, "show stats json\n");
    assert_true(strncmp(js, "ok\n{", 4) == 0);
    size_t n = strlen(js);
    assert_true(n > 6 && strcmp(js + n - 3, "}\n\n") == 0);
    js[n - 2] = '\0';
    assert_true(th_json_valid(js + 3));
    assert_non_null(strstr(js, "\"stable\": {\"requests\": 12,"));

    assert_string_equal(ctl(env, "reset stats\n"), "ok\n\n");
    assert_string_equal(ctl(env, "show stats\n"), "ok\n"
                                                  "canary requests=0 2xx=0 3xx=0 4xx=0 5xx=0\n"
                                                  "stable requests=0 2xx=0 3xx=0 4xx=0 5xx=0\n"
                                                  "\n");
    char *m = metrics(env);
    assert_null(strstr(m, "weir_requests_total{"));
    assert_metric(m, "weir_request_duration_seconds_count{variant=\"stable\"}", 0);
    char *j = admin_get(env, "/stats", 200, NULL);
    assert_non_null(strstr(j, "\"stable\": {\"requests\": 0, \"codes\": {}, \"window\": {\"requests\": 0,"));

    /* counting goes on from zero */
    get_status(env, 201, 2);
    wait_metric(env, "weir_requests_total{variant=\"stable\",code=\"201\"}", 2);
    assert_string_equal(ctl(env, "show stats\n"), "ok\n"
                                                  "canary requests=0 2xx=0 3xx=0 4xx=0 5xx=0\n"
                                                  "stable requests=2 2xx=2 3xx=0 4xx=0 5xx=0\n"
                                                  "\n");
    m = metrics(env);
    assert_metric(m, "weir_requests_total{variant=\"stable\",code=\"200\"}", -1);
    j = admin_get(env, "/stats", 200, NULL);
    assert_non_null(strstr(j, "\"stable\": {\"requests\": 2, \"codes\": {\"201\": 2}, \"window\": {\"requests\": 2,"));
    th_weir_stop(env);
}

/* The canary's only endpoint refuses connections: its requests get 502 and count under canary. */
static void test_502_counted_under_dead_variant(void **state)
{
    th_env_t *env = *state;
    int u = th_upstream_start(env, "stable");
    char *dead = th_fmt("127.0.0.1:%d", th_free_port());
    th_weir_startl(env, "--stable", env->up[u].addr, "--canary", dead, "--weight", "canary", "100", NULL);
    wait_admin(env);
    for (int i = 0; i < 3; i++) {
        th_resp_t r = {0};
        th_get(env->port, "/status/200", &r);
        assert_int_equal(r.status, 502);
    }
    wait_metric(env, "weir_requests_total{variant=\"canary\",code=\"502\"}", 3);
    char *m = metrics(env);
    assert_metric(m, "weir_proxy_errors_total{variant=\"canary\",reason=\"connect\"}", 3);
    assert_metric(m, "weir_proxy_errors_total{variant=\"stable\",reason=\"connect\"}", 0);
    assert_metric(m, "weir_requests_total{variant=\"stable\",code=\"200\"}", -1);
    assert_metric(m, "weir_variant_weight_percent{variant=\"canary\"}", 100);
    assert_metric(m, "weir_variant_weight_percent{variant=\"stable\"}", 0);
    assert_string_equal(ctl(env, "show stats\n"), "ok\n"
                                                  "canary requests=3 2xx=0 3xx=0 4xx=0 5xx=3\n"
                                                  "stable requests=0 2xx=0 3xx=0 4xx=0 5xx=0\n"
                                                  "\n");
    char *j = admin_get(env, "/stats?window=10s", 200, NULL);
    assert_non_null(strstr(j, "\"canary\": {\"requests\": 3, \"codes\": {\"502\": 3}, \"window\": {\"requests\": 3, "
                              "\"2xx\": 0, \"3xx\": 0, \"4xx\": 0, \"5xx\": 3, \"error_rate\": 1, "));
    th_weir_stop(env);
}

/* A client that leaves while the upstream has not answered yet is counted as 499 with reason client_abort. */
static void test_499_client_abort(void **state)
{
    th_env_t *env = *state;
    start_stable(env);
    th_conn_t *c = th_conn_open(env->port);
    assert_int_equal(th_conn_sendf(c, "GET /hang HTTP/1.1\r\nHost: test\r\n\r\n"), 0);
    wait_metric(env, "weir_connections{side=\"upstream\"}", 1); /* the request reached the upstream */
    wait_metric(env, "weir_connections{side=\"downstream\"}", 1);
    th_conn_close(c);
    wait_metric(env, "weir_requests_total{variant=\"stable\",code=\"499\"}", 1);
    char *m = metrics(env);
    assert_metric(m, "weir_proxy_errors_total{variant=\"stable\",reason=\"client_abort\"}", 1);
    assert_metric(m, "weir_request_duration_seconds_count{variant=\"stable\"}", 1);
    assert_string_equal(ctl(env, "show stats\n"), "ok\n"
                                                  "canary requests=0 2xx=0 3xx=0 4xx=0 5xx=0\n"
                                                  "stable requests=1 2xx=0 3xx=0 4xx=1 5xx=0\n"
                                                  "\n");
    th_weir_stop(env);
}

/* Route matches per route name, and mirrored copies per variant. */
static void test_routes_and_mirror(void **state)
{
    th_env_t *env = *state;
    int s = th_upstream_start(env, "stable"), c = th_upstream_start(env, "canary");
    th_weir_startl(env, "--stable", env->up[s].addr, "--canary", env->up[c].addr, NULL);
    wait_admin(env);

    assert_string_equal(ctl(env, "set header-route beta header x-beta exact 1\n"), "ok\n\n");
    assert_string_equal(ctl(env, "set mirror-route copy 100 to canary path prefix /mirror\n"), "ok\n\n");
    for (int i = 0; i < 2; i++) {
        th_resp_t r = {0};
        assert_int_equal(th_http(env->port, "GET /x HTTP/1.1\r\nHost: t\r\nx-beta: 1\r\nConnection: close\r\n\r\n", &r),
                         0);
        assert_string_equal(r.body, "hello from canary\n");
    }
    for (int i = 0; i < 3; i++) {
        th_resp_t r = {0};
        th_get(env->port, "/mirror/a", &r);
        assert_string_equal(r.body, "hello from stable\n");
    }
    wait_metric(env, "weir_mirror_requests_total{variant=\"canary\",code=\"200\"}", 3);
    wait_metric(env, "weir_request_duration_seconds_count{variant=\"stable\"}", 3);
    char *m = metrics(env);
    assert_metric(m, "weir_route_matches_total{route=\"beta\"}", 2);
    assert_metric(m, "weir_route_matches_total{route=\"copy\"}", 3);
    /* the header route decided the canary requests; the weights decided the mirrored ones' primaries */
    assert_metric(m, "weir_requests_total{variant=\"canary\",route=\"beta\",code=\"200\"}", 2);
    assert_metric(m, "weir_requests_total{variant=\"canary\",code=\"200\"}", -1);
    assert_metric(m, "weir_requests_total{variant=\"stable\",code=\"200\"}", 3);
    assert_metric(m, "weir_requests_total{variant=\"stable\",route=\"copy\",code=\"200\"}", -1);
    assert_metric(m, "weir_mirror_mismatch_total{variant=\"canary\"}", 0);
    assert_metric(m, "weir_mirror_dropped_total{variant=\"canary\",reason=\"error\"}", 0);
    assert_metric(m, "weir_config_generation", 2);

    char *j = admin_get(env, "/stats", 200, NULL);
    assert_true(th_json_valid(j));
    assert_non_null(strstr(j, "{\"generation\": 2,"));
    assert_non_null(strstr(j,
                           "\"mirror\": {\"requests\": 3, \"codes\": {\"200\": 3}, \"dropped\": {\"overload\": 0, "
                           "\"error\": 0}, \"mismatches\": 0, \"mismatch_rate\": 0, \"window\": {\"mismatches\": 0}}"));
    th_weir_stop(env);
}

/* SPEC §5: a developer's header-routed requests are counted with route="NAME" and kept out of the weighted figures
 * an analysis reads (the label-less series, "weighted" in /stats), while the totals still hold them. */
static void test_route_label_and_weighted(void **state)
{
    th_env_t *env = *state;
    int s = th_upstream_start(env, "stable"), c = th_upstream_start(env, "canary");
    th_weir_startl(env, "--stable", env->up[s].addr, "--canary", env->up[c].addr, "--weight", "canary", "100", NULL);
    wait_admin(env);
    assert_string_equal(ctl(env, "set header-route dev header x-canary exact 1\n"), "ok\n\n");
    assert_string_equal(ctl(env, "set mirror-route shadow 100 to stable path prefix /status/201\n"), "ok\n\n");

    get_status(env, 200, 3); /* weighted: all to the canary */
    get_status(env, 201, 1); /* weighted too, though a mirror route matched it */
    for (int i = 0; i < 2; i++) {
        th_resp_t r = {0};
        assert_int_equal(
            th_http(env->port, "GET /status/500 HTTP/1.1\r\nHost: t\r\nx-canary: 1\r\nConnection: close\r\n\r\n", &r),
            0);
        assert_int_equal(r.status, 500);
        th_resp_free(&r);
    }
    wait_metric(env, "weir_request_duration_seconds_count{variant=\"canary\",route=\"dev\"}", 2);
    wait_metric(env, "weir_request_duration_seconds_count{variant=\"canary\"}", 4);

    char *m = metrics(env);
    assert_metric(m, "weir_requests_total{variant=\"canary\",code=\"200\"}", 3);
    assert_metric(m, "weir_requests_total{variant=\"canary\",code=\"201\"}", 1);
    assert_metric(m, "weir_requests_total{variant=\"canary\",code=\"500\"}", -1);
    assert_metric(m, "weir_requests_total{variant=\"canary\",route=\"dev\",code=\"500\"}", 2);
    assert_metric(m, "weir_requests_total{variant=\"canary\",route=\"shadow\",code=\"201\"}", -1);
    assert_metric(m, "weir_request_duration_seconds_bucket{variant=\"canary\",route=\"dev\",le=\"+Inf\"}", 2);
    assert_metric(m, "weir_route_matches_total{route=\"dev\"}", 2);
    assert_metric(m, "weir_route_matches_total{route=\"shadow\"}", 1);
    assert_string_equal(ctl(env, "show stats\n"), "ok\n"
                                                  "canary requests=6 2xx=4 3xx=0 4xx=0 5xx=2\n"
                                                  "stable requests=0 2xx=0 3xx=0 4xx=0 5xx=0\n"
                                                  "\n");
    char *j = admin_get(env, "/stats?window=60s", 200, NULL);
    assert_true(th_json_valid(j));
    assert_non_null(strstr(j, "\"canary\": {\"requests\": 6, \"codes\": {\"200\": 3, \"201\": 1, \"500\": 2}, "
                              "\"window\": {\"requests\": 6, \"2xx\": 4, \"3xx\": 0, \"4xx\": 0, \"5xx\": 2, "
                              "\"error_rate\": 0.333333, "));
    assert_non_null(strstr(j, "\"weighted\": {\"requests\": 4, \"codes\": {\"200\": 3, \"201\": 1}, "
                              "\"window\": {\"requests\": 4, \"2xx\": 4, \"3xx\": 0, \"4xx\": 0, \"5xx\": 0, "
                              "\"error_rate\": 0, "));
    th_weir_stop(env);
}

/* The admin listener's HTTP: pipelined requests answered in order on one connection, HEAD without a body, other
 * methods refused with 405 and a body. */
static void test_admin_http(void **state)
{
    th_env_t *env = *state;
    start_stable(env);
    th_conn_t *c = th_conn_open(env->admin_port);
    th_resp_t r = {0};
    assert_int_equal(th_conn_sendf(c, "GET /stats?window=5s HTTP/1.1\r\nHost: a\r\n\r\n"
                                      "HEAD /metrics HTTP/1.1\r\nHost: a\r\n\r\n"
                                      "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"),
                     0);
    assert_int_equal(th_conn_read_response(c, &r, false, TH_TIMEOUT_MS), 0);
    assert_int_equal(r.status, 200);
    assert_true(th_json_valid(r.body));
    assert_non_null(strstr(r.body, "\"window_seconds\": 5,"));
    assert_int_equal(th_conn_read_response(c, &r, true, TH_TIMEOUT_MS), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(th_header(&r, "content-type"), "text/plain; version=0.0.4; charset=utf-8");
    assert_true(atol(th_header(&r, "content-length")) > 1000);
    assert_int_equal(r.body_len, 0);
    assert_int_equal(th_conn_read_response(c, &r, false, TH_TIMEOUT_MS), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ok\n");
    assert_false(th_conn_closed_now(c));
    th_conn_close(c);

    assert_int_equal(th_http(env->admin_port, "POST /stats HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc", &r),
                     0);
    assert_int_equal(r.status, 405);
    assert_string_equal(r.body, "only GET and HEAD\n");
    assert_string_equal(th_header(&r, "allow"), "GET, HEAD");
    th_weir_stop(env);
}

/* promtool accepts the live output (with every kind of series present). `make test` provides promtool from
 * Debian's prometheus package (build/tools/promtool, on the PATH of tests/run.sh); without it this test fails. */
static void test_promtool_accepts(void **state)
{
    th_env_t *env = *state;
    th_run_t have = {0};
    char *const which[] = {"/bin/sh", "-c", "command -v promtool", NULL};
    th_run(env, &have, which);
    if (have.status != 0)
        fail_msg("promtool is not on the PATH (make test fetches it into build/tools)");
    int s = th_upstream_start(env, "stable"), c = th_upstream_start(env, "canary");
    th_weir_startl(env, "--stable", env->up[s].addr, "--canary", env->up[c].addr, "--weight", "canary", "50", NULL);
    wait_admin(env);
    assert_string_equal(ctl(env, "set header-route dev header x-canary exact 1\n"), "ok\n\n");
    assert_string_equal(ctl(env, "set mirror-route copy 100 to canary path prefix /status\n"), "ok\n\n");
    get_status(env, 200, 5);
    get_status(env, 500, 2);
    th_resp_t r = {0};
    assert_int_equal(th_http(env->port, "BROKEN\r\n\r\n", &r), 0);
    assert_int_equal(th_http(env->port, "GET /x HTTP/1.1\r\nHost: t\r\nx-canary: 1\r\nConnection: close\r\n\r\n", &r),
                     0);
    wait_metric(env, "weir_route_matches_total{route=\"copy\"}", 7);
    wait_metric(env, "weir_requests_total{variant=\"canary\",route=\"dev\",code=\"200\"}", 1);

    char *path = th_write_file(env, "metrics.txt", metrics(env));
    th_run_t out = {0};
    char *const check[] = {"/bin/sh", "-c", th_fmt("promtool check metrics < '%s'", path), NULL};
    th_run(env, &out, check);
    if (out.status != 0)
        fail_msg("promtool check metrics failed (%d):\n%s%s", out.status, out.out, out.err);
    th_weir_stop(env);
}

/* A variant removed with `del upstream` is in no rendering, as it is not in `get weight`; a new variant declared
 * after it starts from zero. */
static void test_removed_variant_not_reported(void **state)
{
    th_env_t *env = *state;
    int u = start_stable(env);
    char *req = th_fmt("set upstream exp1 %s\n", env->up[u].addr);

    assert_string_equal(ctl(env, req), "ok\n\n");
    assert_non_null(strstr(metrics(env), "weir_variant_weight_percent{variant=\"exp1\"} 0.00\n"));
    assert_string_equal(ctl(env, "del upstream exp1\n"), "ok\n\n");
    assert_null(strstr(ctl(env, "get weight\n"), "exp1"));
    assert_null(strstr(ctl(env, "show stats\n"), "exp1"));
    assert_null(strstr(ctl(env, "show stats json\n"), "exp1"));
    assert_null(strstr(admin_get(env, "/stats", 200, NULL), "exp1"));
    assert_null(strstr(metrics(env), "exp1"));
    th_weir_stop(env);
}

/* The resident memory weir's started workers add, in kB: VmRSS with 8 workers minus VmRSS with 1, over 7. Each start
 * ends with a change every worker acknowledged, so every worker has allocated its counters. */
static long rss_kb_of(th_env_t *env, int u, const char *workers)
{
    char path[64], line[256];
    long kb = -1;

    th_weir_startl(env, "--stable", env->up[u].addr, "--workers", workers, NULL);
    wait_admin(env);
    assert_string_equal(ctl(env, "set weight 1\n"), "ok\n\n");
    snprintf(path, sizeof(path), "/proc/%d/status", (int)env->weir.pid);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, "VmRSS:", 6) == 0)
            kb = strtol(line + 6, NULL, 10);
    fclose(f);
    assert_true(kb > 0);
    th_weir_stop(env);
    return kb;
}

/* An idle worker keeps no page of the counters of variants that never counted anything. Every worker has room for
 * 16 variants (`set upstream` adds them at run time); their per-second rings and reset baselines are
 * 16 x 300 s x 344 B x 2 = 3.3 MB per worker, which used to be written (stamped) at start and so all resident. A
 * worker's other start-up memory (its loop, endpoint table, buffers' first pages, thread stack) is a few hundred
 * kB; the bound, 1.5 MB per worker, sits between the two and holds under the sanitizers too (their shadow of an
 * untouched page is untouched). */
static void test_idle_workers_rss(void **state)
{
    th_env_t *env = *state;
    int u = th_upstream_start(env, "stable");
    long one = rss_kb_of(env, u, "1"), eight = rss_kb_of(env, u, "8");
    long per_worker = (eight - one) / 7;

    print_message("weir: idle VmRSS %ld kB with 1 worker, %ld kB with 8: %ld kB per worker\n", one, eight, per_worker);
    if (per_worker >= 1536)
        fail_msg("an idle worker adds %ld kB resident (bound 1536 kB)", per_worker);
}

int main(void)
{
    th_filter_from_env();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_metrics_requests_by_code, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_stats_json, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_stats_window_config, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_show_stats_and_reset, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_502_counted_under_dead_variant, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_499_client_abort, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_routes_and_mirror, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_route_label_and_weighted, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_admin_http, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_promtool_accepts, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_idle_workers_rss, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_removed_variant_not_reported, th_setup, th_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
