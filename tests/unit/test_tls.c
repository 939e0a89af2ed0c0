/* The TLS engine (proxy/tls.c) against an OpenSSL client, both over memory BIOs in this process: certificate choice
 * by SNI (exact, wildcard, default), protocol versions, ALPN, data both ways, a plaintext client, reloads, and the
 * handshake-error counters. Certificates are made here with OpenSSL's API under a mkdtemp() directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "px/config.h"
#include "px/tls.h"

static char dir[64];

static char *path(const char *name, const char *ext)
{
    static char buf[8][128];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof(buf[k]), "%s/%s.%s", dir, name, ext);
    return buf[k];
}

/* <dir>/<name>.pem and .key: a self-signed P-256 certificate for CN <cn>, subjectAltName <san>. */
static void make_cert(const char *name, const char *cn, const char *san)
{
    static long serial = 1;
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509V3_CTX v;
    X509_EXTENSION *e;
    X509_NAME *n;
    FILE *f;

    assert_non_null(k);
    assert_non_null(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, k);
    n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, n);
    X509V3_set_ctx_nodb(&v);
    X509V3_set_ctx(&v, x, x, NULL, NULL, 0);
    e = X509V3_EXT_conf_nid(NULL, &v, NID_subject_alt_name, san);
    assert_non_null(e);
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    assert_true(X509_sign(x, k, EVP_sha256()) > 0);
    assert_non_null(f = fopen(path(name, "pem"), "w"));
    PEM_write_X509(f, x);
    fclose(f);
    assert_non_null(f = fopen(path(name, "key"), "w"));
    PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(k);
}

static int setup(void **state)
{
    (void)state;
    strcpy(dir, "/tmp/weir-test-tls-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    make_cert("one", "one.test", "DNS:one.test");
    make_cert("two", "two.test", "DNS:two.test,DNS:deux.test");
    make_cert("wild", "wild.test", "DNS:*.wild.test");
    return 0;
}

static int teardown(void **state)
{
    const char *names[] = {"one", "two", "wild"};
    (void)state;
    for (size_t i = 0; i < 3; i++) {
        unlink(path(names[i], "pem"));
        unlink(path(names[i], "key"));
    }
    return rmdir(dir);
}

/* A configuration serving the certificates <names> (NULL-terminated) in order. */
static void config(px_config_t *c, ...)
{
    va_list ap;
    const char *name;

    px_config_init(c);
    va_start(ap, c);
    while ((name = va_arg(ap, const char *)) != NULL) {
        c->tls_certs = realloc(c->tls_certs, (c->ntls_certs + 1) * sizeof(*c->tls_certs));
        c->tls_certs[c->ntls_certs].cert = strdup(path(name, "pem"));
        c->tls_certs[c->ntls_certs].key = strdup(path(name, "key"));
        c->ntls_certs++;
    }
    va_end(ap);
}

/* An OpenSSL client over memory BIOs against a px_tls_t. */
struct pair {
    px_tls_t *s;
    SSL_CTX *cctx;
    SSL *c;
    const char *err; /* the server side's error, NULL while none */
    char got[256];   /* plaintext the server read */
    size_t ngot;
};

static void pair_open(struct pair *p, px_tls_ctx_t *ctx, const char *sni, int maxver, const char *alpn, size_t alen)
{
    memset(p, 0, sizeof(*p));
    assert_non_null(p->s = px_tls_new(ctx));
    assert_non_null(p->cctx = SSL_CTX_new(TLS_client_method()));
    if (maxver != 0) {
        SSL_CTX_set_min_proto_version(p->cctx, maxver);
        SSL_CTX_set_max_proto_version(p->cctx, maxver);
        SSL_CTX_set_security_level(p->cctx, 0); /* let the client offer old versions: the server must refuse */
        SSL_CTX_set_cipher_list(p->cctx, "DEFAULT@SECLEVEL=0");
    }
    assert_non_null(p->c = SSL_new(p->cctx));
    if (sni != NULL)
        SSL_set_tlsext_host_name(p->c, sni);
    if (alpn != NULL)
        SSL_set_alpn_protos(p->c, (const unsigned char *)alpn, (unsigned)alen);
    SSL_set_bio(p->c, BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem()));
    SSL_set_connect_state(p->c);
}

static void pair_close(struct pair *p)
{
    px_tls_free(p->s);
    SSL_free(p->c);
    SSL_CTX_free(p->cctx);
}

/* Moves bytes both ways until nothing moves (bounded): the client's records to the engine, the engine's to the
 * client. Returns 1 when both ends finished the handshake. */
static int pump(struct pair *p)
{
    char buf[16384];
    int round;

    for (round = 0; round < 50; round++) {
        int moved = 0, n;
        ssize_t k;
        size_t m;
        if (!SSL_is_init_finished(p->c))
            SSL_do_handshake(p->c);
        while ((n = BIO_read(SSL_get_wbio(p->c), buf, sizeof(buf))) > 0) {
            assert_int_equal(px_tls_feed(p->s, buf, (size_t)n), 0);
            moved = 1;
        }
        if (p->err == NULL) {
            while ((k = px_tls_read(p->s, p->got + p->ngot, sizeof(p->got) - 1 - p->ngot, &p->err)) > 0)
                p->ngot += (size_t)k;
        }
        while ((m = px_tls_take_out(p->s, buf, sizeof(buf))) > 0) {
            BIO_write(SSL_get_rbio(p->c), buf, (int)m);
            moved = 1;
        }
        if (!moved)
            break;
    }
    ERR_clear_error();
    return p->err == NULL && SSL_is_init_finished(p->c) && px_tls_established(p->s);
}

/* The CN of the certificate the client received. */
static const char *served_cn(struct pair *p)
{
    static char cn[128];
    X509 *x = SSL_get1_peer_certificate(p->c);
    cn[0] = '\0';
    if (x != NULL) {
        X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn));
        X509_free(x);
    }
    return cn;
}

static const char *handshake_cn(px_tls_ctx_t *ctx, const char *sni)
{
    struct pair p;
    static char cn[128];

    pair_open(&p, ctx, sni, 0, NULL, 0);
    assert_true(pump(&p));
    snprintf(cn, sizeof(cn), "%s", served_cn(&p));
    assert_string_equal(px_tls_servername(p.s), sni != NULL ? sni : "");
    pair_close(&p);
    return cn;
}

static void test_sni(void **state)
{
    px_config_t cfg;
    char err[256];
    px_tls_ctx_t *ctx;

    (void)state;
    config(&cfg, "one", "two", "wild", NULL);
    assert_non_null(ctx = px_tls_ctx_new(&cfg, PX_TLS_ALPN_HTTP, 1, err, sizeof(err)));
    assert_string_equal(handshake_cn(ctx, "two.test"), "two.test");
    assert_string_equal(handshake_cn(ctx, "deux.test"), "two.test"); /* any subjectAltName */
    assert_string_equal(handshake_cn(ctx, "ONE.test"), "one.test");  /* names are case-insensitive */
    assert_string_equal(handshake_cn(ctx, "x.wild.test"), "wild.test");
    assert_string_equal(handshake_cn(ctx, "y.x.wild.test"), "one.test"); /* a wildcard is one label */
    assert_string_equal(handshake_cn(ctx, "wild.test"), "one.test");
    assert_string_equal(handshake_cn(ctx, "nobody.test"), "one.test");
    assert_string_equal(handshake_cn(ctx, NULL), "one.test");
    px_tls_ctx_free(ctx);
    px_config_free(&cfg);
}

static void test_versions(void **state)
{
    px_config_t cfg;
    char err[256];
    px_tls_ctx_t *ctx;
    struct pair p;
    unsigned ip = px_tls_reason_index(px_tls_err_protocol);
    uint64_t before = px_tls_handshake_errors(ip);

    (void)state;
    config(&cfg, "one", NULL);
    assert_non_null(ctx = px_tls_ctx_new(&cfg, PX_TLS_ALPN_HTTP, 1, err, sizeof(err)));
    pair_open(&p, ctx, NULL, TLS1_1_VERSION, NULL, 0);
    assert_false(pump(&p));
    assert_ptr_equal(p.err, px_tls_err_protocol);
    assert_string_equal(px_tls_reason(p.err), "protocol_version");
    pair_close(&p);
    assert_int_equal(px_tls_handshake_errors(ip), before + 1);

    pair_open(&p, ctx, NULL, TLS1_2_VERSION, NULL, 0);
    assert_true(pump(&p));
    assert_string_equal(px_tls_version(p.s), "TLSv1.2");
    pair_close(&p);
    px_tls_ctx_free(ctx);

    /* tls-protocols TLSv1.3: 1.2 is refused too */
    cfg.tls_protocols = PX_TLS_PROTO_V13;
    assert_non_null(ctx = px_tls_ctx_new(&cfg, PX_TLS_ALPN_HTTP, 1, err, sizeof(err)));
    pair_open(&p, ctx, NULL, TLS1_2_VERSION, NULL, 0);
    assert_false(pump(&p));
    assert_ptr_equal(p.err, px_tls_err_protocol);
    pair_close(&p);
    pair_open(&p, ctx, NULL, 0, NULL, 0);
    assert_true(pump(&p));
    assert_string_equal(px_tls_version(p.s), "TLSv1.3");
    pair_close(&p);
    px_tls_ctx_free(ctx);
    px_config_free(&cfg);
}

static void test_alpn(void **state)
{
    px_config_t cfg;
    char err[256];
    px_tls_ctx_t *ctx, *plain;
    struct pair p;
    const unsigned char *sel;
    unsigned nsel;

    (void)state;
    config(&cfg, "one", NULL);
    assert_non_null(ctx = px_tls_ctx_new(&cfg, PX_TLS_ALPN_HTTP, 1, err, sizeof(err)));
    /* h2 first: not served yet, so http/1.1 */
    pair_open(&p, ctx, NULL, 0, "\x02h2\x08http/1.1", 12);
    assert_true(pump(&p));
    assert_string_equal(px_tls_alpn(p.s), "http/1.1");
    SSL_get0_alpn_selected(p.c, &sel, &nsel);
    assert_int_equal(nsel, 8);
    assert_memory_equal(sel, "http/1.1", 8);
    pair_close(&p);
    /* only h2: no protocol in common, the handshake fails */
    pair_open(&p, ctx, NULL, 0, "\x02h2", 3);
    assert_false(pump(&p));
    assert_ptr_equal(p.err, px_tls_err_alpn);
    pair_close(&p);
    /* no ALPN from the client: none selected */
    pair_open(&p, ctx, NULL, 0, NULL, 0);
    assert_true(pump(&p));
    assert_string_equal(px_tls_alpn(p.s), "");
    pair_close(&p);
    px_tls_ctx_free(ctx);
    /* a context without ALPN (the control listener) ignores the client's list */
    assert_non_null(plain = px_tls_ctx_new(&cfg, PX_TLS_ALPN_NONE, 0, err, sizeof(err)));
    pair_open(&p, plain, NULL, 0, "\x02h2", 3);
    assert_true(pump(&p));
    assert_string_equal(px_tls_alpn(p.s), "");
    pair_close(&p);
    px_tls_ctx_free(plain);
    px_config_free(&cfg);
}

/* Application data both ways, then a close_notify from the client. */
static void test_data(void **state)
{
    px_config_t cfg;
    char err[256], buf[64];
    px_tls_ctx_t *ctx;
    struct pair p;
    const char *werr = NULL;
    int n;

    (void)state;
    config(&cfg, "one", NULL);
    assert_non_null(ctx = px_tls_ctx_new(&cfg, PX_TLS_ALPN_NONE, 0, err, sizeof(err)));
    pair_open(&p, ctx, NULL, 0, NULL, 0);
    assert_true(pump(&p));
    assert_int_equal(SSL_write(p.c, "auth x\n", 7), 7);
    pump(&p);
    assert_int_equal(p.ngot, 7);
    assert_memory_equal(p.got, "auth x\n", 7);
    assert_int_equal(px_tls_write(p.s, "ok\n\n", 4, &werr), 0);
    pump(&p);
    assert_int_equal(SSL_read(p.c, buf, sizeof(buf)), 4);
    assert_memory_equal(buf, "ok\n\n", 4);
    px_tls_compact(p.s); /* drained: the BIOs are replaced, the connection goes on */
    assert_int_equal(px_tls_write(p.s, "again\n", 6, &werr), 0);
    pump(&p);
    assert_int_equal(n = SSL_read(p.c, buf, sizeof(buf)), 6);
    SSL_shutdown(p.c);
    pump(&p);
    assert_ptr_equal(p.err, px_tls_err_closed);
    pair_close(&p);
    px_tls_ctx_free(ctx);
    px_config_free(&cfg);
}

/* A client that speaks plaintext: the handshake fails as not_tls, counted. */
static void test_plaintext_client(void **state)
{
    px_config_t cfg;
    char err[256], buf[64];
    px_tls_ctx_t *ctx;
    px_tls_t *t;
    const char *e = NULL;
    unsigned i = px_tls_reason_index(px_tls_err_not_tls);
    uint64_t before = px_tls_handshake_errors(i);

    (void)state;
    config(&cfg, "one", NULL);
    assert_non_null(ctx = px_tls_ctx_new(&cfg, PX_TLS_ALPN_NONE, 0, err, sizeof(err)));
    assert_non_null(t = px_tls_new(ctx));
    assert_int_equal(px_tls_feed(t, "auth secret-token\nstatus\n", 25), 0);
    assert_int_equal(px_tls_read(t, buf, sizeof(buf), &e), -1);
    assert_ptr_equal(e, px_tls_err_not_tls);
    assert_int_equal(px_tls_handshake_errors(i), before + 1);
    px_tls_free(t);
    px_tls_ctx_free(ctx);
    px_config_free(&cfg);
}

/* tls-client-ca: a client without a certificate is refused (counted as client_certificate); one signed by the CA
 * (here the self-signed "two", its own CA) is served; the control listener's context (client_ca 0) asks for none. */
static void test_client_ca(void **state)
{
    px_config_t cfg;
    char err[256];
    px_tls_ctx_t *ctx, *noca;
    struct pair p;
    unsigned ic = px_tls_reason_index(px_tls_err_client_cert);
    uint64_t before = px_tls_handshake_errors(ic);

    (void)state;
    config(&cfg, "one", NULL);
    cfg.tls_client_ca = strdup(path("two", "pem"));
    assert_non_null(ctx = px_tls_ctx_new(&cfg, PX_TLS_ALPN_HTTP, 1, err, sizeof(err)));
    pair_open(&p, ctx, NULL, 0, NULL, 0);
    assert_false(pump(&p));
    assert_ptr_equal(p.err, px_tls_err_client_cert);
    pair_close(&p);
    assert_int_equal(px_tls_handshake_errors(ic), before + 1);

    pair_open(&p, ctx, NULL, 0, NULL, 0);
    assert_int_equal(SSL_use_certificate_file(p.c, path("two", "pem"), SSL_FILETYPE_PEM), 1);
    assert_int_equal(SSL_use_PrivateKey_file(p.c, path("two", "key"), SSL_FILETYPE_PEM), 1);
    assert_true(pump(&p));
    pair_close(&p);

    pair_open(&p, ctx, NULL, 0, NULL, 0); /* a certificate the CA did not sign */
    assert_int_equal(SSL_use_certificate_file(p.c, path("wild", "pem"), SSL_FILETYPE_PEM), 1);
    assert_int_equal(SSL_use_PrivateKey_file(p.c, path("wild", "key"), SSL_FILETYPE_PEM), 1);
    assert_false(pump(&p));
    assert_ptr_equal(p.err, px_tls_err_client_cert);
    pair_close(&p);
    px_tls_ctx_free(ctx);

    assert_non_null(noca = px_tls_ctx_new(&cfg, PX_TLS_ALPN_NONE, 0, err, sizeof(err)));
    pair_open(&p, noca, NULL, 0, NULL, 0);
    assert_true(pump(&p));
    pair_close(&p);
    px_tls_ctx_free(noca);
    px_config_free(&cfg);
}

/* A reload takes new certificates; a bad one keeps the old set and is counted; a connection made before a reload
 * keeps its set. */
static void test_reload(void **state)
{
    px_config_t a, b, bad;
    char err[256];
    px_tls_ctx_t *ctx;
    struct pair early;
    uint64_t before = px_tls_reload_errors();

    (void)state;
    config(&a, "one", NULL);
    config(&b, "two", NULL);
    config(&bad, "two", NULL);
    free(bad.tls_certs[0].key);
    bad.tls_certs[0].key = strdup(path("one", "key"));
    assert_non_null(ctx = px_tls_ctx_new(&a, PX_TLS_ALPN_NONE, 0, err, sizeof(err)));
    pair_open(&early, ctx, NULL, 0, NULL, 0); /* started on "one" */
    assert_int_equal(px_tls_ctx_reload(ctx, &b, err, sizeof(err)), 0);
    assert_string_equal(handshake_cn(ctx, NULL), "two.test");
    assert_true(pump(&early));
    assert_string_equal(served_cn(&early), "one.test");
    pair_close(&early);
    assert_int_equal(px_tls_ctx_reload(ctx, &bad, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "does not match the key"));
    assert_int_equal(px_tls_reload_errors(), before + 1);
    assert_string_equal(handshake_cn(ctx, NULL), "two.test");
    px_tls_ctx_free(ctx);
    assert_int_equal(px_tls_check_config(&bad, err, sizeof(err)), -1);
    assert_int_equal(px_tls_check_config(&b, err, sizeof(err)), 0);
    px_config_free(&a);
    px_config_free(&b);
    px_config_free(&bad);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sni),       cmocka_unit_test(test_versions),         cmocka_unit_test(test_alpn),
        cmocka_unit_test(test_data),      cmocka_unit_test(test_plaintext_client), cmocka_unit_test(test_reload),
        cmocka_unit_test(test_client_ca),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
