/*
 * ctl_latency: time from `set weight` sent to its reply received, over one control connection.
 *
 *   ctl_latency SOCKET_PATH N
 *
 * Sends N changes (alternating weights, so each one is a real change that every worker must acknowledge before the
 * reply) one at a time, and prints the p50, p90, p99 and max latency in microseconds on one line:
 *   "changes N p50_us X p90_us X p99_us X max_us X"
 * Run it while weir serves load (bench/run.sh does) to see what a rollout engine waits for. Not part of the product.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static double now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/* Reads one reply (up to its empty line). Returns 0 when it starts with "ok". */
static int read_reply(int fd)
{
    char buf[4096];
    size_t len = 0;

    for (;;) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
        if (n <= 0)
            return -1;
        len += (size_t)n;
        buf[len] = '\0';
        if (strstr(buf, "\n\n") != NULL)
            return strncmp(buf, "ok\n", 3) == 0 ? 0 : -1;
        if (len == sizeof(buf) - 1)
            return -1;
    }
}

int main(int argc, char **argv)
{
    struct sockaddr_un sa;
    double *lat;
    long i, n;
    int fd;

    if (argc != 3 || (n = atol(argv[2])) <= 0) {
        fprintf(stderr, "usage: %s SOCKET_PATH N\n", argv[0]);
        return 2;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", argv[1]);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        perror("ctl_latency: connect");
        return 2;
    }
    lat = calloc((size_t)n, sizeof(*lat));
    for (i = 0; i < n; i++) {
        char req[64];
        int len = snprintf(req, sizeof(req), "set weight %ld.%02ld\n", 10 + (i & 1), i % 100);
        double t0 = now_us();
        if (write(fd, req, (size_t)len) != len || read_reply(fd) != 0) {
            fprintf(stderr, "ctl_latency: change %ld failed\n", i);
            return 1;
        }
        lat[i] = now_us() - t0;
    }
    qsort(lat, (size_t)n, sizeof(*lat), cmp);
    printf("changes %ld p50_us %.0f p90_us %.0f p99_us %.0f max_us %.0f\n", n, lat[n / 2], lat[n * 9 / 10],
           lat[n * 99 / 100], lat[n - 1]);
    free(lat);
    close(fd);
    return 0;
}
