/* The mirror's own identity for a registry: which source applies (a static password, a
 * docker config.json's auths, credHelpers or credsStore, a credential helper, or the kubelet's
 * credential provider plugins for registries without credentials) and the credentials it
 * gives now. A failing source means anonymous, a WARN (from the source's module) and a count
 * in regmirror_credential_errors_total{source,registry}. No HTTP: the upstream module uses
 * the credentials in its auth dance. */
#ifndef RGM_REGISTRY_IDENTITY_H
#define RGM_REGISTRY_IDENTITY_H

#include <uv.h>

#include "core/buf.h"
#include "core/common.h"
#include "core/config.h"
#include "registry/credrun.h"

typedef struct rgm_identity rgm_identity_t;
typedef struct rgm_identity_wait rgm_identity_wait_t;

/* cfg is borrowed and outlives id. Reads each registry's docker config.json and the
 * credential provider config (synchronously: call before the loop runs). NULL with a message
 * in err when the provider config cannot be read or is invalid. */
rgm_identity_t *rgm_identity_new(uv_loop_t *loop, const rgm_config_t *cfg, char *err,
                                 size_t errlen);
/* Check what rgm_identity_new would read and could refuse: the credential provider config.
 * 0, or <0 with a message in err. Synchronous. */
RGM_MUST_CHECK int rgm_identity_check(const rgm_config_t *cfg, char *err, size_t errlen);
/* Stop runs in flight (waiters dropped) and free; NULL is fine. Handles close on later loop
 * turns. */
void rgm_identity_free(rgm_identity_t *id);

/* 1 when reg has an identity of the mirror's own that may give credentials for repo (static,
 * docker config, helper, or a provider matching the image); 0 for anonymous only. */
int rgm_identity_has(const rgm_identity_t *id, const rgm_registry_cfg_t *reg, const char *repo);

/* The credentials are borrowed for the call; username NULL: anonymous (none, or the source
 * failed: already logged and counted). */
typedef void (*rgm_identity_cb)(const rgm_cred_t *cred, void *ud);

/* The mirror's own credentials for reg and repo.
 * - 1: known now, copied into *now (the caller clears it). *is_cached is 1 when they came
 *   from a helper's or plugin's kept answer, which rgm_identity_forget would drop.
 * - 0: a helper or plugin runs; cb follows exactly once unless the wait is cancelled.
 * Never fails: a source that cannot start gives 1 with anonymous. */
RGM_MUST_CHECK int rgm_identity_get(rgm_identity_t *id, const rgm_registry_cfg_t *reg,
                                    const char *repo, rgm_identity_cb cb, void *ud,
                                    rgm_identity_wait_t **out, rgm_cred_t *now, int *is_cached);
void rgm_identity_cancel(rgm_identity_wait_t *w);
/* The upstream refused kept credentials: drop them, so that the next get runs the helper or
 * plugin again. */
void rgm_identity_forget(rgm_identity_t *id, const rgm_registry_cfg_t *reg, const char *repo);

/* Count one failure of a source (a helper or plugin that failed, hung or answered badly). */
void rgm_identity_count_error(rgm_identity_t *id, const char *source, const char *registry);
/* regmirror_credential_errors_total{source,registry} in Prometheus text. 0 or UV_ENOBUFS. */
RGM_MUST_CHECK int rgm_identity_metrics(const rgm_identity_t *id, rgm_buf_t *out);
/* Runs started, helpers and plugins together (tests). */
uint64_t rgm_identity_runs(const rgm_identity_t *id);

#endif
