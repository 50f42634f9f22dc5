/* Tags: tag -> digest with when it was last checked upstream, the sorted listing for the
 * tags/list fallback, and the walk of every tag row for ls. Tags name digests; they are not
 * removed with objects. */
#include "cache/index.h"

#include <sqlite3.h>
#include <uv.h>

#include "cache/index-int.h"

/* ---- tags ---- */

int rgm_index_get_tag(rgm_index_t *idx, const char *registry, const char *repo, const char *tag,
                      char *digest_out, uint64_t *checked_ms)
{
    sqlite3_stmt *st = idx->st[ST_GET_TAG];
    int rc;

    rgm_index_read_begin(idx);
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
    return rc == SQLITE_DONE ? UV_ENOENT : rgm_index_fail(idx, "get tag");
}

int rgm_index_put_tag(rgm_index_t *idx, const char *registry, const char *repo, const char *tag,
                      const char *digest, uint64_t checked_ms)
{
    sqlite3_stmt *st = idx->st[ST_PUT_TAG];
    int rc;

    rgm_index_read_end(idx);
    (void)bind_text(st, 1, registry);
    (void)bind_text(st, 2, repo);
    (void)bind_text(st, 3, tag);
    (void)bind_text(st, 4, digest);
    (void)sqlite3_bind_int64(st, 5, to_i64(checked_ms));
    rc = sqlite3_step(st);
    st_done(st);
    return rc == SQLITE_DONE ? 0 : rgm_index_fail(idx, "put tag");
}

int rgm_index_list_tags(rgm_index_t *idx, const char *registry, const char *repo, const char *after,
                        size_t n, rgm_index_tag_fn cb, void *ud)
{
    sqlite3_stmt *st = idx->st[ST_LIST_TAGS];
    int count = 0;
    int rc;

    rgm_index_read_begin(idx);
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
    return rc == SQLITE_DONE ? count : rgm_index_fail(idx, "list tags");
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

    rgm_index_read_begin(idx);
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
    return rc == SQLITE_DONE ? count : rgm_index_fail(idx, "walk tags");
}
