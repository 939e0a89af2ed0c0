/* Diagnostics on stderr. px_log() checks the level before evaluating its arguments (redis serverLog). */
#ifndef PX_LOG_H
#define PX_LOG_H
#include <stdint.h>

#include "px/config.h"

extern enum px_log_level px_log_level;

/* Writes one line "weir[LEVEL] module: message" to stderr with a single write(2), so lines of concurrent
 * workers do not interleave. */
void px__log(enum px_log_level level, const char *module, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define px_log(level, module, ...)                                                                                     \
    do {                                                                                                               \
        if ((level) <= px_log_level)                                                                                   \
            px__log((level), (module), __VA_ARGS__);                                                                   \
    } while (0)

/* At most one line per <interval_ms> about one kind of event (a flood of failed logins or refused connections must
 * not flood the log); the events skipped in between are counted and reported with the next line. Not thread-safe:
 * one per loop. Zero-initialise with <interval_ms> set. */
typedef struct px_ratelimit_s {
    uint64_t interval_ms;
    uint64_t next_ms;    /* before this time events are only counted */
    uint64_t suppressed; /* events not logged since the last line */
} px_ratelimit_t;

/* Returns 1 when the event at <now_ms> is to be logged, with <*suppressed> set to the events skipped since the
 * last logged one (then reset); returns 0 when it is only counted. */
int px_ratelimit(px_ratelimit_t *r, uint64_t now_ms, uint64_t *suppressed);

#endif
