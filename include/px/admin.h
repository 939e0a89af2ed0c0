/* The admin listener (SPEC §5): health and readiness now; metrics and stats are served here too. Runs on the
 * main thread's loop, never on a worker's. */
#ifndef PX_ADMIN_H
#define PX_ADMIN_H
#include <uv.h>

#include "px/config.h"

/* Binds and listens on <addr>. Returns 0 or a negative UV_E* code. */
int px_admin_start(uv_loop_t *loop, const px_hostport_t *addr);
/* Stops listening and closes open admin connections. Idempotent. */
void px_admin_stop(void);

#endif
