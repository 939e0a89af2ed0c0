/* `workers auto` through the real binary (SPEC §2): one worker per CPU the process may use, not per CPU of the
 * machine. weir is started under `taskset -c CPU` (a wrapper script execs taskset, which execs weir, so the pid the
 * harness signals is weir's) and `status` on the control socket reports the workers it started. */
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "harness.h"

/* The "workers N" line of `weirctl status`. */
static long status_workers(th_env_t *env)
{
    th_run_t r = {0};
    char *const argv[] = {(char *)th_weirctl_bin(), "-s", env->sock, "status", NULL};
    th_run(env, &r, argv);
    if (r.status != 0)
        fail_msg("weirctl status: exit %d: %s", r.status, r.err);
    const char *w = strstr(r.out, "workers ");
    if (w == NULL || (w != r.out && w[-1] != '\n'))
        fail_msg("no workers line in: %s", r.out);
    return strtol(w + 8, NULL, 10);
}

/* The first CPU of this process's affinity mask (the one taskset pins weir to), and how many the mask holds. */
static int first_cpu(int *count)
{
    cpu_set_t set;
    assert_int_equal(sched_getaffinity(0, sizeof(set), &set), 0);
    *count = CPU_COUNT(&set);
    for (int i = 0; i < CPU_SETSIZE; i++)
        if (CPU_ISSET(i, &set))
            return i;
    fail_msg("empty affinity mask");
    return -1;
}

/* Starts weir with <args> (NULL-terminated, at most 8) through `taskset -c <cpus>`. */
static void start_pinned(th_env_t *env, const char *cpus, const char *const *args)
{
    const char *real = th_weir_bin();
    char *script =
        th_write_file(env, "weir-pinned.sh", th_fmt("#!/bin/sh\nexec taskset -c %s '%s' \"$@\"\n", cpus, real));
    const char *argv[16];
    size_t n = 0;

    assert_int_equal(chmod(script, 0700), 0);
    while (args[n] != NULL && n < 8) {
        argv[n] = args[n];
        n++;
    }
    argv[n] = NULL;
    char *saved = th_strdup(real);
    setenv("WEIR_BIN", script, 1);
    th_weir_start(env, argv);
    setenv("WEIR_BIN", saved, 1);
}

static void test_auto_is_one_under_taskset(void **state)
{
    th_env_t *env = *state;
    int n, cpu = first_cpu(&n);
    int u = th_upstream_start(env, "stable");
    const char *args[] = {"--workers", "auto", "--stable", env->up[u].addr, NULL};

    start_pinned(env, th_fmt("%d", cpu), args);
    assert_int_equal(status_workers(env), 1);
    /* and it serves */
    th_resp_t r = {0};
    th_get(env->port, "/", &r);
    assert_int_equal(r.status, 200);
    th_weir_stop(env);
}

/* An explicit count is kept whatever the mask; auto without a mask is at least 1 and at most the mask's CPUs (a
 * cgroup quota may lower it). */
static void test_explicit_and_unpinned(void **state)
{
    th_env_t *env = *state;
    int n, cpu = first_cpu(&n);
    int u = th_upstream_start(env, "stable");
    const char *args[] = {"--workers", "3", "--stable", env->up[u].addr, NULL};

    start_pinned(env, th_fmt("%d", cpu), args);
    assert_int_equal(status_workers(env), 3);
    th_weir_stop(env);

    th_weir_startl(env, "--workers", "auto", "--stable", env->up[u].addr, NULL);
    long w = status_workers(env);
    assert_true(w >= 1 && w <= n);
    th_weir_stop(env);
}

int main(void)
{
    th_filter_from_env();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_auto_is_one_under_taskset, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_explicit_and_unpinned, th_setup, th_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
