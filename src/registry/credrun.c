/* Run one credential program on the loop: spawn it in its own process group, feed stdin, read
 * stdout whole and the first stderr line, and kill the group at the deadline. The run ends
 * when the program has exited and both pipes reached EOF, or, once killed, when it has exited
 * (a grandchild holding a pipe open cannot keep the run alive). No protocol, no logging. */
#include "registry/credrun.h"

#include <signal.h>

#include "core/buf.h"
#include "core/util.h"

extern char **environ;

struct rgm_credrun {
    uv_loop_t *loop;
    uv_process_t proc;
    uv_pipe_t in;
    uv_pipe_t out;
    uv_pipe_t err;
    uv_timer_t timer;
    uv_write_t wreq;
    char *input;
    size_t input_len;
    rgm_buf_t outbuf;
    char errline[RGM_CREDRUN_STDERR_MAX + 1];
    size_t errline_len;
    int is_errline_done;
    int is_spawned;
    int is_exited;
    int is_out_eof;
    int is_err_eof;
    int is_in_closed;
    int is_killed;
    int is_finished; /* cb ran (or never will) */
    int result_err;
    int64_t exit_status;
    int term_signal;
    unsigned pending_closes; /* handle closes in flight, plus 1 until close_all */
    uint64_t started_ms;
    rgm_credrun_cb cb;
    void *ud;
};

/* ---- credentials ---- */

static void wipe_free(char *s)
{
    if (s)
        memset(s, 0, strlen(s));
    free(s);
}

void rgm_cred_clear(rgm_cred_t *c)
{
    wipe_free(c->username);
    wipe_free(c->secret);
    memset(c, 0, sizeof(*c));
}

void rgm_cred_copy(rgm_cred_t *dst, const rgm_cred_t *src)
{
    dst->username = src->username ? rgm_strdup(src->username) : NULL;
    dst->secret = src->secret ? rgm_strdup(src->secret) : NULL;
    dst->is_identity_token = src->is_identity_token;
}

/* ---- teardown ---- */

static void release(rgm_credrun_t *r)
{
    RGM_BUG_ON(r->pending_closes == 0);
    if (--r->pending_closes > 0)
        return;
    rgm_buf_free(&r->outbuf);
    free(r->input);
    free(r);
}

static void on_handle_closed(uv_handle_t *h)
{
    release(h->data);
}

static void close_one(rgm_credrun_t *r, uv_handle_t *h)
{
    if (uv_is_closing(h))
        return;
    r->pending_closes++;
    uv_close(h, on_handle_closed);
}

/* pending_closes starts at 1 for the run itself (stdin may close early); this drops it. */
static void close_all(rgm_credrun_t *r)
{
    close_one(r, (uv_handle_t *)&r->proc);
    if (!r->is_in_closed) {
        r->is_in_closed = 1;
        close_one(r, (uv_handle_t *)&r->in);
    }
    close_one(r, (uv_handle_t *)&r->out);
    close_one(r, (uv_handle_t *)&r->err);
    close_one(r, (uv_handle_t *)&r->timer);
    release(r);
}

static void kill_group(rgm_credrun_t *r, int why)
{
    if (r->result_err == 0)
        r->result_err = why;
    if (r->is_killed || !r->is_spawned || r->is_exited)
        return;
    r->is_killed = 1;
    /* Negative pid: the whole group, so that a shell's children die with it. */
    if (uv_kill(-r->proc.pid, SIGKILL) < 0 && uv_process_kill(&r->proc, SIGKILL) < 0)
        r->is_exited = 1; /* already gone: its exit callback is on its way or came */
}

static void maybe_finish(rgm_credrun_t *r)
{
    rgm_credrun_result_t res;

    if (r->is_finished || !r->is_exited)
        return;
    if (!(r->is_out_eof && r->is_err_eof) && r->result_err == 0)
        return;
    r->is_finished = 1;
    memset(&res, 0, sizeof(res));
    res.err = r->result_err;
    res.exit_status = r->exit_status;
    res.term_signal = r->term_signal;
    res.out = rgm_buf_cstr(&r->outbuf);
    res.out_len = r->outbuf.len;
    r->errline[r->errline_len] = '\0';
    res.err_line = r->errline;
    res.elapsed_ms = rgm_time_ms() - r->started_ms;
    r->cb(&res, r->ud);
    close_all(r);
}

/* ---- the child's pipes and exit ---- */

static void on_exit_cb(uv_process_t *p, int64_t exit_status, int term_signal)
{
    rgm_credrun_t *r = rgm_container_of(p, rgm_credrun_t, proc);

    r->is_exited = 1;
    r->exit_status = exit_status;
    r->term_signal = term_signal;
    maybe_finish(r);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char slab[4096]; /* one loop thread; consumed before the next read */

    (void)h;
    (void)suggested;
    buf->base = slab;
    buf->len = sizeof(slab);
}

static void on_out_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    rgm_credrun_t *r = rgm_container_of((uv_pipe_t *)s, rgm_credrun_t, out);

    if (nread == 0)
        return;
    if (nread < 0) {
        uv_read_stop(s);
        r->is_out_eof = 1;
        maybe_finish(r);
        return;
    }
    if (rgm_buf_append(&r->outbuf, buf->base, (size_t)nread) < 0) {
        uv_read_stop(s);
        r->is_out_eof = 1;
        kill_group(r, UV_E2BIG);
        maybe_finish(r);
    }
}

static void keep_err_bytes(rgm_credrun_t *r, const char *p, size_t n)
{
    size_t i;

    for (i = 0; i < n && !r->is_errline_done; i++) {
        unsigned char c = (unsigned char)p[i];

        if (c == '\n' && r->errline_len > 0) {
            r->is_errline_done = 1;
        } else if (c >= 0x20 && c != 0x7f && r->errline_len < RGM_CREDRUN_STDERR_MAX) {
            r->errline[r->errline_len++] = (char)c;
        }
    }
}

static void on_err_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    rgm_credrun_t *r = rgm_container_of((uv_pipe_t *)s, rgm_credrun_t, err);

    if (nread == 0)
        return;
    if (nread < 0) {
        uv_read_stop(s);
        r->is_err_eof = 1;
        maybe_finish(r);
        return;
    }
    keep_err_bytes(r, buf->base, (size_t)nread);
}

static void on_written(uv_write_t *w, int status)
{
    rgm_credrun_t *r = rgm_container_of(w, rgm_credrun_t, wreq);

    (void)status; /* EPIPE: the program did not read its input; its answer still counts */
    if (!r->is_in_closed) {
        r->is_in_closed = 1;
        close_one(r, (uv_handle_t *)&r->in);
    }
}

static void on_deadline(uv_timer_t *t)
{
    rgm_credrun_t *r = rgm_container_of(t, rgm_credrun_t, timer);

    kill_group(r, UV_ETIMEDOUT);
    maybe_finish(r);
}

/* ---- start ---- */

static int env_overridden(const char *entry, const char *const *extra)
{
    size_t i;
    size_t n;
    const char *eq = strchr(entry, '=');

    if (!eq)
        return 0;
    n = (size_t)(eq - entry);
    for (i = 0; extra[i]; i++)
        if (strncmp(extra[i], entry, n) == 0 && extra[i][n] == '=')
            return 1;
    return 0;
}

/* Our environment with extra laid over it; the strings are borrowed, the array is malloc'd. */
static char **merged_env(const char *const *extra)
{
    size_t n = 0;
    size_t k = 0;
    size_t i;
    char **env;

    while (environ[n])
        n++;
    for (i = 0; extra[i]; i++)
        n++;
    env = rgm_calloc(n + 1, sizeof(*env));
    for (i = 0; environ[i]; i++)
        if (!env_overridden(environ[i], extra))
            env[k++] = environ[i];
    for (i = 0; extra[i]; i++)
        env[k++] = (char *)extra[i];
    env[k] = NULL;
    return env;
}

static char **make_argv(const char *file, const char *const *args)
{
    size_t n = 0;
    size_t i;
    char **argv;

    while (args && args[n])
        n++;
    argv = rgm_calloc(n + 2, sizeof(*argv));
    argv[0] = (char *)file;
    for (i = 0; i < n; i++)
        argv[i + 1] = (char *)args[i];
    return argv;
}

static int spawn(rgm_credrun_t *r, const rgm_credrun_opts_t *o)
{
    uv_process_options_t po;
    uv_stdio_container_t stdio[3];
    char **argv = make_argv(o->file, o->args);
    char **env = o->env ? merged_env(o->env) : NULL;
    int err;

    memset(&po, 0, sizeof(po));
    stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
    stdio[0].data.stream = (uv_stream_t *)&r->in;
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1].data.stream = (uv_stream_t *)&r->out;
    stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[2].data.stream = (uv_stream_t *)&r->err;
    po.file = o->file;
    po.args = argv;
    po.env = env;
    po.stdio = stdio;
    po.stdio_count = 3;
    po.exit_cb = on_exit_cb;
    /* Its own session and process group, so that the deadline kills all of it. */
    po.flags = UV_PROCESS_DETACHED;
    /* uv_spawn forks and execs before it returns: argv and env are not needed after. */
    err = uv_spawn(r->loop, &r->proc, &po);
    free(argv);
    free(env);
    return err;
}

static int start_io(rgm_credrun_t *r, uint64_t timeout_ms)
{
    uv_buf_t b;
    int err;

    err = uv_read_start((uv_stream_t *)&r->out, on_alloc, on_out_read);
    if (err == 0)
        err = uv_read_start((uv_stream_t *)&r->err, on_alloc, on_err_read);
    if (err == 0)
        err = uv_timer_start(&r->timer, on_deadline, timeout_ms, 0);
    if (err < 0)
        return err;
    if (r->input_len == 0) {
        r->is_in_closed = 1;
        close_one(r, (uv_handle_t *)&r->in);
        return 0;
    }
    b = uv_buf_init(r->input, (unsigned)r->input_len);
    err = uv_write(&r->wreq, (uv_stream_t *)&r->in, &b, 1, on_written);
    if (err < 0) {
        r->is_in_closed = 1;
        close_one(r, (uv_handle_t *)&r->in);
    }
    return 0;
}

int rgm_credrun_start(uv_loop_t *loop, const rgm_credrun_opts_t *o, rgm_credrun_cb cb, void *ud,
                      rgm_credrun_t **out)
{
    rgm_credrun_t *r;
    int err;

    if (!o->file || !o->file[0] || o->timeout_ms == 0 || o->input_len > UINT32_MAX)
        return UV_EINVAL;
    r = rgm_calloc(1, sizeof(*r));
    r->loop = loop;
    r->cb = cb;
    r->ud = ud;
    r->started_ms = rgm_time_ms();
    r->pending_closes = 1;
    rgm_buf_init(&r->outbuf, o->stdout_max);
    if (o->input_len > 0) {
        r->input = rgm_malloc(o->input_len);
        memcpy(r->input, o->input, o->input_len);
        r->input_len = o->input_len;
    }
    r->proc.data = r;
    r->in.data = r;
    r->out.data = r;
    r->err.data = r;
    r->timer.data = r;
    /* These cannot fail on a valid loop (they only initialise memory). */
    RGM_BUG_ON(uv_pipe_init(loop, &r->in, 0) < 0);
    RGM_BUG_ON(uv_pipe_init(loop, &r->out, 0) < 0);
    RGM_BUG_ON(uv_pipe_init(loop, &r->err, 0) < 0);
    RGM_BUG_ON(uv_timer_init(loop, &r->timer) < 0);
    err = spawn(r, o);
    if (err == 0) {
        r->is_spawned = 1;
        err = start_io(r, o->timeout_ms);
        if (err < 0)
            kill_group(r, err);
    }
    if (err < 0) {
        /* The process handle is closed even after a failed spawn (libuv initialised it). */
        r->is_finished = 1;
        close_all(r);
        return err;
    }
    if (out)
        *out = r;
    return 0;
}

void rgm_credrun_cancel(rgm_credrun_t *r)
{
    if (r->is_finished)
        return;
    kill_group(r, UV_ECANCELED);
    maybe_finish(r);
}
