/* DNS re-resolution (SPEC §2 upstream, resolve-interval): an upstream given by name is resolved at start and again
 * every resolve-interval, off the worker loops; when the name moves, traffic follows; when a lookup fails, the last
 * good address stays; every address of a name (A and AAAA) is an endpoint; a name that does not resolve is not
 * fatal: its variant answers 503 until it does.
 *
 * Every weir here runs in a mount namespace of its own (unshare -m) where the test's files are bind-mounted over
 * /etc/hosts, /etc/nsswitch.conf and /etc/resolv.conf: the names are made up and live in the test's own hosts file,
 * nothing touches the machine's, parallel runs do not see each other's names, and a crashed test leaves nothing
 * behind. By default names come from that hosts file only (no DNS traffic); one test points DNS at a server of its
 * own that never answers. That needs root (CAP_SYS_ADMIN); without it, the tests are skipped. */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

#define CTL_TIMEOUT_MS 10000
#define PER_SET_MAX 60 /* addresses of one `set upstream` (a control line has at most 64 words) */

static char real_weir[600];  /* the binary under test */
static char hosts_path[600]; /* the running test's hosts file, seen by its weir as /etc/hosts */
static const char *name_ = "weir-test-reresolve.invalid";

/* Writes the test's hosts file: localhost plus <extra>. Truncated in place, so the bind mount keeps showing it. */
static void write_hosts(const char *extra)
{
    FILE *f = fopen(hosts_path, "w");

    assert_non_null(f);
    fputs("127.0.0.1 localhost\n::1 localhost\n", f);
    if (extra != NULL)
        fputs(extra, f);
    assert_int_equal(fclose(f), 0);
}

/* Skips the test unless a mount namespace can be had; makes the test's hosts, nsswitch.conf (<nss> "hosts:" line)
 * and resolv.conf (<resolv>, NULL: empty) files. */
static void ns_prepare(th_env_t *env, const char *nss, const char *resolv)
{
    if (geteuid() != 0)
        skip();
    snprintf(hosts_path, sizeof(hosts_path), "%s/hosts", env->dir);
    write_hosts(NULL);
    th_write_file(env, "nsswitch.conf", th_fmt("hosts: %s\n", nss));
    th_write_file(env, "resolv.conf", resolv != NULL ? resolv : "");
}

/* th_weir_start() with weir inside its own mount namespace, the test's files mounted over the system's. unshare
 * and sh exec weir in turn, so the pid the harness signals is weir's. */
static void weir_start_ns(th_env_t *env, const char *const args[])
{
    char *wrap =
        th_write_file(env, "weir-ns",
                      th_fmt("#!/bin/sh\nexec unshare -m sh -c 'mount --bind \"$0/hosts\" /etc/hosts && "
                             "mount --bind \"$0/nsswitch.conf\" /etc/nsswitch.conf && "
                             "mount --bind \"$0/resolv.conf\" /etc/resolv.conf && exec \"$@\"' '%s' '%s' \"$@\"\n",
                             env->dir, real_weir));

    assert_int_equal(chmod(wrap, 0755), 0);
    setenv("WEIR_BIN", wrap, 1);
    th_weir_start(env, args);
    setenv("WEIR_BIN", real_weir, 1);
}

/* th_setup(), and WEIR_BIN back to the binary under test should a failed start have left the wrapper there. */
static int setup(void **state)
{
    setenv("WEIR_BIN", real_weir, 1);
    return th_setup(state);
}

static void weir_start_nsl(th_env_t *env, ...)
{
    const char *args[64];
    size_t n = 0;
    va_list ap;

    va_start(ap, env);
    while ((args[n] = va_arg(ap, const char *)) != NULL)
        assert_true(++n < sizeof(args) / sizeof(args[0]));
    va_end(ap);
    weir_start_ns(env, args);
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

    ns_prepare(env, "files", NULL);

    char *a1 = th_fmt("127.0.0.1:%d", port), *a2 = th_fmt("127.0.0.2:%d", port);
    char *const argv1[] = {(char *)th_upstream_bin(), "--listen", a1, "--name", "first", NULL};
    char *const argv2[] = {(char *)th_upstream_bin(), "--listen", a2, "--name", "second", NULL};
    th_spawn(env, &one, "first", argv1);
    th_spawn(env, &two, "second", argv2);
    assert_true(th_wait_port(port, TH_TIMEOUT_MS, &one));

    write_hosts(th_fmt("127.0.0.1 %s\n", name_));
    weir_start_nsl(env, "--stable", th_fmt("%s:%d", name_, port), "--resolve-interval", "100ms", NULL);
    served_arg_t to_first = {env, "first"};
    assert_true(th_poll(served_by, &to_first, 10000)); /* looked up in the background: 503 until then */

    /* The name moves: within a few intervals, requests reach the new address. */
    write_hosts(th_fmt("127.0.0.2 %s\n", name_));
    served_arg_t to_second = {env, "second"};
    assert_true(th_poll(served_by, &to_second, 10000));

    /* The name disappears: lookups fail, the last good address keeps serving (and weir says so in its log). */
    write_hosts(NULL);
    assert_true(th_poll(lookup_failed, env, 10000));
    for (int i = 0; i < 20; i++)
        assert_true(served_by(&to_second));

    th_weir_stop(env);
    assert_int_equal(th_stop(&one, SIGTERM, TH_TIMEOUT_MS), 0);
    assert_int_equal(th_stop(&two, SIGTERM, TH_TIMEOUT_MS), 0);
}

/* Runs one control request through weirctl and returns its stdout (the reply's data lines); it must succeed. */
static char *ctl(th_env_t *env, const char *const *args)
{
    const char *argv[PER_SET_MAX + 8] = {th_weirctl_bin(), "-s", env->sock};
    size_t n = 3;
    th_run_t r = {0};

    while (*args != NULL)
        argv[n++] = *args++;
    argv[n] = NULL;
    th_run(env, &r, (char *const *)argv);
    if (r.status != 0)
        fail_msg("weirctl %s %s: exit %d: %s", argv[3], argv[4], r.status, r.err);
    return r.out;
}

static char *show_upstreams(th_env_t *env)
{
    static const char *const args[] = {"show", "upstreams", NULL};
    return ctl(env, args);
}

typedef struct {
    th_env_t *env;
    const char *want;
} shows_arg_t;

static bool shows(void *arg)
{
    shows_arg_t *a = arg;
    return strcmp(show_upstreams(a->env), a->want) == 0;
}

/* `show upstreams` holds exactly the two lines of <want> ("LINE\nLINE\n"), in either order. */
static bool shows_both(void *arg)
{
    shows_arg_t *a = arg;
    const char *nl = strchr(a->want, '\n') + 1;
    char *got = show_upstreams(a->env);
    return strcmp(got, a->want) == 0 || strcmp(got, th_fmt("%s%.*s", nl, (int)(nl - a->want), a->want)) == 0;
}

/* A name that does not resolve does not stop weir: its variant has no endpoint and answers 503, `show upstreams`
 * says `unresolved`, and the rest of the routing works. */
static void test_unresolvable_name_not_fatal(void **state)
{
    th_env_t *env = *state;
    th_resp_t r = {0};

    ns_prepare(env, "files", NULL);
    assert_int_equal(th_upstream_start(env, "stable"), 0);
    weir_start_nsl(env, "--stable", env->up[0].addr, "--canary", "nonexistent.invalid:80", "--resolve-interval",
                   "100ms", NULL);
    assert_string_equal(show_upstreams(env),
                        th_fmt("canary nonexistent.invalid:80 unresolved\nstable %s up\n", env->up[0].addr));
    th_get(env->port, "/", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(th_header(&r, "x-upstream"), "stable");

    static const char *const w100[] = {"set", "weight", "100", NULL};
    ctl(env, w100);
    th_get(env->port, "/", &r);
    assert_int_equal(r.status, 503);

    /* the same for a variant declared at run time */
    static const char *const exp1[] = {"set", "upstream", "exp1", "nonexistent.invalid:8080", NULL};
    static const char *const route[] = {"set", "header-route", "e", "to", "exp1", "header", "x-e", "exact", "1", NULL};
    ctl(env, exp1);
    ctl(env, route);
    assert_string_equal(show_upstreams(env), th_fmt("canary nonexistent.invalid:80 unresolved\nexp1 "
                                                    "nonexistent.invalid:8080 unresolved\nstable %s up\n",
                                                    env->up[0].addr));
    assert_int_equal(th_http(env->port, "GET / HTTP/1.1\r\nHost: x\r\nx-e: 1\r\n\r\n", &r), 0);
    assert_int_equal(r.status, 503);
    th_weir_stop(env);
}

/* With no name resolved yet there is nowhere to send anything: not ready (a Kubernetes pod applied before its
 * Services gets no traffic), every request 503, and still running. */
static void test_nothing_resolved_not_ready(void **state)
{
    th_env_t *env = *state;
    th_resp_t r = {0};

    ns_prepare(env, "files", NULL);
    weir_start_nsl(env, "--stable", "nonexistent.invalid:80", "--resolve-interval", "100ms", NULL);
    assert_string_equal(show_upstreams(env), "stable nonexistent.invalid:80 unresolved\n");
    th_get(env->port, "/", &r);
    assert_int_equal(r.status, 503);
    th_get(env->admin_port, "/readyz", &r);
    assert_int_equal(r.status, 503);
    th_get(env->admin_port, "/healthz", &r);
    assert_int_equal(r.status, 200);
    th_weir_stop(env);
}

/* A name that resolves later is retried every resolve-interval and then serves; until then its variant answers 503.
 */
static void test_name_resolves_later(void **state)
{
    th_env_t *env = *state;
    const char *name = "weir-test-late.invalid";
    th_resp_t r = {0};

    ns_prepare(env, "files", NULL);
    assert_int_equal(th_upstream_start(env, "stable"), 0);
    assert_int_equal(th_upstream_start(env, "late"), 1);
    const char *port = strchr(env->up[1].addr, ':') + 1;
    weir_start_nsl(env, "--stable", env->up[0].addr, "--canary", th_fmt("%s:%s", name, port), "--weight", "canary",
                   "100", "--resolve-interval", "100ms", NULL);
    assert_string_equal(show_upstreams(env),
                        th_fmt("canary %s:%s unresolved\nstable %s up\n", name, port, env->up[0].addr));
    th_get(env->port, "/", &r);
    assert_int_equal(r.status, 503);

    write_hosts(th_fmt("127.0.0.1 %s\n", name));
    shows_arg_t up = {env, th_fmt("canary %s up\nstable %s up\n", env->up[1].addr, env->up[0].addr)};
    assert_true(th_poll(shows, &up, CTL_TIMEOUT_MS));
    th_get(env->port, "/", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(th_header(&r, "x-upstream"), "late");
    write_hosts(NULL);
    th_weir_stop(env);
}

/* Lines of the access log <path> whose upstream is <addr> (NULL: all lines). */
static int log_count(const char *path, const char *addr)
{
    char *text = th_slurp(path), *save = NULL;
    int n = 0;

    for (char *l = strtok_r(text, "\n", &save); l != NULL; l = strtok_r(NULL, "\n", &save))
        n += addr == NULL || strstr(l, th_fmt("\"upstream\":\"%s\"", addr)) != NULL;
    return n;
}

static bool log_complete(void *path)
{
    return log_count(path, NULL) >= 20;
}

/* Every address of a name is an endpoint (A and AAAA, as a headless Service gives one per pod), requests go
 * round-robin over them, and re-resolution adds and removes endpoints. */
static void test_every_address_is_an_endpoint(void **state)
{
    th_env_t *env = *state;
    const char *name = "weir-test-multi.invalid";
    th_proc_t v4 = {0}, v6 = {0};
    int port = th_free_port();
    th_resp_t r = {0};

    ns_prepare(env, "files", NULL);
    char *a4 = th_fmt("127.0.0.1:%d", port), *a6 = th_fmt("[::1]:%d", port);
    char *const argv4[] = {(char *)th_upstream_bin(), "--listen", a4, "--name", "v4", NULL};
    char *const argv6[] = {(char *)th_upstream_bin(), "--listen", a6, "--name", "v6", NULL};
    th_spawn(env, &v4, "v4", argv4);
    th_spawn(env, &v6, "v6", argv6);
    assert_true(th_wait_port(port, TH_TIMEOUT_MS, &v4));

    write_hosts(th_fmt("127.0.0.1 %s\n::1 %s\n", name, name));
    char *log = th_fmt("%s/access.log", env->dir);
    weir_start_nsl(env, "--stable", th_fmt("%s:%d", name, port), "--resolve-interval", "100ms", "--access-log", log,
                   "--workers", "1", NULL); /* one worker even in the ThreadSanitizer run: the count below needs one
                                              round-robin */
    shows_arg_t both = {env, th_fmt("stable %s up\nstable %s up\n", a4, a6)};
    if (!th_poll(shows_both, &both, CTL_TIMEOUT_MS)) /* looked up in the background */
        fail_msg("show upstreams: \"%s\", want \"%s\" in any order", show_upstreams(env), both.want);
    int seen4 = 0, seen6 = 0;
    for (int i = 0; i < 20; i++) {
        th_get(env->port, "/", &r);
        assert_int_equal(r.status, 200);
        seen4 += strcmp(th_header(&r, "x-upstream"), "v4") == 0;
        seen6 += strcmp(th_header(&r, "x-upstream"), "v6") == 0;
    }
    assert_int_equal(seen4 + seen6, 20);
    assert_int_equal(seen4, 10); /* one worker: strict round-robin */
    /* the access log names the address each request went to, not the name they share */
    assert_true(th_poll(log_complete, log, TH_TIMEOUT_MS)); /* a line is written once its response was sent */
    assert_int_equal(log_count(log, a4), 10);
    assert_int_equal(log_count(log, a6), 10);

    /* one address goes away: its endpoint too; it comes back: so does the endpoint */
    write_hosts(th_fmt("::1 %s\n", name));
    shows_arg_t only6 = {env, th_fmt("stable %s up\n", a6)};
    assert_true(th_poll(shows, &only6, CTL_TIMEOUT_MS));
    for (int i = 0; i < 10; i++) {
        th_get(env->port, "/", &r);
        assert_string_equal(th_header(&r, "x-upstream"), "v6");
    }
    write_hosts(th_fmt("127.0.0.1 %s\n::1 %s\n", name, name));
    assert_true(th_poll(shows_both, &both, CTL_TIMEOUT_MS));

    write_hosts(NULL);
    th_weir_stop(env);
    assert_int_equal(th_stop(&v4, SIGTERM, TH_TIMEOUT_MS), 0);
    assert_int_equal(th_stop(&v6, SIGTERM, TH_TIMEOUT_MS), 0);
}

/* A UDP socket on a loopback address of this process's own (127.53.X.Y from the pid, so parallel runs do not share
 * it) port 53 that reads queries and never answers: a DNS server that hangs. Returns the socket and sets <ip>, or
 * -1 when the address cannot be had. */
static int hanging_dns(char *ip, size_t iplen)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(53)};
    unsigned pid = (unsigned)getpid();

    assert_true(fd >= 0);
    snprintf(ip, iplen, "127.53.%u.%u", (pid >> 8) & 255, (pid & 255) | 1);
    assert_int_equal(inet_pton(AF_INET, ip, &sa.sin_addr), 1);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* A resolver that never answers holds up neither start nor stop (SPEC §2: a name that does not resolve yet is not
 * fatal, its variant answers 503 until it does). The resolver's timeout is 30 s (resolv.conf), so the lookup
 * cannot end before then; every wait of this test is bounded by TH_TIMEOUT_MS (10 s), well below that. This is a
 * bound on a hang, not a speed threshold: weir listening, answering and exiting while the query is provably
 * unanswered (it reached the test's server, which never replies) shows that nothing waits for the lookup. */
static void test_hanging_resolver_holds_up_nothing(void **state)
{
    th_env_t *env = *state;
    char ip[32], buf[512];
    th_resp_t r = {0};
    int fd;

    if (geteuid() != 0)
        skip();
    if ((fd = hanging_dns(ip, sizeof(ip))) < 0)
        skip();
    ns_prepare(env, "files dns", th_fmt("nameserver %s\noptions timeout:30 attempts:1\n", ip));
    assert_int_equal(th_upstream_start(env, "stable"), 0);
    /* a configured name: looked up at start */
    weir_start_nsl(env, "--stable", env->up[0].addr, "--canary", "weir-test-hang.example:80", "--resolve-interval",
                   "1h", NULL);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, TH_TIMEOUT_MS), 1); /* the lookup is under way, and will get no answer */
    assert_true(recv(fd, buf, sizeof(buf), 0) > 0);
    th_get(env->admin_port, "/healthz", &r);
    assert_int_equal(r.status, 200);
    th_get(env->admin_port, "/readyz", &r); /* stable has its address */
    assert_int_equal(r.status, 200);
    th_get(env->port, "/", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(show_upstreams(env),
                        th_fmt("canary weir-test-hang.example:80 unresolved\nstable %s up\n", env->up[0].addr));
    /* one more, declared at run time, also hanging */
    static const char *const exp1[] = {"set", "upstream", "exp1", "weir-test-hang2.example:80", NULL};
    ctl(env, exp1);
    assert_int_equal(poll(&p, 1, TH_TIMEOUT_MS), 1);
    th_weir_stop_sig(env, SIGTERM, TH_TIMEOUT_MS);
    char *err = th_slurp(env->weir.err);
    if (strstr(err, " resolve: ") != NULL)
        fail_msg("a lookup ended: %s", err); /* none can have, not even in failure */
    close(fd);
}

/* Nothing resolved in a stable given by name: not ready. */
static void test_stable_name_unresolved_not_ready(void **state)
{
    th_env_t *env = *state;
    th_resp_t r = {0};

    ns_prepare(env, "files", NULL);
    assert_int_equal(th_upstream_start(env, "canary"), 0);
    weir_start_nsl(env, "--stable", "weir-test-nostable.invalid:80", "--canary", env->up[0].addr, "--resolve-interval",
                   "100ms", NULL);
    th_get(env->admin_port, "/readyz", &r);
    assert_int_equal(r.status, 503);
    th_weir_stop(env);
}

/* The configuration wins over a `del upstream` in the state file: a variant removed at run time and then declared
 * in the configuration (with a weight) comes back as configured, and weir starts. */
static void test_configuration_wins_over_state_removal(void **state)
{
    th_env_t *env = *state;
    char *sf = th_fmt("%s/state", env->dir);
    static const char *const set[] = {"set", "upstream", "exp1", "127.0.0.1:9", NULL};
    static const char *const del[] = {"del", "upstream", "exp1", NULL};
    static const char *const weights[] = {"get", "weight", NULL};

    assert_int_equal(th_upstream_start(env, "stable"), 0);
    assert_int_equal(th_upstream_start(env, "exp1"), 1);
    th_weir_startl(env, "--stable", env->up[0].addr, "--state-file", sf, NULL);
    ctl(env, set);
    ctl(env, del);
    th_weir_stop(env);
    assert_non_null(strstr(th_slurp(sf), "del upstream exp1\n"));
    th_weir_startl(env, "--stable", env->up[0].addr, "--upstream", "exp1", env->up[1].addr, "--weight", "exp1", "5",
                   "--state-file", sf, NULL);
    char *w = ctl(env, weights);
    if (strncmp(w, "canary 0.00\nexp1 5.00\nstable 95.00\n", strlen("canary 0.00\nexp1 5.00\nstable 95.00\n")) != 0)
        fail_msg("get weight: %s", w);
    assert_string_equal(show_upstreams(env), th_fmt("exp1 %s up\nstable %s up\n", env->up[1].addr, env->up[0].addr));
    th_weir_stop(env);
}

static bool all_resolved(void *env)
{
    return strstr(show_upstreams(env), "unresolved") == NULL;
}

/* Endpoints and variants change under traffic: `set upstream` with names that keep changing (every endpoint slot
 * is used and then reused under other names), `del upstream` (a variant slot reused under another name), requests
 * to them with the access log on, from two workers. Under TSan (the tsan pass of make test) this shows that
 * workers reading endpoint and variant names and addresses (Host, logs) never race with the main thread's
 * changes; elsewhere it checks that every request reaches the variant it was routed to. */
static void test_upstream_churn_under_traffic(void **state)
{
    th_env_t *env = *state;
    enum { PER_SET = PER_SET_MAX, ROUNDS = 20 }; /* 20 x 60 > PX_MAX_ENDPOINTS (1024): slots are reused */
    char *log = th_fmt("%s/access.log", env->dir);
    th_resp_t r = {0};

    ns_prepare(env, "files", NULL);
    assert_int_equal(th_upstream_start(env, "stable"), 0);
    assert_int_equal(th_upstream_start(env, "exp"), 1);
    const char *port = strchr(env->up[1].addr, ':') + 1;
    char *hosts = th_strdup("");
    for (int round = 0; round < ROUNDS; round++)
        for (int k = 0; k < PER_SET; k++)
            hosts = th_fmt("%s127.0.0.1 c%d-%d.test\n", hosts, round, k);
    write_hosts(hosts);
    weir_start_nsl(env, "--stable", env->up[0].addr, "--workers", "2", "--access-log", log, "--resolve-interval",
                   "100ms", NULL);
    for (int round = 0; round < ROUNDS; round++) {
        const char *variant = round % 2 ? "expb" : "expa";
        const char *set[PER_SET + 4] = {"set", "upstream", variant};
        for (int k = 0; k < PER_SET; k++)
            set[3 + k] = th_fmt("c%d-%d.test:%s", round, k, port);
        const char *route[] = {"set", "header-route", "e", "to", variant, "header", "x-e", "exact", "1", NULL};
        static const char *const del_route[] = {"del", "route", "e", NULL};
        const char *del[] = {"del", "upstream", variant, NULL};
        ctl(env, set);
        ctl(env, route);
        assert_true(th_poll(all_resolved, env, CTL_TIMEOUT_MS));
        for (int i = 0; i < 20; i++) {
            assert_int_equal(th_http(env->port, "GET / HTTP/1.1\r\nHost: x\r\nx-e: 1\r\n\r\n", &r), 0);
            assert_int_equal(r.status, 200);
            assert_string_equal(th_header(&r, "x-upstream"), "exp");
            th_get(env->port, "/", &r);
            assert_int_equal(r.status, 200);
        }
        ctl(env, del_route);
        ctl(env, del);
    }
    th_weir_stop(env); /* fails on a sanitizer report in weir's stderr */
}

int main(void)
{
    th_filter_from_env();
    snprintf(real_weir, sizeof(real_weir), "%s", th_weir_bin());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_name_follows_dns_and_survives_failed_lookup, setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_unresolvable_name_not_fatal, setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_nothing_resolved_not_ready, setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_name_resolves_later, setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_every_address_is_an_endpoint, setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_hanging_resolver_holds_up_nothing, setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_stable_name_unresolved_not_ready, setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_configuration_wins_over_state_removal, setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_upstream_churn_under_traffic, setup, th_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
