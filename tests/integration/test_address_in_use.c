/* weir refuses to start (exit 1, one line naming the address) when another process already listens on one of its
 * listen, admin or control-tcp addresses (SPEC §1), whether that process set SO_REUSEPORT or not, while its own
 * workers still share their listeners. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "harness.h"

/* Runs weir (two workers) with <listen>, <admin> and the extra NULL-terminated flags; asserts it exits 1 with one
 * line on stderr that names <addr>. */
static void assert_refused(th_env_t *env, int listen, int admin, const char *addr, ...)
{
    const char *argv[24];
    size_t k = 0;
    va_list ap;
    th_run_t r;

    argv[k++] = th_weir_bin();
    argv[k++] = "--listen";
    argv[k++] = th_fmt("127.0.0.1:%d", listen);
    argv[k++] = "--admin";
    argv[k++] = th_fmt("127.0.0.1:%d", admin);
    argv[k++] = "--control";
    argv[k++] = th_fmt("%s/other.sock", env->dir);
    argv[k++] = "--workers";
    argv[k++] = "2";
    argv[k++] = "--stable";
    argv[k++] = "127.0.0.1:1";
    va_start(ap, addr);
    for (const char *a; k < 23 && (a = va_arg(ap, const char *)) != NULL;)
        argv[k++] = a;
    va_end(ap);
    argv[k] = NULL;
    th_run(env, &r, (char *const *)argv);
    if (r.status != 1 || th_count_lines(r.err) != 1 || strstr(r.err, addr) == NULL)
        fail_msg("weir on an address in use (%s): exit %d, stderr \"%s\"; want exit 1 and one line naming it", addr,
                 r.status, r.err);
}

static void test_second_weir_on_the_same_port(void **state)
{
    th_env_t *env = *state;
    int up = th_upstream_start(env, "stable");
    th_resp_t r = {0};

    th_weir_startl(env, "--stable", env->up[up].addr, "--workers", "2", NULL);
    /* another admin port and control socket: only the data port is shared */
    assert_refused(env, env->port, th_free_port(), th_fmt("127.0.0.1:%d", env->port), NULL);
    /* the first one is untouched, and its two workers still share their port */
    for (int i = 0; i < 20; i++) {
        th_get(env->port, "/bytes/10", &r);
        assert_int_equal(r.status, 200);
    }
    th_weir_stop(env);
}

static void test_foreign_listener_on_listen(void **state)
{
    th_env_t *env = *state;

    for (int reuseport = 0; reuseport <= 1; reuseport++) {
        int port = th_free_port(), fd = th_occupy(port, reuseport);
        assert_refused(env, port, th_free_port(), th_fmt("127.0.0.1:%d", port), NULL);
        close(fd);
    }
}

static void test_foreign_listener_on_admin(void **state)
{
    th_env_t *env = *state;

    for (int reuseport = 0; reuseport <= 1; reuseport++) {
        int port = th_free_port(), fd = th_occupy(port, reuseport);
        assert_refused(env, th_free_port(), port, th_fmt("127.0.0.1:%d", port), NULL);
        close(fd);
    }
}

static void test_foreign_listener_on_control_tcp(void **state)
{
    th_env_t *env = *state;
    char *token = th_write_file(env, "token", "s3cret\n");

    for (int reuseport = 0; reuseport <= 1; reuseport++) {
        int port = th_free_port(), fd = th_occupy(port, reuseport);
        assert_refused(env, th_free_port(), th_free_port(), th_fmt("127.0.0.1:%d", port), "--control-tcp",
                       th_fmt("127.0.0.1:%d", port), "--control-token-file", token, NULL);
        close(fd);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_second_weir_on_the_same_port, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_foreign_listener_on_listen, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_foreign_listener_on_admin, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_foreign_listener_on_control_tcp, th_setup, th_teardown),
    };
    th_filter_from_env();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
