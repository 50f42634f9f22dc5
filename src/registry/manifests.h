/* The manifest and tag-list handlers of the /v2 API (GET/HEAD /v2/<name>/manifests/<ref>,
 * GET /v2/<name>/tags/list), for routes.c: from the index and store while fresh, otherwise
 * through one upstream GET shared by every waiter. Internal to src/registry. */
#ifndef RGM_REGISTRY_MANIFESTS_H
#define RGM_REGISTRY_MANIFESTS_H

#include "registry/request.h"

/* Serve q (a manifest route, after rq_begin). q is then the handler's: it answers it, now or
 * from a later callback, and sets q->detach. */
void manifests_handle(struct rq *q);
/* The same for a tags/list route (HEAD gets 405). */
void tags_handle(struct rq *q);
/* Cancel every manifest and tag-list job of r; each ends through its callbacks (its waiters
 * are answered), and r->mjobs is NULL once all have. */
void manifests_shutdown(struct rq_env *r);

#endif
