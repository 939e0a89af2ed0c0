/* Allocation hooks of the decision plane (include/rt/alloc.h): libc's by default, cmocka's in the unit tests. */
#include <stdlib.h>
#include <string.h>

#include "rt/alloc.h"

static const rt_allocator_t libc_allocator = {malloc, calloc, realloc, free};
static rt_allocator_t cur = {malloc, calloc, realloc, free};

void rt_set_allocator(const rt_allocator_t *a)
{
    cur = a != NULL ? *a : libc_allocator;
}

void *rt_malloc(size_t n)
{
    return cur.malloc(n);
}

void *rt_calloc(size_t n, size_t size)
{
    return cur.calloc(n, size);
}

void *rt_realloc(void *p, size_t n)
{
    return cur.realloc(p, n);
}

void rt_free(void *p)
{
    if (p != NULL) /* cmocka's test_free() rejects NULL */
        cur.free(p);
}

char *rt_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = rt_malloc(n);

    if (d != NULL)
        memcpy(d, s, n);
    return d;
}
