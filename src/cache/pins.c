/* Pins: config patterns in memory, stored pins in their table (mirrored in memory, read
 * again by rgm_pins_refresh), and the match of a digest against its tags, its tags' recent
 * moves and its origins. */
#include "cache/pins.h"

#include <sqlite3.h>
#include <uv.h>

#include "core/glob.h"
#include "core/log.h"
#include "cache/sql.h"
#include "cache/store.h"

#define PATTERN_MAX   1024
#define MOVES_KEEP_MS (7ull * 24 * 3600 * 1000)

enum { PS_ADD, PS_DEL, PS_ALL, PS_TAGS_OF, PS_MOVES_OF, PS_ORIGINS_OF, PS_PRUNE, PS_COUNT };

static const char *const ps_sql[PS_COUNT] = {
    [PS_ADD] = "INSERT OR IGNORE INTO pins(pattern, created) VALUES (?1, ?2)",
    [PS_DEL] = "DELETE FROM pins WHERE pattern = ?1",
    [PS_ALL] = "SELECT pattern FROM pins ORDER BY pattern",
    [PS_TAGS_OF] = "SELECT registry, repository, tag FROM tags WHERE digest = ?1",
    [PS_MOVES_OF] = "SELECT registry, repository, tag FROM tag_moves WHERE digest = ?1 AND "
                    "moved >= ?2",
    [PS_ORIGINS_OF] = "SELECT registry, repository, '' FROM origins WHERE digest = ?1",
    [PS_PRUNE] = "DELETE FROM tag_moves WHERE moved < ?1",
};

/* A tag moved by INSERT OR REPLACE (the index's put_tag): the old digest is remembered with
 * the time of the move (the new row's checked). BEFORE INSERT sees the old row. */
static const char pins_schema_sql[] =
    "CREATE TABLE IF NOT EXISTS pins(pattern TEXT PRIMARY KEY NOT NULL, created INTEGER NOT "
    "NULL) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS tag_moves("
    " registry TEXT NOT NULL, repository TEXT NOT NULL, tag TEXT NOT NULL,"
    " digest TEXT NOT NULL, moved INTEGER NOT NULL,"
    " PRIMARY KEY (registry, repository, tag, digest)"
    ") WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS tag_moves_digest ON tag_moves(digest);"
    "CREATE INDEX IF NOT EXISTS tags_digest ON tags(digest);"
    "CREATE TRIGGER IF NOT EXISTS tags_moved BEFORE INSERT ON tags BEGIN"
    " INSERT OR REPLACE INTO tag_moves(registry, repository, tag, digest, moved)"
    " SELECT registry, repository, tag, digest, NEW.checked FROM tags"
    " WHERE registry = NEW.registry AND repository = NEW.repository AND tag = NEW.tag"
    " AND digest != NEW.digest;"
    " END;";

struct patterns {
    char **v;
    size_t n;
};

struct rgm_pins {
    rgm_index_t *idx;
    sqlite3_stmt *st[PS_COUNT];
    struct patterns config;
    struct patterns stored;
};

/* ---- helpers ---- */

static void patterns_clear(struct patterns *ps)
{
    size_t i;

    for (i = 0; i < ps->n; i++)
        free(ps->v[i]);
    RGM_FREE(ps->v);
    ps->n = 0;
}

static void patterns_add(struct patterns *ps, const char *s)
{
    ps->v = rgm_realloc(ps->v, (ps->n + 1) * sizeof(*ps->v));
    ps->v[ps->n++] = rgm_strdup(s);
}

static uint64_t now_ms(void)
{
    uv_timeval64_t tv;

    if (uv_gettimeofday(&tv) < 0)
        return 0;
    return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
}

/* ---- open / close ---- */

int rgm_pins_open(rgm_index_t *idx, rgm_pins_t **out)
{
    rgm_pins_t *p = rgm_calloc(1, sizeof(*p));
    sqlite3 *db = rgm_index_db_write(idx);
    char *errmsg = NULL;
    int i;

    *out = NULL;
    p->idx = idx;
    if (sqlite3_exec(db, pins_schema_sql, NULL, NULL, &errmsg) != SQLITE_OK) {
        rgm_log(RGM_LOG_ERROR, "pins", "create tables: %s", errmsg ? errmsg : "?");
        sqlite3_free(errmsg);
        goto fail;
    }
    for (i = 0; i < PS_COUNT; i++) {
        if (sqlite3_prepare_v3(db, ps_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &p->st[i], NULL) !=
            SQLITE_OK) {
            (void)rgm_sql_fail(db, "pins", ps_sql[i]);
            goto fail;
        }
    }
    if (rgm_pins_refresh(p) < 0)
        goto fail;
    *out = p;
    return 0;

fail:
    rgm_pins_close(p);
    return UV_EIO;
}

void rgm_pins_close(rgm_pins_t *p)
{
    int i;

    if (!p)
        return;
    for (i = 0; i < PS_COUNT; i++)
        sqlite3_finalize(p->st[i]);
    patterns_clear(&p->config);
    patterns_clear(&p->stored);
    free(p);
}

/* ---- the patterns ---- */

void rgm_pins_set_config(rgm_pins_t *p, char *const *patterns, size_t n)
{
    size_t i;

    patterns_clear(&p->config);
    for (i = 0; i < n; i++)
        patterns_add(&p->config, patterns[i]);
}

int rgm_pins_refresh(rgm_pins_t *p)
{
    sqlite3 *db = rgm_index_db_read(p->idx);
    sqlite3_stmt *st = p->st[PS_ALL];
    uint64_t now = now_ms();
    int rc;

    patterns_clear(&p->stored);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        patterns_add(&p->stored, (const char *)sqlite3_column_text(st, 0));
    rgm_sql_done(st);
    if (rc != SQLITE_DONE)
        return rgm_sql_fail(db, "pins", "read pins");
    /* moves older than a week pin nothing (tag_ttl is at most a few hours in practice) */
    st = p->st[PS_PRUNE];
    (void)sqlite3_bind_int64(st, 1, (sqlite3_int64)(now > MOVES_KEEP_MS ? now - MOVES_KEEP_MS : 0));
    db = rgm_index_db_write(p->idx);
    rc = sqlite3_step(st);
    rgm_sql_done(st);
    return rc == SQLITE_DONE ? 0 : rgm_sql_fail(db, "pins", "prune tag moves");
}

int rgm_pins_add(rgm_pins_t *p, const char *pattern)
{
    sqlite3 *db = rgm_index_db_write(p->idx);
    sqlite3_stmt *st = p->st[PS_ADD];
    int rc;

    rgm_sql_bind_text(st, 1, pattern);
    (void)sqlite3_bind_int64(st, 2, (sqlite3_int64)now_ms());
    rc = sqlite3_step(st);
    rgm_sql_done(st);
    if (rc != SQLITE_DONE)
        return rgm_sql_fail(db, "pins", "add pin");
    return rgm_pins_refresh(p);
}

int rgm_pins_remove(rgm_pins_t *p, const char *pattern)
{
    sqlite3 *db = rgm_index_db_write(p->idx);
    sqlite3_stmt *st = p->st[PS_DEL];
    int changed;
    int rc;

    rgm_sql_bind_text(st, 1, pattern);
    rc = sqlite3_step(st);
    rgm_sql_done(st);
    if (rc != SQLITE_DONE)
        return rgm_sql_fail(db, "pins", "remove pin");
    changed = sqlite3_changes(db);
    if (rgm_pins_refresh(p) < 0)
        return UV_EIO;
    return changed > 0 ? 1 : 0;
}

int rgm_pins_walk(rgm_pins_t *p, rgm_pins_fn cb, void *ud)
{
    size_t i;
    int count = 0;

    for (i = 0; i < p->config.n; i++) {
        count++;
        if (cb(p->config.v[i], 1, ud) != 0)
            return count;
    }
    for (i = 0; i < p->stored.n; i++) {
        count++;
        if (cb(p->stored.v[i], 0, ud) != 0)
            return count;
    }
    return count;
}

int rgm_pins_is_exact(const char *pattern)
{
    const char *slash = strrchr(pattern, '/');

    if (strchr(pattern, '@'))
        return 1;
    return !rgm_glob_is_pattern(pattern) && slash && strchr(slash, ':') != NULL;
}

/* ---- matching ---- */

/* A normalised pattern split: repository part, and tag or digest part ("" when none). */
struct pat {
    char repo[PATTERN_MAX];
    char tag[PATTERN_MAX];
    char digest[RGM_DIGEST_MAX];
};

static void split(const char *pattern, struct pat *out)
{
    const char *at = strchr(pattern, '@');
    const char *slash;
    const char *colon;

    memset(out, 0, sizeof(*out));
    if (at) {
        snprintf(out->repo, sizeof(out->repo), "%.*s", (int)(at - pattern), pattern);
        snprintf(out->digest, sizeof(out->digest), "%s", at + 1);
        return;
    }
    slash = strrchr(pattern, '/');
    colon = strchr(slash ? slash : pattern, ':');
    if (!colon) {
        snprintf(out->repo, sizeof(out->repo), "%s", pattern);
        return;
    }
    snprintf(out->repo, sizeof(out->repo), "%.*s", (int)(colon - pattern), pattern);
    snprintf(out->tag, sizeof(out->tag), "%s", colon + 1);
}

/* Does one row (registry, repository, tag: "" for an origin) match pattern? */
static int row_matches(const struct pat *pt, const char *reg, const char *repo, const char *tag,
                       int is_origin)
{
    char full[PATTERN_MAX];

    if (pt->digest[0])
        return 0; /* digest patterns are compared with the digest itself */
    if (snprintf(full, sizeof(full), "%s/%s", reg, repo) >= (int)sizeof(full))
        return 0;
    if (!rgm_glob_match(pt->repo, full))
        return 0;
    if (!pt->tag[0])
        return 1; /* every image of the repository */
    return !is_origin && rgm_glob_match(pt->tag, tag);
}

struct row {
    char reg[256];
    char repo[256];
    char tag[256];
};

/* The rows of one of the *_OF statements. *rows is malloc'd (the caller frees). */
static int load_rows(rgm_pins_t *p, int which, const char *digest, uint64_t since,
                     struct row **rows, size_t *n)
{
    sqlite3 *db = rgm_index_db_read(p->idx);
    sqlite3_stmt *st = p->st[which];
    const unsigned char *s;
    int rc;
    int i;

    *rows = NULL;
    *n = 0;
    rgm_sql_bind_text(st, 1, digest);
    if (which == PS_MOVES_OF)
        (void)sqlite3_bind_int64(st, 2, (sqlite3_int64)(since > INT64_MAX ? INT64_MAX : since));
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && *n < 4096) {
        *rows = rgm_realloc(*rows, (*n + 1) * sizeof(**rows));
        for (i = 0; i < 3; i++) {
            char *dst = i == 0 ? (*rows)[*n].reg : i == 1 ? (*rows)[*n].repo : (*rows)[*n].tag;

            s = sqlite3_column_text(st, i);
            snprintf(dst, 256, "%s", s ? (const char *)s : "");
        }
        (*n)++;
    }
    rgm_sql_done(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        return rgm_sql_fail(db, "pins", "pins: rows");
    return 0;
}

static int match_one(const char *pattern, const char *digest, struct row *const rows[3],
                     const size_t n[3])
{
    struct pat pt;
    size_t k, i;

    split(pattern, &pt);
    if (pt.digest[0])
        return strcmp(pt.digest, digest) == 0;
    for (k = 0; k < 3; k++)
        for (i = 0; i < n[k]; i++)
            if (row_matches(&pt, rows[k][i].reg, rows[k][i].repo, rows[k][i].tag, k == 2))
                return 1;
    return 0;
}

int rgm_pins_match(rgm_pins_t *p, const char *digest, uint64_t now, uint64_t keep_ms, char *which,
                   size_t len, int *is_config)
{
    struct row *rows[3] = {NULL, NULL, NULL};
    size_t n[3] = {0, 0, 0};
    const struct patterns *lists[2] = {&p->config, &p->stored};
    size_t l, i;
    int err = 0;
    int hit = 0;

    if (p->config.n == 0 && p->stored.n == 0)
        return 0;
    err = load_rows(p, PS_TAGS_OF, digest, 0, &rows[0], &n[0]);
    if (err == 0)
        err = load_rows(p, PS_MOVES_OF, digest, now > keep_ms ? now - keep_ms : 0, &rows[1], &n[1]);
    if (err == 0)
        err = load_rows(p, PS_ORIGINS_OF, digest, 0, &rows[2], &n[2]);
    for (l = 0; err == 0 && !hit && l < 2; l++) {
        for (i = 0; !hit && i < lists[l]->n; i++) {
            hit = match_one(lists[l]->v[i], digest, rows, n);
            if (hit && which)
                snprintf(which, len, "%s", lists[l]->v[i]);
            if (hit && is_config)
                *is_config = l == 0;
        }
    }
    for (l = 0; l < 3; l++)
        free(rows[l]);
    return err < 0 ? err : hit;
}

int rgm_pins_is_tagged(rgm_pins_t *p, const char *digest)
{
    sqlite3 *db = rgm_index_db_read(p->idx);
    sqlite3_stmt *st = p->st[PS_TAGS_OF];
    int rc;

    rgm_sql_bind_text(st, 1, digest);
    rc = sqlite3_step(st);
    rgm_sql_done(st);
    if (rc == SQLITE_ROW)
        return 1;
    return rc == SQLITE_DONE ? 0 : rgm_sql_fail(db, "pins", "is tagged");
}
