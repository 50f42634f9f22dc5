/* The OCI 1.1 referrers handler (GET/HEAD /v2/<name>/referrers/<digest>[?artifactType=...]),
 * for routes.c: the upstream's answer, page by page, cached in the index per registry,
 * repository, subject digest and query for tag_ttl, and served stale while the upstream
 * fails. An upstream without the API gets clients a 404 UNSUPPORTED (their cue to use the
 * sha256-<hex> tag fallback). Internal to src/registry. */
#ifndef RGM_REGISTRY_REFERRERS_H
#define RGM_REGISTRY_REFERRERS_H

#include "registry/request.h"

/* Serve q (a referrers route, after rq_begin). q is then the handler's: it answers it, now or
 * from a later upstream callback. */
void referrers_handle(struct rq *q);

#endif
