/* Diagnostics on stderr (include/px/log.h). */
#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "px/log.h"

enum px_log_level px_log_level = PX_LOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void px__log(enum px_log_level level, const char *module, const char *fmt, ...)
{
    char line[1024];
    struct timespec ts;
    struct tm tm;
    va_list ap;
    int n, m;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02dZ weir[%s] %s: ", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, level_names[level], module);
    va_start(ap, fmt);
    m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    n = (m < 0) ? n : (n + m >= (int)sizeof(line) - 1 ? (int)sizeof(line) - 2 : n + m);
    line[n++] = '\n';
    /* stderr may be a closed pipe; there is nobody left to tell. */
    if (write(STDERR_FILENO, line, (size_t)n) < 0)
        return;
}

int px_ratelimit(px_ratelimit_t *r, uint64_t now_ms, uint64_t *suppressed)
{
    if (now_ms < r->next_ms) {
        r->suppressed++;
        return 0;
    }
    r->next_ms = now_ms + r->interval_ms;
    *suppressed = r->suppressed;
    r->suppressed = 0;
    return 1;
}
