/* Steady state allocates nothing: once a worker's freelists have warmed up (connections, request cycles, upstream
 * connections, I/O buffers), serving more requests on the same connections takes no object from malloc. weir's
 * worker tick logs its malloc count at debug level; the count after warm-up must equal the count after thousands
 * more requests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "harness.h"

#define NCONN 8

/* The last "objects from malloc" figure in weir's log, and how many such lines there are. */
static long last_count(th_env_t *env, int *nlines)
{
    char *log = th_slurp(env->weir.err);
    const char *p = log, *hit;
    long v = -1;

    *nlines = 0;
    while ((hit = strstr(p, " objects from malloc")) != NULL) {
        const char *q = hit;
        while (q > log && q[-1] >= '0' && q[-1] <= '9')
            q--;
        v = strtol(q, NULL, 10);
        (*nlines)++;
        p = hit + 1;
    }
    return v;
}

typedef struct {
    th_env_t *env;
    int after; /* wait for a line past this many */
} tick_arg_t;

static bool new_tick(void *arg)
{
    tick_arg_t *t = arg;
    int n;

    last_count(t->env, &n);
    return n > t->after + 1; /* one more than the next: that tick surely ran after the last request */
}

static void serve(th_conn_t **c, int n)
{
    th_resp_t r = {0};

    for (int i = 0; i < n; i++) {
        assert_int_equal(th_conn_sendf(c[i % NCONN], "GET /bytes/%d HTTP/1.1\r\nHost: test\r\n\r\n", 100 + i % 3000), 0);
        assert_int_equal(th_conn_read_response(c[i % NCONN], &r, false, TH_TIMEOUT_MS), 0);
        assert_int_equal(r.status, 200);
    }
}

static void test_no_allocation_in_steady_state(void **state)
{
    th_env_t *env = *state;
    int up = th_upstream_start(env, "stable");
    th_conn_t *c[NCONN];
    tick_arg_t t = {env, 0};
    long warm, after;
    int n;

    /* A short idle-timeout makes the tick (and its log line) frequent; nothing here stays idle that long. */
    th_weir_startl(env, "--stable", env->up[up].addr, "--log-level", "debug", "--idle-timeout", "2s", NULL);
    for (int i = 0; i < NCONN; i++)
        c[i] = th_conn_open(env->port);
    serve(c, 400);
    last_count(env, &t.after);
    assert_true(th_poll(new_tick, &t, 10000));
    warm = last_count(env, &n);
    assert_true(warm > 0); /* the warm-up did allocate: the figure is live */

    serve(c, 4000);
    t.after = n;
    assert_true(th_poll(new_tick, &t, 10000));
    after = last_count(env, &n);
    if (after != warm)
        fail_msg("%ld objects from malloc after warm-up, %ld after 4,000 more requests", warm, after);
    for (int i = 0; i < NCONN; i++)
        th_conn_close(c[i]);
    th_weir_stop(env);
}

int main(void)
{
    th_filter_from_env();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_no_allocation_in_steady_state, th_setup, th_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
