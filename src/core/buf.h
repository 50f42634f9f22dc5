/* Growable byte buffer with a hard maximum, for small whole messages (manifests, token JSON,
 * request heads, log lines). Not for streamed blob data: that goes through files (DESIGN). */
#ifndef RGM_CORE_BUF_H
#define RGM_CORE_BUF_H

#include <stdarg.h>

#include "core/common.h"

/* Public so that it can be embedded by value; only rgm_buf_* touch the fields.
 * Invariant: 0 <= len <= cap <= max. max is fixed by rgm_buf_init. When data is not NULL it
 * points to cap + 1 bytes, so that rgm_buf_cstr can always add a NUL after len bytes. */
typedef struct rgm_buf {
    char *data;
    size_t len, cap, max;
} rgm_buf_t;

/* An empty buffer that may grow up to max bytes. Allocates nothing. */
void rgm_buf_init(rgm_buf_t *b, size_t max);
/* Append n bytes from p (copied). 0, or UV_ENOBUFS when len + n would pass max (then nothing is
 * appended). */
RGM_MUST_CHECK int rgm_buf_append(rgm_buf_t *b, const void *p, size_t n);
/* Append one byte. 0 or UV_ENOBUFS. */
RGM_MUST_CHECK int rgm_buf_appendc(rgm_buf_t *b, char c);
/* Append printf-formatted text (without its NUL). 0, UV_ENOBUFS past max (nothing appended),
 * UV_EINVAL on a formatting error. */
RGM_MUST_CHECK int rgm_buf_appendf(rgm_buf_t *b, const char *fmt, ...) RGM_PRINTF(2, 3);
RGM_MUST_CHECK int rgm_buf_vappendf(rgm_buf_t *b, const char *fmt, va_list ap) RGM_PRINTF(2, 0);
/* NUL-terminate the contents (the NUL is not counted in len) and return data, which the buffer
 * keeps owning; valid until the next call that modifies b. Never NULL. */
char *rgm_buf_cstr(rgm_buf_t *b);
/* Drop the first n bytes (n <= len), moving the rest to the front. */
void rgm_buf_consume(rgm_buf_t *b, size_t n);
/* Empty the buffer, keeping its memory. */
void rgm_buf_reset(rgm_buf_t *b);
/* Free the memory; the buffer is empty and reusable with the same max afterwards. */
void rgm_buf_free(rgm_buf_t *b);

#endif
