/* Choosing what leaves the cache, by image. An image is a top-level manifest or index (no
 * cached index includes it) with everything it references (cache/refs), referrers included.
 * Over the limit, orphans go first (blobs nothing cached references, unrequested for
 * orphan_grace; only once the back-fill is complete), then the least recently used images,
 * each whole: the manifest and every object whose cached parents all go with it, so a blob
 * that a more recent image shares stays. Never removed: objects being fetched or read
 * (fetches, cache/inuse), pinned ones (cache/pins), and tagged manifests served within
 * tag_ttl. Synchronous, in small batches; it knows rows and files, not HTTP or registries. */
#ifndef RGM_CACHE_EVICT_H
#define RGM_CACHE_EVICT_H

#include "core/common.h"
#include "cache/store.h"
#include "cache/index.h"
#include "cache/refs.h"
#include "cache/pins.h"
#include "cache/fetch.h"
#include "cache/inuse.h"

/* Objects per step: an image is removed whole, so a step may end a little over it. */
#define RGM_EVICT_BATCH 100

typedef struct rgm_evict rgm_evict_t;

typedef struct rgm_evict_opts {
    uint64_t max_bytes;       /* 0: no limit */
    uint64_t target_bytes;    /* evict down to this (90 % of max) */
    uint64_t orphan_grace_ms; /* orphans unrequested this long go first */
    uint64_t tag_ttl_ms;      /* served tags and moved pins are kept this long */
    int is_served_kept;       /* keep tagged manifests served within tag_ttl (serve: 1) */
    /* A replica of a cluster: blobs no local manifest names may belong to an image another
     * replica holds, so none is an orphan; each goes by its last access, in turn with the
     * least recently used images (counted as lru-image), with no orphan_grace. */
    int is_cluster;
    /* A step ends after the image (or the orphan) that takes it past this many
     * microseconds, so that one step never holds serve's loop long; 0: the batch's count
     * alone bounds it (offline gc). */
    uint64_t budget_us;
} rgm_evict_opts_t;

enum rgm_evict_reason { RGM_EVICT_LRU_IMAGE = 0, RGM_EVICT_ORPHAN, RGM_EVICT_PURGE, RGM_EVICT_NR };

/* What eviction and purges removed, by reason (for /metrics). */
typedef struct rgm_evict_counters {
    uint64_t objects[RGM_EVICT_NR];
    uint64_t bytes[RGM_EVICT_NR];
    uint64_t images[RGM_EVICT_NR];
} rgm_evict_counters_t;

/* One image as the listing and purge see it. */
typedef struct rgm_evict_image {
    char digest[RGM_DIGEST_MAX];
    char media_type[256];
    uint64_t last_used_ms; /* the latest access of its manifests */
    uint64_t unique_bytes; /* what removing it frees */
    uint64_t shared_bytes; /* what it references that another cached image also does */
    size_t unique_objects;
    int is_pinned;
    char pin[1024]; /* the pattern that pins it, when is_pinned */
} rgm_evict_image_t;

/* Everything is borrowed and outlives the result; fetches and inuse may be NULL (offline). */
rgm_evict_t *rgm_evict_new(rgm_index_t *idx, rgm_store_t *store, rgm_refs_t *refs, rgm_pins_t *pins,
                           rgm_fetches_t *fetches, rgm_inuse_t *inuse);
void rgm_evict_free(rgm_evict_t *e);

/* One batch: when the cache holds more than o->max_bytes, remove orphans and then whole
 * images until it holds o->target_bytes or the batch is done. While the back-fill is not
 * complete nothing is removed (edges may be missing). When nothing can be removed (all
 * pinned, in use or within their grace) it stops and logs a WARN once, until the cache is
 * under the limit again. Returns 1 when more is needed, 0 when not (or stuck), <0 on an
 * index error. */
int rgm_evict_step(rgm_evict_t *e, const rgm_evict_opts_t *o);

/* Describe the image whose top-level manifest is top (pinned, sizes, last use). 0 or <0. */
RGM_MUST_CHECK int rgm_evict_describe(rgm_evict_t *e, const rgm_index_object_t *top,
                                      const rgm_evict_opts_t *o, rgm_evict_image_t *out);
/* Remove the image of manifest digest the way eviction does (objects in use are left), as
 * reason. Pins are not checked (the caller refuses pinned images). *freed (may be NULL) gets
 * the bytes removed. Returns the number of objects removed, or <0. */
int rgm_evict_remove_image(rgm_evict_t *e, const char *digest, enum rgm_evict_reason reason,
                           const rgm_evict_opts_t *o, uint64_t *freed);

const rgm_evict_counters_t *rgm_evict_counters(const rgm_evict_t *e);

/* The images' sizes for /metrics, from a pass over every image (rgm_evict_describe each),
 * made in small steps off the hot path and published whole when a pass ends. unique_bytes
 * sums what each image alone holds; shared_bytes sums, per image, what it shares with another
 * (a layer of three images counts three times); pinned_bytes sums both over pinned images.
 * Approximate while images are used during a pass (the walk goes by last use). */
typedef struct rgm_evict_tally {
    uint64_t images;
    uint64_t pinned_images;
    uint64_t pinned_bytes;
    uint64_t unique_bytes;
    uint64_t shared_bytes;
    uint64_t passes; /* completed passes; 0: none yet, the figures are all 0 */
} rgm_evict_tally_t;

/* Describe at most n more images of the current pass. When the pass has seen every image,
 * its figures are published (rgm_evict_tally) and the next call starts a new pass. 1 when the
 * pass goes on, 0 when this call ended it, <0 on an index error (the pass starts over). */
int rgm_evict_tally_step(rgm_evict_t *e, const rgm_evict_opts_t *o, size_t n);
/* The last completed pass (borrowed; updated by rgm_evict_tally_step). */
const rgm_evict_tally_t *rgm_evict_tally(const rgm_evict_t *e);

#endif
