/* Mirrored copies (SPEC §3 mirror routes, §5 mirror metrics): a copy of a request, headers and body, sent to an
 * endpoint of the mirror variant on its own upstream connection; its response is read and discarded.
 *
 * A copy never slows, pauses or fails its primary: the primary's bytes are copied into the copy's own queue, whose
 * size is capped (PX_MIRROR_MAX_QUEUE); a copy that falls behind its cap, or whose endpoint fails, is dropped and
 * counted. At most `mirror-max-inflight` copies per worker are in flight; more are dropped as overload.
 *
 * Lifecycle: px_mirror_start() by the client connection at the request's header block; px_mirror_feed() for each
 * run of body bytes; px_mirror_detach() when the primary response ends (with its status, for the mismatch count)
 * or when the client connection goes away. The copy frees itself when its own exchange ends. */
#ifndef PX_MIRROR_H
#define PX_MIRROR_H
#include <stddef.h>
#include <uv.h>

#include "px/worker.h"

/* Bytes a copy may have waiting for its upstream before it is dropped, and bytes all copies of one worker may have
 * waiting together. A copy must absorb what the client sends while its connection is still being made and the
 * jitter between two upstreams; the worker's cap bounds the memory that mirroring can take whatever happens. */
#define PX_MIRROR_MAX_QUEUE (4 * 1024 * 1024)
#define PX_MIRROR_MAX_WORKER_QUEUE (32 * 1024 * 1024)

typedef struct px_mirror_s px_mirror_t;

/* Starts a copy to <variant> of a request whose forwarded header block is <head> (<len> bytes, ending with the
 * empty line). <body> tells whether body bytes will follow through px_mirror_feed(). Returns the copy, or NULL when
 * none was made (no endpoint, overload, out of memory: counted as dropped). */
px_mirror_t *px_mirror_start(px_worker_t *w, unsigned variant, const char *head, size_t len, int body);

/* Queues <len> body bytes (copied); <last> when the request ends with them. May drop the copy (overload): the
 * caller learns it from the return value, 0 while the copy lives, -1 once it was dropped (forget the pointer). */
int px_mirror_feed(px_mirror_t *m, const char *data, size_t len, int last);

/* Whether the copy still waits for its connection, so nothing it queued can leave yet. 0 once it is dropped. */
int px_mirror_connecting(const px_mirror_t *m);

/* How much of the primary's body one read takes while a copy is connecting (see cli_alloc in proxy/conn.c). */
#define PX_MIRROR_CONNECTING_READ (16 * 1024)

/* The primary is done with the copy. <status> is the primary response's status, or 0 when it has none (the client
 * went away). A copy whose request was not complete is dropped. The pointer must not be used afterwards. */
void px_mirror_detach(px_mirror_t *m, int status);

/* Drain: drops every copy in flight. */
void px_mirror_cancel_all(px_worker_t *w);

/* Frees recycled copy objects (after the loop ended). */
void px_mirror_free_recycled(px_worker_t *w);

/* Internal: upstream connection events for a connection a copy owns. */
void px__mirror_on_connect(px_upconn_t *u, int status);
void px__mirror_up_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
void px__mirror_up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

#endif
