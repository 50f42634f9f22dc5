/* Digests being read from the store right now: a counted set that request handlers hold
 * while a stored file is open for a response, and that eviction asks before it removes
 * anything (a reader of an unlinked file would finish, but eviction must not pick it).
 * In memory only, loop thread only. It knows digests, not requests. */
#ifndef RGM_CACHE_INUSE_H
#define RGM_CACHE_INUSE_H

#include "core/common.h"

typedef struct rgm_inuse rgm_inuse_t;

/* Owned by the caller (rgm_inuse_free; NULL is a no-op there). */
rgm_inuse_t *rgm_inuse_new(void);
void rgm_inuse_free(rgm_inuse_t *u);
/* Count one more holder of digest (copied). */
void rgm_inuse_hold(rgm_inuse_t *u, const char *digest);
/* One holder less; a digest not held is ignored. */
void rgm_inuse_release(rgm_inuse_t *u, const char *digest);
/* 1 when digest has a holder, else 0. u may be NULL (0). */
int rgm_inuse_is_held(const rgm_inuse_t *u, const char *digest);

#endif
