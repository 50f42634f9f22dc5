/* Size-bounded cache: evicts the least recently used objects (index and store together) in
 * small batches until the cache is under its target. Each batch is at most RGM_GC_BATCH rows,
 * deleted in one transaction, so the loop is never held for long. Files open by readers stay
 * readable (unlinked, not truncated). */
#ifndef RGM_CACHE_GC_H
#define RGM_CACHE_GC_H

#include "core/common.h"
#include "cache/store.h"
#include "cache/index.h"

#define RGM_GC_BATCH 100

/* One batch: when the cache holds more than max_bytes, evict least recently used objects until
 * it holds at most target_bytes or the batch is done. *freed_bytes and *freed_objects (may be
 * NULL) are increased. Returns 1 when more eviction is needed, 0 when under max (or max is 0),
 * <0 on an index error. */
int rgm_gc_step(rgm_index_t *idx, rgm_store_t *store, uint64_t max_bytes, uint64_t target_bytes,
                uint64_t *freed_bytes, uint64_t *freed_objects);

#endif
