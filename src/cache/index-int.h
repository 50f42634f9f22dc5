/* Internal to the index (index.c and the index-*.c files): struct rgm_index, the statements
 * prepared at open, and the calls between the files. Calls go one way: index.c (open/close)
 * -> wal, touch, referrers; reconcile -> objects; origins -> objects; objects -> touch; and
 * every query file -> index-batch.c, which calls none of them. Not an API for other modules:
 * they use cache/index.h. */
#ifndef RGM_CACHE_INDEX_INT_H
#define RGM_CACHE_INDEX_INT_H

#include <sqlite3.h>

#include "core/common.h"
#include "cache/index.h"
#include "cache/sql.h"
#include "cache/store.h"

#define TOUCH_BUCKETS   1024
#define BUSY_TIMEOUT_MS 5000

/* The statements prepared at open (index.c holds their SQL). */
enum {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_GET_OBJECT,
    ST_PUT_OBJECT,
    ST_DEL_OBJECT,
    ST_DEL_ORIGINS,
    ST_ADD_ORIGIN,
    ST_HAS_PUBLIC,
    ST_HAS_ORIGIN,
    ST_GET_TAG,
    ST_PUT_TAG,
    ST_LIST_TAGS,
    ST_TOUCH,
    ST_STATS,
    ST_LRU,
    ST_ROWS_AFTER,
    ST_GC_ORIGINS,
    ST_ALL_TAGS,
    ST_HAS_REG_ORIGIN,
    ST_BEGIN_READ,
    ST_COUNT
};

/* A pending hit of one digest (index-touch.c). */
struct touch {
    struct touch *next;
    uint64_t last_ms;
    uint64_t hits;
    char digest[RGM_DIGEST_MAX];
};

struct rgm_index {
    sqlite3 *db;
    int is_batching; /* reads share one transaction until rgm_index_end_batch */
    int in_batch;
    sqlite3_stmt *st[ST_COUNT];
    struct touch *touches[TOUCH_BUCKETS];
    size_t touch_count;
    /* While a background reconcile checks rows, rows after check_after (in digest order) are
     * not checked yet: a lookup of one checks its file itself (rgm_index_check_files). */
    rgm_store_t *check_store;
    char check_after[RGM_DIGEST_MAX];
    char *path;
    struct ckpt *ckpt;       /* rgm_index_use_loop: checkpoints on the pool */
    sqlite3_stmt *ref_st[6]; /* the referrers section's statements (REF_ST_*) */
};

/* The shared helpers (cache/sql) under the index's short names, so that the queries read as
 * before. */
#define st_done   rgm_sql_done
#define bind_text rgm_sql_bind_text
#define to_i64    rgm_sql_i64
#define col_u64   rgm_sql_col_u64
#define col_text  rgm_sql_col_text

/* ---- index-batch.c ---- */

/* Log what with SQLite's message (tag "index") and map the error: UV_ENOSPC or UV_EIO. */
int rgm_index_fail(rgm_index_t *idx, const char *what);
/* Run st to its end (rows ignored), then reset it. 0 or rgm_index_fail's code. */
int rgm_index_exec(rgm_index_t *idx, sqlite3_stmt *st, const char *what);
/* rgm_index_exec of the prepared statement ST_<which>. */
int rgm_index_exec_st(rgm_index_t *idx, int which, const char *what);
/* Join the read batch (opening it when batching and none is open); every read calls it. */
void rgm_index_read_begin(rgm_index_t *idx);
/* End the read batch, if one is open; every write calls it first. */
void rgm_index_read_end(rgm_index_t *idx);

/* ---- index-wal.c ---- */

/* At close: SQLite checkpoints in the commits again; a checkpoint still on the pool frees its
 * state when it is done. No-op without rgm_index_use_loop. */
void rgm_index_ckpt_release(rgm_index_t *idx);

/* ---- index-touch.c ---- */

/* The pending touch of digest (borrowed, owned by the table), or NULL. */
struct touch *rgm_index_touch_find(const rgm_index_t *idx, const char *digest);
/* Drop every pending touch (after a flush, and at close). */
void rgm_index_touches_clear(rgm_index_t *idx);

/* ---- index-objects.c ---- */

/* Does the row's file exist with the row's size? If not, drop the row (and a file of another
 * size). 0 kept, 1 dropped, <0 on a database error. */
int rgm_index_check_row(rgm_index_t *idx, rgm_store_t *store, const char *digest, uint64_t size);
/* A row the background reconcile has not reached is checked first: 1 when it was dropped,
 * else 0. */
int rgm_index_drop_if_unchecked(rgm_index_t *idx, const char *digest);

/* ---- index-referrers.c ---- */

/* Create the referrers tables (IF NOT EXISTS) and prepare their statements. 0 or UV_EIO. */
int rgm_index_referrers_open(rgm_index_t *idx);
/* Finalise those statements (NULL ones too). */
void rgm_index_referrers_close(rgm_index_t *idx);

#endif
