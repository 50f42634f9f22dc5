/* The kubelet's credential provider plugins, run as the kubelet runs them: the
 * CredentialProviderConfig (YAML through libyaml, or JSON), matchImages with the kubelet's
 * glob rules, a CredentialProviderRequest on the plugin's stdin and its
 * CredentialProviderResponse from stdout, and the response cache by Image, Registry or
 * Global key. Needs for one image share one job. It knows nothing of registries' HTTP; it
 * logs each run (never its stdout) and failures at WARN, and gives failures back as codes. */
#ifndef RGM_REGISTRY_CREDPROVIDER_H
#define RGM_REGISTRY_CREDPROVIDER_H

#include <jansson.h>
#include <uv.h>

#include "core/common.h"
#include "registry/credrun.h"

#define RGM_CREDPROVIDER_TIMEOUT_MS (60 * 1000) /* the kubelet's exec timeout */
#define RGM_CREDPROVIDER_OUT_MAX    (1024 * 1024)
#define RGM_CREDPROVIDER_CONFIG_MAX (1024 * 1024)

typedef struct rgm_credproviders rgm_credproviders_t;
typedef struct rgm_credproviders_wait rgm_credproviders_wait_t;

/* ---- pure parts (unit-tested without a loop) ---- */

/* The kubelet's URLsMatchStr: 1 when image ("host[:port]/path") matches glob, else 0.
 * - the port must be the same (both absent, or equal strings);
 * - the host has as many dot-separated labels, each matched by the glob's label with '*',
 *   '?', '[...]' (with '^' negation and ranges) and '\' escapes, as Go's filepath.Match;
 * - the glob's path is a string prefix of the image's path.
 * A malformed pattern matches nothing. */
int rgm_credprovider_match(const char *glob, const char *image);
/* 1 when glob is a well-formed matchImages entry, else 0. */
int rgm_credprovider_valid_glob(const char *glob);

/* A Go time.Duration string ("12h", "1h30m", "0s", "0", "1.5h", "500ms") into milliseconds
 * (sub-millisecond parts dropped). 0, UV_EINVAL (syntax, negative), UV_ERANGE. */
RGM_MUST_CHECK int rgm_credprovider_parse_duration(const char *s, uint64_t *out_ms);

/* Parse a CredentialProviderConfig: YAML, or JSON when the first non-blank byte is '{'.
 * Checked as the kubelet checks it: apiVersion kubelet.config.k8s.io/v1 (or v1beta1,
 * v1alpha1), kind CredentialProviderConfig, at least one provider, each with a name (no '/',
 * no space, not "." or ".."; unique), non-empty valid matchImages, defaultCacheDuration >= 0,
 * an apiVersion credentialprovider.kubelet.k8s.io/v1 (or v1beta1, v1alpha1); optional args
 * (strings) and env (name/value). Unknown keys are ignored, as the kubelet does.
 * Plugins are bin_dir/NAME. timeout_ms 0: RGM_CREDPROVIDER_TIMEOUT_MS. loop may be NULL for
 * a check only (then rgm_credproviders_get must not be called). On error returns UV_EINVAL
 * with a message in err naming the field ("providers[0].matchImages[1]: ..."). */
RGM_MUST_CHECK int rgm_credproviders_parse(uv_loop_t *loop, const char *text, size_t len,
                                           const char *bin_dir, uint64_t timeout_ms, char *err,
                                           size_t errlen, rgm_credproviders_t **out);
/* Read path (synchronously: call it before the loop runs) and parse it. UV_EIO (message in
 * err) when it cannot be read, or over RGM_CREDPROVIDER_CONFIG_MAX. */
RGM_MUST_CHECK int rgm_credproviders_load(uv_loop_t *loop, const char *path, const char *bin_dir,
                                          uint64_t timeout_ms, char *err, size_t errlen,
                                          rgm_credproviders_t **out);
/* Kill jobs in flight (their waiters are dropped without a callback) and free p once the runs
 * are closed, which takes loop turns. NULL is fine. */
void rgm_credproviders_free(rgm_credproviders_t *p);
size_t rgm_credproviders_count(const rgm_credproviders_t *p);

/* The parsed response of one run, for tests and the cache. */
typedef enum rgm_credprovider_keytype {
    RGM_CP_KEY_IMAGE = 0,
    RGM_CP_KEY_REGISTRY,
    RGM_CP_KEY_GLOBAL,
} rgm_credprovider_keytype_t;

/* Parse a CredentialProviderResponse (JSON) for a provider configured with api_version:
 * apiVersion must equal it, kind CredentialProviderResponse, cacheKeyType Image, Registry or
 * Global, cacheDuration optional (has_duration 0 when absent), auth a map of
 * {username, password}. On 0, *auth is a new jansson object (may be empty) the caller owns.
 * UV_EINVAL otherwise, with the reason (no secrets) in why. */
RGM_MUST_CHECK int rgm_credprovider_parse_response(const char *out, size_t len,
                                                   const char *api_version,
                                                   rgm_credprovider_keytype_t *keytype,
                                                   int *has_duration, uint64_t *duration_ms,
                                                   json_t **auth, char *why, size_t whylen);
/* From an auth map, the credentials for image as the kubelet's keyring picks them: keys
 * normalised (scheme and a /v1/ or /v2/ prefix dropped), tried longest-first (reverse
 * lexicographic order), matched with rgm_credprovider_match. 1 (cred filled), 0 (none). */
int rgm_credprovider_pick(json_t *auth, const char *image, rgm_cred_t *cred);

/* ---- running ---- */

/* 1 when at least one provider's matchImages matches image. */
int rgm_credproviders_matches(const rgm_credproviders_t *p, const char *image);

/* err 0: cred holds the credentials, or username NULL for none (no auth entry matched).
 * err <0: every matching provider that ran failed (each logged at WARN; UV_ETIMEDOUT,
 * UV_EPROTO, UV_ENOENT...) and none gave credentials. provider names the provider the
 * credentials came from, or the first that failed ("" otherwise). Both borrowed. */
typedef void (*rgm_credproviders_cb)(int err, const rgm_cred_t *cred, const char *provider,
                                     void *ud);

/* Credentials for image ("registry[:port]/repository", no tag or digest).
 * - 1: answered from the cache (or no provider matches): *now filled (owned by the caller;
 *   username NULL for none), cb not called;
 * - 0: a job was started or joined; cb runs later exactly once unless the wait is cancelled;
 * - <0 (UV_EINVAL: empty image) without calling cb. */
RGM_MUST_CHECK int rgm_credproviders_get(rgm_credproviders_t *p, const char *image,
                                         rgm_credproviders_cb cb, void *ud,
                                         rgm_credproviders_wait_t **out, rgm_cred_t *now);
void rgm_credproviders_cancel(rgm_credproviders_wait_t *w);
/* Drop every cached response that would answer for image (its Image, Registry and Global
 * entries), e.g. after the upstream refused the credentials. */
void rgm_credproviders_forget(rgm_credproviders_t *p, const char *image);
/* How many plugin runs were started (tests, metrics). */
uint64_t rgm_credproviders_runs(const rgm_credproviders_t *p);

#endif
