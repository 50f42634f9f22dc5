/* Unit tests for single-flight fetches on a real libuv loop with a temp-dir store: a producer
 * appends chunks from timers, readers join at different times and pread up to the readable
 * mark; verification, the held-back last byte, failures, fault injection, readers leaving. */
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <uv.h>

#include "cache/fetch.h"
#include "tap.h"

#define DATA_LEN    300007
#define CHUNK       30000
#define MAX_READERS 4

struct scenario;

struct reader {
    struct scenario *sc;
    rgm_fetch_reader_t *rd;
    unsigned char *buf;
    uint64_t got;
    int calls;
    int saw_done;
    int saw_failed;
    int left_early;
    uint64_t final_readable;
    uint64_t leave_after; /* leave once this many bytes were read (0: stay to the end) */
    int spawn_on_done;    /* join another reader (index) when DONE is seen, -1: none */
    int violations;
    int cut;      /* rgm_fetch_peek said it fell out of the memory window */
    int from_mem; /* bytes read from the window */
};

struct scenario {
    const char *name;
    uv_loop_t *loop;
    rgm_fetches_t *t;
    rgm_store_t *s;
    rgm_fetch_t *f;
    unsigned char *data;
    size_t len;
    size_t off;
    char digest[RGM_DIGEST_MAX];
    uv_timer_t timer;
    int done_calls;
    int done_status;
    int is_stored; /* rgm_fetch_is_stored at done: the fetch may be gone after the loop */
    int append_status;     /* last failed append status, 0 if none */
    int fail_after_chunks; /* the producer gives up after this many chunks (0: never) */
    int fail_with_pending; /* ... while an append is pending */
    int chunks;
    int held_back_ok;
    int found_while_running;
    int midway_reader; /* index joined at the middle, -1: none */
    int n_readers;
    struct reader r[MAX_READERS];
    int pending_cancel_status;
    int done_after_cancel;
};

static int in_join;

static void fill(unsigned char *p, size_t n, uint32_t seed)
{
    size_t i;

    for (i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        p[i] = (unsigned char)(seed >> 16);
    }
}

static void digest_of(const unsigned char *p, size_t n, int is_512, char *out, size_t outlen)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    unsigned int i;
    size_t o;

    EVP_Digest(p, n, md, &md_len, is_512 ? EVP_sha512() : EVP_sha256(), NULL);
    o = (size_t)snprintf(out, outlen, "%s:", is_512 ? "sha512" : "sha256");
    for (i = 0; i < md_len && o + 2 < outlen; i++, o += 2)
        snprintf(out + o, outlen - o, "%02x", md[i]);
}

static int count_tmp(const char *root)
{
    char cmd[600];
    FILE *p;
    int n = -1;

    snprintf(cmd, sizeof(cmd), "ls -A '%s/tmp' | wc -l", root);
    p = popen(cmd, "r");
    if (!p)
        return -1;
    if (fscanf(p, "%d", &n) != 1)
        n = -1;
    pclose(p);
    return n;
}

/* ---- readers ---- */

static void reader_join(struct scenario *sc, rgm_fetch_t *f, int i);

static void on_more(rgm_fetch_reader_t *rd, void *ud)
{
    struct reader *r = ud;
    struct scenario *sc = r->sc;
    rgm_fetch_t *f = rgm_fetch_reader_fetch(rd);
    uint64_t readable = rgm_fetch_readable(f);
    enum rgm_fetch_state st = rgm_fetch_state(f);
    ssize_t n;

    r->calls++;
    if (in_join)
        r->violations++; /* never from inside join */
    if (st == RGM_FETCH_RUNNING && readable >= sc->len)
        r->violations++; /* the last byte must be held back */
    if (st == RGM_FETCH_RUNNING && readable == sc->len - 1)
        sc->held_back_ok = 1; /* everything but the last byte was in the file, unverified */
    while (r->got < readable) {
        const char *mem = NULL;
        size_t len = 0;
        int rc = rgm_fetch_peek(rd, r->got, &mem, &len);

        if (rc < 0) {
            r->cut = 1;
            rgm_fetch_leave(rd);
            r->rd = NULL;
            return;
        }
        if (len == 0 || r->got + len > readable) {
            r->violations++;
            break;
        }
        if (rc == 0) {
            memcpy(r->buf + r->got, mem, len);
            r->from_mem += (int)len;
            n = (ssize_t)len;
        } else {
            n = pread(rgm_fetch_fd(f), r->buf + r->got, len, (off_t)r->got);
        }
        if (n <= 0) {
            r->violations++;
            break;
        }
        r->got += (uint64_t)n;
    }
    rgm_fetch_reader_at(rd, r->got);
    if (st == RGM_FETCH_DONE || st == RGM_FETCH_FAILED) {
        if (st == RGM_FETCH_DONE)
            r->saw_done = 1;
        else
            r->saw_failed = 1;
        r->final_readable = readable;
        if (r->spawn_on_done >= 0)
            reader_join(sc, f, r->spawn_on_done);
        rgm_fetch_leave(rd);
        r->rd = NULL;
    } else if (r->leave_after && r->got >= r->leave_after) {
        r->left_early = 1;
        rgm_fetch_leave(rd);
        r->rd = NULL;
    }
}

static void reader_join(struct scenario *sc, rgm_fetch_t *f, int i)
{
    struct reader *r = &sc->r[i];

    r->sc = sc;
    in_join = 1;
    r->rd = rgm_fetch_join(f, on_more, r);
    in_join = 0;
    if (r->calls != 0)
        r->violations++;
}

/* ---- producer ---- */

static void on_timer(uv_timer_t *h);

static void on_timer_closed(uv_handle_t *h)
{
    (void)h;
}

static void on_done(rgm_fetch_t *f, int status, void *ud)
{
    struct scenario *sc = ud;

    sc->done_calls++;
    sc->done_status = status;
    sc->is_stored = rgm_fetch_is_stored(f);
    if (sc->pending_cancel_status)
        sc->done_after_cancel = 1;
    if (!uv_is_closing((uv_handle_t *)&sc->timer))
        uv_close((uv_handle_t *)&sc->timer, on_timer_closed);
}

static void on_appended(rgm_fetch_t *f, int status, void *ud)
{
    struct scenario *sc = ud;
    size_t n = sc->len - sc->off < CHUNK ? sc->len - sc->off : CHUNK;

    if (sc->fail_with_pending) {
        sc->pending_cancel_status = status;
        return;
    }
    if (status < 0) {
        sc->append_status = status;
        return;
    }
    sc->off += n;
    sc->chunks++;
    if (rgm_fetches_find(sc->t, sc->digest) == f)
        sc->found_while_running++;
    if (sc->midway_reader >= 0 && sc->off >= sc->len / 2) {
        reader_join(sc, f, sc->midway_reader);
        sc->midway_reader = -1;
    }
    if (sc->fail_after_chunks && sc->chunks == sc->fail_after_chunks) {
        rgm_fetch_fail(f, UV_ECONNRESET);
        return;
    }
    uv_timer_start(&sc->timer, on_timer, 1, 0);
}

static void on_timer(uv_timer_t *h)
{
    struct scenario *sc = rgm_container_of(h, struct scenario, timer);
    size_t n = sc->len - sc->off < CHUNK ? sc->len - sc->off : CHUNK;
    int err;

    if (sc->off == sc->len) {
        rgm_fetch_finish(sc->f);
        return;
    }
    err = rgm_fetch_append(sc->f, sc->data + sc->off, n, on_appended, sc);
    if (err < 0) {
        sc->append_status = err;
        return;
    }
    if (sc->fail_with_pending)
        rgm_fetch_fail(sc->f, UV_ECONNRESET);
}

static void sc_init(struct scenario *sc, const char *name, uv_loop_t *loop, rgm_fetches_t *t,
                    rgm_store_t *s, uint32_t seed)
{
    int i;

    memset(sc, 0, sizeof(*sc));
    sc->name = name;
    sc->loop = loop;
    sc->t = t;
    sc->s = s;
    sc->len = DATA_LEN;
    sc->data = rgm_malloc(sc->len);
    fill(sc->data, sc->len, seed);
    digest_of(sc->data, sc->len, 0, sc->digest, sizeof(sc->digest));
    sc->midway_reader = -1;
    for (i = 0; i < MAX_READERS; i++) {
        sc->r[i].buf = rgm_calloc(1, sc->len);
        sc->r[i].spawn_on_done = -1;
        sc->r[i].sc = sc;
    }
    uv_timer_init(loop, &sc->timer);
}

static void sc_free(struct scenario *sc)
{
    int i;

    for (i = 0; i < MAX_READERS; i++)
        free(sc->r[i].buf);
    free(sc->data);
}

/* Start the fetch, join reader 0 at once, produce from timers, run the loop to the end. */
static int sc_run(struct scenario *sc, int set_size)
{
    int err;

    err = rgm_fetch_start(sc->t, sc->digest, on_done, sc, &sc->f);
    if (err < 0)
        return err;
    if (set_size)
        rgm_fetch_set_size(sc->f, sc->len);
    if (sc->n_readers > 0)
        reader_join(sc, sc->f, 0);
    uv_timer_start(&sc->timer, on_timer, 1, 0);
    return uv_run(sc->loop, UV_RUN_DEFAULT);
}

static int in_store(struct scenario *sc)
{
    void *data = NULL;
    size_t len = 0;
    int same;

    if (rgm_store_read_small(sc->s, sc->digest, sc->len, &data, &len) < 0)
        return 0;
    same = len == sc->len && memcmp(data, sc->data, len) == 0;
    free(data);
    return same;
}

/* ---- scenarios ---- */

static void test_success(uv_loop_t *loop, rgm_fetches_t *t, rgm_store_t *s, const char *root)
{
    struct scenario sc;
    char path[1024];
    struct stat st;
    int i;

    sc_init(&sc, "success", loop, t, s, 1);
    sc.n_readers = 2;
    sc.midway_reader = 1;
    sc.r[0].spawn_on_done = 2; /* reader 2 joins after DONE, before reader 0 leaves */
    is_int(sc_run(&sc, 1), 0, "success: loop ran");
    is_int(sc.done_calls, 1, "success: done once");
    is_int(sc.done_status, 0, "success: done(0)");
    ok(sc.held_back_ok, "success: last byte held back until verified");
    ok(sc.found_while_running >= 9, "success: in the table while running");
    is_int(rgm_fetches_count(t), 0, "success: table empty after");
    ok(rgm_fetches_find(t, sc.digest) == NULL, "success: not found after");
    for (i = 0; i < 3; i++) {
        ok(sc.r[i].saw_done, "success: reader %d saw DONE", i);
        is_int(sc.r[i].got, sc.len, "success: reader %d read everything", i);
        ok(memcmp(sc.r[i].buf, sc.data, sc.len) == 0, "success: reader %d bytes match", i);
        is_int(sc.r[i].violations, 0, "success: reader %d no violation", i);
        ok(sc.r[i].calls >= 1, "success: reader %d called", i);
    }
    ok(sc.r[0].calls > 5, "success: first reader woken many times (%d)", sc.r[0].calls);
    is_int(sc.r[2].calls, 1, "success: late reader called once");
    ok(in_store(&sc), "success: blob in the store");
    snprintf(path, sizeof(path), "%s/blobs/sha256/%.2s/%s", root, sc.digest + 7, sc.digest + 7);
    ok(stat(path, &st) == 0 && (size_t)st.st_size == sc.len, "success: at the layout path");
    is_int(count_tmp(root), 0, "success: tmp empty");

    /* a second fetch for a digest in flight is refused */
    {
        rgm_fetch_t *f1 = NULL, *f2 = NULL;

        sc.done_calls = 0;
        is_int(rgm_fetch_start(t, sc.digest, on_done, &sc, &f1), 0, "again: start");
        is_int(rgm_fetch_start(t, sc.digest, on_done, &sc, &f2), UV_EEXIST, "again: EEXIST");
        is_int(rgm_fetch_start(t, "sha256:nothex", on_done, &sc, &f2), UV_EINVAL,
               "bad digest refused");
        ok(rgm_fetches_find(t, sc.digest) == f1, "again: find");
        rgm_fetch_fail(f1, UV_ECANCELED);
        is_int(uv_run(loop, UV_RUN_DEFAULT), 0, "again: loop");
        is_int(sc.done_calls, 1, "again: done once");
        is_int(sc.done_status, UV_ECANCELED, "again: done(producer error)");
        ok(in_store(&sc), "again: stored blob untouched by the failed fetch");
    }
    sc_free(&sc);
}

static void test_mismatch(uv_loop_t *loop, rgm_fetches_t *t, rgm_store_t *s, const char *root)
{
    struct scenario sc;
    int i;

    sc_init(&sc, "mismatch", loop, t, s, 2);
    /* the digest of other bytes */
    sc.data[0] ^= 1;
    digest_of(sc.data, sc.len, 0, sc.digest, sizeof(sc.digest));
    sc.data[0] ^= 1;
    sc.n_readers = 2;
    sc.midway_reader = 1;
    is_int(sc_run(&sc, 0), 0, "mismatch: loop ran");
    is_int(sc.done_calls, 1, "mismatch: done once");
    is_int(sc.done_status, UV_EINVAL, "mismatch: done(UV_EINVAL)");
    for (i = 0; i < 2; i++) {
        ok(sc.r[i].saw_failed, "mismatch: reader %d saw FAILED", i);
        ok(sc.r[i].final_readable < sc.len, "mismatch: reader %d readable < size", i);
        ok(sc.r[i].got < sc.len, "mismatch: reader %d cut before the last byte", i);
        ok(memcmp(sc.r[i].buf, sc.data, (size_t)sc.r[i].got) == 0,
           "mismatch: reader %d bytes so far match", i);
        is_int(sc.r[i].violations, 0, "mismatch: reader %d no violation", i);
    }
    is_int(rgm_store_has(s, sc.digest, NULL), 0, "mismatch: nothing in the store");
    is_int(count_tmp(root), 0, "mismatch: tmp empty");
    is_int(rgm_fetches_count(t), 0, "mismatch: table empty");
    sc_free(&sc);
}

static void on_store_error(const char *op, const char *error, uint64_t count, void *ud)
{
    char *out = ud;
    size_t n = strlen(out);

    snprintf(out + n, 256 - n, "%s/%s=%llu ", op, error, (unsigned long long)count);
}

static void test_fault(uv_loop_t *loop, rgm_fetches_t *t, rgm_store_t *s, const char *root)
{
    struct scenario sc;
    char errs[256] = "";

    /* one failed write: the retry lands it, and the blob is cached as usual */
    sc_init(&sc, "fault", loop, t, s, 3);
    sc.n_readers = 1;
    setenv("RGM_FAULT", "store.write:3", 1);
    is_int(sc_run(&sc, 1), 0, "fault once: loop ran");
    unsetenv("RGM_FAULT");
    is_int(sc.done_calls, 1, "fault once: done once");
    is_int(sc.done_status, 0, "fault once: done(0) after the retry");
    ok(sc.is_stored, "fault once: stored");
    ok(in_store(&sc), "fault once: blob in the store");
    ok(sc.r[0].saw_done && sc.r[0].got == sc.len && memcmp(sc.r[0].buf, sc.data, sc.len) == 0,
       "fault once: the reader got every byte");
    is_int(count_tmp(root), 0, "fault once: tmp empty");
    sc_free(&sc);
    is_int(rgm_store_remove(s, sc.digest), 0, "fault once: removed again");

    /* every write fails: the fetch goes on without the file, readers get the bytes from the
     * window, nothing is cached; a reader joining once the window has moved on is cut */
    sc_init(&sc, "nofile", loop, t, s, 13);
    sc.n_readers = 1;
    sc.r[0].spawn_on_done = 1; /* once reader 0 has sent everything: the window is empty */
    setenv("RGM_FAULT", "store.write", 1);
    is_int(sc_run(&sc, 1), 0, "no file: loop ran");
    unsetenv("RGM_FAULT");
    is_int(sc.done_calls, 1, "no file: done once");
    is_int(sc.done_status, 0, "no file: done(0)");
    is_int(sc.append_status, 0, "no file: the producer never saw an error");
    ok(sc.done_calls == 1 && !sc.is_stored, "no file: not stored");
    ok(sc.r[0].saw_done && sc.r[0].got == sc.len && memcmp(sc.r[0].buf, sc.data, sc.len) == 0,
       "no file: the reader got every byte, right");
    ok(sc.r[0].from_mem > 0, "no file: ... from the memory window (%d bytes)", sc.r[0].from_mem);
    is_int(sc.r[0].violations, 0, "no file: no violation (last byte held back)");
    ok(sc.r[1].cut && sc.r[1].got == 0, "no file: a late joiner before the window is cut");
    is_int(rgm_store_has(s, sc.digest, NULL), 0, "no file: nothing in the store");
    is_int(count_tmp(root), 0, "no file: tmp empty");
    rgm_store_errors_each(s, on_store_error, errs);
    /* three failed writes: the cured one, then the first and the retry here */
    ok(strstr(errs, "write/EIO=3") != NULL, "store errors counted (%s)", errs);
    sc_free(&sc);
}

static void test_readers_leave(uv_loop_t *loop, rgm_fetches_t *t, rgm_store_t *s, const char *root)
{
    struct scenario sc;

    sc_init(&sc, "leave", loop, t, s, 4);
    sc.n_readers = 2;
    sc.midway_reader = 1;
    sc.r[0].leave_after = 3 * CHUNK;
    sc.r[1].leave_after = 1; /* leaves at its first wake with data */
    is_int(sc_run(&sc, 0), 0, "leave: loop ran");
    ok(sc.r[0].left_early && sc.r[1].left_early, "leave: both readers left midway");
    ok(!sc.r[0].saw_done && !sc.r[1].saw_done, "leave: neither saw the end");
    is_int(sc.done_calls, 1, "leave: done once");
    is_int(sc.done_status, 0, "leave: fetch completed");
    ok(in_store(&sc), "leave: blob in the store");
    is_int(count_tmp(root), 0, "leave: tmp empty");
    sc_free(&sc);
}

static void test_producer_fail(uv_loop_t *loop, rgm_fetches_t *t, rgm_store_t *s, const char *root)
{
    struct scenario sc;

    sc_init(&sc, "fail", loop, t, s, 5);
    sc.n_readers = 1;
    sc.fail_after_chunks = 4;
    is_int(sc_run(&sc, 0), 0, "fail: loop ran");
    is_int(sc.done_status, UV_ECONNRESET, "fail: done(producer's error)");
    is_int(sc.done_calls, 1, "fail: done once");
    ok(sc.r[0].saw_failed, "fail: reader saw FAILED");
    /* the fourth chunk may still be in the pool when the producer gives up */
    ok(sc.r[0].got == sc.r[0].final_readable && sc.r[0].got < 4 * CHUNK,
       "fail: reader got what was readable (%llu)", (unsigned long long)sc.r[0].got);
    is_int(count_tmp(root), 0, "fail: tmp empty");
    is_int(rgm_store_has(s, sc.digest, NULL), 0, "fail: nothing in the store");
    sc_free(&sc);

    /* fail while an append is pending: cb(UV_ECANCELED), then done */
    sc_init(&sc, "fail-pending", loop, t, s, 6);
    sc.fail_with_pending = 1;
    is_int(sc_run(&sc, 0), 0, "fail-pending: loop ran");
    is_int(sc.pending_cancel_status, UV_ECANCELED, "fail-pending: append cb canceled");
    ok(sc.done_after_cancel, "fail-pending: done after the append cb");
    is_int(sc.done_status, UV_ECONNRESET, "fail-pending: done(err)");
    is_int(count_tmp(root), 0, "fail-pending: tmp empty");
    sc_free(&sc);
}

static void on_cb_count(rgm_fetch_t *f, int status, void *ud)
{
    (void)f;
    *(int *)ud = status == 0 ? 1 : status;
}

static void on_done_simple(rgm_fetch_t *f, int status, void *ud)
{
    (void)f;
    *(int *)ud = status == 0 ? 1 : status;
}

static void test_small_cases(uv_loop_t *loop, rgm_fetches_t *t, rgm_store_t *s)
{
    unsigned char data[100];
    char dg[RGM_DIGEST_MAX];
    rgm_fetch_t *f = NULL;
    int cb_res = 0, done_res = 0;

    /* size overflow */
    fill(data, sizeof(data), 7);
    digest_of(data, sizeof(data), 0, dg, sizeof(dg));
    is_int(rgm_fetch_start(t, dg, on_done_simple, &done_res, &f), 0, "overflow: start");
    rgm_fetch_set_size(f, 50);
    is_int(rgm_fetch_size(f), 50, "overflow: size");
    is_int(rgm_fetch_append(f, data, sizeof(data), on_cb_count, &cb_res), UV_E2BIG,
           "overflow: E2BIG");
    is_int(rgm_fetch_state(f), RGM_FETCH_FAILED, "overflow: failed at once");
    is_int(rgm_fetch_append(f, data, 1, on_cb_count, &cb_res), UV_E2BIG,
           "overflow: later appends refused");
    is_int(uv_run(loop, UV_RUN_DEFAULT), 0, "overflow: loop");
    is_int(cb_res, 0, "overflow: append cb never called");
    is_int(done_res, UV_E2BIG, "overflow: done(UV_E2BIG)");

    /* short body against set_size */
    done_res = 0;
    cb_res = 0;
    is_int(rgm_fetch_start(t, dg, on_done_simple, &done_res, &f), 0, "short: start");
    rgm_fetch_set_size(f, 100);
    is_int(rgm_fetch_append(f, data, 60, on_cb_count, &cb_res), 0, "short: append");
    is_int(rgm_fetch_append(f, data, 1, on_cb_count, &cb_res), UV_EBUSY,
           "short: one append at a time");
    rgm_fetch_finish(f); /* while the append is pending */
    is_int(rgm_fetch_append(f, data, 1, on_cb_count, &cb_res), UV_EBUSY, "short: still busy");
    is_int(uv_run(loop, UV_RUN_DEFAULT), 0, "short: loop");
    is_int(cb_res, 1, "short: append cb ok");
    is_int(done_res, UV_EINVAL, "short: done(UV_EINVAL)");
    is_int(rgm_store_has(s, dg, NULL), 0, "short: not stored");

    /* sha512, one append, finish while pending; empty appends work */
    done_res = 0;
    cb_res = 0;
    digest_of(data, sizeof(data), 1, dg, sizeof(dg));
    is_int(rgm_fetch_start(t, dg, on_done_simple, &done_res, &f), 0, "sha512: start");
    is_int(rgm_fetch_append(f, data, sizeof(data), on_cb_count, &cb_res), 0, "sha512: append");
    rgm_fetch_finish(f);
    is_int(uv_run(loop, UV_RUN_DEFAULT), 0, "sha512: loop");
    is_int(done_res, 1, "sha512: done(0)");
    is_int(rgm_store_has(s, dg, NULL), 1, "sha512: stored");

    /* empty blob */
    done_res = 0;
    digest_of(data, 0, 0, dg, sizeof(dg));
    is_int(rgm_fetch_start(t, dg, on_done_simple, &done_res, &f), 0, "empty: start");
    rgm_fetch_set_size(f, 0);
    is_int(rgm_fetch_readable(f), 0, "empty: readable 0");
    rgm_fetch_finish(f);
    is_int(uv_run(loop, UV_RUN_DEFAULT), 0, "empty: loop");
    is_int(done_res, 1, "empty: done(0)");
    is_int(rgm_store_has(s, dg, NULL), 1, "empty: stored");
}

/* ---- a producer as fast as the queue lets it: rgm_fetch_write until UV_EAGAIN, then
 * rgm_fetch_append and wait for its cb. One reader reads as bytes land, one stalls (reads
 * nothing until the end): the queue bounds the producer, the stalled reader holds nothing. ---- */

#define BURST_LEN   (24 * 1024 * 1024 + 777)
#define BURST_PIECE (64 * 1024)

struct burst {
    rgm_fetch_t *f;
    const unsigned char *data;
    size_t len, off;
    int eagains;
    int appends;
    int err;
    int done_status;
    int done_calls;
    size_t max_run; /* most bytes queued by rgm_fetch_write between two waits */
    uint64_t fast_got;
    int fast_done;
    int stalled_calls;
    int stalled_done;
    int violations;
    unsigned char *fast_buf;
    rgm_fetch_reader_t *fast, *stalled;
};

static void burst_pump(struct burst *b);

static void on_burst_appended(rgm_fetch_t *f, int status, void *ud)
{
    struct burst *b = ud;

    (void)f;
    if (status < 0) {
        b->err = status;
        return;
    }
    burst_pump(b);
}

static void burst_pump(struct burst *b)
{
    size_t run = 0;
    size_t n;
    int err;

    while (b->off < b->len) {
        n = b->len - b->off < BURST_PIECE ? b->len - b->off : BURST_PIECE;
        err = rgm_fetch_write(b->f, b->data + b->off, n);
        if (err == UV_EAGAIN) {
            b->eagains++;
            err = rgm_fetch_append(b->f, b->data + b->off, n, on_burst_appended, b);
            if (err == 0) {
                b->appends++;
                b->off += n;
            } else {
                b->err = err;
            }
            break;
        }
        if (err < 0) {
            b->err = err;
            return;
        }
        b->off += n;
        run += n;
    }
    if (run > b->max_run)
        b->max_run = run;
    if (b->off == b->len && b->err == 0 && rgm_fetch_state(b->f) == RGM_FETCH_RUNNING)
        rgm_fetch_finish(b->f); /* also while the last append is pending */
}

static void on_burst_done(rgm_fetch_t *f, int status, void *ud)
{
    struct burst *b = ud;

    (void)f;
    b->done_calls++;
    b->done_status = status;
}

static void on_fast_more(rgm_fetch_reader_t *rd, void *ud)
{
    struct burst *b = ud;
    rgm_fetch_t *f = rgm_fetch_reader_fetch(rd);
    uint64_t readable = rgm_fetch_readable(f);
    ssize_t n;

    if (rgm_fetch_state(f) == RGM_FETCH_RUNNING && readable >= b->len)
        b->violations++;
    while (b->fast_got < readable) {
        n = pread(rgm_fetch_fd(f), b->fast_buf + b->fast_got, (size_t)(readable - b->fast_got),
                  (off_t)b->fast_got);
        if (n <= 0) {
            b->violations++;
            break;
        }
        b->fast_got += (uint64_t)n;
    }
    if (rgm_fetch_state(f) != RGM_FETCH_RUNNING) {
        b->fast_done = rgm_fetch_state(f) == RGM_FETCH_DONE;
        rgm_fetch_leave(rd);
        b->fast = NULL;
    }
}

static void on_stalled_more(rgm_fetch_reader_t *rd, void *ud)
{
    struct burst *b = ud;

    b->stalled_calls++;
    if (rgm_fetch_state(rgm_fetch_reader_fetch(rd)) != RGM_FETCH_RUNNING) {
        b->stalled_done = rgm_fetch_state(rgm_fetch_reader_fetch(rd)) == RGM_FETCH_DONE;
        rgm_fetch_leave(rd);
        b->stalled = NULL;
    }
}

static void test_burst(uv_loop_t *loop, rgm_fetches_t *t, rgm_store_t *s)
{
    struct burst b;
    unsigned char *data = rgm_malloc(BURST_LEN);
    char dg[RGM_DIGEST_MAX];
    uint64_t size = 0;

    memset(&b, 0, sizeof(b));
    fill(data, BURST_LEN, 11);
    digest_of(data, BURST_LEN, 0, dg, sizeof(dg));
    b.data = data;
    b.len = BURST_LEN;
    b.fast_buf = rgm_malloc(BURST_LEN);
    is_int(rgm_fetch_start(t, dg, on_burst_done, &b, &b.f), 0, "burst: start");
    rgm_fetch_set_size(b.f, BURST_LEN);
    b.fast = rgm_fetch_join(b.f, on_fast_more, &b);
    b.stalled = rgm_fetch_join(b.f, on_stalled_more, &b);
    burst_pump(&b);
    is_int(uv_run(loop, UV_RUN_DEFAULT), 0, "burst: loop ran");
    is_int(b.err, 0, "burst: no producer error");
    is_int(b.done_calls, 1, "burst: done once");
    is_int(b.done_status, 0, "burst: done(0)");
    ok(b.eagains > 0 && b.appends == b.eagains,
       "burst: the queue filled and the producer waited "
       "(%d times)",
       b.eagains);
    /* the pool drains while the loop copies, so a run may exceed the queue, but not by much:
     * memcpy is several times faster than SHA-256 */
    ok(b.max_run < 3 * 4 * 1024 * 1024, "burst: at most a few MiB queued between waits (%zu)",
       b.max_run);
    ok(b.fast_done && b.fast_got == BURST_LEN && memcmp(b.fast_buf, data, BURST_LEN) == 0,
       "burst: the reading reader got every byte");
    is_int(b.violations, 0, "burst: last byte held back while running");
    ok(b.stalled_done && b.stalled_calls >= 2, "burst: the stalled reader saw the end (%d calls)",
       b.stalled_calls);
    ok(rgm_store_has(s, dg, &size) == 1 && size == BURST_LEN, "burst: stored");
    free(b.fast_buf);
    free(data);
}

/* ---- readers near the head: from memory, lagging ones from the file ---- */

#define MEM_STALL_AT (2 * 1024 * 1024)  /* the switcher stops reading here ... */
#define MEM_LAG      (12 * 1024 * 1024) /* ... until the fetch is this far ahead */

struct memrd {
    struct burst *b;
    rgm_fetch_reader_t *rd;
    unsigned char *buf;
    uint64_t got;
    uint64_t from_mem, from_file;
    uint64_t mem_after_file; /* memory bytes once it had gone to the file */
    int is_switcher;
    int is_stalling;
    int file_peeks_after_stall;
    int saw_done, saw_failed;
    int violations;
};

static void on_mem_more(rgm_fetch_reader_t *rd, void *ud)
{
    struct memrd *m = ud;
    rgm_fetch_t *f = rgm_fetch_reader_fetch(rd);
    uint64_t readable = rgm_fetch_readable(f);
    enum rgm_fetch_state st = rgm_fetch_state(f);
    const char *mem;
    size_t len;
    ssize_t n;
    int rc;

    if (st == RGM_FETCH_RUNNING && readable >= m->b->len)
        m->violations++; /* the last byte is held back, from memory too */
    if (m->is_switcher && m->got >= MEM_STALL_AT && m->file_peeks_after_stall == 0 &&
        st == RGM_FETCH_RUNNING && readable < m->got + MEM_LAG)
        return; /* stalled: the fetch goes on without it */
    while (m->got < readable) {
        rc = rgm_fetch_peek(rd, m->got, &mem, &len);
        if (rc < 0 || len == 0 || m->got + len > readable) {
            m->violations++;
            break;
        }
        if (rc == 0) {
            memcpy(m->buf + m->got, mem, len);
            m->from_mem += len;
            if (m->file_peeks_after_stall > 0)
                m->mem_after_file += len;
        } else {
            n = pread(rgm_fetch_fd(f), m->buf + m->got, len, (off_t)m->got);
            if (n <= 0) {
                m->violations++;
                break;
            }
            len = (size_t)n;
            m->from_file += len;
            if (m->is_switcher && m->got >= MEM_STALL_AT)
                m->file_peeks_after_stall++;
        }
        m->got += len;
    }
    rgm_fetch_reader_at(rd, m->got);
    if (st != RGM_FETCH_RUNNING) {
        m->saw_done = st == RGM_FETCH_DONE;
        m->saw_failed = st == RGM_FETCH_FAILED;
        rgm_fetch_leave(rd);
        m->rd = NULL;
    }
}

/* A burst with a reader that keeps up (it should send from memory), one that stalls past the
 * kept chunks (it must go to the file, then come back to memory once it caught up) and one that
 * never reads until the end; is_bad: the digest is of other bytes, so no reader may get the
 * last byte, from memory or not. */
static void mem_case(uv_loop_t *loop, rgm_fetches_t *t, rgm_store_t *s, int is_bad)
{
    const char *name = is_bad ? "memory, bad digest" : "memory";
    struct burst b;
    struct memrd keep, sw;
    unsigned char *data = rgm_malloc(BURST_LEN);
    char dg[RGM_DIGEST_MAX];
    uint64_t size = 0;

    memset(&b, 0, sizeof(b));
    memset(&keep, 0, sizeof(keep));
    memset(&sw, 0, sizeof(sw));
    fill(data, BURST_LEN, 13);
    data[0] ^= (unsigned char)is_bad;
    digest_of(data, BURST_LEN, 0, dg, sizeof(dg));
    data[0] ^= (unsigned char)is_bad;
    b.data = data;
    b.len = BURST_LEN;
    keep.b = sw.b = &b;
    keep.buf = rgm_malloc(BURST_LEN);
    sw.buf = rgm_malloc(BURST_LEN);
    sw.is_switcher = 1;
    is_int(rgm_fetch_start(t, dg, on_burst_done, &b, &b.f), 0, "%s: start", name);
    rgm_fetch_set_size(b.f, BURST_LEN);
    keep.rd = rgm_fetch_join(b.f, on_mem_more, &keep);
    sw.rd = rgm_fetch_join(b.f, on_mem_more, &sw);
    b.stalled = rgm_fetch_join(b.f, on_stalled_more, &b);
    burst_pump(&b);
    is_int(uv_run(loop, UV_RUN_DEFAULT), 0, "%s: loop ran", name);
    is_int(b.done_calls, 1, "%s: done once", name);
    is_int(keep.violations + sw.violations, 0, "%s: no violation (last byte held back)", name);
    if (is_bad) {
        is_int(b.done_status, UV_EINVAL, "%s: done(UV_EINVAL)", name);
        ok(keep.saw_failed && sw.saw_failed, "%s: the readers saw FAILED", name);
        ok(keep.got < BURST_LEN && sw.got < BURST_LEN, "%s: cut before the last byte (%llu)", name,
           (unsigned long long)keep.got);
        ok(keep.from_mem > 0 && memcmp(keep.buf, data, (size_t)keep.got) == 0,
           "%s: bytes so far match, some from memory", name);
        is_int(rgm_store_has(s, dg, NULL), 0, "%s: nothing in the store", name);
    } else {
        is_int(b.done_status, 0, "%s: done(0)", name);
        ok(keep.saw_done && keep.got == BURST_LEN && memcmp(keep.buf, data, BURST_LEN) == 0,
           "%s: the reader that keeps up got every byte", name);
        ok(keep.from_mem > keep.from_file,
           "%s: ... mostly from memory (%llu from memory, %llu from the file)", name,
           (unsigned long long)keep.from_mem, (unsigned long long)keep.from_file);
        ok(sw.saw_done && sw.got == BURST_LEN && memcmp(sw.buf, data, BURST_LEN) == 0,
           "%s: the switcher got every byte", name);
        ok(sw.file_peeks_after_stall > 0, "%s: the switcher, once behind, read the file (%d reads)",
           name, sw.file_peeks_after_stall);
        ok(sw.mem_after_file > 0, "%s: ... and memory again once it caught up (%llu bytes)", name,
           (unsigned long long)sw.mem_after_file);
        ok(rgm_store_has(s, dg, &size) == 1 && size == BURST_LEN, "%s: stored", name);
    }
    ok(b.stalled_done == !is_bad && b.stalled_calls >= 2,
       "%s: the stalled reader did not hold the fetch back (%d calls)", name, b.stalled_calls);
    free(keep.buf);
    free(sw.buf);
    free(data);
}

static void test_memory(uv_loop_t *loop, rgm_fetches_t *t, rgm_store_t *s)
{
    mem_case(loop, t, s, 0);
    mem_case(loop, t, s, 1);
}

int main(void)
{
    char root[256];
    char cmd[400];
    uv_loop_t loop;
    rgm_store_t *s = NULL;
    rgm_fetches_t *t;

    snprintf(root, sizeof(root), "/tmp/rgm-test-fetch.XXXXXX");
    if (!mkdtemp(root)) {
        printf("Bail out! mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    if (uv_loop_init(&loop) != 0 || rgm_store_open(root, &s) != 0) {
        printf("Bail out! setup\n");
        return 1;
    }
    t = rgm_fetches_new(&loop, s);

    test_success(&loop, t, s, root);
    test_mismatch(&loop, t, s, root);
    test_fault(&loop, t, s, root);
    test_readers_leave(&loop, t, s, root);
    test_producer_fail(&loop, t, s, root);
    test_small_cases(&loop, t, s);
    test_burst(&loop, t, s);
    test_memory(&loop, t, s);

    /* no loop run between the last fetch and the close: the table holds no handle */
    rgm_fetches_free(t);
    is_int(uv_loop_close(&loop), 0, "uv_loop_close() == 0");
    rgm_store_close(s);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
    if (system(cmd) != 0)
        printf("# cleanup failed\n");
    return tap_done();
}
