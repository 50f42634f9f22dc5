/* The cache index's front: the schema (created, checked, object_totals added to an older store),
 * the statements prepared once at open, and rgm_index_open/close, which set up and tear down
 * every part (touches, checkpoints, referrers). The queries themselves are in the index-*.c
 * files; every value is bound, never formatted into SQL. No HTTP, no files. */
#include "cache/index.h"

#include <sqlite3.h>
#include <uv.h>

#include "core/log.h"
#include "cache/index-int.h"

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
        return rgm_index_fail(idx, "user_version");
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
        return rgm_index_fail(idx, "totals: lookup");
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
            (void)rgm_index_fail(idx, stmt_sql[i]);
            goto fail;
        }
    }
    if (rgm_index_referrers_open(idx) < 0)
        goto fail;
    *out = idx;
    return 0;

fail:
    rgm_index_close(idx);
    return UV_EIO;
}

void rgm_index_close(rgm_index_t *idx)
{
    int i;

    if (!idx)
        return;
    /* first: the last flush must not queue work on a loop that is over */
    rgm_index_ckpt_release(idx);
    rgm_index_read_end(idx);
    if (idx->st[ST_COUNT - 1])
        (void)rgm_index_flush(idx);
    rgm_index_touches_clear(idx);
    for (i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(idx->st[i]);
    rgm_index_referrers_close(idx);
    if (idx->db && sqlite3_close(idx->db) != SQLITE_OK)
        rgm_log(RGM_LOG_ERROR, "index", "close: %s", sqlite3_errmsg(idx->db));
    free(idx->path);
    free(idx);
}
