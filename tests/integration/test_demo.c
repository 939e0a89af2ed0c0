/* `make demo` (tests/upstream/demo.sh): starts two upstreams and weir ahead of them, prints what to try, and stops
 * all three on Ctrl-C (SIGINT) with exit status 0. Run here on free ports so it cannot clash with anything. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <string.h>
#include <libgen.h>

#include <cmocka.h>

#include "harness.h"

typedef struct {
    int port;
} port_arg_t;

static bool port_closed(void *arg)
{
    return !th_port_open(((port_arg_t *)arg)->port);
}

static bool printed_hints(void *arg)
{
    return strstr(th_slurp((const char *)arg), "Try, in another terminal") != NULL;
}

static void test_demo_serves_and_stops_on_sigint(void **state)
{
    th_env_t *env = *state;
    int port = th_free_port(), admin = th_free_port(), stable = th_free_port(), canary = th_free_port();
    char *bindir = th_strdup(th_weir_bin());
    th_proc_t demo = {0};
    th_resp_t r = {0};
    int seen_canary = 0, seen_stable = 0;

    bindir = dirname(bindir);
    char *const argv[] = {"/usr/bin/env",
                          th_fmt("B=%s", bindir),
                          th_fmt("WEIR_DEMO_PORT=%d", port),
                          th_fmt("WEIR_DEMO_ADMIN=%d", admin),
                          th_fmt("WEIR_DEMO_STABLE=%d", stable),
                          th_fmt("WEIR_DEMO_CANARY=%d", canary),
                          th_fmt("WEIR_DEMO_CONTROL=%s/demo.sock", env->dir),
                          "bash",
                          "tests/upstream/demo.sh",
                          NULL};
    th_spawn(env, &demo, "demo", argv);
    assert_true(th_wait_port(port, 10000, &demo));
    assert_true(th_wait_port(admin, 10000, &demo));
    /* The script prints what to try once it has seen weir listen. */
    assert_true(th_poll(printed_hints, th_fmt("%s/demo.out", env->dir), 10000));

    /* 10 % to the canary: both answer within a few hundred requests, each tagged by x-weir-variant. */
    for (int i = 0; i < 400 && !(seen_canary && seen_stable); i++) {
        th_get(port, "/", &r);
        assert_int_equal(r.status, 200);
        const char *v = th_header(&r, "x-weir-variant");
        assert_non_null(v);
        if (strcmp(v, "canary") == 0) {
            assert_string_equal(r.body, "hello from canary\n");
            seen_canary = 1;
        } else {
            assert_string_equal(v, "stable");
            assert_string_equal(r.body, "hello from stable\n");
            seen_stable = 1;
        }
    }
    assert_true(seen_canary && seen_stable);
    th_get(admin, "/healthz", &r);
    assert_int_equal(r.status, 200);

    /* Ctrl-C: the script stops weir and both upstreams and exits 0. */
    assert_int_equal(th_stop(&demo, SIGINT, 15000), 0);
    port_arg_t a = {port}, s = {stable}, c = {canary};
    assert_true(th_poll(port_closed, &a, 5000));
    assert_true(th_poll(port_closed, &s, 5000));
    assert_true(th_poll(port_closed, &c, 5000));
}

int main(void)
{
    th_filter_from_env();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_demo_serves_and_stops_on_sigint, th_setup, th_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
