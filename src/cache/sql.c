/* The shared SQLite helpers (cache/sql.h): errors, column text, one-off statements. */
#include "cache/sql.h"

#include <uv.h>

#include "core/log.h"

int rgm_sql_fail(sqlite3 *db, const char *mod, const char *what)
{
    rgm_log(RGM_LOG_ERROR, mod, "%s: %s", what, sqlite3_errmsg(db));
    return sqlite3_errcode(db) == SQLITE_FULL ? UV_ENOSPC : UV_EIO; /* full disk */
}

void rgm_sql_col_text(sqlite3_stmt *st, int i, char *out, size_t len)
{
    const unsigned char *s = sqlite3_column_text(st, i);

    snprintf(out, len, "%s", s ? (const char *)s : "");
}

int rgm_sql_exec(sqlite3 *db, const char *mod, const char *sql)
{
    char *errmsg = NULL;

    if (sqlite3_exec(db, sql, NULL, NULL, &errmsg) == SQLITE_OK)
        return 0;
    rgm_log(RGM_LOG_ERROR, mod, "%s: %s", sql, errmsg ? errmsg : "?");
    sqlite3_free(errmsg);
    return UV_EIO;
}
