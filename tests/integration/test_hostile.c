/* HTTP correctness under hostile peers, through the real binaries: no byte of one request may reach another, and
 * every failure is told truthfully, to the client and to the counters.
 *
 * Each test is one case an audit reproduced: framing headers named in Connection (both directions), an upstream
 * that resets while a client write is in flight, a dropped mirror copy that its primary still points at, bodies cut
 * by the upstream's close while the client reads slowly, a bare CR in a header value, a slow upload, failures
 * charged to the wrong side, Host rules, interim responses to HTTP/1.0 clients and an unasked-for 101. The hostile
 * upstream behaviours are paths of the test upstream (tests/upstream/upstream.c: /raw, /raw-close, /early-reset,
 * /gated-eof, /gated-close). */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "harness.h"

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

/* The path of the upstream's /raw (or /raw-close) that answers with exactly <response>. */
static char *raw_path(const char *prefix, const char *response)
{
    char *out = th_alloc(strlen(prefix) + 3 * strlen(response) + 1);
    size_t n = strlen(prefix);
    memcpy(out, prefix, n);
    for (const unsigned char *p = (const unsigned char *)response; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '.')
            out[n++] = (char)*p;
        else
            n += (size_t)sprintf(out + n, "%%%02X", *p);
    }
    out[n] = '\0';
    return out;
}

/* The value of <series> in weir's /metrics, -1 when absent, -2 when /metrics could not be read. */
static double metric(th_env_t *env, const char *series)
{
    th_resp_t r = {0};
    double v = -1;
    if (th_try_get(env->admin_port, "/metrics", &r) < 0 || r.status != 200)
        return -2;
    size_t n = strlen(series);
    for (const char *p = r.body; (p = strstr(p, series)) != NULL; p += n) {
        if ((p == r.body || p[-1] == '\n') && p[n] == ' ') {
            v = strtod(p + n + 1, NULL);
            break;
        }
    }
    th_resp_free(&r);
    return v;
}

typedef struct {
    th_env_t *env;
    const char *series;
    double want;
} metric_wait_t;

static bool metric_is(void *arg)
{
    metric_wait_t *w = arg;
    return metric(w->env, w->series) == w->want;
}

#define wait_metric(env, series, want) wait_metric_at((env), (series), (want), __FILE__, __LINE__)
static void wait_metric_at(th_env_t *env, const char *series, double want, const char *file, int line)
{
    metric_wait_t w = {env, series, want};
    if (!th_poll(metric_is, &w, TH_TIMEOUT_MS)) {
        print_error("ERROR: %s is %g, want %g\n", series, metric(env, series), want);
        _fail(file, line);
    }
}

#define ERRS(reason) "weir_proxy_errors_total{variant=\"stable\",reason=\"" reason "\"}"
#define CODES(code) "weir_requests_total{variant=\"stable\",code=\"" code "\"}"

/* --- 1. framing headers are never hop-by-hop ------------------------------------------------------------------- */

/* A Connection token naming Content-Length, Transfer-Encoding or Host would have weir drop the header that frames
 * or addresses the request while relaying it as received: refused with 400 before any upstream sees it. The first
 * case is the smuggling repro: the body would reach the pooled upstream connection as a request of its own. */
static void test_connection_naming_framing_request_400(void **state)
{
    th_env_t *env = *state;
    int u = th_start_stable(env, "--workers", "1", NULL);
    static const char smuggled[] = "GET /echo HTTP/1.1\r\nHost: test\r\nX-Ignore: ";
    static const char *const cases[] = {
        "POST /status/200 HTTP/1.1\r\nHost: test\r\nConnection: Content-Length\r\nContent-Length: 43\r\n\r\n%s",
        "POST /echo HTTP/1.1\r\nHost: test\r\nConnection: keep-alive, transfer-encoding\r\n"
        "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n%s",
        "GET /echo HTTP/1.1\r\nHost: test\r\nConnection: close, Host\r\n\r\n%s",
        "GET /echo HTTP/1.0\r\nHost: test\r\nConnection: a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p, q, r, HOST\r\n"
        "\r\n%s",
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        th_conn_t *c = th_conn_open(env->port);
        th_resp_t r = {0};
        char req[512];
        snprintf(req, sizeof(req), cases[i], i == 0 ? smuggled : "");
        th_exchange(c, req, &r);
        if (r.status != 400)
            fail_msg("case %zu: %d, want 400", i, r.status);
        th_assert_own_response(&r, 400);
        assert_true(th_conn_wait_closed(c, TH_TIMEOUT_MS));
        th_conn_close(c);
    }
    assert_int_equal(th_upstream_stat(env, u, "/__count"), 0);
    /* a token naming any other header still only drops that header */
    th_resp_t r = {0};
    assert_int_equal(
        th_http(env->port, "GET /echo HTTP/1.1\r\nHost: test\r\nConnection: x-hop\r\nX-Hop: 1\r\n\r\n", &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(th_echo_header_count(&r, "x-hop"), 0);
    assert_int_equal(th_echo_header_count(&r, "host"), 1);
    th_weir_stop(env);
}

/* The same on the response side: an upstream response naming its framing in Connection is a 502, not a response
 * relayed without framing on a kept-alive connection. */
static void test_connection_naming_framing_response_502(void **state)
{
    th_env_t *env = *state;
    th_start_stable(env, NULL);
    static const char *const responses[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: Content-Length\r\n\r\nhello",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: Transfer-Encoding\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(responses) / sizeof(responses[0]); i++) {
        th_conn_t *c = th_conn_open(env->port);
        th_resp_t r = {0};
        th_conn_sendf(c, "GET %s HTTP/1.1\r\nHost: test\r\n\r\n", raw_path("/raw/", responses[i]));
        if (th_conn_read_response(c, &r, false, TH_TIMEOUT_MS) != 0)
            fail_msg("case %zu: no complete response", i);
        if (r.status != 502)
            fail_msg("case %zu: %d, want 502", i, r.status);
        th_assert_own_response(&r, 502);
        th_conn_close(c);
    }
    wait_metric(env, CODES("502"), 2); /* counted when the cycle ends, maybe after the client has its bytes */
    assert_int_equal(metric(env, ERRS("reset")), 2);
    th_weir_stop(env);
}

/* --- 2. no local reply once the response started --------------------------------------------------------------- */

/* A client uploads a large body slowly and does not read; the upstream answers early with a large response,
 * fills every buffer, and resets. The next body bytes fail to go upstream synchronously, with a client write in
 * flight: weir must close the client connection (the 200 body ends short), never write a 502 into the body,
 * never reuse the write request in flight. */
static void test_upstream_reset_during_upload_closes(void **state)
{
    th_env_t *env = *state;
    th_start_stable(env, "--workers", "1", NULL);
    th_conn_t *c = th_conn_open(env->port);
    assert_int_equal(th_conn_sendf(c, "POST /early-reset/16000000 HTTP/1.1\r\nHost: test\r\n"
                                      "Content-Length: 100000000\r\n\r\n"),
                     0);
    char chunk[256];
    memset(chunk, 'u', sizeof(chunk));
    int i, gone = 0;
    for (i = 0; i < 600 && !gone; i++) { /* at most ~3 s at 50 KB/s; the upstream resets within ~1 s */
        ssize_t n = send(c->fd, chunk, sizeof(chunk), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            gone = 1;
        else
            pause_ms(5);
    }
    /* Now read what weir sends: the client write that was in flight completes, and nothing may follow it but the
     * close (weir stops the upload once the upstream write failed). */
    if (!th_conn_wait_closed(c, TH_TIMEOUT_MS))
        fail_msg("the connection stayed open after the upstream reset (%d chunks sent, %zu bytes read)", i, c->len);
    if (c->len > 12 && memcmp(c->buf, "HTTP/1.1 200", 12) != 0)
        fail_msg("the response does not start with the upstream's 200: %.40s", c->buf);
    for (size_t k = 0; k + 12 <= c->len; k++)
        if (memcmp(c->buf + k, "HTTP/1.1 502", 12) == 0)
            fail_msg("a 502 was written at byte %zu of the response", k);
    th_conn_close(c);
    th_resp_t r = {0};
    th_get(env->port, "/", &r); /* still serving */
    assert_int_equal(r.status, 200);
    th_weir_stop(env); /* exit 0, no sanitizer report */
}

/* --- 3. a mirror copy and its primary let go of each other before reuse ----------------------------------------- */

static int port_of(int fd)
{
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    return ntohs(sa.sin_port);
}

static void ctl(th_env_t *env, const char *line)
{
    char *argv[16] = {(char *)th_weirctl_bin(), "-s", env->sock};
    int n = 3;
    char *copy = th_strdup(line), *save = NULL;
    for (char *t = strtok_r(copy, " ", &save); t != NULL && n < 15; t = strtok_r(NULL, " ", &save))
        argv[n++] = t;
    argv[n] = NULL;
    th_run_t r;
    th_run(env, &r, argv);
    if (r.status != 0)
        fail_msg("weirctl %s: exit %d: %s", line, r.status, r.err);
}

/* Client A's copy goes to a canary endpoint that never completes a connect and is dropped after connect-timeout
 * while A is still sending its body; client B's copy then goes to the recorder. The rest of A's body must not
 * reach the recorder inside B's copy: the dropped copy is not reused while A still points at it. */
static void test_dropped_mirror_copy_not_reused(void **state)
{
    th_env_t *env = *state;
    int filler, hole = th_blackhole(&filler);
    int rec = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(rec, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(rec, 8), 0);
    int u = th_upstream_start(env, "stable");
    char *c1 = th_fmt("127.0.0.1:%d", port_of(hole)), *c2 = th_fmt("127.0.0.1:%d", port_of(rec));
    th_weir_startl(env, "--stable", env->up[u].addr, "--canary", c1, "--canary", c2, "--connect-timeout", "300ms",
                   "--workers", "1", NULL);
    assert_true(th_wait_port(env->admin_port, TH_TIMEOUT_MS, &env->weir));
    ctl(env, "set mirror-route all 100 to canary");

    th_conn_t *a = th_conn_open(env->port);
    assert_int_equal(th_conn_sendf(a, "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\nhello"), 0);
    wait_metric(env, "weir_mirror_dropped_total{variant=\"canary\",reason=\"error\"}", 1);

    th_resp_t rb = {0};
    th_conn_t *b = th_conn_open(env->port);
    th_exchange(b, "GET /echo HTTP/1.1\r\nHost: test\r\n\r\n", &rb);
    assert_int_equal(rb.status, 200);
    struct pollfd pf = {.fd = rec, .events = POLLIN};
    assert_int_equal(poll(&pf, 1, TH_TIMEOUT_MS), 1);
    int copy = accept(rec, NULL, NULL);
    assert_true(copy >= 0);
    char got[8192];
    size_t len = 0;
    int64_t deadline = now_ms() + TH_TIMEOUT_MS;
    while (memmem(got, len, "\r\n\r\n", 4) == NULL && now_ms() < deadline) {
        struct pollfd cp = {.fd = copy, .events = POLLIN};
        if (poll(&cp, 1, 100) == 1) {
            ssize_t n = recv(copy, got + len, sizeof(got) - len - 1, 0);
            if (n <= 0)
                break;
            len += (size_t)n;
        }
    }
    assert_non_null(memmem(got, len, "\r\n\r\n", 4));
    size_t head_len = (size_t)((char *)memmem(got, len, "\r\n\r\n", 4) - got) + 4;

    /* the rest of A's body; once A has its answer, weir has handled those bytes */
    th_resp_t ra = {0};
    th_exchange(a, "world", &ra);
    assert_int_equal(ra.status, 200);
    size_t blen;
    const char *body = th_echo_body(&ra, &blen);
    assert_non_null(body);
    assert_int_equal(blen, 10);
    assert_memory_equal(body, "helloworld", 10);

    ssize_t n = recv(copy, got + len, sizeof(got) - len - 1, MSG_DONTWAIT);
    if (n > 0)
        len += (size_t)n;
    got[len] = '\0';
    if (len != head_len || strstr(got, "world") != NULL)
        fail_msg("B's copy carried %zu bytes after its header block: %s", len - head_len, got + head_len);
    close(copy);
    close(rec);
    close(filler);
    close(hole);
    th_weir_stop(env);
}

/* --- 4. every byte from the upstream is parsed before its close is judged ---------------------------------------- */

/* Bytes queued in the kernel, either way, on the connections of the upstream on <port> that are not closed yet
 * on its side (established, or closing with data still queued); 0 when nothing is in flight towards or from it. */
static long upstream_queued(int port, bool *open)
{
    FILE *f = fopen("/proc/net/tcp", "r");
    char line[512];
    long sum = 0;
    *open = false;
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL) {
        unsigned lport, rport, st;
        unsigned long tx, rx;
        if (sscanf(line, " %*d: %*x:%x %*x:%x %x %lx:%lx", &lport, &rport, &st, &tx, &rx) != 5 || st == 0x0A)
            continue;
        if ((int)lport == port || (int)rport == port) {
            sum += (long)(tx + rx);
            if ((int)lport == port && (st == 0x01 || st == 0x04))
                *open = true; /* established, or its FIN not acknowledged yet */
        }
    }
    fclose(f);
    return sum;
}

typedef struct {
    int port;
    bool want_open; /* the upstream's end still open (first part read) or closed (its FIN taken by weir) */
} up_watch_t;

static bool upstream_drained(void *arg)
{
    up_watch_t *w = arg;
    bool open;
    return upstream_queued(w->port, &open) == 0 && open == w->want_open;
}

/* The case: the upstream sends part of a body, pauses, sends 1,000 more bytes and closes, while the client
 * reads slowly. To have weir's client write in flight when those last bytes and the close arrive, the client
 * pipelines a large response first and stops reading once weir is done with it: weir's send buffer is full when
 * the second response starts.
 * Every byte must still reach the client once it reads, and (Content-Length) the body must be complete. */
static void test_truncation_by_close_is_judged_after_every_byte(void **state)
{
    th_env_t *env = *state;
    enum { FIRST = 8000000, N = 60000, REST = 1000 };
    th_start_stable(env, "--workers", "1", NULL);
    static const char *const paths[] = {"/gated-eof/60000", "/gated-close/60000"};
    for (size_t round = 0; round < 8; round++) { /* the timing of weir's send buffer varies: several rounds */
        size_t i = round % 2;
        th_resp_t r = {0};
        th_get(env->up[0].port, "/__shut", &r);
        /* a small receive buffer, so that the client's kernel takes little for it */
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), rcv = 4096;
        struct sockaddr_in sa = {
            .sin_family = AF_INET, .sin_port = htons((uint16_t)env->port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv)), 0);
        assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        char req[256];
        int rl = snprintf(req, sizeof(req),
                          "GET /bytes/%d HTTP/1.1\r\nHost: test\r\n\r\nGET %s HTTP/1.1\r\nHost: test\r\n\r\n", FIRST,
                          paths[i]);
        assert_int_equal(send(fd, req, (size_t)rl, MSG_NOSIGNAL), rl);
        size_t cap = FIRST + N + REST + 8192, len = 0;
        char *got = th_alloc(cap + 1);
        /* Read the first response until weir has sent all of it to the kernel (then the second request reaches
         * the upstream), and stop: weir's send buffer stays full, its write of the second response in flight. */
        int64_t deadline = now_ms() + TH_TIMEOUT_MS;
        while (len < FIRST / 2 || th_upstream_stat(env, 0, "/__gated") != 1) {
            struct pollfd pf = {.fd = fd, .events = POLLIN};
            if (now_ms() > deadline)
                fail_msg("%s: the second request never reached the upstream", paths[i]);
            if (poll(&pf, 1, 100) != 1)
                continue;
            /* weir's send buffer (4 MiB at most) cannot hold the second half: no need to look before */
            ssize_t n = recv(fd, got + len, len < FIRST / 2 ? 65536 : 4096, 0);
            assert_true(n > 0);
            len += (size_t)n;
        }
        up_watch_t w = {env->up[0].port, true};
        if (!th_poll(upstream_drained, &w, TH_TIMEOUT_MS))
            fail_msg("%s: weir never read the first part", paths[i]);
        th_get(env->up[0].port, "/__open", &r);
        w.want_open = false;
        if (!th_poll(upstream_drained, &w, TH_TIMEOUT_MS))
            fail_msg("%s: the upstream's last bytes and close never reached weir", paths[i]);
        deadline = now_ms() + TH_TIMEOUT_MS;
        while (len < cap && now_ms() < deadline) {
            struct pollfd pf = {.fd = fd, .events = POLLIN};
            if (poll(&pf, 1, 100) != 1)
                continue;
            ssize_t n = recv(fd, got + len, cap - len, 0);
            if (n <= 0)
                break;
            len += (size_t)n;
            got[len] = '\0';
            char *h1 = strstr(got, "\r\n\r\n"), *h2 = h1 && len > FIRST ? strstr(h1 + 4 + FIRST, "\r\n\r\n") : NULL;
            if (h2 != NULL && len - (size_t)(h2 + 4 - got) >= N + REST)
                break; /* all of it: the Content-Length case keeps the connection */
        }
        got[len] = '\0';
        char *second = strstr(got, "\r\n\r\n");
        assert_non_null(second);
        second += 4 + FIRST;
        if (second > got + len || memcmp(second, "HTTP/1.1 200", 12) != 0)
            fail_msg("%s: the second response is not where the first one ends", paths[i]);
        char *eoh = strstr(second, "\r\n\r\n");
        if (eoh == NULL)
            fail_msg("%s: no header block", paths[i]);
        size_t body = len - (size_t)(eoh + 4 - got);
        if (body != N + REST)
            fail_msg("%s: %zu body bytes of %d reached the client", paths[i], body, N + REST);
        assert_true(th_pattern_ok(eoh + 4, body));
        close(fd);
    }
    th_weir_stop(env);
}

/* --- 5. header values validated by weir itself ------------------------------------------------------------------ */

static void test_bad_value_characters_refused(void **state)
{
    th_env_t *env = *state;
    int u = th_start_stable(env, NULL);
    static const char *const values[] = {"\rInjected: yes", "a\rb", "a\001b", "a\177b", "\x0b"};
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        th_resp_t r = {0};
        char req[256];
        snprintf(req, sizeof(req), "GET /echo HTTP/1.1\r\nHost: test\r\nX-A:%s\r\nConnection: close\r\n\r\n",
                 values[i]);
        assert_int_equal(th_http(env->port, req, &r), 0);
        if (r.status != 400)
            fail_msg("value %zu: %d, want 400", i, r.status);
        th_assert_own_response(&r, 400);
    }
    assert_int_equal(th_upstream_stat(env, u, "/__count"), 0);
    /* obs-text and HTAB are field-value characters */
    th_resp_t r = {0};
    assert_int_equal(th_http(env->port, "GET /echo HTTP/1.1\r\nHost: test\r\nX-A: caf\xc3\xa9\tb\r\n\r\n", &r), 0);
    assert_int_equal(r.status, 200);
    /* and the response side: a bare CR in an upstream header value is a 502 */
    th_conn_t *c = th_conn_open(env->port);
    th_resp_t q = {0};
    th_conn_sendf(c, "GET %s HTTP/1.1\r\nHost: test\r\n\r\n",
                  raw_path("/raw/", "HTTP/1.1 200 OK\r\nX-A:\rInjected: yes\r\nContent-Length: 2\r\n\r\nok"));
    assert_int_equal(th_conn_read_response(c, &q, false, TH_TIMEOUT_MS), 0);
    th_assert_own_response(&q, 502);
    th_weir_stop(env);
}

/* --- 6. the upstream timer measures upstream silence ----------------------------------------------------------- */

/* An upload lasting twice upstream-timeout, each byte relayed as it comes: the upstream takes them all, so it is
 * never silent, and the request succeeds. */
static void test_slow_upload_not_504(void **state)
{
    th_env_t *env = *state;
    th_start_stable(env, "--upstream-timeout", "1s", NULL);
    th_conn_t *c = th_conn_open(env->port);
    th_resp_t r = {0};
    assert_int_equal(th_conn_sendf(c, "POST /sink HTTP/1.1\r\nHost: test\r\nContent-Length: 12\r\n\r\n"), 0);
    for (int i = 0; i < 11; i++) {
        assert_int_equal(th_conn_send(c, "x", 1), 0);
        pause_ms(200);
        if (th_conn_closed_now(c))
            fail_msg("closed after %d of 12 body bytes (%zu bytes came: %.40s)", i + 1, c->len - c->off,
                     c->buf + c->off);
    }
    th_exchange(c, "x", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "12 1440 9360\n");
    th_weir_stop(env);
}

/* --- 7. the status and reason say whose fault it was ----------------------------------------------------------- */

/* An upstream that breaks its framing before any byte reached the client: weir's 502, counted as the variant's
 * 502 with reason reset, not as a client that went away. */
static void test_broken_upstream_is_502_not_499(void **state)
{
    th_env_t *env = *state;
    th_start_stable(env, NULL);
    th_resp_t r = {0};
    char *req = th_fmt("GET %s HTTP/1.1\r\nHost: test\r\n\r\n",
                       raw_path("/raw-close/", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"));
    assert_int_equal(th_http(env->port, req, &r), 0);
    th_assert_own_response(&r, 502);
    wait_metric(env, CODES("502"), 1);
    assert_int_equal(metric(env, ERRS("reset")), 1);
    assert_int_equal(metric(env, ERRS("client_abort")), 0);
    assert_int_equal(metric(env, CODES("499")), -1);
    th_weir_stop(env);
}

/* A client that stops reading its response, and one that stops sending its body: neither is an upstream timeout. */
static void test_slow_client_is_not_upstream_timeout(void **state)
{
    th_env_t *env = *state;
    th_start_stable(env, "--upstream-timeout", "500ms", NULL);
    th_conn_t *reader = th_conn_open(env->port); /* never reads */
    th_conn_sendf(reader, "GET /bytes/64000000 HTTP/1.1\r\nHost: test\r\n\r\n");
    wait_metric(env, ERRS("client_abort"), 1);
    assert_int_equal(metric(env, ERRS("timeout")), 0);

    th_conn_t *sender = th_conn_open(env->port); /* stops half-way through its body */
    th_resp_t r = {0};
    th_exchange(sender, "POST /sink HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\nabcde", &r);
    th_assert_own_response(&r, 408);
    assert_true(th_conn_wait_closed(sender, TH_TIMEOUT_MS));
    wait_metric(env, CODES("408"), 1);
    assert_int_equal(metric(env, ERRS("timeout")), 0);
    assert_int_equal(metric(env, CODES("504")), -1);
    th_conn_close(reader);
    th_weir_stop(env);
}

/* --- 8. Host, interim responses, 101 ----------------------------------------------------------------------------- */

static void test_host_rules(void **state)
{
    th_env_t *env = *state;
    int u = th_start_stable(env, NULL);
    static const char *const bad[] = {
        "GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET /echo HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n",
        "GET /echo HTTP/1.1\r\nX-A: 1\r\n\r\n",
        "GET /echo HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        th_resp_t r = {0};
        assert_int_equal(th_http(env->port, bad[i], &r), 0);
        if (r.status != 400)
            fail_msg("case %zu: %d, want 400", i, r.status);
        th_assert_own_response(&r, 400);
    }
    assert_int_equal(th_upstream_stat(env, u, "/__count"), 0);
    /* HTTP/1.0 without Host is still served, and gets one */
    th_resp_t r = {0};
    assert_int_equal(th_http(env->port, "GET /echo HTTP/1.0\r\n\r\n", &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(th_echo_header_count(&r, "host"), 1);
    th_weir_stop(env);
}

static void test_no_interim_to_http10_and_no_unasked_101(void **state)
{
    th_env_t *env = *state;
    th_start_stable(env, NULL);
    const char *hints = raw_path("/raw/", "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
                                          "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    /* HTTP/1.1 gets the 103 first */
    th_conn_t *c = th_conn_open(env->port);
    th_resp_t r = {0};
    th_conn_sendf(c, "GET %s HTTP/1.1\r\nHost: test\r\n\r\n", hints);
    assert_int_equal(th_conn_read_response_any(c, &r, false, TH_TIMEOUT_MS), 0);
    assert_int_equal(r.status, 103);
    assert_int_equal(th_conn_read_response_any(c, &r, false, TH_TIMEOUT_MS), 0);
    assert_int_equal(r.status, 200);
    th_conn_close(c);
    /* HTTP/1.0 only the final response */
    c = th_conn_open(env->port);
    th_conn_sendf(c, "GET %s HTTP/1.0\r\nHost: test\r\n\r\n", hints);
    assert_int_equal(th_conn_read_response_any(c, &r, false, TH_TIMEOUT_MS), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ok");
    th_conn_close(c);
    /* a 101 to a request that did not ask to upgrade: 502 and close */
    c = th_conn_open(env->port);
    th_conn_sendf(c, "GET %s HTTP/1.1\r\nHost: test\r\n\r\n",
                  raw_path("/raw/", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n"));
    assert_int_equal(th_conn_read_response_any(c, &r, false, TH_TIMEOUT_MS), 0);
    th_assert_own_response(&r, 502);
    assert_true(th_conn_wait_closed(c, TH_TIMEOUT_MS));
    th_conn_close(c);
    th_weir_stop(env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_connection_naming_framing_request_400, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_connection_naming_framing_response_502, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_upstream_reset_during_upload_closes, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_dropped_mirror_copy_not_reused, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_truncation_by_close_is_judged_after_every_byte, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_bad_value_characters_refused, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_slow_upload_not_504, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_broken_upstream_is_502_not_499, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_slow_client_is_not_upstream_timeout, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_host_rules, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_no_interim_to_http10_and_no_unasked_101, th_setup, th_teardown),
    };
    th_filter_from_env();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
