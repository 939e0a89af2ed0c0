/* Configuration (SPEC §2): one table of directives drives both spellings, `--NAME V...` flags and `NAME V...`
 * lines of a config file. The file is read first, then the flags: a flag overrides the file's value of a
 * single-valued directive and adds to a repeatable one. Every error is one line naming the place and the problem.
 *
 * Durations must be positive for every duration directive: a zero timeout or interval has no useful meaning here,
 * and rejecting it catches "0" typed where "0s" was never intended. They are capped at 24h so that deadline
 * arithmetic elsewhere never comes near overflow. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/macros.h"
#include "px/config.h"
#include "rt/parse.h"

#ifndef WEIR_VERSION
#error "WEIR_VERSION must be defined by the build (-DWEIR_VERSION='\"x.y.z\"')"
#endif

#define DURATION_MAX_MS (24ull * 60 * 60 * 1000)
#define WORKERS_MAX 256
#define SHOW_MAX 48 /* longest value quoted back in an error message */

struct directive;
typedef int (*set_fn)(px_config_t *c, const struct directive *d, char **v, char *why, size_t whylen);

struct directive {
    px_directive_info_t info;
    set_fn set;
    size_t off;              /* field of px_config_t for the generic setters */
    uint64_t min, max, step; /* accepted range of numeric values; a duration must be a multiple of <step> ms */
    unsigned minargs;        /* a list (tls-protocols, alpn) takes minargs..nargs values; 0: exactly nargs */
};

/* Where a directive was given: a line of a file, or a flag when <file> is NULL. */
struct where {
    const char *file;
    unsigned line;
};

static int set_listen(px_config_t *c, const struct directive *d, char **v, char *why, size_t n);
static int set_upstream(px_config_t *c, const struct directive *d, char **v, char *why, size_t n);
static int set_shorthand(px_config_t *c, const struct directive *d, char **v, char *why, size_t n);
static int set_weight(px_config_t *c, const struct directive *d, char **v, char *why, size_t n);
static int set_sticky(px_config_t *c, const struct directive *d, char **v, char *why, size_t n);
static int set_string(px_config_t *c, const struct directive *d, char **v, char *why, size_t n);
static int set_path(px_config_t *c, const struct directive *d, char **v, char *why, size_t n);
static int set_onoff(px_config_t *c, const struct directive *d, char **v, char *why, size_t n);
static int set_control(px_config_t *c, const struct directive *d, char **v, char *why, size_t n);
static int set_mode(px_config_t *c, const struct directive *d, char **v, char *why, size_t n);
static int set_control_tcp(px_config_t *c, const struct directive *d, char **v, char *why, size_t n);
static int set_admin(px_config_t *c, const struct directive *d, char **v, char *why, size_t n);
static int set_workers(px_config_t *c, const struct directive *d, char **v, char *why, size_t n);
static int set_duration(px_config_t *c, const struct directive *d, char **v, char *why, size_t n);
static int set_size(px_config_t *c, const struct directive *d, char **v, char *why, size_t n);
static int set_count(px_config_t *c, const struct directive *d, char **v, char *why, size_t n);
static int set_access_log(px_config_t *c, const struct directive *d, char **v, char *why, size_t n);
static int set_log_level(px_config_t *c, const struct directive *d, char **v, char *why, size_t n);
static int set_tls_certificate(px_config_t *c, const struct directive *d, char **v, char *why, size_t n);
static int set_tls_protocols(px_config_t *c, const struct directive *d, char **v, char *why, size_t n);
static int set_alpn(px_config_t *c, const struct directive *d, char **v, char *why, size_t n);

/* A row whose setter needs nothing more than the values; a single-valued row whose setter writes field <f>, within
 * [<lo>, <hi>] in steps of <st> where numeric. */
/* clang-format off */
#define ROW(name, nargs, rep, value, def, help, set) {{name, nargs, rep, value, def, help}, set, 0, 0, 0, 0, 0}
#define ROWF(name, value, def, help, set, f, lo, hi, st) \
    {{name, 1, 0, value, def, help}, set, offsetof(px_config_t, f), lo, hi, st, 0}
#define ROWL(name, value, def, help, set) {{name, 2, 0, value, def, help}, set, 0, 0, 0, 0, 1}
/* clang-format on */
#define DUR(name, def, help, f) ROWF(name, "DURATION", def, help, set_duration, f, 1, DURATION_MAX_MS, 1)

/* The order is SPEC §2's, which is also the order of -h and of the README. */
static const struct directive table[] = {
    ROW("listen", 1, 1, "HOST:PORT", "127.0.0.1:8080", "data-plane listener; repeatable; [::1]:8080 for IPv6",
        set_listen),
    ROW("upstream", 2, 1, "VARIANT ADDR", "-", "an endpoint (HOST:PORT) of a variant; repeatable", set_upstream),
    ROW("stable", 1, 1, "ADDR", "-", "shorthand for: upstream stable ADDR", set_shorthand),
    ROW("canary", 1, 1, "ADDR", "-", "shorthand for: upstream canary ADDR", set_shorthand),
    ROW("weight", 2, 1, "VARIANT PERCENT", "canary 0", "initial weight, 0..100; stable receives the rest", set_weight),
    ROW("sticky", 1, 0, "off, ip, header:NAME, cookie:NAME", "off", "key for sticky assignment to a variant",
        set_sticky),
    ROWF("sticky-salt", "STRING", "", "mixed into the sticky hash; a new one picks a new cohort", set_string,
         sticky_salt, 0, 0, 0),
    ROWF("sticky-set-cookie", "on, off", "off", "with sticky cookie:NAME, give new clients a cookie", set_onoff,
         sticky_set_cookie, 0, 0, 0),
    ROW("control", 1, 0, "PATH", "/tmp/weir.sock", "control socket (Unix stream)", set_control),
    ROWF("control-mode", "OCTAL", "0600", "permissions of the control socket", set_mode, control_mode, 0, 0777, 0),
    ROW("control-tcp", 1, 0, "HOST:PORT, off", "off", "TCP control listener; requires control-token-file",
        set_control_tcp),
    ROWF("control-token-file", "PATH", "-", "file holding the shared secret for TCP control", set_path,
         control_token_file, 0, 0, 0),
    ROWF("state-file", "PATH, off", "off", "routing state, saved after each change, loaded at start", set_path,
         state_file, 0, 0, 0),
    ROW("admin", 1, 0, "HOST:PORT, off", "127.0.0.1:9901", "metrics and health listener", set_admin),
    ROWF("workers", "N, auto", "auto", "event-loop threads, 1..256; auto: one per usable CPU (affinity, cgroup quota)",
         set_workers, workers, 1, WORKERS_MAX, 0),
    DUR("connect-timeout", "2s", "to connect to an upstream", connect_timeout_ms),
    DUR("header-timeout", "10s", "to receive a request's header block", header_timeout_ms),
    DUR("idle-timeout", "60s", "idle keep-alive connection (either side)", idle_timeout_ms),
    DUR("upstream-timeout", "60s", "upstream silence while a response is due", upstream_timeout_ms),
    DUR("drain-timeout", "30s", "on SIGTERM, time left to in-flight requests", drain_timeout_ms),
    ROWF("max-header-bytes", "SIZE", "16k", "larger request header block: 431 (256..8m)", set_size, max_header_bytes,
         256, 8 * 1024 * 1024, 0),
    ROWF("max-connections", "N", "10000", "downstream connections per process", set_count, max_connections, 1, 10000000,
         0),
    ROWF("mirror-max-inflight", "N", "256", "mirrored requests in flight per worker", set_count, mirror_max_inflight, 1,
         1000000, 0),
    DUR("resolve-interval", "10s", "DNS re-resolution of host names", resolve_interval_ms),
    ROWF("stats-window", "DURATION", "60s", "default window of /stats, 1s..300s", set_duration, stats_window_ms, 1000,
         300000, 1000),
    ROWF("variant-header", "on, off", "off", "add x-weir-variant: NAME to every response", set_onoff, variant_header, 0,
         0, 0),
    ROW("access-log", 1, 0, "PATH, -, off", "off", "one JSON object per request; - is stdout", set_access_log),
    ROW("log-level", 1, 0, "error, warn, info, debug", "info", "diagnostics on stderr", set_log_level),
    ROW("tls-certificate", 2, 1, "CERT KEY", "-",
        "PEM chain and key; repeatable: SNI picks the one whose names match, the first otherwise", set_tls_certificate),
    ROWL("tls-protocols", "TLSv1.2, TLSv1.3", "TLSv1.2 TLSv1.3", "TLS versions accepted (one or both)",
         set_tls_protocols),
    ROWF("tls-ciphers", "CIPHERS", "-", "OpenSSL cipher list for TLS 1.2; default: ECDHE with AES-GCM or ChaCha20",
         set_string, tls_ciphers, 0, 0, 0),
    ROWF("tls-client-ca", "PATH, off", "off", "require client certificates signed by this CA", set_path, tls_client_ca,
         0, 0, 0),
    ROWF("tls-session-tickets", "on, off", "on", "resumption by session tickets, keys in memory rotated hourly",
         set_onoff, tls_session_tickets, 0, 0, 0),
    ROWL("alpn", "h2, http/1.1", "h2 http/1.1", "ALPN offered; only http/1.1 is selected until HTTP/2 exists",
         set_alpn),
    ROWF("control-tls", "on, off", "off", "control-tcp speaks TLS with the first tls-certificate", set_onoff,
         control_tls, 0, 0, 0),
};

#define NDIRECTIVES ARRAY_SIZE(table)

const px_directive_info_t *px_config_directive(size_t i)
{
    return i < NDIRECTIVES ? &table[i].info : NULL;
}

/* ---- memory: out of memory while configuring is fatal (nothing runs yet) ---- */

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (p == NULL) {
        fputs("weir: out of memory\n", stderr);
        abort();
    }
    return p;
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(xrealloc(NULL, n), s, n);
}

static void replace(char **dst, const char *v)
{
    free(*dst);
    *dst = v == NULL ? NULL : xstrdup(v);
}

#define FIELD(c, d, type) ((type *)((char *)(c) + (d)->off))

/* Copies <s> for an error message: at most SHOW_MAX bytes, control characters as '?', so a bad value can neither
 * flood nor break the one-line message. */
static const char *show(const char *s, char buf[SHOW_MAX + 4])
{
    size_t i;

    for (i = 0; s[i] != '\0' && i < SHOW_MAX; i++)
        buf[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
    if (s[i] != '\0')
        buf[i++] = '.', buf[i++] = '.', buf[i++] = '.';
    buf[i] = '\0';
    return buf;
}

/* ---- values ---- */

static int set_hostport(px_hostport_t *out, const char *v, char *why, size_t n)
{
    const char *reason;
    char sb[SHOW_MAX + 4];

    if (px_parse_hostport_why(v, out, &reason) != 0) {
        snprintf(why, n, "bad address '%s': %s (use HOST:PORT or [IPv6]:PORT)", show(v, sb), reason);
        return -1;
    }
    return 0;
}

static int same_hostport(const px_hostport_t *a, const px_hostport_t *b)
{
    return a->port == b->port && strcmp(a->host, b->host) == 0;
}

static int set_listen(px_config_t *c, const struct directive *d, char **v, char *why, size_t n)
{
    px_hostport_t hp;
    size_t i;
    char sb[SHOW_MAX + 4];

    (void)d;
    if (set_hostport(&hp, v[0], why, n) != 0)
        return -1;
    for (i = 0; i < c->nlisten; i++) {
        if (same_hostport(&c->listen[i], &hp)) {
            snprintf(why, n, "'%s' given twice", show(v[0], sb));
            return -1;
        }
    }
    c->listen = xrealloc(c->listen, (c->nlisten + 1) * sizeof(*c->listen));
    c->listen[c->nlisten++] = hp;
    return 0;
}

static int check_variant(const char *name, char *why, size_t n)
{
    char sb[SHOW_MAX + 4];

    if (!rt_variant_name_valid(name, strlen(name))) {
        snprintf(why, n, "bad variant name '%s' (use [a-z0-9][a-z0-9-]{0,31})", show(name, sb));
        return -1;
    }
    return 0;
}

static int add_upstream(px_config_t *c, const char *variant, const char *addr, char *why, size_t n)
{
    px_cfg_upstream_t u;

    if (check_variant(variant, why, n) != 0 || set_hostport(&u.addr, addr, why, n) != 0)
        return -1;
    strcpy(u.variant, variant);
    c->upstreams = xrealloc(c->upstreams, (c->nupstreams + 1) * sizeof(*c->upstreams));
    c->upstreams[c->nupstreams++] = u;
    return 0;
}

static int set_upstream(px_config_t *c, const struct directive *d, char **v, char *why, size_t n)
{
    (void)d;
    return add_upstream(c, v[0], v[1], why, n);
}

static int set_shorthand(px_config_t *c, const struct directive *d, char **v, char *why, size_t n)
{
    return add_upstream(c, d->info.name, v[0], why, n);
}

static int set_weight(px_config_t *c, const struct directive *d, char **v, char *why, size_t n)
{
    uint32_t bp;
    const char *reason;
    size_t i;
    char sb[SHOW_MAX + 4];

    (void)d;
    if (check_variant(v[0], why, n) != 0)
        return -1;
    if (strcmp(v[0], "stable") == 0) {
        snprintf(why, n, "stable receives the rest; set the weights of the other variants");
        return -1;
    }
    if (rt_parse_bp(v[1], strlen(v[1]), &bp, &reason) != 0) {
        snprintf(why, n, "bad percent '%s': %s (use 0..100, at most two decimals)", show(v[1], sb), reason);
        return -1;
    }
    for (i = 0; i < c->nweights && strcmp(c->weights[i].variant, v[0]) != 0; i++)
        ;
    if (i == c->nweights) {
        c->weights = xrealloc(c->weights, (c->nweights + 1) * sizeof(*c->weights));
        strcpy(c->weights[c->nweights++].variant, v[0]);
    }
    c->weights[i].bp = bp;
    return 0;
}

/* A header or cookie name: an RFC 9110 token. */
static int is_token(const char *s)
{
    if (*s == '\0')
        return 0;
    for (; *s != '\0'; s++) {
        if (!isalnum((unsigned char)*s) && strchr("!#$%&'*+-.^_`|~", *s) == NULL)
            return 0;
    }
    return 1;
}

static int set_sticky(px_config_t *c, const struct directive *d, char **v, char *why, size_t n)
{
    enum px_sticky_kind kind;
    const char *name = NULL;
    char sb[SHOW_MAX + 4];

    (void)d;
    if (strcmp(v[0], "off") == 0) {
        kind = PX_STICKY_OFF;
    } else if (strcmp(v[0], "ip") == 0) {
        kind = PX_STICKY_IP;
    } else if (strncmp(v[0], "header:", 7) == 0) {
        kind = PX_STICKY_HEADER;
        name = v[0] + 7;
    } else if (strncmp(v[0], "cookie:", 7) == 0) {
        kind = PX_STICKY_COOKIE;
        name = v[0] + 7;
    } else {
        snprintf(why, n, "bad value '%s' (use off, ip, header:NAME or cookie:NAME)", show(v[0], sb));
        return -1;
    }
    if (name != NULL && !is_token(name)) {
        snprintf(why, n, "bad %s name '%s'", kind == PX_STICKY_HEADER ? "header" : "cookie", show(name, sb));
        return -1;
    }
    c->sticky = kind;
    replace(&c->sticky_name, name);
    return 0;
}

static int set_string(px_config_t *c, const struct directive *d, char **v, char *why, size_t n)
{
    (void)why, (void)n;
    replace(FIELD(c, d, char *), v[0]);
    return 0;
}

/* A PATH, or `off` (NULL) when the directive's value allows it. */
static int set_path(px_config_t *c, const struct directive *d, char **v, char *why, size_t n)
{
    int offable = strstr(d->info.value, "off") != NULL;

    if (v[0][0] == '\0') {
        snprintf(why, n, "empty path");
        return -1;
    }
    replace(FIELD(c, d, char *), offable && strcmp(v[0], "off") == 0 ? NULL : v[0]);
    return 0;
}

static int set_onoff(px_config_t *c, const struct directive *d, char **v, char *why, size_t n)
{
    char sb[SHOW_MAX + 4];

    if (strcmp(v[0], "on") == 0) {
        *FIELD(c, d, int) = 1;
    } else if (strcmp(v[0], "off") == 0) {
        *FIELD(c, d, int) = 0;
    } else {
        snprintf(why, n, "bad value '%s' (use on or off)", show(v[0], sb));
        return -1;
    }
    return 0;
}

static int set_tls_certificate(px_config_t *c, const struct directive *d, char **v, char *why, size_t n)
{
    (void)d;
    if (v[0][0] == '\0' || v[1][0] == '\0') {
        snprintf(why, n, "empty path");
        return -1;
    }
    c->tls_certs = xrealloc(c->tls_certs, (c->ntls_certs + 1) * sizeof(*c->tls_certs));
    c->tls_certs[c->ntls_certs].cert = xstrdup(v[0]);
    c->tls_certs[c->ntls_certs].key = xstrdup(v[1]);
    c->ntls_certs++;
    return 0;
}

/* One or two words out of <names> (NULL-terminated), each setting the bit of the same index; <v> ends with NULL or
 * has d->info.nargs values. */
static int set_words(unsigned *out, const struct directive *d, char **v, const char *const *names, const char *hint,
                     char *why, size_t n)
{
    char sb[SHOW_MAX + 4];
    unsigned bits = 0, i, k;

    for (i = 0; i < d->info.nargs && v[i] != NULL; i++) {
        for (k = 0; names[k] != NULL && strcmp(names[k], v[i]) != 0; k++)
            ;
        if (names[k] == NULL) {
            snprintf(why, n, "unsupported value '%s' (%s)", show(v[i], sb), hint);
            return -1;
        }
        bits |= 1u << k;
    }
    *out = bits;
    return 0;
}

static int set_tls_protocols(px_config_t *c, const struct directive *d, char **v, char *why, size_t n)
{
    static const char *const names[] = {"TLSv1.2", "TLSv1.3", NULL};
    return set_words(&c->tls_protocols, d, v, names, "TLSv1.2, TLSv1.3; older versions are refused", why, n);
}

static int set_alpn(px_config_t *c, const struct directive *d, char **v, char *why, size_t n)
{
    static const char *const names[] = {"h2", "http/1.1", NULL};
    return set_words(&c->alpn, d, v, names, "h2, http/1.1", why, n);
}

static int set_control(px_config_t *c, const struct directive *d, char **v, char *why, size_t n)
{
    struct sockaddr_un sa;

    (void)d;
    if (v[0][0] == '\0') {
        snprintf(why, n, "empty path");
        return -1;
    }
    if (strlen(v[0]) >= sizeof(sa.sun_path)) {
        snprintf(why, n, "path longer than %zu bytes, the limit of a Unix socket", sizeof(sa.sun_path) - 1);
        return -1;
    }
    replace(&c->control, v[0]);
    return 0;
}

static int set_mode(px_config_t *c, const struct directive *d, char **v, char *why, size_t n)
{
    unsigned long m = 0;
    size_t i;
    char sb[SHOW_MAX + 4];

    for (i = 0; v[0][i] >= '0' && v[0][i] <= '7' && m <= d->max; i++)
        m = m * 8 + (unsigned long)(v[0][i] - '0');
    if (i == 0 || v[0][i] != '\0' || m > d->max) {
        snprintf(why, n, "bad mode '%s' (use octal 0..0777, e.g. 0600)", show(v[0], sb));
        return -1;
    }
    c->control_mode = (unsigned)m;
    return 0;
}

static int set_control_tcp(px_config_t *c, const struct directive *d, char **v, char *why, size_t n)
{
    (void)d;
    if (strcmp(v[0], "off") == 0) {
        c->has_control_tcp = 0;
        memset(&c->control_tcp, 0, sizeof(c->control_tcp));
        return 0;
    }
    if (set_hostport(&c->control_tcp, v[0], why, n) != 0)
        return -1;
    c->has_control_tcp = 1;
    return 0;
}

static int set_admin(px_config_t *c, const struct directive *d, char **v, char *why, size_t n)
{
    (void)d;
    if (strcmp(v[0], "off") == 0) {
        c->has_admin = 0;
        memset(&c->admin, 0, sizeof(c->admin));
        return 0;
    }
    if (set_hostport(&c->admin, v[0], why, n) != 0)
        return -1;
    c->has_admin = 1;
    return 0;
}

/* A positive decimal integer, digits only. Returns 0, or -1 on junk or overflow. */
static int parse_count(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    size_t i;

    for (i = 0; s[i] >= '0' && s[i] <= '9'; i++) {
        uint64_t dg = (uint64_t)(s[i] - '0');
        if (v > (UINT64_MAX - dg) / 10)
            return -1;
        v = v * 10 + dg;
    }
    if (i == 0 || s[i] != '\0')
        return -1;
    *out = v;
    return 0;
}

static int set_workers(px_config_t *c, const struct directive *d, char **v, char *why, size_t n)
{
    uint64_t w;
    char sb[SHOW_MAX + 4];

    if (strcmp(v[0], "auto") == 0) {
        c->workers = 0;
        return 0;
    }
    if (parse_count(v[0], &w) != 0 || w < d->min || w > d->max) {
        snprintf(why, n, "bad value '%s' (use 1..%llu or auto)", show(v[0], sb), (unsigned long long)d->max);
        return -1;
    }
    c->workers = (unsigned)w;
    return 0;
}

/* Writes <ms> in the largest unit that divides it exactly, as a user would write it. */
static const char *fmt_ms(uint64_t ms, char buf[32])
{
    if (ms != 0 && ms % 3600000 == 0)
        snprintf(buf, 32, "%lluh", (unsigned long long)(ms / 3600000));
    else if (ms != 0 && ms % 60000 == 0)
        snprintf(buf, 32, "%llum", (unsigned long long)(ms / 60000));
    else if (ms != 0 && ms % 1000 == 0)
        snprintf(buf, 32, "%llus", (unsigned long long)(ms / 1000));
    else
        snprintf(buf, 32, "%llums", (unsigned long long)ms);
    return buf;
}

/* Writes <ms> in whole seconds ("300s"): for ranges of directives counted in seconds. */
static const char *fmt_s(uint64_t ms, char buf[32])
{
    snprintf(buf, 32, "%llus", (unsigned long long)(ms / 1000));
    return buf;
}

static int set_duration(px_config_t *c, const struct directive *d, char **v, char *why, size_t n)
{
    uint64_t ms;
    char sb[SHOW_MAX + 4], lo[32], hi[32];
    const char *(*fmt)(uint64_t, char *) = d->step == 1000 ? fmt_s : fmt_ms;

    if (px_parse_duration_ms(v[0], &ms) != 0) {
        snprintf(why, n, "bad duration '%s' (use 250ms, 10s, 1m)", show(v[0], sb));
        return -1;
    }
    if (ms < d->min || ms > d->max) {
        snprintf(why, n, "duration '%s' out of range (%s..%s)", show(v[0], sb), fmt(d->min, lo), fmt(d->max, hi));
        return -1;
    }
    if (ms % d->step != 0) {
        snprintf(why, n, "duration '%s' is not a whole number of seconds", show(v[0], sb));
        return -1;
    }
    *FIELD(c, d, uint64_t) = ms;
    return 0;
}

static int set_size(px_config_t *c, const struct directive *d, char **v, char *why, size_t n)
{
    size_t sz;
    char sb[SHOW_MAX + 4];

    if (px_parse_size(v[0], &sz) != 0) {
        snprintf(why, n, "bad size '%s' (use 512, 16k, 1m)", show(v[0], sb));
        return -1;
    }
    if (sz < d->min || sz > d->max) {
        snprintf(why, n, "size '%s' out of range (%llu..%llu bytes)", show(v[0], sb), (unsigned long long)d->min,
                 (unsigned long long)d->max);
        return -1;
    }
    *FIELD(c, d, size_t) = sz;
    return 0;
}

static int set_count(px_config_t *c, const struct directive *d, char **v, char *why, size_t n)
{
    uint64_t x;
    char sb[SHOW_MAX + 4];

    if (parse_count(v[0], &x) != 0) {
        snprintf(why, n, "bad number '%s' (use a positive integer)", show(v[0], sb));
        return -1;
    }
    if (x < d->min || x > d->max) {
        snprintf(why, n, "'%s' out of range (%llu..%llu)", show(v[0], sb), (unsigned long long)d->min,
                 (unsigned long long)d->max);
        return -1;
    }
    *FIELD(c, d, uint64_t) = x;
    return 0;
}

static int set_access_log(px_config_t *c, const struct directive *d, char **v, char *why, size_t n)
{
    (void)d;
    if (v[0][0] == '\0') {
        snprintf(why, n, "empty path");
        return -1;
    }
    replace(&c->access_log, strcmp(v[0], "off") == 0 ? NULL : v[0]);
    return 0;
}

static int set_log_level(px_config_t *c, const struct directive *d, char **v, char *why, size_t n)
{
    static const char *const names[] = {"error", "warn", "info", "debug"}; /* indexed by enum px_log_level */
    size_t i;
    char sb[SHOW_MAX + 4];

    (void)d;
    for (i = 0; i < ARRAY_SIZE(names); i++) {
        if (strcmp(v[0], names[i]) == 0) {
            c->log_level = (enum px_log_level)i;
            return 0;
        }
    }
    snprintf(why, n, "bad level '%s' (use error, warn, info or debug)", show(v[0], sb));
    return -1;
}

/* ---- init / free ---- */

static void set_default_hostport(px_hostport_t *hp, const char *host, uint16_t port)
{
    memset(hp, 0, sizeof(*hp));
    strcpy(hp->host, host);
    hp->port = port;
}

void px_config_init(px_config_t *c)
{
    memset(c, 0, sizeof(*c));
    c->sticky = PX_STICKY_OFF;
    c->sticky_salt = xstrdup("");
    c->control = xstrdup("/tmp/weir.sock");
    c->control_mode = 0600;
    c->has_admin = 1;
    set_default_hostport(&c->admin, "127.0.0.1", 9901);
    c->workers = 0;
    c->connect_timeout_ms = 2000;
    c->header_timeout_ms = 10000;
    c->idle_timeout_ms = 60000;
    c->upstream_timeout_ms = 60000;
    c->drain_timeout_ms = 30000;
    c->resolve_interval_ms = 10000;
    c->stats_window_ms = 60000;
    c->max_header_bytes = 16 * 1024;
    c->max_connections = 10000;
    c->mirror_max_inflight = 256;
    c->variant_header = 0;
    c->log_level = PX_LOG_INFO;
    c->tls_protocols = PX_TLS_PROTO_V12 | PX_TLS_PROTO_V13;
    c->tls_session_tickets = 1;
    c->alpn = PX_ALPN_H2 | PX_ALPN_HTTP11;
}

void px_config_free(px_config_t *c)
{
    free(c->listen);
    free(c->upstreams);
    free(c->weights);
    free(c->sticky_name);
    free(c->sticky_salt);
    free(c->control);
    free(c->control_token_file);
    free(c->state_file);
    free(c->access_log);
    free(c->config_file);
    for (size_t i = 0; i < c->ntls_certs; i++) {
        free(c->tls_certs[i].cert);
        free(c->tls_certs[i].key);
    }
    free(c->tls_certs);
    free(c->tls_ciphers);
    free(c->tls_client_ca);
    memset(c, 0, sizeof(*c));
}

/* ---- loading ---- */

struct loader {
    px_config_t *c;
    struct where at;            /* the directive being applied */
    unsigned seen[NDIRECTIVES]; /* single-valued directives given in the current source: their line, or 1 */
    struct where last[NDIRECTIVES];
    struct where *weight_at; /* parallel to c->weights: where each was last set */
    size_t weight_at_cap;
    char *err;
    size_t errlen;
};

/* Formats "<place>: <msg>" into the error buffer. <place> is "FILE:LINE" for a file (followed by the directive's
 * name when <name> is not NULL), "--NAME" for a flag. Returns -1. */
static int fail(struct loader *L, struct where at, const char *name, const char *fmt, ...)
{
    va_list ap;
    int k;

    if (at.file != NULL)
        k = snprintf(L->err, L->errlen, "%s:%u: %s%s", at.file, at.line, name ? name : "", name ? ": " : "");
    else
        k = snprintf(L->err, L->errlen, "%s%s%s", name ? "--" : "", name ? name : "", name ? ": " : "");
    if (k < 0 || (size_t)k >= L->errlen)
        return -1;
    va_start(ap, fmt);
    vsnprintf(L->err + k, L->errlen - (size_t)k, fmt, ap);
    va_end(ap);
    return -1;
}

static const struct directive *find(const char *name)
{
    size_t i;

    for (i = 0; i < NDIRECTIVES; i++) {
        if (strcmp(table[i].info.name, name) == 0)
            return &table[i];
    }
    return NULL;
}

static int apply(struct loader *L, const struct directive *d, char **v)
{
    size_t di = (size_t)(d - table), i;
    char why[256];

    if (!d->info.repeatable) {
        if (L->seen[di] != 0) {
            if (L->at.file != NULL)
                return fail(L, L->at, d->info.name, "given twice (first on line %u)", L->seen[di]);
            return fail(L, L->at, d->info.name, "given twice");
        }
        L->seen[di] = L->at.file != NULL ? L->at.line : 1;
    }
    if (d->set(L->c, d, v, why, sizeof(why)) != 0)
        return fail(L, L->at, d->info.name, "%s", why);
    L->last[di] = L->at;
    if (d->set == set_weight) {
        for (i = 0; strcmp(L->c->weights[i].variant, v[0]) != 0; i++)
            ;
        if (i >= L->weight_at_cap) {
            L->weight_at_cap = L->c->nweights + 8;
            L->weight_at = xrealloc(L->weight_at, L->weight_at_cap * sizeof(*L->weight_at));
        }
        L->weight_at[i] = L->at;
    }
    return 0;
}

#define MAX_TOKENS 4 /* a directive and two values, plus one to notice an extra value */

static int is_blank(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

/* Splits <s> in place into at most MAX_TOKENS tokens, stopping at '#'. A token may be double-quoted with \" and \\
 * escapes (then it may hold blanks or '#', or be empty). Returns 0, or -1 with <*why> set. */
static int tokenize(char *s, char **tok, size_t *ntok, const char **why)
{
    char *p = s;

    *ntok = 0;
    for (;;) {
        while (is_blank(*p))
            p++;
        if (*p == '\0' || *p == '#' || *ntok == MAX_TOKENS)
            return 0;
        if (*p == '"') {
            char *w = ++p;
            tok[(*ntok)++] = w;
            for (; *p != '"'; p++) {
                if (*p == '\0' || *p == '\n') {
                    *why = "unterminated quote";
                    return -1;
                }
                if (*p == '\\') {
                    p++;
                    if (*p != '"' && *p != '\\') {
                        *why = "bad escape in quotes (only \\\" and \\\\)";
                        return -1;
                    }
                }
                *w++ = *p;
            }
            p++;
            if (*p != '\0' && *p != '#' && !is_blank(*p)) {
                *why = "text right after a closing quote";
                return -1;
            }
            *w = '\0';
        } else {
            tok[(*ntok)++] = p;
            for (; *p != '\0' && *p != '#' && !is_blank(*p); p++) {
                if (*p == '"') {
                    *why = "quote inside a word (quote the whole value)";
                    return -1;
                }
            }
            if (*p == '#') {
                *p = '\0';
                return 0;
            }
            if (*p != '\0')
                *p++ = '\0';
        }
    }
}

static int load_line(struct loader *L, char *line)
{
    char *tok[MAX_TOKENS];
    size_t ntok;
    const char *why;
    const struct directive *d;
    char sb[SHOW_MAX + 4];

    if (tokenize(line, tok, &ntok, &why) != 0)
        return fail(L, L->at, NULL, "%s", why);
    if (ntok == 0)
        return 0;
    d = find(tok[0]);
    if (d == NULL)
        return fail(L, L->at, NULL, "unknown directive '%s'", show(tok[0], sb));
    if (ntok - 1 < (d->minargs ? d->minargs : d->info.nargs))
        return fail(L, L->at, d->info.name, "missing value (%s %s)", d->info.name, d->info.value);
    if (ntok - 1 > d->info.nargs)
        return fail(L, L->at, d->info.name, "unexpected extra value '%s'", show(tok[d->info.nargs + 1], sb));
    tok[ntok] = NULL; /* ntok <= nargs + 1 < MAX_TOKENS: a list's setter sees where it ends */
    return apply(L, d, tok + 1);
}

static int load_file(struct loader *L, const char *path)
{
    FILE *f;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int rc = 0;

    f = fopen(path, "r");
    if (f == NULL) {
        snprintf(L->err, L->errlen, "cannot open '%s': %s", path, strerror(errno));
        return -1;
    }
    L->at.file = path;
    L->at.line = 0;
    while (rc == 0 && (len = getline(&line, &cap, f)) != -1) {
        L->at.line++;
        if (memchr(line, '\0', (size_t)len) != NULL)
            rc = fail(L, L->at, NULL, "NUL byte in line");
        else
            rc = load_line(L, line);
    }
    if (rc == 0 && ferror(f)) {
        snprintf(L->err, L->errlen, "cannot read '%s': %s", path, strerror(errno));
        rc = -1;
    }
    free(line);
    fclose(f);
    return rc;
}

static int is_flag(const char *a, const char *s1, const char *s2)
{
    return strcmp(a, s1) == 0 || (s2 != NULL && strcmp(a, s2) == 0);
}

/* The values a flag at argv[i] takes: nargs, or for a list as many as follow, up to nargs, before the next
 * argument that starts with '-'. */
static int flag_values(const struct directive *d, int argc, char **argv, int i)
{
    int k = 0;

    if (d->minargs == 0)
        return (int)d->info.nargs;
    while (k < (int)d->info.nargs && i + 1 + k < argc && argv[i + 1 + k][0] != '-')
        k++;
    return k;
}

static const char *prog_name(int argc, char **argv)
{
    const char *p;

    if (argc < 1 || argv[0] == NULL || argv[0][0] == '\0')
        return "weir";
    p = strrchr(argv[0], '/');
    return p != NULL ? p + 1 : argv[0];
}

/* First pass over argv: the shape of every argument, -c, -t, -h and -V; values are checked in the second pass,
 * after the file, so that -c may come anywhere. Returns a px_config_result. */
static int scan_args(struct loader *L, int argc, char **argv)
{
    int i;
    char sb[SHOW_MAX + 4];

    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        const struct directive *d;

        if (is_flag(a, "-h", "--help")) {
            px_config_usage(prog_name(argc, argv));
            return PX_CONFIG_HELP;
        }
        if (is_flag(a, "-V", "--version")) {
            printf("weir %s\n", WEIR_VERSION);
            return PX_CONFIG_VERSION;
        }
        if (is_flag(a, "-t", NULL)) {
            L->c->test_only = 1;
            continue;
        }
        if (is_flag(a, "-c", NULL)) {
            if (i + 1 >= argc) {
                snprintf(L->err, L->errlen, "-c: missing FILE");
                return PX_CONFIG_ERROR;
            }
            if (L->c->config_file != NULL) {
                snprintf(L->err, L->errlen, "-c: given twice");
                return PX_CONFIG_ERROR;
            }
            L->c->config_file = xstrdup(argv[++i]);
            continue;
        }
        if (strncmp(a, "--", 2) == 0 && a[2] != '\0') {
            const char *eq = strchr(a, '=');
            d = find(a + 2);
            if (d == NULL && eq != NULL) {
                snprintf(L->err, L->errlen, "%s: unknown flag (write --NAME VALUE, without '=')", show(a, sb));
                return PX_CONFIG_ERROR;
            }
            if (d == NULL) {
                snprintf(L->err, L->errlen, "%s: unknown flag", show(a, sb));
                return PX_CONFIG_ERROR;
            }
            if (argc - 1 - i < (int)(d->minargs ? d->minargs : d->info.nargs) ||
                flag_values(d, argc, argv, i) < (int)d->minargs) {
                snprintf(L->err, L->errlen, "--%s: missing value (--%s %s)", d->info.name, d->info.name, d->info.value);
                return PX_CONFIG_ERROR;
            }
            i += flag_values(d, argc, argv, i);
            continue;
        }
        if (a[0] == '-' && a[1] != '\0')
            snprintf(L->err, L->errlen, "%s: unknown flag", show(a, sb));
        else
            snprintf(L->err, L->errlen, "unexpected argument '%s' (settings are --NAME VALUE)", show(a, sb));
        return PX_CONFIG_ERROR;
    }
    return PX_CONFIG_OK;
}

/* Second pass: applies the directive flags; scan_args() has vetted the shape already. */
static int apply_flags(struct loader *L, int argc, char **argv)
{
    int i;

    memset(L->seen, 0, sizeof(L->seen));
    L->at.file = NULL;
    L->at.line = 0;
    for (i = 1; i < argc; i++) {
        const struct directive *d;

        if (is_flag(argv[i], "-t", NULL))
            continue;
        if (is_flag(argv[i], "-c", NULL)) {
            i++;
            continue;
        }
        {
            char *v[MAX_TOKENS] = {NULL};
            int k, nv;
            d = find(argv[i] + 2);
            nv = flag_values(d, argc, argv, i);
            for (k = 0; k < nv; k++)
                v[k] = argv[i + 1 + k];
            if (apply(L, d, v) != 0)
                return -1;
            i += nv;
        }
    }
    return 0;
}

/* "NAME" in a file's message, "--NAME" in a flag's. */
static const char *spell(struct where at)
{
    return at.file != NULL ? "" : "--";
}

static const char *show_hp(const px_hostport_t *a, char *buf)
{
    sprintf(buf, strchr(a->host, ':') != NULL ? "[%s]:%u" : "%s:%u", a->host, (unsigned)a->port);
    return buf;
}

/* For -t, what start would refuse about the files the configuration names, found without creating or changing
 * anything: the token file of control-tcp must be readable and hold a token (surrounding blanks aside, as the
 * control listener reads it), and the access log must be writable, or creatable in its directory. */
static int check_files(struct loader *L)
{
    const px_config_t *c = L->c;
    struct stat st;
    char buf[4096];
    size_t n;
    FILE *f;

    if (c->has_control_tcp) {
        struct where at = L->last[find("control-token-file") - table];
        const char *path = c->control_token_file;
        int e = 0;
        if ((f = fopen(path, "r")) == NULL)
            return fail(L, at, "control-token-file", "%s: %s", path, strerror(errno));
        n = fread(buf, 1, sizeof(buf), f);
        if (ferror(f))
            e = errno != 0 ? errno : EIO;
        fclose(f);
        if (e != 0)
            return fail(L, at, "control-token-file", "%s: %s", path, strerror(e));
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
            n--;
        if (n == 0)
            return fail(L, at, "control-token-file", "%s: empty", path);
    }
    if (c->access_log != NULL && strcmp(c->access_log, "-") != 0) {
        struct where at = L->last[find("access-log") - table];
        const char *path = c->access_log, *slash = strrchr(path, '/');
        char dir[PATH_MAX];
        if (stat(path, &st) == 0) {
            if (S_ISDIR(st.st_mode))
                return fail(L, at, "access-log", "%s: %s", path, strerror(EISDIR));
            if (access(path, W_OK) != 0)
                return fail(L, at, "access-log", "%s: %s", path, strerror(errno));
        } else {
            if (slash == NULL)
                snprintf(dir, sizeof(dir), ".");
            else
                snprintf(dir, sizeof(dir), "%.*s", slash == path ? 1 : (int)(slash - path), path);
            if (access(dir, W_OK | X_OK) != 0)
                return fail(L, at, "access-log", "%s: %s", path, strerror(errno));
        }
    }
    return 0;
}

static int validate(struct loader *L)
{
    px_config_t *c = L->c;
    const struct directive *dtcp = find("control-tcp"), *dcookie = find("sticky-set-cookie");
    const struct directive *dweight = find("weight");
    const struct where nowhere = {NULL, 0};
    uint64_t sum = 0;
    size_t i, j;
    char pct[8], hp[PX_HOST_MAX + 16];

    if (c->nlisten == 0) {
        c->listen = xrealloc(NULL, sizeof(*c->listen));
        set_default_hostport(&c->listen[0], "127.0.0.1", 8080);
        c->nlisten = 1;
    }
    if (c->has_control_tcp && c->control_token_file == NULL) {
        struct where at = L->last[dtcp - table];
        return fail(L, at, NULL, "%scontrol-tcp requires %scontrol-token-file", spell(at), spell(at));
    }
    if (c->control_tls && (!c->has_control_tcp || c->ntls_certs == 0)) {
        struct where at = L->last[find("control-tls") - table];
        return fail(L, at, NULL, "%scontrol-tls on requires %scontrol-tcp and a %stls-certificate", spell(at),
                    spell(at), spell(at));
    }
    if (!(c->alpn & PX_ALPN_HTTP11))
        return fail(L, L->last[find("alpn") - table], "alpn",
                    "http/1.1 must be offered: weir does not serve HTTP/2 (h2) yet");
    if (c->sticky_set_cookie && c->sticky != PX_STICKY_COOKIE) {
        struct where at = L->last[dcookie - table];
        return fail(L, at, NULL, "%ssticky-set-cookie on requires %ssticky cookie:NAME", spell(at), spell(at));
    }
    for (i = 0; i < c->nweights; i++) {
        const char *v = c->weights[i].variant;
        int known = strcmp(v, "canary") == 0;
        for (j = 0; j < c->nupstreams && !known; j++)
            known = strcmp(c->upstreams[j].variant, v) == 0;
        if (!known)
            return fail(L, L->weight_at[i], "weight", "unknown variant '%s' (declare it with upstream %s ADDR)", v, v);
        sum += c->weights[i].bp;
    }
    if (sum > RT_BP_MAX) {
        rt_format_bp((uint32_t)MIN(sum, 99999u), pct);
        return fail(L, L->last[dweight - table], "weight",
                    "the weights of the variants other than stable add up to %s%%, more than 100", pct);
    }
    /* The OS would refuse the second bind at start; say so now, and under -t. */
    for (i = 0; i < c->nlisten; i++) {
        if (c->has_admin && same_hostport(&c->listen[i], &c->admin))
            return fail(L, nowhere, NULL, "address %s is used by both listen and admin", show_hp(&c->admin, hp));
        if (c->has_control_tcp && same_hostport(&c->listen[i], &c->control_tcp))
            return fail(L, nowhere, NULL, "address %s is used by both listen and control-tcp",
                        show_hp(&c->control_tcp, hp));
    }
    if (c->has_admin && c->has_control_tcp && same_hostport(&c->admin, &c->control_tcp))
        return fail(L, nowhere, NULL, "address %s is used by both admin and control-tcp", show_hp(&c->admin, hp));
    return c->test_only ? check_files(L) : 0;
}

int px_config_load(px_config_t *c, int argc, char **argv, char *err, size_t errlen)
{
    struct loader L;
    int rc;

    memset(&L, 0, sizeof(L));
    L.c = c;
    L.err = err;
    L.errlen = errlen;
    if (errlen > 0)
        err[0] = '\0';
    rc = scan_args(&L, argc, argv);
    if (rc == PX_CONFIG_OK) {
        if ((c->config_file != NULL && load_file(&L, c->config_file) != 0) || apply_flags(&L, argc, argv) != 0 ||
            validate(&L) != 0)
            rc = PX_CONFIG_ERROR;
    }
    free(L.weight_at);
    return rc;
}

/* ---- usage ---- */

static const char *def_text(const px_directive_info_t *in)
{
    if (in->def[0] == '\0')
        return "(empty)";
    return strcmp(in->def, "-") == 0 ? "-" : in->def;
}

void px_config_usage(const char *prog)
{
    int wn = 0, wv = 0, wd = 0;
    size_t i;

    for (i = 0; i < NDIRECTIVES; i++) {
        const px_directive_info_t *in = &table[i].info;
        wn = MAX(wn, (int)strlen(in->name) + 2);
        wv = MAX(wv, (int)strlen(in->value));
        wd = MAX(wd, (int)strlen(def_text(in)));
    }
    printf("usage: %s [-c FILE] [-t] [--NAME VALUE...]\n"
           "       %s -h | -V\n\n"
           "  -c FILE        read directives from FILE; flags override it (repeatable ones add to it)\n"
           "  -t             check the configuration and exit: 0 valid, 2 invalid\n"
           "  -h, --help     print this help\n"
           "  -V, --version  print the version\n\n"
           "Settings: `--NAME VALUE` on the command line or `NAME VALUE` in FILE ('#' starts a comment).\n\n",
           prog, prog);
    printf("  %-*s  %-*s  %-*s  %s\n", wn, "FLAG", wv, "VALUE", wd, "DEFAULT", "NOTES");
    for (i = 0; i < NDIRECTIVES; i++) {
        const px_directive_info_t *in = &table[i].info;
        printf("  --%-*s  %-*s  %-*s  %s\n", wn - 2, in->name, wv, in->value, wd, def_text(in), in->help);
    }
    printf("\nDurations: 250ms, 10s, 1m, 1h (1ms..24h). Sizes: 512, 16k, 1m. Variant names: "
           "[a-z0-9][a-z0-9-]{0,31}.\n");
}

/* Backquotes each ", "-separated alternative of <s>: "on, off" -> "`on`, `off`". */
static void print_code_list(const char *s)
{
    const char *sep;

    for (;;) {
        sep = strstr(s, ", ");
        printf("`%.*s`", sep ? (int)(sep - s) : (int)strlen(s), s);
        if (sep == NULL)
            return;
        printf(", ");
        s = sep + 2;
    }
}

void px_config_print_markdown(void)
{
    size_t i;

    printf("| directive | value | default | notes |\n|---|---|---|---|\n");
    for (i = 0; i < NDIRECTIVES; i++) {
        const px_directive_info_t *in = &table[i].info;
        printf("| `%s` | ", in->name);
        print_code_list(in->value);
        if (in->def[0] == '\0')
            printf(" | empty | ");
        else if (strcmp(in->def, "-") == 0)
            printf(" | — | ");
        else
            printf(" | `%s` | ", in->def);
        printf("%s |\n", in->help);
    }
}
