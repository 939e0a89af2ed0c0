/* DNS re-resolution (SPEC §2 upstream, resolve-interval): an upstream given by name is resolved at start and again
 * every resolve-interval, off the worker loops; when the name moves, traffic follows; when a lookup fails, the last
 * good address stays; every address of a name (A and AAAA) is an endpoint; a name that does not resolve is not
 * fatal: its variant answers 503 until it does. The names are made up and live in /etc/hosts for the test's
 * duration (restored at the end), so those tests need root; without it, they are skipped. A name under .invalid
 * that no resolver knows needs nothing. */
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

#define CTL_TIMEOUT_MS 10000

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

/* Runs one control request through weirctl and returns its stdout (the reply's data lines); it must succeed. */
static char *ctl(th_env_t *env, const char *const *args)
{
    const char *argv[16] = {th_weirctl_bin(), "-s", env->sock};
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

/* Replaces the /etc/hosts lines of <name> by <lines> (NULL: none), keeping every other line as it is now. */
static void hosts_set(const char *name, const char *lines)
{
    char *cur = th_slurp(HOSTS), *out = th_strdup(""), *save = NULL;
    char *suffix = th_fmt(" %s", name);

    for (char *l = strtok_r(cur, "\n", &save); l != NULL; l = strtok_r(NULL, "\n", &save)) {
        size_t n = strlen(l), k = strlen(suffix);
        if (n >= k && strcmp(l + n - k, suffix) == 0)
            continue;
        out = th_fmt("%s%s\n", out, l);
    }
    FILE *f = fopen(HOSTS, "w");
    assert_non_null(f);
    fputs(out, f);
    if (lines != NULL)
        fputs(lines, f);
    assert_int_equal(fclose(f), 0);
}

static char own_name[128]; /* the /etc/hosts name of the running test, removed again at its end */

static int drop_own_name(void **state)
{
    if (own_name[0] != '\0' && access(HOSTS, W_OK) == 0)
        hosts_set(own_name, NULL);
    own_name[0] = '\0';
    return th_teardown(state);
}

/* A name that does not resolve does not stop weir: its variant has no endpoint and answers 503, `show upstreams`
 * says `unresolved`, and the rest of the routing works. */
static void test_unresolvable_name_not_fatal(void **state)
{
    th_env_t *env = *state;
    th_resp_t r = {0};

    assert_int_equal(th_upstream_start(env, "stable"), 0);
    th_weir_startl(env, "--stable", env->up[0].addr, "--canary", "nonexistent.invalid:80", "--resolve-interval",
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

    th_weir_startl(env, "--stable", "nonexistent.invalid:80", "--resolve-interval", "100ms", NULL);
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
    const char *name = own_name;
    th_resp_t r = {0};

    if (geteuid() != 0 || access(HOSTS, W_OK) != 0)
        skip();
    snprintf(own_name, sizeof(own_name), "weir-test-%d-late.invalid", (int)getpid());
    assert_int_equal(th_upstream_start(env, "stable"), 0);
    assert_int_equal(th_upstream_start(env, "late"), 1);
    const char *port = strchr(env->up[1].addr, ':') + 1;
    th_weir_startl(env, "--stable", env->up[0].addr, "--canary", th_fmt("%s:%s", name, port), "--weight", "canary",
                   "100", "--resolve-interval", "100ms", NULL);
    assert_string_equal(show_upstreams(env),
                        th_fmt("canary %s:%s unresolved\nstable %s up\n", name, port, env->up[0].addr));
    th_get(env->port, "/", &r);
    assert_int_equal(r.status, 503);

    hosts_set(name, th_fmt("127.0.0.1 %s\n", name));
    shows_arg_t up = {env, th_fmt("canary %s up\nstable %s up\n", env->up[1].addr, env->up[0].addr)};
    assert_true(th_poll(shows, &up, CTL_TIMEOUT_MS));
    th_get(env->port, "/", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(th_header(&r, "x-upstream"), "late");
    hosts_set(name, NULL);
    th_weir_stop(env);
}

/* Every address of a name is an endpoint (A and AAAA, as a headless Service gives one per pod), requests go
 * round-robin over them, and re-resolution adds and removes endpoints. */
static void test_every_address_is_an_endpoint(void **state)
{
    th_env_t *env = *state;
    const char *name = own_name;
    th_proc_t v4 = {0}, v6 = {0};
    int port = th_free_port();
    th_resp_t r = {0};

    if (geteuid() != 0 || access(HOSTS, W_OK) != 0)
        skip();
    snprintf(own_name, sizeof(own_name), "weir-test-%d-multi.invalid", (int)getpid());
    char *a4 = th_fmt("127.0.0.1:%d", port), *a6 = th_fmt("[::1]:%d", port);
    char *const argv4[] = {(char *)th_upstream_bin(), "--listen", a4, "--name", "v4", NULL};
    char *const argv6[] = {(char *)th_upstream_bin(), "--listen", a6, "--name", "v6", NULL};
    th_spawn(env, &v4, "v4", argv4);
    th_spawn(env, &v6, "v6", argv6);
    assert_true(th_wait_port(port, TH_TIMEOUT_MS, &v4));

    hosts_set(name, th_fmt("127.0.0.1 %s\n::1 %s\n", name, name));
    th_weir_startl(env, "--stable", th_fmt("%s:%d", name, port), "--resolve-interval", "100ms", "--workers", "1",
                   NULL); /* one worker even in the ThreadSanitizer run: the count below needs one round-robin */
    shows_arg_t both = {env, th_fmt("stable %s up\nstable %s up\n", a4, a6)};
    if (!shows_both(&both))
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

    /* one address goes away: its endpoint too; it comes back: so does the endpoint */
    hosts_set(name, th_fmt("::1 %s\n", name));
    shows_arg_t only6 = {env, th_fmt("stable %s up\n", a6)};
    assert_true(th_poll(shows, &only6, CTL_TIMEOUT_MS));
    for (int i = 0; i < 10; i++) {
        th_get(env->port, "/", &r);
        assert_string_equal(th_header(&r, "x-upstream"), "v6");
    }
    hosts_set(name, th_fmt("127.0.0.1 %s\n::1 %s\n", name, name));
    assert_true(th_poll(shows_both, &both, CTL_TIMEOUT_MS));

    hosts_set(name, NULL);
    th_weir_stop(env);
    assert_int_equal(th_stop(&v4, SIGTERM, TH_TIMEOUT_MS), 0);
    assert_int_equal(th_stop(&v6, SIGTERM, TH_TIMEOUT_MS), 0);
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
        cmocka_unit_test_setup_teardown(test_unresolvable_name_not_fatal, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_nothing_resolved_not_ready, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_name_resolves_later, th_setup, drop_own_name),
        cmocka_unit_test_setup_teardown(test_every_address_is_an_endpoint, th_setup, drop_own_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
