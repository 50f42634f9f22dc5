/* The cache-by-image operations as JSON in, JSON out: the image listing, purge, pin and unpin,
 * and the cache's numbers. serve's admin API (cmd/adminapi) and the offline commands
 * (cmd/images) both call them, so a command prints the same whether a server did the work or
 * it did. They act through cache/evict and cache/pins; they know no sockets or command lines.
 * Synchronous: rows and small files from the page cache. Internal to src/cmd. */
#ifndef RGM_CMD_IMAGEOPS_H
#define RGM_CMD_IMAGEOPS_H

#include <jansson.h>

#include "cache/store.h"
#include "cache/index.h"
#include "cmd/cachemgmt.h"

/* What the operations work on; all borrowed. */
struct rgm_imageops {
    rgm_store_t *store;
    rgm_index_t *index;
    struct rgm_cachemgmt *cm;
};

/* One object per cached image: reference, digest, platforms, unique_bytes, shared_bytes,
 * last_used (RFC 3339), pinned. A new reference (the caller's), or NULL on an index error. */
json_t *rgm_imageops_list(const struct rgm_imageops *o);

/* Purge. req (borrowed): {"references": [REF...], "registry": NAME, "repository":
 * "NAME/REPO", "older_than": DURATION, "force": bool}, each optional, at least one selector.
 * Pinned images are refused unless force, which removes the stored pins holding them. The
 * result (the caller's): {"status": 0|1, "purged": [{reference, digest, objects, bytes}],
 * "unpinned": [PIN], "refused": [{reference, pin}], "out": [LINE], "err": [LINE]}: status 1
 * when something named was not purged; out and err are what a command prints. NULL when req is
 * malformed, with the reason in msg. */
json_t *rgm_imageops_purge(const struct rgm_imageops *o, const json_t *req, char *msg,
                           size_t msglen);

/* Pin (is_pin) or unpin. req (borrowed): {"references": [REF...]} (globs allowed). The result
 * (the caller's): {"status": 0|1|2, "pinned"|"unpinned": [PATTERN], "out": [LINE], "err":
 * [LINE]}: 2 when a pattern is malformed, 1 when an unpin found no pin or the index failed.
 * NULL when req is malformed, with the reason in msg. */
json_t *rgm_imageops_pin(const struct rgm_imageops *o, const json_t *req, int is_pin, char *msg,
                         size_t msglen);

/* {"objects", "bytes", "images", "pinned_images", "pinned_bytes", "unique_bytes",
 * "shared_bytes", "max_bytes", "backfill_complete", "evictions": {REASON: {objects, bytes,
 * images}}}. unique_bytes sums what each image alone holds; shared_bytes sums, per image, what
 * it shares with another (a layer shared by three images counts three times); pinned_bytes
 * sums both over pinned images. Walks every image: for the admin API, not for the hot path.
 * NULL on an index error. */
json_t *rgm_imageops_stats(const struct rgm_imageops *o);

#endif
