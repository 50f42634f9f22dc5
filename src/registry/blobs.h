/* The blob handler of the /v2 API (GET/HEAD /v2/<name>/blobs/<digest>), for routes.c: cached
 * blobs from the store, misses through one upstream job per digest that every client joins.
 * Internal to src/registry. */
#ifndef RGM_REGISTRY_BLOBS_H
#define RGM_REGISTRY_BLOBS_H

#include "registry/request.h"

/* Serve q (a blob route, after rq_begin). q is then the handler's: it answers it, now or
 * from a later callback, and sets q->detach. */
void blobs_handle(struct rq *q);
/* Cancel every blob job of r (its upstream call, resume timer or wait for a slot); each ends
 * through its callbacks, and r->bjobs is NULL once all have. Waiters are answered. */
void blobs_shutdown(struct rq_env *r);

#endif
