/* Docker credential helpers (the docker-credential-helpers protocol): run
 * `docker-credential-NAME get` with the server URL on stdin, parse {"Username","Secret"} from
 * stdout, and keep each answer for its lifetime. Concurrent needs of one (helper, server URL)
 * share one run. It logs each run (never stdout: it holds the secret; stderr at WARN, one
 * line) and gives failures back as codes; it knows nothing of registries or HTTP. */
#ifndef RGM_REGISTRY_CREDHELPER_H
#define RGM_REGISTRY_CREDHELPER_H

#include <uv.h>

#include "core/common.h"
#include "registry/credrun.h"

#define RGM_CREDHELPER_OUT_MAX      (64 * 1024) /* stdout bytes; more is an error */
#define RGM_CREDHELPER_DEFAULT_LIFE (5 * 60 * 1000)
#define RGM_CREDHELPER_DEFAULT_TIME (10 * 1000)

typedef struct rgm_credhelper rgm_credhelper_t;
typedef struct rgm_credhelper_wait rgm_credhelper_wait_t;

/* Never NULL (aborts on OOM). */
rgm_credhelper_t *rgm_credhelper_new(uv_loop_t *loop);
/* Kill runs in flight (their waiters are dropped without a callback) and free h once their
 * handles are closed, which takes loop turns. NULL is fine. */
void rgm_credhelper_free(rgm_credhelper_t *h);

typedef struct rgm_credhelper_req {
    const char *helper;     /* "ecr-login" (docker-credential-ecr-login on PATH) or a path */
    const char *server_url; /* what goes on stdin: "host[:port]", "https://index.docker.io/v1/" */
    const char *registry;   /* for the log only */
    uint64_t lifetime_ms;   /* keep the answer this long; 0: every call runs the helper */
    uint64_t timeout_ms;    /* 0: RGM_CREDHELPER_DEFAULT_TIME */
} rgm_credhelper_req_t;

/* err 0: cred holds credentials, or cred->username is NULL for anonymous ("credentials not
 * found", or an empty answer). err <0: the helper failed (UV_ENOENT not found, UV_ETIMEDOUT
 * killed, UV_EPROTO bad answer or exit status, UV_E2BIG too much output); the reason is
 * already logged at WARN. cred is borrowed for the call. */
typedef void (*rgm_credhelper_cb)(int err, const rgm_cred_t *cred, void *ud);

/* Get credentials. Strings in req are copied.
 * - Returns 1 when a fresh cached answer was copied into *now (the caller owns it; clear it
 *   with rgm_cred_clear); cb is not called.
 * - Returns 0 when a run was started or joined: cb runs later, exactly once, unless the wait
 *   is cancelled first. *out is the wait, valid until cb starts.
 * - Returns <0 without calling cb: UV_EINVAL (empty helper or server URL), or the helper
 *   could not be started (UV_ENOENT...; logged at WARN). The failure is remembered for a few
 *   seconds, during which gets answer 1 with anonymous. */
RGM_MUST_CHECK int rgm_credhelper_get(rgm_credhelper_t *h, const rgm_credhelper_req_t *req,
                                      rgm_credhelper_cb cb, void *ud, rgm_credhelper_wait_t **out,
                                      rgm_cred_t *now);
/* Drop a wait: its cb will not run. The run it shares goes on for the others. */
void rgm_credhelper_cancel(rgm_credhelper_wait_t *w);
/* Forget the cached answer of (helper, server_url), e.g. after the upstream refused it: the
 * next get runs the helper. A run in flight is not affected. */
void rgm_credhelper_forget(rgm_credhelper_t *h, const char *helper, const char *server_url);
/* How many times a helper has been started (tests, metrics). */
uint64_t rgm_credhelper_runs(const rgm_credhelper_t *h);

/* Parse a helper's stdout. 0 with cred filled (a "<token>" username sets is_identity_token and
 * is kept as it is); 0 with username NULL for an empty answer (no Username and no Secret);
 * UV_EINVAL for anything else (not a JSON object, fields not strings, control bytes, a
 * username without a secret). */
RGM_MUST_CHECK int rgm_credhelper_parse(const char *out, size_t len, rgm_cred_t *cred);
/* 1 when a failed helper's stdout is docker's "credentials not found" message. */
int rgm_credhelper_is_not_found(const char *out, size_t len);

#endif
