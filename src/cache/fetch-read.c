/* Readers of a fetch: joining and leaving, what a reader may send at an offset (the landed
 * chunks in memory, the file, or without a file the window, which readers trim as they send),
 * and the deferred pass (rgm_fetch_on_idle) that runs the producer's callbacks and wakes
 * readers whose view changed. Calls down into fetch-write.c (the producer's pending append)
 * and fetch.c; not here: the write queue itself. */
#include "cache/fetch.h"

#include "cache/fetch-int.h"

/* A reader sends at most this much of the window at once (rgm_resp_write copies it). */
#define PEEK_MAX (64 * 1024)

/* ---- readers ---- */

rgm_fetch_reader_t *rgm_fetch_join(rgm_fetch_t *f,
                                   void (*on_more)(rgm_fetch_reader_t *rd, void *ud), void *ud)
{
    rgm_fetch_reader_t *rd = rgm_calloc(1, sizeof(*rd));

    rd->f = f;
    rd->on_more = on_more;
    rd->ud = ud;
    rd->is_new = 1;
    rd->prev = f->readers_tail;
    if (f->readers_tail)
        f->readers_tail->next = rd;
    else
        f->readers_head = rd;
    f->readers_tail = rd;
    rgm_fetch_ref(f);
    rgm_fetch_queue(f); /* first on_more, so that a reader needs only one code path */
    return rd;
}

/* No file: drop the window's chunks that every reader has sent, and let the producer go on.
 * A reader that already stands before the window (it joined late) pins nothing: it is cut. */
static void window_trim(rgm_fetch_t *f)
{
    const rgm_fetch_reader_t *rd;
    uint64_t low = f->written;
    struct chunk *c;

    if (!f->is_nofile)
        return;
    for (rd = f->readers_head; rd; rd = rd->next)
        if (!rd->is_gone && rd->pos < low && (rd->pos >= f->win_off || f->win_off == f->file_end))
            low = rd->pos;
    while ((c = f->win_head) != NULL && f->win_off + c->len <= low) {
        f->win_head = c->next;
        if (!f->win_head)
            f->win_tail = NULL;
        f->win_off += c->len;
        f->win_len -= c->len;
        c->next = NULL;
        if (f->state == RGM_FETCH_RUNNING && !f->is_finishing)
            rgm_fetch_chunks_recycle(f, c);
        else
            free(c);
    }
    rgm_fetch_append_settle(f);
}

void rgm_fetch_reader_at(rgm_fetch_reader_t *rd, uint64_t off)
{
    rd->pos = off;
    window_trim(rd->f);
}

int rgm_fetch_peek(const rgm_fetch_reader_t *rd, uint64_t off, const char **data, size_t *len)
{
    const rgm_fetch_t *f = rd->f;
    uint64_t readable = rgm_fetch_readable(f);
    uint64_t at;
    const struct chunk *c;

    *data = NULL;
    *len = 0;
    if (f->mem_head && off >= f->mem_off && off < readable) {
        /* near the head: from the landed chunks still in memory (f has a file here) */
        for (at = f->mem_off, c = f->mem_head; c; at += c->len, c = c->next) {
            if (off < at + c->len) {
                *data = c->data + (off - at);
                *len = (size_t)((at + c->len < readable ? at + c->len : readable) - off);
                return 0;
            }
        }
    }
    if (off < f->file_end && (!f->is_nofile || f->win_off == f->file_end)) {
        at = readable < f->file_end ? readable : f->file_end;
        *len = at > off ? (size_t)(at - off < SIZE_MAX ? at - off : SIZE_MAX) : 0;
        return 1;
    }
    if (!f->is_nofile) {
        return 1; /* nothing more yet */
    }
    if (off < f->win_off || (f->state == RGM_FETCH_FAILED && off < readable))
        return UV_ENOBUFS;
    for (at = f->win_off, c = f->win_head; c; at += c->len, c = c->next) {
        if (off < at + c->len) {
            *data = c->data + (off - at);
            *len = (size_t)(at + c->len - off);
            if (*len > readable - off)
                *len = off < readable ? (size_t)(readable - off) : 0;
            if (*len > PEEK_MAX)
                *len = PEEK_MAX;
            break;
        }
    }
    return 0;
}

static void reader_free(rgm_fetch_reader_t *rd)
{
    rgm_fetch_t *f = rd->f;

    if (rd->prev)
        rd->prev->next = rd->next;
    else
        f->readers_head = rd->next;
    if (rd->next)
        rd->next->prev = rd->prev;
    else
        f->readers_tail = rd->prev;
    free(rd);
    /* no file and no one to serve: stop the upstream */
    if (f->is_nofile && !f->readers_head && f->state == RGM_FETCH_RUNNING)
        rgm_fetch_fail_internal(f, UV_ECANCELED);
    window_trim(f);
    rgm_fetch_unref(f);
}

void rgm_fetch_leave(rgm_fetch_reader_t *rd)
{
    if (!rd)
        return;
    if (rd->f->notifying > 0) {
        rd->is_gone = 1; /* the walk in notify_readers holds a pointer to it */
        return;
    }
    reader_free(rd);
}

rgm_fetch_t *rgm_fetch_reader_fetch(const rgm_fetch_reader_t *rd)
{
    return rd->f;
}

/* Call on_more of every reader whose view changed (or that is new). Readers may leave or join
 * from inside on_more: leavers are only marked, and swept once the walk is over. The caller
 * holds a reference. */
static void notify_readers(rgm_fetch_t *f)
{
    rgm_fetch_reader_t *rd, *next;
    uint64_t readable;

    f->notifying++;
    for (rd = f->readers_head; rd; rd = rd->next) {
        readable = rgm_fetch_readable(f);
        if (rd->is_gone)
            continue;
        if (!rd->is_new && rd->seen_readable == readable && rd->seen_state == (int)f->state)
            continue;
        rd->is_new = 0;
        rd->seen_readable = readable;
        rd->seen_state = (int)f->state;
        rd->on_more(rd, rd->ud);
    }
    f->notifying--;
    if (f->notifying > 0)
        return;
    for (rd = f->readers_head; rd; rd = next) {
        next = rd->next;
        if (rd->is_gone)
            reader_free(rd);
    }
}

/* Deferred work of one fetch: a tail to seal for the lane, the producer's append cb when it
 * is due (or the fetch ended), done once the fetch ended and its I/O is over, then readers. */
static void process(rgm_fetch_t *f)
{
    void (*cb)(rgm_fetch_t *, int, void *) = f->append_cb;
    void *cb_ud = f->append_ud;
    int status;

    rgm_fetch_seal_due(f);
    if (cb && (f->is_append_due || f->state != RGM_FETCH_RUNNING)) {
        f->append_cb = NULL;
        f->append_ud = NULL;
        f->is_append_due = 0;
        status = 0;
        if (f->state == RGM_FETCH_FAILED)
            status = f->is_producer_fail ? UV_ECANCELED : f->error;
        cb(f, status, cb_ud); /* may append again, finish or fail */
    }
    if (f->state != RGM_FETCH_RUNNING && f->has_producer && !f->is_writing && !f->is_syncing &&
        !f->append_cb) {
        f->has_producer = 0;
        status = f->state == RGM_FETCH_DONE ? 0 : f->error;
        if (f->done)
            f->done(f, status, f->done_ud);
        rgm_fetch_unref(f); /* the producer's; the queue's keeps f alive */
    }
    notify_readers(f);
}

void rgm_fetch_on_idle(uv_idle_t *h)
{
    rgm_fetches_t *t = rgm_container_of(h, struct idle, h)->t;
    rgm_fetch_t *f, *next;

    f = t->queue_head;
    t->queue_head = NULL;
    t->queue_tail = NULL;
    for (; f; f = next) {
        next = f->queue_next;
        f->queue_next = NULL;
        f->is_queued = 0;
        process(f);
        rgm_fetch_unref(f);
    }
    /* h may be closing now (the last fetch died above): only use t->idle. */
    if (!t->queue_head && t->idle)
        (void)uv_idle_stop(&t->idle->h);
}
