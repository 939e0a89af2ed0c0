/* Growable byte buffer (include/rt/buf.h). */
#include <stdio.h>
#include <string.h>

#include "rt/alloc.h"
#include "rt/buf.h"

void rt_buf_init(rt_buf_t *b)
{
    b->p = NULL;
    b->len = b->cap = 0;
}

void rt_buf_dispose(rt_buf_t *b)
{
    rt_free(b->p);
    rt_buf_init(b);
}

void rt_buf_reset(rt_buf_t *b)
{
    b->len = 0;
    if (b->cap > 0)
        b->p[0] = '\0';
}

int rt_buf_reserve(rt_buf_t *b, size_t extra)
{
    size_t need, ncap;
    char *np;

    if (extra > (size_t)-1 - b->len - 1)
        return -1;
    need = b->len + extra + 1;
    if (need <= b->cap)
        return 0;
    ncap = b->cap > 0 ? b->cap : 64;
    while (ncap < need)
        ncap = ncap > (size_t)-1 / 2 ? need : ncap * 2;
    np = rt_realloc(b->p, ncap);
    if (np == NULL)
        return -1;
    b->p = np;
    b->cap = ncap;
    b->p[b->len] = '\0';
    return 0;
}

int rt_buf_append(rt_buf_t *b, const void *s, size_t n)
{
    if (rt_buf_reserve(b, n) != 0)
        return -1;
    if (n > 0)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

int rt_buf_puts(rt_buf_t *b, const char *s)
{
    return rt_buf_append(b, s, strlen(s));
}

int rt_buf_putc(rt_buf_t *b, char c)
{
    return rt_buf_append(b, &c, 1);
}

int rt_buf_vprintf(rt_buf_t *b, const char *fmt, va_list ap)
{
    va_list ap2;
    int n;

    va_copy(ap2, ap);
    n = vsnprintf(b->cap > 0 ? b->p + b->len : NULL, b->cap > 0 ? b->cap - b->len : 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        goto fail;
    if ((size_t)n >= (b->cap > 0 ? b->cap - b->len : 0)) {
        /* it did not fit: grow and format again */
        if (rt_buf_reserve(b, (size_t)n) != 0)
            goto fail;
        va_copy(ap2, ap);
        n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap2);
        va_end(ap2);
        if (n < 0)
            goto fail;
    }
    b->len += (size_t)n;
    return 0;
fail:
    if (b->cap > 0)
        b->p[b->len] = '\0'; /* undo what a truncated first attempt wrote past len */
    return -1;
}

int rt_buf_printf(rt_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = rt_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

void rt_buf_consume(rt_buf_t *b, size_t n)
{
    if (n >= b->len) {
        rt_buf_reset(b);
        return;
    }
    memmove(b->p, b->p + n, b->len - n);
    b->len -= n;
    b->p[b->len] = '\0';
}

void rt_buf_truncate(rt_buf_t *b, size_t len)
{
    if (len < b->len) {
        b->len = len;
        b->p[len] = '\0';
    }
}
