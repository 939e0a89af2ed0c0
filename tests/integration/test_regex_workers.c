/* Regex routes on several workers (issue 13): every worker decides with its own compiled copy of a regex, made at
 * its first use, and a route replaced or deleted frees those copies once every worker moved on. The
 * ThreadSanitizer run (tests/run.sh) runs these with the others; here they pass --workers 2 themselves. A regex
 * too complex to compile cheaply is refused before compiling (SPEC §4), the control socket stays responsive and
 * routing is unchanged. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "harness.h"

#define NCONN 8 /* connections, spread over the workers by the kernel (SO_REUSEPORT) */

/* Runs `weirctl -s SOCK ARGS...` (NULL-terminated) into <r>. */
static void ctl(th_env_t *env, th_run_t *r, ...)
{
    char *argv[16];
    int n = 0;
    const char *a;
    va_list ap;

    argv[n++] = (char *)th_weirctl_bin();
    argv[n++] = "-s";
    argv[n++] = env->sock;
    va_start(ap, r);
    while ((a = va_arg(ap, const char *)) != NULL && n < 15)
        argv[n++] = (char *)a;
    va_end(ap);
    argv[n] = NULL;
    th_run(env, r, argv);
}

#define ctl_ok(env, ...)                                                                                               \
    do {                                                                                                               \
        th_run_t r_;                                                                                                   \
        ctl((env), &r_, __VA_ARGS__, (const char *)NULL);                                                              \
        if (r_.status != 0)                                                                                            \
            fail_msg("weirctl exited %d: %s", r_.status, r_.err);                                                      \
    } while (0)

/* Sends a GET with "x-user: <user>" on every connection; each must be answered by upstream <want>. */
static void expect_all(th_conn_t *c[NCONN], const char *user, const char *want)
{
    for (int i = 0; i < NCONN; i++) {
        th_resp_t r = {0};
        char raw[256];
        snprintf(raw, sizeof(raw), "GET /x HTTP/1.1\r\nHost: test\r\nx-user: %s\r\n\r\n", user);
        th_exchange(c[i], raw, &r);
        assert_int_equal(r.status, 200);
        const char *who = th_header(&r, "x-upstream");
        if (who == NULL || strcmp(who, want) != 0)
            fail_msg("x-user %s on connection %d went to %s, want %s", user, i, who ? who : "(none)", want);
        th_resp_free(&r);
    }
}

static void start(th_env_t *env)
{
    th_upstream_start(env, "stable");
    th_upstream_start(env, "canary");
    th_weir_startl(env, "--stable", env->up[0].addr, "--canary", env->up[1].addr, "--workers", "2", NULL);
}

static void test_regex_route_replaced_and_deleted_on_two_workers(void **state)
{
    th_env_t *env = *state;
    th_conn_t *c[NCONN];

    start(env);
    for (int i = 0; i < NCONN; i++)
        c[i] = th_conn_open(env->port);
    ctl_ok(env, "set", "header-route", "beta", "header", "x-user", "regex", "[a-z]+-(1|2)");
    expect_all(c, "bob-1", "canary");
    expect_all(c, "bob-3", "stable");
    expect_all(c, "bob-22", "stable");
    /* replaced: the old route and its copies go once both workers took the new table */
    ctl_ok(env, "set", "header-route", "beta", "header", "x-user", "regex", "[a-z]+-3");
    expect_all(c, "bob-3", "canary");
    expect_all(c, "bob-1", "stable");
    ctl_ok(env, "del", "routes");
    expect_all(c, "bob-3", "stable");
    for (int i = 0; i < NCONN; i++)
        th_conn_close(c[i]);
    th_weir_stop(env);
}

/* The line of the issue: compiled, this pattern grows weir by gigabytes. Refused before compiling, at once. */
static void test_regex_bomb_refused(void **state)
{
    th_env_t *env = *state;
    th_conn_t *c[NCONN];
    th_run_t r;

    start(env);
    for (int i = 0; i < NCONN; i++)
        c[i] = th_conn_open(env->port);
    ctl_ok(env, "set", "header-route", "beta", "header", "x-user", "regex", "bob-[0-9]");
    ctl(env, &r, "set", "header-route", "beta", "header", "x-user", "regex", "(((a{1,100}){1,100}){1,100}){1,100}",
        (const char *)NULL);
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "regex too complex"));
    expect_all(c, "bob-1", "canary"); /* the route is unchanged */
    expect_all(c, "aaaa", "stable");
    ctl(env, &r, "get", "weight", (const char *)NULL);
    assert_int_equal(r.status, 0);
    for (int i = 0; i < NCONN; i++)
        th_conn_close(c[i]);
    th_weir_stop(env);
}

int main(void)
{
    th_filter_from_env();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_regex_route_replaced_and_deleted_on_two_workers, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_regex_bomb_refused, th_setup, th_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
