/* TLS engine over OpenSSL memory BIOs: see include/px/tls.h.
 *
 * Certificates. A "set" holds one SSL_CTX per `tls-certificate`, all with the same settings; connections start on
 * the first (the default) and the SNI callback moves a connection to the first certificate whose names match
 * (X509_check_host: subjectAltName DNS names, or the CN without them, and `*.example.com` for one label). A set is
 * immutable and reference counted: a reload builds a new set and swaps the pointer; each connection holds the set
 * it started with until it is freed.
 *
 * Session tickets. The keys live in this process only (never on disk), shared by every context so a reload does
 * not end resumption: a new key every TICKET_ROTATE_S; the previous one still decrypts for one more period, and a
 * ticket it decrypts is renewed under the current key. No server-side session cache: tickets keep memory bounded.
 *
 * Memory. SSL_MODE_RELEASE_BUFFERS lets OpenSSL free its record buffers between records, and px_tls_compact()
 * replaces drained memory BIOs, so an idle connection keeps only the SSL object. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "common/macros.h"
#include "px/tls.h"

/* Mozilla "intermediate" TLS 1.2 suites without DHE: forward secrecy and AEAD only. TLS 1.3 suites are all AEAD. */
#define DEFAULT_CIPHERS                                                                                                \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"                         \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define TICKET_ROTATE_S 3600
#define SID_CTX "weir"

const char px_tls_err_protocol[] = "protocol_version";
const char px_tls_err_not_tls[] = "not_tls";
const char px_tls_err_cipher[] = "no_shared_cipher";
const char px_tls_err_client_cert[] = "client_certificate";
const char px_tls_err_alpn[] = "no_application_protocol";
const char px_tls_err_alert[] = "peer_alert";
const char px_tls_err_closed[] = "closed";
const char px_tls_err_other[] = "other";

static const char *const reasons[PX_TLS_NREASONS] = {
    px_tls_err_protocol, px_tls_err_not_tls, px_tls_err_cipher, px_tls_err_client_cert,
    px_tls_err_alpn,     px_tls_err_alert,   px_tls_err_closed, px_tls_err_other,
};

static _Atomic uint64_t handshake_errors[PX_TLS_NREASONS];
static _Atomic uint64_t reload_errors;
static atomic_int in_use;

typedef struct cert_set_s {
    atomic_uint refs;
    size_t n;
    SSL_CTX *ctx[]; /* ctx[0] is the default */
} cert_set_t;

struct px_tls_ctx_s {
    pthread_mutex_t lock; /* guards <set> against a reload on another thread */
    cert_set_t *set;
    int alpn, client_ca;
};

struct px_tls_s {
    SSL *ssl;
    cert_set_t *set;
    unsigned failed : 1;
};

/* ---- reasons and counters ---- */

unsigned px_tls_reason_index(const char *err)
{
    unsigned i;

    for (i = 0; i < PX_TLS_NREASONS; i++)
        if (reasons[i] == err)
            return i;
    return PX_TLS_NREASONS - 1;
}

const char *px_tls_reason(const char *err)
{
    return reasons[px_tls_reason_index(err)];
}

const char *px_tls_reason_name(unsigned i)
{
    return i < PX_TLS_NREASONS ? reasons[i] : NULL;
}

uint64_t px_tls_handshake_errors(unsigned i)
{
    return i < PX_TLS_NREASONS ? atomic_load_explicit(&handshake_errors[i], memory_order_relaxed) : 0;
}

int px_tls_in_use(void)
{
    return atomic_load_explicit(&in_use, memory_order_relaxed);
}

uint64_t px_tls_reload_errors(void)
{
    return atomic_load_explicit(&reload_errors, memory_order_relaxed);
}

/* The reason of the error on top of OpenSSL's queue, which is then cleared (it is per thread). */
static const char *classify(void)
{
    unsigned long e = ERR_peek_last_error();
    int r = ERR_GET_REASON(e);
    const char *err = px_tls_err_other;

    if (e != 0 && ERR_GET_LIB(e) == ERR_LIB_SSL) {
        if (r >= SSL_AD_REASON_OFFSET)
            err = px_tls_err_alert;
        else if (r == SSL_R_UNSUPPORTED_PROTOCOL || r == SSL_R_VERSION_TOO_LOW)
            err = px_tls_err_protocol;
        else if (r == SSL_R_WRONG_VERSION_NUMBER || r == SSL_R_HTTP_REQUEST || r == SSL_R_HTTPS_PROXY_REQUEST ||
                 r == SSL_R_PACKET_LENGTH_TOO_LONG || r == SSL_R_UNKNOWN_PROTOCOL)
            err = px_tls_err_not_tls;
        else if (r == SSL_R_NO_SHARED_CIPHER)
            err = px_tls_err_cipher;
        else if (r == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE || r == SSL_R_CERTIFICATE_VERIFY_FAILED)
            err = px_tls_err_client_cert;
        else if (r == SSL_R_NO_APPLICATION_PROTOCOL)
            err = px_tls_err_alpn;
    }
    ERR_clear_error();
    return err;
}

/* ---- session ticket keys ---- */

typedef struct ticket_key_s {
    unsigned char name[16], aes[32], hmac[32];
} ticket_key_t;

static pthread_mutex_t keys_lock = PTHREAD_MUTEX_INITIALIZER;
static ticket_key_t keys[2]; /* [0] current, [1] previous */
static int nkeys;
static time_t keys_made;

static int new_key(ticket_key_t *k)
{
    return RAND_bytes(k->name, sizeof(k->name)) == 1 && RAND_bytes(k->aes, sizeof(k->aes)) == 1 &&
                   RAND_bytes(k->hmac, sizeof(k->hmac)) == 1
               ? 0
               : -1;
}

/* Under keys_lock: a first key, or a new current one once the current is TICKET_ROTATE_S old. */
static int rotate_keys(void)
{
    struct timespec ts;
    ticket_key_t k;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (nkeys > 0 && ts.tv_sec - keys_made < TICKET_ROTATE_S)
        return 0;
    if (new_key(&k) != 0)
        return -1;
    keys[1] = keys[0];
    keys[0] = k;
    nkeys = nkeys == 0 ? 1 : 2;
    keys_made = ts.tv_sec;
    OPENSSL_cleanse(&k, sizeof(k));
    return 0;
}

static int ticket_cb(SSL *ssl, unsigned char *name, unsigned char *iv, EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    ticket_key_t k;
    OSSL_PARAM params[3];
    int found = -1, i, rc;
    (void)ssl;

    pthread_mutex_lock(&keys_lock);
    if (rotate_keys() == 0) {
        if (enc)
            found = 0;
        for (i = 0; !enc && i < nkeys; i++)
            if (memcmp(keys[i].name, name, sizeof(keys[i].name)) == 0)
                found = i;
        if (found >= 0)
            k = keys[found];
    }
    pthread_mutex_unlock(&keys_lock);
    if (found < 0)
        return enc ? -1 : 0; /* encrypting: no ticket; decrypting: unknown key, a full handshake */
    params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k.hmac, sizeof(k.hmac));
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
    params[2] = OSSL_PARAM_construct_end();
    if (enc) {
        memcpy(name, k.name, sizeof(k.name));
        rc = RAND_bytes(iv, 16) == 1 && EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) == 1 &&
             EVP_MAC_CTX_set_params(hctx, params) == 1;
    } else {
        rc = EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) == 1 &&
             EVP_MAC_CTX_set_params(hctx, params) == 1;
    }
    OPENSSL_cleanse(&k, sizeof(k));
    if (!rc)
        return -1;
    return found == 1 ? 2 : 1; /* 2: decrypted with the previous key, issue a new ticket */
}

/* ---- contexts ---- */

static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return 0; /* an encrypted key fails to load rather than prompting on a terminal */
}

/* ALPN: http/1.1 when the client offers it. h2 is not selected before HTTP/2 exists; a client offering only
 * protocols we do not serve gets the no_application_protocol alert (RFC 7301). */
static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                   unsigned int inlen, void *arg)
{
    static const char want[] = "http/1.1";
    unsigned i = 0;
    (void)ssl, (void)arg;

    while (i < inlen) {
        unsigned l = in[i];
        if (i + 1 + l > inlen)
            break;
        if (l == sizeof(want) - 1 && memcmp(in + i + 1, want, l) == 0) {
            *out = in + i + 1;
            *outlen = (unsigned char)l;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + l;
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

static int sni_cb(SSL *ssl, int *alert, void *arg)
{
    cert_set_t *set = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    size_t i;
    (void)alert;

    if (name == NULL)
        return SSL_TLSEXT_ERR_NOACK;
    for (i = 0; i < set->n; i++) {
        X509 *x = SSL_CTX_get0_certificate(set->ctx[i]);
        if (x != NULL && X509_check_host(x, name, strlen(name), 0, NULL) == 1) {
            if (i > 0 && SSL_set_SSL_CTX(ssl, set->ctx[i]) == NULL)
                return SSL_TLSEXT_ERR_ALERT_FATAL;
            return SSL_TLSEXT_ERR_OK;
        }
    }
    return SSL_TLSEXT_ERR_OK; /* unknown name: the default certificate */
}

static void set_release(cert_set_t *set)
{
    size_t i;

    if (set == NULL || atomic_fetch_sub(&set->refs, 1) != 1)
        return;
    for (i = 0; i < set->n; i++)
        SSL_CTX_free(set->ctx[i]);
    free(set);
}

/* "<what> <path>: <OpenSSL's reason>" into <err>; clears the queue. */
static void ssl_fail(char *err, size_t errlen, const char *what, const char *path)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e != 0 ? ERR_reason_error_string(e) : NULL;

    snprintf(err, errlen, "%s %s: %s", what, path, r != NULL ? r : "cannot load");
    ERR_clear_error();
}

/* Whether <path> can be opened: fopen's errno reads better than OpenSSL's "system lib". */
static int readable(const char *what, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");

    if (f == NULL) {
        snprintf(err, errlen, "%s %s: %s", what, path, strerror(errno));
        return -1;
    }
    fclose(f);
    return 0;
}

static SSL_CTX *make_ctx(const px_config_t *cfg, const px_cfg_tls_cert_t *tc, int alpn, int client_ca, char *err,
                         size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    unsigned p = cfg->tls_protocols;

    if (ctx == NULL) {
        snprintf(err, errlen, "TLS: out of memory");
        return NULL;
    }
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
    SSL_CTX_set_min_proto_version(ctx, (p & PX_TLS_PROTO_V12) ? TLS1_2_VERSION : TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(ctx, (p & PX_TLS_PROTO_V13) ? TLS1_3_VERSION : TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)SID_CTX, sizeof(SID_CTX) - 1);
    if (cfg->tls_session_tickets) {
        SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb);
    } else {
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        SSL_CTX_set_num_tickets(ctx, 0);
    }
    if (SSL_CTX_set_cipher_list(ctx, cfg->tls_ciphers != NULL ? cfg->tls_ciphers : DEFAULT_CIPHERS) != 1) {
        ssl_fail(err, errlen, "tls-ciphers", cfg->tls_ciphers != NULL ? cfg->tls_ciphers : DEFAULT_CIPHERS);
        goto fail;
    }
    if (readable("tls-certificate", tc->cert, err, errlen) != 0 || readable("tls-certificate", tc->key, err, errlen))
        goto fail;
    if (SSL_CTX_use_certificate_chain_file(ctx, tc->cert) != 1) {
        ssl_fail(err, errlen, "tls-certificate", tc->cert);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, tc->key, SSL_FILETYPE_PEM) != 1 &&
        ERR_GET_REASON(ERR_peek_last_error()) != X509_R_KEY_VALUES_MISMATCH) {
        ssl_fail(err, errlen, "tls-certificate key", tc->key);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        ERR_clear_error();
        snprintf(err, errlen, "tls-certificate %s: does not match the key %s", tc->cert, tc->key);
        goto fail;
    }
    if (client_ca && cfg->tls_client_ca != NULL) {
        STACK_OF(X509_NAME) * names;
        if (readable("tls-client-ca", cfg->tls_client_ca, err, errlen) != 0)
            goto fail;
        if (SSL_CTX_load_verify_locations(ctx, cfg->tls_client_ca, NULL) != 1 ||
            (names = SSL_load_client_CA_file(cfg->tls_client_ca)) == NULL) {
            ssl_fail(err, errlen, "tls-client-ca", cfg->tls_client_ca);
            goto fail;
        }
        SSL_CTX_set_client_CA_list(ctx, names);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    if (alpn == PX_TLS_ALPN_HTTP)
        SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, NULL);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

static cert_set_t *make_set(const px_config_t *cfg, int alpn, int client_ca, char *err, size_t errlen)
{
    cert_set_t *set;
    size_t i;

    if (cfg->ntls_certs == 0) {
        snprintf(err, errlen, "TLS needs a tls-certificate");
        return NULL;
    }
    if ((set = calloc(1, sizeof(*set) + cfg->ntls_certs * sizeof(SSL_CTX *))) == NULL) {
        snprintf(err, errlen, "TLS: out of memory");
        return NULL;
    }
    atomic_init(&set->refs, 1);
    for (i = 0; i < cfg->ntls_certs; i++) {
        if ((set->ctx[i] = make_ctx(cfg, &cfg->tls_certs[i], alpn, client_ca, err, errlen)) == NULL) {
            set_release(set);
            return NULL;
        }
        set->n = i + 1;
        SSL_CTX_set_tlsext_servername_callback(set->ctx[i], sni_cb);
        SSL_CTX_set_tlsext_servername_arg(set->ctx[i], set);
    }
    return set;
}

px_tls_ctx_t *px_tls_ctx_new(const px_config_t *cfg, int alpn, int client_ca, char *err, size_t errlen)
{
    px_tls_ctx_t *ctx = calloc(1, sizeof(*ctx));

    if (ctx == NULL) {
        snprintf(err, errlen, "TLS: out of memory");
        return NULL;
    }
    ctx->alpn = alpn;
    ctx->client_ca = client_ca;
    if ((ctx->set = make_set(cfg, alpn, client_ca, err, errlen)) == NULL) {
        free(ctx);
        return NULL;
    }
    pthread_mutex_init(&ctx->lock, NULL);
    atomic_store(&in_use, 1);
    return ctx;
}

int px_tls_ctx_reload(px_tls_ctx_t *ctx, const px_config_t *cfg, char *err, size_t errlen)
{
    cert_set_t *set = make_set(cfg, ctx->alpn, ctx->client_ca, err, errlen), *old;

    if (set == NULL) {
        atomic_fetch_add_explicit(&reload_errors, 1, memory_order_relaxed);
        return -1;
    }
    pthread_mutex_lock(&ctx->lock);
    old = ctx->set;
    ctx->set = set;
    pthread_mutex_unlock(&ctx->lock);
    set_release(old);
    return 0;
}

void px_tls_ctx_free(px_tls_ctx_t *ctx)
{
    if (ctx == NULL)
        return;
    set_release(ctx->set);
    pthread_mutex_destroy(&ctx->lock);
    free(ctx);
}

int px_tls_check_config(const px_config_t *cfg, char *err, size_t errlen)
{
    cert_set_t *set;

    if (cfg->ntls_certs == 0)
        return 0;
    if ((set = make_set(cfg, PX_TLS_ALPN_HTTP, 1, err, errlen)) == NULL)
        return -1;
    set_release(set);
    return 0;
}

/* ---- connections ---- */

px_tls_t *px_tls_new(px_tls_ctx_t *ctx)
{
    px_tls_t *t = calloc(1, sizeof(*t));
    BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());

    if (t == NULL || rb == NULL || wb == NULL)
        goto fail;
    pthread_mutex_lock(&ctx->lock);
    t->set = ctx->set;
    atomic_fetch_add(&t->set->refs, 1);
    pthread_mutex_unlock(&ctx->lock);
    if ((t->ssl = SSL_new(t->set->ctx[0])) == NULL) {
        set_release(t->set);
        goto fail;
    }
    /* empty memory BIOs report "retry", not EOF: the caller decides when the peer is gone */
    BIO_set_mem_eof_return(rb, -1);
    BIO_set_mem_eof_return(wb, -1);
    SSL_set_bio(t->ssl, rb, wb);
    SSL_set_accept_state(t->ssl);
    return t;
fail:
    BIO_free(rb);
    BIO_free(wb);
    free(t);
    ERR_clear_error();
    return NULL;
}

void px_tls_free(px_tls_t *t)
{
    if (t == NULL)
        return;
    SSL_free(t->ssl);
    set_release(t->set);
    free(t);
}

int px_tls_feed(px_tls_t *t, const void *p, size_t len)
{
    if (len == 0)
        return 0;
    if (BIO_write(SSL_get_rbio(t->ssl), p, (int)len) != (int)len) {
        ERR_clear_error();
        return -1;
    }
    return 0;
}

static const char *fail_with(px_tls_t *t, const char *err)
{
    if (!t->failed && !SSL_is_init_finished(t->ssl))
        atomic_fetch_add_explicit(&handshake_errors[px_tls_reason_index(err)], 1, memory_order_relaxed);
    t->failed = 1;
    return err;
}

ssize_t px_tls_read(px_tls_t *t, void *buf, size_t cap, const char **err)
{
    int n, e;

    if (t->failed) {
        *err = px_tls_err_other;
        return -1;
    }
    if (!SSL_is_init_finished(t->ssl)) {
        n = SSL_do_handshake(t->ssl);
        if (n != 1) {
            e = SSL_get_error(t->ssl, n);
            if (e == SSL_ERROR_WANT_READ) {
                ERR_clear_error();
                return 0;
            }
            *err = fail_with(t, e == SSL_ERROR_ZERO_RETURN ? px_tls_err_closed : classify());
            return -1;
        }
    }
    if (cap == 0)
        return 0;
    n = SSL_read(t->ssl, buf, (int)MIN(cap, (size_t)INT32_MAX));
    if (n > 0)
        return n;
    e = SSL_get_error(t->ssl, n);
    if (e == SSL_ERROR_WANT_READ) {
        ERR_clear_error();
        return 0;
    }
    *err = fail_with(t, e == SSL_ERROR_ZERO_RETURN ? px_tls_err_closed : classify());
    return -1;
}

int px_tls_write(px_tls_t *t, const void *p, size_t len, const char **err)
{
    int n;

    if (len == 0)
        return 0;
    if (t->failed || !SSL_is_init_finished(t->ssl)) {
        *err = px_tls_err_other;
        return -1;
    }
    /* a memory BIO takes everything: one call writes all of <p> as records */
    n = SSL_write(t->ssl, p, (int)MIN(len, (size_t)INT32_MAX));
    if (n != (int)len) {
        *err = fail_with(t, classify());
        return -1;
    }
    return 0;
}

void px_tls_shutdown(px_tls_t *t)
{
    if (!t->failed && SSL_is_init_finished(t->ssl))
        SSL_shutdown(t->ssl);
    ERR_clear_error();
}

size_t px_tls_pending_out(const px_tls_t *t)
{
    return BIO_ctrl_pending(SSL_get_wbio(t->ssl));
}

size_t px_tls_take_out(px_tls_t *t, void *buf, size_t cap)
{
    int n = BIO_read(SSL_get_wbio(t->ssl), buf, (int)MIN(cap, (size_t)INT32_MAX));
    return n > 0 ? (size_t)n : 0;
}

void px_tls_compact(px_tls_t *t)
{
    BIO *rb, *wb;

    if (BIO_ctrl_pending(SSL_get_rbio(t->ssl)) != 0 || BIO_ctrl_pending(SSL_get_wbio(t->ssl)) != 0)
        return;
    rb = BIO_new(BIO_s_mem());
    wb = BIO_new(BIO_s_mem());
    if (rb == NULL || wb == NULL) {
        BIO_free(rb);
        BIO_free(wb);
        ERR_clear_error();
        return;
    }
    BIO_set_mem_eof_return(rb, -1);
    BIO_set_mem_eof_return(wb, -1);
    SSL_set_bio(t->ssl, rb, wb); /* frees the drained ones and the memory they grew */
}

int px_tls_established(const px_tls_t *t)
{
    return SSL_is_init_finished(t->ssl);
}

const char *px_tls_alpn(const px_tls_t *t)
{
    static _Thread_local char buf[256];
    const unsigned char *p;
    unsigned n;

    SSL_get0_alpn_selected(t->ssl, &p, &n);
    memcpy(buf, p != NULL ? p : (const unsigned char *)"", n);
    buf[n] = '\0';
    return buf;
}

const char *px_tls_servername(const px_tls_t *t)
{
    const char *s = SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name);
    return s != NULL ? s : "";
}

const char *px_tls_version(const px_tls_t *t)
{
    return SSL_get_version(t->ssl);
}
