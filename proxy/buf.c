/* Per-worker I/O buffer freelist (include/px/buf.h). */
#include <stdlib.h>

#include "px/buf.h"

void px_bufpool_init(px_bufpool_t *p, size_t size, size_t maxfree)
{
    p->size = size;
    p->free = NULL;
    p->nfree = 0;
    p->maxfree = maxfree;
    p->nlive = 0;
    p->nmalloc = 0;
}

void px_bufpool_dispose(px_bufpool_t *p)
{
    while (p->free != NULL) {
        px_buf_t *b = p->free;
        p->free = b->next;
        free(b);
    }
    p->nfree = 0;
}

px_buf_t *px_buf_get(px_bufpool_t *p)
{
    px_buf_t *b = p->free;

    if (b != NULL) {
        p->free = b->next;
        p->nfree--;
    } else if ((b = malloc(sizeof(*b) + p->size)) == NULL) {
        return NULL;
    } else {
        p->nmalloc++;
    }
    b->next = NULL;
    b->len = 0;
    p->nlive++;
    return b;
}

void px_buf_put(px_bufpool_t *p, px_buf_t *b)
{
    if (b == NULL)
        return;
    p->nlive--;
    if (p->nfree >= p->maxfree) {
        free(b);
        return;
    }
    b->next = p->free;
    p->free = b;
    p->nfree++;
}
