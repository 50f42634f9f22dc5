/* Pins: image patterns whose cached content is never evicted. Patterns come from the config
 * ("pin") and from a pins table in index.db (regmirror pin/unpin). A pattern is normalised
 * (registry/filter does that) to "registry/repository[:tag]" or "registry/repository@digest",
 * globs allowed in the repository and the tag (core/glob). An image is pinned when:
 *   - a digest pattern names it;
 *   - a tag that matches a tag pattern points at it, or pointed at it until it moved less
 *     than keep_ms ago (a trigger on the tags table records moves), so that nodes mid-rollout
 *     keep the previous digest;
 *   - a pattern without tag or digest matches a repository it came through.
 * It knows rows and patterns, not eviction (cache/evict asks it) or reference syntax. */
#ifndef RGM_CACHE_PINS_H
#define RGM_CACHE_PINS_H

#include "core/common.h"
#include "cache/index.h"

typedef struct rgm_pins rgm_pins_t;

/* Create the pins and tag_moves tables (and the trigger) when missing. idx is borrowed and
 * outlives the result; *out is the caller's (rgm_pins_close). 0 or UV_EIO (logged). */
RGM_MUST_CHECK int rgm_pins_open(rgm_index_t *idx, rgm_pins_t **out);
/* NULL is a no-op. */
void rgm_pins_close(rgm_pins_t *p);

/* The config's patterns (normalised; copied), replacing earlier ones. */
void rgm_pins_set_config(rgm_pins_t *p, char *const *patterns, size_t n);
/* Record a stored pin (normalised pattern, copied). 0 or UV_EIO. */
RGM_MUST_CHECK int rgm_pins_add(rgm_pins_t *p, const char *pattern);
/* Remove a stored pin. 1 removed, 0 there was none, <0 (UV_EIO). */
int rgm_pins_remove(rgm_pins_t *p, const char *pattern);
/* Called per pattern (borrowed for the call), config patterns first with is_config 1; non-zero
 * stops. Returns the number given to cb, or UV_EIO. */
typedef int (*rgm_pins_fn)(const char *pattern, int is_config, void *ud);
int rgm_pins_walk(rgm_pins_t *p, rgm_pins_fn cb, void *ud);
/* Read the stored pins again (another process may have changed them). 0 or UV_EIO. */
RGM_MUST_CHECK int rgm_pins_refresh(rgm_pins_t *p);

/* Is the cached object digest pinned (see the header's rules)? now_ms and keep_ms (tag_ttl)
 * decide whether a moved tag still pins its previous digest. When which is not NULL, the
 * first matching pattern is copied there (len bytes) and is_config says where it came from.
 * 1, 0 or <0 (UV_EIO). */
int rgm_pins_match(rgm_pins_t *p, const char *digest, uint64_t now_ms, uint64_t keep_ms,
                   char *which, size_t len, int *is_config);

/* 1 when some tag row points at digest, 0 when none, <0 (UV_EIO). */
int rgm_pins_is_tagged(rgm_pins_t *p, const char *digest);

/* 1 when pattern, as normalised, names one image by digest or by tag without globs. */
int rgm_pins_is_exact(const char *pattern);

#endif
