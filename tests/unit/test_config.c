/* Configuration loader (proxy/config.c, SPEC §2): every directive in both spellings, defaults, precedence of flags
 * over the file, and the exact text of every error. Config files are written under a mkdtemp() directory. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/macros.h"
#include "px/config.h"

#define MAX_ARGS 16

static char tmpdir[64]; /* the fixture directory */
static char conf[128];  /* tmpdir/weir.conf */
static char errbuf[512];

static int setup(void **state)
{
    (void)state;
    strcpy(tmpdir, "/tmp/weir-test-config-XXXXXX");
    if (mkdtemp(tmpdir) == NULL) return -1;
    snprintf(conf, sizeof(conf), "%s/weir.conf", tmpdir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(conf);
    return rmdir(tmpdir) == 0 ? 0 : -1;
}

static void write_conf(const char *text, size_t len)
{
    FILE *f = fopen(conf, "w");

    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* Replaces "{F}" with the config file's path and "{D}" with the fixture directory. */
static void expand(const char *in, char *out, size_t n)
{
    size_t k = 0;

    while (*in != '\0' && k + 1 < n) {
        const char *sub = NULL;
        if (strncmp(in, "{F}", 3) == 0)
            sub = conf;
        else if (strncmp(in, "{D}", 3) == 0)
            sub = tmpdir;
        if (sub != NULL) {
            k += (size_t)snprintf(out + k, n - k, "%s", sub);
            in += 3;
        } else {
            out[k++] = *in++;
        }
    }
    out[k < n ? k : n - 1] = '\0';
}

/* Loads <args> (NULL-terminated, "{F}" expanded) after writing <file> (when not NULL) to the fixture. */
static int load(px_config_t *c, const char *file, const char *const *args)
{
    static char store[MAX_ARGS][512];
    char *argv[MAX_ARGS + 1];
    int argc = 0;

    if (file != NULL) write_conf(file, strlen(file));
    argv[argc++] = (char *)"weir";
    for (; args != NULL && *args != NULL; args++) {
        assert_true(argc < MAX_ARGS);
        expand(*args, store[argc], sizeof(store[argc]));
        argv[argc] = store[argc];
        argc++;
    }
    argv[argc] = NULL;
    px_config_init(c);
    return px_config_load(c, argc, argv, errbuf, sizeof(errbuf));
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

/* ---- every directive in both spellings ---- */

struct dcase {
    const char *name;
    const char *v1, *v2;
    const char *pre[8]; /* flags needed for the result to be valid, given on the command line in both runs */
    void (*check)(const px_config_t *c);
};

static void ck_listen(const px_config_t *c)
{
    assert_int_equal(c->nlisten, 1);
    assert_string_equal(c->listen[0].host, "::1");
    assert_int_equal(c->listen[0].port, 9000);
}

static void ck_upstream(const px_config_t *c)
{
    assert_int_equal(c->nupstreams, 1);
    assert_string_equal(c->upstreams[0].variant, "exp-2");
    assert_string_equal(c->upstreams[0].addr.host, "10.0.0.7");
    assert_int_equal(c->upstreams[0].addr.port, 8080);
}

static void ck_stable(const px_config_t *c)
{
    assert_int_equal(c->nupstreams, 1);
    assert_string_equal(c->upstreams[0].variant, "stable");
    assert_string_equal(c->upstreams[0].addr.host, "10.0.0.1");
    assert_int_equal(c->upstreams[0].addr.port, 80);
}

static void ck_canary(const px_config_t *c)
{
    assert_int_equal(c->nupstreams, 1);
    assert_string_equal(c->upstreams[0].variant, "canary");
    assert_string_equal(c->upstreams[0].addr.host, "canary.svc.local");
    assert_int_equal(c->upstreams[0].addr.port, 8081);
}

static void ck_weight(const px_config_t *c)
{
    assert_int_equal(c->nweights, 1);
    assert_string_equal(c->weights[0].variant, "canary");
    assert_int_equal(c->weights[0].bp, 1250);
}

static void ck_sticky(const px_config_t *c)
{
    assert_int_equal(c->sticky, PX_STICKY_HEADER);
    assert_string_equal(c->sticky_name, "X-User");
}

static void ck_sticky_salt(const px_config_t *c)
{
    assert_string_equal(c->sticky_salt, "pod-7f9c");
}

static void ck_sticky_set_cookie(const px_config_t *c)
{
    assert_int_equal(c->sticky_set_cookie, 1);
    assert_int_equal(c->sticky, PX_STICKY_COOKIE);
    assert_string_equal(c->sticky_name, "sid");
}

static void ck_control(const px_config_t *c)
{
    assert_string_equal(c->control, "/run/weir/ctl.sock");
}

static void ck_control_mode(const px_config_t *c)
{
    assert_int_equal(c->control_mode, 0660);
}

static void ck_control_tcp(const px_config_t *c)
{
    assert_int_equal(c->has_control_tcp, 1);
    assert_string_equal(c->control_tcp.host, "127.0.0.1");
    assert_int_equal(c->control_tcp.port, 9902);
    assert_string_equal(c->control_token_file, "/etc/weir/token");
}

static void ck_control_token_file(const px_config_t *c)
{
    assert_string_equal(c->control_token_file, "/etc/weir/token");
    assert_int_equal(c->has_control_tcp, 0);
}

static void ck_state_file(const px_config_t *c)
{
    assert_string_equal(c->state_file, "/var/lib/weir/state");
}

static void ck_admin(const px_config_t *c)
{
    assert_int_equal(c->has_admin, 1);
    assert_string_equal(c->admin.host, "0.0.0.0");
    assert_int_equal(c->admin.port, 9999);
}

static void ck_workers(const px_config_t *c)
{
    assert_int_equal(c->workers, 4);
}

static void ck_connect_timeout(const px_config_t *c)
{
    assert_int_equal(c->connect_timeout_ms, 250);
}

static void ck_header_timeout(const px_config_t *c)
{
    assert_int_equal(c->header_timeout_ms, 5000);
}

static void ck_idle_timeout(const px_config_t *c)
{
    assert_int_equal(c->idle_timeout_ms, 120000);
}

static void ck_upstream_timeout(const px_config_t *c)
{
    assert_int_equal(c->upstream_timeout_ms, 3600000);
}

static void ck_drain_timeout(const px_config_t *c)
{
    assert_int_equal(c->drain_timeout_ms, 45000);
}

static void ck_max_header_bytes(const px_config_t *c)
{
    assert_int_equal(c->max_header_bytes, 32768);
}

static void ck_max_connections(const px_config_t *c)
{
    assert_int_equal(c->max_connections, 500);
}

static void ck_mirror_max_inflight(const px_config_t *c)
{
    assert_int_equal(c->mirror_max_inflight, 64);
}

static void ck_resolve_interval(const px_config_t *c)
{
    assert_int_equal(c->resolve_interval_ms, 30000);
}

static void ck_stats_window(const px_config_t *c)
{
    assert_int_equal(c->stats_window_ms, 300000);
}

static void ck_variant_header(const px_config_t *c)
{
    assert_int_equal(c->variant_header, 1);
}

static void ck_access_log(const px_config_t *c)
{
    assert_string_equal(c->access_log, "-");
}

static void ck_log_level(const px_config_t *c)
{
    assert_int_equal(c->log_level, PX_LOG_DEBUG);
}

static void ck_tls_certificate(const px_config_t *c)
{
    assert_int_equal(c->ntls_certs, 1);
    assert_string_equal(c->tls_certs[0].cert, "/etc/weir/a.pem");
    assert_string_equal(c->tls_certs[0].key, "/etc/weir/a.key");
}

static void ck_tls_protocols(const px_config_t *c)
{
    assert_int_equal(c->tls_protocols, PX_TLS_PROTO_V12 | PX_TLS_PROTO_V13);
}

static void ck_tls_ciphers(const px_config_t *c)
{
    assert_string_equal(c->tls_ciphers, "ECDHE-RSA-AES128-GCM-SHA256");
}

static void ck_tls_client_ca(const px_config_t *c)
{
    assert_string_equal(c->tls_client_ca, "/etc/weir/ca.pem");
}

static void ck_tls_session_tickets(const px_config_t *c)
{
    assert_int_equal(c->tls_session_tickets, 0);
}

static void ck_alpn(const px_config_t *c)
{
    assert_int_equal(c->alpn, PX_ALPN_H2 | PX_ALPN_HTTP11);
}

static void ck_control_tls(const px_config_t *c)
{
    assert_int_equal(c->control_tls, 1);
    assert_int_equal(c->ntls_certs, 1);
}

static const struct dcase dcases[] = {
    {"listen", "[::1]:9000", NULL, {NULL}, ck_listen},
    {"upstream", "exp-2", "10.0.0.7:8080", {NULL}, ck_upstream},
    {"stable", "10.0.0.1:80", NULL, {NULL}, ck_stable},
    {"canary", "canary.svc.local:8081", NULL, {NULL}, ck_canary},
    {"weight", "canary", "12.5", {NULL}, ck_weight},
    {"sticky", "header:X-User", NULL, {NULL}, ck_sticky},
    {"sticky-salt", "pod-7f9c", NULL, {NULL}, ck_sticky_salt},
    {"sticky-set-cookie", "on", NULL, {"--sticky", "cookie:sid", NULL}, ck_sticky_set_cookie},
    {"control", "/run/weir/ctl.sock", NULL, {NULL}, ck_control},
    {"control-mode", "0660", NULL, {NULL}, ck_control_mode},
    {"control-tcp", "127.0.0.1:9902", NULL, {"--control-token-file", "/etc/weir/token", NULL}, ck_control_tcp},
    {"control-token-file", "/etc/weir/token", NULL, {NULL}, ck_control_token_file},
    {"state-file", "/var/lib/weir/state", NULL, {NULL}, ck_state_file},
    {"admin", "0.0.0.0:9999", NULL, {NULL}, ck_admin},
    {"workers", "4", NULL, {NULL}, ck_workers},
    {"connect-timeout", "250ms", NULL, {NULL}, ck_connect_timeout},
    {"header-timeout", "5s", NULL, {NULL}, ck_header_timeout},
    {"idle-timeout", "2m", NULL, {NULL}, ck_idle_timeout},
    {"upstream-timeout", "1h", NULL, {NULL}, ck_upstream_timeout},
    {"drain-timeout", "45s", NULL, {NULL}, ck_drain_timeout},
    {"max-header-bytes", "32k", NULL, {NULL}, ck_max_header_bytes},
    {"max-connections", "500", NULL, {NULL}, ck_max_connections},
    {"mirror-max-inflight", "64", NULL, {NULL}, ck_mirror_max_inflight},
    {"resolve-interval", "30s", NULL, {NULL}, ck_resolve_interval},
    {"stats-window", "300s", NULL, {NULL}, ck_stats_window},
    {"variant-header", "on", NULL, {NULL}, ck_variant_header},
    {"access-log", "-", NULL, {NULL}, ck_access_log},
    {"log-level", "debug", NULL, {NULL}, ck_log_level},
    {"tls-certificate", "/etc/weir/a.pem", "/etc/weir/a.key", {NULL}, ck_tls_certificate},
    {"tls-protocols", "TLSv1.3", "TLSv1.2", {NULL}, ck_tls_protocols},
    {"tls-ciphers", "ECDHE-RSA-AES128-GCM-SHA256", NULL, {NULL}, ck_tls_ciphers},
    {"tls-client-ca", "/etc/weir/ca.pem", NULL, {NULL}, ck_tls_client_ca},
    {"tls-session-tickets", "off", NULL, {NULL}, ck_tls_session_tickets},
    {"alpn", "http/1.1", "h2", {NULL}, ck_alpn},
    {"control-tls",
     "on",
     NULL,
     {"--control-tcp", "127.0.0.1:9902", "--control-token-file", "/t", "--tls-certificate", "/c.pem", "/c.key", NULL},
     ck_control_tls},
};

static void test_every_directive_is_covered(void **state)
{
    size_t i, j;
    const px_directive_info_t *in;

    (void)state;
    for (i = 0; (in = px_config_directive(i)) != NULL; i++) {
        for (j = 0; j < ARRAY_SIZE(dcases) && strcmp(dcases[j].name, in->name) != 0; j++)
            ;
        if (j == ARRAY_SIZE(dcases)) fail_msg("directive '%s' has no case", in->name);
        assert_int_equal(in->nargs, dcases[j].v2 != NULL ? 2 : 1);
    }
    assert_int_equal(i, ARRAY_SIZE(dcases));
}

static void test_directive_as_flag(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < ARRAY_SIZE(dcases); i++) {
        const struct dcase *t = &dcases[i];
        const char *args[12];
        char flag[64];
        size_t n = 0, k;
        px_config_t c;
        int rc;

        snprintf(flag, sizeof(flag), "--%s", t->name);
        for (k = 0; t->pre[k] != NULL; k++)
            args[n++] = t->pre[k];
        args[n++] = flag;
        args[n++] = t->v1;
        if (t->v2 != NULL) args[n++] = t->v2;
        args[n] = NULL;
        rc = load(&c, NULL, args);
        if (rc != PX_CONFIG_OK) fail_msg("%s: rc %d: %s", flag, rc, errbuf);
        t->check(&c);
        px_config_free(&c);
    }
}

static void test_directive_as_file_line(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < ARRAY_SIZE(dcases); i++) {
        const struct dcase *t = &dcases[i];
        const char *args[12];
        char text[256];
        size_t n = 0, k;
        px_config_t c;
        int rc;

        /* Surrounded by comments and blank lines, with tabs and a trailing comment. */
        snprintf(text, sizeof(text), "# weir\n\n\t%s\t%s %s  # why\n\n", t->name, t->v1, t->v2 ? t->v2 : "");
        for (k = 0; t->pre[k] != NULL; k++)
            args[n++] = t->pre[k];
        args[n++] = "-c";
        args[n++] = "{F}";
        args[n] = NULL;
        rc = load(&c, text, args);
        if (rc != PX_CONFIG_OK) fail_msg("%s: rc %d: %s", t->name, rc, errbuf);
        t->check(&c);
        assert_string_equal(c.config_file, conf);
        px_config_free(&c);
    }
}

/* ---- defaults ---- */

static void check_defaults(const px_config_t *c)
{
    assert_int_equal(c->nlisten, 1);
    assert_string_equal(c->listen[0].host, "127.0.0.1");
    assert_int_equal(c->listen[0].port, 8080);
    assert_int_equal(c->nupstreams, 0);
    assert_int_equal(c->sticky, PX_STICKY_OFF);
    assert_null(c->sticky_name);
    assert_string_equal(c->sticky_salt, "");
    assert_int_equal(c->sticky_set_cookie, 0);
    assert_string_equal(c->control, "/tmp/weir.sock");
    assert_int_equal(c->control_mode, 0600);
    assert_int_equal(c->has_control_tcp, 0);
    assert_null(c->control_token_file);
    assert_null(c->state_file);
    assert_int_equal(c->has_admin, 1);
    assert_string_equal(c->admin.host, "127.0.0.1");
    assert_int_equal(c->admin.port, 9901);
    assert_int_equal(c->workers, 0);
    assert_int_equal(c->connect_timeout_ms, 2000);
    assert_int_equal(c->header_timeout_ms, 10000);
    assert_int_equal(c->idle_timeout_ms, 60000);
    assert_int_equal(c->upstream_timeout_ms, 60000);
    assert_int_equal(c->drain_timeout_ms, 30000);
    assert_int_equal(c->max_header_bytes, 16384);
    assert_int_equal(c->max_connections, 10000);
    assert_int_equal(c->mirror_max_inflight, 256);
    assert_int_equal(c->resolve_interval_ms, 10000);
    assert_int_equal(c->stats_window_ms, 60000);
    assert_int_equal(c->variant_header, 0);
    assert_null(c->access_log);
    assert_int_equal(c->log_level, PX_LOG_INFO);
    assert_int_equal(c->test_only, 0);
    assert_int_equal(c->ntls_certs, 0);
    assert_int_equal(c->tls_protocols, PX_TLS_PROTO_V12 | PX_TLS_PROTO_V13);
    assert_null(c->tls_ciphers);
    assert_null(c->tls_client_ca);
    assert_int_equal(c->tls_session_tickets, 1);
    assert_int_equal(c->alpn, PX_ALPN_H2 | PX_ALPN_HTTP11);
    assert_int_equal(c->control_tls, 0);
}

static void test_defaults(void **state)
{
    px_config_t c;

    (void)state;
    assert_int_equal(load(&c, NULL, NULL), PX_CONFIG_OK);
    check_defaults(&c);
    assert_int_equal(c.nweights, 0);
    assert_null(c.config_file);
    px_config_free(&c);
}

/* The default text of every row, given back as a flag, yields the default: the help and the code agree. */
static void test_default_texts_parse_to_defaults(void **state)
{
    const px_directive_info_t *in;
    size_t i;

    (void)state;
    for (i = 0; (in = px_config_directive(i)) != NULL; i++) {
        char flag[64], v1[64], v2[64] = "";
        px_config_t c;
        int rc;

        if (strcmp(in->def, "-") == 0) continue;
        snprintf(flag, sizeof(flag), "--%s", in->name);
        if (in->nargs == 2)
            assert_int_equal(sscanf(in->def, "%63s %63s", v1, v2), 2);
        else
            snprintf(v1, sizeof(v1), "%s", in->def);
        rc = in->nargs == 2 ? load(&c, NULL, ARGS(flag, v1, v2)) : load(&c, NULL, ARGS(flag, v1));
        if (rc != PX_CONFIG_OK) fail_msg("%s %s: %s", flag, in->def, errbuf);
        check_defaults(&c);
        if (strcmp(in->name, "weight") == 0) {
            assert_int_equal(c.nweights, 1);
            assert_string_equal(c.weights[0].variant, "canary");
            assert_int_equal(c.weights[0].bp, 0);
        } else {
            assert_int_equal(c.nweights, 0);
        }
        px_config_free(&c);
    }
}

/* ---- precedence ---- */

static void test_flags_override_file(void **state)
{
    px_config_t c;

    (void)state;
    /* -c last: the file is still read first. */
    assert_int_equal(load(&c,
                          "log-level debug\nsticky-salt old\naccess-log /var/log/weir.log\nadmin 10.0.0.1:9901\n"
                          "connect-timeout 5s\nworkers 8\nstate-file /x\n",
                          ARGS("--log-level", "warn", "--sticky-salt", "new", "--access-log", "off", "--admin", "off",
                               "--workers", "auto", "--state-file", "off", "-c", "{F}")),
                     PX_CONFIG_OK);
    assert_int_equal(c.log_level, PX_LOG_WARN);
    assert_string_equal(c.sticky_salt, "new");
    assert_null(c.access_log);
    assert_int_equal(c.has_admin, 0);
    assert_int_equal(c.connect_timeout_ms, 5000); /* from the file: no flag for it */
    assert_int_equal(c.workers, 0);
    assert_null(c.state_file);
    px_config_free(&c);
}

static void test_repeatables_add(void **state)
{
    px_config_t c;

    (void)state;
    assert_int_equal(load(&c,
                          "listen 127.0.0.1:8080\nstable 10.0.0.1:80\nupstream exp 10.0.0.9:80\ncanary 10.0.0.5:80\n"
                          "weight canary 20\nweight exp 1\n",
                          ARGS("-c", "{F}", "--listen", "[::1]:8080", "--stable", "10.0.0.2:80", "--canary",
                               "10.0.0.6:80", "--weight", "canary", "5", "--upstream", "exp", "10.0.0.10:80")),
                     PX_CONFIG_OK);
    assert_int_equal(c.nlisten, 2);
    assert_string_equal(c.listen[0].host, "127.0.0.1");
    assert_string_equal(c.listen[1].host, "::1");
    assert_int_equal(c.nupstreams, 6);
    assert_string_equal(c.upstreams[0].variant, "stable");
    assert_string_equal(c.upstreams[1].variant, "exp");
    assert_string_equal(c.upstreams[2].variant, "canary");
    assert_string_equal(c.upstreams[3].variant, "stable");
    assert_string_equal(c.upstreams[3].addr.host, "10.0.0.2");
    assert_string_equal(c.upstreams[4].variant, "canary");
    assert_string_equal(c.upstreams[5].variant, "exp");
    /* weight is per variant: the flag replaced the file's canary weight and kept its place */
    assert_int_equal(c.nweights, 2);
    assert_string_equal(c.weights[0].variant, "canary");
    assert_int_equal(c.weights[0].bp, 500);
    assert_string_equal(c.weights[1].variant, "exp");
    assert_int_equal(c.weights[1].bp, 100);
    px_config_free(&c);
}

static void test_listen_default_only_when_none(void **state)
{
    px_config_t c;

    (void)state;
    assert_int_equal(load(&c, "listen 0.0.0.0:80\n", ARGS("-c", "{F}")), PX_CONFIG_OK);
    assert_int_equal(c.nlisten, 1);
    assert_string_equal(c.listen[0].host, "0.0.0.0");
    assert_int_equal(c.listen[0].port, 80);
    px_config_free(&c);

    assert_int_equal(load(&c, NULL, ARGS("--listen", "10.1.1.1:81")), PX_CONFIG_OK);
    assert_int_equal(c.nlisten, 1);
    assert_int_equal(c.listen[0].port, 81);
    px_config_free(&c);
}

static void test_weight_replaced_in_file_and_order_free(void **state)
{
    px_config_t c;

    (void)state;
    /* a weight may come before the upstream of its variant; a later weight replaces an earlier one */
    assert_int_equal(
        load(&c, "weight exp 60\nweight canary 30\nweight exp 0.05\nupstream exp 10.0.0.9:80\n", ARGS("-c", "{F}")),
        PX_CONFIG_OK);
    assert_int_equal(c.nweights, 2);
    assert_string_equal(c.weights[0].variant, "exp");
    assert_int_equal(c.weights[0].bp, 5);
    assert_int_equal(c.weights[1].bp, 3000);
    px_config_free(&c);

    /* the sum is checked after the flags replaced the file's value: 60 + 50 in the file, 10 + 50 in the end */
    assert_int_equal(load(&c, "canary a:1\nupstream exp b:2\nweight canary 60\nweight exp 40\n",
                          ARGS("-c", "{F}", "--weight", "canary", "10", "--weight", "exp", "90")),
                     PX_CONFIG_OK);
    assert_int_equal(c.weights[0].bp + c.weights[1].bp, 10000);
    px_config_free(&c);
}

static void test_quoting_and_comments(void **state)
{
    px_config_t c;

    (void)state;
    assert_int_equal(load(&c, "sticky-salt \"a b \\\"c\\\" \\\\ # d\"  # the salt\r\n", ARGS("-c", "{F}")),
                     PX_CONFIG_OK);
    assert_string_equal(c.sticky_salt, "a b \"c\" \\ # d");
    px_config_free(&c);

    assert_int_equal(load(&c, "sticky-salt \"\"\n", ARGS("-c", "{F}", "--sticky-salt", "x")), PX_CONFIG_OK);
    assert_string_equal(c.sticky_salt, "x");
    px_config_free(&c);

    assert_int_equal(load(&c, "sticky-salt x\n", ARGS("-c", "{F}", "--sticky-salt", "")), PX_CONFIG_OK);
    assert_string_equal(c.sticky_salt, "");
    px_config_free(&c);

    /* '#' ends a word too; CRLF line ends; a file without a final newline; "quoted" plain values */
    assert_int_equal(
        load(&c, "listen 10.0.0.1:80#comment\r\n   \r\n\"log-level\" \"warn\"\nworkers 2", ARGS("-c", "{F}")),
        PX_CONFIG_OK);
    assert_int_equal(c.listen[0].port, 80);
    assert_int_equal(c.log_level, PX_LOG_WARN);
    assert_int_equal(c.workers, 2);
    px_config_free(&c);

    /* an empty file is a valid configuration of defaults */
    assert_int_equal(load(&c, "", ARGS("-c", "{F}")), PX_CONFIG_OK);
    check_defaults(&c);
    px_config_free(&c);
}

static void test_value_variants(void **state)
{
    px_config_t c;

    (void)state;
    assert_int_equal(load(&c, NULL,
                          ARGS("--sticky", "ip", "--control-mode", "755", "--workers", "256", "--stats-window", "1s",
                               "--max-header-bytes", "256", "--log-level", "error", "--access-log", "/var/log/a.log")),
                     PX_CONFIG_OK);
    assert_int_equal(c.sticky, PX_STICKY_IP);
    assert_null(c.sticky_name);
    assert_int_equal(c.control_mode, 0755);
    assert_int_equal(c.workers, 256);
    assert_int_equal(c.stats_window_ms, 1000);
    assert_int_equal(c.max_header_bytes, 256);
    assert_int_equal(c.log_level, PX_LOG_ERROR);
    assert_string_equal(c.access_log, "/var/log/a.log");
    px_config_free(&c);

    /* a later single value replaces a name that no longer applies */
    assert_int_equal(load(&c, "sticky cookie:sid\n", ARGS("-c", "{F}", "--sticky", "off", "--control-mode", "0")),
                     PX_CONFIG_OK);
    assert_int_equal(c.sticky, PX_STICKY_OFF);
    assert_null(c.sticky_name);
    assert_int_equal(c.control_mode, 0);
    px_config_free(&c);

    assert_int_equal(load(&c, "control-tcp 127.0.0.1:9902\n",
                          ARGS("-c", "{F}", "--control-tcp", "off", "--log-level", "warn", "-t")),
                     PX_CONFIG_OK);
    assert_int_equal(c.has_control_tcp, 0);
    assert_int_equal(c.test_only, 1);
    px_config_free(&c);
}

/* ---- errors ---- */

struct ecase {
    const char *file; /* written to {F} when not NULL */
    const char *args[10];
    const char *err; /* the exact message, "{F}"/"{D}" expanded */
};

static const struct ecase ecases[] = {
    /* shape of the command line */
    {NULL, {"--foo", "1"}, "--foo: unknown flag"},
    {NULL, {"--listen=1.2.3.4:80"}, "--listen=1.2.3.4:80: unknown flag (write --NAME VALUE, without '=')"},
    {NULL, {"-x"}, "-x: unknown flag"},
    {NULL, {"--"}, "--: unknown flag"},
    {NULL, {"listen"}, "unexpected argument 'listen' (settings are --NAME VALUE)"},
    {NULL, {"--listen", "a:1", "b:2"}, "unexpected argument 'b:2' (settings are --NAME VALUE)"},
    {NULL, {"--listen"}, "--listen: missing value (--listen HOST:PORT)"},
    {NULL, {"--upstream", "canary"}, "--upstream: missing value (--upstream VARIANT ADDR)"},
    {NULL, {"-c"}, "-c: missing FILE"},
    {NULL, {"-c", "{F}", "-c", "{F}"}, "-c: given twice"},
    {NULL, {"-c", "{D}/missing.conf"}, "cannot open '{D}/missing.conf': No such file or directory"},
    {NULL, {"-c", "{D}"}, "cannot read '{D}': Is a directory"},
    {NULL, {"--log-level", "info", "--log-level", "debug"}, "--log-level: given twice"},
    /* shape of a file */
    {"listen 1.2.3.4:80\n\nfoo bar\n", {"-c", "{F}"}, "{F}:3: unknown directive 'foo'"},
    {"--listen 1.2.3.4:80\n", {"-c", "{F}"}, "{F}:1: unknown directive '--listen'"},
    {"Listen 1.2.3.4:80\n", {"-c", "{F}"}, "{F}:1: unknown directive 'Listen'"},
    {"upstream canary\n", {"-c", "{F}"}, "{F}:1: upstream: missing value (upstream VARIANT ADDR)"},
    {"listen\n", {"-c", "{F}"}, "{F}:1: listen: missing value (listen HOST:PORT)"},
    {"listen a:1 b:2\n", {"-c", "{F}"}, "{F}:1: listen: unexpected extra value 'b:2'"},
    {"weight canary 5 10\n", {"-c", "{F}"}, "{F}:1: weight: unexpected extra value '10'"},
    {"sticky-salt \"abc\n", {"-c", "{F}"}, "{F}:1: unterminated quote"},
    {"sticky-salt \"a\\nb\"\n", {"-c", "{F}"}, "{F}:1: bad escape in quotes (only \\\" and \\\\)"},
    {"sticky-salt \"a\"b\n", {"-c", "{F}"}, "{F}:1: text right after a closing quote"},
    {"sticky-salt a\"b\"\n", {"-c", "{F}"}, "{F}:1: quote inside a word (quote the whole value)"},
    {"log-level debug\n# again\nlog-level info\n", {"-c", "{F}"}, "{F}:3: log-level: given twice (first on line 1)"},
    /* values, in a file and as a flag */
    {"\n\n\n\n\n\nconnect-timeout abc\n",
     {"-c", "{F}"},
     "{F}:7: connect-timeout: bad duration 'abc' (use 250ms, 10s, 1m)"},
    {NULL, {"--connect-timeout", "abc"}, "--connect-timeout: bad duration 'abc' (use 250ms, 10s, 1m)"},
    {NULL, {"--connect-timeout", "10"}, "--connect-timeout: bad duration '10' (use 250ms, 10s, 1m)"},
    {NULL, {"--idle-timeout", "1.5s"}, "--idle-timeout: bad duration '1.5s' (use 250ms, 10s, 1m)"},
    {NULL, {"--header-timeout", "0s"}, "--header-timeout: duration '0s' out of range (1ms..24h)"},
    {NULL, {"--drain-timeout", "25h"}, "--drain-timeout: duration '25h' out of range (1ms..24h)"},
    {NULL, {"--upstream-timeout", "-1s"}, "--upstream-timeout: bad duration '-1s' (use 250ms, 10s, 1m)"},
    {NULL, {"--resolve-interval", "0ms"}, "--resolve-interval: duration '0ms' out of range (1ms..24h)"},
    {NULL, {"--stats-window", "301s"}, "--stats-window: duration '301s' out of range (1s..300s)"},
    {NULL, {"--stats-window", "6m"}, "--stats-window: duration '6m' out of range (1s..300s)"},
    {NULL, {"--stats-window", "500ms"}, "--stats-window: duration '500ms' out of range (1s..300s)"},
    {NULL, {"--stats-window", "1500ms"}, "--stats-window: duration '1500ms' is not a whole number of seconds"},
    {NULL, {"--max-header-bytes", "16kb"}, "--max-header-bytes: bad size '16kb' (use 512, 16k, 1m)"},
    {NULL, {"--max-header-bytes", "100"}, "--max-header-bytes: size '100' out of range (256..8388608 bytes)"},
    {NULL, {"--max-header-bytes", "9m"}, "--max-header-bytes: size '9m' out of range (256..8388608 bytes)"},
    {NULL, {"--max-connections", "10x"}, "--max-connections: bad number '10x' (use a positive integer)"},
    {NULL, {"--max-connections", "-5"}, "--max-connections: bad number '-5' (use a positive integer)"},
    {NULL, {"--max-connections", "0"}, "--max-connections: '0' out of range (1..10000000)"},
    {NULL,
     {"--max-connections", "99999999999999999999999"},
     "--max-connections: bad number '99999999999999999999999' (use a positive integer)"},
    {"mirror-max-inflight 0\n", {"-c", "{F}"}, "{F}:1: mirror-max-inflight: '0' out of range (1..1000000)"},
    {NULL, {"--mirror-max-inflight", " 5"}, "--mirror-max-inflight: bad number ' 5' (use a positive integer)"},
    {NULL, {"--workers", "0"}, "--workers: bad value '0' (use 1..256 or auto)"},
    {NULL, {"--workers", "257"}, "--workers: bad value '257' (use 1..256 or auto)"},
    {NULL, {"--workers", "4x"}, "--workers: bad value '4x' (use 1..256 or auto)"},
    {NULL, {"--workers", "AUTO"}, "--workers: bad value 'AUTO' (use 1..256 or auto)"},
    {NULL, {"--control-mode", "0800"}, "--control-mode: bad mode '0800' (use octal 0..0777, e.g. 0600)"},
    {NULL, {"--control-mode", "1777"}, "--control-mode: bad mode '1777' (use octal 0..0777, e.g. 0600)"},
    {NULL, {"--control-mode", ""}, "--control-mode: bad mode '' (use octal 0..0777, e.g. 0600)"},
    {NULL, {"--control-mode", "rw"}, "--control-mode: bad mode 'rw' (use octal 0..0777, e.g. 0600)"},
    {NULL, {"--control", ""}, "--control: empty path"},
    {NULL,
     {"--control",
      "/tmp/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
      "aaaaaaa"},
     "--control: path longer than 107 bytes, the limit of a Unix socket"},
    {"state-file \"\"\n", {"-c", "{F}"}, "{F}:1: state-file: empty path"},
    {NULL, {"--access-log", ""}, "--access-log: empty path"},
    {NULL, {"--control-token-file", ""}, "--control-token-file: empty path"},
    {NULL, {"--sticky", "cookie"}, "--sticky: bad value 'cookie' (use off, ip, header:NAME or cookie:NAME)"},
    {NULL, {"--sticky", "IP"}, "--sticky: bad value 'IP' (use off, ip, header:NAME or cookie:NAME)"},
    {NULL, {"--sticky", "header:"}, "--sticky: bad header name ''"},
    {"sticky \"cookie:a b\"\n", {"-c", "{F}"}, "{F}:1: sticky: bad cookie name 'a b'"},
    {NULL, {"--sticky-set-cookie", "yes"}, "--sticky-set-cookie: bad value 'yes' (use on or off)"},
    {NULL, {"--variant-header", "ON"}, "--variant-header: bad value 'ON' (use on or off)"},
    {NULL, {"--log-level", "verbose"}, "--log-level: bad level 'verbose' (use error, warn, info or debug)"},
    {NULL, {"--listen", "8080"}, "--listen: bad address '8080': missing port (use HOST:PORT or [IPv6]:PORT)"},
    {"listen ::1:8080\n",
     {"-c", "{F}"},
     "{F}:1: listen: bad address '::1:8080': IPv6 address must be in brackets, as in [::1]:8080 "
     "(use HOST:PORT or [IPv6]:PORT)"},
    {NULL,
     {"--admin", "127.0.0.1:70000"},
     "--admin: bad address '127.0.0.1:70000': port out of range (1..65535) (use HOST:PORT or [IPv6]:PORT)"},
    {NULL, {"--control-tcp", "on"}, "--control-tcp: bad address 'on': missing port (use HOST:PORT or [IPv6]:PORT)"},
    {NULL, {"--listen", "1.2.3.4:80", "--listen", "1.2.3.4:80"}, "--listen: '1.2.3.4:80' given twice"},
    {"listen [::1]:80\n", {"-c", "{F}", "--listen", "[::1]:80"}, "--listen: '[::1]:80' given twice"},
    {NULL, {"--stable", "backend"}, "--stable: bad address 'backend': missing port (use HOST:PORT or [IPv6]:PORT)"},
    {NULL, {"--upstream", "Canary", "a:1"}, "--upstream: bad variant name 'Canary' (use [a-z0-9][a-z0-9-]{0,31})"},
    {NULL, {"--upstream", "-a", "a:1"}, "--upstream: bad variant name '-a' (use [a-z0-9][a-z0-9-]{0,31})"},
    {NULL, {"--upstream", "", "a:1"}, "--upstream: bad variant name '' (use [a-z0-9][a-z0-9-]{0,31})"},
    {NULL,
     {"--upstream", "a23456789012345678901234567890123", "a:1"},
     "--upstream: bad variant name 'a23456789012345678901234567890123' (use [a-z0-9][a-z0-9-]{0,31})"},
    {"upstream exp_1 a:1\n", {"-c", "{F}"}, "{F}:1: upstream: bad variant name 'exp_1' (use [a-z0-9][a-z0-9-]{0,31})"},
    {NULL, {"--weight", "stable", "50"}, "--weight: stable receives the rest; set the weights of the other variants"},
    {NULL,
     {"--weight", "canary", "101"},
     "--weight: bad percent '101': out of range (use 0..100, at most two decimals)"},
    {NULL,
     {"--weight", "canary", "0.001"},
     "--weight: bad percent '0.001': more than two decimals (use 0..100, at most two decimals)"},
    {NULL, {"--weight", "canary", "5%"}, "--weight: bad percent '5%': bad number (use 0..100, at most two decimals)"},
    {NULL, {"--weight", "canary", "-1"}, "--weight: bad percent '-1': bad number (use 0..100, at most two decimals)"},
    {NULL, {"--weight", "Canary", "1"}, "--weight: bad variant name 'Canary' (use [a-z0-9][a-z0-9-]{0,31})"},
    /* checks of the whole */
    {"stable a:1\n\nweight exp 5\n",
     {"-c", "{F}"},
     "{F}:3: weight: unknown variant 'exp' (declare it with upstream exp ADDR)"},
    {NULL, {"--weight", "exp", "5"}, "--weight: unknown variant 'exp' (declare it with upstream exp ADDR)"},
    {"upstream exp a:1\nweight canary 60\nweight exp 50\n",
     {"-c", "{F}"},
     "{F}:3: weight: the weights of the variants other than stable add up to 110.00%, more than 100"},
    {"upstream exp a:1\nweight canary 60\n",
     {"-c", "{F}", "--weight", "exp", "40.01"},
     "--weight: the weights of the variants other than stable add up to 100.01%, more than 100"},
    {"\ncontrol-tcp 127.0.0.1:9902\n", {"-c", "{F}"}, "{F}:2: control-tcp requires control-token-file"},
    {NULL, {"--control-tcp", "127.0.0.1:9902"}, "--control-tcp requires --control-token-file"},
    {"sticky-set-cookie on\n", {"-c", "{F}"}, "{F}:1: sticky-set-cookie on requires sticky cookie:NAME"},
    {NULL,
     {"--sticky", "header:x", "--sticky-set-cookie", "on"},
     "--sticky-set-cookie on requires --sticky cookie:NAME"},
    {"sticky cookie:sid\nsticky-set-cookie on\n",
     {"-c", "{F}", "--sticky", "ip"},
     "{F}:2: sticky-set-cookie on requires sticky cookie:NAME"},
    {NULL, {"--listen", "127.0.0.1:9901"}, "address 127.0.0.1:9901 is used by both listen and admin"},
    {NULL, {"--admin", "[::1]:80", "--listen", "[::1]:80"}, "address [::1]:80 is used by both listen and admin"},
    {NULL,
     {"--control-tcp", "127.0.0.1:8080", "--control-token-file", "/t"},
     "address 127.0.0.1:8080 is used by both listen and control-tcp"},
    {NULL,
     {"--control-tcp", "127.0.0.1:9901", "--control-token-file", "/t"},
     "address 127.0.0.1:9901 is used by both admin and control-tcp"},
    /* TLS */
    {NULL, {"--tls-protocols", "TLSv1.1"},
     "--tls-protocols: unsupported value 'TLSv1.1' (TLSv1.2, TLSv1.3; older versions are refused)"},
    {"tls-protocols TLSv1.2 SSLv3\n", {"-c", "{F}"},
     "{F}:1: tls-protocols: unsupported value 'SSLv3' (TLSv1.2, TLSv1.3; older versions are refused)"},
    {"tls-protocols\n", {"-c", "{F}"}, "{F}:1: tls-protocols: missing value (tls-protocols TLSv1.2, TLSv1.3)"},
    {NULL, {"--tls-protocols", "--alpn", "h2"}, "--tls-protocols: missing value (--tls-protocols TLSv1.2, TLSv1.3)"},
    {"alpn h2 http/1.1 spdy\n", {"-c", "{F}"}, "{F}:1: alpn: unexpected extra value 'spdy'"},
    {NULL, {"--alpn", "h3"}, "--alpn: unsupported value 'h3' (h2, http/1.1)"},
    {NULL, {"--alpn", "h2"}, "--alpn: http/1.1 must be offered: weir does not serve HTTP/2 (h2) yet"},
    {NULL, {"--tls-certificate", "/c.pem"}, "--tls-certificate: missing value (--tls-certificate CERT KEY)"},
    {NULL, {"--tls-session-tickets", "yes"}, "--tls-session-tickets: bad value 'yes' (use on or off)"},
    {NULL, {"--control-tls", "on"}, "--control-tls on requires --control-tcp and a --tls-certificate"},
    {"control-tcp 127.0.0.1:9902\ncontrol-token-file /t\ncontrol-tls on\n", {"-c", "{F}"},
     "{F}:3: control-tls on requires control-tcp and a tls-certificate"},
};

/* A list directive takes one value or two, in both spellings; a flag's list ends at the next flag. */
static void test_tls_lists(void **state)
{
    px_config_t c;

    (void)state;
    assert_int_equal(load(&c, NULL, ARGS("--tls-protocols", "TLSv1.3", "--alpn", "http/1.1", "-t")), PX_CONFIG_OK);
    assert_int_equal(c.tls_protocols, PX_TLS_PROTO_V13);
    assert_int_equal(c.alpn, PX_ALPN_HTTP11);
    assert_int_equal(c.test_only, 1);
    px_config_free(&c);
    assert_int_equal(load(&c, "tls-protocols TLSv1.2\nalpn http/1.1 h2\n", ARGS("-c", "{F}")), PX_CONFIG_OK);
    assert_int_equal(c.tls_protocols, PX_TLS_PROTO_V12);
    assert_int_equal(c.alpn, PX_ALPN_HTTP11 | PX_ALPN_H2);
    px_config_free(&c);
    /* repeatable: every certificate is kept, in order */
    assert_int_equal(load(&c, "tls-certificate /a.pem /a.key\n", ARGS("-c", "{F}", "--tls-certificate", "/b.pem", "/b.key")),
                     PX_CONFIG_OK);
    assert_int_equal(c.ntls_certs, 2);
    assert_string_equal(c.tls_certs[0].cert, "/a.pem");
    assert_string_equal(c.tls_certs[1].key, "/b.key");
    px_config_free(&c);
}

static void test_errors(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < ARRAY_SIZE(ecases); i++) {
        const struct ecase *t = &ecases[i];
        char want[512];
        px_config_t c;
        int rc;

        expand(t->err, want, sizeof(want));
        rc = load(&c, t->file, t->args);
        if (rc != PX_CONFIG_ERROR) fail_msg("case %zu (%s): rc %d, want an error", i, t->err, rc);
        if (strcmp(errbuf, want) != 0) fail_msg("case %zu:\n got: %s\nwant: %s", i, errbuf, want);
        assert_null(strchr(errbuf, '\n'));
        px_config_free(&c);
    }
}

static void test_error_nul_and_long_values(void **state)
{
    static const char text[] = "log-level info\nlisten a\0b:1\n";
    char line[2200], want[512];
    px_config_t c;

    (void)state;
    write_conf(text, sizeof(text) - 1);
    px_config_init(&c);
    assert_int_equal(px_config_load(&c, 3, (char *[]){"weir", "-c", conf, NULL}, errbuf, sizeof(errbuf)),
                     PX_CONFIG_ERROR);
    snprintf(want, sizeof(want), "%s:2: NUL byte in line", conf);
    assert_string_equal(errbuf, want);
    px_config_free(&c);

    /* a long bad value is shortened, and control characters never reach the message */
    memset(line, 'x', sizeof(line));
    memcpy(line, "log-level \"\x01", 12);
    strcpy(line + 2000, "\"\n");
    assert_int_equal(load(&c, line, ARGS("-c", "{F}")), PX_CONFIG_ERROR);
    snprintf(want, sizeof(want), "%s:1: log-level: bad level '?%.47s...' (use error, warn, info or debug)", conf,
             line + 12);
    assert_string_equal(errbuf, want);
    px_config_free(&c);

    /* a short error buffer is truncated, not overrun */
    {
        char small[8];
        px_config_init(&c);
        assert_int_equal(px_config_load(&c, 2, (char *[]){"weir", "--nope", NULL}, small, sizeof(small)),
                         PX_CONFIG_ERROR);
        assert_string_equal(small, "--nope:");
        px_config_free(&c);
    }
}

/* ---- -h, -V, free ---- */

/* Runs px_config_load() or, with <fn>, fn(), with stdout captured into <out>. */
static int capture(const char *const *args, void (*fn)(void), char *out, size_t n)
{
    char path[160];
    int fd, saved, rc = 0;
    ssize_t k;
    px_config_t c;

    snprintf(path, sizeof(path), "%s/stdout", tmpdir);
    fflush(stdout);
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    saved = dup(STDOUT_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fd, STDOUT_FILENO) >= 0);
    if (fn != NULL) {
        fn();
    } else {
        rc = load(&c, NULL, args);
        px_config_free(&c);
    }
    fflush(stdout);
    assert_true(dup2(saved, STDOUT_FILENO) >= 0);
    close(saved);
    k = pread(fd, out, n - 1, 0);
    assert_true(k >= 0);
    out[k] = '\0';
    close(fd);
    unlink(path);
    return rc;
}

static void test_help(void **state)
{
    static char out[16384];
    const px_directive_info_t *in;
    size_t i;

    (void)state;
    assert_int_equal(capture(ARGS("-h"), NULL, out, sizeof(out)), PX_CONFIG_HELP);
    assert_non_null(strstr(out, "usage: weir "));
    assert_non_null(strstr(out, "-c FILE"));
    for (i = 0; (in = px_config_directive(i)) != NULL; i++) {
        char row[128];
        const char *p;
        snprintf(row, sizeof(row), "  --%s ", in->name);
        p = strstr(out, row);
        if (p == NULL) fail_msg("-h lacks %s", row);
        /* the row holds the value, the default and the help */
        assert_non_null(strstr(p, in->value));
        assert_non_null(strstr(p, in->help));
        assert_true(strstr(p, in->help) < strchr(p + 1, '\n'));
    }
    /* --help works too, also after other settings, whose values are not checked first */
    assert_int_equal(capture(ARGS("--log-level", "nonsense", "--help"), NULL, out, sizeof(out)), PX_CONFIG_HELP);
    assert_non_null(strstr(out, "--stats-window"));
    /* a value that reads "-h" is a value, not a request for help */
    assert_int_equal(capture(ARGS("--sticky-salt", "-h"), NULL, out, sizeof(out)), PX_CONFIG_OK);
    assert_string_equal(out, "");
}

static void test_version(void **state)
{
    char out[256];

    (void)state;
    assert_int_equal(capture(ARGS("-V"), NULL, out, sizeof(out)), PX_CONFIG_VERSION);
    assert_string_equal(out, "weir " WEIR_VERSION "\n");
    assert_int_equal(capture(ARGS("--version"), NULL, out, sizeof(out)), PX_CONFIG_VERSION);
    assert_string_equal(out, "weir " WEIR_VERSION "\n");
    /* an unknown flag before -V is reported */
    assert_int_equal(capture(ARGS("--bogus", "-V"), NULL, out, sizeof(out)), PX_CONFIG_ERROR);
    assert_string_equal(errbuf, "--bogus: unknown flag");
    assert_string_equal(out, "");
}

static void test_markdown(void **state)
{
    static char out[16384];
    const px_directive_info_t *in;
    size_t i, lines = 0;
    const char *p;

    (void)state;
    capture(NULL, px_config_print_markdown, out, sizeof(out));
    assert_true(strncmp(out, "| directive | value | default | notes |\n|---|---|---|---|\n", 58) == 0);
    for (p = out; (p = strchr(p, '\n')) != NULL; p++)
        lines++;
    for (i = 0; (in = px_config_directive(i)) != NULL; i++) {
        char row[64];
        snprintf(row, sizeof(row), "\n| `%s` | ", in->name);
        assert_non_null(strstr(out, row));
    }
    assert_int_equal(lines, i + 2);
    assert_non_null(strstr(out, "| `sticky` | `off`, `ip`, `header:NAME`, `cookie:NAME` | `off` | "));
    assert_non_null(strstr(out, "| `listen` | `HOST:PORT` | `127.0.0.1:8080` | "));
    assert_non_null(strstr(out, "| `upstream` | `VARIANT ADDR` | — | "));
    assert_non_null(strstr(out, "| `sticky-salt` | `STRING` | empty | "));
}

static void test_free_is_idempotent(void **state)
{
    px_config_t c;

    (void)state;
    assert_int_equal(load(&c, "stable a:1\nsticky header:x\naccess-log /l\nstate-file /s\n",
                          ARGS("-c", "{F}", "--control-token-file", "/t", "--weight", "canary", "1")),
                     PX_CONFIG_OK);
    px_config_free(&c);
    assert_null(c.listen);
    assert_null(c.sticky_salt);
    assert_int_equal(c.nupstreams, 0);
    px_config_free(&c);
    /* and the struct can be used again */
    assert_int_equal(load(&c, NULL, ARGS("--workers", "3")), PX_CONFIG_OK);
    assert_int_equal(c.workers, 3);
    px_config_free(&c);
}

/* Finds conf/weir.conf of the source tree: beside the path this file was compiled from when that resolves from the
 * working directory, else in a parent of the test binary's directory (build/[asan/]tests/unit/). */
static void example_path(char *out, size_t n)
{
    const char *src = __FILE__, *tail = strstr(src, "tests/unit/test_config.c");
    char exe[400];
    ssize_t k;
    int up;

    assert_non_null(tail);
    snprintf(out, n, "%.*sconf/weir.conf", (int)(tail - src), src);
    if (access(out, R_OK) == 0) return;
    k = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    assert_true(k > 0);
    exe[k] = '\0';
    for (up = 0; up < 6; up++) {
        char *slash = strrchr(exe, '/');
        if (slash == NULL) break;
        *slash = '\0';
        snprintf(out, n, "%s/conf/weir.conf", exe);
        if (access(out, R_OK) == 0) return;
    }
    fail_msg("conf/weir.conf not found from %s or the test binary's directory", src);
}

/* The example shipped in conf/ is valid and says what it seems to say. */
static void test_example_conf(void **state)
{
    char path[512];
    px_config_t c;

    (void)state;
    example_path(path, sizeof(path));
    px_config_init(&c);
    if (px_config_load(&c, 3, (char *[]){"weir", "-c", path, NULL}, errbuf, sizeof(errbuf)) != PX_CONFIG_OK)
        fail_msg("%s", errbuf);
    assert_int_equal(c.nlisten, 1);
    assert_string_equal(c.listen[0].host, "0.0.0.0");
    assert_int_equal(c.listen[0].port, 8080);
    assert_int_equal(c.nupstreams, 4);
    assert_string_equal(c.upstreams[0].variant, "stable");
    assert_string_equal(c.upstreams[2].variant, "canary");
    assert_int_equal(c.nweights, 1);
    assert_int_equal(c.weights[0].bp, 500);
    assert_int_equal(c.sticky, PX_STICKY_COOKIE);
    assert_string_equal(c.sticky_name, "session");
    px_config_free(&c);
}

/* Its commented-out lines ("#NAME VALUE") are valid too once uncommented. */
static void test_example_conf_commented_lines(void **state)
{
    char path[512], *line = NULL, *text = NULL;
    size_t cap = 0, len = 0, uncommented = 0;
    ssize_t k;
    FILE *f, *m;
    px_config_t c;

    (void)state;
    example_path(path, sizeof(path));
    f = fopen(path, "r");
    assert_non_null(f);
    m = open_memstream(&text, &len);
    assert_non_null(m);
    while ((k = getline(&line, &cap, f)) != -1) {
        int off = line[0] == '#' && line[1] >= 'a' && line[1] <= 'z';
        uncommented += (size_t)off;
        fputs(line + off, m);
    }
    fclose(f);
    fclose(m);
    free(line);
    assert_true(uncommented >= 20);
    assert_int_equal(load(&c, text, ARGS("-c", "{F}")), PX_CONFIG_OK);
    free(text);
    assert_int_equal(c.nupstreams, 5);
    assert_int_equal(c.nweights, 2);
    assert_int_equal(c.has_control_tcp, 1);
    assert_string_equal(c.sticky_salt, "7c9f5d6b4");
    px_config_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_directive_is_covered),
        cmocka_unit_test(test_directive_as_flag),
        cmocka_unit_test(test_directive_as_file_line),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_tls_lists),
        cmocka_unit_test(test_default_texts_parse_to_defaults),
        cmocka_unit_test(test_flags_override_file),
        cmocka_unit_test(test_repeatables_add),
        cmocka_unit_test(test_listen_default_only_when_none),
        cmocka_unit_test(test_weight_replaced_in_file_and_order_free),
        cmocka_unit_test(test_quoting_and_comments),
        cmocka_unit_test(test_value_variants),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_error_nul_and_long_values),
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_markdown),
        cmocka_unit_test(test_free_is_idempotent),
        cmocka_unit_test(test_example_conf),
        cmocka_unit_test(test_example_conf_commented_lines),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
