/* How the index's statements run on its one connection: an error logged and mapped, a
 * statement run to its end, and the read batch (serve) that every read joins and every write
 * ends first; also the connection lent to cache/refs and cache/pins on the same terms. Knows no
 * table. */
#include "cache/index.h"

#include <uv.h>

#include "core/log.h"
#include "cache/index-int.h"

/* ---- helpers ---- */

int rgm_index_fail(rgm_index_t *idx, const char *what)
{
    return rgm_sql_fail(idx->db, "index", what);
}

/* Run a statement that returns no rows (or whose rows are ignored). */
int rgm_index_exec(rgm_index_t *idx, sqlite3_stmt *st, const char *what)
{
    int rc;

    do {
        rc = sqlite3_step(st);
    } while (rc == SQLITE_ROW);
    st_done(st);
    if (rc != SQLITE_DONE)
        return rgm_index_fail(idx, what);
    return 0;
}

int rgm_index_exec_st(rgm_index_t *idx, int which, const char *what)
{
    return rgm_index_exec(idx, idx->st[which], what);
}

/* Read batches: every SQLite transaction takes and drops POSIX locks (fcntl) on the database
 * and its WAL index, several per statement when each statement is its own transaction; on the
 * cached-HEAD path that was most of the system time. In batching mode (serve), reads open one
 * deferred read transaction that lasts until the loop turn ends (rgm_index_end_batch, called
 * before the loop waits for I/O), so a busy turn pays the locks once. Writes end the batch
 * first and run in their own transactions as before. */
void rgm_index_read_begin(rgm_index_t *idx)
{
    if (idx->is_batching && !idx->in_batch &&
        rgm_index_exec_st(idx, ST_BEGIN_READ, "batch: begin") == 0)
        idx->in_batch = 1;
}

void rgm_index_read_end(rgm_index_t *idx)
{
    if (!idx->in_batch)
        return;
    idx->in_batch = 0;
    (void)rgm_index_exec_st(idx, ST_COMMIT, "batch: end");
}

void rgm_index_set_batching(rgm_index_t *idx, int on)
{
    if (!on)
        rgm_index_read_end(idx);
    idx->is_batching = on;
}

void rgm_index_end_batch(rgm_index_t *idx)
{
    rgm_index_read_end(idx);
}

/* ---- the shared connection (cache/refs, cache/pins) ----
 * Those modules keep their own tables and statements in this database; they go through here
 * so that the read batch is respected: a read joins it, a write ends it first. */

struct sqlite3 *rgm_index_db_read(rgm_index_t *idx)
{
    rgm_index_read_begin(idx);
    return idx->db;
}

struct sqlite3 *rgm_index_db_write(rgm_index_t *idx)
{
    rgm_index_read_end(idx);
    return idx->db;
}
