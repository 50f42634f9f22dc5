/* The cache index in SQLite (WAL). Prepared statements live for the whole session; every
 * value is bound, never formatted into SQL. Touches are coalesced in a small hash table and
 * written in one transaction by rgm_index_flush. No HTTP, no files except through the store. */
#include "cache/index.h"

#include <inttypes.h>

#include <sqlite3.h>
#include <uv.h>

#include "core/log.h"

#define TOUCH_BUCKETS     1024
#define TOUCH_MAX_PENDING 65536
#define BUSY_TIMEOUT_MS   5000
#define CKPT_PAGES        1000 /* SQLite's own auto-checkpoint threshold */

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

static const char *const stmt_sql[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_BEGIN_READ] = "BEGIN",
    [ST_GET_OBJECT] = "SELECT size, media_type, kind, created, last_access, hits FROM objects "
                      "WHERE digest = ?1",
    [ST_PUT_OBJECT] = "INSERT INTO objects(digest, size, media_type, kind, created, last_access, "
                      "hits) VALUES (?1, ?2, ?3, ?4, ?5, ?5, 0) ON CONFLICT(digest) DO UPDATE "
                      "SET size = excluded.size, media_type = excluded.media_type, "
                      "kind = excluded.kind",
    [ST_DEL_OBJECT] = "DELETE FROM objects WHERE digest = ?1",
    [ST_DEL_ORIGINS] = "DELETE FROM origins WHERE digest = ?1",
    [ST_ADD_ORIGIN] = "INSERT INTO origins(digest, registry, repository, is_public) "
                      "VALUES (?1, ?2, ?3, ?4) ON CONFLICT(digest, registry, repository) "
                      "DO UPDATE SET is_public = excluded.is_public",
    /* only with the object's row: a file without one is not served (reconcile) */
    [ST_HAS_PUBLIC] = "SELECT 1 FROM origins WHERE digest = ?1 AND is_public != 0 AND EXISTS "
                      "(SELECT 1 FROM objects WHERE digest = ?1) LIMIT 1",
    [ST_HAS_ORIGIN] = "SELECT is_public FROM origins WHERE digest = ?1 AND registry = ?2 "
                      "AND repository = ?3",
    [ST_GET_TAG] = "SELECT digest, checked FROM tags WHERE registry = ?1 AND repository = ?2 "
                   "AND tag = ?3",
    [ST_PUT_TAG] = "INSERT OR REPLACE INTO tags(registry, repository, tag, digest, checked) "
                   "VALUES (?1, ?2, ?3, ?4, ?5)",
    [ST_LIST_TAGS] = "SELECT tag FROM tags WHERE registry = ?1 AND repository = ?2 AND tag > ?3 "
                     "ORDER BY tag LIMIT ?4",
    [ST_TOUCH] = "UPDATE objects SET last_access = MAX(last_access, ?2), hits = hits + ?3 "
                 "WHERE digest = ?1",
    /* object_totals, kept by triggers: a COUNT/SUM over 1,000,000 rows held the loop 0.2 s */
    [ST_STATS] = "SELECT objects, bytes FROM object_totals WHERE id = 0",
    [ST_LRU] = "SELECT digest, size, media_type, kind, created, last_access, hits FROM objects "
               "ORDER BY last_access, digest LIMIT ?1",
    [ST_ROWS_AFTER] = "SELECT digest, size FROM objects WHERE digest > ?1 ORDER BY digest "
                      "LIMIT ?2",
    /* origins in (?1, ?2] without an object ('~' sorts after every digest) */
    [ST_GC_ORIGINS] = "DELETE FROM origins WHERE digest > ?1 AND digest <= ?2 AND NOT EXISTS "
                      "(SELECT 1 FROM objects WHERE objects.digest = origins.digest)",
    [ST_HAS_REG_ORIGIN] = "SELECT 1 FROM origins WHERE digest = ?1 AND registry = ?2 AND "
                          "EXISTS (SELECT 1 FROM objects WHERE digest = ?1) LIMIT 1",
    [ST_ALL_TAGS] = "SELECT registry, repository, tag, digest, checked FROM tags "
                    "ORDER BY registry, repository, tag",
};

/* The count and bytes of object rows, kept by triggers on every change of objects (ours, an
 * older build's, a script's), so that stats (eviction's every tick, /metrics) read one row.
 * Created, and counted once, on the first open of a store without it (setup_totals). The
 * REPLACE conflict strategy would bypass the delete trigger: objects are never REPLACEd. */
static const char totals_sql[] =
    "CREATE TABLE IF NOT EXISTS object_totals("
    " id INTEGER PRIMARY KEY CHECK (id = 0),"
    " objects INTEGER NOT NULL,"
    " bytes INTEGER NOT NULL);"
    "CREATE TRIGGER IF NOT EXISTS object_totals_ins AFTER INSERT ON objects BEGIN"
    " UPDATE object_totals SET objects = objects + 1, bytes = bytes + NEW.size WHERE id = 0; END;"
    "CREATE TRIGGER IF NOT EXISTS object_totals_del AFTER DELETE ON objects BEGIN"
    " UPDATE object_totals SET objects = objects - 1, bytes = bytes - OLD.size WHERE id = 0; END;"
    "CREATE TRIGGER IF NOT EXISTS object_totals_upd AFTER UPDATE OF size ON objects BEGIN"
    " UPDATE object_totals SET bytes = bytes - OLD.size + NEW.size WHERE id = 0; END;"
    "INSERT INTO object_totals(id, objects, bytes)"
    " SELECT 0, COUNT(*), COALESCE(SUM(size), 0) FROM objects;";

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS objects("
    " digest TEXT PRIMARY KEY NOT NULL,"
    " size INTEGER NOT NULL,"
    " media_type TEXT NOT NULL DEFAULT '',"
    " kind TEXT NOT NULL CHECK (kind IN ('manifest', 'blob')),"
    " created INTEGER NOT NULL,"
    " last_access INTEGER NOT NULL,"
    " hits INTEGER NOT NULL DEFAULT 0"
    ") WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS objects_last_access ON objects(last_access);"
    "CREATE TABLE IF NOT EXISTS origins("
    " digest TEXT NOT NULL,"
    " registry TEXT NOT NULL,"
    " repository TEXT NOT NULL,"
    " is_public INTEGER NOT NULL,"
    " PRIMARY KEY (digest, registry, repository)"
    ") WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS tags("
    " registry TEXT NOT NULL,"
    " repository TEXT NOT NULL,"
    " tag TEXT NOT NULL,"
    " digest TEXT NOT NULL,"
    " checked INTEGER NOT NULL,"
    " PRIMARY KEY (registry, repository, tag)"
    ") WITHOUT ROWID;";

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

static int referrers_open(rgm_index_t *idx);
static void referrers_close(rgm_index_t *idx);

/* ---- helpers ---- */

static int db_fail(rgm_index_t *idx, const char *what)
{
    rgm_log(RGM_LOG_ERROR, "index", "%s: %s", what, sqlite3_errmsg(idx->db));
    return sqlite3_errcode(idx->db) == SQLITE_FULL ? UV_ENOSPC : UV_EIO; /* full disk */
}

/* Reset a statement for reuse; its error was already reported by step. */
static void st_done(sqlite3_stmt *st)
{
    (void)sqlite3_reset(st);
    (void)sqlite3_clear_bindings(st);
}

static int bind_text(sqlite3_stmt *st, int i, const char *s)
{
    return sqlite3_bind_text(st, i, s ? s : "", -1, SQLITE_TRANSIENT);
}

static int64_t to_i64(uint64_t v)
{
    return v > INT64_MAX ? INT64_MAX : (int64_t)v;
}

static uint64_t col_u64(sqlite3_stmt *st, int i)
{
    sqlite3_int64 v = sqlite3_column_int64(st, i);
    return v < 0 ? 0 : (uint64_t)v;
}

static void col_text(sqlite3_stmt *st, int i, char *out, size_t len)
{
    const unsigned char *s = sqlite3_column_text(st, i);

    snprintf(out, len, "%s", s ? (const char *)s : "");
}

static int col_kind(sqlite3_stmt *st, int i)
{
    const unsigned char *s = sqlite3_column_text(st, i);

    return s && strcmp((const char *)s, "manifest") == 0 ? RGM_OBJ_MANIFEST : RGM_OBJ_BLOB;
}

/* Run a statement that returns no rows (or whose rows are ignored). */
static int exec_stmt(rgm_index_t *idx, sqlite3_stmt *st, const char *what)
{
    int rc;

    do {
        rc = sqlite3_step(st);
    } while (rc == SQLITE_ROW);
    st_done(st);
    if (rc != SQLITE_DONE)
        return db_fail(idx, what);
    return 0;
}

static int exec_st(rgm_index_t *idx, int which, const char *what)
{
    return exec_stmt(idx, idx->st[which], what);
}

/* Read batches: every SQLite transaction takes and drops POSIX locks (fcntl) on the database
 * and its WAL index, several per statement when each statement is its own transaction; on the
 * cached-HEAD path that was most of the system time. In batching mode (serve), reads open one
 * deferred read transaction that lasts until the loop turn ends (rgm_index_end_batch, called
 * before the loop waits for I/O), so a busy turn pays the locks once. Writes end the batch
 * first and run in their own transactions as before. */
static void read_begin(rgm_index_t *idx)
{
    if (idx->is_batching && !idx->in_batch && exec_st(idx, ST_BEGIN_READ, "batch: begin") == 0)
        idx->in_batch = 1;
}

static void read_end(rgm_index_t *idx)
{
    if (!idx->in_batch)
        return;
    idx->in_batch = 0;
    (void)exec_st(idx, ST_COMMIT, "batch: end");
}

void rgm_index_set_batching(rgm_index_t *idx, int on)
{
    if (!on)
        read_end(idx);
    idx->is_batching = on;
}

void rgm_index_end_batch(rgm_index_t *idx)
{
    read_end(idx);
}

static uint64_t now_ms(void)
{
    uv_timeval64_t tv;

    if (uv_gettimeofday(&tv) < 0)
        return 0;
    return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
}

/* ---- open / close ---- */

/* sql, then sql2 (may be NULL), in one IMMEDIATE transaction; rolled back and logged (as what)
 * on error. 0 or UV_EIO. */
static int exec_tx(rgm_index_t *idx, const char *sql, const char *sql2, const char *what)
{
    char *errmsg = NULL;

    if (sqlite3_exec(idx->db, "BEGIN IMMEDIATE", NULL, NULL, &errmsg) == SQLITE_OK &&
        sqlite3_exec(idx->db, sql, NULL, NULL, &errmsg) == SQLITE_OK &&
        (!sql2 || sqlite3_exec(idx->db, sql2, NULL, NULL, &errmsg) == SQLITE_OK) &&
        sqlite3_exec(idx->db, "COMMIT", NULL, NULL, &errmsg) == SQLITE_OK)
        return 0;
    rgm_log(RGM_LOG_ERROR, "index", "%s: %s", what, errmsg ? errmsg : "?");
    sqlite3_free(errmsg);
    (void)sqlite3_exec(idx->db, "ROLLBACK", NULL, NULL, NULL);
    return UV_EIO;
}

static int setup_schema(rgm_index_t *idx)
{
    sqlite3_stmt *st = NULL;
    int version = -1;
    char sql[64];

    if (sqlite3_prepare_v2(idx->db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
        return db_fail(idx, "user_version");
    if (sqlite3_step(st) == SQLITE_ROW)
        version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (version == RGM_INDEX_SCHEMA_VERSION)
        return 0;
    if (version != 0) {
        rgm_log(RGM_LOG_ERROR, "index", "schema version %d, this build knows %d", version,
                RGM_INDEX_SCHEMA_VERSION);
        return UV_EIO;
    }
    snprintf(sql, sizeof(sql), "PRAGMA user_version = %d;", RGM_INDEX_SCHEMA_VERSION);
    return exec_tx(idx, schema_sql, sql, "create schema");
}

/* object_totals: nothing to do when it is there (one indexed lookup); else create it with its
 * triggers and count the rows, in one transaction so that no change slips in between. */
static int setup_totals(rgm_index_t *idx)
{
    sqlite3_stmt *st = NULL;
    int has = 0;

    if (sqlite3_prepare_v2(idx->db,
                           "SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                           "name = 'object_totals'",
                           -1, &st, NULL) != SQLITE_OK)
        return db_fail(idx, "totals: lookup");
    has = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    if (has)
        return 0;
    return exec_tx(idx, totals_sql, NULL, "create object_totals");
}

int rgm_index_open(const char *path, rgm_index_t **out)
{
    rgm_index_t *idx;
    char *errmsg = NULL;
    int rc;
    int i;

    *out = NULL;
    idx = rgm_calloc(1, sizeof(*idx));
    idx->path = rgm_strdup(path);
    rc = sqlite3_open_v2(path, &idx->db,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        rgm_log(RGM_LOG_ERROR, "index", "open %s: %s", path,
                idx->db ? sqlite3_errmsg(idx->db) : sqlite3_errstr(rc));
        goto fail;
    }
    (void)sqlite3_busy_timeout(idx->db, BUSY_TIMEOUT_MS);
    if (sqlite3_exec(idx->db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;", NULL, NULL,
                     &errmsg) != SQLITE_OK) {
        rgm_log(RGM_LOG_ERROR, "index", "open %s: %s", path, errmsg ? errmsg : "?");
        sqlite3_free(errmsg);
        goto fail;
    }
    if (setup_schema(idx) < 0 || setup_totals(idx) < 0)
        goto fail;
    for (i = 0; i < ST_COUNT; i++) {
        rc = sqlite3_prepare_v3(idx->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &idx->st[i],
                                NULL);
        if (rc != SQLITE_OK) {
            (void)db_fail(idx, stmt_sql[i]);
            goto fail;
        }
    }
    if (referrers_open(idx) < 0)
        goto fail;
    *out = idx;
    return 0;

fail:
    rgm_index_close(idx);
    return UV_EIO;
}

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
static void ckpt_release(rgm_index_t *idx)
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

static void touches_clear(rgm_index_t *idx)
{
    struct touch *t;
    size_t b;

    for (b = 0; b < TOUCH_BUCKETS; b++) {
        while ((t = idx->touches[b]) != NULL) {
            idx->touches[b] = t->next;
            free(t);
        }
    }
    idx->touch_count = 0;
}

void rgm_index_close(rgm_index_t *idx)
{
    int i;

    if (!idx)
        return;
    ckpt_release(idx); /* first: the last flush must not queue work on a loop that is over */
    read_end(idx);
    if (idx->st[ST_COUNT - 1])
        (void)rgm_index_flush(idx);
    touches_clear(idx);
    for (i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(idx->st[i]);
    referrers_close(idx);
    if (idx->db && sqlite3_close(idx->db) != SQLITE_OK)
        rgm_log(RGM_LOG_ERROR, "index", "close: %s", sqlite3_errmsg(idx->db));
    free(idx->path);
    free(idx);
}

/* ---- touches ---- */

static size_t touch_bucket(const char *digest)
{
    uint32_t h = 2166136261u; /* FNV-1a */

    while (*digest) {
        h ^= (unsigned char)*digest++;
        h *= 16777619u;
    }
    return h % TOUCH_BUCKETS;
}

static struct touch *touch_find(const rgm_index_t *idx, const char *digest)
{
    struct touch *t;

    for (t = idx->touches[touch_bucket(digest)]; t; t = t->next) {
        if (strcmp(t->digest, digest) == 0)
            return t;
    }
    return NULL;
}

void rgm_index_touch(rgm_index_t *idx, const char *digest, uint64_t now)
{
    struct touch *t;
    size_t b;

    if (strlen(digest) >= RGM_DIGEST_MAX)
        return;
    t = touch_find(idx, digest);
    if (!t) {
        if (idx->touch_count >= TOUCH_MAX_PENDING)
            (void)rgm_index_flush(idx);
        b = touch_bucket(digest);
        t = rgm_calloc(1, sizeof(*t));
        snprintf(t->digest, sizeof(t->digest), "%s", digest);
        t->next = idx->touches[b];
        idx->touches[b] = t;
        idx->touch_count++;
    }
    if (now > t->last_ms)
        t->last_ms = now;
    t->hits++;
}

int rgm_index_flush(rgm_index_t *idx)
{
    sqlite3_stmt *st = idx->st[ST_TOUCH];
    struct touch *t;
    size_t b;
    int err;
    int rc;

    read_end(idx);
    if (idx->touch_count == 0)
        return 0;
    err = exec_st(idx, ST_BEGIN, "flush: begin");
    for (b = 0; err == 0 && b < TOUCH_BUCKETS; b++) {
        for (t = idx->touches[b]; err == 0 && t; t = t->next) {
            (void)bind_text(st, 1, t->digest);
            (void)sqlite3_bind_int64(st, 2, to_i64(t->last_ms));
            (void)sqlite3_bind_int64(st, 3, to_i64(t->hits));
            rc = sqlite3_step(st);
            st_done(st);
            if (rc != SQLITE_DONE)
                err = db_fail(idx, "flush: update");
        }
    }
    if (err == 0)
        err = exec_st(idx, ST_COMMIT, "flush: commit");
    else
        (void)exec_st(idx, ST_ROLLBACK, "flush: rollback");
    touches_clear(idx);
    return err;
}

/* ---- objects ---- */

/* Does the row's file exist with the row's size? If not, drop the row (and a file of another
 * size: it is not what the row describes). 0 kept, 1 dropped, <0 on a database error. One
 * stat(2) from the page cache, plus a delete when dropped. */
static int check_row(rgm_index_t *idx, rgm_store_t *store, const char *digest, uint64_t size)
{
    uint64_t fsize = 0;
    int has = rgm_store_has(store, digest, &fsize);
    int err;

    if (has == 1 && fsize == size)
        return 0;
    if (has == 1 && rgm_store_remove(store, digest) < 0)
        rgm_log(RGM_LOG_WARN, "index", "reconcile: cannot remove %s", digest);
    err = rgm_index_remove_object(idx, digest);
    return err < 0 ? err : 1;
}

/* A row the background reconcile has not reached yet (rgm_index_check_files). */
static int is_unchecked(const rgm_index_t *idx, const char *digest)
{
    return idx->check_store && strcmp(digest, idx->check_after) > 0;
}

/* Vouching for a digest (its origins) is what lets a file be served: a row not checked yet
 * is checked first, and vouches only when its file is there with the row's size. 1 when the
 * row was dropped. */
static int drop_if_unchecked(rgm_index_t *idx, const char *digest)
{
    rgm_index_object_t obj;

    return is_unchecked(idx, digest) && rgm_index_get_object(idx, digest, &obj) == UV_ENOENT;
}

int rgm_index_get_object(rgm_index_t *idx, const char *digest, rgm_index_object_t *obj)
{
    sqlite3_stmt *st = idx->st[ST_GET_OBJECT];
    const struct touch *t;
    int rc;

    read_begin(idx);
    memset(obj, 0, sizeof(*obj));
    (void)bind_text(st, 1, digest);
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        st_done(st);
        return rc == SQLITE_DONE ? UV_ENOENT : db_fail(idx, "get object");
    }
    snprintf(obj->digest, sizeof(obj->digest), "%s", digest);
    obj->size = col_u64(st, 0);
    col_text(st, 1, obj->media_type, sizeof(obj->media_type));
    obj->kind = col_kind(st, 2);
    obj->created_ms = col_u64(st, 3);
    obj->last_access_ms = col_u64(st, 4);
    obj->hits = col_u64(st, 5);
    st_done(st);
    t = touch_find(idx, digest);
    if (t) {
        obj->hits += t->hits;
        if (t->last_ms > obj->last_access_ms)
            obj->last_access_ms = t->last_ms;
    }
    if (is_unchecked(idx, digest))
        return check_row(idx, idx->check_store, digest, obj->size) == 1 ? UV_ENOENT : 0;
    return 0;
}

int rgm_index_put_object(rgm_index_t *idx, const rgm_index_object_t *obj)
{
    sqlite3_stmt *st = idx->st[ST_PUT_OBJECT];
    uint64_t created = obj->created_ms ? obj->created_ms : now_ms();
    int rc;

    read_end(idx);
    (void)bind_text(st, 1, obj->digest);
    (void)sqlite3_bind_int64(st, 2, to_i64(obj->size));
    (void)bind_text(st, 3, obj->media_type);
    (void)bind_text(st, 4, obj->kind == RGM_OBJ_MANIFEST ? "manifest" : "blob");
    (void)sqlite3_bind_int64(st, 5, to_i64(created));
    rc = sqlite3_step(st);
    st_done(st);
    return rc == SQLITE_DONE ? 0 : db_fail(idx, "put object");
}

int rgm_index_remove_object(rgm_index_t *idx, const char *digest)
{
    int err;

    read_end(idx);
    err = exec_st(idx, ST_BEGIN, "remove: begin");
    if (err < 0)
        return err;
    (void)bind_text(idx->st[ST_DEL_OBJECT], 1, digest);
    err = exec_st(idx, ST_DEL_OBJECT, "remove object");
    if (err == 0) {
        (void)bind_text(idx->st[ST_DEL_ORIGINS], 1, digest);
        err = exec_st(idx, ST_DEL_ORIGINS, "remove origins");
    }
    if (err == 0)
        return exec_st(idx, ST_COMMIT, "remove: commit");
    (void)exec_st(idx, ST_ROLLBACK, "remove: rollback");
    return err;
}

int rgm_index_remove_objects(rgm_index_t *idx, const char *const *digests, size_t n)
{
    size_t i;
    int err = 0;

    if (n == 0)
        return 0;
    read_end(idx);
    err = exec_st(idx, ST_BEGIN, "remove batch: begin");
    if (err < 0)
        return err;
    for (i = 0; i < n && err == 0; i++) {
        (void)bind_text(idx->st[ST_DEL_OBJECT], 1, digests[i]);
        err = exec_st(idx, ST_DEL_OBJECT, "remove batch: object");
        if (err == 0) {
            (void)bind_text(idx->st[ST_DEL_ORIGINS], 1, digests[i]);
            err = exec_st(idx, ST_DEL_ORIGINS, "remove batch: origins");
        }
    }
    if (err == 0)
        return exec_st(idx, ST_COMMIT, "remove batch: commit");
    (void)exec_st(idx, ST_ROLLBACK, "remove batch: rollback");
    return err;
}

int rgm_index_stats(rgm_index_t *idx, uint64_t *objects, uint64_t *bytes)
{
    sqlite3_stmt *st = idx->st[ST_STATS];
    int rc;

    read_begin(idx);
    *objects = 0;
    *bytes = 0;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *objects = col_u64(st, 0);
        *bytes = col_u64(st, 1);
    }
    st_done(st);
    return rc == SQLITE_ROW ? 0 : db_fail(idx, "stats");
}

int rgm_index_walk_lru(rgm_index_t *idx, size_t n, rgm_index_object_fn cb, void *ud)
{
    sqlite3_stmt *st = idx->st[ST_LRU];
    rgm_index_object_t obj;
    int count = 0;
    int rc;

    if (rgm_index_flush(idx) < 0)
        return UV_EIO;
    (void)sqlite3_bind_int64(st, 1, n == 0 ? -1 : to_i64(n));
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        memset(&obj, 0, sizeof(obj));
        col_text(st, 0, obj.digest, sizeof(obj.digest));
        obj.size = col_u64(st, 1);
        col_text(st, 2, obj.media_type, sizeof(obj.media_type));
        obj.kind = col_kind(st, 3);
        obj.created_ms = col_u64(st, 4);
        obj.last_access_ms = col_u64(st, 5);
        obj.hits = col_u64(st, 6);
        count++;
        if (cb(&obj, ud) != 0) {
            rc = SQLITE_DONE;
            break;
        }
    }
    st_done(st);
    return rc == SQLITE_DONE ? count : db_fail(idx, "walk lru");
}

int rgm_index_walk_tags(rgm_index_t *idx, rgm_index_tagrow_fn cb, void *ud)
{
    sqlite3_stmt *st = idx->st[ST_ALL_TAGS];
    char reg[256];
    char repo[256];
    char tag[256];
    char digest[RGM_DIGEST_MAX];
    int count = 0;
    int rc;

    read_begin(idx);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        col_text(st, 0, reg, sizeof(reg));
        col_text(st, 1, repo, sizeof(repo));
        col_text(st, 2, tag, sizeof(tag));
        col_text(st, 3, digest, sizeof(digest));
        count++;
        if (cb(reg, repo, tag, digest, col_u64(st, 4), ud) != 0) {
            rc = SQLITE_DONE;
            break;
        }
    }
    st_done(st);
    return rc == SQLITE_DONE ? count : db_fail(idx, "walk tags");
}

/* ---- origins ---- */

int rgm_index_add_origin(rgm_index_t *idx, const char *digest, const char *registry,
                         const char *repo, int is_public)
{
    sqlite3_stmt *st = idx->st[ST_ADD_ORIGIN];
    int rc;

    read_end(idx);
    (void)bind_text(st, 1, digest);
    (void)bind_text(st, 2, registry);
    (void)bind_text(st, 3, repo);
    (void)sqlite3_bind_int(st, 4, is_public ? 1 : 0);
    rc = sqlite3_step(st);
    st_done(st);
    return rc == SQLITE_DONE ? 0 : db_fail(idx, "add origin");
}

int rgm_index_has_public_origin(rgm_index_t *idx, const char *digest)
{
    sqlite3_stmt *st = idx->st[ST_HAS_PUBLIC];
    int rc;

    if (drop_if_unchecked(idx, digest))
        return 0;
    read_begin(idx);
    (void)bind_text(st, 1, digest);
    rc = sqlite3_step(st);
    st_done(st);
    if (rc == SQLITE_ROW)
        return 1;
    return rc == SQLITE_DONE ? 0 : db_fail(idx, "has public origin");
}

int rgm_index_has_origin(rgm_index_t *idx, const char *digest, const char *registry,
                         const char *repo, int *is_public)
{
    sqlite3_stmt *st = idx->st[ST_HAS_ORIGIN];
    int rc;

    read_begin(idx);
    (void)bind_text(st, 1, digest);
    (void)bind_text(st, 2, registry);
    (void)bind_text(st, 3, repo);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && is_public)
        *is_public = sqlite3_column_int(st, 0) != 0;
    st_done(st);
    if (rc == SQLITE_ROW)
        return 1;
    return rc == SQLITE_DONE ? 0 : db_fail(idx, "has origin");
}

int rgm_index_has_registry_origin(rgm_index_t *idx, const char *digest, const char *registry)
{
    sqlite3_stmt *st = idx->st[ST_HAS_REG_ORIGIN];
    int rc;

    if (drop_if_unchecked(idx, digest))
        return 0;
    read_begin(idx);
    (void)bind_text(st, 1, digest);
    (void)bind_text(st, 2, registry);
    rc = sqlite3_step(st);
    st_done(st);
    if (rc == SQLITE_ROW)
        return 1;
    return rc == SQLITE_DONE ? 0 : db_fail(idx, "has registry origin");
}

/* ---- tags ---- */

int rgm_index_get_tag(rgm_index_t *idx, const char *registry, const char *repo, const char *tag,
                      char *digest_out, uint64_t *checked_ms)
{
    sqlite3_stmt *st = idx->st[ST_GET_TAG];
    int rc;

    read_begin(idx);
    digest_out[0] = '\0';
    (void)bind_text(st, 1, registry);
    (void)bind_text(st, 2, repo);
    (void)bind_text(st, 3, tag);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        col_text(st, 0, digest_out, RGM_DIGEST_MAX);
        if (checked_ms)
            *checked_ms = col_u64(st, 1);
    }
    st_done(st);
    if (rc == SQLITE_ROW)
        return 0;
    return rc == SQLITE_DONE ? UV_ENOENT : db_fail(idx, "get tag");
}

int rgm_index_put_tag(rgm_index_t *idx, const char *registry, const char *repo, const char *tag,
                      const char *digest, uint64_t checked_ms)
{
    sqlite3_stmt *st = idx->st[ST_PUT_TAG];
    int rc;

    read_end(idx);
    (void)bind_text(st, 1, registry);
    (void)bind_text(st, 2, repo);
    (void)bind_text(st, 3, tag);
    (void)bind_text(st, 4, digest);
    (void)sqlite3_bind_int64(st, 5, to_i64(checked_ms));
    rc = sqlite3_step(st);
    st_done(st);
    return rc == SQLITE_DONE ? 0 : db_fail(idx, "put tag");
}

int rgm_index_list_tags(rgm_index_t *idx, const char *registry, const char *repo, const char *after,
                        size_t n, rgm_index_tag_fn cb, void *ud)
{
    sqlite3_stmt *st = idx->st[ST_LIST_TAGS];
    int count = 0;
    int rc;

    read_begin(idx);
    (void)bind_text(st, 1, registry);
    (void)bind_text(st, 2, repo);
    (void)bind_text(st, 3, after);
    (void)sqlite3_bind_int64(st, 4, n == 0 ? -1 : to_i64(n));
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const unsigned char *tag = sqlite3_column_text(st, 0);

        count++;
        if (cb(tag ? (const char *)tag : "", ud) != 0) {
            rc = SQLITE_DONE;
            break;
        }
    }
    st_done(st);
    return rc == SQLITE_DONE ? count : db_fail(idx, "list tags");
}

/* ---- reconcile ---- */

void rgm_index_check_files(rgm_index_t *idx, rgm_store_t *store, const char *after)
{
    idx->check_store = store;
    snprintf(idx->check_after, sizeof(idx->check_after), "%s", after ? after : "");
}

static int gc_origins(rgm_index_t *idx, const char *after, const char *upto)
{
    sqlite3_stmt *st = idx->st[ST_GC_ORIGINS];
    int rc;

    read_end(idx);
    (void)bind_text(st, 1, after);
    (void)bind_text(st, 2, upto);
    rc = sqlite3_step(st);
    st_done(st);
    return rc == SQLITE_DONE ? 0 : db_fail(idx, "reconcile: origins");
}

int rgm_index_reconcile_rows(rgm_index_t *idx, rgm_store_t *store, char *after, size_t max,
                             size_t *dropped)
{
    sqlite3_stmt *st = idx->st[ST_ROWS_AFTER];
    struct row {
        char digest[RGM_DIGEST_MAX];
        uint64_t size;
    } *rows = rgm_malloc((max ? max : 1) * sizeof(*rows));
    size_t n = 0, i;
    int rc = SQLITE_DONE;
    int err = 0;

    read_begin(idx);
    (void)bind_text(st, 1, after);
    (void)sqlite3_bind_int64(st, 2, (sqlite3_int64)max);
    while (n < max && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        col_text(st, 0, rows[n].digest, sizeof(rows[n].digest));
        rows[n].size = col_u64(st, 1);
        n++;
    }
    if (n < max && rc != SQLITE_DONE)
        err = db_fail(idx, "reconcile: rows");
    st_done(st);
    for (i = 0; err == 0 && i < n; i++) {
        err = check_row(idx, store, rows[i].digest, rows[i].size);
        if (err == 1) {
            (*dropped)++;
            err = 0;
        }
    }
    /* the origins of this range; after the last row, all the rest */
    if (err == 0)
        err = gc_origins(idx, after, n == max ? rows[n - 1].digest : "~");
    if (err == 0 && n > 0)
        snprintf(after, RGM_DIGEST_MAX, "%s", rows[n - 1].digest);
    free(rows);
    if (err < 0)
        return err;
    return n == max && max > 0 ? 1 : 0;
}

int rgm_index_reconcile_file(rgm_index_t *idx, rgm_store_t *store, const char *digest)
{
    rgm_index_object_t obj;
    int err = rgm_index_get_object(idx, digest, &obj);

    if (err != UV_ENOENT)
        return err; /* 0: it has a row; or UV_EIO */
    return rgm_store_remove(store, digest) == 0 ? 1 : 0;
}

struct reconcile {
    rgm_index_t *idx;
    rgm_store_t *store;
    unsigned long files_deleted;
    int err;
};

static int reconcile_file(const char *digest, uint64_t size, void *ud)
{
    struct reconcile *r = ud;
    int rc;

    (void)size; /* sizes were compared from the rows' side */
    rc = rgm_index_reconcile_file(r->idx, r->store, digest);
    if (rc < 0) {
        r->err = rc;
        return 1;
    }
    r->files_deleted += (unsigned long)rc;
    return 0;
}

int rgm_index_reconcile(rgm_index_t *idx, rgm_store_t *store)
{
    struct reconcile r = {idx, store, 0, 0};
    char after[RGM_DIGEST_MAX] = "";
    size_t n = 0;
    int err;

    do
        err = rgm_index_reconcile_rows(idx, store, after, 1000, &n);
    while (err > 0);
    if (err < 0)
        return err;
    err = rgm_store_walk(store, reconcile_file, &r);
    if (r.err < 0)
        return r.err;
    if (err < 0) {
        rgm_log(RGM_LOG_ERROR, "index", "reconcile: walk: %s", uv_strerror(err));
        return err;
    }
    rgm_log(RGM_LOG_INFO, "index",
            "reconcile: %zu rows without file dropped, %lu files "
            "without row deleted",
            n, r.files_deleted);
    return 0;
}

/* ---- the shared connection (cache/refs, cache/pins) ----
 * Those modules keep their own tables and statements in this database; they go through here
 * so that the read batch is respected: a read joins it, a write ends it first. */

struct sqlite3 *rgm_index_db_read(rgm_index_t *idx)
{
    read_begin(idx);
    return idx->db;
}

struct sqlite3 *rgm_index_db_write(rgm_index_t *idx)
{
    read_end(idx);
    return idx->db;
}

/* ---- referrers answers (registry/referrers.c) ----
 * Their own tables, created on every open (IF NOT EXISTS: a database of schema version 1
 * written before them gains them; a build without them ignores them). Not objects: no file,
 * no origins, no LRU; rows older than REF_KEEP_MS are pruned in batches when one is written. */

#define REF_KEEP_MS (7ull * 24 * 3600 * 1000)

enum { REF_ST_GET, REF_ST_PUT, REF_ST_PRUNE, REF_ST_NOAPI_GET, REF_ST_NOAPI_PUT, REF_ST_NOAPI_DEL };

static const char referrers_schema_sql[] =
    "CREATE TABLE IF NOT EXISTS referrers("
    " registry TEXT NOT NULL,"
    " repository TEXT NOT NULL,"
    " digest TEXT NOT NULL,"
    " query TEXT NOT NULL,"
    " body BLOB NOT NULL,"
    " link TEXT NOT NULL DEFAULT '',"
    " filters TEXT NOT NULL DEFAULT '',"
    " is_public INTEGER NOT NULL,"
    " checked INTEGER NOT NULL,"
    " UNIQUE (registry, repository, digest, query)"
    ");"
    "CREATE INDEX IF NOT EXISTS referrers_checked ON referrers(checked);"
    "CREATE TABLE IF NOT EXISTS referrers_noapi("
    " registry TEXT PRIMARY KEY NOT NULL,"
    " checked INTEGER NOT NULL"
    ") WITHOUT ROWID;";

static const char *const ref_sql[] = {
    [REF_ST_GET] = "SELECT body, link, filters, is_public, checked FROM referrers WHERE "
                   "registry = ?1 AND repository = ?2 AND digest = ?3 AND query = ?4",
    [REF_ST_PUT] = "INSERT OR REPLACE INTO referrers(registry, repository, digest, query, body, "
                   "link, filters, is_public, checked) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    [REF_ST_PRUNE] = "DELETE FROM referrers WHERE rowid IN (SELECT rowid FROM referrers WHERE "
                     "checked < ?1 LIMIT 100)",
    [REF_ST_NOAPI_GET] = "SELECT checked FROM referrers_noapi WHERE registry = ?1",
    [REF_ST_NOAPI_PUT] =
        "INSERT OR REPLACE INTO referrers_noapi(registry, checked) VALUES (?1, ?2)",
    [REF_ST_NOAPI_DEL] = "DELETE FROM referrers_noapi WHERE registry = ?1",
};

static int referrers_open(rgm_index_t *idx)
{
    char *errmsg = NULL;
    size_t i;

    RGM_BUG_ON(RGM_ARRAY_SIZE(ref_sql) != RGM_ARRAY_SIZE(idx->ref_st));
    if (sqlite3_exec(idx->db, referrers_schema_sql, NULL, NULL, &errmsg) != SQLITE_OK) {
        rgm_log(RGM_LOG_ERROR, "index", "create referrers tables: %s", errmsg ? errmsg : "?");
        sqlite3_free(errmsg);
        return UV_EIO;
    }
    for (i = 0; i < RGM_ARRAY_SIZE(ref_sql); i++)
        if (sqlite3_prepare_v3(idx->db, ref_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &idx->ref_st[i],
                               NULL) != SQLITE_OK)
            return db_fail(idx, ref_sql[i]);
    return 0;
}

static void referrers_close(rgm_index_t *idx)
{
    size_t i;

    for (i = 0; i < RGM_ARRAY_SIZE(idx->ref_st); i++)
        sqlite3_finalize(idx->ref_st[i]);
}

static void ref_bind_key(sqlite3_stmt *st, const char *registry, const char *repo,
                         const char *digest, const char *query)
{
    (void)bind_text(st, 1, registry);
    (void)bind_text(st, 2, repo);
    (void)bind_text(st, 3, digest);
    (void)bind_text(st, 4, query);
}

int rgm_index_get_referrers(rgm_index_t *idx, const char *registry, const char *repo,
                            const char *digest, const char *query, rgm_index_referrers_t *out)
{
    sqlite3_stmt *st = idx->ref_st[REF_ST_GET];
    const void *body;
    int rc;

    memset(out, 0, sizeof(*out));
    read_begin(idx);
    ref_bind_key(st, registry, repo, digest, query);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        out->body_len = (size_t)sqlite3_column_bytes(st, 0);
        body = sqlite3_column_blob(st, 0);
        out->body = rgm_malloc(out->body_len + 1);
        if (out->body_len > 0)
            memcpy(out->body, body, out->body_len);
        out->body[out->body_len] = '\0';
        col_text(st, 1, out->link, sizeof(out->link));
        col_text(st, 2, out->filters, sizeof(out->filters));
        out->is_public = sqlite3_column_int(st, 3) != 0;
        out->checked_ms = col_u64(st, 4);
    }
    st_done(st);
    if (rc == SQLITE_ROW)
        return 0;
    return rc == SQLITE_DONE ? UV_ENOENT : db_fail(idx, "get referrers");
}

int rgm_index_put_referrers(rgm_index_t *idx, const char *registry, const char *repo,
                            const char *digest, const char *query, const rgm_index_referrers_t *in)
{
    sqlite3_stmt *st = idx->ref_st[REF_ST_PUT];
    int rc;

    read_end(idx);
    ref_bind_key(st, registry, repo, digest, query);
    (void)sqlite3_bind_blob64(st, 5, in->body_len > 0 ? in->body : "", in->body_len,
                              SQLITE_TRANSIENT);
    (void)bind_text(st, 6, in->link);
    (void)bind_text(st, 7, in->filters);
    (void)sqlite3_bind_int(st, 8, in->is_public ? 1 : 0);
    (void)sqlite3_bind_int64(st, 9, to_i64(in->checked_ms));
    rc = sqlite3_step(st);
    st_done(st);
    if (rc != SQLITE_DONE)
        return db_fail(idx, "put referrers");
    st = idx->ref_st[REF_ST_PRUNE];
    (void)sqlite3_bind_int64(
        st, 1, to_i64(in->checked_ms > REF_KEEP_MS ? in->checked_ms - REF_KEEP_MS : 0));
    return exec_stmt(idx, st, "prune referrers");
}

int rgm_index_get_referrers_api(rgm_index_t *idx, const char *registry, uint64_t *checked_ms)
{
    sqlite3_stmt *st = idx->ref_st[REF_ST_NOAPI_GET];
    int rc;

    read_begin(idx);
    (void)bind_text(st, 1, registry);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *checked_ms = col_u64(st, 0);
    st_done(st);
    if (rc == SQLITE_ROW)
        return 0;
    return rc == SQLITE_DONE ? 1 : db_fail(idx, "get referrers api");
}

int rgm_index_put_referrers_api(rgm_index_t *idx, const char *registry, int has_api,
                                uint64_t checked_ms)
{
    sqlite3_stmt *st = idx->ref_st[has_api ? REF_ST_NOAPI_DEL : REF_ST_NOAPI_PUT];

    read_end(idx);
    (void)bind_text(st, 1, registry);
    if (!has_api)
        (void)sqlite3_bind_int64(st, 2, to_i64(checked_ms));
    return exec_stmt(idx, st, "put referrers api");
}
