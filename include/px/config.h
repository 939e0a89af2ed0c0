/* Configuration: SPEC §2. One table drives both spellings (flag `--NAME V...` and file line `NAME V...`).
 * Pure C: no libuv, no llhttp, so the unit tests link it alone. */
#ifndef PX_CONFIG_H
#define PX_CONFIG_H
#include <stddef.h>
#include <stdint.h>

#define PX_VARIANT_NAME_MAX 32 /* [a-z0-9][a-z0-9-]{0,31} */
#define PX_HOST_MAX 255

/* A HOST:PORT as written; resolution happens later (proxy/resolve). <host> has no brackets for IPv6. */
typedef struct px_hostport_s {
    char host[PX_HOST_MAX + 1];
    uint16_t port;
} px_hostport_t;

typedef struct px_cfg_upstream_s {
    char variant[PX_VARIANT_NAME_MAX + 1];
    px_hostport_t addr;
} px_cfg_upstream_t;

/* A `tls-certificate CERT KEY`: PEM chain and key files. */
typedef struct px_cfg_tls_cert_s {
    char *cert, *key;
} px_cfg_tls_cert_t;

#define PX_TLS_PROTO_V12 1u /* tls-protocols bits */
#define PX_TLS_PROTO_V13 2u
#define PX_ALPN_H2 1u /* alpn bits */
#define PX_ALPN_HTTP11 2u

typedef struct px_cfg_weight_s {
    char variant[PX_VARIANT_NAME_MAX + 1];
    uint32_t bp; /* basis points, 0..10000 */
} px_cfg_weight_t;

enum px_sticky_kind {
    PX_STICKY_OFF = 0, /* a fresh random bucket per request */
    PX_STICKY_IP,      /* key: the client's address */
    PX_STICKY_HEADER,  /* key: the value of header <sticky_name> */
    PX_STICKY_COOKIE,  /* key: the value of cookie <sticky_name> */
};

enum px_log_level {
    PX_LOG_ERROR = 0, /* only failures that stop something */
    PX_LOG_WARN,      /* degraded but serving */
    PX_LOG_INFO,      /* lifecycle: start, stop, reload */
    PX_LOG_DEBUG,     /* per-connection detail */
};

typedef struct px_config_s {
    px_hostport_t *listen; /* at least one after px_config_load(): the default 127.0.0.1:8080 when none given */
    size_t nlisten;
    px_cfg_upstream_t *upstreams; /* in declaration order; `stable X` / `canary X` land here too */
    size_t nupstreams;
    px_cfg_weight_t *weights; /* in the order given; a later value for the same variant replaces the earlier */
    size_t nweights;
    enum px_sticky_kind sticky;
    char *sticky_name; /* header or cookie name for PX_STICKY_HEADER/COOKIE, else NULL */
    char *sticky_salt; /* never NULL; "" by default */
    int sticky_set_cookie;
    char *control;         /* default "/tmp/weir.sock" */
    unsigned control_mode; /* default 0600 */
    int has_control_tcp;
    px_hostport_t control_tcp;
    char *control_token_file; /* NULL when unset */
    char *state_file;         /* NULL when off */
    int has_admin;            /* 0 for `admin off` */
    px_hostport_t admin;      /* default 127.0.0.1:9901 */
    unsigned workers;         /* 0 means auto: one per CPU */
    uint64_t connect_timeout_ms, header_timeout_ms, idle_timeout_ms, upstream_timeout_ms, drain_timeout_ms;
    uint64_t resolve_interval_ms, stats_window_ms;
    size_t max_header_bytes;
    uint64_t max_connections;
    uint64_t mirror_max_inflight;
    int variant_header;
    char *access_log; /* NULL when off; "-" is stdout */
    enum px_log_level log_level;
    px_cfg_tls_cert_t *tls_certs; /* in the order given; the first is the default certificate */
    size_t ntls_certs;
    unsigned tls_protocols;  /* PX_TLS_PROTO_* bits; default both */
    char *tls_ciphers;       /* NULL: the built-in AEAD-only list */
    char *tls_client_ca;     /* NULL when off */
    int tls_session_tickets; /* default on */
    unsigned alpn;           /* PX_ALPN_* bits; default both */
    int control_tls;         /* control-tcp speaks TLS with the first tls-certificate */
    /* from the command line only */
    char *config_file; /* -c */
    int test_only;     /* -t */
} px_config_t;

enum px_config_result {
    PX_CONFIG_OK = 0,      /* run (or validate, with test_only) */
    PX_CONFIG_HELP = 1,    /* usage was printed to stdout: exit 0 */
    PX_CONFIG_VERSION = 2, /* version was printed to stdout: exit 0 */
    PX_CONFIG_ERROR = -1,  /* <err> holds one line, "FILE:LINE: msg" or "--flag: msg": exit 2 */
};

/* Fills <c> with the SPEC §2 defaults. */
void px_config_init(px_config_t *c);

/* Reads argv (-c FILE, -t, -h/--help, -V/--version, --NAME VALUE...): the file first, then the flags, which
 * override single-valued settings and add to repeatable ones. Validates the result (e.g. control-tcp needs
 * control-token-file) and, with -t, that the files it names can be used as start would use them (the token file
 * holds a token, the access log is writable). <c> must come from px_config_init(). Returns an enum
 * px_config_result. */
int px_config_load(px_config_t *c, int argc, char **argv, char *err, size_t errlen);

/* Releases what <c> owns; <c> may then be px_config_init()ed again. Idempotent. */
void px_config_free(px_config_t *c);

/* Prints the usage and the table of directives to stdout (for -h). */
void px_config_usage(const char *prog);

/* Prints the table of directives as a Markdown table (directive | value | default | notes) to stdout, so the
 * README's table comes from the same source as the parser. */
void px_config_print_markdown(void);

/* One row of the directive table, read-only. */
typedef struct px_directive_info_s {
    const char *name;  /* the file keyword; the flag is "--" followed by it */
    unsigned nargs;    /* values it takes: 1 or 2 */
    int repeatable;    /* 1: each occurrence adds (flags add to the file); 0: one value, a flag overrides the file */
    const char *value; /* shape of the value; alternatives separated by ", " */
    const char *def;   /* the default as a user would write it; "" for an empty string, "-" when there is none */
    const char *help;  /* one short line */
} px_directive_info_t;

/* Returns row <i> of the directive table (in the order of SPEC §2), or NULL when <i> is past its end. */
const px_directive_info_t *px_config_directive(size_t i);

/* Strict parsers, shared with the control plane. Each returns 0, or -1 on any malformed input.
 * Durations: an integer followed by ms, s, m or h ("250ms", "10s", "1m"); no bare numbers, no fractions.
 * Sizes: an integer with an optional k, m or g suffix (powers of 1024), e.g. "16k".
 * Host:port: "HOST:PORT" or "[V6]:PORT"; port 1..65535. */
int px_parse_duration_ms(const char *s, uint64_t *out);
int px_parse_size(const char *s, size_t *out);
int px_parse_hostport(const char *s, px_hostport_t *out);
/* Writes <hp> as "host:port", or "[v6]:port" for an IPv6 address, into <buf> (<size> bytes, NUL-terminated). */
void px_format_hostport(const px_hostport_t *hp, char *buf, size_t size);

/* px_parse_hostport() that also says why on failure: on -1, <*why> (a static string, e.g. "port out of range") is
 * set when <why> is not NULL. */
int px_parse_hostport_why(const char *s, px_hostport_t *out, const char **why);

#endif
