/* Config values: strict parsers from a JSON value to a C value (strings, booleans, integers,
 * sizes, durations, log levels, registry names, endpoint URLs, lists of HOST:PORT, readable
 * files, secret files), each naming the key on error, and the printers that turn a stored
 * value back into the JSON its parser takes. Knows nothing of which keys exist
 * (core/config-schema) nor of the config struct (core/config). */
#ifndef RGM_CORE_CONFIG_VALUE_H
#define RGM_CORE_CONFIG_VALUE_H

#include <jansson.h>

#include "core/common.h"

/* Where messages go. Every message reads "FILE: KEY: problem", FILE being the file name or
 * the flag ("--registry") the value came from. */
typedef struct rgm_cfgval_ctx {
    const char *file;
    char *err;     /* the message, NUL-terminated; owned by the caller */
    size_t errlen; /* 0: no message is written */
} rgm_cfgval_ctx_t;

/* Write "FILE: KEY: <fmt>" into c->err ("FILE: <fmt>" when key is NULL or empty), cut short
 * when it does not fit. Returns UV_EINVAL, so that parsers can `return rgm_cfgval_fail(...)`. */
int rgm_cfgval_fail(const rgm_cfgval_ctx_t *c, const char *key, const char *fmt, ...)
    RGM_PRINTF(3, 4);

/* "an object", "a string", "null"... for "expected X, got Y" messages. */
const char *rgm_cfgval_type_name(const json_t *v);

/* The parsers. Each returns 0, or UV_EINVAL with a message naming key (the full dotted path,
 * as "registries.docker.io.tag_ttl"). Nothing is stored on error. */

/* A non-empty string without NUL bytes; *out is borrowed from v. With is_nullable, null gives
 * *out = NULL. */
RGM_MUST_CHECK int rgm_cfgval_string(const rgm_cfgval_ctx_t *c, const char *key, const json_t *v,
                                     int is_nullable, const char **out);
/* true or false (not 0/1, not "yes"): *out 1 or 0. */
RGM_MUST_CHECK int rgm_cfgval_bool(const rgm_cfgval_ctx_t *c, const char *key, const json_t *v,
                                   int *out);
/* A JSON integer in min..max. */
RGM_MUST_CHECK int rgm_cfgval_uint(const rgm_cfgval_ctx_t *c, const char *key, const json_t *v,
                                   uint64_t min, uint64_t max, uint64_t *out);
/* A byte count: a non-negative integer or a size string ("512", "10MB", "1.5GiB"), min..max. */
RGM_MUST_CHECK int rgm_cfgval_size(const rgm_cfgval_ctx_t *c, const char *key, const json_t *v,
                                   uint64_t min, uint64_t max, uint64_t *out);
/* A duration string ("250ms", "90s", "1h30m", "0") in milliseconds, min..365 days. */
RGM_MUST_CHECK int rgm_cfgval_duration(const rgm_cfgval_ctx_t *c, const char *key, const json_t *v,
                                       uint64_t min, uint64_t *out_ms);
/* "error", "warn", "info" or "debug": *out an enum rgm_log_level. */
RGM_MUST_CHECK int rgm_cfgval_level(const rgm_cfgval_ctx_t *c, const char *key, const json_t *v,
                                    int *out);
/* A registry name (rgm_cfgval_is_registry_name). */
RGM_MUST_CHECK int rgm_cfgval_regname(const rgm_cfgval_ctx_t *c, const char *key, const char *s);
/* An http(s) endpoint without userinfo, query or fragment. *out (malloc'd, the caller frees)
 * is s without trailing slashes. */
RGM_MUST_CHECK int rgm_cfgval_endpoint(const rgm_cfgval_ctx_t *c, const char *key, const char *s,
                                       char **out);
/* One base URL string: http(s)://HOST[:PORT], with no path (a lone "/" is allowed), query,
 * fragment or userinfo (cluster peers). */
RGM_MUST_CHECK int rgm_cfgval_base_url(const rgm_cfgval_ctx_t *c, const char *key, const json_t *v);
/* One "HOST:PORT" or "[V6]:PORT" string. */
RGM_MUST_CHECK int rgm_cfgval_hostport(const rgm_cfgval_ctx_t *c, const char *key, const json_t *v);
/* A list: one string, or a non-empty array whose every element passes check (called with
 * "KEY[i]"). what names an element in "must list at least one <what>". On success *out is a
 * malloc'd array of *out_len malloc'd copies (the caller frees). */
RGM_MUST_CHECK int
rgm_cfgval_list(const rgm_cfgval_ctx_t *c, const char *key, const json_t *v, const char *what,
                int (*check)(const rgm_cfgval_ctx_t *c, const char *key, const json_t *elem),
                char ***out, size_t *out_len);
/* path is a file this process can read (access(2); blocking, startup only). */
RGM_MUST_CHECK int rgm_cfgval_readable(const rgm_cfgval_ctx_t *c, const char *key,
                                       const char *path);
/* Read a secret (a password) from the file at path: at most 4 KiB, trailing CR/LF stripped,
 * not empty, no NUL byte. *out is malloc'd (the caller wipes and frees it); the stack copy is
 * wiped. Blocking file I/O, startup only. The message names the path, never the content. */
RGM_MUST_CHECK int rgm_cfgval_secret_file(const rgm_cfgval_ctx_t *c, const char *key,
                                          const char *path, char **out);

/* 1 when name is a lowercase host name (labels of [a-z0-9-], no leading or trailing '-', at
 * most 63 bytes a label and 253 in all) with an optional :PORT (1..65535); else 0. */
int rgm_cfgval_is_registry_name(const char *name);

/* The printers: a new JSON value (the caller owns the reference; NULL only when jansson runs
 * out of memory) that the matching parser turns back into the same value. */

/* Bytes as the largest exact binary unit ("16KiB", "50GiB"); an integer when there is none. */
json_t *rgm_cfgval_size_json(uint64_t n);
/* Milliseconds as units ("1h30m", "250ms"); "0" for zero. */
json_t *rgm_cfgval_duration_json(uint64_t ms);
/* The name of a log level ("info"); NULL when level is not one. Static storage. */
const char *rgm_cfgval_level_name(int level);

#endif
