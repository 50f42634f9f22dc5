/* Cached answers of upstreams' referrers APIs (registry/referrers.c), and which registries
 * have no such API, in tables of their own in index.db. Not objects: no file, no origins, no
 * LRU; old rows are pruned in batches on write. */
#include "cache/index.h"

#include <sqlite3.h>
#include <uv.h>

#include "core/log.h"
#include "cache/index-int.h"

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

int rgm_index_referrers_open(rgm_index_t *idx)
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
            return rgm_index_fail(idx, ref_sql[i]);
    return 0;
}

void rgm_index_referrers_close(rgm_index_t *idx)
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
    rgm_index_read_begin(idx);
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
    return rc == SQLITE_DONE ? UV_ENOENT : rgm_index_fail(idx, "get referrers");
}

int rgm_index_put_referrers(rgm_index_t *idx, const char *registry, const char *repo,
                            const char *digest, const char *query, const rgm_index_referrers_t *in)
{
    sqlite3_stmt *st = idx->ref_st[REF_ST_PUT];
    int rc;

    rgm_index_read_end(idx);
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
        return rgm_index_fail(idx, "put referrers");
    st = idx->ref_st[REF_ST_PRUNE];
    (void)sqlite3_bind_int64(
        st, 1, to_i64(in->checked_ms > REF_KEEP_MS ? in->checked_ms - REF_KEEP_MS : 0));
    return rgm_index_exec(idx, st, "prune referrers");
}

int rgm_index_get_referrers_api(rgm_index_t *idx, const char *registry, uint64_t *checked_ms)
{
    sqlite3_stmt *st = idx->ref_st[REF_ST_NOAPI_GET];
    int rc;

    rgm_index_read_begin(idx);
    (void)bind_text(st, 1, registry);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *checked_ms = col_u64(st, 0);
    st_done(st);
    if (rc == SQLITE_ROW)
        return 0;
    return rc == SQLITE_DONE ? 1 : rgm_index_fail(idx, "get referrers api");
}

int rgm_index_put_referrers_api(rgm_index_t *idx, const char *registry, int has_api,
                                uint64_t checked_ms)
{
    sqlite3_stmt *st = idx->ref_st[has_api ? REF_ST_NOAPI_DEL : REF_ST_NOAPI_PUT];

    rgm_index_read_end(idx);
    (void)bind_text(st, 1, registry);
    if (!has_api)
        (void)sqlite3_bind_int64(st, 2, to_i64(checked_ms));
    return rgm_index_exec(idx, st, "put referrers api");
}
