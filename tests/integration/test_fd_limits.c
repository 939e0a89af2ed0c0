/* Running out of file descriptors. Under `ulimit -n 256` with two workers and a flood of 1,000 connections, weir
 * keeps serving the clients it has, lets the others wait in the backlog, does not flood its log or spin, and
 * recovers once the flood ends: a new request is served and no socket is left in CLOSE-WAIT. When accept() itself
 * fails for lack of descriptors, the listener pauses and is tried again, with one warning per second. With too
 * few descriptors to start, weir says so in one line and exits 1. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "common/macros.h"
#include "harness.h"

#define NFLOOD 1000
#define FLOOD_REQ "GET /bytes/10 HTTP/1.1\r\nHost: test\r\n\r\n"
#define GET_KA "GET /bytes/100 HTTP/1.1\r\nHost: test\r\n\r\n"

/* 1,000 client connections driven without blocking: each sends a request once connected (when <requests>), and
 * the next one when the response came. */
typedef struct flood_s {
    int ep;
    int fd[NFLOOD];
    int requests;
    long responses;
} flood_t;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The test itself holds the flood's 1,000 sockets. */
static void raise_own_limit(void)
{
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur < NFLOOD + 200 && rl.rlim_max >= NFLOOD + 200) {
        rl.rlim_cur = NFLOOD + 200;
        assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
    }
    if (rl.rlim_cur < NFLOOD + 200)
        fail_msg("the test needs %d descriptors; RLIMIT_NOFILE allows %llu", NFLOOD + 200,
                 (unsigned long long)rl.rlim_cur);
}

static void flood_open(flood_t *f, int port, int requests)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    memset(f, 0, sizeof(*f));
    f->requests = requests;
    f->ep = epoll_create1(EPOLL_CLOEXEC);
    assert_true(f->ep >= 0);
    for (int i = 0; i < NFLOOD; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        assert_true(fd >= 0);
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 && errno != EINPROGRESS)
            fail_msg("flood connect %d: %s", i, strerror(errno));
        struct epoll_event ev = {.events = requests ? EPOLLOUT : EPOLLIN, .data.u32 = (uint32_t)i};
        assert_int_equal(epoll_ctl(f->ep, EPOLL_CTL_ADD, fd, &ev), 0);
        f->fd[i] = fd;
    }
}

/* Drives the flood for <ms> milliseconds. */
static void flood_pump(flood_t *f, int ms)
{
    uint64_t end = now_ms() + (uint64_t)ms;
    struct epoll_event evs[256];
    char buf[4096];

    for (uint64_t t = now_ms(); t < end; t = now_ms()) {
        int n = epoll_wait(f->ep, evs, 256, (int)(end - t));
        for (int k = 0; k < n; k++) {
            int i = (int)evs[k].data.u32, fd = f->fd[i];
            struct epoll_event ev = {.data.u32 = (uint32_t)i};
            if (fd < 0)
                continue;
            if (evs[k].events & EPOLLOUT) {
                /* connected (or failed: the read below sees it) */
                if (f->requests && write(fd, FLOOD_REQ, sizeof(FLOOD_REQ) - 1) < 0 && errno != EAGAIN) {
                    epoll_ctl(f->ep, EPOLL_CTL_DEL, fd, NULL);
                    continue;
                }
                ev.events = EPOLLIN;
                epoll_ctl(f->ep, EPOLL_CTL_MOD, fd, &ev);
                continue;
            }
            ssize_t r = read(fd, buf, sizeof(buf));
            if (r > 0) {
                f->responses++;
                ev.events = EPOLLOUT; /* the next request */
                epoll_ctl(f->ep, EPOLL_CTL_MOD, fd, &ev);
            } else if (r == 0 || errno != EAGAIN) {
                epoll_ctl(f->ep, EPOLL_CTL_DEL, fd, NULL);
            }
        }
    }
}

static void flood_close(flood_t *f)
{
    for (int i = 0; i < NFLOOD; i++)
        if (f->fd[i] >= 0)
            close(f->fd[i]);
    close(f->ep);
}

typedef struct {
    th_env_t *env;
    const char *needle;
} log_arg_t;

static bool log_has(void *arg)
{
    log_arg_t *a = arg;
    char *log = th_slurp(a->env->weir.err);
    bool yes = strstr(log, a->needle) != NULL;
    th_free(log);
    return yes;
}

/* Sockets of weir's data port in CLOSE-WAIT: the client closed, weir has not (accepted or not). */
static int close_wait_count(int port)
{
    static const char *const files[] = {"/proc/net/tcp", "/proc/net/tcp6"};
    int n = 0;

    for (size_t k = 0; k < 2; k++) {
        FILE *fp = fopen(files[k], "r");
        char line[512];
        if (fp == NULL)
            continue;
        while (fgets(line, sizeof(line), fp) != NULL) {
            char local[128];
            unsigned st;
            /* "  sl  local_address rem_address   st ..." with addresses as HEXADDR:HEXPORT */
            if (sscanf(line, " %*d: %127s %*s %x", local, &st) != 2)
                continue;
            char *colon = strrchr(local, ':');
            if (colon != NULL && strtol(colon + 1, NULL, 16) == port && st == 0x08)
                n++;
        }
        fclose(fp);
    }
    return n;
}

static bool no_close_wait(void *arg)
{
    return close_wait_count(((th_env_t *)arg)->port) == 0;
}

static bool new_request_served(void *arg)
{
    th_resp_t r = {0};
    bool ok = th_try_get(((th_env_t *)arg)->port, "/bytes/10", &r) == 0 && r.status == 200;
    th_resp_free(&r);
    return ok;
}

/* After a flood: a new client is served and no socket is left in CLOSE-WAIT. */
static void assert_recovered(th_env_t *env, th_conn_t *ka)
{
    th_resp_t r = {0};

    if (!th_poll(new_request_served, env, TH_TIMEOUT_MS)) {
        th_dump_file(env->weir.err);
        fail_msg("no new request served within %d ms after the flood closed", TH_TIMEOUT_MS);
    }
    if (!th_poll(no_close_wait, env, TH_TIMEOUT_MS))
        fail_msg("%d sockets of port %d still in CLOSE-WAIT %d ms after the flood closed", close_wait_count(env->port),
                 env->port, TH_TIMEOUT_MS);
    th_exchange(ka, GET_KA, &r);
    assert_int_equal(r.status, 200);
}

static void test_flood_under_ulimit_256(void **state)
{
    th_env_t *env = *state;
    int up = th_upstream_start(env, "stable");
    log_arg_t clamped = {env, "max-connections 10000 lowered to"};
    th_resp_t r = {0};
    flood_t f;

    raise_own_limit();
    env->nofile = 256;
    th_weir_startl(env, "--stable", env->up[up].addr, "--workers", "2", NULL);
    env->nofile = 0;

    th_conn_t *ka = th_conn_open(env->port);
    th_exchange(ka, GET_KA, &r);
    assert_int_equal(r.status, 200);

    flood_open(&f, env->port, 1);
    for (int round = 0; round < 5; round++) {
        flood_pump(&f, 300);
        /* the client weir had before the flood is still answered during it */
        th_exchange(ka, GET_KA, &r);
        assert_int_equal(r.status, 200);
    }
    assert_true(f.responses > 0); /* and the flood got its share */

    char *log = th_slurp(env->weir.err);
    int nlines = th_count_lines(log);
    if (nlines > 20) {
        th_dump_file(env->weir.err);
        fail_msg("weir wrote %d lines to stderr during the flood", nlines);
    }
    th_free(log);

    flood_close(&f);
    assert_recovered(env, ka);
    th_conn_close(ka);
    th_weir_stop(env);
    /* weir sized its connections to the limit, and said so */
    assert_true(log_has(&clamped));
}

/* The largest N of the "(and N more accept errors" notes of weir's warnings. */
static long max_suppressed(const char *log)
{
    const char *p = log;
    long most = 0;

    while ((p = strstr(p, "(and ")) != NULL) {
        p += 5;
        most = MAX(most, strtol(p, NULL, 10));
    }
    return most;
}

static void test_accept_pauses_without_descriptors(void **state)
{
    th_env_t *env = *state;
    int up = th_upstream_start(env, "stable");
    log_arg_t failed = {env, "accept: too many open files"}, again = {env, "more accept errors since the last"};
    struct rlimit rl = {256, 256};
    th_resp_t r = {0};
    flood_t f;

    raise_own_limit();
    /* Sized for the default limit; the limit drops under it later, as when something else takes the descriptors. */
    th_weir_startl(env, "--stable", env->up[up].addr, "--workers", "2", "--header-timeout", "1m", NULL);
    th_conn_t *ka = th_conn_open(env->port);
    th_exchange(ka, GET_KA, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(prlimit(env->weir.pid, RLIMIT_NOFILE, &rl, NULL), 0);

    flood_open(&f, env->port, 0);
    assert_true(th_poll(log_has, &failed, TH_TIMEOUT_MS));
    /* The failing accept is retried and the failures counted: a warning with a count means a second went by. */
    assert_true(th_poll(log_has, &again, TH_TIMEOUT_MS));
    th_exchange(ka, GET_KA, &r);
    assert_int_equal(r.status, 200);

    char *log = th_slurp(env->weir.err);
    int nlines = th_count_lines(log);
    long most = max_suppressed(log);
    /* Retries are paced (every 100 ms or when a connection closes, and no connection closes here): a loop that
     * retried at once would count failures by the hundred thousand per second. */
    if (nlines > 40 || most > 1000) {
        th_dump_file(env->weir.err);
        fail_msg("%d lines on stderr, up to %ld accept failures between two warnings", nlines, most);
    }
    th_free(log);

    flood_close(&f);
    assert_recovered(env, ka);
    th_conn_close(ka);
    th_weir_stop(env);
}

/* Too few descriptors: one line and exit 1, never a crash or a weir that cannot serve. */
static void test_too_few_descriptors_to_start(void **state)
{
    static const int limits[] = {8, 16, 24, 32, 48, 64, 128};
    th_env_t *env = *state;
    int up = th_upstream_start(env, "stable"), refused = 0, served = 0;

    for (size_t k = 0; k < sizeof(limits) / sizeof(limits[0]); k++) {
        char *name = th_fmt("weir-nofile-%d", limits[k]);
        env->port = th_free_port();
        env->admin_port = th_free_port();
        const char *argv[] = {th_weir_bin(),
                              "--listen",
                              th_fmt("127.0.0.1:%d", env->port),
                              "--admin",
                              th_fmt("127.0.0.1:%d", env->admin_port),
                              "--control",
                              env->sock,
                              "--workers",
                              "2",
                              "--stable",
                              env->up[up].addr,
                              NULL};
        env->nofile = limits[k];
        th_spawn(env, &env->weir, name, (char *const *)argv);
        env->nofile = 0;
        if (th_wait_port(env->port, TH_TIMEOUT_MS, &env->weir)) {
            th_resp_t r = {0};
            th_get(env->port, "/bytes/10", &r);
            assert_int_equal(r.status, 200);
            th_weir_stop(env);
            served++;
            continue;
        }
        int st = th_wait_exit(&env->weir, TH_TIMEOUT_MS);
        char *log = th_slurp(env->weir.err);
        if (st != 1 || th_count_lines(log) != 1 || strncmp(log, "weir: ", 6) != 0 || th_has_sanitizer_report(log)) {
            th_dump_file(env->weir.err);
            fail_msg("with RLIMIT_NOFILE %d weir neither served nor exited 1 with one line (status %d)", limits[k], st);
        }
        th_free(log);
        refused++;
    }
    /* both ends of the range were seen */
    assert_true(refused > 0);
    assert_true(served > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_flood_under_ulimit_256, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_accept_pauses_without_descriptors, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_too_few_descriptors_to_start, th_setup, th_teardown),
    };
    th_filter_from_env();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
