/* What the router's unit tests share: every rt_ allocation goes through cmocka (so a leak fails the test that made
 * it, and a test can make allocations fail), and helpers that build tables and routes. Each test binary includes it
 * once; the helpers are static inline so that a binary using only some of them compiles without unused warnings. */
#ifndef RT_TEST_H
#define RT_TEST_H
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "rt/alloc.h"
#include "rt/table.h"

/* Allocations fail from the <fail_after>-th on (0: the next one) while it is >= 0, to reach out-of-memory paths.
 * setup() and teardown() set it back to -1, so a test that sets it cannot leak the failures into the next. */
static long fail_after = -1;

static inline int must_fail(void)
{
    if (fail_after < 0)
        return 0;
    if (fail_after == 0)
        return 1;
    fail_after--;
    return 0;
}
static inline void *t_malloc(size_t n)
{
    return must_fail() ? NULL : test_malloc(n);
}
static inline void *t_calloc(size_t n, size_t size)
{
    return must_fail() ? NULL : test_calloc(n, size);
}
static inline void *t_realloc(void *p, size_t n)
{
    return must_fail() ? NULL : test_realloc(p, n);
}
static inline void t_free(void *p)
{
    test_free(p);
}
static const rt_allocator_t test_allocator = {t_malloc, t_calloc, t_realloc, t_free};

/* cmocka checks for leaks after the test function itself, so each test frees the tables it makes. */
static inline int setup(void **state)
{
    (void)state;
    fail_after = -1;
    rt_set_allocator(&test_allocator);
    return 0;
}

static inline int teardown(void **state)
{
    (void)state;
    fail_after = -1;
    rt_set_allocator(NULL);
    return 0;
}

static inline rt_table_t *new_table(void)
{
    rt_table_t *t = rt_table_new();

    assert_non_null(t);
    return t;
}

/* A seeded random stream, so a test draws the same numbers on every run. */
static inline uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Condition specs for set_route(): a method list, a path test, a header test. */
/* clang-format off */
#define M(v) {RT_COND_METHOD, RT_MATCH_EXACT, NULL, v}
#define P(op, v) {RT_COND_PATH, RT_MATCH_##op, NULL, v}
#define H(n, op, v) {RT_COND_HEADER, RT_MATCH_##op, n, v}
/* clang-format on */

/* Sets route <name> on <t>, failing the test with the table's message if it is refused. */
static inline void set_route(rt_table_t *t, const char *name, enum rt_route_kind kind, const char *to, uint32_t pct,
                             const rt_cond_spec_t *conds, size_t nconds)
{
    rt_route_spec_t spec = {name, kind, to, pct, conds, nconds};
    char err[256] = "";

    if (rt_table_set_route(t, &spec, err, sizeof(err)) != 0)
        fail_msg("set_route %s: %s", name, err);
}

#endif
