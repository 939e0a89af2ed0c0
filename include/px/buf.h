/* Per-worker freelist of fixed-size I/O buffers (haproxy pool_alloc, libuv benchmark-pump buf_alloc).
 * One pool belongs to one event loop; no locking. */
#ifndef PX_BUF_H
#define PX_BUF_H
#include <stddef.h>
#include <stdint.h>

typedef struct px_buf_s px_buf_t;
struct px_buf_s {
    px_buf_t *next; /* freelist link while pooled */
    size_t len;     /* valid bytes from data[0] */
    char data[];    /* pool->size bytes */
};

typedef struct px_bufpool_s {
    size_t size;      /* capacity of each buffer's data[] */
    px_buf_t *free;   /* recycled buffers */
    size_t nfree;     /* length of the freelist */
    size_t maxfree;   /* above this, released buffers go back to malloc, so a burst does not pin memory */
    size_t nlive;     /* buffers handed out and not yet returned */
    uint64_t nmalloc; /* buffers that had to come from malloc: flat once the pool has warmed up */
} px_bufpool_t;

void px_bufpool_init(px_bufpool_t *p, size_t size, size_t maxfree);
/* Frees every pooled buffer. Buffers still handed out are the caller's leak. */
void px_bufpool_dispose(px_bufpool_t *p);
/* Returns a buffer with len 0, or NULL when out of memory. */
px_buf_t *px_buf_get(px_bufpool_t *p);
/* Returns <b> to the pool. Accepts NULL. */
void px_buf_put(px_bufpool_t *p, px_buf_t *b);

#endif
