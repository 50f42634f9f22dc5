/* The start-up reconcile in steps: rows first (through the index's batched check, while the
 * index checks files of rows not reached yet), then a store cursor over blobs/ deleting files
 * without a row. Only what was there at the start is judged: files whose ctime is later
 * belong to fetches of this run. Not here: the timer (serve), tmp/ (store). */
#include "cache/reconcile.h"

#include <inttypes.h>

#include <uv.h>

#include "core/log.h"
#include "core/util.h"

/* Files committed this close to the start may be a fetch of this run: ctime has whole-tick
 * granularity on some file systems. */
#define RECENT_SLACK_MS 2000

enum phase { PHASE_ROWS = 0, PHASE_FILES, PHASE_DONE };

struct rgm_reconcile {
    rgm_index_t *idx;
    rgm_store_t *store;
    enum phase phase;
    char after[RGM_DIGEST_MAX]; /* last row checked */
    rgm_store_cursor_t *cursor;
    int err;
    rgm_reconcile_stats_t stats;
};

rgm_reconcile_t *rgm_reconcile_new(rgm_index_t *idx, rgm_store_t *store)
{
    rgm_reconcile_t *r = rgm_calloc(1, sizeof(*r));

    r->idx = idx;
    r->store = store;
    r->stats.started_ms = rgm_time_ms();
    rgm_index_check_files(idx, store, "");
    return r;
}

void rgm_reconcile_free(rgm_reconcile_t *r)
{
    if (!r)
        return;
    if (r->phase == PHASE_ROWS)
        rgm_index_check_files(r->idx, NULL, NULL);
    rgm_store_cursor_free(r->cursor);
    free(r);
}

static int on_file(const char *digest, uint64_t size, uint64_t changed_ms, void *ud)
{
    rgm_reconcile_t *r = ud;
    int rc;

    (void)size; /* sizes were compared from the rows' side */
    r->stats.files++;
    if (changed_ms + RECENT_SLACK_MS >= r->stats.started_ms)
        return 0; /* committed by this run (or just before it): its row is or will be there */
    rc = rgm_index_reconcile_file(r->idx, r->store, digest);
    if (rc < 0)
        return rc;
    r->stats.files_deleted += (uint64_t)rc;
    return 0;
}

static int rows_step(rgm_reconcile_t *r, size_t batch)
{
    size_t dropped = 0;
    int rc = rgm_index_reconcile_rows(r->idx, r->store, r->after, batch, &dropped);

    if (rc < 0)
        return rc;
    r->stats.rows_dropped += dropped;
    /* every row up to after is checked: lookups of those need no stat any more */
    rgm_index_check_files(r->idx, r->store, r->after);
    if (rc == 0) {
        rgm_index_check_files(r->idx, NULL, NULL);
        r->phase = PHASE_FILES;
        r->cursor = rgm_store_cursor_new(r->store);
    }
    return 1;
}

int rgm_reconcile_step(rgm_reconcile_t *r, size_t batch)
{
    int rc;

    if (r->err < 0)
        return r->err;
    if (batch == 0)
        batch = 1;
    switch (r->phase) {
    case PHASE_ROWS:
        rc = rows_step(r, batch);
        break;
    case PHASE_FILES:
        rc = rgm_store_cursor_next(r->cursor, batch, on_file, r);
        if (rc == 0) {
            rgm_store_cursor_free(r->cursor);
            r->cursor = NULL;
            r->phase = PHASE_DONE;
            r->stats.ended_ms = rgm_time_ms();
            rgm_log(RGM_LOG_INFO, "reconcile",
                    "done in %" PRIu64 " ms: %" PRIu64 " rows without file dropped, %" PRIu64
                    " of %" PRIu64 " files without row deleted",
                    r->stats.ended_ms - r->stats.started_ms, r->stats.rows_dropped,
                    r->stats.files_deleted, r->stats.files);
        }
        break;
    default:
        return 0;
    }
    if (rc < 0) {
        rgm_log(RGM_LOG_ERROR, "reconcile", "stopped: %s", uv_strerror(rc));
        if (r->phase == PHASE_ROWS)
            rgm_index_check_files(r->idx, NULL, NULL);
        r->err = rc;
    }
    return rc;
}

const rgm_reconcile_stats_t *rgm_reconcile_stats(const rgm_reconcile_t *r)
{
    return &r->stats;
}
