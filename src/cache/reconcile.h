/* The start-up reconcile of index and store, in small steps, so that serve listens at once
 * whatever the store holds. First the rows (digest order): a row whose file is gone is
 * dropped; until its turn, the index checks such a row's file on lookup (a miss, never a
 * broken hit). Then the files: one without a row is deleted, unless it changed after the
 * reconcile began (a fetch committed it; its row follows). A file without a row is never
 * served meanwhile: serving needs the row's origins. No libuv handle: the caller's timer
 * calls rgm_reconcile_step. Not here: tmp/ (the store cleans it at open, keeping partials). */
#ifndef RGM_CACHE_RECONCILE_H
#define RGM_CACHE_RECONCILE_H

#include "core/common.h"
#include "cache/index.h"
#include "cache/store.h"

typedef struct rgm_reconcile rgm_reconcile_t;

typedef struct rgm_reconcile_stats {
    uint64_t rows_dropped;  /* rows without their file */
    uint64_t files;         /* files visited */
    uint64_t files_deleted; /* files without a row */
    uint64_t started_ms, ended_ms;
} rgm_reconcile_stats_t;

/* Begin (index lookups check files from now on). idx and store are borrowed and outlive it.
 * Owned by the caller (rgm_reconcile_free). */
rgm_reconcile_t *rgm_reconcile_new(rgm_index_t *idx, rgm_store_t *store);
/* Do at most batch rows or files (synchronous: a few stat(2) and SQLite lookups each). >0
 * when there is more, 0 when the reconcile is over (the result is logged), <0 on an error
 * (logged; the reconcile stops, the index goes back to plain lookups). */
RGM_MUST_CHECK int rgm_reconcile_step(rgm_reconcile_t *r, size_t batch);
const rgm_reconcile_stats_t *rgm_reconcile_stats(const rgm_reconcile_t *r);
/* Also before the end (shutdown): lookups go back to plain. NULL is a no-op. */
void rgm_reconcile_free(rgm_reconcile_t *r);

#endif
