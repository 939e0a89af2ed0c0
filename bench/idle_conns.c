/*
 * idle_conns: open N keep-alive connections to HOST:PORT, send one GET on each and read its response, then hold
 * them all open and idle until SIGTERM/SIGINT or until HOLD seconds have passed.
 *
 *   idle_conns HOST PORT N [HOLD_SECONDS [PATH]]
 *
 * Prints "ready N" on stdout once every connection has had its response, so a caller can measure the server's
 * memory while the connections sit idle. Exit status: 0 when all N were opened and answered, 1 otherwise.
 * The benchmark harness (bench/run.sh) builds it with cc; it is not part of the product.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { READ_TIMEOUT_MS = 10000 };

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Waits for the socket to become readable; returns 1 when readable, 0 on timeout or signal-requested stop. */
static int wait_readable(int fd, long deadline)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};

    for (;;) {
        long left = deadline - now_ms();
        if (left <= 0 || stop_flag) return 0;
        int r = poll(&p, 1, (int)left);
        if (r > 0) return 1;
        if (r < 0 && errno != EINTR) return 0;
    }
}

/* Finds a header's value inside a header block; returns its length or -1. The block ends with "\r\n\r\n". */
static long header_value(const char *hdr, size_t hlen, const char *name, const char **val)
{
    size_t nlen = strlen(name);
    const char *p = memchr(hdr, '\n', hlen);

    while (p && (size_t)(p + 1 - hdr) < hlen) {
        const char *line = p + 1;
        const char *eol = memchr(line, '\n', hlen - (size_t)(line - hdr));
        if (!eol) break;
        if ((size_t)(eol - line) > nlen && strncasecmp(line, name, nlen) == 0 && line[nlen] == ':') {
            const char *v = line + nlen + 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            const char *e = eol;
            while (e > v && (e[-1] == '\r' || e[-1] == ' '))
                e--;
            *val = v;
            return e - v;
        }
        p = eol;
    }
    return -1;
}

/*
 * Reads one complete response (Content-Length or chunked framing) from fd. Returns 0 on a 2xx-5xx response read
 * to its end, -1 otherwise. The body is discarded; only the framing is tracked.
 */
static int read_response(int fd)
{
    char buf[65536];
    size_t have = 0;
    long deadline = now_ms() + READ_TIMEOUT_MS;
    char *end = NULL;

    while (!end) {
        if (have == sizeof(buf) || !wait_readable(fd, deadline)) return -1;
        ssize_t n = read(fd, buf + have, sizeof(buf) - have);
        if (n <= 0) return -1;
        have += (size_t)n;
        end = memmem(buf, have, "\r\n\r\n", 4);
    }
    if (have < 12 || strncmp(buf, "HTTP/1.", 7) != 0) return -1;
    size_t hlen = (size_t)(end + 4 - buf);
    size_t extra = have - hlen;
    const char *v;
    long vlen = header_value(buf, hlen, "content-length", &v);
    if (vlen > 0) {
        unsigned long long want = strtoull(v, NULL, 10);
        unsigned long long got = extra;
        while (got < want) {
            if (!wait_readable(fd, deadline)) return -1;
            ssize_t n = read(fd, buf, sizeof(buf));
            if (n <= 0) return -1;
            got += (unsigned long long)n;
        }
        return 0;
    }
    vlen = header_value(buf, hlen, "transfer-encoding", &v);
    if (vlen >= 7 && strncasecmp(v + vlen - 7, "chunked", 7) == 0) {
        /* Keep the last few bytes across reads so the terminator is found even when split between two reads. */
        char tail[8 + sizeof(buf)];
        size_t tlen = extra < 7 ? extra : 7;
        memcpy(tail, buf + have - tlen, tlen);
        if (extra >= 5 && memmem(buf + hlen, extra, "0\r\n\r\n", 5)) return 0;
        for (;;) {
            if (!wait_readable(fd, deadline)) return -1;
            ssize_t n = read(fd, tail + tlen, sizeof(buf));
            if (n <= 0) return -1;
            tlen += (size_t)n;
            if (memmem(tail, tlen, "0\r\n\r\n", 5)) return 0;
            size_t keep = tlen < 7 ? tlen : 7;
            memmove(tail, tail + tlen - keep, keep);
            tlen = keep;
        }
    }
    /* No framing: a response without a body (204, 304) or one delimited by close; neither keeps the connection. */
    return strncmp(buf + 9, "204", 3) == 0 || strncmp(buf + 9, "304", 3) == 0 ? 0 : -1;
}

static int open_one(const struct sockaddr_in *sa, const char *req, size_t reqlen)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) != 0 || write(fd, req, reqlen) != (ssize_t)reqlen ||
        read_response(fd) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s HOST PORT N [HOLD_SECONDS [PATH]]\n", argv[0]);
        return 2;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1) {
        fprintf(stderr, "idle_conns: bad IPv4 address %s\n", argv[1]);
        return 2;
    }
    long n = atol(argv[3]);
    long hold = argc > 4 ? atol(argv[4]) : 120;
    const char *path = argc > 5 ? argv[5] : "/";
    if (n <= 0 || n > 1000000 || hold <= 0) {
        fprintf(stderr, "idle_conns: N must be 1..1000000 and HOLD_SECONDS positive\n");
        return 2;
    }

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)n + 16) {
        rl.rlim_cur = rl.rlim_max < (rlim_t)n + 16 ? rl.rlim_max : (rlim_t)n + 16;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    struct sigaction act = {.sa_handler = on_signal};
    sigaction(SIGTERM, &act, NULL);
    sigaction(SIGINT, &act, NULL);
    signal(SIGPIPE, SIG_IGN);

    char req[1024];
    int reqlen = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s:%s\r\nUser-Agent: idle_conns\r\n\r\n", path,
                          argv[1], argv[2]);
    if (reqlen <= 0 || (size_t)reqlen >= sizeof(req)) {
        fprintf(stderr, "idle_conns: path too long\n");
        return 2;
    }

    int *fds = calloc((size_t)n, sizeof(*fds));
    if (!fds) {
        fprintf(stderr, "idle_conns: out of memory\n");
        return 1;
    }
    long opened = 0;
    for (; opened < n && !stop_flag; opened++) {
        fds[opened] = open_one(&sa, req, (size_t)reqlen);
        if (fds[opened] < 0) {
            fprintf(stderr, "idle_conns: connection %ld: connect, send or response failed\n", opened + 1);
            break;
        }
    }
    printf("ready %ld\n", opened);
    fflush(stdout);

    /* The deadline bounds the hold even if the caller dies without signalling. */
    long deadline = now_ms() + hold * 1000L;
    while (!stop_flag && now_ms() < deadline)
        poll(NULL, 0, 100);
    for (long i = 0; i < opened; i++)
        close(fds[i]);
    free(fds);
    return opened == n ? 0 : 1;
}
