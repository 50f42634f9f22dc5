/* WAL checkpoints of the index on libuv's pool (rgm_index_use_loop), on a connection of
 * their own and one at a time, instead of inside the loop's commits. Only the checkpoint:
 * it runs no query of the index and touches nothing of the loop from the pool. */
#include "cache/index.h"

#include <sqlite3.h>
#include <uv.h>

#include "core/log.h"
#include "cache/index-int.h"

#define CKPT_PAGES 1000 /* SQLite's own auto-checkpoint threshold */

/* ---- checkpoints off the loop ---- */

/* A WAL checkpoint copies the WAL's pages into the database file and fsyncs it: tens of ms on a
 * 1,000,000-row index (the p90 of an eviction batch's commit was 43 ms, 2 ms without), and
 * SQLite runs it inside whichever COMMIT crosses 1000 pages. With rgm_index_use_loop the
 * commit only sees the WAL's size (wal hook) and a PASSIVE checkpoint runs on libuv's pool,
 * on a connection of its own, one at a time. PASSIVE never waits for the loop's readers or
 * writer; what it could not copy is copied by the next one. */
struct ckpt {
    uv_work_t work;
    rgm_index_t *idx; /* NULL once the index is closed with a checkpoint in flight */
    uv_loop_t *loop;
    sqlite3 *db; /* the pool's: opened and used by one work at a time */
    char *path;
    int is_running;
    int is_wanted; /* the WAL grew past CKPT_PAGES while one ran */
    int rc;
};

static void ckpt_free(struct ckpt *k)
{
    if (k->db && sqlite3_close(k->db) != SQLITE_OK)
        rgm_log(RGM_LOG_WARN, "index", "checkpoint connection: close failed");
    free(k->path);
    free(k);
}

/* On the pool: nothing of the loop's is touched. */
static void on_ckpt_work(uv_work_t *w)
{
    struct ckpt *k = rgm_container_of(w, struct ckpt, work);

    if (!k->db) {
        k->rc = sqlite3_open_v2(k->path, &k->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
        if (k->rc != SQLITE_OK)
            return;
        (void)sqlite3_busy_timeout(k->db, BUSY_TIMEOUT_MS);
    }
    k->rc = sqlite3_wal_checkpoint_v2(k->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
}

static void ckpt_start(struct ckpt *k);

static void on_ckpt_done(uv_work_t *w, int status)
{
    struct ckpt *k = rgm_container_of(w, struct ckpt, work);

    k->is_running = 0;
    if (!k->idx) {
        ckpt_free(k); /* the index closed meanwhile */
        return;
    }
    if (status == 0 && k->rc != SQLITE_OK && k->rc != SQLITE_BUSY)
        rgm_log(RGM_LOG_WARN, "index", "checkpoint: %s", sqlite3_errstr(k->rc));
    if (k->is_wanted)
        ckpt_start(k);
}

static void ckpt_start(struct ckpt *k)
{
    if (k->is_running) {
        k->is_wanted = 1;
        return;
    }
    k->is_wanted = 0;
    if (uv_queue_work(k->loop, &k->work, on_ckpt_work, on_ckpt_done) < 0) {
        /* no pool: checkpoint here, as SQLite would have */
        (void)sqlite3_wal_checkpoint_v2(k->idx->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        return;
    }
    k->is_running = 1;
}

/* After each commit on the loop's connection: pages is the WAL's size. */
static int on_wal_commit(void *ud, sqlite3 *db, const char *name, int pages)
{
    struct ckpt *k = ud;

    (void)db;
    (void)name;
    if (pages >= CKPT_PAGES)
        ckpt_start(k);
    return SQLITE_OK;
}

void rgm_index_use_loop(rgm_index_t *idx, uv_loop_t *loop)
{
    struct ckpt *k;

    if (idx->ckpt)
        return;
    k = rgm_calloc(1, sizeof(*k));
    k->idx = idx;
    k->loop = loop;
    k->path = rgm_strdup(idx->path);
    idx->ckpt = k;
    /* replaces SQLite's auto-checkpoint (which is a wal hook too) */
    (void)sqlite3_wal_hook(idx->db, on_wal_commit, k);
}

/* At close: SQLite checkpoints in the commits again; a checkpoint still on the pool frees its
 * state when it is done. */
void rgm_index_ckpt_release(rgm_index_t *idx)
{
    struct ckpt *k = idx->ckpt;

    idx->ckpt = NULL;
    if (!k)
        return;
    (void)sqlite3_wal_autocheckpoint(idx->db, CKPT_PAGES);
    k->idx = NULL;
    if (!k->is_running)
        ckpt_free(k);
}
