/* The control plane of weir against the real binary (SPEC §4): every request over the Unix socket with its exact
 * reply, pipelining and concurrent clients, refused requests that change nothing, generations, weirctl, the socket
 * file (mode, stale and live), the TCP listener and its token, the state file across restarts, and changes applied
 * under a steady stream of proxied requests. */
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/ptrace.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <cmocka.h>

#include "harness.h"

#define REPLY_MAX 65536 /* far above any reply these tests provoke */
#define CTL_BUF (256 * 1024)

/* --- plumbing shared by the test thread and the client threads: no harness call, no cmocka ------------------------ */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void set_send_timeout(int fd)
{
    struct timeval tv = {TH_TIMEOUT_MS / 1000, 0}; /* a server that stops reading fails the send, not the suite */
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* Returns a connected Unix stream socket, or -1 with errno set. */
static int unix_connect(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    set_send_timeout(fd);
    return fd;
}

/* Returns a TCP socket connected to 127.0.0.1:<port>, or -1 with errno set. */
static int tcp_connect(int port)
{
    struct sockaddr_in sa = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    set_send_timeout(fd);
    return fd;
}

static int send_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Waits up to <left_ms> for <fd> to be readable. Returns 1 when it is, 0 on timeout, -1 on error. */
static int wait_readable(int fd, int64_t left_ms)
{
    if (left_ms <= 0)
        return 0;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r;
    while ((r = poll(&p, 1, (int)left_ms)) < 0 && errno == EINTR) {
    }
    return r;
}

/* A control connection with its own read buffer, so replies to pipelined requests are kept. */
typedef struct ctl_s {
    int fd;
    size_t len; /* unread bytes in buf */
    char buf[CTL_BUF];
} ctl_t;

/* Reads one reply (a first line, data lines, an empty line) into <out> (NUL-terminated). Returns its length, or -1
 * on timeout, on a close before the reply was complete, or when it does not fit. */
static long read_reply(ctl_t *c, char *out, size_t cap, int timeout_ms)
{
    int64_t end = now_ms() + timeout_ms;
    for (;;) {
        /* the first line is never empty, so the first "\n\n" is where the empty line ends the reply */
        const char *e = c->len > 0 ? memmem(c->buf, c->len, "\n\n", 2) : NULL;
        if (e != NULL) {
            size_t n = (size_t)(e - c->buf) + 2;
            if (n >= cap)
                return -1;
            memcpy(out, c->buf, n);
            out[n] = '\0';
            memmove(c->buf, c->buf + n, c->len - n);
            c->len -= n;
            return (long)n;
        }
        if (c->len == sizeof(c->buf) || wait_readable(c->fd, end - now_ms()) <= 0)
            return -1;
        ssize_t k = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        c->len += (size_t)k;
    }
}

/* Reads until the peer closes, keeping what arrives (NUL-terminated) in c->buf. Returns true once closed (FIN or
 * RST), false when it is still open after <timeout_ms>. */
static bool read_until_closed(ctl_t *c, int timeout_ms)
{
    int64_t end = now_ms() + timeout_ms;
    for (;;) {
        if (wait_readable(c->fd, end - now_ms()) <= 0)
            return false;
        char scratch[4096];
        size_t room = sizeof(c->buf) - 1 - c->len;
        char *dst = room > 0 ? c->buf + c->len : scratch;
        ssize_t k = recv(c->fd, dst, room > 0 ? room : sizeof(scratch), 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k == 0 || (k < 0 && (errno == ECONNRESET || errno == EPIPE)))
            break;
        if (k < 0)
            return false;
        if (room > 0)
            c->len += (size_t)k;
    }
    c->buf[c->len] = '\0';
    return true;
}

/* A keep-alive HTTP client connection for the client threads (the harness's client is not thread-safe). */
typedef struct hconn_s {
    int fd;
    size_t len;
    char buf[16384];
} hconn_t;

/* Sends `GET <path>` with the header lines <extra> ("Name: value\r\n"..., or "") and reads the response, which must
 * be framed by Content-Length. Returns the status with the x-upstream value in <who> ("" when absent), or -1 with
 * the reason in <why>. */
static int hget(hconn_t *h, const char *path, const char *extra, char *who, size_t wholen, char *why, size_t whylen)
{
    char req[1024];
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: test\r\n%s\r\n", path, extra);
    int64_t end = now_ms() + TH_TIMEOUT_MS;
    who[0] = '\0';
    if (n < 0 || (size_t)n >= sizeof(req) || send_all(h->fd, req, (size_t)n) != 0) {
        snprintf(why, whylen, "cannot send the request: %s", strerror(errno));
        return -1;
    }
    const char *eoh;
    while ((eoh = h->len > 0 ? memmem(h->buf, h->len, "\r\n\r\n", 4) : NULL) == NULL) {
        if (h->len == sizeof(h->buf)) {
            snprintf(why, whylen, "response head over %zu bytes", sizeof(h->buf));
            return -1;
        }
        if (wait_readable(h->fd, end - now_ms()) <= 0) {
            snprintf(why, whylen, "no complete response head within %d ms", TH_TIMEOUT_MS);
            return -1;
        }
        ssize_t k = recv(h->fd, h->buf + h->len, sizeof(h->buf) - h->len, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            snprintf(why, whylen, "connection %s after %zu bytes of a response", k == 0 ? "closed" : "reset", h->len);
            return -1;
        }
        h->len += (size_t)k;
    }
    size_t head = (size_t)(eoh - h->buf) + 4;
    int status = 0;
    long clen = -1;
    if (sscanf(h->buf, "HTTP/1.%*d %d", &status) != 1) {
        snprintf(why, whylen, "bad status line: %.60s", h->buf);
        return -1;
    }
    for (const char *p = (const char *)memchr(h->buf, '\n', head) + 1; p < h->buf + head - 2;) {
        const char *nl = memchr(p, '\n', (size_t)(h->buf + head - p));
        size_t ll = (size_t)(nl - p) - 1; /* without CR */
        if (ll > 15 && strncasecmp(p, "content-length:", 15) == 0)
            clen = strtol(p + 15, NULL, 10);
        else if (ll > 11 && strncasecmp(p, "x-upstream:", 11) == 0) {
            const char *v = p + 11;
            while (*v == ' ')
                v++;
            snprintf(who, wholen, "%.*s", (int)(p + ll - v), v);
        } else if (ll > 18 && strncasecmp(p, "transfer-encoding:", 18) == 0) {
            snprintf(why, whylen, "status %d with Transfer-Encoding, expected Content-Length", status);
            return -1;
        }
        p = nl + 1;
    }
    if (clen < 0 || head + (size_t)clen > sizeof(h->buf)) {
        snprintf(why, whylen, "status %d without a usable Content-Length (%ld)", status, clen);
        return -1;
    }
    while (h->len < head + (size_t)clen) {
        if (wait_readable(h->fd, end - now_ms()) <= 0) {
            snprintf(why, whylen, "status %d: body incomplete within %d ms", status, TH_TIMEOUT_MS);
            return -1;
        }
        ssize_t k = recv(h->fd, h->buf + h->len, sizeof(h->buf) - h->len, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            snprintf(why, whylen, "status %d: connection closed in the body", status);
            return -1;
        }
        h->len += (size_t)k;
    }
    size_t used = head + (size_t)clen;
    memmove(h->buf, h->buf + used, h->len - used);
    h->len -= used;
    return status;
}

/* --- test-thread helpers: they fail the running test ---------------------------------------------------------------
 */

/* Sockets opened by a test, closed by teardown() if the test fails before closing them. */
#define MAX_FDS 128
static int open_fds[MAX_FDS];
static int nopen_fds;

static void track_fd(int fd)
{
    if (nopen_fds == MAX_FDS)
        fail_msg("too many test sockets");
    open_fds[nopen_fds++] = fd;
}

static void close_fd(int fd)
{
    for (int i = 0; i < nopen_fds; i++) {
        if (open_fds[i] == fd) {
            open_fds[i] = open_fds[--nopen_fds];
            break;
        }
    }
    close(fd);
}

static void untrace(void);

static int teardown(void **state)
{
    untrace();
    while (nopen_fds > 0)
        close_fd(open_fds[nopen_fds - 1]);
    return th_teardown(state);
}

static ctl_t *ctl_wrap(int fd)
{
    ctl_t *c = th_alloc(sizeof(*c));
    c->fd = fd;
    c->len = 0;
    track_fd(fd);
    return c;
}

#define ctl_open(path) ctl_open_at((path), __FILE__, __LINE__)
static ctl_t *ctl_open_at(const char *path, const char *file, int line)
{
    int fd = unix_connect(path);
    if (fd < 0) {
        print_error("ERROR: connect to control socket %s: %s\n", path, strerror(errno));
        _fail(file, line);
    }
    return ctl_wrap(fd);
}

#define ctl_open_tcp(port) ctl_open_tcp_at((port), __FILE__, __LINE__)
static ctl_t *ctl_open_tcp_at(int port, const char *file, int line)
{
    int fd = tcp_connect(port);
    if (fd < 0) {
        print_error("ERROR: connect to TCP control 127.0.0.1:%d: %s\n", port, strerror(errno));
        _fail(file, line);
    }
    return ctl_wrap(fd);
}

static void ctl_close(ctl_t *c)
{
    close_fd(c->fd);
    th_free(c);
}

#define ctl_send(c, data) ctl_send_at((c), (data), __FILE__, __LINE__)
static void ctl_send_at(ctl_t *c, const char *data, const char *file, int line)
{
    if (send_all(c->fd, data, strlen(data)) != 0) {
        print_error("ERROR: cannot send to the control socket (%s): %.200s\n", strerror(errno), data);
        _fail(file, line);
    }
}

/* Reads the next reply on <c>; <what> names the request in the failure message. */
#define ctl_reply(c, what) ctl_reply_at((c), (what), __FILE__, __LINE__)
static char *ctl_reply_at(ctl_t *c, const char *what, const char *file, int line)
{
    static char buf[REPLY_MAX];
    if (read_reply(c, buf, sizeof(buf), TH_TIMEOUT_MS) < 0) {
        c->buf[c->len < sizeof(c->buf) ? c->len : sizeof(c->buf) - 1] = '\0';
        print_error("ERROR: no complete reply to: %.200s (received so far: \"%.300s\")\n", what, c->buf);
        _fail(file, line);
    }
    return th_strdup(buf);
}

/* Sends one request line and returns its reply. */
#define req(c, line) req_at((c), (line), __FILE__, __LINE__)
static char *req_at(ctl_t *c, const char *line, const char *file, int ln)
{
    ctl_send_at(c, th_fmt("%s\n", line), file, ln);
    return ctl_reply_at(c, line, file, ln);
}

/* Sends one request line and asserts its reply is exactly <want>. */
#define req_expect(c, line, want) req_expect_at((c), (line), (want), __FILE__, __LINE__)
static void req_expect_at(ctl_t *c, const char *line, const char *want, const char *file, int ln)
{
    char *got = req_at(c, line, file, ln);
    if (strcmp(got, want) != 0) {
        print_error("ERROR: request: %.200s\n  want reply: \"%s\"\n  got reply:  \"%s\"\n", line, want, got);
        _fail(file, ln);
    }
    th_free(got);
}

#define req_ok(c, line) req_expect((c), (line), "ok\n\n")

/* A refusal: one line "error: MESSAGE" with a message, then the empty line. */
static bool is_error_reply(const char *r)
{
    const char *nl = strchr(r, '\n');
    return strncmp(r, "error: ", 7) == 0 && nl != NULL && nl - r > 7 && strcmp(nl, "\n\n") == 0;
}

#define assert_error_reply(line, r) assert_error_reply_at((line), (r), __FILE__, __LINE__)
static void assert_error_reply_at(const char *line, const char *r, const char *file, int ln)
{
    if (is_error_reply(r))
        return;
    print_error("ERROR: request: %.200s\n  want one line \"error: MESSAGE\" and an empty line; got: \"%s\"\n", line, r);
    _fail(file, ln);
}

/* The routing state as the control socket shows it: `get weight` (with the generation) and `show routes`. */
#define snapshot(c) snapshot_at((c), __FILE__, __LINE__)
static char *snapshot_at(ctl_t *c, const char *file, int ln)
{
    return th_fmt("%s%s", req_at(c, "get weight", file, ln), req_at(c, "show routes", file, ln));
}

/* The generation from a `get weight` reply. */
#define generation(c) generation_at((c), __FILE__, __LINE__)
static unsigned long long generation_at(ctl_t *c, const char *file, int ln)
{
    char *r = req_at(c, "get weight", file, ln);
    const char *g = strstr(r, "\ngeneration ");
    char *end = NULL;
    unsigned long long v = g != NULL ? strtoull(g + 12, &end, 10) : 0;
    if (g == NULL || end == g + 12 || strcmp(end, "\n\n") != 0) {
        print_error("ERROR: no \"generation N\" line last in the reply to get weight: \"%s\"\n", r);
        _fail(file, ln);
    }
    th_free(r);
    return v;
}

/* Asserts a request is refused and leaves the state (weights, routes, generation) as it was. */
#define assert_refused(c, line) assert_refused_at((c), (line), __FILE__, __LINE__)
static void assert_refused_at(ctl_t *c, const char *line, const char *file, int ln)
{
    char *before = snapshot_at(c, file, ln);
    char *r = req_at(c, line, file, ln);
    assert_error_reply_at(line, r, file, ln);
    char *after = snapshot_at(c, file, ln);
    if (strcmp(before, after) != 0) {
        print_error("ERROR: refused request changed the state: %.200s\n  before: \"%s\"\n  after:  \"%s\"\n", line,
                    before, after);
        _fail(file, ln);
    }
}

#define hconn_open(port) hconn_open_at((port), __FILE__, __LINE__)
static hconn_t *hconn_open_at(int port, const char *file, int line)
{
    int fd = tcp_connect(port);
    if (fd < 0) {
        print_error("ERROR: connect 127.0.0.1:%d: %s\n", port, strerror(errno));
        _fail(file, line);
    }
    track_fd(fd);
    hconn_t *h = th_alloc(sizeof(*h));
    h->fd = fd;
    h->len = 0;
    return h;
}

/* One GET on <h> that must answer 200; returns the name of the upstream that answered (freed at teardown). */
#define who_answers(h, extra) who_answers_at((h), (extra), __FILE__, __LINE__)
static char *who_answers_at(hconn_t *h, const char *extra, const char *file, int line)
{
    char who[64], why[256];
    int st = hget(h, "/", extra, who, sizeof(who), why, sizeof(why));
    if (st != 200) {
        if (st < 0)
            print_error("ERROR: GET / failed: %s\n", why);
        else
            print_error("ERROR: GET / answered %d (x-upstream \"%s\")\n", st, who);
        _fail(file, line);
    }
    return th_strdup(who);
}

/* Starts the upstreams "stable" (index 0), "canary" (1) and "exp" (2). */
static void start_upstreams(th_env_t *env)
{
    assert_int_equal(th_upstream_start(env, "stable"), 0);
    assert_int_equal(th_upstream_start(env, "canary"), 1);
    assert_int_equal(th_upstream_start(env, "exp"), 2);
}

/* Starts weir ahead of the three upstreams (exp declared with --upstream exp ADDR), with the extra NULL-terminated
 * flags. */
static void start_weir(th_env_t *env, ...)
{
    const char *args[64] = {"--stable",   env->up[0].addr, "--canary",     env->up[1].addr,
                            "--upstream", "exp",           env->up[2].addr};
    size_t n = 7;
    va_list ap;
    va_start(ap, env);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL) {
        assert_true(n < 63);
        args[n++] = a;
    }
    va_end(ap);
    args[n] = NULL;
    th_weir_start(env, args);
}

/* Runs weirctl with the NULL-terminated arguments. */
static void weirctl(th_env_t *env, th_run_t *r, ...)
{
    const char *argv[32] = {th_weirctl_bin()};
    size_t n = 1;
    va_list ap;
    va_start(ap, r);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL) {
        assert_true(n < 31);
        argv[n++] = a;
    }
    va_end(ap);
    argv[n] = NULL;
    th_run(env, r, (char *const *)argv);
}

/* Runs weir to completion (it is expected to refuse to start) with fresh listen/admin ports, the control socket
 * <sock>, and the extra NULL-terminated flags. */
static void run_weir(th_env_t *env, th_run_t *r, const char *sock, ...)
{
    const char *argv[48] = {th_weir_bin(), "--control", sock, "--workers", "1", "--listen", NULL, "--admin", NULL};
    argv[6] = th_fmt("127.0.0.1:%d", th_free_port());
    argv[8] = th_fmt("127.0.0.1:%d", th_free_port());
    size_t n = 9;
    va_list ap;
    va_start(ap, sock);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL) {
        assert_true(n < 47);
        argv[n++] = a;
    }
    va_end(ap);
    argv[n] = NULL;
    th_run(env, r, (char *const *)argv);
    /* a refusal to start is a path like any other: it must not leak or misbehave */
    if (th_has_sanitizer_report(r->err))
        fail_msg("sanitizer report from weir (exit %d) refusing to start:\n%s", r->status, r->err);
}

/* --- every request, its exact reply ------------------------------------------------------------------------------- */

static void test_replies_exact(void **state)
{
    th_env_t *env = *state;
    start_upstreams(env);
    start_weir(env, NULL);
    ctl_t *c = ctl_open(env->sock);

    /* variants in bucket order (canary, the others as declared, stable last), two decimals, generation last */
    req_expect(c, "get weight", "ok\ncanary 0.00\nexp 0.00\nstable 100.00\ngeneration 0\n\n");
    req_ok(c, "set weight 5");
    req_expect(c, "get weight", "ok\ncanary 5.00\nexp 0.00\nstable 95.00\ngeneration 1\n\n");
    req_ok(c, "set weight 0.05");
    req_expect(c, "get weight", "ok\ncanary 0.05\nexp 0.00\nstable 99.95\ngeneration 2\n\n");
    req_ok(c, "set weight 12.5");
    req_expect(c, "get weight", "ok\ncanary 12.50\nexp 0.00\nstable 87.50\ngeneration 3\n\n");
    req_ok(c, "set weight canary 20 exp 10");
    req_expect(c, "get weight", "ok\ncanary 20.00\nexp 10.00\nstable 70.00\ngeneration 4\n\n");
    req_ok(c, "set weight exp 0.25 canary 99.75");
    req_expect(c, "get weight", "ok\ncanary 99.75\nexp 0.25\nstable 0.00\ngeneration 5\n\n");
    req_ok(c, "set weight canary 0 exp 0");
    req_expect(c, "get weight", "ok\ncanary 0.00\nexp 0.00\nstable 100.00\ngeneration 6\n\n");

    req_expect(c, "show routes", "ok\n\n");
    req_ok(c, "set header-route beta header x-beta exact yes");
    req_ok(c, "set mirror-route shadow 10 to exp path prefix /api");
    req_ok(c, "set header-route ck to exp method GET,POST header cookie:grp regex \"b[0-9]+\"");
    req_ok(c, "set mirror-route all 2.5");
    req_expect(c, "show routes",
               "ok\n"
               "set header-route beta to canary header x-beta exact yes\n"
               "set mirror-route shadow 10.00 to exp path prefix /api\n"
               "set header-route ck to exp method GET,POST header cookie:grp regex b[0-9]+\n"
               "set mirror-route all 2.50 to canary\n"
               "\n");
    /* replacing a route keeps its place: routes are in the order they were first set */
    req_ok(c, "set header-route beta to exp path exact /b");
    req_expect(c, "show routes",
               "ok\n"
               "set header-route beta to exp path exact /b\n"
               "set mirror-route shadow 10.00 to exp path prefix /api\n"
               "set header-route ck to exp method GET,POST header cookie:grp regex b[0-9]+\n"
               "set mirror-route all 2.50 to canary\n"
               "\n");
    assert_int_equal(generation(c), 11);

    req_ok(c, "set sticky-salt rollout-7");
    assert_int_equal(generation(c), 12);
    req_ok(c, "set sticky-salt \"with a space\"");
    assert_int_equal(generation(c), 13);

    char *r = req(c, "del route nope");
    assert_error_reply("del route nope", r);
    assert_non_null(strstr(r, "nope"));
    req_ok(c, "del route shadow");
    req_expect(c, "show routes",
               "ok\n"
               "set header-route beta to exp path exact /b\n"
               "set header-route ck to exp method GET,POST header cookie:grp regex b[0-9]+\n"
               "set mirror-route all 2.50 to canary\n"
               "\n");
    req_ok(c, "del routes");
    req_expect(c, "show routes", "ok\n\n");
    assert_int_equal(generation(c), 15);
    req_ok(c, "reset stats");
    assert_int_equal(generation(c), 15);

    /* `show routes` prints the syntax that would set each route: replaying it rebuilds the same table */
    req_ok(c, "set header-route q header x-team exact \"blue \\\"team\\\" \\\\ 1\"");
    req_ok(c, "set mirror-route m 0.01 to exp header user-agent prefix \"Mozilla/5.0 (X11\"");
    char *shown = req(c, "show routes");
    req_ok(c, "del routes");
    for (char *line = strchr(shown, '\n') + 1, *nl; (nl = strchr(line, '\n')) != NULL && nl != line; line = nl + 1) {
        *nl = '\0';
        req_ok(c, line);
        *nl = '\n';
    }
    char *again = req(c, "show routes");
    assert_string_equal(again, shown);
    assert_non_null(strstr(shown, "\"blue \\\"team\\\" \\\\ 1\""));
    ctl_close(c);
    th_weir_stop(env);
}

struct conns_cond {
    ctl_t *c;
    unsigned long long want;
    char last[512];
};

/* Whether `status` reports <want> connections now. */
static bool connections_are(void *arg)
{
    struct conns_cond *cc = arg;
    static char buf[REPLY_MAX];
    if (send_all(cc->c->fd, "status\n", 7) != 0 || read_reply(cc->c, buf, sizeof(buf), TH_TIMEOUT_MS) < 0)
        return false;
    snprintf(cc->last, sizeof(cc->last), "%.500s", buf);
    const char *p = strstr(buf, "\nconnections ");
    return p != NULL && strtoull(p + 13, NULL, 10) == cc->want;
}

static void test_status(void **state)
{
    th_env_t *env = *state;
    start_upstreams(env);
    start_weir(env, "--workers", "3", NULL);
    ctl_t *c = ctl_open(env->sock);
    req_ok(c, "set weight 3");
    req_ok(c, "set weight 0");

    th_run_t v = {0};
    char *argv[] = {(char *)th_weir_bin(), "-V", NULL};
    th_run(env, &v, argv);
    assert_int_equal(v.status, 0);
    const char *sp = strrchr(v.out, ' ');
    assert_non_null(sp);
    char *version = th_strdup(sp + 1);
    version[strcspn(version, "\n")] = '\0';

    char *r = req(c, "status");
    char *lines[8], *val[5];
    int nlines = 0;
    char *p = th_strdup(r);
    for (char *nl; nlines < 8 && (nl = strchr(p, '\n')) != NULL; p = nl + 1) {
        *nl = '\0';
        lines[nlines++] = p;
    }
    if (nlines != 7 || strcmp(lines[0], "ok") != 0 || strcmp(lines[6], "") != 0)
        fail_msg("status reply is not ok + 5 lines + an empty line: \"%s\"", r);
    const char *want[] = {"version ", "uptime ", "workers ", "generation ", "connections "};
    for (int i = 0; i < 5; i++) {
        if (strncmp(lines[i + 1], want[i], strlen(want[i])) != 0)
            fail_msg("status line %d is \"%s\", want \"%sVALUE\" (reply \"%s\")", i + 2, lines[i + 1], want[i], r);
        val[i] = lines[i + 1] + strlen(want[i]);
    }
    assert_string_equal(val[0], version);
    assert_true(val[1][0] != '\0' && strspn(val[1], "0123456789") == strlen(val[1]));
    assert_string_equal(val[2], "3");
    assert_string_equal(val[3], "2");
    assert_true(val[4][0] != '\0' && strspn(val[4], "0123456789") == strlen(val[4]));

    /* connections: the open client connections */
    hconn_t *h1 = hconn_open(env->port);
    assert_string_equal(who_answers(h1, ""), "stable");
    struct conns_cond cc = {.c = c, .want = 1};
    if (!th_poll(connections_are, &cc, TH_TIMEOUT_MS))
        fail_msg("one client connection open; status says: \"%s\"", cc.last);
    hconn_t *h2 = hconn_open(env->port);
    assert_string_equal(who_answers(h2, ""), "stable");
    cc.want = 2;
    if (!th_poll(connections_are, &cc, TH_TIMEOUT_MS))
        fail_msg("two client connections open; status says: \"%s\"", cc.last);
    close_fd(h1->fd);
    close_fd(h2->fd);
    cc.want = 0;
    if (!th_poll(connections_are, &cc, TH_TIMEOUT_MS))
        fail_msg("no client connection open; status says: \"%s\"", cc.last);
    ctl_close(c);
    th_weir_stop(env);
}

/* --- pipelining and concurrent clients ---------------------------------------------------------------------------- */

static void test_pipelined_in_order(void **state)
{
    th_env_t *env = *state;
    start_upstreams(env);
    start_weir(env, "--workers", "2", NULL);
    ctl_t *c = ctl_open(env->sock);

    /* 60 rounds of change + read + refusal, all written at once before any reply is read */
    const int rounds = 60;
    char *all = th_strdup("");
    for (int i = 1; i <= rounds; i++)
        all = th_fmt("%sset weight %d.%02d\nget weight\nbogus %d\nset header-route r%d path exact /%d\nshow routes\n",
                     all, i, i, i, i, i);
    ctl_send(c, all);
    for (int i = 1; i <= rounds; i++) {
        assert_string_equal(ctl_reply(c, "set weight"), "ok\n\n");
        char *want = th_fmt("ok\ncanary %d.%02d\nexp 0.00\nstable %d.%02d\ngeneration %d\n\n", i, i,
                            (10000 - (i * 100 + i)) / 100, (10000 - (i * 100 + i)) % 100, 2 * i - 1);
        assert_string_equal(ctl_reply(c, "get weight"), want);
        char *e = ctl_reply(c, "bogus");
        assert_error_reply("bogus", e);
        assert_string_equal(ctl_reply(c, "set header-route"), "ok\n\n");
        char *routes = ctl_reply(c, "show routes");
        int nlines = 0;
        for (const char *p = routes; (p = strchr(p, '\n')) != NULL; p++)
            nlines++;
        if (nlines != i + 2 || strstr(routes, th_fmt("set header-route r%d to canary path exact /%d\n", i, i)) == NULL)
            fail_msg("round %d: show routes: \"%s\"", i, routes);
    }
    assert_int_equal(c->len, 0); /* no reply more than requests */
    ctl_close(c);
    th_weir_stop(env);
}

#define NCLIENTS 8
#define CLIENT_ROUNDS 50

struct client {
    ctl_t *c;
    int id;
    int fails;
    char why[512];
};

/* One control client: sets its own route CLIENT_ROUNDS times, each time checking that show routes has it. */
static void *client_main(void *arg)
{
    struct client *cl = arg;
    char reply[REPLY_MAX], line[256];
    for (int k = 0; k < CLIENT_ROUNDS && cl->fails == 0; k++) {
        snprintf(line, sizeof(line), "set header-route c%d path exact /%d/%d\n", cl->id, cl->id, k);
        if (send_all(cl->c->fd, line, strlen(line)) != 0 ||
            read_reply(cl->c, reply, sizeof(reply), TH_TIMEOUT_MS) < 0 || strcmp(reply, "ok\n\n") != 0) {
            snprintf(cl->why, sizeof(cl->why), "client %d round %d: %s-> \"%.200s\"", cl->id, k, line, reply);
            cl->fails++;
            break;
        }
        snprintf(line, sizeof(line), "set header-route c%d to canary path exact /%d/%d\n", cl->id, cl->id, k);
        if (send_all(cl->c->fd, "show routes\n", 12) != 0 ||
            read_reply(cl->c, reply, sizeof(reply), TH_TIMEOUT_MS) < 0 || strncmp(reply, "ok\n", 3) != 0 ||
            strstr(reply, line) == NULL) {
            snprintf(cl->why, sizeof(cl->why), "client %d round %d: show routes lacks \"%.*s\": \"%.300s\"", cl->id, k,
                     (int)strlen(line) - 1, line, reply);
            cl->fails++;
        }
    }
    return NULL;
}

static void test_several_clients(void **state)
{
    th_env_t *env = *state;
    start_upstreams(env);
    start_weir(env, "--workers", "2", NULL);
    ctl_t *c = ctl_open(env->sock);
    unsigned long long g0 = generation(c);

    /* a client that sent half a line holds up no one */
    ctl_t *slow = ctl_open(env->sock);
    ctl_send(slow, "get wei");
    req_ok(c, "set weight 9");
    ctl_send(slow, "ght\n");
    assert_string_equal(ctl_reply(slow, "get weight"),
                        th_fmt("ok\ncanary 9.00\nexp 0.00\nstable 91.00\ngeneration %llu\n\n", g0 + 1));

    struct client cl[NCLIENTS];
    pthread_t th[NCLIENTS];
    for (int i = 0; i < NCLIENTS; i++) {
        cl[i] = (struct client){.c = ctl_open(env->sock), .id = i};
    }
    for (int i = 0; i < NCLIENTS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, client_main, &cl[i]), 0);
    for (int i = 0; i < NCLIENTS; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < NCLIENTS; i++)
        if (cl[i].fails != 0)
            fail_msg("%s", cl[i].why);
    /* every change counted once, none lost */
    assert_int_equal(generation(c), g0 + 1 + NCLIENTS * CLIENT_ROUNDS);
    char *routes = req(c, "show routes");
    for (int i = 0; i < NCLIENTS; i++)
        if (strstr(routes, th_fmt("set header-route c%d to canary path exact /%d/%d\n", i, i, CLIENT_ROUNDS - 1)) ==
            NULL)
            fail_msg("client %d's last route missing: \"%s\"", i, routes);
    ctl_close(c);
    th_weir_stop(env);
}

/* --- refusals ----------------------------------------------------------------------------------------------------- */

static void test_invalid_changes_nothing(void **state)
{
    th_env_t *env = *state;
    start_upstreams(env);
    start_weir(env, NULL);
    ctl_t *c = ctl_open(env->sock);
    req_ok(c, "set weight canary 5 exp 10");
    req_ok(c, "set header-route keep header x-keep exact 1");
    req_ok(c, "set sticky-salt s");
    unsigned long long g = generation(c);

    static const char *const bad[] = {
        "frobnicate",
        "get",
        "get weights",
        "show",
        "del",
        "set",
        "set weight",
        "set weight abc",
        "set weight 5,5",
        "set weight 5.123",
        "set weight 0.001",
        "set weight -1",
        "set weight +1",
        "set weight 1e1",
        "set weight 5.",
        "set weight 100.01",
        "set weight 101",
        "set weight 95",                  /* with exp at 10, stable would get -5 */
        "set weight canary 60 exp 50",    /* sum over 100 */
        "set weight canary 50.01 exp 50", /* sum over 100 by one basis point */
        "set weight nope 5",
        "set weight canary 7 nope 5", /* a valid part is not applied either */
        "set weight canary 7 exp 1.234",
        "set weight canary 7 exp",
        "set weight stable 50",
        "set header-route bad path regex ((",
        "set header-route keep path regex [", /* a bad replacement leaves the old route */
        "set header-route bad header x-a regex \"a{2,1}\"",
        "set header-route bad to nope path exact /",
        "set header-route bad",
        "set header-route bad header x-a fuzzy v",
        "set header-route bad path exact \"unterminated",
        "set mirror-route m 101 path prefix /",
        "set mirror-route m 1.234 path prefix /",
        "set mirror-route m x path prefix /",
        "set mirror-route m 5 to nope",
        "set sticky-salt",
        "del route nope",
        "del route",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_refused(c, bad[i]);
    assert_int_equal(generation(c), g);
    req_expect(c, "get weight", th_fmt("ok\ncanary 5.00\nexp 10.00\nstable 85.00\ngeneration %llu\n\n", g));
    req_expect(c, "show routes", "ok\nset header-route keep to canary header x-keep exact 1\n\n");

    /* the route survived the refused replacement and still routes */
    hconn_t *h = hconn_open(env->port);
    assert_string_equal(who_answers(h, "x-keep: 1\r\n"), "canary");
    ctl_close(c);
    th_weir_stop(env);
}

static void test_long_line(void **state)
{
    th_env_t *env = *state;
    start_upstreams(env);
    start_weir(env, NULL);
    ctl_t *c = ctl_open(env->sock);
    req_ok(c, "set weight 3");
    char *before = snapshot(c);
    const char *prefix = "set sticky-salt ";
    size_t plen = strlen(prefix);

    /* 8193 bytes before the newline: over 8 KiB */
    char *line = th_alloc(200 * 1024);
    memcpy(line, prefix, plen);
    memset(line + plen, 'x', 8193 - plen);
    line[8193] = '\0';
    assert_refused(c, line);

    /* 200 KiB in one line, then more requests in the same write: one refusal, then the rest answered */
    memset(line + plen, 'y', 200 * 1024 - 1 - plen);
    line[200 * 1024 - 1] = '\0';
    ctl_send(c, th_fmt("%s\nget weight\nstatus\n", line));
    assert_error_reply("(200 KiB line)", ctl_reply(c, "200 KiB line"));
    char *gw = ctl_reply(c, "get weight");
    char *st = ctl_reply(c, "status");
    assert_true(strncmp(st, "ok\nversion ", 11) == 0);
    assert_string_equal(th_fmt("%s%s", gw, req(c, "show routes")), before);

    /* the same in small pieces */
    for (size_t off = 0; off < 200 * 1024 - 1; off += 1000) {
        char piece[1001];
        size_t n = 200 * 1024 - 1 - off < 1000 ? 200 * 1024 - 1 - off : 1000;
        memcpy(piece, line + off, n);
        piece[n] = '\0';
        ctl_send(c, piece);
    }
    ctl_send(c, "\n");
    assert_error_reply("(200 KiB line in pieces)", ctl_reply(c, "200 KiB line in pieces"));
    assert_string_equal(snapshot(c), before);

    /* exactly 8192 bytes is within the limit */
    unsigned long long g = generation(c);
    memset(line + plen, 'z', 8192 - plen);
    line[8192] = '\0';
    req_ok(c, line);
    assert_int_equal(generation(c), g + 1);
    ctl_close(c);
    th_weir_stop(env);
}

/* --- generations -------------------------------------------------------------------------------------------------- */

static void test_generation(void **state)
{
    th_env_t *env = *state;
    start_upstreams(env);
    start_weir(env, NULL);
    ctl_t *c = ctl_open(env->sock);
    unsigned long long g = generation(c);
    assert_int_equal(g, 0);
    static const struct {
        const char *req;
        int inc; /* 1: a change; 0: leaves the state as it was */
    } steps[] = {
        {"set weight 5", 1},
        {"set weight 5", 0},
        {"set weight 5.0", 0},
        {"set weight 5.00", 0},
        {"set weight canary 5", 0},
        {"set weight 6", 1},
        {"set weight canary 6 exp 0", 0},
        {"set weight exp 1", 1},
        {"set weight exp 1 canary 6", 0},
        {"set header-route r path exact /a", 1},
        {"set header-route r path exact /a", 0},
        {"set header-route r to canary path exact /a", 0},
        {"set header-route r path exact /b", 1},
        {"set header-route r to exp path exact /b", 1},
        {"set mirror-route m 5 path prefix /", 1},
        {"set mirror-route m 5.00 path prefix /", 0},
        {"set mirror-route m 6 path prefix /", 1},
        {"set sticky-salt s1", 1},
        {"set sticky-salt s1", 0},
        {"set sticky-salt s2", 1},
        {"del route r", 1},
        {"del routes", 1},
        {"del routes", 0},
        {"set weight 0", 1},
        {"set weight exp 0", 1},
        {"set weight canary 0 exp 0", 0},
    };
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        req_ok(c, steps[i].req);
        unsigned long long now = generation(c);
        if (now != g + (unsigned)steps[i].inc)
            fail_msg("after \"%s\" generation is %llu, want %llu", steps[i].req, now, g + (unsigned)steps[i].inc);
        g = now;
    }
    assert_int_equal(g, 14);
    /* status agrees */
    char *st = req(c, "status");
    assert_non_null(strstr(st, "\ngeneration 14\n"));
    ctl_close(c);
    th_weir_stop(env);
}

/* Every worker uses a change before the reply: requests on keep-alive connections spread over 4 workers, sent right
 * after each acknowledgement, all follow it. */
static void test_change_seen_by_every_worker(void **state)
{
    th_env_t *env = *state;
    start_upstreams(env);
    start_weir(env, "--workers", "4", NULL);
    ctl_t *c = ctl_open(env->sock);
    enum { N = 16 };
    hconn_t *h[N];
    for (int i = 0; i < N; i++) {
        h[i] = hconn_open(env->port);
        assert_string_equal(who_answers(h[i], ""), "stable");
    }
    for (int round = 0; round < 10; round++) {
        req_ok(c, "set weight 100");
        for (int i = 0; i < N; i++) {
            char *who = who_answers(h[i], "");
            if (strcmp(who, "canary") != 0)
                fail_msg("round %d, connection %d: answered by %s after set weight 100", round, i, who);
        }
        req_ok(c, "set header-route flip to exp header x-flip exact 1");
        for (int i = 0; i < N; i++) {
            assert_string_equal(who_answers(h[i], "x-flip: 1\r\n"), "exp");
            assert_string_equal(who_answers(h[i], ""), "canary");
        }
        req_ok(c, "set weight 0");
        req_ok(c, "del route flip");
        for (int i = 0; i < N; i++) {
            char *who = who_answers(h[i], "x-flip: 1\r\n");
            if (strcmp(who, "stable") != 0)
                fail_msg("round %d, connection %d: answered by %s after set weight 0 and del route", round, i, who);
        }
    }
    ctl_close(c);
    th_weir_stop(env);
}

/* --- weirctl ------------------------------------------------------------------------------------------------------ */

static void test_weirctl(void **state)
{
    th_env_t *env = *state;
    start_upstreams(env);
    start_weir(env, "--workers", "2", NULL);
    th_run_t r = {0};

    weirctl(env, &r, "-s", env->sock, "get", "weight", NULL);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, "canary 0.00\nexp 0.00\nstable 100.00\ngeneration 0\n");
    assert_string_equal(r.err, "");

    weirctl(env, &r, "-s", env->sock, "set", "weight", "12.5", NULL);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, "");
    assert_string_equal(r.err, "");
    weirctl(env, &r, "-s", env->sock, "set", "weight", "canary", "20", "exp", "0.5", NULL);
    assert_int_equal(r.status, 0);
    weirctl(env, &r, "-s", env->sock, "get", "weight", NULL);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, "canary 20.00\nexp 0.50\nstable 79.50\ngeneration 2\n");

    weirctl(env, &r, "-s", env->sock, "show", "routes", NULL);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, "");
    /* each argument is one token: "show routes" given as one argument is quoted, so it names no request */
    weirctl(env, &r, "-s", env->sock, "show routes", NULL);
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "error: "));

    weirctl(env, &r, "-s", env->sock, "set", "weight", "101", NULL);
    assert_int_equal(r.status, 1);
    assert_string_equal(r.out, "");
    if (strncmp(r.err, "error: ", 7) != 0 || strlen(r.err) <= 8)
        fail_msg("weirctl's stderr for a refused request: \"%s\"", r.err);
    weirctl(env, &r, "-s", env->sock, "del", "route", "nope", NULL);
    assert_int_equal(r.status, 1);
    assert_string_equal(r.out, "");
    assert_non_null(strstr(r.err, "error: "));
    assert_non_null(strstr(r.err, "nope"));
    weirctl(env, &r, "-s", env->sock, "frobnicate", NULL);
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "error: "));

    weirctl(env, &r, "-s", env->sock, "status", NULL);
    assert_int_equal(r.status, 0);
    assert_true(strncmp(r.out, "version ", 8) == 0);
    assert_non_null(strstr(r.out, "\nworkers 2\ngeneration 2\nconnections "));

    weirctl(env, &r, "-s", env->sock, "reset", "stats", NULL);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, "");

    /* the refusals changed nothing */
    weirctl(env, &r, "-s", env->sock, "get", "weight", NULL);
    assert_string_equal(r.out, "canary 20.00\nexp 0.50\nstable 79.50\ngeneration 2\n");

    /* no socket at all */
    weirctl(env, &r, "-s", th_fmt("%s/absent.sock", env->dir), "get", "weight", NULL);
    assert_int_equal(r.status, 2);
    assert_string_equal(r.out, "");
    assert_true(strlen(r.err) > 0);
    th_weir_stop(env);

    /* nor once weir is gone */
    weirctl(env, &r, "-s", env->sock, "get", "weight", NULL);
    assert_int_equal(r.status, 2);
    assert_true(strlen(r.err) > 0);
}

static void test_weirctl_quoting(void **state)
{
    th_env_t *env = *state;
    start_upstreams(env);
    start_weir(env, NULL);
    th_run_t r = {0};

    weirctl(env, &r, "-s", env->sock, "set", "header-route", "team", "header", "x-team", "exact", "blue team", NULL);
    assert_int_equal(r.status, 0);
    weirctl(env, &r, "-s", env->sock, "set", "header-route", "odd", "to", "exp", "header", "x-odd", "exact",
            "say \"hi\" \\o/", NULL);
    assert_int_equal(r.status, 0);
    weirctl(env, &r, "-s", env->sock, "set", "sticky-salt", "", NULL);
    assert_int_equal(r.status, 0); /* the empty salt, already in place */
    weirctl(env, &r, "-s", env->sock, "show", "routes", NULL);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, "set header-route team to canary header x-team exact \"blue team\"\n"
                               "set header-route odd to exp header x-odd exact \"say \\\"hi\\\" \\\\o/\"\n");
    assert_string_equal(r.err, "");
    weirctl(env, &r, "-s", env->sock, "get", "weight", NULL);
    assert_non_null(strstr(r.out, "\ngeneration 2\n"));

    /* the values arrived unmangled: they match the headers */
    hconn_t *h = hconn_open(env->port);
    assert_string_equal(who_answers(h, "x-team: blue team\r\n"), "canary");
    assert_string_equal(who_answers(h, "x-team: blue\r\n"), "stable");
    assert_string_equal(who_answers(h, "x-odd: say \"hi\" \\o/\r\n"), "exp");

    /* a line break cannot be carried: refused locally, nothing sent */
    weirctl(env, &r, "-s", env->sock, "set", "sticky-salt", "a\nb", NULL);
    assert_int_not_equal(r.status, 0);
    weirctl(env, &r, "-s", env->sock, "get", "weight", NULL);
    assert_non_null(strstr(r.out, "\ngeneration 2\n"));
    th_weir_stop(env);
}

/* --- the socket file ---------------------------------------------------------------------------------------------- */

static void assert_socket_mode(const char *path, unsigned mode)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        fail_msg("stat %s: %s", path, strerror(errno));
    assert_true(S_ISSOCK(st.st_mode));
    if ((st.st_mode & 07777) != mode)
        fail_msg("%s has mode %04o, want %04o", path, (unsigned)(st.st_mode & 07777), mode);
}

static void test_socket_mode_default(void **state)
{
    th_env_t *env = *state;
    start_upstreams(env);
    mode_t old = umask(0); /* a permissive umask of the caller does not loosen it */
    start_weir(env, NULL);
    umask(old);
    assert_socket_mode(env->sock, 0600);
    th_weir_stop(env);
}

static void test_socket_mode_option(void **state)
{
    th_env_t *env = *state;
    start_upstreams(env);
    mode_t old = umask(077); /* nor does a strict one tighten it */
    start_weir(env, "--control-mode", "0660", NULL);
    umask(old);
    assert_socket_mode(env->sock, 0660);
    ctl_t *c = ctl_open(env->sock);
    req_ok(c, "set weight 1");
    ctl_close(c);
    th_weir_stop(env);
}

static void test_stale_socket_replaced(void **state)
{
    th_env_t *env = *state;
    start_upstreams(env);
    /* a socket file left behind by a process that is gone: bound, never listened on, closed */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    assert_true(fd >= 0);
    assert_true(strlen(env->sock) < sizeof(sa.sun_path));
    memcpy(sa.sun_path, env->sock, strlen(env->sock) + 1);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(fd);
    struct stat st;
    assert_int_equal(lstat(env->sock, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(unix_connect(env->sock), -1);

    start_weir(env, NULL);
    ctl_t *c = ctl_open(env->sock);
    req_expect(c, "get weight", "ok\ncanary 0.00\nexp 0.00\nstable 100.00\ngeneration 0\n\n");
    ctl_close(c);
    assert_socket_mode(env->sock, 0600);
    th_weir_stop(env);
}

static void test_live_socket_refused(void **state)
{
    th_env_t *env = *state;
    start_upstreams(env);
    start_weir(env, NULL);
    ctl_t *c = ctl_open(env->sock);
    req_ok(c, "set weight 7");

    /* a second weir on the same control path */
    th_proc_t second;
    const char *argv[] = {th_weir_bin(),
                          "--listen",
                          th_fmt("127.0.0.1:%d", th_free_port()),
                          "--admin",
                          th_fmt("127.0.0.1:%d", th_free_port()),
                          "--control",
                          env->sock,
                          "--workers",
                          "1",
                          "--stable",
                          env->up[0].addr,
                          NULL};
    th_spawn(env, &second, "weir-second", (char *const *)argv);
    int st = th_wait_exit(&second, TH_TIMEOUT_MS);
    if (st < 0) {
        th_stop(&second, SIGKILL, TH_TIMEOUT_MS);
        fail_msg("a second weir on a live control socket kept running");
    }
    if (st == 0)
        fail_msg("a second weir on a live control socket exited 0");
    char *err = th_slurp(second.err);
    if (th_has_sanitizer_report(err))
        fail_msg("sanitizer report from the second weir (exit %d):\n%s", st, err);
    if (strstr(err, env->sock) == NULL) {
        th_dump_file(second.err);
        fail_msg("the second weir's message does not name the socket %s", env->sock);
    }

    /* the first one still owns the path */
    ctl_t *d = ctl_open(env->sock);
    req_expect(d, "get weight", "ok\ncanary 7.00\nexp 0.00\nstable 93.00\ngeneration 1\n\n");
    req_ok(c, "set weight 8");
    ctl_close(c);
    ctl_close(d);
    th_weir_stop(env);
}

/* Whether <text> holds a line that is exactly "ok": some request was answered. */
static bool has_ok_line(const char *text)
{
    return strncmp(text, "ok\n", 3) == 0 || strstr(text, "\nok\n") != NULL;
}

/* --- TCP control -------------------------------------------------------------------------------------------------- */

static void test_tcp_needs_token_file(void **state)
{
    th_env_t *env = *state;
    start_upstreams(env);
    th_run_t r = {0};
    int port = th_free_port();
    run_weir(env, &r, th_fmt("%s/w.sock", env->dir), "--stable", env->up[0].addr, "--control-tcp",
             th_fmt("127.0.0.1:%d", port), NULL);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "control-token-file"));
    assert_false(th_port_open(port));
}

static void test_tcp_auth(void **state)
{
    th_env_t *env = *state;
    start_upstreams(env);
    char *tokfile = th_write_file(env, "token", "s3cret-Token\n");
    int port = th_free_port();
    start_weir(env, "--control-tcp", th_fmt("127.0.0.1:%d", port), "--control-token-file", tokfile, NULL);

    /* a first request other than auth: closed, nothing answered */
    ctl_t *c = ctl_open_tcp(port);
    ctl_send(c, "get weight\n");
    if (!read_until_closed(c, TH_TIMEOUT_MS))
        fail_msg("TCP control connection left open after a first request other than auth");
    if (has_ok_line(c->buf) || strstr(c->buf, "generation") != NULL)
        fail_msg("unauthenticated request answered: \"%s\"", c->buf);
    ctl_close(c);

    /* a wrong token: closed */
    c = ctl_open_tcp(port);
    ctl_send(c, "auth s3cret\n");
    if (!read_until_closed(c, TH_TIMEOUT_MS))
        fail_msg("TCP control connection left open after a wrong token");
    if (has_ok_line(c->buf))
        fail_msg("wrong token accepted: \"%s\"", c->buf);
    ctl_close(c);

    /* the right token after another request comes too late; nothing after the first request runs */
    c = ctl_open_tcp(port);
    ctl_send(c, "set weight 50\nauth s3cret-Token\nset weight 60\n");
    if (!read_until_closed(c, TH_TIMEOUT_MS))
        fail_msg("TCP control connection left open after a first request other than auth");
    if (has_ok_line(c->buf))
        fail_msg("requests on an unauthenticated connection answered: \"%s\"", c->buf);
    ctl_close(c);
    ctl_t *u = ctl_open(env->sock);
    req_expect(u, "get weight", "ok\ncanary 0.00\nexp 0.00\nstable 100.00\ngeneration 0\n\n");

    /* the right token: ok, then requests work */
    c = ctl_open_tcp(port);
    req_ok(c, "auth s3cret-Token");
    req_ok(c, "set weight 7");
    req_expect(c, "get weight", "ok\ncanary 7.00\nexp 0.00\nstable 93.00\ngeneration 1\n\n");
    assert_error_reply("set weight 700", req(c, "set weight 700"));
    req_expect(c, "show routes", "ok\n\n");
    ctl_close(c);
    /* and pipelined behind the auth line */
    c = ctl_open_tcp(port);
    ctl_send(c, "auth s3cret-Token\nget weight\nset weight 8\n");
    assert_string_equal(ctl_reply(c, "auth"), "ok\n\n");
    assert_string_equal(ctl_reply(c, "get weight"), "ok\ncanary 7.00\nexp 0.00\nstable 93.00\ngeneration 1\n\n");
    assert_string_equal(ctl_reply(c, "set weight 8"), "ok\n\n");
    ctl_close(c);
    req_expect(u, "get weight", "ok\ncanary 8.00\nexp 0.00\nstable 92.00\ngeneration 2\n\n");

    /* weirctl over TCP */
    th_run_t r = {0};
    char *url = th_fmt("tcp://127.0.0.1:%d", port);
    weirctl(env, &r, "-s", url, "-k", tokfile, "get", "weight", NULL);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, "canary 8.00\nexp 0.00\nstable 92.00\ngeneration 2\n");
    weirctl(env, &r, "-s", url, "-k", tokfile, "set", "weight", "9", NULL);
    assert_int_equal(r.status, 0);
    weirctl(env, &r, "-s", url, "-k", tokfile, "set", "weight", "900", NULL);
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "error: "));
    char *badtok = th_write_file(env, "badtoken", "wrong\n");
    weirctl(env, &r, "-s", url, "-k", badtok, "set", "weight", "10", NULL);
    if (r.status != 2)
        fail_msg("weirctl with a wrong token exited %d (stderr \"%s\"), want 2", r.status, r.err);
    assert_string_equal(r.out, "");
    req_expect(u, "get weight", "ok\ncanary 9.00\nexp 0.00\nstable 91.00\ngeneration 3\n\n");
    ctl_close(u);
    th_weir_stop(env);
}

/* --- the state file ----------------------------------------------------------------------------------------------- */

#define NUSERS 40

/* Which upstream each of NUSERS sticky users lands on, one string. */
static char *cohorts(th_env_t *env)
{
    hconn_t *h = hconn_open(env->port);
    char *s = th_strdup("");
    for (int i = 0; i < NUSERS; i++)
        s = th_fmt("%s%s ", s, who_answers(h, th_fmt("x-user: user-%d\r\n", i)));
    close_fd(h->fd);
    return s;
}

static void test_state_file_restart(void **state)
{
    th_env_t *env = *state;
    start_upstreams(env);
    char *sf = th_fmt("%s/state", env->dir);
    start_weir(env, "--state-file", sf, "--sticky", "header:x-user", "--workers", "2", NULL);
    ctl_t *c = ctl_open(env->sock);
    req_ok(c, "set weight canary 40.25 exp 9.5");
    req_ok(c, "set header-route beta to exp header x-beta exact \"yes please\"");
    req_ok(c, "set mirror-route shadow 5 path prefix /api");
    req_ok(c, "set header-route gone path exact /gone");
    req_ok(c, "del route gone");
    req_ok(c, "set sticky-salt \"rollout 42\"");
    char *before = snapshot(c);
    assert_int_equal(generation(c), 6);
    char *users = cohorts(env);
    ctl_close(c);
    th_weir_stop(env);

    start_weir(env, "--state-file", sf, "--sticky", "header:x-user", "--workers", "2", NULL);
    c = ctl_open(env->sock);
    char *after = snapshot(c);
    assert_string_equal(after, before);
    /* the salt came back too: every sticky user is where they were */
    assert_string_equal(cohorts(env), users);
    hconn_t *h = hconn_open(env->port);
    assert_string_equal(who_answers(h, "x-beta: yes please\r\n"), "exp");

    /* the next change continues the count */
    req_ok(c, "set sticky-salt other");
    assert_int_equal(generation(c), 7);
    /* (and the salt does decide the cohorts, so the comparison above meant something) */
    if (strcmp(cohorts(env), users) == 0)
        fail_msg("a new sticky salt moved none of %d users", NUSERS);
    ctl_close(c);
    th_weir_stop(env);
}

static void test_state_file_corrupt(void **state)
{
    th_env_t *env = *state;
    start_upstreams(env);
    static const char *const bad[] = {
        "generation 5\nset weight canary 5\nthis is not a request\n",
        "generation 3\nset weight canary 150\n",
        "generation x\n",
        "set weight nope 5\n",
        "set header-route r path regex ((\n",
        "get weight\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *sf = th_write_file(env, th_fmt("state-%zu", i), bad[i]);
        th_run_t r = {0};
        run_weir(env, &r, th_fmt("%s/c%zu.sock", env->dir, i), "--stable", env->up[0].addr, "--canary", env->up[1].addr,
                 "--state-file", sf, NULL);
        if (r.status != 2 || strstr(r.err, sf) == NULL)
            fail_msg("state file \"%s\": weir exited %d with stderr \"%s\"; want 2 and a message naming %s", bad[i],
                     r.status, r.err, sf);
        /* the file is left for a person to look at */
        assert_string_equal(th_slurp(sf), bad[i]);
    }
}

static void test_state_file_missing(void **state)
{
    th_env_t *env = *state;
    start_upstreams(env);
    char *sf = th_fmt("%s/state", env->dir);
    start_weir(env, "--state-file", sf, NULL);
    ctl_t *c = ctl_open(env->sock);
    req_expect(c, "get weight", "ok\ncanary 0.00\nexp 0.00\nstable 100.00\ngeneration 0\n\n");
    struct stat st;
    req_ok(c, "set weight 5");
    if (stat(sf, &st) != 0 || st.st_size == 0)
        fail_msg("no state file %s after a change", sf);
    char *before = snapshot(c);
    ctl_close(c);
    th_weir_stop(env);
    start_weir(env, "--state-file", sf, NULL);
    c = ctl_open(env->sock);
    assert_string_equal(snapshot(c), before);
    ctl_close(c);
    th_weir_stop(env);
}

/* --- changes under load ------------------------------------------------------------------------------------------- */

#define LOAD_THREADS 4
#define LOAD_CONNS 4         /* per thread */
#define LOAD_MAX_REQS 200000 /* per thread */
#define LOAD_MAX_MS 40000    /* the whole stream, and the changes */
#define LOAD_CHANGES 1000    /* then one more: set weight 0 */
#define LOAD_SETTLED 4       /* requests answered under each change, waited for before the next */
#define LOAD_FINAL 500       /* requests after the final set weight 0 */

/* Change <i>: even ones set the canary weight from a cycle holding 0 and 100 (each differs from the one before);
 * odd ones add and remove a route sending `x-load: v` to exp. Change LOAD_CHANGES is `set weight 0`. */
static const char *const load_weights[] = {"100", "0", "12.34", "100", "87.5"};

static void load_change(long i, char *line, size_t n)
{
    if (i == LOAD_CHANGES)
        snprintf(line, n, "set weight 0\n");
    else if (i % 2 == 0)
        snprintf(line, n, "set weight %s\n", load_weights[(i / 2) % 5]);
    else if ((i / 2) % 2 == 0)
        snprintf(line, n, "set header-route r to exp header x-load exact v\n");
    else
        snprintf(line, n, "del route r\n");
}

/* Who must answer a request (with the header x-load: v or not) once change <k> (-1: none yet) is in place and
 * before the next is sent; NULL when the weights leave a choice between stable and canary. */
static const char *load_expected(long k, bool with_header)
{
    long e = k % 2 == 0 ? k : k - 1; /* the last weight change */
    long o = k % 2 != 0 ? k : k - 1; /* the last route change */
    if (k == LOAD_CHANGES)
        o = LOAD_CHANGES - 1;
    bool route = o >= 0 && (o / 2) % 2 == 0;
    const char *w = e < 0 || k == LOAD_CHANGES ? "0" : load_weights[(e / 2) % 5];
    if (with_header && route)
        return "exp";
    if (strcmp(w, "100") == 0)
        return "canary";
    if (strcmp(w, "0") == 0)
        return "stable";
    return NULL;
}

struct load {
    atomic_long sending;                   /* index of the last change written to the control socket */
    atomic_long acked;                     /* index of the last change acknowledged */
    atomic_long settled[LOAD_CHANGES + 1]; /* requests answered entirely under change i */
    atomic_bool stop;
    int64_t deadline;
};

struct loader {
    struct load *ld;
    hconn_t *h[LOAD_CONNS];
    atomic_long done;   /* requests answered 200 */
    atomic_long rounds; /* passes over all LOAD_CONNS connections */
    long fails;
    char why[512];
};

static void *loader_main(void *arg)
{
    struct loader *l = arg;
    struct load *ld = l->ld;
    long n = 0;
    while (!atomic_load(&ld->stop) && n < LOAD_MAX_REQS && now_ms() < ld->deadline) {
        for (int i = 0; i < LOAD_CONNS; i++, n++) {
            if (l->h[i]->fd < 0)
                continue;
            char who[64], why[256];
            bool hdr = n % 2 != 0;
            long s1 = atomic_load(&ld->sending), a1 = atomic_load(&ld->acked);
            int st = hget(l->h[i], "/", hdr ? "x-load: v\r\n" : "", who, sizeof(who), why, sizeof(why));
            long s2 = atomic_load(&ld->sending);
            /* sent after change s1 was acknowledged, answered before the next was sent: its result is known */
            bool settled = a1 == s1 && s2 == s1;
            const char *want = settled ? load_expected(s1, hdr) : NULL;
            bool known = strcmp(who, "stable") == 0 || strcmp(who, "canary") == 0 || strcmp(who, "exp") == 0;
            if (st == 200 && known && (want == NULL || strcmp(who, want) == 0)) {
                atomic_fetch_add(&l->done, 1);
                if (settled && s1 >= 0)
                    atomic_fetch_add(&ld->settled[s1], 1);
                continue;
            }
            if (l->fails++ == 0) {
                char line[128] = "(none)\n";
                if (s1 >= 0)
                    load_change(s1, line, sizeof(line));
                if (st < 0)
                    snprintf(l->why, sizeof(l->why), "request %ld on connection %d: %s", n, i, why);
                else
                    snprintf(l->why, sizeof(l->why),
                             "request %ld on connection %d%s: status %d from \"%s\"; want %s (sent after change %ld "
                             "\"%.*s\" was acknowledged, answered before the next was sent: %s)",
                             n, i, hdr ? " with x-load: v" : "", st, who, want ? want : "any", s1,
                             (int)strlen(line) - 1, line, settled ? "yes" : "no");
            }
            if (st < 0) /* the connection is out of step; the test already failed */
                l->h[i]->fd = -1;
        }
        atomic_fetch_add(&l->rounds, 1);
    }
    return NULL;
}

static void nap_us(long us)
{
    struct timespec ts = {0, us * 1000};
    nanosleep(&ts, NULL);
}

/* Polls until change <i> has <want> settled requests, a client thread failed, or the deadline passed. */
static bool wait_settled(struct load *ld, struct loader *l, long i, long want)
{
    for (;;) {
        if (atomic_load(&ld->settled[i]) >= want)
            return true;
        for (int t = 0; t < LOAD_THREADS; t++)
            if (l[t].fails != 0)
                return false;
        if (now_ms() >= ld->deadline)
            return false;
        nap_us(50);
    }
}

static long total_done(struct loader *l)
{
    long s = 0;
    for (int t = 0; t < LOAD_THREADS; t++)
        s += atomic_load(&l[t].done);
    return s;
}

static void test_changes_under_load(void **state)
{
    th_env_t *env = *state;
    start_upstreams(env);
    start_weir(env, "--workers", "4", NULL);
    ctl_t *c = ctl_open(env->sock);
    unsigned long long g0 = generation(c);

    static struct load ld;
    static struct loader l[LOAD_THREADS];
    memset(&ld, 0, sizeof(ld));
    atomic_store(&ld.sending, -1);
    atomic_store(&ld.acked, -1);
    ld.deadline = now_ms() + LOAD_MAX_MS;
    int fds[LOAD_THREADS * LOAD_CONNS];
    for (int t = 0; t < LOAD_THREADS; t++) {
        memset(&l[t], 0, sizeof(l[t]));
        l[t].ld = &ld;
        for (int i = 0; i < LOAD_CONNS; i++) {
            l[t].h[i] = hconn_open(env->port);
            fds[t * LOAD_CONNS + i] = l[t].h[i]->fd;
        }
    }
    pthread_t th[LOAD_THREADS];
    for (int t = 0; t < LOAD_THREADS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, loader_main, &l[t]), 0);

    /* the stream flows on every connection before the first change */
    bool flowing = true;
    for (int t = 0; t < LOAD_THREADS && flowing; t++)
        while ((flowing = l[t].fails == 0 && now_ms() < ld.deadline) && atomic_load(&l[t].rounds) < 1)
            nap_us(50);
    long at_start = total_done(l);

    char reply[REPLY_MAX] = "";
    long bad_change = -1, unsettled = -1;
    for (long i = 0; i <= LOAD_CHANGES && flowing; i++) {
        char line[128];
        load_change(i, line, sizeof(line));
        atomic_store(&ld.sending, i);
        if (send_all(c->fd, line, strlen(line)) != 0 || read_reply(c, reply, sizeof(reply), TH_TIMEOUT_MS) < 0 ||
            strcmp(reply, "ok\n\n") != 0) {
            bad_change = i;
            print_error("ERROR: change %ld: %s-> \"%s\"\n", i, line, reply);
            break;
        }
        atomic_store(&ld.acked, i);
        if (!wait_settled(&ld, l, i, i == LOAD_CHANGES ? LOAD_FINAL : LOAD_SETTLED)) {
            unsettled = i;
            break;
        }
    }
    long at_end = total_done(l);
    atomic_store(&ld.stop, true);
    for (int t = 0; t < LOAD_THREADS; t++)
        pthread_join(th[t], NULL);

    for (int t = 0; t < LOAD_THREADS; t++)
        if (l[t].fails != 0)
            fail_msg("client thread %d: %ld failed requests, first: %s", t, l[t].fails, l[t].why);
    if (!flowing)
        fail_msg("the request stream did not start on every connection");
    if (bad_change >= 0)
        fail_msg("change %ld of %d was not acknowledged", bad_change, LOAD_CHANGES);
    if (unsettled >= 0)
        fail_msg("no requests answered after change %ld within the time bound (%ld of %d)", unsettled,
                 atomic_load(&ld.settled[unsettled]), unsettled == LOAD_CHANGES ? LOAD_FINAL : LOAD_SETTLED);
    if (at_end <= at_start)
        fail_msg("no request was answered while the changes were applied");
    print_message("%ld requests during %d changes\n", at_end - at_start, LOAD_CHANGES + 1);
    /* every change counted; the last one, set weight 0, too */
    assert_int_equal(generation(c), g0 + LOAD_CHANGES + 1);
    req_expect(c, "get weight",
               th_fmt("ok\ncanary 0.00\nexp 0.00\nstable 100.00\ngeneration %llu\n\n", g0 + LOAD_CHANGES + 1));
    req_expect(c, "show routes", "ok\n\n");
    for (int i = 0; i < LOAD_THREADS * LOAD_CONNS; i++)
        close_fd(fds[i]);
    ctl_close(c);
    th_weir_stop(env);
}

/* Counts who answers <n> GETs on one keep-alive connection: stable, canary, exp, exp1 and anything else. */
static void split_counts(th_env_t *env, int n, int counts[5])
{
    static const char *const names[] = {"stable", "canary", "exp", "exp1"};
    hconn_t *h = hconn_open(env->port);
    memset(counts, 0, 5 * sizeof(counts[0]));
    for (int i = 0; i < n; i++) {
        char *who = who_answers(h, "");
        int k = 0;
        while (k < 4 && strcmp(who, names[k]) != 0)
            k++;
        counts[k]++;
        th_free(who);
    }
    close_fd(h->fd);
}

/* `set upstream`, `show upstreams`, `del upstream` (SPEC §4): a variant declared at run time takes its share of the
 * weights at once; a repeat is no change; removal only once nothing sends to it. */
static void test_upstream_commands(void **state)
{
    th_env_t *env = *state;
    start_upstreams(env);
    assert_int_equal(th_upstream_start(env, "exp1"), 3);
    start_weir(env, "--workers", "2", NULL);
    ctl_t *c = ctl_open(env->sock);
    int n[5];

    req_expect(
        c, "show upstreams",
        th_fmt("ok\ncanary %s up\nexp %s up\nstable %s up\n\n", env->up[1].addr, env->up[2].addr, env->up[0].addr));
    assert_refused(c, "set weight canary 10 exp1 5");
    assert_refused(c, "set upstream exp1 nowhere");
    assert_refused(c, "set upstream Exp1 127.0.0.1:1");
    assert_refused(c, "del upstream exp1");
    assert_refused(c, "del upstream canary");

    req_ok(c, "set upstream exp1 127.0.0.9:1");
    assert_int_equal(generation(c), 1);
    req_ok(c, th_fmt("set upstream exp1 %s", env->up[3].addr)); /* replaces the endpoint */
    assert_int_equal(generation(c), 2);
    req_ok(c, th_fmt("set upstream exp1 %s", env->up[3].addr)); /* the same again: no new generation */
    assert_int_equal(generation(c), 2);
    req_expect(c, "show upstreams",
               th_fmt("ok\ncanary %s up\nexp %s up\nexp1 %s up\nstable %s up\n\n", env->up[1].addr, env->up[2].addr,
                      env->up[3].addr, env->up[0].addr));
    req_ok(c, "set weight canary 10 exp1 5");
    req_expect(c, "get weight", "ok\ncanary 10.00\nexp 0.00\nexp1 5.00\nstable 85.00\ngeneration 3\n\n");

    /* 2000 requests: expected 200 / 100 / 1700; the bounds are over 6 standard deviations wide */
    split_counts(env, 2000, n);
    if (n[1] < 100 || n[1] > 320 || n[3] < 40 || n[3] > 180 || n[2] != 0 || n[4] != 0)
        fail_msg("split stable %d canary %d exp %d exp1 %d other %d, want about 1700/200/0/100", n[0], n[1], n[2], n[3],
                 n[4]);

    /* removal: refused while it has a weight or a route, then gone from every reply */
    req_ok(c, "set header-route e to exp1 header x-e exact 1");
    req_ok(c, "set weight exp1 0");
    assert_refused(c, "del upstream exp1");
    req_ok(c, "del route e");
    req_ok(c, "del upstream exp1");
    assert_refused(c, "del upstream exp1");
    req_expect(c, "get weight", "ok\ncanary 10.00\nexp 0.00\nstable 90.00\ngeneration 7\n\n");
    req_expect(
        c, "show upstreams",
        th_fmt("ok\ncanary %s up\nexp %s up\nstable %s up\n\n", env->up[1].addr, env->up[2].addr, env->up[0].addr));
    split_counts(env, 200, n);
    assert_int_equal(n[3], 0);
    assert_int_equal(n[4], 0);

    /* weirctl forwards the new requests */
    th_run_t r = {0};
    weirctl(env, &r, "-s", env->sock, "set", "upstream", "exp1", env->up[3].addr, NULL);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, "");
    weirctl(env, &r, "-s", env->sock, "show", "upstreams", NULL);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, th_fmt("canary %s up\nexp %s up\nexp1 %s up\nstable %s up\n", env->up[1].addr,
                                      env->up[2].addr, env->up[3].addr, env->up[0].addr));
    weirctl(env, &r, "-s", env->sock, "del", "upstream", "stable", NULL);
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "error: "));
    weirctl(env, &r, "--help", NULL);
    assert_non_null(strstr(r.out, "set upstream VARIANT HOST:PORT [HOST:PORT ...] | del upstream VARIANT | show "
                                  "upstreams\n"));
    ctl_close(c);
    th_weir_stop(env);
}

/* An endpoint that refuses connections shows as `backoff` while weir skips it. */
static void test_upstream_backoff_shown(void **state)
{
    th_env_t *env = *state;
    start_upstreams(env);
    start_weir(env, NULL);
    ctl_t *c = ctl_open(env->sock);
    int port = th_free_port(); /* nobody listens there */
    req_ok(c, th_fmt("set upstream exp1 127.0.0.1:%d", port));
    req_ok(c, "set header-route e to exp1 header x-e exact 1");
    req_expect(c, "show upstreams",
               th_fmt("ok\ncanary %s up\nexp %s up\nexp1 127.0.0.1:%d up\nstable %s up\n\n", env->up[1].addr,
                      env->up[2].addr, port, env->up[0].addr));
    char *want = th_fmt("ok\ncanary %s up\nexp %s up\nexp1 127.0.0.1:%d backoff\nstable %s up\n\n", env->up[1].addr,
                        env->up[2].addr, port, env->up[0].addr);
    char *got = NULL;
    /* each refused request starts a 2 s backoff; asking right after one must see it (a few tries absorb a stall) */
    for (int i = 0; i < 5 && (got == NULL || strcmp(got, want) != 0); i++) {
        th_resp_t r = {0};
        assert_int_equal(th_http(env->port, "GET / HTTP/1.1\r\nHost: x\r\nx-e: 1\r\n\r\n", &r), 0);
        assert_int_equal(r.status, 502);
        got = req(c, "show upstreams");
    }
    assert_string_equal(got, want);
    ctl_close(c);
    th_weir_stop(env);
}

/* A replica restarted with its state file has the variants declared at run time, their weights and routes. */
static void test_upstream_state_file(void **state)
{
    th_env_t *env = *state;
    start_upstreams(env);
    assert_int_equal(th_upstream_start(env, "exp1"), 3);
    char *sf = th_fmt("%s/state", env->dir);
    start_weir(env, "--state-file", sf, NULL);
    ctl_t *c = ctl_open(env->sock);
    req_ok(c, th_fmt("set upstream exp1 %s", env->up[3].addr));
    req_ok(c, "set weight canary 1 exp1 2");
    req_ok(c, "set header-route e to exp1 header x-e exact 1");
    char *before = th_fmt("%s%s", snapshot(c), req(c, "show upstreams"));
    ctl_close(c);
    th_weir_stop(env);

    start_weir(env, "--state-file", sf, NULL);
    c = ctl_open(env->sock);
    assert_string_equal(th_fmt("%s%s", snapshot(c), req(c, "show upstreams")), before);
    hconn_t *h = hconn_open(env->port);
    assert_string_equal(who_answers(h, "x-e: 1\r\n"), "exp1");
    ctl_close(c);
    th_weir_stop(env);
}

/* --- bounds: authentication, connections, timeouts, unread replies, acknowledgements --------------------------------
 */

/* A number of kB from a line "<field> N kB" of weir's /proc/PID/status (VmRSS, VmHWM). */
static long weir_status_kb(th_env_t *env, const char *field)
{
    char *s = th_slurp(th_fmt("/proc/%d/status", (int)env->weir.pid));
    const char *p = strstr(s, field);
    if (p == NULL)
        fail_msg("no %s in /proc/%d/status", field, (int)env->weir.pid);
    return strtol(p + strlen(field), NULL, 10);
}

/* Counts the occurrences of <needle> in <hay>. */
static int count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

/* Starts weir with a TCP control listener (token "s3cret-Token") and the extra NULL-terminated flags (up to 4).
 * Returns the TCP port. */
static int start_weir_tcp(th_env_t *env, const char *a1, const char *a2, const char *a3, const char *a4)
{
    char *tokfile = th_write_file(env, "token", "s3cret-Token\n");
    int port = th_free_port();
    start_upstreams(env);
    start_weir(env, "--control-tcp", th_fmt("127.0.0.1:%d", port), "--control-token-file", tokfile, a1, a2, a3, a4,
               NULL);
    return port;
}

static void test_tcp_unauthenticated_not_executed(void **state)
{
    th_env_t *env = *state;
    int port = start_weir_tcp(env, NULL, NULL, NULL, NULL);
    ctl_t *u = ctl_open(env->sock);
    req_expect(u, "show routes", "ok\n\n");
    long hwm0 = weir_status_kb(env, "VmHWM:");

    /* glibc takes about 180 MB and half a second to compile this regex: an unauthenticated client must not get that
     * far (SPEC §4: nothing but `auth` is recognised before authentication) */
    ctl_t *c = ctl_open_tcp(port);
    ctl_send(c, "set header-route x header h regex \"((a{1,100}){1,100}){1,10}\"\n");
    if (!read_until_closed(c, TH_TIMEOUT_MS))
        fail_msg("TCP control connection left open after an unauthenticated set header-route");
    assert_string_equal(c->buf, "error: authentication failed\n\n");
    ctl_close(c);
    long hwm1 = weir_status_kb(env, "VmHWM:");
    if (hwm1 - hwm0 > 32 * 1024)
        fail_msg("weir's peak RSS grew from %ld kB to %ld kB for an unauthenticated request", hwm0, hwm1);
    req_expect(u, "show routes", "ok\n\n");
    assert_null(strstr(th_slurp(env->weir.err), "generation 1"));
    ctl_close(u);
    th_weir_stop(env);
}

static void test_tcp_failed_auth_delayed_and_logged_once(void **state)
{
    th_env_t *env = *state;
    int port = start_weir_tcp(env, NULL, NULL, NULL, NULL);

    /* answered at once (SPEC §4), closed only after the delay that bounds the rate of guesses per connection slot;
     * the delay is a minimum, so measuring from before the request cannot be early */
    int64_t t0 = now_ms();
    ctl_t *c = ctl_open_tcp(port);
    ctl_send(c, "auth s3cret\n");
    assert_string_equal(ctl_reply(c, "wrong auth"), "error: authentication failed\n\n");
    if (!read_until_closed(c, TH_TIMEOUT_MS))
        fail_msg("TCP control connection left open after a wrong token");
    int64_t took = now_ms() - t0;
    if (took < 1000)
        fail_msg("connection closed %lld ms after a wrong token, want the 1000 ms delay", (long long)took);
    assert_string_equal(c->buf, "");
    ctl_close(c);

    /* ten more failures at once, wrong tokens and other first requests: each answered and closed, logged once */
    ctl_t *cs[10];
    for (int i = 0; i < 10; i++) {
        cs[i] = ctl_open_tcp(port);
        ctl_send(cs[i], i % 2 ? th_fmt("auth guess-%d\n", i) : "get weight\n");
    }
    for (int i = 0; i < 10; i++) {
        if (!read_until_closed(cs[i], TH_TIMEOUT_MS))
            fail_msg("failed client %d left open", i);
        assert_string_equal(cs[i]->buf, "error: authentication failed\n\n");
        ctl_close(cs[i]);
    }
    char *log = th_slurp(env->weir.err);
    int lines = count_of(log, "failed to authenticate");
    if (lines < 1 || lines > 2)
        fail_msg("%d log lines about 11 failed authentications within seconds, want 1 (rate-limited):\n%s", lines, log);

    /* the right token still works */
    c = ctl_open_tcp(port);
    req_ok(c, "auth s3cret-Token");
    req_ok(c, "set weight 4");
    ctl_close(c);
    th_weir_stop(env);
}

static void test_overlong_first_line_closes(void **state)
{
    th_env_t *env = *state;
    int port = start_weir_tcp(env, NULL, NULL, NULL, NULL);
    char *junk = th_alloc(9001);
    memset(junk, 'x', 9000);
    junk[9000] = '\0';

    ctl_t *c = ctl_open(env->sock);
    ctl_send(c, junk);
    if (!read_until_closed(c, TH_TIMEOUT_MS))
        fail_msg("Unix control connection left open after an overlong first line");
    assert_string_equal(c->buf, "error: line too long\n\n");
    ctl_close(c);

    c = ctl_open_tcp(port);
    ctl_send(c, junk);
    if (!read_until_closed(c, TH_TIMEOUT_MS))
        fail_msg("TCP control connection left open after an overlong first line");
    assert_string_equal(c->buf, "error: line too long\n\n");
    ctl_close(c);

    /* a later overlong line is refused and the connection goes on (SPEC §4, test_long_line) */
    c = ctl_open_tcp(port);
    req_ok(c, "auth s3cret-Token");
    ctl_send(c, th_fmt("%s\n", junk));
    assert_error_reply("(overlong line)", ctl_reply(c, "overlong line"));
    req_ok(c, "set weight 2");
    ctl_close(c);
    th_weir_stop(env);
}

#define CTL_CAP 64 /* proxy/control.c CTL_MAX_CONNS, per listener */

static void test_connection_cap(void **state)
{
    th_env_t *env = *state;
    int port = start_weir_tcp(env, NULL, NULL, NULL, NULL);
    ctl_t *cs[CTL_CAP];
    for (int i = 0; i < CTL_CAP; i++) {
        cs[i] = ctl_open(env->sock);
        req_ok(cs[i], "auth x"); /* answered: weir holds this connection */
    }
    /* one more Unix client: refused with a reply, closed */
    ctl_t *c = ctl_open(env->sock);
    if (!read_until_closed(c, TH_TIMEOUT_MS))
        fail_msg("control connection %d of the Unix socket left open past the cap", CTL_CAP + 1);
    assert_string_equal(c->buf, "error: too many control connections\n\n");
    ctl_close(c);
    /* the TCP listener has its own slots: a full Unix socket does not lock out a remote controller */
    c = ctl_open_tcp(port);
    req_ok(c, "auth s3cret-Token");
    req_ok(c, "set weight 3");
    ctl_close(c);
    /* a slot freed is a slot taken again */
    ctl_close(cs[0]);
    int64_t end = now_ms() + TH_TIMEOUT_MS;
    char reply[REPLY_MAX] = "";
    for (;;) {
        c = ctl_open(env->sock);
        ctl_send(c, "get weight\n");
        if (read_reply(c, reply, sizeof(reply), TH_TIMEOUT_MS) > 0 && strncmp(reply, "ok\n", 3) == 0)
            break;
        ctl_close(c);
        if (now_ms() > end)
            fail_msg("no control connection accepted after one of %d closed; last reply \"%s\"", CTL_CAP, reply);
        nap_us(20000);
    }
    ctl_close(c);
    for (int i = 1; i < CTL_CAP; i++)
        ctl_close(cs[i]);
    th_weir_stop(env);
}

/* Silent TCP connections, more than the connection cap, do not lock out a client that authenticates: they hold
 * slots of their own, the newest evicting the oldest, and each is closed by its auth deadline at the latest. */
static void test_tcp_silent_clients_do_not_lock_out(void **state)
{
    th_env_t *env = *state;
    int port = start_weir_tcp(env, "--header-timeout", "60s", NULL, NULL);
    enum { N = CTL_CAP + 16 };
    ctl_t *silent[N];

    for (int i = 0; i < N; i++)
        silent[i] = ctl_open_tcp(port);
    ctl_t *c = ctl_open_tcp(port);
    req_ok(c, "auth s3cret-Token");
    req_ok(c, "set weight 7");
    assert_true(strstr(req(c, "get weight"), "canary 7.00\n") != NULL);
    for (int i = 0; i < N; i++) {
        if (!read_until_closed(silent[i], TH_TIMEOUT_MS))
            fail_msg("silent TCP control client %d still open", i);
        assert_string_equal(silent[i]->buf, "");
        ctl_close(silent[i]);
    }
    /* the authenticated client was not among the closed */
    req_ok(c, "set weight 8");
    ctl_close(c);
    assert_non_null(strstr(th_slurp(env->weir.err), "not authenticated: the oldest is closed for a new one"));
    th_weir_stop(env);
}

static void test_idle_connections_closed(void **state)
{
    th_env_t *env = *state;
    int port = start_weir_tcp(env, "--idle-timeout", "1s", "--header-timeout", "1s");
    enum { N = 15 };
    ctl_t *silent_unix[N], *used_unix[N], *silent_tcp[N], *authed_tcp[N];
    for (int i = 0; i < N; i++) {
        silent_unix[i] = ctl_open(env->sock);
        used_unix[i] = ctl_open(env->sock);
        req_ok(used_unix[i], "auth x");
        silent_tcp[i] = ctl_open_tcp(port);
        authed_tcp[i] = ctl_open_tcp(port);
        req_ok(authed_tcp[i], "auth s3cret-Token");
    }
    ctl_t **all[] = {silent_unix, used_unix, silent_tcp, authed_tcp};
    const char *what[] = {"silent Unix", "used Unix", "unauthenticated TCP", "authenticated TCP"};
    for (size_t k = 0; k < 4; k++) {
        for (int i = 0; i < N; i++) {
            if (!read_until_closed(all[k][i], TH_TIMEOUT_MS))
                fail_msg("%s control client %d still open after the 1s timeout and %d ms more", what[k], i,
                         TH_TIMEOUT_MS);
            ctl_close(all[k][i]);
        }
    }
    /* a client that keeps talking is not idle */
    ctl_t *c = ctl_open(env->sock);
    req_ok(c, "auth x");
    ctl_close(c);
    th_weir_stop(env);
}

/* A client pipelining requests and never reading the replies: weir stops executing them once its reply buffer is
 * full and stops reading once its input buffer is, so the client's sends block and weir's memory stays put. */
static void test_unread_replies_bounded(void **state)
{
    th_env_t *env = *state;
    start_upstreams(env);
    start_weir(env, NULL);
    ctl_t *u = ctl_open(env->sock);
    req_ok(u, "set weight 5");
    long rss0 = weir_status_kb(env, "VmRSS:");

    int fd = unix_connect(env->sock);
    assert_true(fd >= 0);
    track_fd(fd);
    int small = 32 * 1024; /* keeps what the kernel buffers far below the limit of the test */
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    static char chunk[64 * 1024];
    const char *line = "show stats json\n";
    for (size_t i = 0; i + 16 <= sizeof(chunk); i += 16)
        memcpy(chunk + i, line, 16);
    const size_t limit = 1024 * 1024; /* 65536 requests; far more than the bounds let through */
    size_t sent = 0;
    while (sent < limit) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        if (poll(&p, 1, 2000) <= 0)
            break; /* weir stopped reading */
        ssize_t n = send(fd, chunk, sizeof(chunk), MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n <= 0)
            fail_msg("send: %s", strerror(errno));
        sent += (size_t)n;
    }
    print_message("%zu bytes of requests sent before weir stopped reading\n", sent);
    if (sent >= limit)
        fail_msg("weir read %zu bytes of requests whose replies the client never took", sent);
    long rss1 = weir_status_kb(env, "VmRSS:");
    if (rss1 - rss0 > 32 * 1024)
        fail_msg("weir grew from %ld kB to %ld kB for replies nobody reads", rss0, rss1);
    /* other clients are served meanwhile */
    char *st = req(u, "status");
    assert_true(strncmp(st, "ok\nversion ", 11) == 0);
    close_fd(fd);
    ctl_close(u);
    th_weir_stop(env);
}

/* The worker thread weir names "weir-w<id>" (proxy/worker.c), stopped with ptrace so it cannot acknowledge. */
static pid_t traced_tid;

static void untrace(void)
{
    if (traced_tid > 0)
        ptrace(PTRACE_DETACH, traced_tid, NULL, NULL);
    traced_tid = 0;
}

static pid_t worker_tid(th_env_t *env, unsigned id)
{
    char want[16];
    snprintf(want, sizeof(want), "weir-w%u\n", id);
    DIR *d = opendir(th_fmt("/proc/%d/task", (int)env->weir.pid));
    struct dirent *e;
    pid_t tid = 0;
    while (d != NULL && (e = readdir(d)) != NULL && tid == 0)
        if (e->d_name[0] != '.' &&
            strcmp(th_slurp(th_fmt("/proc/%d/task/%s/comm", (int)env->weir.pid, e->d_name)), want) == 0)
            tid = (pid_t)atoi(e->d_name);
    if (d != NULL)
        closedir(d);
    if (tid == 0)
        fail_msg("no thread named %.*s in weir", (int)strlen(want) - 1, want);
    return tid;
}

static void test_ack_timeout_names_worker(void **state)
{
    th_env_t *env = *state;
    start_upstreams(env);
    start_weir(env, "--workers", "2", NULL);
    ctl_t *c = ctl_open(env->sock);
    req_ok(c, "set weight 10");
    unsigned long long g = generation(c);

    pid_t tid = worker_tid(env, 1);
    int st;
    if (ptrace(PTRACE_SEIZE, tid, NULL, NULL) != 0)
        fail_msg("ptrace(SEIZE, %d): %s", (int)tid, strerror(errno));
    traced_tid = tid;
    if (ptrace(PTRACE_INTERRUPT, tid, NULL, NULL) != 0 || waitpid(tid, &st, __WALL) != tid || !WIFSTOPPED(st))
        fail_msg("cannot stop worker thread %d: %s", (int)tid, strerror(errno));

    /* worker 1 cannot acknowledge: the reply says so instead of waiting for ever, and so does the log. The reply
     * starts with the fixed text that tells a client the change is applied but not verified. */
    const char *unacked = th_fmt("error: generation %llu published but not acknowledged within ", g + 1);
    char *r = req(c, "set weight 20");
    if (strncmp(r, unacked, strlen(unacked)) != 0 || strstr(r, "worker 1") == NULL || strstr(r, "worker 0") != NULL)
        fail_msg("want \"%s... worker 1\" (not worker 0) for an unacknowledged change, got \"%s\"", unacked, r);
    if (strstr(th_slurp(env->weir.err), "worker 1") == NULL)
        fail_msg("the log does not name worker 1:\n%s", th_slurp(env->weir.err));
    /* the same change again, and a read, do not vouch with `ok` for a state worker 1 does not apply yet */
    r = req(c, "set weight 20");
    if (strncmp(r, unacked, strlen(unacked)) != 0)
        fail_msg("a repeated set weight got \"%s\" while worker 1 has not acknowledged generation %llu", r, g + 1);
    r = req(c, "get weight");
    if (strncmp(r, unacked, strlen(unacked)) != 0)
        fail_msg("get weight got \"%s\" while worker 1 has not acknowledged generation %llu", r, g + 1);

    /* once the worker runs again, the change is acknowledged: reads and changes are answered as before */
    untrace();
    req_expect(c, "get weight", th_fmt("ok\ncanary 20.00\nexp 0.00\nstable 80.00\ngeneration %llu\n\n", g + 1));
    req_ok(c, "set weight 20");
    req_ok(c, "set weight 30");
    ctl_close(c);
    th_weir_stop(env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_replies_exact, th_setup, teardown),
        cmocka_unit_test_setup_teardown(test_status, th_setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipelined_in_order, th_setup, teardown),
        cmocka_unit_test_setup_teardown(test_several_clients, th_setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_changes_nothing, th_setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_line, th_setup, teardown),
        cmocka_unit_test_setup_teardown(test_generation, th_setup, teardown),
        cmocka_unit_test_setup_teardown(test_change_seen_by_every_worker, th_setup, teardown),
        cmocka_unit_test_setup_teardown(test_weirctl, th_setup, teardown),
        cmocka_unit_test_setup_teardown(test_weirctl_quoting, th_setup, teardown),
        cmocka_unit_test_setup_teardown(test_socket_mode_default, th_setup, teardown),
        cmocka_unit_test_setup_teardown(test_socket_mode_option, th_setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_socket_replaced, th_setup, teardown),
        cmocka_unit_test_setup_teardown(test_live_socket_refused, th_setup, teardown),
        cmocka_unit_test_setup_teardown(test_tcp_needs_token_file, th_setup, teardown),
        cmocka_unit_test_setup_teardown(test_tcp_auth, th_setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_file_restart, th_setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_file_corrupt, th_setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_file_missing, th_setup, teardown),
        cmocka_unit_test_setup_teardown(test_changes_under_load, th_setup, teardown),
        cmocka_unit_test_setup_teardown(test_upstream_commands, th_setup, teardown),
        cmocka_unit_test_setup_teardown(test_upstream_backoff_shown, th_setup, teardown),
        cmocka_unit_test_setup_teardown(test_upstream_state_file, th_setup, teardown),
        cmocka_unit_test_setup_teardown(test_tcp_unauthenticated_not_executed, th_setup, teardown),
        cmocka_unit_test_setup_teardown(test_tcp_failed_auth_delayed_and_logged_once, th_setup, teardown),
        cmocka_unit_test_setup_teardown(test_overlong_first_line_closes, th_setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_cap, th_setup, teardown),
        cmocka_unit_test_setup_teardown(test_tcp_silent_clients_do_not_lock_out, th_setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_connections_closed, th_setup, teardown),
        cmocka_unit_test_setup_teardown(test_unread_replies_bounded, th_setup, teardown),
        cmocka_unit_test_setup_teardown(test_ack_timeout_names_worker, th_setup, teardown),
    };
    th_filter_from_env();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
