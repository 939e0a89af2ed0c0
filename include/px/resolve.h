/* The variants' endpoints (SPEC §2 `upstream`, §4 `set upstream`): which addresses each variant has, kept in step
 * with the route table and with DNS, on the main thread.
 *
 * A variant's addresses come from the table (`set upstream`, rt_table_upstreams()) or else from the configuration.
 * An address literal is an endpoint at once. A host name is an endpoint per address it resolves to (A and AAAA: a
 * headless Service's pods), looked up at start and again every `resolve-interval` on a thread per lookup, so no
 * loop ever blocks on DNS; a lookup that fails keeps the last good addresses. A name that never resolved gives no
 * endpoint (the variant answers 503 when it has none) and is retried at every interval: never fatal. */
#ifndef PX_RESOLVE_H
#define PX_RESOLVE_H
#include <stdint.h>
#include <uv.h>

#include "rt/buf.h"
#include "rt/table.h"

/* Before the workers start: allocates the endpoint slots and gives every variant of <t> the endpoints of its address
 * literals; names are looked up once px_resolve_start() runs, never blocking start. Returns 0, or -1 when out of
 * memory. */
int px_resolve_init(const rt_table_t *t);

/* Brings the endpoints in line with <t>, a table about to be published: variants given other addresses get them
 * (names are looked up at once, in the background), removed variants lose theirs. Call before publishing <t>, so
 * that every worker that sees the table sees the endpoints of the addresses known by then. Main thread only. */
void px_resolve_apply(const rt_table_t *t);

/* Appends the reply of `show upstreams`: "ok\n", one "VARIANT ADDR STATE\n" line per endpoint (ADDR the resolved
 * address; STATE "up", or "backoff" while a worker skips it after a refused connection) and one "VARIANT HOST:PORT
 * unresolved\n" per name that has not resolved yet, variants in `get weight` order, then "\n". Returns 0, or -1
 * when out of memory (<out> then as before). */
int px_resolve_show(const rt_table_t *t, rt_buf_t *out);

/* Looks up every name at once and then every <interval_ms>, on <loop>. */
void px_resolve_start(uv_loop_t *loop, uint64_t interval_ms);
/* Stops the timer and closes its handles at once: lookups still running are abandoned (their threads end on
 * their own and touch nothing of weir's but their own memory), so a resolver that never answers does not hold up
 * the exit. Idempotent. */
void px_resolve_stop(void);
/* After the loop ended: frees what px_resolve_init() allocated. */
void px_resolve_dispose(void);

#endif
