/* Traffic mirroring through the real binary (SPEC §3 mirror routes, §5 mirror metrics): what a copy carries, how
 * many requests are copied, no copy to the primary's own variant, a dead or stalled mirror that never affects the
 * primary, and the mirror counters.
 *
 * weir reads and discards a copy's response, so the mirror variant here is a recorder running inside the test: it
 * keeps every request it receives (the header block as received, the decoded body's length and checksum) and
 * answers each with an empty body, or, in the stalled mode, accepts connections and never reads from them. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

#define MB20 (20u << 20)
#define KB100 (100u * 1000u)

/* The mirror series of the canary in /metrics. */
#define M_REQ_CANARY_200 "weir_mirror_requests_total{variant=\"canary\",code=\"200\"}"
#define M_REQ_CANARY_500 "weir_mirror_requests_total{variant=\"canary\",code=\"500\"}"
#define M_REQ_CANARY_ANY "weir_mirror_requests_total{variant=\"canary\","
#define M_DROP_ERROR "weir_mirror_dropped_total{variant=\"canary\",reason=\"error\"}"
#define M_DROP_OVERLOAD "weir_mirror_dropped_total{variant=\"canary\",reason=\"overload\"}"
#define M_MISMATCH "weir_mirror_mismatch_total{variant=\"canary\"}"
#define M_CLIENT_CANARY_ANY "weir_requests_total{variant=\"canary\","

/* ---- the recorder ------------------------------------------------------------------------------------------- */

#define REC_MAX_CONNS 1024  /* open at once */
#define REC_BUF (64 * 1024) /* per-connection read buffer; a header block must fit in it */
#define REC_MAX 4           /* recorders per test */

/* A streaming 64-bit checksum, a word at a time so that the recorder keeps up with weir on a busy machine; any
 * shifted, repeated, dropped or changed block of a body changes it. */
typedef struct sum_s {
    uint64_t h;
    uint64_t len;
    unsigned char tail[8]; /* bytes not yet mixed in */
    unsigned ntail;
} sum_t;

static inline uint64_t sum_mix(uint64_t h, uint64_t w)
{
    h ^= w;
    h = (h << 29 | h >> 35) * 0x9e3779b97f4a7c15ull;
    return h;
}

static void sum_init(sum_t *s)
{
    memset(s, 0, sizeof(*s));
    s->h = 0x243f6a8885a308d3ull;
}

static void sum_add(sum_t *s, const char *p, size_t n)
{
    uint64_t w;
    s->len += n;
    while (s->ntail > 0 && s->ntail < 8 && n > 0) {
        s->tail[s->ntail++] = (unsigned char)*p++;
        n--;
    }
    if (s->ntail == 8) {
        memcpy(&w, s->tail, 8);
        s->h = sum_mix(s->h, w);
        s->ntail = 0;
    }
    for (; n >= 8; p += 8, n -= 8) {
        memcpy(&w, p, 8);
        s->h = sum_mix(s->h, w);
    }
    if (n > 0) { /* only when the tail was mixed in above, or was empty */
        memcpy(s->tail, p, n);
        s->ntail = (unsigned)n;
    }
}

static uint64_t sum_end(const sum_t *s)
{
    uint64_t w = 0;
    memcpy(&w, s->tail, s->ntail);
    return sum_mix(sum_mix(s->h, w), s->len);
}

/* The checksum of a whole body. */
static uint64_t checksum(const char *p, size_t n)
{
    sum_t s;
    sum_init(&s);
    sum_add(&s, p, n);
    return sum_end(&s);
}

typedef struct rec_req_s {
    char *head; /* the header block as received, up to and including the blank line, NUL-terminated */
    size_t head_len;
    uint64_t body_len; /* decoded body (chunked framing removed): its length and checksum */
    uint64_t body_sum;
    bool chunked;
} rec_req_t;

typedef struct rec_s {
    int fd; /* listening socket */
    int port;
    char addr[64];
    bool reading;      /* false: accept connections and never read from them */
    atomic_int status; /* the status of every answer */
    atomic_bool stop;
    pthread_t acceptor;
    pthread_mutex_t mu;         /* guards everything below */
    pthread_cond_t cv;          /* signalled when a connection ends */
    int live_fd[REC_MAX_CONNS]; /* open connections; -1 in free slots */
    int nlive;
    long naccepted;           /* connections accepted since the start */
    atomic_ullong body_bytes; /* body bytes received over all requests, counted as they arrive */
    rec_req_t *reqs;
    size_t nreqs, cap;
    char error[256]; /* the first problem a connection saw, "" when none */
} rec_t;

typedef struct rec_conn_s {
    rec_t *rec;
    int fd;
    char buf[REC_BUF];
    size_t off, len; /* unread bytes are buf[off, len) */
} rec_conn_t;

static rec_t *recs[REC_MAX];
static int nrecs;

static void rec_error(rec_t *rec, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void rec_error(rec_t *rec, const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&rec->mu);
    if (rec->error[0] == '\0') {
        va_start(ap, fmt);
        vsnprintf(rec->error, sizeof(rec->error), fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&rec->mu);
}

/* Reads more bytes into the connection buffer. Returns the count, 0 on EOF, -1 on error or a full buffer. */
static ssize_t rec_fill(rec_conn_t *k)
{
    if (k->off > 0) {
        memmove(k->buf, k->buf + k->off, k->len - k->off);
        k->len -= k->off;
        k->off = 0;
    }
    if (k->len == sizeof(k->buf))
        return -1;
    for (;;) {
        ssize_t n = recv(k->fd, k->buf + k->len, sizeof(k->buf) - k->len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n > 0)
            k->len += (size_t)n;
        return n;
    }
}

/* Reads one CRLF-terminated line (without the CRLF) into <out>. Returns 0 or -1. */
static int rec_line(rec_conn_t *k, char *out, size_t cap)
{
    for (;;) {
        char *eol = memmem(k->buf + k->off, k->len - k->off, "\r\n", 2);
        if (eol != NULL) {
            size_t n = (size_t)(eol - (k->buf + k->off));
            if (n >= cap)
                return -1;
            memcpy(out, k->buf + k->off, n);
            out[n] = '\0';
            k->off += n + 2;
            return 0;
        }
        if (rec_fill(k) <= 0)
            return -1;
    }
}

/* Reads exactly <n> body bytes into the checksum: buffered bytes first, then from the socket. Returns 0 or -1. */
static int rec_body(rec_conn_t *k, sum_t *sum, size_t n)
{
    size_t from_buf = k->len - k->off < n ? k->len - k->off : n;
    sum_add(sum, k->buf + k->off, from_buf);
    atomic_fetch_add(&k->rec->body_bytes, from_buf);
    k->off += from_buf;
    n -= from_buf;
    if (n > 0) /* the buffer is used up: reads of at most <n> bytes go through it and leave it empty */
        k->off = k->len = 0;
    while (n > 0) {
        ssize_t got = recv(k->fd, k->buf, n < sizeof(k->buf) ? n : sizeof(k->buf), 0);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return -1;
        sum_add(sum, k->buf, (size_t)got);
        atomic_fetch_add(&k->rec->body_bytes, (unsigned long long)got);
        n -= (size_t)got;
    }
    return 0;
}

static int rec_chunked(rec_conn_t *k, sum_t *sum)
{
    char line[1024];
    for (;;) {
        if (rec_line(k, line, sizeof(line)) < 0)
            return -1;
        char *end;
        errno = 0;
        unsigned long long size = strtoull(line, &end, 16);
        if (end == line || errno != 0 || (*end != '\0' && *end != ';'))
            return -1;
        if (size == 0)
            break;
        if (rec_body(k, sum, (size_t)size) < 0 || rec_line(k, line, sizeof(line)) < 0 || line[0] != '\0')
            return -1;
    }
    do {
        if (rec_line(k, line, sizeof(line)) < 0)
            return -1;
    } while (line[0] != '\0');
    return 0;
}

/* Parses the framing headers of the header block <head>. */
static void rec_framing(const char *head, long long *clen, bool *chunked)
{
    *clen = -1;
    *chunked = false;
    for (const char *p = strstr(head, "\r\n") + 2; *p != '\0' && strncmp(p, "\r\n", 2) != 0;
         p = strstr(p, "\r\n") + 2) {
        if (strncasecmp(p, "content-length:", 15) == 0)
            *clen = strtoll(p + 15, NULL, 10);
        else if (strncasecmp(p, "transfer-encoding:", 18) == 0) {
            const char *v = p + 18, *e = strstr(p, "\r\n");
            for (; v + 7 <= e; v++)
                if (strncasecmp(v, "chunked", 7) == 0)
                    *chunked = true;
        }
    }
}

/* Takes an accepted connection in; false (and closed) when the recorder is stopping or full. */
static bool rec_add_conn(rec_t *rec, int fd)
{
    pthread_mutex_lock(&rec->mu);
    bool ok = !atomic_load(&rec->stop) && rec->nlive < REC_MAX_CONNS;
    if (ok) {
        for (int i = 0; i < REC_MAX_CONNS; i++)
            if (rec->live_fd[i] < 0) {
                rec->live_fd[i] = fd;
                break;
            }
        rec->nlive++;
        rec->naccepted++;
    } else if (!atomic_load(&rec->stop) && rec->error[0] == '\0') {
        snprintf(rec->error, sizeof(rec->error), "over %d connections open at once", REC_MAX_CONNS);
    }
    pthread_mutex_unlock(&rec->mu);
    if (!ok)
        close(fd);
    return ok;
}

/* Closes a connection and forgets it. */
static void rec_drop_conn(rec_t *rec, int fd)
{
    pthread_mutex_lock(&rec->mu);
    for (int i = 0; i < REC_MAX_CONNS; i++)
        if (rec->live_fd[i] == fd) {
            rec->live_fd[i] = -1;
            break;
        }
    close(fd);
    rec->nlive--;
    pthread_cond_broadcast(&rec->cv);
    pthread_mutex_unlock(&rec->mu);
}

/* One connection: requests in order, each recorded once complete, then answered with an empty body. */
static void *rec_conn_main(void *arg)
{
    rec_conn_t *k = arg;
    rec_t *rec = k->rec;

    for (;;) {
        char *end;
        while ((end = memmem(k->buf + k->off, k->len - k->off, "\r\n\r\n", 4)) == NULL) {
            ssize_t n = rec_fill(k);
            if (n == 0 && k->len == k->off)
                goto out; /* a clean close between requests */
            if (n <= 0) {
                if (!atomic_load(&rec->stop))
                    rec_error(rec, "connection ended inside a header block (%zu bytes)", k->len - k->off);
                goto out;
            }
        }
        rec_req_t q = {0};
        sum_t sum;
        sum_init(&sum);
        q.head_len = (size_t)(end - (k->buf + k->off)) + 4;
        q.head = malloc(q.head_len + 1);
        if (q.head == NULL)
            goto out;
        memcpy(q.head, k->buf + k->off, q.head_len);
        q.head[q.head_len] = '\0';
        k->off += q.head_len;
        long long clen;
        rec_framing(q.head, &clen, &q.chunked);
        int rc = 0;
        if (q.chunked)
            rc = rec_chunked(k, &sum);
        else if (clen > 0)
            rc = rec_body(k, &sum, (size_t)clen);
        q.body_len = sum.len;
        q.body_sum = sum_end(&sum);
        if (rc < 0) {
            if (!atomic_load(&rec->stop))
                rec_error(rec, "bad or incomplete body after: %.200s", q.head);
            free(q.head);
            goto out;
        }
        pthread_mutex_lock(&rec->mu);
        if (rec->nreqs == rec->cap) {
            size_t c = rec->cap ? rec->cap * 2 : 64;
            rec_req_t *p = realloc(rec->reqs, c * sizeof(*p));
            if (p == NULL) {
                pthread_mutex_unlock(&rec->mu);
                free(q.head);
                goto out;
            }
            rec->reqs = p;
            rec->cap = c;
        }
        rec->reqs[rec->nreqs++] = q;
        pthread_mutex_unlock(&rec->mu);

        char res[128];
        int n =
            snprintf(res, sizeof(res), "HTTP/1.1 %d Recorded\r\nContent-Length: 0\r\n\r\n", atomic_load(&rec->status));
        if (send(k->fd, res, (size_t)n, MSG_NOSIGNAL) != n)
            goto out;
    }
out:
    rec_drop_conn(rec, k->fd);
    free(k);
    return NULL;
}

static void *rec_accept_main(void *arg)
{
    rec_t *rec = arg;
    for (;;) {
        int fd = accept4(rec->fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if ((errno == EINTR || errno == ECONNABORTED) && !atomic_load(&rec->stop))
                continue;
            return NULL;
        }
        if (!rec_add_conn(rec, fd) || !rec->reading)
            continue;
        /* A detached thread per connection: weir may open many over a test, and each ends on its own. */
        rec_conn_t *k = calloc(1, sizeof(*k));
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (k != NULL) {
            k->rec = rec;
            k->fd = fd;
        }
        if (k == NULL || pthread_create(&t, &attr, rec_conn_main, k) != 0) {
            free(k);
            rec_error(rec, "cannot serve a connection");
            rec_drop_conn(rec, fd);
        }
        pthread_attr_destroy(&attr);
    }
}

/* Starts a recorder on a free port of 127.0.0.1. <reading> false: it accepts and never reads. */
static rec_t *rec_start(bool reading, int status)
{
    assert_true(nrecs < REC_MAX);
    rec_t *rec = calloc(1, sizeof(*rec));
    assert_non_null(rec);
    rec->reading = reading;
    atomic_store(&rec->status, status);
    pthread_mutex_init(&rec->mu, NULL);
    pthread_cond_init(&rec->cv, NULL);
    for (int i = 0; i < REC_MAX_CONNS; i++)
        rec->live_fd[i] = -1;
    rec->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(rec->fd >= 0);
    int one = 1;
    setsockopt(rec->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    assert_int_equal(bind(rec->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(rec->fd, 1024), 0);
    assert_int_equal(getsockname(rec->fd, (struct sockaddr *)&sa, &sl), 0);
    rec->port = ntohs(sa.sin_port);
    snprintf(rec->addr, sizeof(rec->addr), "127.0.0.1:%d", rec->port);
    assert_int_equal(pthread_create(&rec->acceptor, NULL, rec_accept_main, rec), 0);
    recs[nrecs++] = rec;
    return rec;
}

static void rec_stop(rec_t *rec)
{
    atomic_store(&rec->stop, true);
    shutdown(rec->fd, SHUT_RDWR); /* wakes accept() */
    pthread_join(rec->acceptor, NULL);
    close(rec->fd);
    pthread_mutex_lock(&rec->mu);
    if (rec->reading) {
        /* wakes every connection thread, which closes its socket */
        for (int i = 0; i < REC_MAX_CONNS; i++)
            if (rec->live_fd[i] >= 0)
                shutdown(rec->live_fd[i], SHUT_RDWR);
        while (rec->nlive > 0)
            pthread_cond_wait(&rec->cv, &rec->mu);
    } else {
        for (int i = 0; i < REC_MAX_CONNS; i++)
            if (rec->live_fd[i] >= 0)
                close(rec->live_fd[i]);
    }
    pthread_mutex_unlock(&rec->mu);
    for (size_t i = 0; i < rec->nreqs; i++)
        free(rec->reqs[i].head);
    free(rec->reqs);
    pthread_cond_destroy(&rec->cv);
    pthread_mutex_destroy(&rec->mu);
    free(rec);
}

static size_t rec_count(rec_t *rec)
{
    pthread_mutex_lock(&rec->mu);
    size_t n = rec->nreqs;
    pthread_mutex_unlock(&rec->mu);
    return n;
}

/* Request <i> as recorded; its head stays valid until the recorder stops. */
static rec_req_t rec_get(rec_t *rec, size_t i)
{
    rec_req_t q = {0};
    pthread_mutex_lock(&rec->mu);
    bool ok = i < rec->nreqs;
    if (ok)
        q = rec->reqs[i];
    pthread_mutex_unlock(&rec->mu);
    assert_true(ok); /* outside the lock: a failure leaves the test here, and the teardown needs the lock */
    return q;
}

/* Connections accepted since the start. */
static long rec_naccepted(rec_t *rec)
{
    pthread_mutex_lock(&rec->mu);
    long n = rec->naccepted;
    pthread_mutex_unlock(&rec->mu);
    return n;
}

#define assert_rec_clean(rec) assert_rec_clean_at((rec), __FILE__, __LINE__)
static void assert_rec_clean_at(rec_t *rec, const char *file, int line)
{
    pthread_mutex_lock(&rec->mu);
    char e[sizeof(rec->error)];
    memcpy(e, rec->error, sizeof(e));
    pthread_mutex_unlock(&rec->mu);
    if (e[0] != '\0') {
        print_error("ERROR: the mirror endpoint saw a malformed copy: %s\n", e);
        _fail(file, line);
    }
}

/* ---- fixtures -------------------------------------------------------------------------------------------------- */

static int setup(void **state)
{
    nrecs = 0;
    return th_setup(state);
}

/* weir goes first, so the recorders' connections end from weir's side. */
static int teardown(void **state)
{
    int rc = th_teardown(state);
    while (nrecs > 0)
        rec_stop(recs[--nrecs]);
    return rc;
}

/* ---- helpers -------------------------------------------------------------------------------------------------- */

/* Runs weirctl against the test's weir with the NULL-terminated request words; fails the test unless it says ok. */
#define ctl(env, ...) ctl_at(__FILE__, __LINE__, (env), __VA_ARGS__)
static void ctl_at(const char *file, int line, th_env_t *env, ...)
{
    char *argv[32] = {(char *)th_weirctl_bin(), "-s", env->sock};
    int n = 3;
    va_list ap;
    va_start(ap, env);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL && n < 31)
        argv[n++] = (char *)a;
    va_end(ap);
    argv[n] = NULL;
    th_run_t r;
    th_run(env, &r, argv);
    if (r.status != 0) {
        print_error("ERROR: weirctl %s %s ... exited %d: %s\n", argv[3], n > 4 ? argv[4] : "", r.status, r.err);
        _fail(file, line);
    }
}

static void wait_admin(th_env_t *env)
{
    assert_true(env->admin_port > 0);
    if (!th_wait_port(env->admin_port, TH_TIMEOUT_MS, &env->weir))
        fail_msg("admin port %d not open", env->admin_port);
}

/* The value of the sample <series> (name and labels exactly as exported, e.g. `weir_mirror_mismatch_total{variant=
 * "canary"}`) in /metrics; -1 when the series is absent; -2 when /metrics could not be read. */
static long metric(th_env_t *env, const char *series)
{
    th_resp_t r = {0};
    if (th_try_get(env->admin_port, "/metrics", &r) < 0 || r.status != 200) {
        th_resp_free(&r);
        return -2;
    }
    size_t n = strlen(series);
    long v = -1;
    for (const char *p = r.body; p != NULL && *p != '\0'; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, series, n) == 0 && p[n] == ' ') {
            v = (long)strtod(p + n + 1, NULL);
            break;
        }
    th_resp_free(&r);
    return v;
}

/* For series that weir exports only once non-zero (the code-labelled ones): absent reads as 0. */
static long metric0(th_env_t *env, const char *series)
{
    long v = metric(env, series);
    return v == -1 ? 0 : v;
}

typedef struct want_s {
    th_env_t *env;
    const char *series;
    long want;
} want_t;

static bool metric_is(void *arg)
{
    want_t *w = arg;
    return metric0(w->env, w->series) == w->want;
}

/* Polls until <series> reads <want> (absent counts as 0); fails with the last value otherwise. */
#define wait_metric(env, series, want) wait_metric_at((env), (series), (want), __FILE__, __LINE__)
static void wait_metric_at(th_env_t *env, const char *series, long want, const char *file, int line)
{
    want_t w = {env, series, want};
    if (!th_poll(metric_is, &w, TH_TIMEOUT_MS)) {
        print_error("ERROR: %s is %ld, want %ld\n", series, metric(env, series), want);
        _fail(file, line);
    }
}

typedef struct rec_want_s {
    rec_t *rec;
    size_t want;
} rec_want_t;

static bool rec_has(void *arg)
{
    rec_want_t *w = arg;
    return rec_count(w->rec) >= w->want;
}

/* Polls until the recorder holds at least <want> requests; fails with the count and weir's drop counters
 * otherwise. */
#define wait_recorded(env, rec, want) wait_recorded_at((env), (rec), (want), __FILE__, __LINE__)
static void wait_recorded_at(th_env_t *env, rec_t *rec, size_t want, const char *file, int line)
{
    rec_want_t w = {rec, want};
    if (!th_poll(rec_has, &w, TH_TIMEOUT_MS)) {
        print_error("ERROR: the mirror endpoint received %zu requests, want %zu (weir: %ld copies answered, %ld "
                    "dropped as error, %ld as overload)\n",
                    rec_count(rec), want, metric0(env, M_REQ_CANARY_200), metric(env, M_DROP_ERROR),
                    metric(env, M_DROP_OVERLOAD));
        _fail(file, line);
    }
}

/* A body that no shifted, repeated or dropped block can imitate: xorshift bytes from <seed>. */
static char *make_body(size_t n, uint64_t seed)
{
    char *b = th_alloc(n ? n : 1);
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    size_t i = 0;
    while (i < n) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        for (int k = 0; k < 8 && i < n; k++)
            b[i++] = (char)(x >> (8 * k));
    }
    return b;
}

/* A client that is never more than this many body bytes ahead of the mirror endpoint (see send_body). */
#define PACE (128 * 1024)

typedef struct progress_s {
    rec_t *rec;
    unsigned long long want;
} progress_t;

static bool rec_took(void *arg)
{
    progress_t *p = arg;
    return atomic_load(&p->rec->body_bytes) >= p->want;
}

/* Waits until the mirror endpoint has received <want> body bytes in all. */
static void wait_taken(th_env_t *env, rec_t *rec, unsigned long long want)
{
    progress_t p = {rec, want};
    if (!th_poll(rec_took, &p, TH_TIMEOUT_MS))
        fail_msg("the mirror endpoint took %llu body bytes, want %llu (weir: %ld copies dropped as overload, %ld as "
                 "error)",
                 (unsigned long long)atomic_load(&rec->body_bytes), want, metric(env, M_DROP_OVERLOAD),
                 metric(env, M_DROP_ERROR));
}

/* Sends the <n> bytes of <body>, raw or chunked (chunks of varied sizes, one byte to 300 KB). With <pace>, waits
 * whenever PACE / 2 bytes went out until that recorder has taken in everything sent so far: a client no faster than
 * the mirror endpoint, so that what is checked is what a copy carries, not whether weir keeps a copy that falls
 * behind (weir drops those by design; see test_large_copy_full_speed). */
static void send_body(th_env_t *env, th_conn_t *c, const char *body, size_t n, bool chunked, rec_t *pace)
{
    static const size_t sizes[] = {1, 1000, 16384, 65537, 7, 300000, 4096};
    unsigned long long base = pace ? atomic_load(&pace->body_bytes) : 0;
    size_t off = 0, paced = 0;
    for (unsigned i = 0; off < n; i++) {
        size_t k = chunked ? sizes[i % (sizeof(sizes) / sizeof(sizes[0]))] : PACE;
        if (pace != NULL && k > PACE / 2)
            k = PACE / 2;
        if (k > n - off)
            k = n - off;
        if (chunked)
            assert_int_equal(th_conn_sendf(c, "%zx\r\n", k), 0);
        assert_int_equal(th_conn_send(c, body + off, k), 0);
        if (chunked)
            assert_int_equal(th_conn_send(c, "\r\n", 2), 0);
        off += k;
        if (pace != NULL && off - paced >= PACE / 2) {
            wait_taken(env, pace, base + off);
            paced = off;
        }
    }
    if (chunked)
        assert_int_equal(th_conn_send(c, "0\r\n\r\n", 5), 0);
}

/* Removes the header line "<name>: <value>" (name case-insensitive) from the header block <head> into <out>; returns
 * how many such lines there were. Other lines, and their order, are kept. */
static int strip_header(const char *head, const char *name, const char *value, char *out)
{
    size_t nl = strlen(name);
    int found = 0;
    const char *p = head;
    const char *eol = strstr(p, "\r\n");
    memcpy(out, p, (size_t)(eol - p) + 2); /* the request line */
    out += eol - p + 2;
    for (p = eol + 2; *p != '\0'; p = eol + 2) {
        eol = strstr(p, "\r\n");
        if (eol == NULL)
            break;
        if ((size_t)(eol - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (v < eol && *v == ' ')
                v++;
            if ((size_t)(eol - v) == strlen(value) && strncmp(v, value, (size_t)(eol - v)) == 0) {
                found++;
                continue;
            }
        }
        memcpy(out, p, (size_t)(eol - p) + 2);
        out += eol - p + 2;
    }
    *out = '\0';
    return found;
}

/* How many header lines named <name> the header block <head> has. */
static int head_count(const char *head, const char *name)
{
    size_t nl = strlen(name);
    int n = 0;
    for (const char *p = strstr(head, "\r\n"); p != NULL && p[2] != '\0'; p = strstr(p + 2, "\r\n"))
        n += strncasecmp(p + 2, name, nl) == 0 && p[2 + nl] == ':';
    return n;
}

/* Index of the recorded request whose request line holds <tag>, or -1. */
static long rec_find(rec_t *rec, const char *tag)
{
    size_t n = rec_count(rec);
    for (size_t i = 0; i < n; i++) {
        rec_req_t q = rec_get(rec, i);
        const char *eol = strstr(q.head, "\r\n");
        const char *t = memmem(q.head, (size_t)(eol - q.head), tag, strlen(tag));
        if (t != NULL && (t[strlen(tag)] == ' ' || t[strlen(tag)] == '&'))
            return (long)i;
    }
    return -1;
}

/* Sends "GET <path>" on <c> and expects the stable upstream's 200. */
#define get_ok(c, path) get_ok_at((c), (path), __FILE__, __LINE__)
static void get_ok_at(th_conn_t *c, const char *path, const char *file, int line)
{
    th_resp_t r = {0};
    if (th_conn_sendf(c, "GET %s HTTP/1.1\r\nHost: test\r\n\r\n", path) < 0 ||
        th_conn_read_response(c, &r, false, TH_TIMEOUT_MS) < 0) {
        print_error("ERROR: no complete response to GET %s\n", path);
        _fail(file, line);
    }
    const char *who = th_header(&r, "x-upstream");
    if (r.status != 200 || who == NULL || strcmp(who, "stable") != 0) {
        print_error("ERROR: GET %s got %d from %s, want 200 from stable\n", path, r.status, who ? who : "(weir)");
        _fail(file, line);
    }
    th_resp_free(&r);
}

/* POSTs <n> bytes to /echo on <c> (chunked or with Content-Length) and asserts the stable upstream echoed them. */
#define post_echo_ok(c, body, n, chunked) post_echo_ok_at((c), (body), (n), (chunked), __FILE__, __LINE__)
static void post_echo_ok_at(th_conn_t *c, const char *body, size_t n, bool chunked, const char *file, int line)
{
    th_resp_t r = {0};
    if (chunked) {
        assert_int_equal(th_conn_sendf(c, "POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"),
                         0);
        send_body(NULL, c, body, n, true, NULL);
    } else {
        assert_int_equal(th_conn_sendf(c, "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: %zu\r\n\r\n", n), 0);
        assert_int_equal(th_conn_send(c, body, n), 0);
    }
    if (th_conn_read_response(c, &r, false, TH_TIMEOUT_MS) < 0) {
        print_error("ERROR: no complete response to a %zu-byte POST\n", n);
        _fail(file, line);
    }
    size_t got;
    const char *echoed = th_echo_body(&r, &got);
    if (r.status != 200 || echoed == NULL || got != n || memcmp(echoed, body, n) != 0) {
        print_error("ERROR: %zu-byte POST: status %d, %zu bytes echoed\n", n, r.status, echoed ? got : 0);
        _fail(file, line);
    }
    th_resp_free(&r);
}

/* Sends "GET <path>" on <c> and reads the response into <r>; fails the test when none comes. */
#define get(c, path, r) get_at((c), (path), (r), __FILE__, __LINE__)
static void get_at(th_conn_t *c, const char *path, th_resp_t *r, const char *file, int line)
{
    if (th_conn_sendf(c, "GET %s HTTP/1.1\r\nHost: test\r\n\r\n", path) < 0 ||
        th_conn_read_response(c, r, false, TH_TIMEOUT_MS) < 0) {
        print_error("ERROR: no complete response to GET %s\n", path);
        _fail(file, line);
    }
}

/* The sum of every sample in /metrics whose line starts with <prefix>; -2 when /metrics could not be read. */
static long metric_sum(th_env_t *env, const char *prefix)
{
    th_resp_t r = {0};
    if (th_try_get(env->admin_port, "/metrics", &r) < 0 || r.status != 200) {
        th_resp_free(&r);
        return -2;
    }
    size_t n = strlen(prefix);
    long sum = 0;
    for (const char *p = r.body; p != NULL && *p != '\0'; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, prefix, n) == 0) {
            const char *sp = strchr(p, ' ');
            if (sp != NULL)
                sum += (long)strtod(sp + 1, NULL);
        }
    th_resp_free(&r);
    return sum;
}

/* Copies the value of the first header <name> of the header block <head> into <out>; false when there is none. */
static bool head_value(const char *head, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    for (const char *p = strstr(head, "\r\n"); p != NULL && p[2] != '\0'; p = strstr(p + 2, "\r\n")) {
        if (strncasecmp(p + 2, name, nl) != 0 || p[2 + nl] != ':')
            continue;
        const char *v = p + 2 + nl + 1, *e = strstr(v, "\r\n");
        while (*v == ' ')
            v++;
        snprintf(out, cap, "%.*s", (int)(e - v), v);
        return true;
    }
    return false;
}

/* ---- tests ---------------------------------------------------------------------------------------------------- */

typedef struct copy_case_s {
    const char *method;
    size_t size;
    bool chunked;
} copy_case_t;

/* Starts a recorder as the canary, weir ahead of a stable upstream and the recorder, and a mirror route copying
 * every request. Returns the recorder; the upstream is env->up[0]. */
static rec_t *start_mirrored(th_env_t *env)
{
    rec_t *rec = rec_start(true, 200);
    int u = th_upstream_start(env, "stable");
    th_weir_startl(env, "--stable", env->up[u].addr, "--canary", rec->addr, NULL);
    wait_admin(env);
    ctl(env, "set", "mirror-route", "all", "100", "to", "canary", NULL);
    return rec;
}

/* Sends request <i> of case <k> on <c> to the stable upstream's /echo, which shows the primary as it arrived, and
 * asserts that the copy the recorder got has the same request line, header block and body, plus x-weir-mirror: 1.
 * <pace>: see send_body. */
static void copy_case(th_env_t *env, rec_t *rec, th_conn_t *c, size_t i, const copy_case_t *k, bool pace)
{
    th_resp_t r = {0};
    char *body = make_body(k->size, i + 1);
    size_t before = rec_count(rec);
    assert_int_equal(th_conn_sendf(c,
                                   "%s /echo?case=%zu&q=a%%20b HTTP/1.1\r\nHost: shop.test:8080\r\n"
                                   "X-Forwarded-For: 10.0.0.1\r\nX-Custom: one\r\nCookie: session=abc; lang=en\r\n"
                                   "X-Dup: first\r\nAccept: */*\r\nX-Dup: second\r\n",
                                   k->method, i),
                     0);
    if (k->chunked)
        assert_int_equal(th_conn_sendf(c, "Transfer-Encoding: chunked\r\n\r\n"), 0);
    else if (k->size > 0)
        assert_int_equal(th_conn_sendf(c, "Content-Length: %zu\r\n\r\n", k->size), 0);
    else
        assert_int_equal(th_conn_send(c, "\r\n", 2), 0);
    send_body(env, c, body, k->size, k->chunked, pace ? rec : NULL);
    if (th_conn_read_response(c, &r, false, TH_TIMEOUT_MS) < 0)
        fail_msg("case %zu: no response to %s with a %zu-byte body", i, k->method, k->size);
    assert_int_equal(r.status, 200);

    /* the primary as the stable upstream received it */
    size_t echoed_len;
    const char *echoed = th_echo_body(&r, &echoed_len);
    assert_non_null(echoed);
    if (echoed_len != k->size || memcmp(echoed, body, k->size) != 0)
        fail_msg("case %zu: the primary's body arrived as %zu bytes (sent %zu)", i, echoed_len, k->size);
    assert_int_equal(th_echo_header_count(&r, "x-weir-mirror"), 0);
    char *primary_head = th_strdup(r.body);
    primary_head[echoed - r.body] = '\0';
    char xff[256];
    assert_true(th_echo_header(&r, "x-forwarded-for", 0, xff, sizeof(xff)));
    assert_string_equal(xff, "10.0.0.1, 127.0.0.1");
    th_resp_free(&r);

    /* the copy as the mirror endpoint received it */
    wait_recorded(env, rec, before + 1);
    assert_rec_clean(rec);
    long at = rec_find(rec, th_fmt("case=%zu", i));
    if (at < 0)
        fail_msg("case %zu: no copy of %s with a %zu-byte body among %zu recorded", i, k->method, k->size,
                 rec_count(rec));
    rec_req_t q = rec_get(rec, (size_t)at);
    assert_int_equal(head_count(q.head, "x-weir-mirror"), 1);
    char *stripped = th_alloc(q.head_len + 1);
    if (strip_header(q.head, "x-weir-mirror", "1", stripped) != 1)
        fail_msg("case %zu: the copy has no header `x-weir-mirror: 1`:\n%s", i, q.head);
    if (strcmp(stripped, primary_head) != 0)
        fail_msg("case %zu: the copy's header block differs from the primary's\n--- primary:\n%s--- copy:\n%s", i,
                 primary_head, q.head);
    assert_true(head_value(q.head, "x-forwarded-for", xff, sizeof(xff)));
    assert_string_equal(xff, "10.0.0.1, 127.0.0.1");
    if (q.body_len != k->size || q.body_sum != checksum(body, k->size))
        fail_msg("case %zu: the copy's body is %llu bytes, checksum %016llx; the original %zu bytes, %016llx", i,
                 (unsigned long long)q.body_len, (unsigned long long)q.body_sum, k->size,
                 (unsigned long long)checksum(body, k->size));
    th_free(stripped);
    th_free(primary_head);
    th_free(body);
}

/* The copy carries the primary's request line, header block (X-Forwarded-For included) and body, plus
 * x-weir-mirror: 1, whatever the method, the body's size or its framing. The 20 MB bodies are sent at the pace the
 * mirror endpoint takes them in. */
static void test_copy_equals_original(void **state)
{
    th_env_t *env = *state;
    rec_t *rec = start_mirrored(env);
    const copy_case_t cases[] = {
        {"GET", 0, false},  {"DELETE", 0, false},  {"POST", KB100, false}, {"PUT", KB100, true},
        {"PATCH", 5, true}, {"POST", MB20, false}, {"POST", MB20, true},
    };
    const size_t ncases = sizeof(cases) / sizeof(cases[0]);
    th_conn_t *c = th_conn_open(env->port);
    for (size_t i = 0; i < ncases; i++)
        copy_case(env, rec, c, i, &cases[i], cases[i].size > PACE);
    assert_int_equal(rec_count(rec), ncases);
    assert_int_equal(th_upstream_stat(env, 0, "/__count"), ncases);

    /* every copy was answered, none dropped, and 200 against 200 is no mismatch */
    wait_metric(env, M_REQ_CANARY_200, (long)ncases);
    assert_int_equal(metric(env, M_DROP_ERROR), 0);
    assert_int_equal(metric(env, M_DROP_OVERLOAD), 0);
    assert_int_equal(metric(env, M_MISMATCH), 0);
    assert_int_equal(metric_sum(env, M_CLIENT_CANARY_ANY), 0); /* a copy is not a client's request */
    th_weir_stop(env);
}

/* 20 MB bodies sent as fast as the client can, to a mirror endpoint that reads as fast as it can: the copies
 * arrive whole. */
static void test_large_copy_full_speed(void **state)
{
    th_env_t *env = *state;
    rec_t *rec = start_mirrored(env);
    const copy_case_t cases[] = {{"POST", MB20, false}, {"PUT", MB20, true}};
    th_conn_t *c = th_conn_open(env->port);
    for (size_t i = 0; i < 2; i++)
        copy_case(env, rec, c, i, &cases[i], false);
    wait_metric(env, M_REQ_CANARY_200, 2);
    assert_int_equal(metric(env, M_DROP_OVERLOAD), 0);
    th_weir_stop(env);
}

/* Copies go out on persistent connections, as primaries do: 200 copies one after the other do not each open a
 * connection to the mirror endpoint. */
static void test_copies_keep_alive(void **state)
{
    th_env_t *env = *state;
    rec_t *rec = start_mirrored(env);
    th_conn_t *c = th_conn_open(env->port);
    enum { N = 200 };
    char path[64];
    for (int i = 0; i < N; i++) {
        snprintf(path, sizeof(path), "/ka/%d", i);
        get_ok(c, path);
        /* The next request starts once this copy is answered, so a loaded machine cannot make copies overlap. */
        wait_metric(env, M_REQ_CANARY_200, i + 1);
    }
    assert_int_equal(rec_count(rec), N);
    long conns = rec_naccepted(rec);
    /* Copies one after the other reuse their connection: without keep-alive each would open its own. */
    if (conns > N / 10)
        fail_msg("%d copies one after the other opened %ld connections to the mirror endpoint", N, conns);
    th_weir_stop(env);
}

typedef struct settle_s {
    th_env_t *env;
    rec_t *rec;
} settle_t;

/* Every copy the recorder holds has been answered and counted by weir, and weir counts no other. */
static bool copies_settled(void *arg)
{
    settle_t *s = arg;
    return metric0(s->env, M_REQ_CANARY_200) == (long)rec_count(s->rec);
}

/* PERCENT of the matching requests are copied: 30 % of 2,000 lands within 5 sigma of 600. */
static void test_percentage_binomial(void **state)
{
    th_env_t *env = *state;
    rec_t *rec = rec_start(true, 200);
    int u = th_upstream_start(env, "stable");
    th_weir_startl(env, "--stable", env->up[u].addr, "--canary", rec->addr, NULL);
    wait_admin(env);
    ctl(env, "set", "mirror-route", "sample", "30", NULL);

    enum { N = 2000 };
    th_conn_t *c = th_conn_open(env->port);
    char path[64];
    for (int i = 0; i < N; i++) {
        snprintf(path, sizeof(path), "/p/%d", i);
        get_ok(c, path);
    }
    settle_t s = {env, rec};
    if (!th_poll(copies_settled, &s, TH_TIMEOUT_MS))
        fail_msg("the mirror endpoint received %zu copies; weir counts %ld answered", rec_count(rec),
                 metric(env, M_REQ_CANARY_200));
    assert_rec_clean(rec);

    /* 5 sigma of Binomial(2000, 0.3): 5 * sqrt(2000 * 0.3 * 0.7) = 102.5 */
    long k = (long)rec_count(rec), sigma5 = 0;
    while ((sigma5 + 1) * (sigma5 + 1) <= 25L * N * 3 * 7 / 100)
        sigma5++;
    if (k < N * 3 / 10 - sigma5 || k > N * 3 / 10 + sigma5)
        fail_msg("%ld copies of %d requests at 30 %%; want %d +- %ld", k, N, N * 3 / 10, sigma5);

    /* each a copy of a distinct request */
    static bool seen[N];
    memset(seen, 0, sizeof(seen));
    for (long i = 0; i < k; i++) {
        rec_req_t q = rec_get(rec, (size_t)i);
        int n;
        if (sscanf(q.head, "GET /p/%d HTTP/1.1\r\n", &n) != 1 || n < 0 || n >= N || seen[n])
            fail_msg("unexpected or repeated copy: %.80s", q.head);
        seen[n] = true;
        assert_int_equal(head_count(q.head, "x-weir-mirror"), 1);
    }
    assert_int_equal(th_upstream_stat(env, u, "/__count"), N);
    assert_int_equal(metric(env, "weir_route_matches_total{route=\"sample\"}"), N);
    assert_int_equal(metric(env, "weir_requests_total{variant=\"stable\",code=\"200\"}"), N);
    assert_int_equal(metric_sum(env, M_CLIENT_CANARY_ANY), 0);
    assert_int_equal(metric(env, M_DROP_ERROR), 0);
    assert_int_equal(metric(env, M_DROP_OVERLOAD), 0);
    assert_int_equal(metric(env, M_MISMATCH), 0);
    th_weir_stop(env);
}

/* When the weights pick the mirror variant itself, it gets the request once, as the primary, and no copy. */
static void test_no_copy_to_primary_variant(void **state)
{
    th_env_t *env = *state;
    rec_t *rec = rec_start(true, 200);
    int u = th_upstream_start(env, "stable");
    th_weir_startl(env, "--stable", env->up[u].addr, "--canary", rec->addr, "--weight", "canary", "100", NULL);
    wait_admin(env);
    ctl(env, "set", "mirror-route", "self", "100", NULL);
    th_conn_t *c = th_conn_open(env->port);
    th_resp_t r = {0};
    char path[64];

    enum { N1 = 50, N2 = 100 };
    for (int i = 0; i < N1; i++) {
        snprintf(path, sizeof(path), "/one/%d", i);
        get(c, path, &r);
        assert_int_equal(r.status, 200);
        assert_null(th_header(&r, "x-upstream")); /* answered by the canary, the recorder */
    }
    wait_recorded(env, rec, N1);

    /* half and half: each request reaches the canary exactly once, as the primary or as the copy */
    ctl(env, "set", "weight", "50", NULL);
    bool to_stable[N2];
    long nstable = 0;
    for (int i = 0; i < N2; i++) {
        snprintf(path, sizeof(path), "/two/%d", i);
        get(c, path, &r);
        assert_int_equal(r.status, 200);
        const char *who = th_header(&r, "x-upstream");
        to_stable[i] = who != NULL && strcmp(who, "stable") == 0;
        nstable += to_stable[i];
    }
    if (nstable == 0 || nstable == N2)
        fail_msg("weight 50 sent %ld of %d requests to stable", nstable, N2);
    wait_recorded(env, rec, N1 + N2);
    wait_metric(env, M_REQ_CANARY_200, nstable);
    assert_rec_clean(rec);
    assert_int_equal(rec_count(rec), N1 + N2);

    int seen1[N1] = {0}, seen2[N2] = {0};
    for (size_t i = 0; i < N1 + N2; i++) {
        rec_req_t q = rec_get(rec, i);
        int n, copies = head_count(q.head, "x-weir-mirror");
        if (sscanf(q.head, "GET /one/%d ", &n) == 1 && n >= 0 && n < N1) {
            seen1[n]++;
            if (copies != 0)
                fail_msg("a copy of /one/%d reached the canary, which was the primary pick", n);
        } else if (sscanf(q.head, "GET /two/%d ", &n) == 1 && n >= 0 && n < N2) {
            seen2[n]++;
            if (copies != (to_stable[n] ? 1 : 0))
                fail_msg("/two/%d went to %s and reached the canary with %d x-weir-mirror headers", n,
                         to_stable[n] ? "stable" : "canary", copies);
        } else {
            fail_msg("unexpected request at the canary: %.80s", q.head);
        }
    }
    for (int i = 0; i < N1; i++)
        if (seen1[i] != 1)
            fail_msg("/one/%d reached the canary %d times", i, seen1[i]);
    for (int i = 0; i < N2; i++)
        if (seen2[i] != 1)
            fail_msg("/two/%d reached the canary %d times", i, seen2[i]);
    assert_int_equal(th_upstream_stat(env, u, "/__count"), nstable);
    assert_int_equal(metric(env, M_DROP_ERROR), 0);
    th_weir_stop(env);
}

/* A mirror endpoint with nothing listening: every primary request succeeds, as it does without the mirror route,
 * and every copy is counted as dropped (error). */
static void test_dead_mirror(void **state)
{
    th_env_t *env = *state;
    int u = th_upstream_start(env, "stable");
    char *dead = th_fmt("127.0.0.1:%d", th_free_port());
    th_weir_startl(env, "--stable", env->up[u].addr, "--canary", dead, NULL);
    wait_admin(env);
    th_conn_t *c = th_conn_open(env->port);
    char *body = make_body(KB100, 7);
    char path[64];

    enum { N = 100 };
    for (int mirrored = 0; mirrored < 2; mirrored++) {
        if (mirrored)
            ctl(env, "set", "mirror-route", "to-dead", "100", NULL);
        for (int i = 0; i < N; i++) {
            snprintf(path, sizeof(path), "/%s/%d", mirrored ? "with" : "without", i);
            get_ok(c, path);
        }
        post_echo_ok(c, body, KB100, false);
        post_echo_ok(c, body, KB100, true);
        /* and on fresh connections */
        for (int i = 0; i < 10; i++) {
            th_resp_t r = {0};
            th_get(env->port, "/fresh", &r);
            assert_int_equal(r.status, 200);
            assert_string_equal(th_header(&r, "x-upstream"), "stable");
            th_resp_free(&r);
        }
    }
    assert_int_equal(th_upstream_stat(env, u, "/__count"), 2 * (N + 2 + 10));
    wait_metric(env, M_DROP_ERROR, N + 2 + 10);
    assert_int_equal(metric(env, M_DROP_OVERLOAD), 0);
    assert_int_equal(metric_sum(env, M_REQ_CANARY_ANY), 0);
    assert_int_equal(metric(env, "weir_requests_total{variant=\"stable\",code=\"200\"}"), 2 * (N + 2 + 10));
    assert_int_equal(metric_sum(env, M_CLIENT_CANARY_ANY), 0);
    assert_int_equal(metric_sum(env, "weir_proxy_errors_total{variant=\"stable\","), 0);
    th_weir_stop(env);
}

/* A mirror endpoint that accepts and never reads: a 20 MB body still goes through the primary whole (with and
 * without the mirror route, same connection), the copy that falls behind is dropped as overload, and copies past
 * mirror-max-inflight are dropped as overload while the primaries go on. */
static void test_stalled_mirror(void **state)
{
    th_env_t *env = *state;
    rec_t *rec = rec_start(false, 200);
    int u = th_upstream_start(env, "stable");
    th_weir_startl(env, "--stable", env->up[u].addr, "--canary", rec->addr, "--mirror-max-inflight", "8", NULL);
    wait_admin(env);
    th_conn_t *c = th_conn_open(env->port);
    char *body = make_body(MB20, 9);

    post_echo_ok(c, body, MB20, false); /* without the mirror route */
    ctl(env, "set", "mirror-route", "to-stalled", "100", NULL);
    post_echo_ok(c, body, MB20, false);
    wait_metric(env, M_DROP_OVERLOAD, 1);
    post_echo_ok(c, body, MB20, true);
    wait_metric(env, M_DROP_OVERLOAD, 2);

    /* 8 copies stay in flight, unanswered; the other 32 are dropped */
    char path[64];
    for (int i = 0; i < 40; i++) {
        snprintf(path, sizeof(path), "/small/%d", i);
        get_ok(c, path);
    }
    wait_metric(env, M_DROP_OVERLOAD, 2 + 32);
    assert_int_equal(metric(env, M_DROP_ERROR), 0);
    assert_int_equal(metric_sum(env, M_REQ_CANARY_ANY), 0);
    assert_int_equal(th_upstream_stat(env, u, "/__count"), 3 + 40);
    assert_true(rec_naccepted(rec) >= 8);
    th_weir_stop(env);
}

/* A copy answered 500 while the primary got 200 (or 404) is a mismatch; 500 against 503 is not. The copy's status
 * never reaches the client. */
static void test_mismatch(void **state)
{
    th_env_t *env = *state;
    rec_t *rec = rec_start(true, 500);
    int u = th_upstream_start(env, "stable");
    th_weir_startl(env, "--stable", env->up[u].addr, "--canary", rec->addr, NULL);
    wait_admin(env);
    ctl(env, "set", "mirror-route", "all", "100", NULL);
    th_conn_t *c = th_conn_open(env->port);
    th_resp_t r = {0};
    const struct {
        const char *path;
        int status, n;
    } runs[] = {{"/", 200, 20}, {"/status/503", 503, 10}, {"/status/404", 404, 5}};
    for (size_t k = 0; k < 3; k++)
        for (int i = 0; i < runs[k].n; i++) {
            get(c, runs[k].path, &r);
            assert_int_equal(r.status, runs[k].status);
            assert_string_equal(th_header(&r, "x-upstream"), "stable");
        }
    wait_recorded(env, rec, 35);
    wait_metric(env, M_REQ_CANARY_500, 35);
    wait_metric(env, M_MISMATCH, 20 + 5);
    assert_rec_clean(rec);
    assert_int_equal(rec_count(rec), 35);
    assert_int_equal(metric_sum(env, M_REQ_CANARY_ANY), 35);
    assert_int_equal(metric(env, "weir_requests_total{variant=\"stable\",code=\"200\"}"), 20);
    assert_int_equal(metric(env, "weir_requests_total{variant=\"stable\",code=\"503\"}"), 10);
    assert_int_equal(metric(env, "weir_requests_total{variant=\"stable\",code=\"404\"}"), 5);
    assert_int_equal(metric_sum(env, M_CLIENT_CANARY_ANY), 0);
    assert_int_equal(metric(env, M_DROP_ERROR), 0);
    assert_int_equal(metric(env, M_DROP_OVERLOAD), 0);
    th_weir_stop(env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_copy_equals_original, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_copy_full_speed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_copies_keep_alive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_percentage_binomial, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_copy_to_primary_variant, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_mirror, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stalled_mirror, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mismatch, setup, teardown),
    };
    th_filter_from_env();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
