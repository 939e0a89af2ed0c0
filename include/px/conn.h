/* Client connections: the HTTP/1.x request/response cycle between one client and the upstreams. */
#ifndef PX_CONN_H
#define PX_CONN_H
#include <uv.h>

#include "px/worker.h"

/* Accepts one connection from the listening socket <lfd> into a new client connection of <w>. Takes the connection
 * object first, so that without memory the connection stays in the kernel's backlog. Returns 0 when one was
 * accepted, UV_EAGAIN when none is pending, UV_ENOMEM when no object could be allocated, or accept(2)'s error as a
 * negative UV_E* code (UV_EMFILE...). */
int px_conn_accept(px_worker_t *w, int lfd);

/* Drain: closes <w>'s idle client connections now and makes busy ones close after their current response
 * (<force> closes every connection now). */
void px_conn_drain_all(px_worker_t *w, int force);

/* Closes fresh and idle connections past their deadline; the worker's tick calls it. */
void px_conn_sweep(px_worker_t *w);
/* Closes the timers of the pooled request cycles (when the worker stops; every connection is gone). */
void px_conn_close_cycles(px_worker_t *w);
/* Frees the worker's recycled connection objects (after its loop ended). */
void px_conn_free_recycled(px_worker_t *w);

/* Internal: completion of an upstream connect started by px_upstream_get(). */
void px__conn_on_up_connect(px_upconn_t *u, int status);
/* Internal: a pooled connection's owner changes; read callbacks for in-use upstream connections. */
void px__conn_up_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
void px__conn_up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

#endif
