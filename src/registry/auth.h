/* Parsing and small caches for the registry auth flows: WWW-Authenticate challenges, token
 * responses, Docker config.json credentials, Basic headers, credential hashes, a bounded TTL
 * cache and scope strings. Pure and synchronous (one exception: the config.json lookup reads
 * a file); no networking: the upstream module drives the flows. Never logs secrets. */
#ifndef RGM_REGISTRY_AUTH_H
#define RGM_REGISTRY_AUTH_H

#include "core/buf.h"
#include "core/common.h"

/* ---- WWW-Authenticate ---- */

typedef enum rgm_auth_scheme {
    RGM_AUTH_SCHEME_OTHER = 0,
    RGM_AUTH_SCHEME_BEARER,
    RGM_AUTH_SCHEME_BASIC,
} rgm_auth_scheme_t;

#define RGM_AUTH_REALM_MAX   1024
#define RGM_AUTH_SERVICE_MAX 256
#define RGM_AUTH_SCOPE_MAX   2048
#define RGM_AUTH_ERROR_MAX   64

/* One challenge. Parameters that are absent are "". */
typedef struct rgm_auth_challenge {
    rgm_auth_scheme_t scheme;
    char realm[RGM_AUTH_REALM_MAX];
    char service[RGM_AUTH_SERVICE_MAX];
    char scope[RGM_AUTH_SCOPE_MAX];
    char error[RGM_AUTH_ERROR_MAX]; /* e.g. "insufficient_scope", "invalid_token" */
} rgm_auth_challenge_t;

/* Parse a WWW-Authenticate value (RFC 7235): one or more comma-separated challenges, scheme
 * names in any case, auth-params as token or quoted-string (backslash escapes, commas inside
 * quotes), whitespace around '=', token68 after a scheme (ignored). Parameter names are
 * case-insensitive; unknown ones are ignored; a repeated one keeps the last value. Fills at
 * most max entries of out (later challenges are checked but not stored). Returns the number
 * stored (0 for an empty value), UV_EINVAL on a syntax error (unterminated quote, control
 * character, missing scheme...), UV_ENOBUFS when a realm/service/scope/error value is longer
 * than its field. */
int rgm_auth_parse_challenges(const char *value, rgm_auth_challenge_t *out, size_t max);

/* ---- token responses ---- */

#define RGM_AUTH_TOKEN_MAX 65536 /* bytes of a token; longer -> UV_E2BIG */

typedef struct rgm_auth_token {
    char *token;         /* owned (free with rgm_auth_token_clear) */
    uint64_t expires_ms; /* absolute, wall clock milliseconds since the epoch */
} rgm_auth_token_t;

/* Parse a token endpoint answer (docker token spec / OAuth2): "token", or "access_token" when
 * "token" is absent (token wins when both are present); "expires_in" seconds (default 60, at
 * least 60); "issued_at" RFC 3339 (expiry = issued_at + expires_in, but never later than
 * now_ms + expires_in, so that an upstream clock ahead of ours cannot stretch a token's life;
 * an unparseable issued_at is ignored). now_ms is the current wall clock (rgm_time_ms()).
 * The token must be 1..RGM_AUTH_TOKEN_MAX visible ASCII characters (it goes into a header).
 * Returns 0 (tok->token owned by tok), UV_EINVAL (not JSON, no token, bad characters),
 * UV_E2BIG (token too long). On error tok->token is NULL. */
RGM_MUST_CHECK int rgm_auth_parse_token_response(const char *json, size_t len, uint64_t now_ms,
                                                 rgm_auth_token_t *tok);
/* Free tok->token and zero tok. */
void rgm_auth_token_clear(rgm_auth_token_t *tok);

/* ---- Docker config.json credentials ---- */

/* Look up credentials for registry (a host[:port], e.g. "docker.io", "ghcr.io") in a Docker
 * config.json (also the format of Kubernetes .dockerconfigjson secrets). "auths" keys match by
 * host after stripping "http(s)://" and any path, case-insensitively; index.docker.io,
 * registry-1.docker.io and docker.io are the same registry. An entry gives a base64 "auth"
 * ("user:pass", preferred) or "username" and "password"; "identitytoken" is ignored. On 0,
 * *user and *pass are malloc'd strings owned by the caller. Returns 0, UV_ENOENT (no usable
 * entry for registry), UV_EIO (file unreadable), UV_EINVAL (bad JSON, bad base64, no ':').
 * Reads the file synchronously: call it at configuration time, not on the loop's hot path. */
RGM_MUST_CHECK int rgm_auth_docker_config_lookup(const char *path, const char *registry,
                                                 char **user, char **pass);
/* Same from a JSON text of len bytes already in memory. */
RGM_MUST_CHECK int rgm_auth_docker_config_lookup_json(const char *json, size_t len,
                                                      const char *registry, char **user,
                                                      char **pass);

/* What a credential helper gets on stdin for registry, as docker sends it: the host[:port],
 * or "https://index.docker.io/v1/" for docker.io (and its aliases). Borrowed (registry, or a
 * constant). */
const char *rgm_auth_helper_server_url(const char *registry);
/* The credential helper docker would run for registry from a docker config.json: its
 * credHelpers entry for rgm_auth_helper_server_url(registry) (the exact key), else its
 * credsStore. 1 with *helper a malloc'd name (docker-credential-<name>), 0 when neither
 * applies (then "auths" does), UV_EIO (unreadable), UV_EINVAL (bad JSON). Reads the file
 * synchronously: call it at configuration time. */
RGM_MUST_CHECK int rgm_auth_docker_config_helper(const char *path, const char *registry,
                                                 char **helper);

/* ---- headers, hashes, scopes ---- */

/* "Basic " + base64(user ":" pass) into out (outlen bytes). 0, UV_ENOBUFS, UV_EINVAL (':' or a
 * control character in user, a control character in pass). */
RGM_MUST_CHECK int rgm_auth_basic_header(const char *user, const char *pass, char *out,
                                         size_t outlen);

/* Lowercase hex HMAC-SHA256 of an Authorization header value under a random key made once per
 * process: stable within the process, not across restarts, and useless to brute-force the
 * secret from if it leaks. For cache keys; the value itself is never kept or logged. */
void rgm_auth_cred_hash(const char *authorization, char out[65]);

/* "repository:<repo>:pull" into out. 0, UV_EINVAL (repo not a valid name), UV_ENOBUFS. */
RGM_MUST_CHECK int rgm_auth_pull_scope(const char *repo, char *out, size_t outlen);

/* The token request URL for a Bearer challenge: realm + "?service=...&scope=..." (or '&' when
 * the realm already has a query), values percent-encoded, parts that are "" left out. scope
 * NULL means the challenge's own scope.
 * 0, UV_EINVAL (realm is not an http(s) URL), UV_ENOBUFS. */
RGM_MUST_CHECK int rgm_auth_token_url(const rgm_auth_challenge_t *ch, const char *scope, char *out,
                                      size_t outlen);

#define RGM_AUTH_CLIENT_ID "regmirror" /* OAuth2 client_id (required by the grant) */

/* The OAuth2 refresh_token grant for a Bearer challenge (RFC 6749 §6), as docker POSTs it to
 * the realm when a credential helper gives an identity token: "grant_type=refresh_token&
 * refresh_token=...&service=...&scope=...&client_id=regmirror", the form body
 * (application/x-www-form-urlencoded), values percent-encoded, service and scope left out when
 * "". scope NULL means the challenge's own. out is emptied first; the caller wipes it (it holds
 * the token). 0, UV_EINVAL (refresh_token ""), UV_ENOBUFS (past out's max; out then empty). */
RGM_MUST_CHECK int rgm_auth_token_form(const rgm_auth_challenge_t *ch, const char *scope,
                                       const char *refresh_token, rgm_buf_t *out);

/* ---- TTL cache ---- */

/* String -> string map with an absolute expiry per entry and at most max_entries entries
 * (the oldest written is evicted). Keys are like "token|<registry>|<scope>|<credhash>" or
 * "access|<credhash>|<registry>|<repo>". Not thread-safe (one loop). */
typedef struct rgm_auth_cache rgm_auth_cache_t;

#define RGM_AUTH_CACHE_DEFAULT_MAX 4096

/* max_entries 0 means RGM_AUTH_CACHE_DEFAULT_MAX. Never NULL (aborts on OOM). */
rgm_auth_cache_t *rgm_auth_cache_new(size_t max_entries);
/* Frees every entry and c; NULL is fine. */
void rgm_auth_cache_free(rgm_auth_cache_t *c);
/* Copy key and value in, replacing an existing entry (which then counts as newest). */
void rgm_auth_cache_put(rgm_auth_cache_t *c, const char *key, const char *value,
                        uint64_t expires_ms);
/* The value for key, or NULL when absent or expired (expires_ms <= now_ms; the expired entry
 * is dropped). The value is borrowed: valid until the next put, del, prune or free on c. */
const char *rgm_auth_cache_get(rgm_auth_cache_t *c, const char *key, uint64_t now_ms);
/* Drop key (e.g. a token the upstream rejected). 1 when it was there, 0 otherwise. */
int rgm_auth_cache_del(rgm_auth_cache_t *c, const char *key);
/* Drop every expired entry; returns how many. */
size_t rgm_auth_cache_prune(rgm_auth_cache_t *c, uint64_t now_ms);
size_t rgm_auth_cache_count(const rgm_auth_cache_t *c);

#endif
