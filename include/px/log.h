/* Diagnostics on stderr. px_log() checks the level before evaluating its arguments (redis serverLog). */
#ifndef PX_LOG_H
#define PX_LOG_H
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

#endif
