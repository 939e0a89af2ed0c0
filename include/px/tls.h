/* TLS engine over OpenSSL memory BIOs (SPEC §2 tls-*, §4 control-tls, §7 SIGHUP).
 *
 * Nothing here touches a socket: the caller feeds the ciphertext it read (px_tls_feed), takes plaintext out
 * (px_tls_read), gives plaintext to send (px_tls_write) and takes the ciphertext to put on the wire
 * (px_tls_take_out). So the engine sits under any transport (a libuv stream, a test's memory pipe) and the caller
 * keeps its own backpressure: the engine holds only what one feed or one write produced.
 *
 * A server context (px_tls_ctx_t) is built from the configuration: one certificate per `tls-certificate`, chosen by
 * SNI (X509_check_host: exact names and one-label wildcards), the first when nothing matches; `tls-protocols`,
 * `tls-ciphers`, `tls-session-tickets` (ticket keys made in memory and rotated), `tls-client-ca`, and an ALPN list.
 * px_tls_ctx_reload() swaps in freshly loaded certificates: connections made after it use them, those in flight
 * keep the set they started with (reference counted). A reload that fails keeps the old set.
 *
 * Errors are const char * sentinels (compare the pointer); px_tls_reason() gives the short reason used as the
 * `reason` label of weir_tls_handshake_errors_total. */
#ifndef PX_TLS_H
#define PX_TLS_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "px/config.h"

typedef struct px_tls_ctx_s px_tls_ctx_t;
typedef struct px_tls_s px_tls_t;

/* Sentinels returned through <*err>. */
extern const char px_tls_err_protocol[];    /* the peer offered no protocol version we accept (TLS 1.1, SSLv3) */
extern const char px_tls_err_not_tls[];     /* the peer did not speak TLS (plain HTTP or control text) */
extern const char px_tls_err_cipher[];      /* no cipher in common */
extern const char px_tls_err_client_cert[]; /* client certificate missing or not verified */
extern const char px_tls_err_alpn[];        /* no application protocol in common */
extern const char px_tls_err_alert[];       /* the peer aborted the handshake with an alert */
extern const char px_tls_err_closed[];      /* the peer closed (close_notify or EOF) */
extern const char px_tls_err_other[];       /* anything else, including out of memory */

/* Reasons in the order of the sentinels above; the index is px_tls_reason_index(). */
#define PX_TLS_NREASONS 8
const char *px_tls_reason(const char *err); /* "protocol_version", "not_tls", ... */
unsigned px_tls_reason_index(const char *err);
const char *px_tls_reason_name(unsigned reason_index); /* NULL past the last */

/* Downstream handshake failures counted per reason since start (weir_tls_handshake_errors_total{side="downstream"})
 * and failed certificate reloads (weir_tls_reload_errors_total). */
uint64_t px_tls_handshake_errors(unsigned reason_index);
uint64_t px_tls_reload_errors(void);
int px_tls_in_use(void); /* a context was made: the metrics above are exported */

enum {
    PX_TLS_ALPN_NONE = 0, /* no ALPN (the control listener) */
    PX_TLS_ALPN_HTTP = 1, /* the `alpn` directive's list; only http/1.1 is selected until HTTP/2 exists */
};

/* Builds a server context from <cfg> (its tls-* directives; at least one tls-certificate). <alpn> is a
 * PX_TLS_ALPN_*; <client_ca> 0 ignores tls-client-ca (the control listener authenticates by token). Returns NULL
 * with one line in <err> naming the file and the problem. */
px_tls_ctx_t *px_tls_ctx_new(const px_config_t *cfg, int alpn, int client_ca, char *err, size_t errlen);

/* Loads the certificates of <cfg> again: on success later px_tls_new() calls use them; on failure nothing changes
 * and <err> says why (the failure is counted). Returns 0 or -1. */
int px_tls_ctx_reload(px_tls_ctx_t *ctx, const px_config_t *cfg, char *err, size_t errlen);

/* Frees <ctx>; connections still open keep what they use until px_tls_free(). */
void px_tls_ctx_free(px_tls_ctx_t *ctx);

/* Checks what `weir -t` must check: every tls-certificate loads, matches its key, the ciphers and the client CA
 * load. Returns 0, or -1 with one line in <err>. */
int px_tls_check_config(const px_config_t *cfg, char *err, size_t errlen);

/* A server-side connection in accept state. NULL when out of memory. */
px_tls_t *px_tls_new(px_tls_ctx_t *ctx);
void px_tls_free(px_tls_t *t);

/* Gives <len> bytes of ciphertext read from the peer to the engine. Returns 0, or -1 (out of memory). */
int px_tls_feed(px_tls_t *t, const void *p, size_t len);

/* Advances the handshake and decrypts: returns the number of plaintext bytes put into <buf> (> 0), 0 when more
 * ciphertext is needed (or the handshake just progressed: check px_tls_pending_out), -1 with <*err> set on a
 * failure or when the peer closed. A handshake failure is counted once (side downstream). */
ssize_t px_tls_read(px_tls_t *t, void *buf, size_t cap, const char **err);

/* Encrypts all of <p>. Only after the handshake (px_tls_established). Returns 0, or -1 with <*err> set. */
int px_tls_write(px_tls_t *t, const void *p, size_t len, const char **err);

/* Replaces the memory BIOs when both are drained, returning the memory they grew: for a connection going idle. */
void px_tls_compact(px_tls_t *t);

/* Queues a close_notify alert. */
void px_tls_shutdown(px_tls_t *t);

/* Ciphertext waiting to be sent, and taking it: px_tls_take_out copies up to <cap> bytes and returns the count. */
size_t px_tls_pending_out(const px_tls_t *t);
size_t px_tls_take_out(px_tls_t *t, void *buf, size_t cap);

int px_tls_established(const px_tls_t *t);
const char *px_tls_alpn(const px_tls_t *t);       /* the negotiated protocol, "" when none */
const char *px_tls_servername(const px_tls_t *t); /* the client's SNI, "" when none */
const char *px_tls_version(const px_tls_t *t);    /* "TLSv1.3", ... */

#endif
