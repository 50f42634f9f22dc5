/* Size-bounded cache: evicts the least recently used objects (index and store together) in
 * small batches until the cache is under its target. Each batch is at most RGM_GC_BATCH rows,
 * deleted in one transaction, so the loop is never held for long; a server's batches unlink
 * their files on libuv's pool (rgm_gc_t). Files open by readers stay readable (unlinked, not
 * truncated). */
#ifndef RGM_CACHE_GC_H
#define RGM_CACHE_GC_H

#include <uv.h>

#include "core/common.h"
#include "cache/store.h"
#include "cache/index.h"

/* 64 rows: about 1 ms of SQL on a 1,000,000-row index (bench evict) */
#define RGM_GC_BATCH 64

/* One batch: when the cache holds more than max_bytes, evict least recently used objects until
 * it holds at most target_bytes or the batch is done. *freed_bytes and *freed_objects (may be
 * NULL) are increased. Returns 1 when more eviction is needed, 0 when under max (or max is 0),
 * <0 on an index error. */
int rgm_gc_step(rgm_index_t *idx, rgm_store_t *store, uint64_t max_bytes, uint64_t target_bytes,
                uint64_t *freed_bytes, uint64_t *freed_objects);

/* The server's eviction: rgm_gc_step's batches, with the files of each batch unlinked on
 * loop's pool. idx and store are borrowed and must outlive it. */
typedef struct rgm_gc rgm_gc_t;
rgm_gc_t *rgm_gc_new(uv_loop_t *loop, rgm_index_t *idx, rgm_store_t *store);
/* One batch, as rgm_gc_step, its files unlinked on the pool; while the previous batch's are
 * still being unlinked it does nothing and returns 1 (call again later). */
int rgm_gc_tick(rgm_gc_t *gc, uint64_t max_bytes, uint64_t target_bytes, uint64_t *freed_bytes,
                uint64_t *freed_objects);
/* Free gc; a batch still on the pool frees it when done (the loop must run until then). */
void rgm_gc_free(rgm_gc_t *gc);

#endif
