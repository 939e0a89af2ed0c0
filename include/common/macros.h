/* Macro-only helpers shared by every module. No includes beyond <stddef.h>. */
#ifndef COMMON_MACROS_H
#define COMMON_MACROS_H
#include <stddef.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* Objects on a freelist are poisoned under AddressSanitizer, so a pointer kept past recycling is reported like a
 * use after free instead of silently reaching the object's next owner (STYLE §4). No-ops in other builds. */
#if defined(__SANITIZE_ADDRESS__)
#define COMMON_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define COMMON_ASAN 1
#endif
#endif
#ifdef COMMON_ASAN
void __asan_poison_memory_region(void const volatile *addr, size_t size);
void __asan_unpoison_memory_region(void const volatile *addr, size_t size);
#define POISON_REGION(p, n) __asan_poison_memory_region((p), (n))
#define UNPOISON_REGION(p, n) __asan_unpoison_memory_region((p), (n))
#else
#define POISON_REGION(p, n) ((void)(p), (void)(n))
#define UNPOISON_REGION(p, n) ((void)(p), (void)(n))
#endif
/* Poisons *<obj> but its freelist link <link>; UNPOISON_REGION(obj, sizeof(*obj)) when it is taken again. */
#define POISON_FREE(obj, link)                                                                                         \
    do {                                                                                                               \
        POISON_REGION((obj), sizeof(*(obj)));                                                                          \
        UNPOISON_REGION(&(obj)->link, sizeof((obj)->link));                                                            \
    } while (0)

#endif
