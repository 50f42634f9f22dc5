/* Per-registry repository filters ("repositories": {"allow": [...], "deny": [...]}): globs
 * over the normalised repository ("library/nginx"), '*' one path segment, '**' any depth
 * (core/glob). Deny beats allow; an empty allow list allows everything. Pure: it knows the
 * registry's config, not requests or the cache. */
#ifndef RGM_REGISTRY_FILTER_H
#define RGM_REGISTRY_FILTER_H

#include "core/common.h"
#include "core/config.h"

/* 0 when repo may be served through reg; 1 when a rule refuses it, with a message naming the
 * rule written into msg ("repository library/x is denied by registries.docker.io.repositories
 * .deny[0] \"library/x\""). reg and repo are borrowed. */
int rgm_filter_check(const rgm_registry_cfg_t *reg, const char *repo, char *msg, size_t msglen);

/* A pin pattern, normalised as Kubernetes normalises references, into out (len bytes):
 * without '*' it is an image reference ("nginx:1.27" -> "docker.io/library/nginx:1.27";
 * "nginx" -> "...:latest"; a digest wins over a tag: "REG/REPO@DIGEST"); with '*' it is a
 * glob "registry/repository[:tag]" whose registry defaults to docker.io and whose single-
 * segment docker.io repository gets "library/" ("pause:*" -> "docker.io/library/pause:*"),
 * and without a tag it matches every image of the repositories. 0, or UV_EINVAL with a
 * message in err. */
RGM_MUST_CHECK int rgm_filter_pin_normalize(const char *in, char *out, size_t len, char *err,
                                            size_t errlen);

#endif
