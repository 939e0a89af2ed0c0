/* The control listener (SPEC §4) and the publication of route tables to the workers. Main thread only. */
#ifndef PX_CONTROL_H
#define PX_CONTROL_H
#include <stddef.h>
#include <uv.h>

#include "rt/table.h"

/* Creates the acknowledgement channel (px_server.on_ack) and binds the Unix socket (replacing a stale socket file,
 * refusing a live one) and, when configured, the TCP listener. Call before the workers start. Returns 0, or -1
 * with one line in <err>. */
int px_control_start(uv_loop_t *loop, char *err, size_t errlen);
/* Closes the listeners, the connections and the acknowledgement channel; removes the socket file. Idempotent. */
void px_control_stop(void);
/* Frees the tables still waiting for acknowledgements and the token; after the workers were joined. */
void px_control_dispose(void);

/* SIGHUP: control-tls loads its certificates again; a failure keeps the old ones, logged and counted. */
void px_control_tls_reload(void);

/* Applies the state file, when configured and present, to <base>, which it takes ownership of. Returns the table to
 * start with (<base> itself when there is no state file yet, otherwise a new table, <base> being freed), or NULL
 * with <err> set when the file cannot be read or is corrupt (<base> freed). */
rt_table_t *px_control_load_state(rt_table_t *base, char *err, size_t errlen);

#endif
