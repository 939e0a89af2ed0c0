/* The command lines of weir and weirctl (SPEC §1, §2): usage, version, exit codes, error lines naming the flag or
 * FILE:LINE, `weir -t` validating without binding, and a config file combined with flags on a running weir. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

#define MAX_ARGS 32

/* Runs weir with the NULL-terminated arguments into <r>. */
static void run_bin(th_env_t *env, th_run_t *r, const char *bin, va_list ap)
{
    char *argv[MAX_ARGS];
    int n = 0;
    argv[n++] = (char *)bin;
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL) {
        assert_true(n < MAX_ARGS - 1);
        argv[n++] = (char *)a;
    }
    argv[n] = NULL;
    th_run(env, r, argv);
}

static void run_weir(th_env_t *env, th_run_t *r, ...)
{
    va_list ap;
    va_start(ap, r);
    run_bin(env, r, th_weir_bin(), ap);
    va_end(ap);
}

static void run_weirctl(th_env_t *env, th_run_t *r, ...)
{
    va_list ap;
    va_start(ap, r);
    run_bin(env, r, th_weirctl_bin(), ap);
    va_end(ap);
}

/* The contract of a rejected command line: exit 2, exactly one line on stderr that holds <needle>, nothing on
 * stdout. */
#define assert_rejected(r, needle) assert_rejected_at((r), (needle), __FILE__, __LINE__)
static void assert_rejected_at(const th_run_t *r, const char *needle, const char *file, int line)
{
    if (r->status == 2 && th_count_lines(r->err) == 1 && strstr(r->err, needle) != NULL && r->out[0] == '\0' &&
        !th_has_sanitizer_report(r->err))
        return;
    print_error("ERROR: want exit 2 and one stderr line with \"%s\"; got exit %d, stderr \"%s\", stdout \"%s\"\n",
                needle, r->status, r->err, r->out);
    _fail(file, line);
}

static void test_weir_help(void **state)
{
    th_env_t *env = *state;
    const char *flags[] = {"-h", "--help"};
    for (size_t i = 0; i < 2; i++) {
        th_run_t r;
        run_weir(env, &r, flags[i], NULL);
        assert_int_equal(r.status, 0);
        assert_non_null(th_strcasestr(r.out, "usage"));
        assert_non_null(strstr(r.out, "-c"));
        assert_false(th_has_sanitizer_report(r.err));
    }
}

static void test_weir_version(void **state)
{
    th_env_t *env = *state;
    const char *flags[] = {"-V", "--version"};
    for (size_t i = 0; i < 2; i++) {
        th_run_t r;
        run_weir(env, &r, flags[i], NULL);
        assert_int_equal(r.status, 0);
        assert_non_null(strstr(r.out, WEIR_VERSION));
        assert_false(th_has_sanitizer_report(r.err));
    }
}

static void test_weir_bad_flag(void **state)
{
    th_env_t *env = *state;
    th_run_t r;

    run_weir(env, &r, "--no-such-flag", "1", NULL);
    assert_rejected(&r, "no-such-flag");
    run_weir(env, &r, "-Z", NULL);
    assert_rejected(&r, "-Z");
    run_weir(env, &r, "--workers", "banana", NULL);
    assert_rejected(&r, "workers");
    run_weir(env, &r, "--connect-timeout", "10", NULL); /* a duration needs a unit */
    assert_rejected(&r, "connect-timeout");
    run_weir(env, &r, "--listen", NULL); /* value missing */
    assert_rejected(&r, "listen");
    run_weir(env, &r, "--weight", "canary", NULL); /* the second value missing */
    assert_rejected(&r, "weight");
    run_weir(env, &r, "--upstream", "Not_A_Variant", "127.0.0.1:1", NULL);
    assert_rejected(&r, "upstream");
}

/* Each file has its bad line at line 4, after a comment, a blank line and a good line. */
static const struct {
    const char *line;
} bad_lines[] = {
    {"no-such-directive 1"},
    {"connect-timeout banana"},
    {"listen 127.0.0.1:99999"},
    {"weight canary 150"},
    {"upstream Bad_Name 127.0.0.1:80"},
    {"max-header-bytes lots"},
    {"stable"},
    {"sticky sometimes"},
    {"variant-header maybe"},
    {"log-level loud"},
};

static void test_weir_bad_config_value(void **state)
{
    th_env_t *env = *state;
    for (size_t i = 0; i < sizeof(bad_lines) / sizeof(bad_lines[0]); i++) {
        char name[32];
        snprintf(name, sizeof(name), "bad%zu.conf", i);
        char *text = th_fmt("# weir test config\n\nstable 127.0.0.1:1\n%s\nidle-timeout 5s\n", bad_lines[i].line);
        char *path = th_write_file(env, name, text);
        th_run_t r;
        run_weir(env, &r, "-c", path, NULL);
        assert_rejected(&r, th_fmt("%s:4:", path));
        /* -t validates the same way */
        run_weir(env, &r, "-t", "-c", path, NULL);
        assert_rejected(&r, th_fmt("%s:4:", path));
    }
}

static void test_weir_missing_config_file(void **state)
{
    th_env_t *env = *state;
    char *path = th_fmt("%s/does-not-exist.conf", env->dir);
    th_run_t r;
    run_weir(env, &r, "-t", "-c", path, NULL);
    assert_rejected(&r, path);
}

static void test_weir_t_validates_without_binding(void **state)
{
    th_env_t *env = *state;
    int port = th_free_port(), admin = th_free_port();
    char *sock = th_fmt("%s/t.sock", env->dir);
    char *path = th_write_file(env, "good.conf",
                               th_fmt("# a valid configuration\n"
                                      "listen 127.0.0.1:%d   # trailing comment\n"
                                      "\n"
                                      "admin 127.0.0.1:%d\n"
                                      "control %s\n"
                                      "stable 127.0.0.1:1\n"
                                      "canary 127.0.0.1:2\n"
                                      "weight canary 5\n"
                                      "connect-timeout 250ms\n"
                                      "max-header-bytes 16k\n"
                                      "workers 2\n",
                                      port, admin, sock));
    /* With both ports held by us, any attempt to bind them would fail; -t must not try. */
    int l1 = th_occupy(port, false), l2 = th_occupy(admin, false);
    th_run_t r;
    run_weir(env, &r, "-t", "-c", path, NULL);
    close(l1);
    close(l2);
    if (r.status != 0)
        fail_msg("weir -t exited %d: %s", r.status, r.err);
    assert_false(th_has_sanitizer_report(r.err));
    struct stat st;
    assert_int_equal(stat(sock, &st), -1); /* no control socket either */
    assert_int_equal(errno, ENOENT);

    /* A file that is valid on its own but made invalid by a flag. */
    run_weir(env, &r, "-t", "-c", path, "--weight", "canary", "101", NULL);
    assert_rejected(&r, "weight");
}

/* -t checks what start checks about the files the configuration names (SPEC §1): what -t accepts must start. */
static void test_weir_t_checks_named_files(void **state)
{
    th_env_t *env = *state;
    char *missing = th_fmt("%s/no-such-token", env->dir);
    char *blank = th_write_file(env, "blank-token", " \n");
    char *token = th_write_file(env, "token", "s3cret\n");
    char *ctl = th_fmt("127.0.0.1:%d", th_free_port());
    const char *bad_tokens[] = {missing, blank, env->dir /* a directory: unreadable as a file */};
    th_run_t r;

    for (size_t i = 0; i < sizeof(bad_tokens) / sizeof(bad_tokens[0]); i++) {
        char *conf =
            th_write_file(env, th_fmt("token%zu.conf", i),
                          th_fmt("stable 127.0.0.1:1\ncontrol-tcp %s\ncontrol-token-file %s\n", ctl, bad_tokens[i]));
        run_weir(env, &r, "-t", "-c", conf, NULL);
        assert_rejected(&r, th_fmt("%s:3: control-token-file: %s", conf, bad_tokens[i]));
        run_weir(env, &r, "-t", "--control-tcp", ctl, "--control-token-file", bad_tokens[i], NULL);
        assert_rejected(&r, th_fmt("--control-token-file: %s", bad_tokens[i]));
    }
    /* an access log in a directory that does not exist, or that is a directory */
    const char *bad_logs[] = {th_fmt("%s/no-such-dir/access.log", env->dir), env->dir};
    for (size_t i = 0; i < sizeof(bad_logs) / sizeof(bad_logs[0]); i++) {
        char *conf =
            th_write_file(env, th_fmt("log%zu.conf", i), th_fmt("stable 127.0.0.1:1\n\naccess-log %s\n", bad_logs[i]));
        run_weir(env, &r, "-t", "-c", conf, NULL);
        assert_rejected(&r, th_fmt("%s:3: access-log: %s", conf, bad_logs[i]));
    }
    /* valid ones pass, and -t creates no access log */
    char *log = th_fmt("%s/access.log", env->dir);
    run_weir(env, &r, "-t", "--control-tcp", ctl, "--control-token-file", token, "--access-log", log, NULL);
    if (r.status != 0)
        fail_msg("weir -t exited %d: %s", r.status, r.err);
    assert_int_equal(access(log, F_OK), -1);
}

/* A running weir takes its settings from the file and the flags: single-valued flags override the file, repeatable
 * ones add to it. */
static void test_weir_file_and_flags(void **state)
{
    th_env_t *env = *state;
    int a = th_upstream_start(env, "stable-a");
    int b = th_upstream_start(env, "stable-b");
    char *path =
        th_write_file(env, "run.conf", th_fmt("stable %s\nmax-header-bytes 1k\nvariant-header on\n", env->up[a].addr));
    th_weir_startl(env, "-c", path, "--stable", env->up[b].addr, "--max-header-bytes", "16k", NULL);

    /* A 2 KiB header passes only if the flag overrode the file's 1k. */
    char big[2049];
    memset(big, 'v', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    int seen_a = 0, seen_b = 0;
    th_conn_t *c = th_conn_open(env->port);
    for (int i = 0; i < 20; i++) {
        th_resp_t r = {0};
        assert_int_equal(th_conn_sendf(c, "GET / HTTP/1.1\r\nHost: test\r\nX-Big: %s\r\n\r\n", big), 0);
        assert_int_equal(th_conn_read_response(c, &r, false, TH_TIMEOUT_MS), 0);
        assert_int_equal(r.status, 200);
        const char *who = th_header(&r, "x-upstream");
        assert_non_null(who);
        seen_a += strcmp(who, "stable-a") == 0;
        seen_b += strcmp(who, "stable-b") == 0;
        /* variant-header from the file is kept */
        const char *v = th_header(&r, "x-weir-variant");
        assert_non_null(v);
        assert_string_equal(v, "stable");
        th_resp_free(&r);
    }
    assert_true(seen_a > 0);
    assert_true(seen_b > 0);
    assert_int_equal(seen_a + seen_b, 20);
    th_conn_close(c);
    th_weir_stop(env);
}

/* Two-valued directives take two arguments as flags too. */
static void test_weir_two_value_flags(void **state)
{
    th_env_t *env = *state;
    int s = th_upstream_start(env, "stable");
    int c = th_upstream_start(env, "canary");
    th_weir_startl(env, "--upstream", "stable", env->up[s].addr, "--upstream", "canary", env->up[c].addr, "--weight",
                   "canary", "100", NULL);
    for (int i = 0; i < 10; i++) {
        th_resp_t r = {0};
        th_get(env->port, "/", &r);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, "hello from canary\n");
    }
    assert_int_equal(th_upstream_stat(env, s, "/__count"), 0);
    th_weir_stop(env);
}

static void test_weirctl_help_version(void **state)
{
    th_env_t *env = *state;
    const char *help[] = {"-h", "--help"}, *version[] = {"-V", "--version"};
    for (size_t i = 0; i < 2; i++) {
        th_run_t r;
        run_weirctl(env, &r, help[i], NULL);
        assert_int_equal(r.status, 0);
        assert_non_null(th_strcasestr(r.out, "usage"));
        assert_false(th_has_sanitizer_report(r.err));
        run_weirctl(env, &r, version[i], NULL);
        assert_int_equal(r.status, 0);
        assert_non_null(strstr(r.out, WEIR_VERSION));
        assert_false(th_has_sanitizer_report(r.err));
    }
}

static void test_weirctl_cannot_connect(void **state)
{
    th_env_t *env = *state;
    th_run_t r;
    run_weirctl(env, &r, "-s", th_fmt("%s/nobody.sock", env->dir), "status", NULL);
    assert_int_equal(r.status, 2);
    assert_true(r.err[0] != '\0');
    assert_false(th_has_sanitizer_report(r.err));
}

static void test_weirctl_bad_flag(void **state)
{
    th_env_t *env = *state;
    th_run_t r;
    run_weirctl(env, &r, "--no-such-flag", NULL);
    assert_int_equal(r.status, 2);
    assert_int_equal(th_count_lines(r.err), 1);
    assert_non_null(strstr(r.err, "no-such-flag"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_weir_help, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_weir_version, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_weir_bad_flag, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_weir_bad_config_value, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_weir_missing_config_file, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_weir_t_validates_without_binding, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_weir_t_checks_named_files, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_weir_file_and_flags, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_weir_two_value_flags, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_weirctl_help_version, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_weirctl_cannot_connect, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_weirctl_bad_flag, th_setup, th_teardown),
    };
    th_filter_from_env();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
