/* The references table: which cached manifest or index names which children (config,
 * layers, an index's manifests), and which manifest is a referrer of which subject (its
 * "subject": signatures, SBOMs; recorded as an edge subject -> referrer, so that a referrer
 * is kept while its subject is and goes with it). Edges are recorded when a manifest is
 * cached (rgm_refs_record) and back-filled in steps from the stored manifests of an existing
 * cache (rgm_refs_backfill_step); until the back-fill is complete nothing is an orphan.
 * Its tables live in index.db beside the index's (created IF NOT EXISTS at open, so a wave-1
 * store gains them). It knows digests and edges, not registries, pins or eviction policy. */
#ifndef RGM_CACHE_REFS_H
#define RGM_CACHE_REFS_H

#include "core/common.h"
#include "cache/store.h"
#include "cache/index.h"

typedef struct rgm_refs rgm_refs_t;

enum rgm_ref_kind { RGM_REF_CHILD = 0, RGM_REF_REFERRER = 1 };

/* Create the tables when missing and prepare the statements. idx and store are borrowed and
 * outlive the result; *out is the caller's (rgm_refs_close). 0 or UV_EIO (logged). */
RGM_MUST_CHECK int rgm_refs_open(rgm_index_t *idx, rgm_store_t *store, rgm_refs_t **out);
/* NULL is a no-op. */
void rgm_refs_close(rgm_refs_t *r);

/* Record the edges of the manifest digest whose bytes are data (len bytes; borrowed): a
 * document that is not a JSON manifest has none. Marks digest as scanned. Synchronous: a few
 * single-row inserts in one transaction. 0 or UV_EIO. */
RGM_MUST_CHECK int rgm_refs_record(rgm_refs_t *r, const char *digest, const void *data, size_t len);

/* Back-fill: read at most max stored manifests not scanned yet (digest order, from where the
 * last step stopped) and record their edges. A manifest whose file cannot be read is marked
 * scanned without edges (the reconcile drops its row). >0 when there is more, 0 when the
 * back-fill is complete (from then on rgm_refs_is_complete is 1), <0 (UV_EIO). */
RGM_MUST_CHECK int rgm_refs_backfill_step(rgm_refs_t *r, size_t max);
/* The whole back-fill, for the offline commands. 0 or <0. */
RGM_MUST_CHECK int rgm_refs_backfill(rgm_refs_t *r);
/* 1 once a back-fill of this process found nothing left to scan, else 0. */
int rgm_refs_is_complete(const rgm_refs_t *r);

/* Called per digest (borrowed for the call); non-zero stops the walk. */
typedef int (*rgm_refs_fn)(const char *digest, int kind, void *ud);
/* The children of parent that have an object row (kind: enum rgm_ref_kind). Returns the
 * number given to cb, or UV_EIO. */
int rgm_refs_children(rgm_refs_t *r, const char *parent, rgm_refs_fn cb, void *ud);
/* The parents of child that have an object row. Returns the number given to cb, or UV_EIO. */
int rgm_refs_parents(rgm_refs_t *r, const char *child, rgm_refs_fn cb, void *ud);

/* Top-level manifests (no cached parent names them: an image), by their own last access,
 * oldest first, strictly after (after_ms, after_digest) (0 and "" from the start), at most
 * n. Pending touches must have been flushed by the caller. Returns the number given to cb
 * (which must not modify the index), or UV_EIO. */
int rgm_refs_walk_tops(rgm_refs_t *r, uint64_t after_ms, const char *after_digest, size_t n,
                       rgm_index_object_fn cb, void *ud);
/* Where an orphan scan stands: after (after_ms, after) in the order of last access and
 * digest; zeroed: from the start. */
typedef struct rgm_refs_cursor {
    uint64_t after_ms;
    char after[RGM_DIGEST_MAX];
} rgm_refs_cursor_t;

/* Orphans: blobs that no cached manifest names. Examine at most rows blobs last accessed
 * before before_ms, oldest first, after *cur, and call cb for each orphan among them (cb must
 * not modify the index; non-zero stops, the cursor then stands on that orphan). The cost is
 * bounded by rows, however few orphans there are. *cur moves to the last blob examined.
 * Returns the number examined (fewer than rows: the end was reached), or UV_EIO.
 * Meaningful only once rgm_refs_is_complete. */
int rgm_refs_scan_orphans(rgm_refs_t *r, rgm_refs_cursor_t *cur, uint64_t before_ms, size_t rows,
                          rgm_index_object_fn cb, void *ud);

/* Remove one object: its file, its index row and origins, the edges it is the parent of and
 * its scanned mark. 0 (also when absent) or <0 (the store's or UV_EIO); nothing is logged. */
RGM_MUST_CHECK int rgm_refs_remove(rgm_refs_t *r, const char *digest);

#endif
