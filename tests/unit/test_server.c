/* HTTP server: real sockets on 127.0.0.1, port 0. The server runs on the loop in the main
 * thread; each scenario's client is plain blocking socket code in a uv_thread, which records
 * what it saw; the main thread checks it once the client has finished. */
#include "http/server.h"
#include "http/server-int.h" /* struct conn: what an idle connection holds */

#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <uv.h>

#include "core/log.h"
#include "tap.h"

#define MAX_BODY  (8 * 1024 * 1024)
#define FILE_SIZE (3 * 1024 * 1024 + 123)
#define BIG_SIZE  ((off_t)64 * 1024 * 1024)

static uv_loop_t loop_;
static uv_loop_t *loop = &loop_;
static rgm_config_t cfg;
static rgm_server_t *srv;
static int port;
static int file_fd = -1;
static int big_fd = -1;
static unsigned char *file_data;
static char tmp_dir[] = "/tmp/rgm-test-server-XXXXXX";

/* what the handler saw (loop thread; read by main after the client joined) */
static int n_handled;
static int n_closed;      /* on_close calls */
static int sf_status = 1; /* last sendfile completion status */
static char last_client[64];
static char last_method[16];
static uv_timer_t delay_timer;
static rgm_req_t *delayed_req;
static int shutdown_on_delay;
static int shutdown_done;

/* ---- client side (runs in a thread) ---- */

struct cli {
    int fd;
    char buf[64 * 1024];
    size_t len;
};

struct resp {
    int status;
    char head[8192];
    char *body;
    size_t body_len;
    int is_eof; /* the body ended with the connection */
};

static int cli_connect(struct cli *c)
{
    struct sockaddr_in a;
    struct timeval tv = {5, 0};
    int one = 1;

    c->len = 0;
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0)
        return -1;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ||
        connect(c->fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    return 0;
}

static void cli_close(struct cli *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

static int cli_send(struct cli *c, const void *p, size_t len)
{
    const char *s = p;

    while (len > 0) {
        const ssize_t n = send(c->fd, s, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        s += n;
        len -= (size_t)n;
    }
    return 0;
}

static int cli_sends(struct cli *c, const char *s)
{
    return cli_send(c, s, strlen(s));
}

/* More bytes into c->buf; 0 on EOF, <0 on error or timeout. */
static ssize_t cli_fill(struct cli *c)
{
    ssize_t n;

    if (c->len == sizeof(c->buf))
        return -1;
    do {
        n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
    } while (n < 0 && errno == EINTR);
    if (n > 0)
        c->len += (size_t)n;
    return n;
}

static void cli_take(struct cli *c, void *out, size_t n)
{
    if (out)
        memcpy(out, c->buf, n);
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

/* Take n bytes (buffered first, then from the socket). -1 when the stream ends first; *got
 * (may be NULL) says how many came. */
static int cli_read_n_got(struct cli *c, char *out, size_t n, size_t *got)
{
    if (got)
        *got = 0;
    while (n > 0) {
        if (c->len == 0 && cli_fill(c) <= 0)
            return -1;
        {
            const size_t k = c->len < n ? c->len : n;
            cli_take(c, out, k);
            out += k;
            n -= k;
            if (got)
                *got += k;
        }
    }
    return 0;
}

static int cli_read_n(struct cli *c, char *out, size_t n)
{
    return cli_read_n_got(c, out, n, NULL);
}

static int cli_read_line(struct cli *c, char *out, size_t outlen)
{
    for (;;) {
        char *nl = memchr(c->buf, '\n', c->len);
        if (nl) {
            const size_t n = (size_t)(nl - c->buf) + 1;
            if (n >= outlen)
                return -1;
            cli_take(c, out, n);
            out[n] = '\0';
            return 0;
        }
        if (cli_fill(c) <= 0)
            return -1;
    }
}

static const char *hdr_get(const struct resp *r, const char *name, char *out, size_t outlen)
{
    const char *p = r->head;
    const size_t nlen = strlen(name);

    while ((p = strstr(p, "\r\n")) != NULL) {
        p += 2;
        if (strncasecmp(p, name, nlen) == 0 && p[nlen] == ':') {
            const char *v = p + nlen + 1;
            size_t n;
            while (*v == ' ')
                v++;
            n = strcspn(v, "\r");
            if (n >= outlen)
                n = outlen - 1;
            memcpy(out, v, n);
            out[n] = '\0';
            return out;
        }
    }
    return NULL;
}

static void resp_free(struct resp *r)
{
    free(r->body);
    r->body = NULL;
}

/* One response; is_head: no body expected. 0 or -1. */
static int cli_read_resp(struct cli *c, struct resp *r, int is_head)
{
    char v[64];
    char *end;

    memset(r, 0, sizeof(*r));
    for (;;) {
        end = memmem(c->buf, c->len, "\r\n\r\n", 4);
        if (end)
            break;
        if (cli_fill(c) <= 0)
            return -1;
    }
    {
        const size_t hl = (size_t)(end - c->buf) + 4;
        if (hl >= sizeof(r->head))
            return -1;
        cli_take(c, r->head, hl);
        r->head[hl] = '\0';
    }
    if (sscanf(r->head, "HTTP/1.1 %d", &r->status) != 1)
        return -1;
    r->body = malloc(MAX_BODY);
    if (is_head || r->status == 204 || r->status == 304)
        return 0;
    if (hdr_get(r, "Content-Length", v, sizeof(v))) {
        size_t cl = strtoul(v, NULL, 10);
        if (cl > MAX_BODY)
            return -1;
        if (cli_read_n_got(c, r->body, cl, &r->body_len) < 0) {
            r->is_eof = 1; /* truncated: keep what came */
            return 0;
        }
        r->body_len = cl;
        return 0;
    }
    if (hdr_get(r, "Transfer-Encoding", v, sizeof(v)) && strcmp(v, "chunked") == 0) {
        for (;;) {
            char line[64];
            size_t n;
            if (cli_read_line(c, line, sizeof(line)) < 0)
                return -1;
            n = strtoul(line, NULL, 16);
            if (n == 0) {
                return cli_read_line(c, line, sizeof(line)); /* final CRLF */
            }
            if (r->body_len + n > MAX_BODY || cli_read_n(c, r->body + r->body_len, n) < 0)
                return -1;
            r->body_len += n;
            if (cli_read_n(c, line, 2) < 0 || memcmp(line, "\r\n", 2) != 0)
                return -1;
        }
    }
    for (;;) { /* until EOF */
        if (c->len > 0) {
            const size_t k = c->len;
            if (r->body_len + k > MAX_BODY)
                return -1;
            cli_take(c, r->body + r->body_len, k);
            r->body_len += k;
        }
        if (cli_fill(c) <= 0)
            break;
    }
    r->is_eof = 1;
    return 0;
}

/* 1 when the server closed the connection (EOF or reset), 0 on timeout or data. */
static int cli_wait_eof(struct cli *c)
{
    char b[256];
    ssize_t n;

    if (c->len > 0)
        return 0;
    do {
        n = recv(c->fd, b, sizeof(b), 0);
    } while (n < 0 && errno == EINTR);
    if (n == 0 || (n < 0 && errno == ECONNRESET))
        return 1;
    return 0;
}

static double now_ms(void)
{
    return (double)uv_hrtime() / 1e6;
}

/* ---- running a client thread against the loop ---- */

static uv_async_t client_async;
static uv_thread_t client_thread;
static void (*client_fn)(void);

static void client_main(void *arg)
{
    (void)arg;
    client_fn();
    if (uv_async_send(&client_async) != 0)
        abort();
}

static void on_client_done(uv_async_t *a)
{
    uv_close((uv_handle_t *)a, NULL);
    uv_stop(loop);
}

static void run_client(void (*fn)(void))
{
    client_fn = fn;
    if (uv_async_init(loop, &client_async, on_client_done) != 0 ||
        uv_thread_create(&client_thread, client_main, NULL) != 0)
        abort();
    uv_run(loop, UV_RUN_DEFAULT);
    uv_thread_join(&client_thread);
}

static void on_wait_tick(uv_timer_t *t)
{
    (void)t;
    uv_stop(loop);
}

/* Run the loop until *flag is nonzero or ms pass. */
static void run_until(const int *flag, int ms)
{
    uv_timer_t t;
    const double end = now_ms() + ms;

    if (uv_timer_init(loop, &t) != 0 || uv_timer_start(&t, on_wait_tick, 10, 10) != 0)
        abort();
    while (!*flag && now_ms() < end)
        uv_run(loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
}

/* ---- the handler (loop thread) ---- */

static void on_req_close(rgm_req_t *req, void *ud)
{
    (void)req;
    (void)ud;
    n_closed++;
}

static void on_file_sent(rgm_req_t *req, int status, void *ud)
{
    (void)ud;
    sf_status = status;
    if (status < 0)
        rgm_resp_abort(req, "file error");
    else
        rgm_resp_finish(req);
}

static void on_chunk3(rgm_req_t *req, int status, void *ud)
{
    (void)ud;
    (void)status;
    if (rgm_resp_sendfile(req, file_fd, 0, 100000, on_file_sent, NULL) < 0)
        rgm_resp_abort(req, "sendfile failed");
}

static void on_chunk2(rgm_req_t *req, int status, void *ud)
{
    /* three pieces in one write: framed as one chunk of their sum */
    struct iovec iov[3] = {{"chunked", 7}, {" ", 1}, {"world", 5}};

    (void)ud;
    (void)status;
    if (rgm_resp_writev(req, iov, 3, on_chunk3, NULL) < 0)
        rgm_resp_abort(req, "write failed");
}

static void on_abort_write(rgm_req_t *req, int status, void *ud)
{
    (void)ud;
    (void)status;
    rgm_resp_abort(req, "test abort");
}

static void on_delay(uv_timer_t *t)
{
    (void)t;
    rgm_resp_simple(delayed_req, 200, NULL, "text/plain", "delayed", 7);
    delayed_req = NULL;
}

static void on_shutdown_done(rgm_server_t *s, void *ud)
{
    (void)s;
    (void)ud;
    shutdown_done = 1;
}

static void handler(rgm_req_t *req, void *ud)
{
    const char *path = rgm_req_path(req);
    char body[1024];
    int n;

    (void)ud;
    n_handled++;
    snprintf(last_client, sizeof(last_client), "%s", rgm_req_client(req));
    snprintf(last_method, sizeof(last_method), "%s", rgm_req_method_name(req));
    if (strcmp(path, "/echo") == 0) {
        const char *x = rgm_req_header(req, "x-test");
        const char *e = rgm_req_header(req, "X-Empty");
        n = snprintf(body, sizeof(body), "%s %s q=%s x=[%s] e=[%s] id>0=%d",
                     rgm_req_method_name(req), path, rgm_req_query(req), x ? x : "(none)",
                     e ? e : "(none)", rgm_req_id(req) > 0);
        rgm_req_set_cache_status(req, "HIT");
        rgm_resp_simple(req, 200, "X-Extra: 1\r\n", "text/plain", body, (size_t)n);
    } else if (strcmp(path, "/file") == 0) {
        if (rgm_resp_start(req, 200, NULL, FILE_SIZE) < 0 ||
            rgm_resp_sendfile(req, file_fd, 0, FILE_SIZE, on_file_sent, NULL) < 0)
            rgm_resp_abort(req, "sendfile failed");
    } else if (strcmp(path, "/filepart") == 0) {
        if (rgm_resp_start(req, 206, NULL, 1000) < 0 ||
            rgm_resp_sendfile(req, file_fd, 12345, 1000, on_file_sent, NULL) < 0)
            rgm_resp_abort(req, "sendfile failed");
    } else if (strcmp(path, "/chunked") == 0) {
        if (rgm_resp_start(req, 200, NULL, -1) < 0 ||
            rgm_resp_write(req, "hello ", 6, on_chunk2, NULL) < 0)
            rgm_resp_abort(req, "write failed");
    } else if (strcmp(path, "/abort") == 0) {
        if (rgm_resp_start(req, 200, NULL, 100) < 0 ||
            rgm_resp_write(req, "0123456789", 10, on_abort_write, NULL) < 0)
            rgm_resp_abort(req, "write failed");
    } else if (strcmp(path, "/big") == 0) {
        rgm_req_on_close(req, on_req_close, NULL);
        if (rgm_resp_start(req, 200, NULL, BIG_SIZE) < 0 ||
            rgm_resp_sendfile(req, big_fd, 0, BIG_SIZE, on_file_sent, NULL) < 0)
            rgm_resp_abort(req, "sendfile failed");
    } else if (strcmp(path, "/delay") == 0) {
        rgm_req_on_close(req, on_req_close, NULL);
        delayed_req = req;
        if (uv_timer_start(&delay_timer, on_delay, 300, 0) != 0)
            abort();
        if (shutdown_on_delay)
            rgm_server_shutdown(srv, on_shutdown_done, NULL);
    } else if (rgm_req_method(req) == RGM_M_OTHER) {
        rgm_resp_error(req, 405, "UNSUPPORTED", "read-only \"mirror\"", NULL);
    } else {
        rgm_resp_error(req, 404, "UNSUPPORTED", "no such path", NULL);
    }
}

/* ---- scenarios: clients fill these, main checks ---- */

static struct resp r1, r2, r3;
static int c_ok[8];
static int c_count;
static double c_ms;

static const char echo_req[] = "GET /echo?a=1&b=2 HTTP/1.1\r\nHost: x\r\nX-Test:  hello world  \r\n"
                               "X-Empty:\r\n\r\n";
static const char echo_want[] = "GET /echo q=a=1&b=2 x=[hello world] e=[] id>0=1";

static void cl_basic(void)
{
    struct cli c;

    if (cli_connect(&c) < 0)
        return;
    c_ok[0] = cli_sends(&c, echo_req) == 0 && cli_read_resp(&c, &r1, 0) == 0;
    c_ok[1] = cli_sends(&c, "GET /echo HTTP/1.1\r\n\r\n") == 0 && cli_read_resp(&c, &r2, 0) == 0;
    cli_close(&c);
}

static char split_bad[256];

static void cl_split(void)
{
    const size_t len = sizeof(echo_req) - 1;
    size_t i;

    c_count = 0;
    for (i = 1; i < len; i++) {
        struct cli c;
        struct resp r;
        if (cli_connect(&c) < 0)
            return;
        if (cli_send(&c, echo_req, i) == 0 && usleep(2000) == 0 &&
            cli_send(&c, echo_req + i, len - i) == 0 && cli_read_resp(&c, &r, 0) == 0 &&
            r.status == 200 && r.body_len == strlen(echo_want) &&
            memcmp(r.body, echo_want, r.body_len) == 0)
            c_count++;
        else if (!split_bad[0])
            snprintf(split_bad, sizeof(split_bad), "split at %zu", i);
        resp_free(&r);
        cli_close(&c);
    }
}

static void cl_bytewise(void)
{
    struct cli c;
    size_t i;

    if (cli_connect(&c) < 0)
        return;
    for (i = 0; i < sizeof(echo_req) - 1; i++) {
        if (cli_send(&c, echo_req + i, 1) < 0)
            break;
        usleep(500);
    }
    c_ok[0] = cli_read_resp(&c, &r1, 0) == 0;
    cli_close(&c);
}

static void cl_pipeline(void)
{
    struct cli c;

    if (cli_connect(&c) < 0)
        return;
    c_ok[0] = cli_sends(&c, "GET /echo?n=1 HTTP/1.1\r\n\r\nHEAD /echo?n=2 HTTP/1.1\r\n\r\n"
                            "GET /echo?n=3 HTTP/1.1\r\n\r\n") == 0 &&
              cli_read_resp(&c, &r1, 0) == 0 && cli_read_resp(&c, &r2, 1) == 0 &&
              cli_read_resp(&c, &r3, 0) == 0;
    cli_close(&c);
}

/* Keep-alive connections left open after one request each (cl_idle_open), for the main
 * thread to inspect; cl_idle_close closes them. */
#define IDLE_CONNS 20
static struct cli idle_cli[IDLE_CONNS];

static void cl_idle_open(void)
{
    int i;

    c_count = 0;
    for (i = 0; i < IDLE_CONNS; i++) {
        struct resp r;

        memset(&r, 0, sizeof(r));
        if (cli_connect(&idle_cli[i]) < 0)
            return;
        /* a partial second request on half of them: its bytes live in the request, not in
         * a buffer of the connection */
        if (cli_sends(&idle_cli[i], "GET /echo HTTP/1.1\r\n\r\n") == 0 &&
            cli_read_resp(&idle_cli[i], &r, 0) == 0 && r.status == 200 &&
            (i % 2 == 0 || cli_sends(&idle_cli[i], "GET /echo?n=2 HTTP/1.1\r\nX-Te") == 0))
            c_count++;
        resp_free(&r);
    }
    usleep(50000); /* the partial heads reach the server */
}

static void cl_idle_close(void)
{
    int i;

    c_ok[0] = 1;
    for (i = 0; i < IDLE_CONNS; i++) {
        struct resp r;

        memset(&r, 0, sizeof(r));
        if (i % 2 == 1 && (cli_sends(&idle_cli[i], "st: late\r\n\r\n") < 0 ||
                           cli_read_resp(&idle_cli[i], &r, 0) < 0 || r.status != 200 ||
                           !memmem(r.body, r.body_len, "q=n=2 x=[late]", 14)))
            c_ok[0] = 0;
        resp_free(&r);
        cli_close(&idle_cli[i]);
    }
}

/* Pipelined input behind a request in progress (/delay: 300 ms), then more than the 64 KiB
 * the connection may keep: reading stops at the cap and resumes, every request answered in
 * order. */
#define PIPE_N 3000

static void cl_pipeline_busy(void)
{
    struct cli c;
    char *reqs = NULL;
    size_t len = 0;
    int i;

    c_count = 0;
    if (cli_connect(&c) < 0)
        return;
    reqs = malloc((size_t)PIPE_N * 40);
    if (!reqs)
        abort();
    for (i = 0; i < PIPE_N; i++)
        len += (size_t)snprintf(reqs + len, 40, "GET /echo?n=%d HTTP/1.1\r\n\r\n", i);
    c_ok[0] = cli_sends(&c, "GET /delay HTTP/1.1\r\n\r\nGET /echo?n=first HTTP/1.1\r\n\r\n") == 0 &&
              usleep(50000) == 0 && cli_send(&c, reqs, len) == 0 &&
              cli_read_resp(&c, &r1, 0) == 0 && cli_read_resp(&c, &r2, 0) == 0;
    for (i = 0; c_ok[0] && i < PIPE_N; i++) {
        struct resp r;
        char want[32];

        memset(&r, 0, sizeof(r));
        snprintf(want, sizeof(want), "q=n=%d ", i);
        if (cli_read_resp(&c, &r, 0) == 0 && r.status == 200 &&
            memmem(r.body, r.body_len, want, strlen(want)))
            c_count++;
        resp_free(&r);
    }
    free(reqs);
    cli_close(&c);
}

static void test_conn_memory(void)
{
    const struct conn *c;
    int holding = 0;
    int n = 0;

    run_client(cl_idle_open);
    is_int(c_count, IDLE_CONNS, "idle: %d connections answered", IDLE_CONNS);
    for (c = srv->conns; c; c = c->next) {
        n++;
        if (c->in || c->in_cap || c->in_len)
            holding++;
    }
    ok(n >= IDLE_CONNS, "idle: the server holds them (%d)", n);
    is_int(holding, 0, "idle: no connection holds an input buffer (the loop's one is shared)");
    memset(c_ok, 0, sizeof(c_ok));
    run_client(cl_idle_close);
    ok(c_ok[0], "idle: a head split across reads, parsed from the shared buffer, is answered");

    memset(c_ok, 0, sizeof(c_ok));
    run_client(cl_pipeline_busy);
    ok(c_ok[0] && r1.status == 200 && r1.body_len == 7 && memcmp(r1.body, "delayed", 7) == 0,
       "busy pipeline: the slow first request answered first");
    ok(r2.body_len > 0 && memmem(r2.body, r2.body_len, "q=n=first", 9),
       "busy pipeline: the request read behind it next");
    is_int(c_count, PIPE_N, "busy pipeline: %d more requests (%d KiB) in order", PIPE_N,
           PIPE_N * 28 / 1024);
    resp_free(&r1);
    resp_free(&r2);
}

static void cl_conn_close(void)
{
    struct cli c;

    if (cli_connect(&c) < 0)
        return;
    c_ok[0] = cli_sends(&c, "GET /echo HTTP/1.1\r\nConnection: close\r\n\r\n") == 0 &&
              cli_read_resp(&c, &r1, 0) == 0;
    c_ok[1] = cli_wait_eof(&c);
    cli_close(&c);
    if (cli_connect(&c) < 0)
        return;
    c_ok[2] = cli_sends(&c, "GET /echo HTTP/1.0\r\n\r\n") == 0 && cli_read_resp(&c, &r2, 0) == 0;
    c_ok[3] = cli_wait_eof(&c);
    cli_close(&c);
    if (cli_connect(&c) < 0)
        return;
    c_ok[4] = cli_sends(&c, "GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n") == 0 &&
              cli_read_resp(&c, &r3, 0) == 0;
    c_ok[5] = cli_sends(&c, "GET /echo HTTP/1.0\r\n\r\n") == 0;
    cli_close(&c);
}

/* One request on a new connection; the response in r1, eof after it in c_ok[1]. */
static char *one_req;
static size_t one_req_len;

static void cl_one(void)
{
    struct cli c;
    const double t0 = now_ms();

    c_ok[0] = c_ok[1] = 0;
    if (cli_connect(&c) < 0)
        return;
    c_ok[0] = cli_send(&c, one_req, one_req_len) == 0 && cli_read_resp(&c, &r1, 0) == 0;
    c_ms = now_ms() - t0;
    c_ok[1] = cli_wait_eof(&c);
    cli_close(&c);
}

static void check_error(const char *req, int status, const char *code, const char *what)
{
    char v[64];

    one_req = (char *)req;
    one_req_len = strlen(req);
    run_client(cl_one);
    ok(c_ok[0], "%s: a response", what);
    is_int(r1.status, status, "%s: status", what);
    ok(r1.body && memmem(r1.body, r1.body_len, code, strlen(code)) != NULL, "%s: OCI error code %s",
       what, code);
    is_str(hdr_get(&r1, "Connection", v, sizeof(v)), "close", "%s: Connection: close", what);
    ok(c_ok[1], "%s: then closed", what);
    resp_free(&r1);
}

static char *repeat(const char *prefix, char ch, size_t n, const char *suffix)
{
    const size_t pl = strlen(prefix), sl = strlen(suffix);
    char *s = malloc(pl + n + sl + 1);

    memcpy(s, prefix, pl);
    memset(s + pl, ch, n);
    memcpy(s + pl + n, suffix, sl + 1);
    return s;
}

static void test_limits(void)
{
    char *s;
    char many[4096];
    size_t i, off;

    s = repeat("GET /", 'a', 1100, " HTTP/1.1\r\n\r\n");
    check_error(s, 414, "UNSUPPORTED", "long URL");
    free(s);

    off = (size_t)snprintf(many, sizeof(many), "GET /echo HTTP/1.1\r\n");
    for (i = 0; i < 60; i++)
        off += (size_t)snprintf(many + off, sizeof(many) - off, "X-H%zu: v\r\n", i);
    snprintf(many + off, sizeof(many) - off, "\r\n");
    check_error(many, 431, "UNSUPPORTED", "too many headers");

    s = repeat("GET /echo HTTP/1.1\r\nX-Big: ", 'b', 9000, "\r\n\r\n");
    check_error(s, 431, "UNSUPPORTED", "header bytes");
    free(s);

    check_error("GET /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 400, "UNSUPPORTED",
                "GET with body");
    check_error("HEAD /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400,
                "UNSUPPORTED", "HEAD with chunked body");
    check_error("POST /v2/x/blobs/uploads/ HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 405,
                "UNSUPPORTED", "POST with body");
    check_error("GARBAGE\r\n\r\n", 400, "UNSUPPORTED", "malformed request line");
    check_error("GET /echo HTTP/1.1\r\nBad Header\r\n\r\n", 400, "UNSUPPORTED", "malformed header");

    /* a write method without a body goes to the handler (the router answers 405) */
    one_req = "DELETE /v2/x/manifests/y HTTP/1.1\r\nConnection: close\r\n\r\n";
    one_req_len = strlen(one_req);
    run_client(cl_one);
    is_int(r1.status, 405, "DELETE without body reaches the handler");
    is_str(last_method, "DELETE", "handler sees the method name");
    ok(r1.body && memmem(r1.body, r1.body_len, "read-only \\\"mirror\\\"", 20),
       "error message JSON-escaped");
    resp_free(&r1);
}

static void cl_timeout_head(void)
{
    struct cli c;
    const double t0 = now_ms();

    if (cli_connect(&c) < 0)
        return;
    c_ok[0] = cli_sends(&c, "GET /echo HTTP/1.1\r\nHost:") == 0 && cli_read_resp(&c, &r1, 0) == 0;
    c_ms = now_ms() - t0;
    c_ok[1] = cli_wait_eof(&c);
    cli_close(&c);
    /* nothing at all: closed without an answer */
    if (cli_connect(&c) < 0)
        return;
    c_ok[2] = cli_wait_eof(&c);
    cli_close(&c);
}

static void cl_timeout_idle(void)
{
    struct cli c;
    double t0;

    if (cli_connect(&c) < 0)
        return;
    c_ok[0] = cli_sends(&c, "GET /echo HTTP/1.1\r\n\r\n") == 0 && cli_read_resp(&c, &r1, 0) == 0;
    t0 = now_ms();
    c_ok[1] = cli_wait_eof(&c);
    c_ms = now_ms() - t0;
    cli_close(&c);
}

static void test_timeouts(void)
{
    cfg.header_timeout_ms = 200;
    run_client(cl_timeout_head);
    ok(c_ok[0], "slow head: a response");
    is_int(r1.status, 408, "slow head: 408");
    ok(c_ms >= 150 && c_ms < 3000, "slow head: after the header timeout (%.0f ms)", c_ms);
    ok(c_ok[1], "slow head: then closed");
    ok(c_ok[2], "silent connection closed");
    resp_free(&r1);
    cfg.header_timeout_ms = 10000;

    cfg.idle_timeout_ms = 200;
    run_client(cl_timeout_idle);
    ok(c_ok[0] && r1.status == 200, "idle: first request answered");
    ok(c_ok[1], "idle: connection closed");
    ok(c_ms >= 150 && c_ms < 3000, "idle: after the idle timeout (%.0f ms)", c_ms);
    resp_free(&r1);
    cfg.idle_timeout_ms = 10000;
}

static void cl_files(void)
{
    struct cli c;

    if (cli_connect(&c) < 0)
        return;
    c_ok[0] = cli_sends(&c, "GET /file HTTP/1.1\r\n\r\n") == 0 && cli_read_resp(&c, &r1, 0) == 0;
    c_ok[1] =
        cli_sends(&c, "GET /filepart HTTP/1.1\r\n\r\n") == 0 && cli_read_resp(&c, &r2, 0) == 0;
    c_ok[2] = cli_sends(&c, "HEAD /file HTTP/1.1\r\n\r\nGET /echo HTTP/1.1\r\n\r\n") == 0 &&
              cli_read_resp(&c, &r3, 1) == 0;
    if (c_ok[2]) {
        struct resp r;
        c_ok[3] = cli_read_resp(&c, &r, 0) == 0 && r.status == 200;
        resp_free(&r);
    }
    cli_close(&c);
}

static void test_files(int use_sendfile)
{
    char v[64];

    cfg.use_sendfile = use_sendfile;
    sf_status = 1;
    memset(c_ok, 0, sizeof(c_ok));
    run_client(cl_files);
    ok(c_ok[0] && r1.status == 200, "file (sendfile=%d): 200", use_sendfile);
    ok(r1.body_len == FILE_SIZE && memcmp(r1.body, file_data, FILE_SIZE) == 0,
       "file (sendfile=%d): exact bytes (%zu)", use_sendfile, r1.body_len);
    is_int(sf_status, 0, "file (sendfile=%d): cb status 0", use_sendfile);
    ok(c_ok[1] && r2.status == 206 && r2.body_len == 1000 &&
           memcmp(r2.body, file_data + 12345, 1000) == 0,
       "file range (sendfile=%d): exact bytes", use_sendfile);
    ok(c_ok[2] && r3.status == 200, "HEAD file (sendfile=%d): 200", use_sendfile);
    is_str(hdr_get(&r3, "Content-Length", v, sizeof(v)), "3145851",
           "HEAD file: Content-Length of the GET");
    ok(c_ok[3], "HEAD file: no body bytes (next response parses)");
    resp_free(&r1);
    resp_free(&r2);
    resp_free(&r3);
}

static void cl_chunked_abort(void)
{
    struct cli c;

    if (cli_connect(&c) < 0)
        return;
    c_ok[0] = cli_sends(&c, "GET /chunked HTTP/1.1\r\n\r\n") == 0 && cli_read_resp(&c, &r1, 0) == 0;
    c_ok[1] = cli_sends(&c, "GET /abort HTTP/1.1\r\n\r\n") == 0 && cli_read_resp(&c, &r2, 0) == 0;
    cli_close(&c);
}

static void test_chunked_abort(void)
{
    char v[64];
    int same;

    cfg.use_sendfile = 1;
    run_client(cl_chunked_abort);
    ok(c_ok[0] && r1.status == 200, "chunked: 200");
    is_str(hdr_get(&r1, "Transfer-Encoding", v, sizeof(v)), "chunked", "chunked: framing");
    same = r1.body_len == 19 + 100000 && memcmp(r1.body, "hello chunked world", 19) == 0 &&
           memcmp(r1.body + 19, file_data, 100000) == 0;
    ok(same, "chunked: decoded body (writes + file) exact (%zu)", r1.body_len);
    ok(c_ok[1] && r2.status == 200, "abort: head received");
    ok(r2.is_eof && r2.body_len == 10, "abort: truncated at 10 of 100 bytes (%zu)", r2.body_len);
    resp_free(&r1);
    resp_free(&r2);
}

static void cl_disconnect(void)
{
    struct cli c;
    char b[4096];

    if (cli_connect(&c) < 0)
        return;
    c_ok[0] = cli_sends(&c, "GET /big HTTP/1.1\r\n\r\n") == 0 && cli_fill(&c) > 0;
    c_ok[0] = c_ok[0] && recv(c.fd, b, sizeof(b), 0) > 0;
    cli_close(&c);
}

static void cl_stall(void)
{
    struct cli c;

    if (cli_connect(&c) < 0)
        return;
    c_ok[0] = cli_sends(&c, "GET /big HTTP/1.1\r\n\r\n") == 0;
    usleep(800 * 1000); /* read nothing: the server's sends stop making progress */
    cli_close(&c);
}

static void test_disconnect(void)
{
    int mode;

    for (mode = 1; mode >= 0; mode--) {
        const int before = n_closed;
        cfg.use_sendfile = mode;
        run_client(cl_disconnect);
        ok(c_ok[0], "disconnect (sendfile=%d): got the start of the body", mode);
        {
            int flag = 0;
            const double end = now_ms() + 3000;
            while (n_closed == before && now_ms() < end)
                run_until(&flag, 20);
        }
        is_int(n_closed - before, 1, "disconnect (sendfile=%d): on_close called once", mode);
    }
    {
        const int before = n_closed;
        cfg.send_timeout_ms = 200;
        cfg.use_sendfile = 1;
        run_client(cl_stall);
        is_int(n_closed - before, 1, "send timeout: stalled client closed, on_close once");
        cfg.send_timeout_ms = 10000;
    }
}

static void cl_maxconn(void)
{
    struct cli a, b;

    if (cli_connect(&a) < 0)
        return;
    c_ok[0] = cli_sends(&a, "GET /echo HTTP/1.1\r\n\r\n") == 0 && cli_read_resp(&a, &r1, 0) == 0;
    if (cli_connect(&b) == 0) {
        c_ok[1] = cli_wait_eof(&b);
        cli_close(&b);
    }
    c_ok[2] = cli_sends(&a, "GET /echo HTTP/1.1\r\n\r\n") == 0 && cli_read_resp(&a, &r2, 0) == 0;
    cli_close(&a);
}

static void cl_shutdown(void)
{
    struct cli idle, c;

    if (cli_connect(&idle) < 0)
        return;
    if (cli_sends(&idle, "GET /echo HTTP/1.1\r\n\r\n") < 0 || cli_read_resp(&idle, &r2, 0) < 0)
        return;
    if (cli_connect(&c) < 0)
        return;
    c_ok[0] = cli_sends(&c, "GET /delay HTTP/1.1\r\n\r\n") == 0 && cli_read_resp(&c, &r1, 0) == 0;
    c_ok[1] = cli_wait_eof(&idle);
    c_ok[2] = cli_wait_eof(&c);
    cli_close(&c);
    cli_close(&idle);
}

static int make_files(void)
{
    char path[256];
    size_t i;

    if (!mkdtemp(tmp_dir))
        return -1;
    snprintf(path, sizeof(path), "%s/file", tmp_dir);
    file_fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (file_fd < 0 || unlink(path) < 0)
        return -1;
    file_data = malloc(FILE_SIZE);
    for (i = 0; i < FILE_SIZE; i++)
        file_data[i] = (unsigned char)((i * 7 + i / 251) & 0xff);
    if (write(file_fd, file_data, FILE_SIZE) != FILE_SIZE)
        return -1;
    snprintf(path, sizeof(path), "%s/big", tmp_dir);
    big_fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (big_fd < 0 || unlink(path) < 0 || ftruncate(big_fd, BIG_SIZE) < 0)
        return -1;
    return rmdir(tmp_dir);
}

int main(void)
{
    char v[64];
    int err;

    signal(SIGPIPE, SIG_IGN); /* as main.c does: a peer gone is an EPIPE, not a signal */
    rgm_log_level_cur = getenv("RGM_TEST_VERBOSE") ? RGM_LOG_DEBUG : RGM_LOG_ERROR;
    memset(&cfg, 0, sizeof(cfg));
    cfg.max_connections = 64;
    cfg.max_header_bytes = 8192;
    cfg.max_headers = 50;
    cfg.max_url_len = 1024;
    cfg.header_timeout_ms = 10000;
    cfg.idle_timeout_ms = 10000;
    cfg.send_timeout_ms = 10000;
    cfg.shutdown_timeout_ms = 5000;
    cfg.use_sendfile = 1;
    cfg.access_log = 1;
    ok(make_files() == 0, "temp files");
    ok(uv_loop_init(loop) == 0, "loop");
    ok(uv_timer_init(loop, &delay_timer) == 0, "delay timer");
    srv = rgm_server_new(loop, &cfg, handler, NULL);
    ok(rgm_server_listen(srv, "127.0.0.1:0") == 0, "listen 127.0.0.1:0");
    port = rgm_server_port(srv, 0);
    ok(port > 0, "bound port %d", port);
    ok(rgm_server_listen(srv, "nonsense") < 0, "bad listen address refused");
    err = rgm_server_listen(srv, "[::1]:0");
    ok(err == 0 || err == UV_EADDRNOTAVAIL || err == UV_EAFNOSUPPORT, "listen [::1]:0 (%s)",
       err ? uv_err_name(err) : "ok");
    if (err == 0)
        ok(rgm_server_port(srv, 1) > 0, "IPv6 port");
    is_int(rgm_server_port(srv, 9), -1, "no 10th listener");

    run_client(cl_basic);
    ok(c_ok[0], "basic: response");
    is_int(r1.status, 200, "basic: 200");
    ok(r1.body_len == strlen(echo_want) && memcmp(r1.body, echo_want, r1.body_len) == 0,
       "basic: path, query, trimmed and empty headers");
    is_str(hdr_get(&r1, "X-Cache", v, sizeof(v)), "HIT", "basic: X-Cache");
    is_str(hdr_get(&r1, "Connection", v, sizeof(v)), "keep-alive", "basic: keep-alive");
    is_str(hdr_get(&r1, "X-Extra", v, sizeof(v)), "1", "basic: caller's headers");
    ok(hdr_get(&r1, "Date", v, sizeof(v)) && strstr(v, "GMT"), "basic: Date");
    is_str(hdr_get(&r1, "Content-Type", v, sizeof(v)), "text/plain", "basic: Content-Type");
    ok(c_ok[1] && r2.status == 200, "keep-alive: second request on the same connection");
    ok(strncmp(last_client, "127.0.0.1:", 10) == 0, "client address %s", last_client);
    resp_free(&r1);
    resp_free(&r2);

    run_client(cl_split);
    is_int(c_count, (int)sizeof(echo_req) - 2, "request split at every position %s", split_bad);
    run_client(cl_bytewise);
    ok(c_ok[0] && r1.body_len == strlen(echo_want) && memcmp(r1.body, echo_want, r1.body_len) == 0,
       "request one byte per write");
    resp_free(&r1);

    run_client(cl_pipeline);
    ok(c_ok[0], "pipelined: three responses");
    ok(r1.body_len > 0 && memmem(r1.body, r1.body_len, "q=n=1", 5), "pipelined: first in order");
    ok(r2.status == 200 && hdr_get(&r2, "Content-Length", v, sizeof(v)),
       "pipelined: HEAD second, Content-Length %s", v);
    ok(r3.body_len > 0 && memmem(r3.body, r3.body_len, "q=n=3", 5), "pipelined: third in order");
    resp_free(&r1);
    resp_free(&r2);
    resp_free(&r3);

    test_conn_memory();

    memset(c_ok, 0, sizeof(c_ok));
    run_client(cl_conn_close);
    ok(c_ok[0] && hdr_get(&r1, "Connection", v, sizeof(v)) && strcmp(v, "close") == 0,
       "Connection: close answered with close");
    ok(c_ok[1], "Connection: close: server closed");
    ok(c_ok[2] && hdr_get(&r2, "Connection", v, sizeof(v)) && strcmp(v, "close") == 0,
       "HTTP/1.0: close");
    ok(c_ok[3], "HTTP/1.0: server closed");
    ok(c_ok[4] && hdr_get(&r3, "Connection", v, sizeof(v)) && strcmp(v, "keep-alive") == 0,
       "HTTP/1.0 keep-alive kept");
    resp_free(&r1);
    resp_free(&r2);
    resp_free(&r3);

    test_limits();
    test_timeouts();
    test_files(1);
    test_files(0);
    test_chunked_abort();
    test_disconnect();

    {
        int flag = 0;
        run_until(&flag, 100); /* let earlier connections finish closing */
    }
    cfg.max_connections = (unsigned)rgm_server_conn_count(srv) + 1;
    memset(c_ok, 0, sizeof(c_ok));
    run_client(cl_maxconn);
    ok(c_ok[0] && c_ok[2], "max_connections: the first connection works");
    ok(c_ok[1], "max_connections: the one over is closed");
    resp_free(&r1);
    resp_free(&r2);
    cfg.max_connections = 64;

    shutdown_on_delay = 1;
    memset(c_ok, 0, sizeof(c_ok));
    {
        const int before = n_closed;
        run_client(cl_shutdown);
        ok(c_ok[0] && r1.status == 200 && r1.body_len == 7 && memcmp(r1.body, "delayed", 7) == 0,
           "shutdown: the request in flight finished");
        is_str(hdr_get(&r1, "Connection", v, sizeof(v)), "close", "shutdown: Connection: close");
        ok(c_ok[1], "shutdown: idle connection closed");
        ok(c_ok[2], "shutdown: busy connection closed after its response");
        run_until(&shutdown_done, 3000);
        ok(shutdown_done, "shutdown: done callback");
        is_int(n_closed - before, 0, "shutdown: finished request got no on_close");
        resp_free(&r1);
        resp_free(&r2);
    }
    rgm_server_free(srv);
    uv_close((uv_handle_t *)&delay_timer, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    is_int(uv_loop_close(loop), 0, "uv_loop_close() == 0");
    ok(n_handled > 70, "handler ran (%d)", n_handled);
    close(file_fd);
    close(big_fd);
    free(file_data);
    return tap_done();
}
