/* Growable byte buffer with a hard maximum. Growth doubles up to max; the allocation is always
 * cap + 1 bytes so that rgm_buf_cstr never needs to grow. */
#include "core/buf.h"

#include <stdarg.h>
#include <stdio.h>

#include <uv.h>

#define BUF_MIN_CAP 64

void rgm_buf_init(rgm_buf_t *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

/* Make room for len + extra bytes. 0 or UV_ENOBUFS. */
static int reserve(rgm_buf_t *b, size_t extra)
{
    size_t need, cap;

    if (extra > b->max - b->len)
        return UV_ENOBUFS;
    need = b->len + extra;
    if (b->data && need <= b->cap)
        return 0;
    cap = b->cap < BUF_MIN_CAP ? BUF_MIN_CAP : b->cap;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? SIZE_MAX - 1 : cap * 2;
    if (cap > b->max)
        cap = b->max;
    b->data = rgm_realloc(b->data, cap + 1);
    b->cap = cap;
    return 0;
}

int rgm_buf_append(rgm_buf_t *b, const void *p, size_t n)
{
    int err;

    if (n == 0)
        return 0;
    err = reserve(b, n);
    if (err < 0)
        return err;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int rgm_buf_appendc(rgm_buf_t *b, char c)
{
    return rgm_buf_append(b, &c, 1);
}

int rgm_buf_vappendf(rgm_buf_t *b, const char *fmt, va_list ap)
{
    va_list ap2;
    int n, err;

    va_copy(ap2, ap);
    /* First try in the space already there (cap + 1 bytes counting the NUL slot). */
    if (b->data)
        n = vsnprintf(b->data + b->len, b->cap - b->len + 1, fmt, ap);
    else
        n = vsnprintf(NULL, 0, fmt, ap);
    if (n < 0) {
        err = UV_EINVAL;
        goto out;
    }
    if (b->data && (size_t)n <= b->cap - b->len) {
        b->len += (size_t)n;
        err = 0;
        goto out;
    }
    err = reserve(b, (size_t)n);
    if (err < 0)
        goto out;
    if (vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap2) != n) {
        err = UV_EINVAL;
        goto out;
    }
    b->len += (size_t)n;
out:
    va_end(ap2);
    return err;
}

int rgm_buf_appendf(rgm_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    int err;

    va_start(ap, fmt);
    err = rgm_buf_vappendf(b, fmt, ap);
    va_end(ap);
    return err;
}

char *rgm_buf_cstr(rgm_buf_t *b)
{
    if (!b->data) {
        /* cap stays 0 (<= max whatever max is); the one byte is the NUL slot. */
        b->data = rgm_malloc(1);
        b->cap = 0;
    }
    b->data[b->len] = '\0';
    return b->data;
}

void rgm_buf_consume(rgm_buf_t *b, size_t n)
{
    RGM_BUG_ON(n > b->len);
    if (n < b->len)
        memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

void rgm_buf_reset(rgm_buf_t *b)
{
    b->len = 0;
}

void rgm_buf_free(rgm_buf_t *b)
{
    RGM_FREE(b->data);
    b->len = 0;
    b->cap = 0;
}
