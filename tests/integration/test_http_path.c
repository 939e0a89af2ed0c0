/* The HTTP/1.1 data path under load and abuse (SPEC §2, §6, §7): bodies of any size streamed with bounded memory,
 * pipelining with bodies and HEAD, Expect: 100-continue, trailers, Upgrade tunnels, request smuggling and bad
 * framing, random bytes, the timeouts, max-connections, upstreams failing mid-flight, clients going away, drain,
 * SIGHUP and the access log, and an upstream given by host name.
 *
 * Memory is read from /proc/PID/status of weir (VmHWM, VmRSS). Under the sanitizers (ASAN_OPTIONS set, as
 * tests/run.sh does for build/asan) the memory bounds apply to the growth over weir's footprint at rest rather than
 * to the absolute figure, since the sanitizer's own shadow and quarantine memory are no part of the proxy's
 * buffering, and the bulk transfers get more time. */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "harness.h"

#define GET_REQ(path) "GET " path " HTTP/1.1\r\nHost: test\r\n\r\n"
#define MIB (1024ull * 1024ull)
#define RSS_BOUND_KB (64 * 1024) /* weir's memory bound under load: 64 MiB */
#define PAT_SPAN (1u << 20)      /* longest run compared against the pattern at once */

/* The small timeouts of the timeout tests. */
#define SHORT_TIMEOUTS                                                                                                 \
    "--header-timeout", "300ms", "--upstream-timeout", "500ms", "--connect-timeout", "300ms", "--idle-timeout", "500ms"

/* --- helpers ------------------------------------------------------------------------------------------------------ */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void nap_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Whether the binaries under test are the sanitizer builds. */
static bool sanitized(void)
{
    const char *o = getenv("ASAN_OPTIONS");
    return (o != NULL && *o != '\0') || strstr(th_weir_bin(), "asan") != NULL;
}

#define BULK_BYTES (1024 * MIB) /* each bulk transfer: 1 GiB */

/* Time allowed to each bulk transfer. */
static int bulk_ms(void)
{
    return sanitized() ? 150000 : 60000;
}

/* Returns the value in kB of <field> ("VmHWM:", "VmRSS:") of process <pid>; fails the test if unreadable. */
static long proc_kb(pid_t pid, const char *field)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        fail_msg("cannot read %s: %s", path, strerror(errno));
    long v = -1;
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, field, strlen(field)) == 0)
            v = strtol(line + strlen(field), NULL, 10);
    fclose(f);
    if (v < 0)
        fail_msg("no %s in %s", field, path);
    return v;
}

/* The pattern of the upstream's /bytes/N, laid out so that byte i of the stream is pat()[i % 251] and a run of up to
 * PAT_SPAN bytes starting anywhere can be compared or sent at once. */
static const char *pat(void)
{
    static char *p;
    if (p == NULL) {
        p = malloc(PAT_SPAN + 251);
        assert_non_null(p);
        for (size_t i = 0; i < PAT_SPAN + 251; i++)
            p[i] = th_pattern_byte(i);
    }
    return p;
}

/* The upstream's /sink checksum, over the bytes in order. */
typedef struct sums_s {
    unsigned long long count, a, b;
} sums_t;

static void sums_add(sums_t *s, const char *p, size_t n)
{
    unsigned long long a = s->a, b = s->b;
    for (size_t i = 0; i < n; i++) {
        a += (unsigned char)p[i];
        b += a;
    }
    s->a = a;
    s->b = b;
    s->count += n;
}

/* Reads what arrives before <deadline> into c's buffer (the harness's layout: unread bytes are buf[off, len)).
 * Returns the byte count; 0 on a clean close; -2 on a reset; -1 on timeout. */
static ssize_t cfill(th_conn_t *c, int64_t deadline)
{
    if (c->eof || c->fd < 0)
        return 0;
    if (c->off == c->len)
        c->off = c->len = 0;
    if (c->off > 0 && c->cap - c->len < 65536) {
        memmove(c->buf, c->buf + c->off, c->len - c->off);
        c->len -= c->off;
        c->off = 0;
    }
    if (c->cap - c->len < 65536)
        c->buf = th_realloc(c->buf, c->cap = c->len + 131072);
    for (;;) {
        int64_t left = deadline - now_ms();
        struct pollfd pf = {.fd = c->fd, .events = POLLIN};
        int pr = poll(&pf, 1, left > 0 ? (int)left : 0);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            return -1;
        ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n <= 0) {
            c->eof = true;
            return n == 0 ? 0 : -2;
        }
        c->len += (size_t)n;
        return n;
    }
}

/* A response head read by read_head(): status and the head's text (NUL-terminated, CRLFs kept). */
typedef struct rhead_s {
    int status;
    char text[8192];
} rhead_t;

/* Reads one response head. Returns 0, or -1 on timeout, close or a malformed head. */
static int read_head(th_conn_t *c, rhead_t *h, int64_t deadline)
{
    char *end;
    while ((end = memmem(c->buf + c->off, c->len - c->off, "\r\n\r\n", 4)) == NULL)
        if (cfill(c, deadline) <= 0)
            return -1;
    size_t hl = (size_t)(end - (c->buf + c->off)) + 4;
    if (hl >= sizeof(h->text))
        return -1;
    memcpy(h->text, c->buf + c->off, hl);
    h->text[hl] = '\0';
    c->off += hl;
    if (sscanf(h->text, "HTTP/1.%*d %d", &h->status) != 1)
        return -1;
    return 0;
}

/* Copies the value of header <name> of <h> into <out>; returns false when there is none. */
static bool head_get(const rhead_t *h, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name);
    for (const char *line = strstr(h->text, "\r\n"); line != NULL && line[2] != '\r'; line = strstr(line + 2, "\r\n")) {
        const char *l = line + 2;
        if (strncasecmp(l, name, nl) == 0 && l[nl] == ':') {
            const char *v = l + nl + 1, *e = strstr(v, "\r\n");
            while (*v == ' ')
                v++;
            snprintf(out, outlen, "%.*s", (int)(e - v), v);
            return true;
        }
    }
    return false;
}

/* Reads <n> body bytes that must be the pattern from stream offset <pos> on. Returns 0; -1 when the connection
 * closed or <deadline> passed first (*<got> says how far it came); -3 on the first wrong byte. */
static int read_pattern(th_conn_t *c, uint64_t n, uint64_t pos, int64_t deadline, uint64_t *got)
{
    const char *p = pat();
    *got = 0;
    while (*got < n) {
        if (c->off == c->len && cfill(c, deadline) <= 0)
            return -1;
        size_t k = c->len - c->off;
        if (k > n - *got)
            k = (size_t)(n - *got);
        if (k > PAT_SPAN)
            k = PAT_SPAN;
        if (memcmp(c->buf + c->off, p + (pos + *got) % 251, k) != 0)
            return -3;
        c->off += k;
        *got += k;
    }
    return 0;
}

/* Sends <total> bytes of the pattern as a request body: Content-Length framing, or chunked with chunk sizes that
 * vary, adding them to <sums>. Fails the test when weir stops taking bytes or <deadline> passes. */
static void send_pattern_body(th_conn_t *c, uint64_t total, bool chunked, int64_t deadline, sums_t *sums)
{
    static const size_t sizes[] = {65536, 1, 4093, 16384, 300000, 17};
    char *blk = th_alloc(PAT_SPAN + 64);
    uint64_t off = 0;
    for (unsigned i = 0; off < total; i++) {
        if (now_ms() > deadline)
            fail_msg("sending a %llu-byte body: only %llu bytes went out in time", (unsigned long long)total,
                     (unsigned long long)off);
        size_t k = chunked ? sizes[i % 6] : PAT_SPAN;
        if (k > total - off)
            k = (size_t)(total - off);
        size_t hl = chunked ? (size_t)sprintf(blk, "%zx\r\n", k) : 0;
        memcpy(blk + hl, pat() + off % 251, k);
        sums_add(sums, blk + hl, k);
        size_t len = hl + k;
        if (chunked) {
            memcpy(blk + len, "\r\n", 2);
            len += 2;
        }
        if (th_conn_send(c, blk, len) < 0)
            fail_msg("sending a %llu-byte body: weir stopped taking bytes after %llu (%s)", (unsigned long long)total,
                     (unsigned long long)off, strerror(errno));
        off += k;
    }
    if (chunked && th_conn_send(c, "0\r\n\r\n", 5) < 0)
        fail_msg("sending the last chunk: %s", strerror(errno));
    th_free(blk);
}

/* Reads the /sink answer on <c> and checks it against what was sent. */
static void expect_sink(th_conn_t *c, const sums_t *sent, const char *what)
{
    th_resp_t r = {0};
    if (th_conn_read_response(c, &r, false, bulk_ms()) < 0)
        fail_msg("%s: no complete response from /sink", what);
    assert_int_equal(r.status, 200);
    unsigned long long n, a, b;
    if (sscanf(r.body, "%llu %llu %llu", &n, &a, &b) != 3)
        fail_msg("%s: /sink said \"%s\"", what, r.body);
    if (n != sent->count || a != sent->a || b != sent->b)
        fail_msg("%s: the upstream received %llu bytes (sums %llu %llu); sent %llu bytes (sums %llu %llu)", what, n, a,
                 b, sent->count, sent->a, sent->b);
    th_resp_free(&r);
}

/* Whether the Connection header of <r> has the token close. */
static bool says_close(const th_resp_t *r)
{
    for (int i = 0; i < r->nheaders; i++)
        if (strcasecmp(r->hname[i], "connection") == 0 && th_strcasestr(r->hvalue[i], "close") != NULL)
            return true;
    return false;
}

static void wait_admin(th_env_t *env)
{
    if (!th_wait_port(env->admin_port, TH_TIMEOUT_MS, &env->weir))
        fail_msg("admin port %d not open", env->admin_port);
}

static bool readyz_is_503(void *arg)
{
    th_env_t *env = arg;
    th_resp_t r = {0};
    bool yes = th_try_get(env->admin_port, "/readyz", &r) == 0 && r.status == 503;
    th_resp_free(&r);
    return yes;
}

/* --- 1. streaming with bounded memory -------------------------------------------------------------------------- */

/* A 1 GiB chunked body, a 1 GiB Content-Length body and a 1 GiB response through one client connection: every
 * byte arrives in order, and weir's peak resident memory stays under 64 MiB. */
static void test_stream_1gib_bounded_memory(void **state)
{
    th_env_t *env = *state;
    th_start_stable(env, NULL);
    const uint64_t n = BULK_BYTES;
    long base_kb = proc_kb(env->weir.pid, "VmRSS:");
    th_conn_t *c = th_conn_open(env->port);

    sums_t sent = {0};
    assert_int_equal(th_conn_sendf(c, "POST /sink HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"), 0);
    send_pattern_body(c, n, true, now_ms() + bulk_ms(), &sent);
    expect_sink(c, &sent, "chunked upload");

    memset(&sent, 0, sizeof(sent));
    assert_int_equal(
        th_conn_sendf(c, "POST /sink HTTP/1.1\r\nHost: test\r\nContent-Length: %llu\r\n\r\n", (unsigned long long)n),
        0);
    send_pattern_body(c, n, false, now_ms() + bulk_ms(), &sent);
    expect_sink(c, &sent, "Content-Length upload");

    assert_int_equal(th_conn_sendf(c, "GET /bytes/%llu HTTP/1.1\r\nHost: test\r\n\r\n", (unsigned long long)n), 0);
    int64_t deadline = now_ms() + bulk_ms();
    rhead_t h;
    assert_int_equal(read_head(c, &h, deadline), 0);
    assert_int_equal(h.status, 200);
    uint64_t got;
    int rc = read_pattern(c, n, 0, deadline, &got);
    if (rc != 0)
        fail_msg("download of %llu bytes: %s after %llu bytes", (unsigned long long)n,
                 rc == -3 ? "wrong byte" : "closed or timed out", (unsigned long long)got);

    /* the connection is still usable after 3 bulk transfers */
    th_resp_t r = {0};
    th_exchange(c, GET_REQ("/"), &r);
    assert_int_equal(r.status, 200);

    long hwm = proc_kb(env->weir.pid, "VmHWM:");
    print_message("weir: VmRSS at rest %ld kB, VmHWM after 3 x %llu MiB %ld kB\n", base_kb,
                  (unsigned long long)(n / MIB), hwm);
    if (sanitized() ? hwm - base_kb >= RSS_BOUND_KB : hwm >= RSS_BOUND_KB)
        fail_msg("weir's peak RSS %ld kB (at rest %ld kB) is past the %d kB bound", hwm, base_kb, RSS_BOUND_KB);
    th_weir_stop(env);
}

/* A client that reads a 256 MiB response at about 1 MB/s: weir holds back the upstream instead of buffering, so its
 * resident memory does not grow with the response. */
static void test_slow_reader_bounded_memory(void **state)
{
    th_env_t *env = *state;
    th_start_stable(env, NULL);
    th_conn_t *c = th_conn_open(env->port);
    int small = 65536;
    setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    long base_kb = proc_kb(env->weir.pid, "VmRSS:");
    const uint64_t total = 256 * MIB;
    assert_int_equal(th_conn_sendf(c, "GET /bytes/%llu HTTP/1.1\r\nHost: test\r\n\r\n", (unsigned long long)total), 0);
    rhead_t h;
    assert_int_equal(read_head(c, &h, now_ms() + TH_TIMEOUT_MS), 0);
    assert_int_equal(h.status, 200);

    /* 60 steps of 50 ms, 50 kB each: 3 s at 1 MB/s */
    uint64_t pos = 0;
    long max_kb = 0;
    for (int step = 0; step < 60; step++) {
        uint64_t got;
        int rc = read_pattern(c, 50000, pos, now_ms() + TH_TIMEOUT_MS, &got);
        if (rc != 0)
            fail_msg("slow read: %s at byte %llu", rc == -3 ? "wrong byte" : "closed or timed out",
                     (unsigned long long)(pos + got));
        pos += got;
        long kb = proc_kb(env->weir.pid, "VmRSS:");
        if (kb > max_kb)
            max_kb = kb;
        nap_ms(50);
    }
    print_message("weir: VmRSS at rest %ld kB, at most %ld kB while a client read %llu of %llu MiB slowly\n", base_kb,
                  max_kb, (unsigned long long)(pos / MIB), (unsigned long long)(total / MIB));
    if (sanitized() ? max_kb - base_kb >= RSS_BOUND_KB : max_kb >= RSS_BOUND_KB)
        fail_msg("weir's RSS reached %ld kB (at rest %ld kB) under a slow reader: it buffers the response", max_kb,
                 base_kb);
    th_conn_close(c);
    /* weir keeps serving */
    th_resp_t r = {0};
    th_get(env->port, "/", &r);
    assert_int_equal(r.status, 200);
    th_weir_stop(env);
}

/* A client uploading as fast as it can to an upstream that reads at about 1 MB/s: weir holds back the client. */
static void test_slow_upstream_reader_bounded_memory(void **state)
{
    th_env_t *env = *state;
    /* When the client goes, megabytes of its upload can still sit in socket buffers that weir drains into the slow
     * upstream: the request is in flight, and SIGTERM rightly waits for it up to drain-timeout. A short one keeps
     * the stop below the harness's bound; this test is about memory, not draining. */
    int u = th_start_stable(env, "--drain-timeout", "1s", NULL);
    th_conn_t *c = th_conn_open(env->port);
    long base_kb = proc_kb(env->weir.pid, "VmRSS:");
    const uint64_t total = 256 * MIB;
    assert_int_equal(th_conn_sendf(c, "POST /slowsink/1000000 HTTP/1.1\r\nHost: test\r\nContent-Length: %llu\r\n\r\n",
                                   (unsigned long long)total),
                     0);
    assert_true(th_upstream_wait_stat(env, u, "/__inflight", 1));
    uint64_t off = 0;
    long max_kb = 0;
    int64_t end = now_ms() + 3000;
    while (now_ms() < end && off < total) {
        struct pollfd pf = {.fd = c->fd, .events = POLLOUT};
        if (poll(&pf, 1, 50) > 0) {
            size_t want = total - off < PAT_SPAN ? (size_t)(total - off) : PAT_SPAN;
            ssize_t k = send(c->fd, pat() + off % 251, want, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (k < 0 && errno != EAGAIN && errno != EINTR)
                fail_msg("upload: send failed after %llu bytes: %s", (unsigned long long)off, strerror(errno));
            if (k > 0)
                off += (uint64_t)k;
        }
        long kb = proc_kb(env->weir.pid, "VmRSS:");
        if (kb > max_kb)
            max_kb = kb;
    }
    print_message("weir: VmRSS at rest %ld kB, at most %ld kB while a client pushed %llu MiB at a slow upstream\n",
                  base_kb, max_kb, (unsigned long long)(off / MIB));
    if (sanitized() ? max_kb - base_kb >= RSS_BOUND_KB : max_kb >= RSS_BOUND_KB)
        fail_msg("weir's RSS reached %ld kB (at rest %ld kB) with a slow upstream: it buffers the request body", max_kb,
                 base_kb);
    th_conn_close(c);
    th_resp_t r = {0};
    th_get(env->port, "/", &r);
    assert_int_equal(r.status, 200);
    th_weir_stop(env);
}

/* --- 2. pipelining, 100-continue, trailers --------------------------------------------------------------------- */

static void test_pipelining_chunked_post_and_head(void **state)
{
    th_env_t *env = *state;
    int u = th_start_stable(env, NULL);
    th_conn_t *c = th_conn_open(env->port);
    th_resp_t r = {0};
    /* one send: the whole pipeline is in the first packet */
    assert_int_equal(th_conn_sendf(c, "%s%s%s%s%s", GET_REQ("/status/201"),
                                   "POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
                                   "5\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n",
                                   "HEAD /bytes/100 HTTP/1.1\r\nHost: test\r\n\r\n",
                                   "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 4\r\n\r\nping",
                                   GET_REQ("/chunked/5000")),
                     0);
    assert_int_equal(th_conn_read_response(c, &r, false, TH_TIMEOUT_MS), 0);
    assert_int_equal(r.status, 201);
    assert_string_equal(r.body, "201\n");

    assert_int_equal(th_conn_read_response(c, &r, false, TH_TIMEOUT_MS), 0);
    assert_int_equal(r.status, 200);
    size_t n;
    const char *b = th_echo_body(&r, &n);
    assert_non_null(b);
    assert_int_equal(n, 11);
    assert_memory_equal(b, "hello world", 11);
    char line[64];
    assert_true(th_echo_request_line(&r, line, sizeof(line)));
    assert_string_equal(line, "POST /echo HTTP/1.1");

    assert_int_equal(th_conn_read_response(c, &r, true, TH_TIMEOUT_MS), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(th_header(&r, "content-length"), "100");
    assert_int_equal(r.body_len, 0);

    assert_int_equal(th_conn_read_response(c, &r, false, TH_TIMEOUT_MS), 0);
    assert_int_equal(r.status, 200);
    b = th_echo_body(&r, &n);
    assert_non_null(b);
    assert_int_equal(n, 4);
    assert_memory_equal(b, "ping", 4);
    assert_true(th_echo_request_line(&r, line, sizeof(line)));
    assert_string_equal(line, "POST /echo HTTP/1.1");

    assert_int_equal(th_conn_read_response(c, &r, false, TH_TIMEOUT_MS), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 5000);
    assert_true(th_pattern_ok(r.body, r.body_len));

    /* nothing stray after the HEAD response or the last one: the connection goes on */
    assert_false(th_conn_closed_now(c));
    assert_int_equal(c->len - c->off, 0);
    th_exchange(c, GET_REQ("/status/202"), &r);
    assert_int_equal(r.status, 202);
    assert_int_equal(th_upstream_stat(env, u, "/__count"), 6);
    th_weir_stop(env);
}

/* curl waits for the 100 before sending the body; with --max-time 10 equal to the wait, it only completes when the
 * upstream's 100 reaches it. */
static void test_expect_continue_curl(void **state)
{
    th_env_t *env = *state;
    th_start_stable(env, NULL);
    size_t n = 200000;
    char *body = th_alloc(n + 1);
    memcpy(body, pat(), n);
    body[n] = '\0';
    char *path = th_fmt("%s/body", env->dir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(body, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
    th_resp_t r = {0};
    char *url = th_fmt("http://127.0.0.1:%d/echo", env->port);
    char *data = th_fmt("@%s", path);
    int rc =
        th_curl(env, &r, "-H", "Expect: 100-continue", "--expect100-timeout", "10", "--data-binary", data, url, NULL);
    if (rc != 0)
        fail_msg("curl with Expect: 100-continue exited %d", rc);
    assert_int_equal(r.status, 200);
    size_t got;
    const char *echoed = th_echo_body(&r, &got);
    assert_non_null(echoed);
    assert_int_equal(got, n);
    assert_memory_equal(echoed, body, n);
    char v[64];
    assert_true(th_echo_header(&r, "expect", 0, v, sizeof(v)));
    assert_string_equal(v, "100-continue");
    th_weir_stop(env);
}

/* On a raw socket: the 100 that arrives is the upstream's (it carries x-upstream), before any final response and
 * before the client sent a body byte; for a Content-Length and a chunked body. */
static void test_expect_continue_raw(void **state)
{
    th_env_t *env = *state;
    th_start_stable(env, NULL);
    th_conn_t *c = th_conn_open(env->port);
    th_resp_t r = {0};
    for (int chunked = 0; chunked < 2; chunked++) {
        const size_t n = 100000;
        if (chunked)
            assert_int_equal(th_conn_sendf(c, "POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n"
                                              "Expect: 100-continue\r\n\r\n"),
                             0);
        else
            assert_int_equal(th_conn_sendf(c,
                                           "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: %zu\r\n"
                                           "Expect: 100-continue\r\n\r\n",
                                           n),
                             0);
        assert_int_equal(th_conn_read_response_any(c, &r, false, TH_TIMEOUT_MS), 0);
        if (r.status != 100)
            fail_msg("first response to an Expect: 100-continue request is %d, want the interim 100", r.status);
        assert_non_null(th_header(&r, "x-upstream"));
        assert_string_equal(th_header(&r, "x-upstream"), "stable");
        assert_int_equal(c->len - c->off, 0); /* nothing else yet */
        if (chunked)
            assert_int_equal(th_conn_sendf(c, "%zx\r\n%.*s\r\n0\r\n\r\n", n, (int)n, pat()), 0);
        else
            assert_int_equal(th_conn_send(c, pat(), n), 0);
        assert_int_equal(th_conn_read_response(c, &r, false, TH_TIMEOUT_MS), 0);
        assert_int_equal(r.status, 200);
        assert_int_equal(r.ninterim, 0);
        size_t got;
        const char *echoed = th_echo_body(&r, &got);
        assert_non_null(echoed);
        assert_int_equal(got, n);
        assert_true(th_pattern_ok(echoed, got));
    }
    th_weir_stop(env);
}

static void test_request_trailers_reach_upstream(void **state)
{
    th_env_t *env = *state;
    th_start_stable(env, NULL);
    th_conn_t *c = th_conn_open(env->port);
    th_resp_t r = {0};
    th_exchange(c,
                "POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
                "4\r\nwiki\r\n5\r\npedia\r\n0\r\nX-Sum: 42\r\nX-Other: yes\r\n\r\n",
                &r);
    assert_int_equal(r.status, 200);
    size_t n;
    const char *b = th_echo_body(&r, &n);
    assert_non_null(b);
    assert_int_equal(n, 9);
    assert_memory_equal(b, "wikipedia", 9);
    int k = th_header_count(&r, "x-echo-trailer");
    if (k != 2)
        fail_msg("the upstream received %d trailer lines, want 2 (X-Sum, X-Other)", k);
    int seen = 0;
    for (int i = 0; i < r.nheaders; i++)
        if (strcasecmp(r.hname[i], "x-echo-trailer") == 0)
            seen |= (strcmp(r.hvalue[i], "X-Sum: 42") == 0) | (strcmp(r.hvalue[i], "X-Other: yes") == 0) << 1;
    assert_int_equal(seen, 3);
    /* the connection goes on after the trailers */
    th_exchange(c, GET_REQ("/"), &r);
    assert_int_equal(r.status, 200);
    th_weir_stop(env);
}

/* Reads a chunked body of the pattern and its trailer section into <trailers> (lines with CRLF). */
static void read_chunked_with_trailers(th_conn_t *c, size_t want, char *trailers, size_t cap)
{
    int64_t deadline = now_ms() + TH_TIMEOUT_MS;
    uint64_t pos = 0;
    for (;;) {
        char *eol;
        while ((eol = memmem(c->buf + c->off, c->len - c->off, "\r\n", 2)) == NULL)
            if (cfill(c, deadline) <= 0)
                fail_msg("chunked response ended at body byte %llu", (unsigned long long)pos);
        char *e;
        unsigned long long size = strtoull(c->buf + c->off, &e, 16);
        if (e == c->buf + c->off)
            fail_msg("bad chunk size line");
        c->off = (size_t)(eol - c->buf) + 2;
        if (size == 0)
            break;
        uint64_t got;
        if (read_pattern(c, size, pos, deadline, &got) != 0)
            fail_msg("chunk at body byte %llu: bad or short", (unsigned long long)pos);
        pos += size;
        while (c->len - c->off < 2)
            if (cfill(c, deadline) <= 0)
                fail_msg("no CRLF after a chunk");
        assert_memory_equal(c->buf + c->off, "\r\n", 2);
        c->off += 2;
    }
    assert_int_equal(pos, want);
    size_t tl = 0;
    for (;;) {
        char *eol;
        while ((eol = memmem(c->buf + c->off, c->len - c->off, "\r\n", 2)) == NULL)
            if (cfill(c, deadline) <= 0)
                fail_msg("trailer section not terminated");
        size_t ll = (size_t)(eol - (c->buf + c->off));
        if (ll == 0) {
            c->off += 2;
            break;
        }
        assert_true(tl + ll + 3 < cap);
        memcpy(trailers + tl, c->buf + c->off, ll + 2);
        tl += ll + 2;
        c->off += ll + 2;
    }
    trailers[tl] = '\0';
}

static void test_response_trailers_reach_client(void **state)
{
    th_env_t *env = *state;
    th_start_stable(env, NULL);
    th_conn_t *c = th_conn_open(env->port);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(th_conn_sendf(c, GET_REQ("/trailers/100000")), 0);
        rhead_t h;
        assert_int_equal(read_head(c, &h, now_ms() + TH_TIMEOUT_MS), 0);
        assert_int_equal(h.status, 200);
        char v[64];
        assert_true(head_get(&h, "transfer-encoding", v, sizeof(v)));
        assert_string_equal(v, "chunked");
        char tr[1024];
        read_chunked_with_trailers(c, 100000, tr, sizeof(tr));
        sums_t s = {0};
        sums_add(&s, pat(), 100000);
        char *want = th_fmt("X-Trailer-Count: 100000\r\nX-Trailer-Sum: %llu\r\n", s.b);
        if (strcmp(tr, want) != 0)
            fail_msg("trailers at the client: \"%s\", want \"%s\"", tr, want);
    }
    /* nothing followed the trailer section, and the connection goes on */
    assert_int_equal(c->len - c->off, 0);
    th_resp_t r = {0};
    th_exchange(c, GET_REQ("/"), &r);
    assert_int_equal(r.status, 200);
    th_weir_stop(env);
}

/* --- 3. Upgrade ------------------------------------------------------------------------------------------------ */

/* Sends the upgrade request (with <early> bytes of the new protocol right behind it) and checks the 101. */
static th_conn_t *open_tunnel(th_env_t *env, const char *extra, const char *early)
{
    th_conn_t *c = th_conn_open(env->port);
    assert_int_equal(th_conn_sendf(c,
                                   "GET /upgrade HTTP/1.1\r\nHost: test\r\nUpgrade: echo\r\nConnection: Upgrade\r\n"
                                   "%s\r\n%s",
                                   extra, early),
                     0);
    rhead_t h;
    if (read_head(c, &h, now_ms() + TH_TIMEOUT_MS) < 0)
        fail_msg("no response head to the upgrade request");
    if (h.status != 101)
        fail_msg("upgrade request answered %d: %s", h.status, h.text);
    char v[128];
    assert_true(head_get(&h, "upgrade", v, sizeof(v)));
    assert_string_equal(v, "echo");
    assert_true(head_get(&h, "connection", v, sizeof(v)));
    assert_non_null(th_strcasestr(v, "upgrade"));
    assert_true(head_get(&h, "x-upstream", v, sizeof(v)));
    return c;
}

/* Checks that the next <n> tunnel bytes are the complement of <src>. Returns how many came before a close. */
static size_t read_complement(th_conn_t *c, const char *src, size_t n, int64_t deadline)
{
    size_t got = 0;
    while (got < n) {
        if (c->off == c->len && cfill(c, deadline) <= 0)
            return got;
        while (c->off < c->len && got < n) {
            if ((char)~c->buf[c->off] != src[got])
                fail_msg("tunnel byte %zu: got 0x%02x, want the complement of 0x%02x", got,
                         (unsigned char)c->buf[c->off], (unsigned char)src[got]);
            c->off++;
            got++;
        }
    }
    return got;
}

static void test_upgrade_tunnel(void **state)
{
    th_env_t *env = *state;
    int u = th_start_stable(env, NULL);
    /* five bytes of the new protocol travel in the request's packet, before the 101 */
    th_conn_t *c = open_tunnel(env, "", "early");
    const size_t total = 1000000;
    char *src = th_alloc(total + 5);
    memcpy(src, "early", 5);
    memcpy(src + 5, pat(), total);
    int64_t deadline = now_ms() + 30000;
    size_t sent = 5, recvd = 0;
    /* send in 16 KiB pieces, reading back as we go, so neither direction has to hold the whole megabyte */
    while (recvd < total + 5) {
        if (now_ms() > deadline)
            fail_msg("tunnel: %zu of %zu bytes came back in time", recvd, total + 5);
        if (sent < total + 5) {
            size_t k = total + 5 - sent < 16384 ? total + 5 - sent : 16384;
            if (th_conn_send(c, src + sent, k) < 0)
                fail_msg("tunnel: send failed after %zu bytes: %s", sent, strerror(errno));
            sent += k;
        }
        if (c->off == c->len) {
            ssize_t f = cfill(c, sent < total + 5 ? now_ms() : deadline);
            if (f == 0 || f == -2)
                fail_msg("tunnel %s after %zu bytes came back", f == 0 ? "closed" : "reset", recvd);
        }
        size_t k = c->len - c->off;
        if (k > total + 5 - recvd)
            k = total + 5 - recvd;
        size_t r = read_complement(c, src + recvd, k, deadline);
        assert_int_equal(r, k);
        recvd += k;
    }
    /* the client closes its side: the tunnel ends and weir closes the connection cleanly, with no byte more */
    assert_int_equal(shutdown(c->fd, SHUT_WR), 0);
    ssize_t rc = cfill(c, now_ms() + TH_TIMEOUT_MS);
    if (rc != 0)
        fail_msg("after the client's close the tunnel gave %s", rc > 0     ? "more bytes"
                                                                : rc == -2 ? "a reset"
                                                                           : "no close");
    assert_int_equal(th_upstream_stat(env, u, "/__count"), 1);
    /* weir serves on */
    th_resp_t r = {0};
    th_get(env->port, "/", &r);
    assert_int_equal(r.status, 200);
    th_weir_stop(env);
}

static void test_upgrade_upstream_closes(void **state)
{
    th_env_t *env = *state;
    th_start_stable(env, NULL);
    th_conn_t *c = open_tunnel(env, "X-Close-After: 1000\r\n", "");
    assert_int_equal(th_conn_send(c, pat(), 4000), 0);
    size_t got = read_complement(c, pat(), 1000, now_ms() + TH_TIMEOUT_MS);
    assert_int_equal(got, 1000);
    ssize_t rc = cfill(c, now_ms() + TH_TIMEOUT_MS);
    if (rc != 0)
        fail_msg("after the upstream closed the tunnel, the client got %s", rc > 0     ? "more bytes"
                                                                            : rc == -2 ? "a reset"
                                                                                       : "no close");
    th_weir_stop(env);
}

/* --- 4. smuggling and bad framing ------------------------------------------------------------------------------ */

typedef struct bad_req_s {
    const char *what;
    const char *raw;
    size_t len;
    int status;  /* 400 or 501 */
    int status2; /* another acceptable status, or 0 */
} bad_req_t;

#define BAD(what, raw, st, st2)                                                                                        \
    {                                                                                                                  \
        what, raw, sizeof(raw) - 1, st, st2                                                                            \
    }

static void test_smuggling_rejected(void **state)
{
    th_env_t *env = *state;
    int u = th_start_stable(env, NULL);
    static const bad_req_t bad[] = {
        BAD("TE then CL",
            "POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"
            "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: test\r\n\r\n",
            400, 0),
        BAD("CL 0 with TE",
            "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n"
            "5\r\nhello\r\n0\r\n\r\n",
            400, 0),
        BAD("two differing CLs",
            "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nContent-Length: 50\r\n\r\n"
            "hello",
            400, 0),
        BAD("differing CLs in one list", "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 5, 50\r\n\r\nhello", 400,
            0),
        BAD("negative CL", "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: -5\r\n\r\nhello", 400, 0),
        BAD("chunk size not hex",
            "POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
            "xyz\r\nhello\r\n0\r\n\r\n",
            400, 0),
        BAD("negative chunk size",
            "POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
            "-5\r\nhello\r\n0\r\n\r\n",
            400, 0),
        BAD("chunk size overflow",
            "POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
            "10000000000000005\r\nhello\r\n0\r\n\r\n",
            400, 0),
        BAD("chunk data longer than its size",
            "POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
            "3\r\nhello\r\n0\r\n\r\n",
            400, 0),
        BAD("obs-fold", "GET / HTTP/1.1\r\nHost: test\r\nX-Folded: a\r\n b\r\n\r\n", 400, 0),
        BAD("obs-fold in Transfer-Encoding",
            "POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding:\r\n chunked\r\n\r\n"
            "5\r\nhello\r\n0\r\n\r\n",
            400, 0),
        BAD("space before colon", "GET / HTTP/1.1\r\nHost: test\r\nX-Name : v\r\n\r\n", 400, 0),
        BAD("space before colon of CL", "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length : 5\r\n\r\nhello", 400, 0),
        BAD("TE gzip", "POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: gzip\r\n\r\n", 501, 0),
        BAD("TE gzip, chunked",
            "POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
            "5\r\nhello\r\n0\r\n\r\n",
            501, 0),
        BAD("TE chunked, gzip",
            "POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"
            "5\r\nhello\r\n0\r\n\r\n",
            400, 501),
        BAD("garbage request line", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 hello\r\n\r\n", 400, 0),
        BAD("no version", "GET /\r\nHost: test\r\n\r\n", 400, 0),
        BAD("bad version", "GET / HTTX/1.1\r\nHost: test\r\n\r\n", 400, 0),
        BAD("NUL in header value", "GET / HTTP/1.1\r\nHost: test\r\nX-A: a\0b\r\n\r\n", 400, 0),
        BAD("NUL in header name", "GET / HTTP/1.1\r\nHost: test\r\nX\0A: b\r\n\r\n", 400, 0),
        BAD("bare CR in header value", "GET / HTTP/1.1\r\nHost: test\r\nX-A: a\rb\r\n\r\n", 400, 0),
    };
    long before = th_upstream_stat(env, u, "/__count");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        th_conn_t *c = th_conn_open(env->port);
        th_resp_t r = {0};
        if (th_conn_send(c, bad[i].raw, bad[i].len) < 0 || th_conn_read_response(c, &r, false, TH_TIMEOUT_MS) < 0)
            fail_msg("%s: no response", bad[i].what);
        if (r.status != bad[i].status && r.status != bad[i].status2)
            fail_msg("%s: status %d, want %d", bad[i].what, r.status, bad[i].status);
        th_assert_own_response(&r, r.status);
        if (!th_conn_wait_closed(c, TH_TIMEOUT_MS))
            fail_msg("%s: the connection stayed open after %d", bad[i].what, r.status);
        long after = th_upstream_stat(env, u, "/__count");
        if (after != before)
            fail_msg("%s: the upstream saw %ld request(s)", bad[i].what, after - before);
        th_conn_close(c);
    }
    th_resp_t r = {0};
    th_get(env->port, "/", &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(th_upstream_stat(env, u, "/__count"), before + 1);
    th_weir_stop(env);
}

/* 300 connections at once send random bytes (some behind a valid request line): each gets a 400 (or 408, 431, 501
 * when the bytes happen to look like the start of a header block) and is closed, none reaches the upstream, and the
 * next normal request is served. */
static void test_random_bytes_300_connections(void **state)
{
    th_env_t *env = *state;
    int u = th_start_stable(env, "--header-timeout", "1s", NULL);
    enum { N = 300 };
    static const char *const prefix[] = {"", "GET / HTTP/1.1\r\n", "GET / HTTP/1.1\r\nHost: test\r\nX-R: "};
    th_conn_t **cs = th_alloc(N * sizeof(*cs));
    unsigned seed = 20240229;
    char buf[4096];
    for (int i = 0; i < N; i++)
        cs[i] = th_conn_open(env->port);
    for (int i = 0; i < N; i++) {
        size_t pl = strlen(prefix[i % 3]);
        memcpy(buf, prefix[i % 3], pl);
        size_t n = 1 + (size_t)(rand_r(&seed) % 2048);
        for (size_t k = 0; k < n; k++)
            buf[pl + k] = (char)(rand_r(&seed) & 0xff);
        th_conn_send(cs[i], buf, pl + n); /* weir may have answered and closed already: that is fine */
    }
    int count[4] = {0}; /* 400, 408, 431, 501 */
    int64_t deadline = now_ms() + 3 * TH_TIMEOUT_MS;
    for (int i = 0; i < N; i++) {
        th_resp_t r = {0};
        int left = (int)(deadline - now_ms());
        if (th_conn_read_response(cs[i], &r, false, left > 0 ? left : 0) < 0)
            fail_msg("connection %d of random bytes: no complete answer (%zu bytes came)", i, cs[i]->len);
        switch (r.status) {
        case 400:
            count[0]++;
            break;
        case 408:
            count[1]++;
            break;
        case 431:
            count[2]++;
            break;
        case 501:
            count[3]++;
            break;
        default:
            fail_msg("connection %d of random bytes got %d", i, r.status);
        }
        if (!th_conn_wait_closed(cs[i], TH_TIMEOUT_MS))
            fail_msg("connection %d of random bytes left open after %d", i, r.status);
        th_resp_free(&r);
        th_conn_close(cs[i]);
    }
    print_message("random bytes on %d connections: %d x 400, %d x 408, %d x 431, %d x 501\n", N, count[0], count[1],
                  count[2], count[3]);
    th_resp_t r = {0};
    th_get(env->port, "/", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello from stable\n");
    assert_int_equal(th_upstream_stat(env, u, "/__count"), 1);
    th_weir_stop(env);
}

/* --- 5. timeouts and max-connections --------------------------------------------------------------------------- */

/* A client trickling its header block one byte per 50 ms gets a 408 and a close after header-timeout. */
static void test_slowloris_408(void **state)
{
    th_env_t *env = *state;
    int u = th_start_stable(env, SHORT_TIMEOUTS, NULL);
    th_conn_t *c = th_conn_open(env->port);
    assert_int_equal(th_conn_sendf(c, "GET / HTTP/1.1\r\nHost: test\r\n"), 0);
    static const char trickle[] =
        "X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    size_t i;
    /* up to 10 s of trickling; the answer must come long before the header block is complete */
    for (i = 0; i < sizeof(trickle) - 5; i++) {
        struct pollfd pf = {.fd = c->fd, .events = POLLIN};
        if (poll(&pf, 1, 50) > 0)
            break;
        if (th_conn_send(c, trickle + i, 1) < 0)
            break;
    }
    if (i == sizeof(trickle) - 5)
        fail_msg("no answer after %zu trickled bytes over %zu ms with header-timeout 300ms", i, i * 50);
    th_resp_t r = {0};
    if (th_conn_read_response(c, &r, false, TH_TIMEOUT_MS) < 0)
        fail_msg("header-timeout: the connection closed without a complete 408");
    th_assert_own_response(&r, 408);
    assert_true(says_close(&r));
    assert_true(th_conn_wait_closed(c, TH_TIMEOUT_MS));
    assert_int_equal(th_upstream_stat(env, u, "/__count"), 0);

    /* a connection that sends nothing at all is closed too */
    th_conn_t *quiet = th_conn_open(env->port);
    assert_true(th_conn_wait_closed(quiet, TH_TIMEOUT_MS));
    th_weir_stop(env);
}

static void test_upstream_timeout_504(void **state)
{
    th_env_t *env = *state;
    th_start_stable(env, SHORT_TIMEOUTS, NULL);
    th_conn_t *c = th_conn_open(env->port);
    th_resp_t r = {0};
    th_exchange(c, GET_REQ("/hang"), &r);
    th_assert_own_response(&r, 504);
    /* an upstream that answers within upstream-timeout is not cut off */
    th_conn_t *d = th_conn_open(env->port);
    th_exchange(d, GET_REQ("/slow/50"), &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello from stable\n");
    th_weir_stop(env);
}

static void test_idle_keepalive_closed(void **state)
{
    th_env_t *env = *state;
    th_start_stable(env, SHORT_TIMEOUTS, NULL);
    th_conn_t *c = th_conn_open(env->port);
    th_resp_t r = {0};
    th_exchange(c, GET_REQ("/"), &r);
    assert_int_equal(r.status, 200);
    assert_false(says_close(&r));
    assert_false(th_conn_closed_now(c)); /* kept alive at first */
    if (!th_conn_wait_closed(c, TH_TIMEOUT_MS))
        fail_msg("idle keep-alive connection still open %d ms after its response (idle-timeout 500ms)", TH_TIMEOUT_MS);
    assert_int_equal(c->len - c->off, 0); /* closed without sending anything */
    th_weir_stop(env);
}

static void test_connect_timeout(void **state)
{
    th_env_t *env = *state;
    int filler;
    int hole = th_blackhole(&filler);
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    getsockname(hole, (struct sockaddr *)&sa, &sl);
    char *dead = th_fmt("127.0.0.1:%d", ntohs(sa.sin_port));
    th_weir_startl(env, "--stable", dead, SHORT_TIMEOUTS, NULL);
    /* the only endpoint never answers the SYN: 502 after connect-timeout, well before the kernel gives up (> 1 min) */
    th_conn_t *c = th_conn_open(env->port);
    th_resp_t r = {0};
    th_exchange(c, GET_REQ("/"), &r);
    th_assert_own_response(&r, 502);
    char *log = th_slurp(env->weir.err);
    if (strstr(log, th_fmt("connect %s: timed out", dead)) == NULL) {
        th_dump_file(env->weir.err);
        fail_msg("weir's log does not say the connect timed out");
    }
    th_weir_stop(env);
    close(filler);
    close(hole);
}

static void test_connect_timeout_next_endpoint(void **state)
{
    th_env_t *env = *state;
    int filler;
    int hole = th_blackhole(&filler);
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    getsockname(hole, (struct sockaddr *)&sa, &sl);
    char *dead = th_fmt("127.0.0.1:%d", ntohs(sa.sin_port));
    int u = th_upstream_start(env, "stable");
    th_weir_startl(env, "--stable", dead, "--stable", env->up[u].addr, SHORT_TIMEOUTS, NULL);
    /* whichever endpoint round-robin picks first, every request is served by the live one */
    for (int i = 0; i < 4; i++) {
        th_resp_t r = {0};
        th_get(env->port, "/", &r);
        if (r.status != 200)
            fail_msg("request %d: %d with one endpoint blackholed", i, r.status);
        assert_string_equal(th_header(&r, "x-upstream"), "stable");
    }
    th_weir_stop(env);
    close(filler);
    close(hole);
}

static void test_max_connections(void **state)
{
    th_env_t *env = *state;
    int u = th_start_stable(env, "--max-connections", "2", "--workers", "1", NULL);
    th_resp_t r = {0};
    th_conn_t *a = th_conn_open(env->port);
    th_conn_t *b = th_conn_open(env->port);
    th_exchange(a, GET_REQ("/"), &r);
    th_exchange(b, GET_REQ("/"), &r);
    /* the kernel completes the third connection (backlog), but weir does not take it */
    th_conn_t *c = th_conn_open(env->port);
    assert_int_equal(th_conn_sendf(c, GET_REQ("/status/203")), 0);
    /* ten round trips through weir's loop on a: had it accepted c, c's request would have gone out meanwhile */
    for (int i = 0; i < 10; i++) {
        th_exchange(a, GET_REQ("/"), &r);
        assert_int_equal(r.status, 200);
    }
    struct pollfd pf = {.fd = c->fd, .events = POLLIN};
    if (poll(&pf, 1, 0) != 0)
        fail_msg("a third connection was served with --max-connections 2");
    assert_int_equal(th_upstream_stat(env, u, "/__count"), 12);
    /* one of the first two goes: the third is taken and served */
    th_conn_close(b);
    if (th_conn_read_response(c, &r, false, TH_TIMEOUT_MS) < 0)
        fail_msg("the third connection was not served after one of the first two closed");
    assert_int_equal(r.status, 203);
    th_weir_stop(env);
}

/* --- 6. upstream failures mid-flight, clients going away --------------------------------------------------------- */

static void test_upstream_closes_before_response_502(void **state)
{
    th_env_t *env = *state;
    int u = th_start_stable(env, NULL);
    th_conn_t *c = th_conn_open(env->port);
    th_resp_t r = {0};
    /* with a body it cannot be retried: exactly one attempt */
    th_exchange(c, "POST /drop HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\n\r\nabc", &r);
    th_assert_own_response(&r, 502);
    assert_int_equal(th_upstream_stat(env, u, "/__count"), 1);
    th_conn_t *d = th_conn_open(env->port);
    th_exchange(d, GET_REQ("/reset"), &r);
    th_assert_own_response(&r, 502);
    th_resp_t ok = {0};
    th_get(env->port, "/", &ok);
    assert_int_equal(ok.status, 200);
    th_weir_stop(env);
}

/* The upstream resets after part of the body: the client sees the connection end before the announced length (or
 * the last chunk), never a short body presented as complete. */
static void test_upstream_reset_mid_body(void **state)
{
    th_env_t *env = *state;
    th_start_stable(env, NULL);
    static const char *const paths[] = {"/reset-after/100000", "/reset-after-chunked/100000"};
    for (int i = 0; i < 2; i++) {
        th_conn_t *c = th_conn_open(env->port);
        th_resp_t r = {0};
        assert_int_equal(th_conn_sendf(c, "GET %s HTTP/1.1\r\nHost: test\r\n\r\n", paths[i]), 0);
        int rc = th_conn_read_response(c, &r, false, TH_TIMEOUT_MS);
        if (rc == 0)
            fail_msg("%s: a complete response of %zu bytes reached the client", paths[i], r.body_len);
        if (!c->eof)
            fail_msg("%s: the client connection was left open after the upstream reset (status %d, %zu bytes)",
                     paths[i], r.status, r.body_len);
        assert_int_equal(r.status, 200);
        assert_true(r.body_len <= 100000);
        assert_true(th_pattern_ok(r.body, r.body_len));
        th_conn_close(c);
    }
    th_resp_t r = {0};
    th_get(env->port, "/", &r);
    assert_int_equal(r.status, 200);
    th_weir_stop(env);
}

/* A client that goes away mid-response, or before its response: the upstream connection that carried it is not
 * reused and weir keeps serving. The upstream holds the rest of each response back (the gate), so a connection
 * wrongly pooled would still be carrying it when the next request comes, and that request would get no answer. */
static void test_client_abort_not_reused(void **state)
{
    th_env_t *env = *state;
    int u = th_start_stable(env, NULL);
    th_resp_t r = {0};
    th_get(env->port, "/", &r); /* leaves one pooled upstream connection */
    assert_int_equal(th_upstream_stat(env, u, "/__conns"), 1);

    /* mid-response: half of the body came, the rest waits for the gate */
    th_conn_t *c = th_conn_open(env->port);
    assert_int_equal(th_conn_sendf(c, GET_REQ("/gated-bytes/1048576")), 0);
    rhead_t h;
    assert_int_equal(read_head(c, &h, now_ms() + TH_TIMEOUT_MS), 0);
    assert_int_equal(h.status, 200);
    uint64_t got;
    assert_int_equal(read_pattern(c, 1048576, 0, now_ms() + TH_TIMEOUT_MS, &got), 0);
    th_conn_close(c);
    if (th_try_get(env->port, "/", &r) < 0)
        fail_msg("no answer to the request after a client left mid-response: its upstream connection was reused?");
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello from stable\n");
    assert_int_equal(th_upstream_stat(env, u, "/__conns"), 2);
    th_get(env->up[u].port, "/__open", &r);
    assert_true(th_upstream_wait_stat(env, u, "/__inflight", 0));
    th_get(env->up[u].port, "/__shut", &r);

    /* before any response byte */
    th_conn_t *d = th_conn_open(env->port);
    assert_int_equal(th_conn_sendf(d, GET_REQ("/gate")), 0);
    assert_true(th_upstream_wait_stat(env, u, "/__inflight", 1));
    th_conn_close(d);
    for (int i = 0; i < 3; i++) {
        if (th_try_get(env->port, "/", &r) < 0)
            fail_msg("no answer to request %d after a client left before its response", i);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, "hello from stable\n");
    }
    assert_int_equal(th_upstream_stat(env, u, "/__conns"), 3);
    th_get(env->up[u].port, "/__open", &r);
    assert_true(th_upstream_wait_stat(env, u, "/__inflight", 0));
    th_weir_stop(env);
}

/* --- 7. drain and SIGHUP ------------------------------------------------------------------------------------- */

/* SIGTERM with a request waiting for its response and another still uploading its body: /readyz says 503, both
 * complete with Connection: close, and weir exits 0. */
static void test_drain_inflight_connection_close(void **state)
{
    th_env_t *env = *state;
    int u = th_start_stable(env, NULL);
    wait_admin(env);
    th_conn_t *a = th_conn_open(env->port);
    assert_int_equal(th_conn_sendf(a, GET_REQ("/gate")), 0);
    th_conn_t *b = th_conn_open(env->port);
    const size_t n = 1000000;
    assert_int_equal(th_conn_sendf(b, "POST /sink HTTP/1.1\r\nHost: test\r\nContent-Length: %zu\r\n\r\n", n), 0);
    sums_t s = {0};
    sums_add(&s, pat(), n);
    assert_int_equal(th_conn_send(b, pat(), n / 2), 0);
    assert_true(th_upstream_wait_stat(env, u, "/__inflight", 2));

    assert_int_equal(kill(env->weir.pid, SIGTERM), 0);
    assert_true(th_poll(readyz_is_503, env, TH_TIMEOUT_MS));

    assert_int_equal(th_conn_send(b, pat() + n / 2, n - n / 2), 0);
    th_resp_t r = {0};
    assert_int_equal(th_conn_read_response(b, &r, false, TH_TIMEOUT_MS), 0);
    assert_int_equal(r.status, 200);
    char *want = th_fmt("%llu %llu %llu\n", s.count, s.a, s.b);
    assert_string_equal(r.body, want);
    if (!says_close(&r))
        fail_msg("a response completed during the drain lacks Connection: close");
    assert_true(th_conn_wait_closed(b, TH_TIMEOUT_MS));

    assert_true(th_wait_exit(&env->weir, 0) < 0); /* still waiting for a */
    th_get(env->up[u].port, "/__open", &r);
    assert_int_equal(th_conn_read_response(a, &r, false, TH_TIMEOUT_MS), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello from stable\n");
    if (!says_close(&r))
        fail_msg("the in-flight response completed during the drain lacks Connection: close");
    assert_true(th_conn_wait_closed(a, TH_TIMEOUT_MS));
    th_weir_stop_sig(env, 0, TH_TIMEOUT_MS);
}

/* --- a small JSON checker for the access log ---------------------------------------------------------------------- */

typedef struct json_s {
    const char *p;
} json_t;

static void jws(json_t *j)
{
    while (*j->p == ' ' || *j->p == '\t' || *j->p == '\r' || *j->p == '\n')
        j->p++;
}

static bool jvalue(json_t *j, char *kind);

static bool jstring(json_t *j)
{
    if (*j->p != '"')
        return false;
    for (j->p++; *j->p != '"'; j->p++) {
        if ((unsigned char)*j->p < 0x20)
            return false;
        if (*j->p == '\\') {
            j->p++;
            if (*j->p == 'u') {
                for (int i = 1; i <= 4; i++)
                    if (!strchr("0123456789abcdefABCDEF", j->p[i]) || j->p[i] == '\0')
                        return false;
                j->p += 4;
            } else if (*j->p == '\0' || !strchr("\"\\/bfnrt", *j->p)) {
                return false;
            }
        }
    }
    j->p++;
    return true;
}

static bool jnumber(json_t *j)
{
    const char *s = j->p;
    if (*j->p == '-')
        j->p++;
    if (*j->p == '0')
        j->p++;
    else if (*j->p >= '1' && *j->p <= '9')
        while (*j->p >= '0' && *j->p <= '9')
            j->p++;
    else
        return false;
    if (*j->p == '.') {
        j->p++;
        if (!(*j->p >= '0' && *j->p <= '9'))
            return false;
        while (*j->p >= '0' && *j->p <= '9')
            j->p++;
    }
    if (*j->p == 'e' || *j->p == 'E') {
        j->p++;
        if (*j->p == '+' || *j->p == '-')
            j->p++;
        if (!(*j->p >= '0' && *j->p <= '9'))
            return false;
        while (*j->p >= '0' && *j->p <= '9')
            j->p++;
    }
    return j->p > s;
}

/* Parses one value; <kind> gets 's', 'n', 'o', 'a', 't', 'f' or 'z' (null). */
static bool jvalue(json_t *j, char *kind)
{
    char k;
    jws(j);
    if (*j->p == '"') {
        k = 's';
        if (!jstring(j))
            return false;
    } else if (*j->p == '{' || *j->p == '[') {
        char close = *j->p == '{' ? '}' : ']';
        k = *j->p == '{' ? 'o' : 'a';
        j->p++;
        jws(j);
        if (*j->p != close) {
            for (;;) {
                jws(j);
                if (k == 'o') {
                    if (!jstring(j))
                        return false;
                    jws(j);
                    if (*j->p++ != ':')
                        return false;
                }
                char sub;
                if (!jvalue(j, &sub))
                    return false;
                jws(j);
                if (*j->p == ',') {
                    j->p++;
                    continue;
                }
                break;
            }
        }
        if (*j->p++ != close)
            return false;
    } else if (strncmp(j->p, "true", 4) == 0) {
        k = 't';
        j->p += 4;
    } else if (strncmp(j->p, "false", 5) == 0) {
        k = 'f';
        j->p += 5;
    } else if (strncmp(j->p, "null", 4) == 0) {
        k = 'z';
        j->p += 4;
    } else {
        k = 'n';
        if (!jnumber(j))
            return false;
    }
    if (kind != NULL)
        *kind = k;
    return true;
}

/* Returns whether <line> is one JSON object; the kinds of its top-level members go to <kinds> as "name=k;..." */
static bool json_object_kinds(const char *line, char *kinds, size_t cap)
{
    json_t j = {line};
    size_t kl = 0;
    kinds[0] = '\0';
    jws(&j);
    if (*j.p != '{')
        return false;
    j.p++;
    jws(&j);
    if (*j.p == '}')
        return j.p[1] == '\0';
    for (;;) {
        jws(&j);
        const char *ks = j.p;
        if (!jstring(&j))
            return false;
        const char *ke = j.p;
        jws(&j);
        if (*j.p++ != ':')
            return false;
        char k;
        if (!jvalue(&j, &k))
            return false;
        kl += (size_t)snprintf(kinds + kl, cap - kl, "%.*s=%c;", (int)(ke - ks), ks, k);
        if (kl >= cap)
            return false;
        jws(&j);
        if (*j.p == ',') {
            j.p++;
            continue;
        }
        break;
    }
    if (*j.p++ != '}')
        return false;
    jws(&j);
    return *j.p == '\0';
}

/* Asserts that every line of the file <path> is a JSON object with the SPEC's access-log fields; returns the count. */
static int check_access_log(const char *path, const char *want_path_member)
{
    char *text = th_slurp(path);
    int n = 0;
    bool seen = false;
    for (char *line = text, *eol; *line != '\0'; line = eol + 1) {
        eol = strchr(line, '\n');
        if (eol == NULL)
            fail_msg("%s: last line not terminated: %s", path, line);
        *eol = '\0';
        char kinds[1024];
        if (!json_object_kinds(line, kinds, sizeof(kinds)))
            fail_msg("%s line %d is not one JSON object: %s", path, n + 1, line);
        static const char *const fields[] = {"\"time\"=s;",   "\"method\"=s;",      "\"path\"=s;",
                                             "\"status\"=n;", "\"variant\"=",       "\"route\"=",
                                             "\"upstream\"=", "\"duration_ms\"=n;", "\"bytes\"=n;"};
        for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
            if (strstr(kinds, fields[i]) == NULL)
                fail_msg("%s line %d lacks %s (has %s): %s", path, n + 1, fields[i], kinds, line);
        seen |= strstr(line, want_path_member) != NULL;
        n++;
    }
    if (!seen)
        fail_msg("%s has no line with %s:\n%s", path, want_path_member, th_slurp(path));
    return n;
}

static const char *hup_path;

static bool file_exists(void *arg)
{
    (void)arg;
    struct stat st;
    return stat(hup_path, &st) == 0;
}

static bool file_has_line(void *arg)
{
    char *s = th_slurp(hup_path);
    bool yes = strstr(s, (const char *)arg) != NULL && s[strlen(s) - 1] == '\n';
    th_free(s);
    return yes;
}

static void test_sighup_reopens_access_log(void **state)
{
    th_env_t *env = *state;
    char *log = th_fmt("%s/access.log", env->dir);
    char *rotated = th_fmt("%s/access.log.1", env->dir);
    hup_path = log;
    th_start_stable(env, "--access-log", log, NULL);
    th_resp_t r = {0};
    th_get(env->port, "/before?x=\"1\"", &r);
    assert_int_equal(r.status, 200);
    assert_true(th_poll(file_has_line, "\"/before", TH_TIMEOUT_MS));
    assert_int_equal(rename(log, rotated), 0);
    assert_int_equal(kill(env->weir.pid, SIGHUP), 0);
    if (!th_poll(file_exists, NULL, TH_TIMEOUT_MS))
        fail_msg("SIGHUP did not reopen %s", log);
    th_get(env->port, "/after", &r);
    assert_int_equal(r.status, 200);
    th_get(env->port, "/status/404", &r);
    assert_int_equal(r.status, 404);
    if (!th_poll(file_has_line, "\"/status/404\"", TH_TIMEOUT_MS))
        fail_msg("the new %s lacks the requests made after SIGHUP:\n%s", log, th_slurp(log));

    assert_int_equal(check_access_log(rotated, "\"path\":\"/before?x=\\\"1\\\"\""), 1);
    assert_int_equal(check_access_log(log, "\"path\":\"/after\""), 2);
    char *s = th_slurp(log);
    assert_non_null(strstr(s, "\"method\":\"GET\""));
    assert_non_null(strstr(s, "\"status\":404"));
    assert_non_null(strstr(s, "\"variant\":\"stable\""));
    assert_non_null(strstr(s, th_fmt("\"upstream\":\"%s\"", env->up[0].addr)));
    assert_null(strstr(s, "/before")); /* the old lines stayed in the rotated file */
    th_weir_stop(env);
}

/* --- 8. DNS ------------------------------------------------------------------------------------------------------ */

/* Whether [::1] can be bound here. */
static bool have_ipv6_loopback(void)
{
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    bool ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

static bool ready(void *arg)
{
    th_env_t *env = arg;
    th_resp_t r = {0};

    return th_try_get(env->admin_port, "/readyz", &r) == 0 && r.status == 200;
}

static void test_upstream_by_host_name(void **state)
{
    th_env_t *env = *state;
    /* The upstream listens on both loopbacks, since localhost may resolve to either. */
    th_upstream_t *up = &env->up[env->nup];
    up->port = th_free_port();
    snprintf(up->addr, sizeof(up->addr), "localhost:%d", up->port);
    char *v4 = th_fmt("127.0.0.1:%d", up->port);
    char *v6 = th_fmt("[::1]:%d", up->port);
    char *argv[] = {(char *)th_upstream_bin(), "--listen", v4, "--name", "stable", NULL, NULL, NULL};
    if (have_ipv6_loopback()) {
        argv[5] = "--listen";
        argv[6] = v6;
    }
    th_spawn(env, &up->proc, "upstream-0-stable", argv);
    env->nup++;
    if (!th_wait_port(up->port, TH_TIMEOUT_MS, &up->proc)) {
        th_dump_file(up->proc.err);
        fail_msg("upstream did not listen on %s", v4);
    }
    th_weir_startl(env, "--stable", up->addr, NULL);
    assert_true(th_poll(ready, env, TH_TIMEOUT_MS)); /* the name is looked up in the background: 503 until then */
    th_conn_t *c = th_conn_open(env->port);
    th_resp_t r = {0};
    th_exchange(c, GET_REQ("/"), &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(th_header(&r, "x-upstream"), "stable");
    assert_string_equal(r.body, "hello from stable\n");
    th_exchange(c, "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\n\r\nabc", &r);
    assert_int_equal(r.status, 200);
    size_t n;
    const char *b = th_echo_body(&r, &n);
    assert_non_null(b);
    assert_int_equal(n, 3);
    assert_memory_equal(b, "abc", 3);
    th_weir_stop(env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_stream_1gib_bounded_memory, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_slow_reader_bounded_memory, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_slow_upstream_reader_bounded_memory, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_pipelining_chunked_post_and_head, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_expect_continue_curl, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_expect_continue_raw, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_request_trailers_reach_upstream, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_response_trailers_reach_client, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_upgrade_tunnel, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_upgrade_upstream_closes, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_smuggling_rejected, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_random_bytes_300_connections, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_slowloris_408, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_upstream_timeout_504, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_idle_keepalive_closed, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_connect_timeout, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_connect_timeout_next_endpoint, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_max_connections, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_upstream_closes_before_response_502, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_upstream_reset_mid_body, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_client_abort_not_reused, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_drain_inflight_connection_close, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_sighup_reopens_access_log, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_upstream_by_host_name, th_setup, th_teardown),
    };
    th_filter_from_env();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
