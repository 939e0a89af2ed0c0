/* The access log (include/px/accesslog.h).
 *
 * A worker never writes to the log itself: a full pipe or a slow disk would stop it, and every connection it serves
 * with it. It appends the line to a bounded buffer under a mutex held for one memcpy; a writer thread takes the
 * buffer whole (double buffering) and writes it with blocking write(2)s. When the buffer is full the line is
 * dropped and counted (px_accesslog_dropped). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "px/accesslog.h"
#include "px/log.h"

#define LOG_BUF (256 * 1024)     /* bytes of lines waiting while the writer writes the other half */
#define LOG_CLOSE_WAIT_S 2       /* at exit, how long the writer may take to write what is buffered */
#define LOG_DROP_REPORT_MS 10000 /* at most one warning about dropped lines per interval */

static int log_fd = -1;
static char *log_path;

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake; /* lines arrived, or stop */
    char *fill, *flush;  /* workers append to <fill>; the writer writes <flush> */
    size_t fill_len;
    int stop;
    int running; /* the writer thread was started and not joined */
    pthread_t thread;
} q = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

static atomic_uint_fast64_t dropped;

uint64_t px_accesslog_dropped(void)
{
    return atomic_load(&dropped);
}

/* Writes <len> bytes of whole lines; what a write error leaves unwritten is counted as dropped lines. */
static void write_lines(const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(log_fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            /* a full disk or a reader gone: the lines are lost, and counted */
            uint64_t lines = 0;
            const char *e = p + len;
            while ((p = memchr(p, '\n', (size_t)(e - p))) != NULL) {
                lines++;
                p++;
            }
            atomic_fetch_add(&dropped, lines);
            return;
        }
        p += n;
        len -= (size_t)n;
    }
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void *writer_main(void *arg)
{
    uint64_t reported = 0, next_report = 0;
    (void)arg;

    pthread_mutex_lock(&q.lock);
    for (;;) {
        char *tmp;
        size_t len;
        while (q.fill_len == 0 && !q.stop)
            pthread_cond_wait(&q.wake, &q.lock);
        if (q.fill_len == 0)
            break;
        tmp = q.flush;
        q.flush = q.fill;
        q.fill = tmp;
        len = q.fill_len;
        q.fill_len = 0;
        pthread_mutex_unlock(&q.lock);
        write_lines(q.flush, len);
        {
            uint64_t d = atomic_load(&dropped), now = mono_ms();
            if (d != reported && now >= next_report) {
                px_log(PX_LOG_WARN, "accesslog", "%llu lines dropped so far: the log takes them slower than they come",
                       (unsigned long long)d);
                reported = d;
                next_report = now + LOG_DROP_REPORT_MS;
            }
        }
        pthread_mutex_lock(&q.lock);
    }
    pthread_mutex_unlock(&q.lock);
    return NULL;
}

size_t px_json_escape(char *out, size_t cap, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t i, n = 0;

    for (i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            if (n + 2 > cap)
                return cap;
            out[n++] = '\\';
            out[n++] = (char)ch;
        } else if (ch < 0x20 || ch == 0x7f) {
            if (n + 6 > cap)
                return cap;
            memcpy(out + n, "\\u00", 4);
            out[n + 4] = hex[ch >> 4];
            out[n + 5] = hex[ch & 15];
            n += 6;
        } else {
            if (n + 1 > cap)
                return cap;
            out[n++] = (char)ch;
        }
    }
    return n;
}

static int open_path(const char *path)
{
    if (strcmp(path, "-") == 0)
        return dup(STDOUT_FILENO);
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

int px_accesslog_open(const char *path)
{
    int rc;

    if (path == NULL)
        return 0;
    if ((log_fd = open_path(path)) < 0)
        return -1;
    log_path = strdup(path);
    q.fill = malloc(LOG_BUF);
    q.flush = malloc(LOG_BUF);
    if (log_path == NULL || q.fill == NULL || q.flush == NULL) {
        errno = ENOMEM;
        return -1;
    }
    if ((rc = pthread_create(&q.thread, NULL, writer_main, NULL)) != 0) {
        errno = rc;
        return -1;
    }
    q.running = 1;
    return 0;
}

int px_accesslog_reopen(void)
{
    int fd;

    if (log_fd < 0 || strcmp(log_path, "-") == 0)
        return 0;
    if ((fd = open_path(log_path)) < 0)
        return -1;
    /* dup2 swaps the file behind the number atomically: a worker writing right now lands in one file or the other. */
    if (dup2(fd, log_fd) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    close(fd);
    return 0;
}

void px_accesslog_close(void)
{
    if (q.running) {
        struct timespec deadline;
        pthread_mutex_lock(&q.lock);
        q.stop = 1;
        pthread_cond_signal(&q.wake);
        pthread_mutex_unlock(&q.lock);
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += LOG_CLOSE_WAIT_S;
        q.running = 0;
        if (pthread_timedjoin_np(q.thread, NULL, &deadline) != 0) {
            /* The writer is blocked on a reader that does not read: leave it its descriptor and buffers, the
             * process is about to end. */
            px_log(PX_LOG_WARN, "accesslog", "exiting with access log lines unwritten: the log does not take them");
            return;
        }
    }
    free(q.fill);
    free(q.flush);
    q.fill = q.flush = NULL;
    if (log_fd >= 0)
        close(log_fd);
    log_fd = -1;
    free(log_path);
    log_path = NULL;
}

int px_accesslog_enabled(void)
{
    return log_fd >= 0;
}

/* Appends a JSON string value (with quotes), or null for NULL. */
static size_t put_str(char *out, size_t cap, const char *s, size_t len)
{
    size_t n;

    if (s == NULL) {
        if (cap < 4)
            return cap;
        memcpy(out, "null", 4);
        return 4;
    }
    if (cap < 2)
        return cap;
    out[0] = '"';
    n = px_json_escape(out + 1, cap - 2, s, len);
    if (n >= cap - 2)
        return cap;
    out[n + 1] = '"';
    return n + 2;
}

void px_accesslog_write(const px_accesslog_entry_t *e)
{
    char line[4096];
    struct timespec ts;
    struct tm tm;
    size_t n, cap = sizeof(line) - 1;
    int k;

    if (log_fd < 0)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    k = snprintf(line, cap, "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"method\":", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
    n = (size_t)k;
    n += put_str(line + n, cap - n, e->method.len ? e->method.p : NULL, e->method.len);
    n += (size_t)snprintf(line + n, cap - n, ",\"path\":");
    /* A very long path is cut so the line still fits; the line stays valid JSON. */
    n += put_str(line + n, cap - n - 512, e->path.len ? e->path.p : NULL, e->path.len > 2048 ? 2048 : e->path.len);
    n += (size_t)snprintf(line + n, cap - n, ",\"status\":%d,\"variant\":", e->status);
    n += put_str(line + n, cap - n, e->variant, e->variant ? strlen(e->variant) : 0);
    n += (size_t)snprintf(line + n, cap - n, ",\"route\":");
    n += put_str(line + n, cap - n, e->route, e->route ? strlen(e->route) : 0);
    n += (size_t)snprintf(line + n, cap - n, ",\"upstream\":");
    n += put_str(line + n, cap - n, e->upstream, e->upstream ? strlen(e->upstream) : 0);
    n += (size_t)snprintf(line + n, cap - n, ",\"duration_ms\":%.3f,\"bytes\":%llu}\n", (double)e->duration_ns / 1e6,
                          (unsigned long long)e->bytes);
    if (n > sizeof(line))
        return;
    pthread_mutex_lock(&q.lock);
    if (q.fill_len + n > LOG_BUF) {
        pthread_mutex_unlock(&q.lock);
        atomic_fetch_add(&dropped, 1);
        return;
    }
    memcpy(q.fill + q.fill_len, line, n);
    q.fill_len += n;
    if (q.fill_len == n) /* the writer sleeps only on an empty buffer */
        pthread_cond_signal(&q.wake);
    pthread_mutex_unlock(&q.lock);
}
