/* The admin listener's health endpoints (SPEC §5) and shutdown on signals (SPEC §7): /healthz, /readyz, and a
 * SIGTERM that lets in-flight requests finish, closes idle connections, turns /readyz to 503 and exits 0; the
 * listener's bounds: header and idle timeouts, and the connection cap. */
#include <setjmp.h>
#include <stdbool.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "harness.h"

#define GET_REQ(path) "GET " path " HTTP/1.1\r\nHost: test\r\n\r\n"

static int start_stable(th_env_t *env, const char *extra1, const char *extra2)
{
    int u = th_upstream_start(env, "stable");
    th_weir_startl(env, "--stable", env->up[u].addr, extra1, extra2, NULL);
    return u;
}

/* Waits until the admin port accepts, since weir is only waited for on its data port. */
static void wait_admin(th_env_t *env)
{
    assert_true(env->admin_port > 0);
    if (!th_wait_port(env->admin_port, TH_TIMEOUT_MS, &env->weir))
        fail_msg("admin port %d not open", env->admin_port);
}

static bool readyz_is_503(void *arg)
{
    th_env_t *env = arg;
    th_resp_t r = {0};
    bool yes = th_try_get(env->admin_port, "/readyz", &r) == 0 && r.status == 503;
    th_resp_free(&r);
    return yes;
}

static bool port_refuses(void *arg)
{
    th_env_t *env = arg;
    return !th_port_open(env->port);
}

static bool body_is(const th_resp_t *r, const char *want)
{
    size_t n = r->body_len;
    while (n > 0 && (r->body[n - 1] == '\n' || r->body[n - 1] == '\r'))
        n--;
    return n == strlen(want) && memcmp(r->body, want, n) == 0;
}

static void test_healthz(void **state)
{
    th_env_t *env = *state;
    start_stable(env, NULL, NULL);
    wait_admin(env);
    th_resp_t r = {0};
    th_get(env->admin_port, "/healthz", &r);
    assert_int_equal(r.status, 200);
    assert_true(body_is(&r, "ok"));
    /* the admin listener is not a proxy */
    assert_null(th_header(&r, "x-upstream"));
    th_weir_stop(env);
}

static void test_readyz_running(void **state)
{
    th_env_t *env = *state;
    start_stable(env, NULL, NULL);
    wait_admin(env);
    th_resp_t r = {0};
    th_get(env->admin_port, "/readyz", &r);
    assert_int_equal(r.status, 200);
    /* keep-alive on the admin listener works too */
    th_conn_t *c = th_conn_open(env->admin_port);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(th_conn_sendf(c, GET_REQ("/healthz")), 0);
        assert_int_equal(th_conn_read_response(c, &r, false, TH_TIMEOUT_MS), 0);
        assert_int_equal(r.status, 200);
    }
    th_weir_stop(env);
}

/* Without any upstream endpoint weir serves (503 for every request) but is not ready. */
static void test_readyz_without_upstreams(void **state)
{
    th_env_t *env = *state;
    th_resp_t r = {0};

    th_weir_startl(env, NULL);
    wait_admin(env);
    th_get(env->admin_port, "/readyz", &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body, "no upstreams\n");
    th_get(env->admin_port, "/healthz", &r);
    assert_int_equal(r.status, 200);
    th_weir_stop(env);
}

static bool readyz_is_200(void *arg)
{
    th_env_t *env = arg;
    th_resp_t r = {0};
    bool yes = th_try_get(env->admin_port, "/readyz", &r) == 0 && r.status == 200;
    th_resp_free(&r);
    return yes;
}

/* Sends one control request with weirctl; fails the test unless it exits 0. */
static void weirctl_ok(th_env_t *env, const char *a, const char *b, const char *c, const char *d)
{
    th_run_t out = {0};
    char *const argv[] = {(char *)th_weirctl_bin(), "-s", env->sock, (char *)a, (char *)b, (char *)c, (char *)d, NULL};
    th_run(env, &out, argv);
    if (out.status != 0)
        fail_msg("weirctl %s %s %s %s: exit %d: %s", a, b, c, d, out.status, out.err);
}

/* /readyz follows the endpoints known now: stable's only address replaced by a name that does not resolve turns it
 * to 503, an address again back to 200. */
static void test_readyz_follows_endpoints(void **state)
{
    th_env_t *env = *state;
    int u = start_stable(env, NULL, NULL);
    th_resp_t r = {0};

    wait_admin(env);
    th_get(env->admin_port, "/readyz", &r);
    assert_int_equal(r.status, 200);
    weirctl_ok(env, "set", "upstream", "stable", "nonexistent.invalid:80");
    th_get(env->admin_port, "/readyz", &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body, "no upstreams\n");
    weirctl_ok(env, "set", "upstream", "stable", env->up[u].addr);
    assert_true(th_poll(readyz_is_200, env, TH_TIMEOUT_MS));
    th_weir_stop(env);
}

static void test_admin_unknown_path(void **state)
{
    th_env_t *env = *state;
    start_stable(env, NULL, NULL);
    wait_admin(env);
    th_resp_t r = {0};
    th_get(env->admin_port, "/no-such-page", &r);
    assert_int_equal(r.status, 404);
    th_weir_stop(env);
}

/* SIGTERM with only idle keep-alive connections: they are closed and weir exits 0 at once, without waiting for
 * drain-timeout (30 s by default, past the harness's 10 s bound). */
static void test_sigterm_closes_idle(void **state)
{
    th_env_t *env = *state;
    start_stable(env, NULL, NULL);
    th_conn_t *c = th_conn_open(env->port);
    th_resp_t r = {0};
    assert_int_equal(th_conn_sendf(c, GET_REQ("/")), 0);
    assert_int_equal(th_conn_read_response(c, &r, false, TH_TIMEOUT_MS), 0);
    assert_int_equal(r.status, 200);
    th_weir_stop(env);
    assert_true(th_conn_wait_closed(c, TH_TIMEOUT_MS));
}

static void test_sigint_exits_0(void **state)
{
    th_env_t *env = *state;
    start_stable(env, NULL, NULL);
    th_resp_t r = {0};
    th_get(env->port, "/", &r);
    assert_int_equal(r.status, 200);
    th_weir_stop_sig(env, SIGINT, TH_TIMEOUT_MS);
}

/* A request in flight when SIGTERM arrives completes; meanwhile /readyz says 503 and idle connections are closed. */
static void test_sigterm_drains_inflight(void **state)
{
    th_env_t *env = *state;
    int u = start_stable(env, NULL, NULL);
    wait_admin(env);
    th_resp_t r = {0};

    th_conn_t *idle = th_conn_open(env->port);
    assert_int_equal(th_conn_sendf(idle, GET_REQ("/")), 0);
    assert_int_equal(th_conn_read_response(idle, &r, false, TH_TIMEOUT_MS), 0);
    assert_int_equal(r.status, 200);

    th_conn_t *busy = th_conn_open(env->port);
    assert_int_equal(th_conn_sendf(busy, GET_REQ("/gate")), 0);
    assert_true(th_upstream_wait_stat(env, u, "/__inflight", 1)); /* it reached the upstream */

    assert_int_equal(kill(env->weir.pid, SIGTERM), 0);

    /* /readyz turns 503 while draining */
    assert_true(th_poll(readyz_is_503, env, TH_TIMEOUT_MS));
    assert_true(th_conn_wait_closed(idle, TH_TIMEOUT_MS));

    /* the in-flight request is still being waited for; let it finish */
    assert_int_not_equal(env->weir.pid, 0);
    assert_true(th_wait_exit(&env->weir, 0) < 0);
    th_get(env->up[u].port, "/__open", &r);
    assert_int_equal(th_conn_read_response(busy, &r, false, TH_TIMEOUT_MS), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello from stable\n");
    /* once its response is done, the connection is idle, and idle connections are closed while draining */
    assert_true(th_conn_wait_closed(busy, TH_TIMEOUT_MS));
    th_weir_stop_sig(env, 0, TH_TIMEOUT_MS);
}

/* The same with a request that is merely slow: it completes across SIGTERM. */
static void test_sigterm_slow_request_completes(void **state)
{
    th_env_t *env = *state;
    int u = start_stable(env, NULL, NULL);
    th_conn_t *c = th_conn_open(env->port);
    assert_int_equal(th_conn_sendf(c, GET_REQ("/slow/500")), 0);
    assert_true(th_upstream_wait_stat(env, u, "/__inflight", 1));
    assert_int_equal(kill(env->weir.pid, SIGTERM), 0);
    th_resp_t r = {0};
    assert_int_equal(th_conn_read_response(c, &r, false, TH_TIMEOUT_MS), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello from stable\n");
    assert_true(th_conn_wait_closed(c, TH_TIMEOUT_MS));
    th_weir_stop_sig(env, 0, TH_TIMEOUT_MS);
}

/* A request that outlives drain-timeout does not keep weir alive: it exits 0 and the client connection ends. */
static void test_drain_timeout(void **state)
{
    th_env_t *env = *state;
    int u = start_stable(env, "--drain-timeout", "200ms");
    th_conn_t *c = th_conn_open(env->port);
    assert_int_equal(th_conn_sendf(c, GET_REQ("/gate")), 0);
    assert_true(th_upstream_wait_stat(env, u, "/__inflight", 1));
    th_weir_stop(env);
    assert_true(th_conn_wait_closed(c, TH_TIMEOUT_MS));
    th_resp_t r = {0};
    th_get(env->up[u].port, "/__open", &r); /* release the upstream's waiting thread */
}

/* New connections are not served after SIGTERM: the data listener is closed. */
static void test_sigterm_stops_accepting(void **state)
{
    th_env_t *env = *state;
    int u = start_stable(env, NULL, NULL);
    th_conn_t *c = th_conn_open(env->port);
    assert_int_equal(th_conn_sendf(c, GET_REQ("/gate")), 0);
    assert_true(th_upstream_wait_stat(env, u, "/__inflight", 1));
    assert_int_equal(kill(env->weir.pid, SIGTERM), 0);
    assert_true(th_poll(port_refuses, env, TH_TIMEOUT_MS));
    th_resp_t r = {0};
    th_get(env->up[u].port, "/__open", &r);
    assert_int_equal(th_conn_read_response(c, &r, false, TH_TIMEOUT_MS), 0);
    assert_int_equal(r.status, 200);
    assert_true(th_conn_wait_closed(c, TH_TIMEOUT_MS));
    th_weir_stop_sig(env, 0, TH_TIMEOUT_MS);
}

/* Half-sent requests, silent connections and idle keep-alive connections are closed after their timeouts; the
 * half-sent ones get a 408 first, as on the data path. */
static void test_admin_timeouts(void **state)
{
    th_env_t *env = *state;
    start_stable(env, "--header-timeout", "1s");
    wait_admin(env);
    enum { N = 20 };
    th_conn_t *half[N], *silent[N], *idle[N];
    th_resp_t r = {0};
    for (int i = 0; i < N; i++) {
        half[i] = th_conn_open(env->admin_port);
        assert_int_equal(th_conn_sendf(half[i], "GET /metrics HTTP/1.1\r\nHost: test\r\n"), 0);
        silent[i] = th_conn_open(env->admin_port);
        idle[i] = th_conn_open(env->admin_port);
        assert_int_equal(th_conn_sendf(idle[i], GET_REQ("/healthz")), 0);
        assert_int_equal(th_conn_read_response(idle[i], &r, false, TH_TIMEOUT_MS), 0);
        assert_int_equal(r.status, 200);
    }
    for (int i = 0; i < N; i++) {
        if (th_conn_read_response(half[i], &r, false, TH_TIMEOUT_MS) != 0 || r.status != 408)
            fail_msg("half-sent admin request %d: want 408 after header-timeout, got status %d", i, r.status);
        if (!th_conn_wait_closed(half[i], TH_TIMEOUT_MS))
            fail_msg("half-sent admin request %d: connection open after its 408", i);
        if (!th_conn_wait_closed(silent[i], TH_TIMEOUT_MS))
            fail_msg("silent admin connection %d still open after header-timeout", i);
    }
    th_weir_stop(env);
}

static void test_admin_idle_keepalive_closed(void **state)
{
    th_env_t *env = *state;
    start_stable(env, "--idle-timeout", "1s");
    wait_admin(env);
    th_resp_t r = {0};
    th_conn_t *c = th_conn_open(env->admin_port);
    assert_int_equal(th_conn_sendf(c, GET_REQ("/healthz")), 0);
    assert_int_equal(th_conn_read_response(c, &r, false, TH_TIMEOUT_MS), 0);
    assert_int_equal(r.status, 200);
    if (!th_conn_wait_closed(c, TH_TIMEOUT_MS))
        fail_msg("idle keep-alive admin connection still open after idle-timeout");
    th_weir_stop(env);
}

/* A request head that fills the admin buffer (8 KiB, one byte kept for a NUL) without ending: 431, then the
 * connection closes. Exactly that many bytes are sent: bytes left unread when weir closes would turn its FIN into
 * a reset that may overtake the 431. */
static void test_admin_overlong_head_closes(void **state)
{
    th_env_t *env = *state;
    start_stable(env, NULL, NULL);
    wait_admin(env);
    th_conn_t *c = th_conn_open(env->admin_port);
    const char *start = "GET /metrics HTTP/1.1\r\nX-Junk: ";
    char *head = th_alloc(8192);
    memset(head, 'x', 8191);
    memcpy(head, start, strlen(start));
    head[8191] = '\0';
    assert_int_equal(th_conn_sendf(c, "%s", head), 0);
    th_resp_t r = {0};
    assert_int_equal(th_conn_read_response(c, &r, false, TH_TIMEOUT_MS), 0);
    assert_int_equal(r.status, 431);
    if (!th_conn_wait_closed(c, TH_TIMEOUT_MS))
        fail_msg("admin connection open after a 431");
    th_weir_stop(env);
}

#define ADMIN_CAP 256 /* proxy/admin.c ADMIN_MAX_CONNS */

static bool admin_serves_new_client(void *arg)
{
    th_env_t *env = arg;
    th_resp_t r = {0};
    bool ok = th_try_get(env->admin_port, "/healthz", &r) == 0 && r.status == 200;
    th_resp_free(&r);
    return ok;
}

static void test_admin_connection_cap(void **state)
{
    th_env_t *env = *state;
    start_stable(env, NULL, NULL);
    wait_admin(env);
    th_conn_t *cs[ADMIN_CAP];
    th_resp_t r = {0};
    for (int i = 0; i < ADMIN_CAP; i++) {
        cs[i] = th_conn_open(env->admin_port);
        assert_int_equal(th_conn_sendf(cs[i], GET_REQ("/healthz")), 0);
        assert_int_equal(th_conn_read_response(cs[i], &r, false, TH_TIMEOUT_MS), 0); /* held by weir */
    }
    th_conn_t *c = th_conn_open(env->admin_port);
    if (th_conn_read_response(c, &r, false, TH_TIMEOUT_MS) != 0 || r.status != 503)
        fail_msg("admin connection %d: want 503 past the cap, got status %d", ADMIN_CAP + 1, r.status);
    assert_true(th_conn_wait_closed(c, TH_TIMEOUT_MS));
    th_conn_close(cs[0]);
    if (!th_poll(admin_serves_new_client, env, TH_TIMEOUT_MS))
        fail_msg("no admin client served after one of %d closed", ADMIN_CAP);
    for (int i = 1; i < ADMIN_CAP; i++)
        th_conn_close(cs[i]);
    th_weir_stop(env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_healthz, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_readyz_running, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_readyz_without_upstreams, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_readyz_follows_endpoints, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_admin_unknown_path, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_closes_idle, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_sigint_exits_0, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_drains_inflight, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_slow_request_completes, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_drain_timeout, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_stops_accepting, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_admin_timeouts, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_admin_idle_keepalive_closed, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_admin_connection_cap, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_admin_overlong_head_closes, th_setup, th_teardown),
    };
    th_filter_from_env();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
