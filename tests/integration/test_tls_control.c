/* TLS on the TCP control listener (SPEC §4 control-tls, §2 tls-*, §7 SIGHUP) against the real binaries, with
 * certificates made by `openssl req` in the test's directory: weirctl over tls:// with verification, a plaintext
 * client and a wrong CA refused, TLS 1.1 refused and TLS 1.2/1.3 served (openssl s_client), SNI picking the
 * certificate (exact, wildcard, default), reload on SIGHUP and a bad reload keeping the old certificate, `weir -t`
 * loading the certificates, and weir_tls_handshake_errors_total counting the refusals. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cmocka.h>

#include "harness.h"

#define TOKEN "tls-Token-42"
#define OPENSSL "/usr/bin/openssl" /* Debian package openssl (make deps) */

/* Runs the NULL-terminated argv to completion. */
static void run(th_env_t *env, th_run_t *r, ...)
{
    const char *argv[40];
    size_t n = 0;
    va_list ap;
    const char *a;

    va_start(ap, r);
    while ((a = va_arg(ap, const char *)) != NULL) {
        assert_true(n < 39);
        argv[n++] = a;
    }
    va_end(ap);
    argv[n] = NULL;
    th_run(env, r, (char *const *)argv);
}

/* <dir>/<name>.pem and <name>.key: a self-signed P-256 certificate for CN <cn> with subjectAltName <san>. */
static void make_cert(th_env_t *env, const char *name, const char *cn, const char *san)
{
    th_run_t r = {0};
    run(env, &r, OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days",
        "2", "-subj", th_fmt("/CN=%s", cn), "-addext", th_fmt("subjectAltName=%s", san), "-keyout",
        th_fmt("%s/%s.key", env->dir, name), "-out", th_fmt("%s/%s.pem", env->dir, name), NULL);
    if (r.status != 0)
        fail_msg("openssl req failed: %s", r.err);
}

static const char *pem(th_env_t *env, const char *name)
{
    return th_fmt("%s/%s.pem", env->dir, name);
}

static const char *key(th_env_t *env, const char *name)
{
    return th_fmt("%s/%s.key", env->dir, name);
}

static void copy_file(const char *from, const char *to)
{
    char *text = th_slurp(from);
    FILE *f = fopen(to, "w");
    assert_non_null(text);
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
}

static int ctl_port;
static const char *tokfile;

/* weir with control-tls on, serving the certificates <names> (NULL-terminated) in order. */
static void start_tls_weir(th_env_t *env, ...)
{
    const char *args[40] = {
        "--stable", env->up[0].addr, "--control-tcp", NULL, "--control-token-file", NULL, "--control-tls", "on"};
    size_t n = 8;
    va_list ap;
    const char *name;

    ctl_port = th_free_port();
    tokfile = th_write_file(env, "token", TOKEN "\n");
    args[3] = th_fmt("127.0.0.1:%d", ctl_port);
    args[5] = tokfile;
    va_start(ap, env);
    while ((name = va_arg(ap, const char *)) != NULL) {
        assert_true(n < 36);
        args[n++] = "--tls-certificate";
        args[n++] = pem(env, name);
        args[n++] = key(env, name);
    }
    va_end(ap);
    args[n] = NULL;
    th_weir_start(env, args);
    assert_true(th_wait_port(ctl_port, TH_TIMEOUT_MS, &env->weir));
}

/* The subject line openssl s_client prints for the certificate served to SNI <servername> (NULL: none), or "" when
 * the handshake failed. Extra s_client flags follow, NULL-terminated. */
static const char *served_subject(th_env_t *env, const char *servername, th_run_t *r)
{
    const char *s;
    char *end;

    memset(r, 0, sizeof(*r));
    if (servername != NULL)
        run(env, r, OPENSSL, "s_client", "-connect", th_fmt("127.0.0.1:%d", ctl_port), "-servername", servername, NULL);
    else
        run(env, r, OPENSSL, "s_client", "-connect", th_fmt("127.0.0.1:%d", ctl_port), "-noservername", NULL);
    if (r->status != 0 || (s = strstr(r->out, "\nsubject=")) == NULL)
        return "";
    s = th_strdup(s + 1);
    if ((end = strchr(s, '\n')) != NULL)
        *end = '\0';
    return s;
}

/* The value of the sample <series> (exact text up to the value) in weir's /metrics, or -1 when absent. */
static long metric(th_env_t *env, const char *series)
{
    th_resp_t r = {0};
    const char *p;
    size_t n = strlen(series);

    th_get(env->admin_port, "/metrics", &r);
    assert_int_equal(r.status, 200);
    for (p = r.body; (p = strstr(p, series)) != NULL; p += n)
        if ((p == r.body || p[-1] == '\n') && p[n] == ' ')
            return atol(p + n + 1);
    return -1;
}

#define HS_ERRORS(reason) "weir_tls_handshake_errors_total{side=\"downstream\",reason=\"" reason "\"}"

static int start_env(void **state)
{
    if (th_setup(state) != 0)
        return -1;
    th_env_t *env = *state;
    if (th_upstream_start(env, "stable") < 0)
        return -1;
    make_cert(env, "local", "localhost", "DNS:localhost,IP:127.0.0.1");
    make_cert(env, "other", "localhost", "DNS:localhost,IP:127.0.0.1");
    return 0;
}

/* weirctl over tls:// works and verifies the server; plaintext clients and a wrong CA are refused. */
static void test_weirctl_over_tls(void **state)
{
    th_env_t *env = *state;
    th_run_t r = {0};

    start_tls_weir(env, "local", NULL);
    const char *url = th_fmt("tls://127.0.0.1:%d", ctl_port);

    run(env, &r, th_weirctl_bin(), "-s", url, "-k", tokfile, "--ca", pem(env, "local"), "set", "weight", "7", NULL);
    if (r.status != 0)
        fail_msg("weirctl over TLS: exit %d: %s", r.status, r.err);
    run(env, &r, th_weirctl_bin(), "-s", url, "-k", tokfile, "--ca", pem(env, "local"), "get", "weight", NULL);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "canary 7.00\n"));
    /* by host name: the certificate names localhost too */
    run(env, &r, th_weirctl_bin(), "-s", th_fmt("tls://localhost:%d", ctl_port), "-k", tokfile, "--ca",
        pem(env, "local"), "status", NULL);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "generation 1\n"));
    /* the change went through the same path as any other: the Unix socket sees it */
    run(env, &r, th_weirctl_bin(), "-s", env->sock, "get", "weight", NULL);
    assert_non_null(strstr(r.out, "canary 7.00\n"));

    /* a CA that did not sign the server's certificate: weirctl refuses before sending the token */
    run(env, &r, th_weirctl_bin(), "-s", url, "-k", tokfile, "--ca", pem(env, "other"), "set", "weight", "9", NULL);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "TLS handshake failed"));
    /* weirctl's alert (unknown CA) ends the handshake on weir's side too */
    assert_int_equal(metric(env, HS_ERRORS("peer_alert")), 1);
    assert_int_equal(metric(env, HS_ERRORS("not_tls")), 0);

    /* weirctl speaking plaintext to the TLS port: no reply, exit 2, and the token never was accepted */
    run(env, &r, th_weirctl_bin(), "-s", th_fmt("tcp://127.0.0.1:%d", ctl_port), "-k", tokfile, "set", "weight", "9",
        NULL);
    assert_int_equal(r.status, 2);
    /* a raw plaintext client: closed, nothing answered */
    th_conn_t *c = th_conn_open(ctl_port);
    th_conn_sendf(c, "auth %s\nset weight 9\n", TOKEN);
    assert_true(th_conn_wait_closed(c, TH_TIMEOUT_MS));
    if (c->len > 0 && memmem(c->buf, c->len, "ok", 2) != NULL)
        fail_msg("plaintext client answered: %.*s", (int)c->len, c->buf);
    th_conn_close(c);
    run(env, &r, th_weirctl_bin(), "-s", env->sock, "get", "weight", NULL);
    assert_non_null(strstr(r.out, "canary 7.00\n"));
    assert_int_equal(metric(env, HS_ERRORS("not_tls")), 2);
}

/* TLS 1.1 is refused by weir (the client is allowed to offer it), TLS 1.2 and 1.3 are served. */
static void test_protocol_versions(void **state)
{
    th_env_t *env = *state;
    th_run_t r = {0};
    const char *hp;

    start_tls_weir(env, "local", NULL);
    hp = th_fmt("127.0.0.1:%d", ctl_port);
    run(env, &r, OPENSSL, "s_client", "-connect", hp, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0", NULL);
    assert_int_not_equal(r.status, 0);
    assert_int_equal(metric(env, HS_ERRORS("protocol_version")), 1);
    run(env, &r, OPENSSL, "s_client", "-connect", hp, "-tls1_2", NULL);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "Protocol  : TLSv1.2"));
    run(env, &r, OPENSSL, "s_client", "-connect", hp, "-tls1_3", NULL);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "TLSv1.3"));
    assert_int_equal(metric(env, HS_ERRORS("protocol_version")), 1);
}

/* SNI: the certificate whose names match, wildcards for one label, the first for unknown names and no SNI. */
static void test_sni(void **state)
{
    th_env_t *env = *state;
    th_run_t r = {0};

    make_cert(env, "one", "one.test", "DNS:one.test");
    make_cert(env, "two", "two.test", "DNS:two.test");
    make_cert(env, "wild", "wild.test", "DNS:*.wild.test");
    start_tls_weir(env, "one", "two", "wild", NULL);
    assert_string_equal(served_subject(env, "two.test", &r), "subject=CN = two.test");
    assert_string_equal(served_subject(env, "one.test", &r), "subject=CN = one.test");
    assert_string_equal(served_subject(env, "a.wild.test", &r), "subject=CN = wild.test");
    /* a wildcard covers one label only */
    assert_string_equal(served_subject(env, "a.b.wild.test", &r), "subject=CN = one.test");
    assert_string_equal(served_subject(env, "unknown.test", &r), "subject=CN = one.test");
    assert_string_equal(served_subject(env, NULL, &r), "subject=CN = one.test");
}

struct hup_wait {
    th_env_t *env;
    const char *want;
};

static bool serves(void *arg)
{
    struct hup_wait *w = arg;
    th_run_t r;
    return strcmp(served_subject(w->env, "cur.test", &r), w->want) == 0;
}

static bool logged_kept(void *arg)
{
    th_env_t *env = arg;
    char *log = th_slurp(env->weir.err);
    return log != NULL && strstr(log, "control-tls keeps its certificates") != NULL;
}

/* SIGHUP: new handshakes get the new certificate; a bad pair keeps the old one, logged and counted. */
static void test_sighup_reload(void **state)
{
    th_env_t *env = *state;
    th_run_t r = {0};
    struct hup_wait w = {env, "subject=CN = new.test"};

    make_cert(env, "old", "old.test", "DNS:cur.test");
    make_cert(env, "new", "new.test", "DNS:cur.test");
    copy_file(pem(env, "old"), pem(env, "cur"));
    copy_file(key(env, "old"), key(env, "cur"));
    start_tls_weir(env, "cur", NULL);
    assert_string_equal(served_subject(env, "cur.test", &r), "subject=CN = old.test");

    copy_file(pem(env, "new"), pem(env, "cur"));
    copy_file(key(env, "new"), key(env, "cur"));
    assert_int_equal(kill(env->weir.pid, SIGHUP), 0);
    if (!th_poll(serves, &w, TH_TIMEOUT_MS))
        fail_msg("after SIGHUP weir still serves: %s", served_subject(env, "cur.test", &r));

    /* a key that does not match the certificate */
    copy_file(key(env, "old"), key(env, "cur"));
    assert_int_equal(kill(env->weir.pid, SIGHUP), 0);
    assert_true(th_poll(logged_kept, env, TH_TIMEOUT_MS));
    assert_string_equal(served_subject(env, "cur.test", &r), "subject=CN = new.test");
    assert_int_equal(metric(env, "weir_tls_reload_errors_total"), 1);
    run(env, &r, th_weirctl_bin(), "-s", th_fmt("tls://127.0.0.1:%d", ctl_port), "-k", tokfile, "--ca",
        pem(env, "local"), "status", NULL);
    assert_int_equal(r.status, 2); /* the served certificate is new.test's, not local's */
}

/* Whether a TLS 1.2 connection resumes with the session saved in <sess> (then saves the new one there). */
static bool resumes(th_env_t *env, const char *sess)
{
    th_run_t r = {0};
    bool have = access(sess, F_OK) == 0;

    if (have)
        run(env, &r, OPENSSL, "s_client", "-connect", th_fmt("127.0.0.1:%d", ctl_port), "-tls1_2", "-sess_in", sess,
            "-sess_out", sess, NULL);
    else
        run(env, &r, OPENSSL, "s_client", "-connect", th_fmt("127.0.0.1:%d", ctl_port), "-tls1_2", "-sess_out", sess,
            NULL);
    assert_int_equal(r.status, 0);
    return strstr(r.out, "\nReused, ") != NULL;
}

/* Session tickets resume, across a SIGHUP reload too (the keys are the process's); tls-session-tickets off: no
 * resumption (no server-side cache either). */
static void test_session_tickets(void **state)
{
    th_env_t *env = *state;
    const char *sess = th_fmt("%s/sess", env->dir);

    start_tls_weir(env, "local", NULL);
    assert_false(resumes(env, sess));
    assert_true(resumes(env, sess));
    assert_int_equal(kill(env->weir.pid, SIGHUP), 0);
    assert_true(resumes(env, sess));
    th_weir_stop(env);

    unlink(sess);
    ctl_port = th_free_port();
    th_weir_startl(env, "--stable", env->up[0].addr, "--control-tcp", th_fmt("127.0.0.1:%d", ctl_port),
                   "--control-token-file", tokfile, "--control-tls", "on", "--tls-certificate", pem(env, "local"),
                   key(env, "local"), "--tls-session-tickets", "off", NULL);
    assert_false(resumes(env, sess));
    assert_false(resumes(env, sess));
}

/* An in-process TLS client of the control listener: a blocking socket, every read bounded by TH_TIMEOUT_MS. */
typedef struct {
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
} tls_cli_t;

static tls_cli_t *tls_cli_open(th_env_t *env)
{
    tls_cli_t *t = th_alloc(sizeof(*t));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)ctl_port)};
    struct timeval tv = {.tv_sec = TH_TIMEOUT_MS / 1000};

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_true((t->fd = socket(AF_INET, SOCK_STREAM, 0)) >= 0);
    assert_int_equal(setsockopt(t->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
    assert_int_equal(setsockopt(t->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)), 0);
    assert_int_equal(connect(t->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_non_null(t->ctx = SSL_CTX_new(TLS_client_method()));
    assert_int_equal(SSL_CTX_load_verify_locations(t->ctx, pem(env, "local"), NULL), 1);
    SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER, NULL);
    assert_non_null(t->ssl = SSL_new(t->ctx));
    assert_int_equal(SSL_set_fd(t->ssl, t->fd), 1);
    if (SSL_connect(t->ssl) != 1)
        fail_msg("TLS handshake with the control listener failed");
    return t;
}

/* Sends <line> and returns the decrypted reply up to its blank line, or what came before the close ("" if nothing). */
static const char *tls_cli_req(tls_cli_t *t, const char *line)
{
    char buf[4096];
    size_t len = 0;
    int k;

    assert_int_equal(SSL_write(t->ssl, line, (int)strlen(line)), (int)strlen(line));
    while (len < sizeof(buf) - 1 && (k = SSL_read(t->ssl, buf + len, (int)(sizeof(buf) - 1 - len))) > 0) {
        len += (size_t)k;
        buf[len] = '\0';
        if (strstr(buf, "\n\n") != NULL)
            break;
    }
    buf[len] = '\0';
    return th_strdup(buf);
}

/* Whether the server closed the connection: SSL_read ends (close_notify or EOF) instead of timing out. */
static bool tls_cli_closed(tls_cli_t *t)
{
    char b;
    int k = SSL_read(t->ssl, &b, 1);
    return k <= 0 && SSL_get_error(t->ssl, k) != SSL_ERROR_WANT_READ;
}

static void tls_cli_close(tls_cli_t *t)
{
    SSL_free(t->ssl);
    SSL_CTX_free(t->ctx);
    close(t->fd);
}

#define CTL_CAP 64     /* proxy/control.c CTL_MAX_CONNS: authenticated TCP clients */
#define CTL_PREAUTH 16 /* proxy/control.c CTL_MAX_PREAUTH: TCP clients not authenticated yet */

/* control-tls keeps the control listener's slots: connections that never finish a handshake are unauthenticated
 * ones, so more of them than their pool evict the oldest and lock out no client; authenticated TLS clients take the
 * 64 slots, and the one past them is refused with an error it can read, encrypted, before the close. */
static void test_connection_cap(void **state)
{
    th_env_t *env = *state;
    th_conn_t *silent[CTL_PREAUTH + 4];
    tls_cli_t *held[CTL_CAP], *extra;
    size_t i;

    ctl_port = th_free_port();
    tokfile = th_write_file(env, "token", TOKEN "\n");
    th_weir_startl(env, "--stable", env->up[0].addr, "--control-tcp", th_fmt("127.0.0.1:%d", ctl_port),
                   "--control-token-file", tokfile, "--control-tls", "on", "--tls-certificate", pem(env, "local"),
                   key(env, "local"), "--header-timeout", "120s", "--idle-timeout", "120s", NULL);
    assert_true(th_wait_port(ctl_port, TH_TIMEOUT_MS, &env->weir));
    /* silent connections, no handshake: the oldest are evicted, and a TLS client still gets through */
    for (i = 0; i < CTL_PREAUTH + 4; i++)
        silent[i] = th_conn_open(ctl_port);
    extra = tls_cli_open(env);
    assert_string_equal(tls_cli_req(extra, "auth " TOKEN "\n"), "ok\n\n");
    tls_cli_close(extra);
    assert_true(th_conn_wait_closed(silent[0], TH_TIMEOUT_MS));
    assert_non_null(strstr(th_slurp(env->weir.err), "not authenticated: the oldest is closed for a new one"));
    for (i = 0; i < CTL_PREAUTH + 4; i++)
        th_conn_close(silent[i]);

    /* one by one, each authenticated before the next connects: CTL_CAP held, the next one refused */
    for (i = 0; i < CTL_CAP; i++) {
        held[i] = tls_cli_open(env);
        assert_string_equal(tls_cli_req(held[i], "auth " TOKEN "\n"), "ok\n\n");
    }
    extra = tls_cli_open(env);
    assert_string_equal(tls_cli_req(extra, "auth " TOKEN "\nset weight 9\n"),
                        "error: too many control connections\n\n");
    assert_true(tls_cli_closed(extra));
    tls_cli_close(extra);
    /* the held ones still work, and the refused one's request was not executed */
    const char *w = tls_cli_req(held[CTL_CAP - 1], "get weight\n");
    if (strncmp(w, "ok\n", 3) != 0 || strstr(w, "canary 0.00\n") == NULL)
        fail_msg("get weight after the refused client: \"%s\"", w);
    for (i = 0; i < CTL_CAP; i++)
        tls_cli_close(held[i]);
}

/* weir -t loads the certificates and checks each matches its key (SPEC §1). */
static void test_check_certificates(void **state)
{
    th_env_t *env = *state;
    th_run_t r = {0};

    run(env, &r, th_weir_bin(), "-t", "--tls-certificate", pem(env, "local"), key(env, "local"), NULL);
    if (r.status != 0)
        fail_msg("weir -t with a good pair: exit %d: %s", r.status, r.err);
    run(env, &r, th_weir_bin(), "-t", "--tls-certificate", pem(env, "local"), key(env, "other"), NULL);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "does not match the key"));
    run(env, &r, th_weir_bin(), "-t", "--tls-certificate", th_fmt("%s/missing.pem", env->dir), key(env, "local"), NULL);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "No such file or directory"));
    run(env, &r, th_weir_bin(), "-t", "--tls-certificate", pem(env, "local"), key(env, "local"), "--tls-ciphers",
        "NOT-A-CIPHER", NULL);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "tls-ciphers"));
    run(env, &r, th_weir_bin(), "-t", "--tls-certificate", pem(env, "local"), key(env, "local"), "--tls-client-ca",
        th_fmt("%s/nope.pem", env->dir), NULL);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "tls-client-ca"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_weirctl_over_tls, start_env, th_teardown),
        cmocka_unit_test_setup_teardown(test_protocol_versions, start_env, th_teardown),
        cmocka_unit_test_setup_teardown(test_sni, start_env, th_teardown),
        cmocka_unit_test_setup_teardown(test_sighup_reload, start_env, th_teardown),
        cmocka_unit_test_setup_teardown(test_check_certificates, start_env, th_teardown),
        cmocka_unit_test_setup_teardown(test_connection_cap, start_env, th_teardown),
        cmocka_unit_test_setup_teardown(test_session_tickets, start_env, th_teardown),
    };
    th_filter_from_env();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
