/* Re-resolution of upstream host names every `resolve-interval`, on the main loop through libuv's thread pool, so
 * no worker loop ever blocks on DNS. A failed lookup keeps the last good address. */
#ifndef PX_RESOLVE_H
#define PX_RESOLVE_H
#include <stdint.h>
#include <uv.h>

/* Starts the periodic re-resolution of every endpoint configured by name. */
void px_resolve_start(uv_loop_t *loop, uint64_t interval_ms);
/* Stops the timer; lookups in flight complete and are ignored. Idempotent. */
void px_resolve_stop(void);

#endif
