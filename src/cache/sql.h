/* The small SQLite helpers that index, refs and pins share: an error logged once and mapped
 * to our codes, a statement reset for reuse, text binding, and column readers that clamp.
 * Nothing here knows a table. */
#ifndef RGM_CACHE_SQL_H
#define RGM_CACHE_SQL_H

#include <stdint.h>
#include <sqlite3.h>

#include "core/common.h"

/* Log "<what>: <SQLite's message>" under module tag mod (a static string) and map the
 * error: UV_ENOSPC for SQLITE_FULL (a full disk), else UV_EIO. */
int rgm_sql_fail(sqlite3 *db, const char *mod, const char *what);

/* Reset st for reuse and clear its bindings; an error was already reported by step. */
static inline void rgm_sql_done(sqlite3_stmt *st)
{
    (void)sqlite3_reset(st);
    (void)sqlite3_clear_bindings(st);
}

/* Bind s (NULL: "") as a copied text. SQLite's code. */
static inline int rgm_sql_bind_text(sqlite3_stmt *st, int i, const char *s)
{
    return sqlite3_bind_text(st, i, s ? s : "", -1, SQLITE_TRANSIENT);
}

/* v as a SQLite integer, clamped to INT64_MAX. */
static inline int64_t rgm_sql_i64(uint64_t v)
{
    return v > INT64_MAX ? INT64_MAX : (int64_t)v;
}

/* Column i as an unsigned value, negatives read as 0. */
static inline uint64_t rgm_sql_col_u64(sqlite3_stmt *st, int i)
{
    const sqlite3_int64 v = sqlite3_column_int64(st, i);
    return v < 0 ? 0 : (uint64_t)v;
}

/* Column i's text into out (len bytes, truncated; NULL reads as ""). */
void rgm_sql_col_text(sqlite3_stmt *st, int i, char *out, size_t len);

/* Run sql (no rows) on db; an error is logged under mod. 0 or UV_EIO. Not RGM_MUST_CHECK:
 * a ROLLBACK after a failure has nothing left to do with its result. */
int rgm_sql_exec(sqlite3 *db, const char *mod, const char *sql);

#endif
