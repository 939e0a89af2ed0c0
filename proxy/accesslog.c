/* The access log (include/px/accesslog.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "px/accesslog.h"

static int log_fd = -1;
static char *log_path;

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
    if (path == NULL)
        return 0;
    if ((log_fd = open_path(path)) < 0)
        return -1;
    log_path = strdup(path);
    return log_path == NULL ? -1 : 0;
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
    if (write(log_fd, line, n) < 0)
        return; /* a full disk must not stop the proxy; nothing else to do with the line */
}
