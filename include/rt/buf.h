/* A growable byte buffer for text the decision plane produces (control replies, the state file). Memory comes from
 * rt_realloc() (rt/alloc.h), so unit tests see leaks. Whenever <cap> > 0, p[len] is '\0', so the contents can be
 * read as a C string (unless they contain NUL bytes themselves). */
#ifndef RT_BUF_H
#define RT_BUF_H
#include <stdarg.h>
#include <stddef.h>

typedef struct rt_buf_s {
    char *p;    /* NULL until the first append */
    size_t len; /* bytes in use */
    size_t cap; /* bytes allocated, the terminating NUL included */
} rt_buf_t;

/* An empty buffer, for initializing automatic variables: rt_buf_t b = RT_BUF_INIT; */
#define RT_BUF_INIT ((rt_buf_t){NULL, 0, 0})

/* Makes <b> empty without allocating. */
void rt_buf_init(rt_buf_t *b);

/* Releases what <b> owns and leaves it as after rt_buf_init(). Idempotent. */
void rt_buf_dispose(rt_buf_t *b);

/* Empties <b> but keeps its memory for reuse. */
void rt_buf_reset(rt_buf_t *b);

/* Makes room for <extra> more bytes (plus the NUL). Returns 0, or -1 when out of memory (<b> unchanged). */
int rt_buf_reserve(rt_buf_t *b, size_t extra);

/* Append <n> bytes at <s> / the C string <s> / one byte. Return 0, or -1 when out of memory, in which case <b> is
 * unchanged (nothing of the text was appended). */
int rt_buf_append(rt_buf_t *b, const void *s, size_t n);
int rt_buf_puts(rt_buf_t *b, const char *s);
int rt_buf_putc(rt_buf_t *b, char c);

/* Appends printf-formatted text. Returns 0, or -1 when out of memory or on a format error (<b> unchanged). */
int rt_buf_printf(rt_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int rt_buf_vprintf(rt_buf_t *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

/* Drops the first <n> bytes (all of them when <n> >= len), moving the rest to the front: for input buffers that
 * are consumed from the front. */
void rt_buf_consume(rt_buf_t *b, size_t n);

/* Shortens <b> to <len> bytes; no-op when it is not longer. Used to undo a partial append. */
void rt_buf_truncate(rt_buf_t *b, size_t len);

#endif
