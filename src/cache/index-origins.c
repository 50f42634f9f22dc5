/* Origins: the registry/repository each object came through and whether that was public,
 * which is what vouches for serving a file. A row the background reconcile has not checked yet
 * vouches only once its file is found (rgm_index_drop_if_unchecked). */
#include "cache/index.h"

#include <sqlite3.h>
#include <uv.h>

#include "cache/index-int.h"

/* ---- origins ---- */

int rgm_index_add_origin(rgm_index_t *idx, const char *digest, const char *registry,
                         const char *repo, int is_public)
{
    sqlite3_stmt *st = idx->st[ST_ADD_ORIGIN];
    int rc;

    rgm_index_read_end(idx);
    (void)bind_text(st, 1, digest);
    (void)bind_text(st, 2, registry);
    (void)bind_text(st, 3, repo);
    (void)sqlite3_bind_int(st, 4, is_public ? 1 : 0);
    rc = sqlite3_step(st);
    st_done(st);
    return rc == SQLITE_DONE ? 0 : rgm_index_fail(idx, "add origin");
}

int rgm_index_has_public_origin(rgm_index_t *idx, const char *digest)
{
    sqlite3_stmt *st = idx->st[ST_HAS_PUBLIC];
    int rc;

    if (rgm_index_drop_if_unchecked(idx, digest))
        return 0;
    rgm_index_read_begin(idx);
    (void)bind_text(st, 1, digest);
    rc = sqlite3_step(st);
    st_done(st);
    if (rc == SQLITE_ROW)
        return 1;
    return rc == SQLITE_DONE ? 0 : rgm_index_fail(idx, "has public origin");
}

int rgm_index_has_origin(rgm_index_t *idx, const char *digest, const char *registry,
                         const char *repo, int *is_public)
{
    sqlite3_stmt *st = idx->st[ST_HAS_ORIGIN];
    int rc;

    rgm_index_read_begin(idx);
    (void)bind_text(st, 1, digest);
    (void)bind_text(st, 2, registry);
    (void)bind_text(st, 3, repo);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && is_public)
        *is_public = sqlite3_column_int(st, 0) != 0;
    st_done(st);
    if (rc == SQLITE_ROW)
        return 1;
    return rc == SQLITE_DONE ? 0 : rgm_index_fail(idx, "has origin");
}

int rgm_index_has_registry_origin(rgm_index_t *idx, const char *digest, const char *registry)
{
    sqlite3_stmt *st = idx->st[ST_HAS_REG_ORIGIN];
    int rc;

    if (rgm_index_drop_if_unchecked(idx, digest))
        return 0;
    rgm_index_read_begin(idx);
    (void)bind_text(st, 1, digest);
    (void)bind_text(st, 2, registry);
    rc = sqlite3_step(st);
    st_done(st);
    if (rc == SQLITE_ROW)
        return 1;
    return rc == SQLITE_DONE ? 0 : rgm_index_fail(idx, "has registry origin");
}
