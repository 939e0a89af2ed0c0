/* The access log never holds up the proxy (SPEC §2 `access-log`): with its reader stalled (a full pipe), requests
 * are still answered, the lines that do not fit the buffer are dropped and counted in
 * weir_access_log_dropped_total, and every line is either written whole or counted. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

#define NREQ 400
#define PATH_LEN 2000 /* a line of about 2.2 KB: NREQ of them are far more than the pipe and the buffer hold */

/* The value of weir_access_log_dropped_total in /metrics; -1 when absent. */
static long dropped_metric(th_env_t *env)
{
    th_resp_t r = {0};
    th_get(env->admin_port, "/metrics", &r);
    assert_int_equal(r.status, 200);
    const char *p = strstr(r.body, "\nweir_access_log_dropped_total ");
    return p != NULL ? strtol(p + 31, NULL, 10) : -1;
}

static void test_stalled_log_does_not_stop_proxying(void **state)
{
    th_env_t *env = *state;
    char *fifo = th_fmt("%s/access.fifo", env->dir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    /* a reader that does not read (until the end): weir's writes fill the pipe, then block */
    int rfd = open(fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    assert_true(rfd >= 0);
    fcntl(rfd, F_SETPIPE_SZ, 4096);
    th_start_stable(env, "--access-log", fifo, NULL);
    if (!th_wait_port(env->admin_port, TH_TIMEOUT_MS, &env->weir))
        fail_msg("admin port not open");
    assert_int_equal(dropped_metric(env), 0);

    char *path = th_alloc(PATH_LEN + 1);
    path[0] = '/';
    memset(path + 1, 'a', PATH_LEN - 1);
    path[PATH_LEN] = '\0';
    char *req = th_fmt("GET %s HTTP/1.1\r\nHost: test\r\n\r\n", path);
    th_conn_t *c = th_conn_open(env->port);
    th_resp_t r = {0};
    for (int i = 0; i < NREQ; i++) {
        th_exchange(c, req, &r); /* fails the test when weir stops answering */
        assert_int_equal(r.status, 200);
    }
    th_conn_close(c);
    long dropped = dropped_metric(env);
    if (dropped <= 0)
        fail_msg("weir_access_log_dropped_total is %ld after %d lines into a stalled pipe", dropped, NREQ);

    /* now read: every line is whole, and the lines read plus the lines dropped are all the requests */
    int fl = fcntl(rfd, F_GETFL);
    fcntl(rfd, F_SETFL, fl & ~O_NONBLOCK);
    size_t cap = (size_t)NREQ * (PATH_LEN + 512), len = 0;
    char *text = th_alloc(cap);
    long lines = 0;
    struct pollfd p = {.fd = rfd, .events = POLLIN};
    while (lines + dropped < NREQ && len < cap && poll(&p, 1, TH_TIMEOUT_MS) > 0) {
        ssize_t n = read(rfd, text + len, cap - len);
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            lines += text[len + (size_t)i] == '\n';
        len += (size_t)n;
        dropped = dropped_metric(env);
    }
    if (lines + dropped != NREQ)
        fail_msg("%ld lines read and %ld dropped for %d requests", lines, dropped, NREQ);
    for (char *line = text, *eol; line < text + len; line = eol + 1) {
        eol = memchr(line, '\n', (size_t)(text + len - line));
        if (eol == NULL)
            fail_msg("a partial line at the end of the log");
        if (line[0] != '{' || eol[-1] != '}' || memmem(line, (size_t)(eol - line), path, PATH_LEN) == NULL)
            fail_msg("a broken line in the log: %.80s...", line);
    }
    print_message("%ld lines written, %ld dropped\n", lines, dropped);
    close(rfd);
    th_weir_stop(env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_stalled_log_does_not_stop_proxying, th_setup, th_teardown),
    };
    th_filter_from_env();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
