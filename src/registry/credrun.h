/* Run one credential program (a docker credential helper or a kubelet credential provider
 * plugin) on the loop: arguments and extra environment, bytes on its stdin, its stdout read
 * whole under a limit, the first line of its stderr, and a deadline after which its process
 * group is killed. It knows nothing of either protocol and logs nothing: stdout holds secrets,
 * so what to log is the caller's decision. The process must ignore SIGPIPE (main.c does): a
 * program may exit before it reads its stdin. */
#ifndef RGM_REGISTRY_CREDRUN_H
#define RGM_REGISTRY_CREDRUN_H

#include <uv.h>

#include "core/common.h"

typedef struct rgm_credrun rgm_credrun_t;

/* What a credential program hands back. username NULL: anonymous. Both strings owned. */
typedef struct rgm_cred {
    char *username;
    char *secret;          /* the password, or the identity token when is_identity_token */
    int is_identity_token; /* a helper's "<token>" username: secret is an OAuth2 refresh token */
} rgm_cred_t;

/* Wipe and free both strings, zero c. */
void rgm_cred_clear(rgm_cred_t *c);
/* Deep copy of src into dst (dst is overwritten, not cleared first). */
void rgm_cred_copy(rgm_cred_t *dst, const rgm_cred_t *src);

#define RGM_CREDRUN_STDERR_MAX 512 /* bytes of the first stderr line that are kept */

typedef struct rgm_credrun_opts {
    const char *file;        /* absolute path, or a name looked up on PATH */
    const char *const *args; /* argv[1..], NULL-terminated; NULL for none */
    const char *const *env;  /* "NAME=VALUE" added to (and overriding) our environment,
                              * NULL-terminated; NULL for none */
    const char *input;       /* written to stdin, which is then closed */
    size_t input_len;
    uint64_t timeout_ms; /* > 0 */
    size_t stdout_max;   /* more than this on stdout: the run fails with UV_E2BIG */
} rgm_credrun_opts_t;

typedef struct rgm_credrun_result {
    /* 0: the program ran and exited (see exit_status, term_signal); UV_ETIMEDOUT: killed at
     * the deadline; UV_E2BIG: stdout over stdout_max (killed); UV_ECANCELED: cancelled. */
    int err;
    int64_t exit_status;
    int term_signal;
    const char *out; /* stdout, NUL-terminated; borrowed for the callback only */
    size_t out_len;
    const char *err_line; /* first stderr line, control bytes dropped; "" when none */
    uint64_t elapsed_ms;
} rgm_credrun_result_t;

typedef void (*rgm_credrun_cb)(const rgm_credrun_result_t *res, void *ud);

/* Start the program. Strings in o are copied. Returns 0 and calls cb exactly once, later, from
 * the loop; or <0 (UV_ENOENT and the other uv_spawn errors, UV_EINVAL for an empty file) and
 * never calls it. The run frees itself after cb returns. *out (may be NULL) is valid until cb
 * starts. */
RGM_MUST_CHECK int rgm_credrun_start(uv_loop_t *loop, const rgm_credrun_opts_t *o,
                                     rgm_credrun_cb cb, void *ud, rgm_credrun_t **out);

/* Kill the run now; cb follows with UV_ECANCELED. Only before cb has started. */
void rgm_credrun_cancel(rgm_credrun_t *r);

#endif
