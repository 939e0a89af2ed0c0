/* Allocation hooks of the decision plane: tests point them at cmocka's test_malloc/test_free to catch leaks. */
#ifndef RT_ALLOC_H
#define RT_ALLOC_H
#include <stddef.h>

typedef struct rt_allocator_s {
    void *(*malloc)(size_t);
    void *(*calloc)(size_t, size_t);
    void *(*realloc)(void *, size_t);
    void (*free)(void *);
} rt_allocator_t;

/* Replaces the allocator (libc's by default); <a> is copied, NULL restores libc's. Call while no table exists:
 * memory is freed by the allocator that is current at the time. rt_free() accepts NULL. rt_strdup() returns a copy
 * of <s> from rt_malloc(), or NULL when out of memory. */
void rt_set_allocator(const rt_allocator_t *a);
void *rt_malloc(size_t n);
void *rt_calloc(size_t n, size_t size);
void *rt_realloc(void *p, size_t n);
void rt_free(void *p);
char *rt_strdup(const char *s);

#endif
