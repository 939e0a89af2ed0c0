/* DNS re-resolution (SPEC §2 resolve-interval): an upstream given by name is resolved at start and again every
 * resolve-interval, off the worker loops; when the name moves, traffic follows; when a lookup fails, the last good
 * address stays. The name is made up and lives in /etc/hosts for the test's duration (restored at the end), so the
 * test needs root; without it, it is skipped. Two upstreams listen on the same port of 127.0.0.1 and 127.0.0.2. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

#define HOSTS "/etc/hosts"

static char *saved_hosts;
static const char *name_ = "weir-test-reresolve.invalid";

static void write_hosts(const char *extra)
{
    FILE *f = fopen(HOSTS, "w");

    assert_non_null(f);
    fputs(saved_hosts, f);
    if (extra != NULL)
        fputs(extra, f);
    assert_int_equal(fclose(f), 0);
}

typedef struct {
    th_env_t *env;
    const char *want;
} served_arg_t;

static bool served_by(void *arg)
{
    served_arg_t *a = arg;
    th_resp_t r = {0};

    if (th_try_get(a->env->port, "/", &r) != 0 || r.status != 200)
        return false;
    const char *who = th_header(&r, "x-upstream");
    return who != NULL && strcmp(who, a->want) == 0;
}

static bool lookup_failed(void *arg)
{
    th_env_t *env = arg;

    return strstr(th_slurp(env->weir.err), "keeping the last good address") != NULL;
}

static void test_name_follows_dns_and_survives_failed_lookup(void **state)
{
    th_env_t *env = *state;
    th_proc_t one = {0}, two = {0};
    int port = th_free_port();
    th_resp_t r = {0};

    if (geteuid() != 0 || access(HOSTS, W_OK) != 0)
        skip();
    saved_hosts = th_slurp(HOSTS);
    assert_true(saved_hosts[0] != '\0');

    char *a1 = th_fmt("127.0.0.1:%d", port), *a2 = th_fmt("127.0.0.2:%d", port);
    char *const argv1[] = {(char *)th_upstream_bin(), "--listen", a1, "--name", "first", NULL};
    char *const argv2[] = {(char *)th_upstream_bin(), "--listen", a2, "--name", "second", NULL};
    th_spawn(env, &one, "first", argv1);
    th_spawn(env, &two, "second", argv2);
    assert_true(th_wait_port(port, TH_TIMEOUT_MS, &one));

    write_hosts(th_fmt("127.0.0.1 %s\n", name_));
    th_weir_startl(env, "--stable", th_fmt("%s:%d", name_, port), "--resolve-interval", "100ms", NULL);
    th_get(env->port, "/", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(th_header(&r, "x-upstream"), "first");

    /* The name moves: within a few intervals, requests reach the new address. */
    write_hosts(th_fmt("127.0.0.2 %s\n", name_));
    served_arg_t to_second = {env, "second"};
    assert_true(th_poll(served_by, &to_second, 10000));

    /* The name disappears: lookups fail, the last good address keeps serving (and weir says so in its log). */
    write_hosts(NULL);
    assert_true(th_poll(lookup_failed, env, 10000));
    for (int i = 0; i < 20; i++)
        assert_true(served_by(&to_second));

    write_hosts(NULL);
    th_weir_stop(env);
    assert_int_equal(th_stop(&one, SIGTERM, TH_TIMEOUT_MS), 0);
    assert_int_equal(th_stop(&two, SIGTERM, TH_TIMEOUT_MS), 0);
}

static int restore_hosts(void **state)
{
    if (saved_hosts != NULL) {
        FILE *f = fopen(HOSTS, "w");
        if (f != NULL) {
            fputs(saved_hosts, f);
            fclose(f);
        }
        saved_hosts = NULL;
    }
    return th_teardown(state);
}

int main(void)
{
    th_filter_from_env();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_name_follows_dns_and_survives_failed_lookup, th_setup, restore_hosts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
