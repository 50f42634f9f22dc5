/* Small parsers and helpers: sizes, durations, numbers, URLs, host:port, query strings,
 * base64, hex, time. Strict: trailing garbage, overflow and empty input are errors. */
#ifndef RGM_CORE_UTIL_H
#define RGM_CORE_UTIL_H

#include "core/common.h"

/* "1024", "512B", "10KB" (10^3), "50GiB" (2^30), "1.5GiB" ... units B KB MB GB TB KiB MiB GiB
 * TiB (case-sensitive as written, also "K" "M" "G" "T" = binary). 0 or UV_EINVAL / UV_ERANGE. */
RGM_MUST_CHECK int rgm_parse_size(const char *s, uint64_t *out);
/* "90s", "5m", "1h30m", "250ms", "2d", "0" -> milliseconds. A bare number other than 0 is an
 * error (the unit is required). 0 or UV_EINVAL / UV_ERANGE. */
RGM_MUST_CHECK int rgm_parse_duration(const char *s, uint64_t *out_ms);
/* Decimal, no sign, no spaces, <= max. */
RGM_MUST_CHECK int rgm_parse_uint(const char *s, uint64_t max, uint64_t *out);

/* Split "host:port", "[v6]:port". host is copied into hostbuf. 0 or UV_EINVAL. */
RGM_MUST_CHECK int rgm_parse_hostport(const char *s, char *hostbuf, size_t hostlen, int *port);

typedef struct rgm_url {
    int is_https;
    char host[256];  /* without brackets for IPv6 */
    int port;        /* explicit or the scheme's default */
    char path[2048]; /* from the first '/', query included; "/" when empty */
} rgm_url_t;
/* http:// or https:// URLs only. 0 or UV_EINVAL. */
RGM_MUST_CHECK int rgm_url_parse(const char *url, rgm_url_t *out);

/* Value of key in a raw query string ("a=1&ns=docker.io"), percent-decoded into out.
 * 1 found, 0 not found, <0 too long or bad escape. */
int rgm_query_get(const char *query, const char *key, char *out, size_t outlen);
/* Percent-encode s for a query value into out. 0 or UV_ENOBUFS. */
RGM_MUST_CHECK int rgm_url_encode(const char *s, char *out, size_t outlen);

/* Base64 (standard alphabet, padding). Return the output length, or <0 (UV_ENOBUFS,
 * UV_EINVAL). Output is NUL-terminated. */
int rgm_b64_encode(const void *in, size_t len, char *out, size_t outlen);
int rgm_b64_decode(const char *in, size_t len, unsigned char *out, size_t outlen);

/* Lowercase hex of len bytes into out (2*len+1). */
void rgm_hex(const unsigned char *in, size_t len, char *out);

/* Wall clock in milliseconds since the epoch; RFC 7231 date ("Sun, 06 Nov 1994 08:49:37 GMT"). */
uint64_t rgm_time_ms(void);
void rgm_http_date(char out[32]);

/* write(2) all len bytes to a blocking fd (small files, synchronously), retrying on EINTR.
 * 0 or a negative errno. */
RGM_MUST_CHECK int rgm_write_all(int fd, const void *data, size_t len);

/* Case-insensitive ASCII comparison (locale-free). */
int rgm_strcaseeq(const char *a, const char *b);

#endif
