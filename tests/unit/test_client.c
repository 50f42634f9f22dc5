/* Upstream client against scripted python peers (tests/unit/client_peer.py) on 127.0.0.1:
 * bodies (length, chunked, close-delimited, truncated), keep-alive reuse and retry, limits per
 * origin, redirects and Authorization, timeouts, pause/resume, cancel, TLS verification. */
#include "http/client.h"

#include <errno.h>
#include <libgen.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <uv.h>

#include "core/log.h"
#include "tap.h"

#define MAX_PEERS 8

struct peer {
    pid_t pid;
    int port;
};

static struct peer peers[MAX_PEERS];
static int n_peers;
static char script[4096];
static char tmpdir[256];
static uv_loop_t *loop;
static uv_timer_t resume_timer;

struct res {
    int is_done;
    int err;
    int status;
    char body[8192];
    size_t body_len; /* bytes kept in body */
    size_t total;    /* bytes received */
    EVP_MD_CTX *md;
    char sha[65];
    char hdr_sha[65];
    char client_port[16];
    char location[256];
    char url[512];
    int64_t clen;
    int pause_every;
    int n_body;
    int n_pauses;
    int is_paused_now;
    rgm_upreq_t *r;
};

/* ---- peers ---- */

static int find_script(const char *argv0)
{
    const char *src = getenv("RGM_SRCDIR");
    char self[4096];
    ssize_t n;

    if (src) {
        snprintf(script, sizeof(script), "%s/tests/unit/client_peer.py", src);
        if (access(script, R_OK) == 0)
            return 0;
    }
    n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n > 0) {
        self[n] = '\0';
        snprintf(script, sizeof(script), "%s/client_peer.py", dirname(self));
        if (access(script, R_OK) == 0)
            return 0;
    }
    snprintf(self, sizeof(self), "%s", argv0);
    snprintf(script, sizeof(script), "%s/client_peer.py", dirname(self));
    return access(script, R_OK) == 0 ? 0 : -1;
}

static int peer_start(const char *cert, const char *key)
{
    int fds[2];
    char line[64];
    size_t got = 0;
    struct pollfd pfd;
    pid_t pid;

    if (n_peers >= MAX_PEERS || pipe(fds) < 0)
        return -1;
    pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
        (void)dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        if (cert)
            execlp("python3", "python3", script, "serve", cert, key, (char *)NULL);
        else
            execlp("python3", "python3", script, "serve", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    peers[n_peers].pid = pid;
    peers[n_peers].port = -1;
    pfd.fd = fds[0];
    pfd.events = POLLIN;
    while (got < sizeof(line) - 1 && poll(&pfd, 1, 10000) == 1) {
        ssize_t n = read(fds[0], line + got, 1);

        if (n <= 0)
            break;
        got++;
        if (line[got - 1] == '\n')
            break;
    }
    line[got] = '\0';
    close(fds[0]);
    if (sscanf(line, "PORT %d", &peers[n_peers].port) != 1)
        peers[n_peers].port = -1;
    return peers[n_peers++].port;
}

static void peers_stop(void)
{
    int i;

    for (i = 0; i < n_peers; i++) {
        kill(peers[i].pid, SIGKILL);
        (void)waitpid(peers[i].pid, NULL, 0);
    }
    n_peers = 0;
}

static int run_cmd(const char *const argv[])
{
    int st = 0;
    pid_t pid = fork();

    if (pid < 0)
        return -1;
    if (pid == 0) {
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    if (waitpid(pid, &st, 0) < 0)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ---- request helpers ---- */

static void on_resume_timer(uv_timer_t *t)
{
    struct res *res = t->data;

    res->is_paused_now = 0;
    rgm_upreq_resume(res->r);
}

static void copy_hdr(rgm_upreq_t *r, const char *name, char *out, size_t len)
{
    const char *v = rgm_upreq_header(r, name);

    snprintf(out, len, "%s", v ? v : "");
}

static int on_head(rgm_upreq_t *r, int status, void *ud)
{
    struct res *res = ud;

    res->status = status;
    res->clen = rgm_upreq_content_length(r);
    copy_hdr(r, "X-Sha256", res->hdr_sha, sizeof(res->hdr_sha));
    copy_hdr(r, "X-Client-Port", res->client_port, sizeof(res->client_port));
    copy_hdr(r, "Location", res->location, sizeof(res->location));
    snprintf(res->url, sizeof(res->url), "%s", rgm_upreq_url(r));
    return 0;
}

static int on_body(rgm_upreq_t *r, const char *data, size_t len, void *ud)
{
    struct res *res = ud;
    size_t keep = sizeof(res->body) - 1 - res->body_len;

    if (res->is_paused_now)
        res->err = 999; /* body delivered while paused: a bug */
    if (keep > len)
        keep = len;
    memcpy(res->body + res->body_len, data, keep);
    res->body_len += keep;
    res->body[res->body_len] = '\0';
    res->total += len;
    (void)EVP_DigestUpdate(res->md, data, len);
    res->n_body++;
    if (res->pause_every && res->n_body % res->pause_every == 0) {
        rgm_upreq_pause(r);
        rgm_upreq_pause(r); /* idempotent */
        res->is_paused_now = 1;
        res->n_pauses++;
        resume_timer.data = res;
        (void)uv_timer_start(&resume_timer, on_resume_timer, 1, 0);
    }
    return 0;
}

static void on_done(rgm_upreq_t *r, int err, void *ud)
{
    struct res *res = ud;
    unsigned char dig[32];
    unsigned dlen = 0;
    unsigned i;

    (void)r;
    if (res->err != 999)
        res->err = err;
    (void)EVP_DigestFinal_ex(res->md, dig, &dlen);
    for (i = 0; i < dlen && i < 32; i++)
        snprintf(res->sha + 2 * i, 3, "%02x", dig[i]);
    EVP_MD_CTX_free(res->md);
    res->md = NULL;
    res->r = NULL;
    res->is_done = 1;
}

static const rgm_upreq_cbs_t cbs = {on_head, on_body, on_done};

static void res_init(struct res *res)
{
    memset(res, 0, sizeof(*res));
    res->err = 12345;
    res->clen = -2;
    res->md = EVP_MD_CTX_new();
    (void)EVP_DigestInit_ex(res->md, EVP_sha256(), NULL);
}

/* Start a request; auth may be NULL. Returns the start result. */
static int start(rgm_client_t *c, struct res *res, const char *method, const char *url,
                 const rgm_tls_opts_t *tls, const char *auth, int max_redirects)
{
    rgm_upreq_t *r;
    int rc;

    res_init(res);
    r = rgm_upreq_new(c, method, url, tls);
    if (!r) {
        res->is_done = 1;
        EVP_MD_CTX_free(res->md);
        res->md = NULL;
        return UV_EINVAL;
    }
    if (auth)
        rgm_upreq_add_header(r, "Authorization", auth);
    if (max_redirects >= 0)
        rgm_upreq_set_max_redirects(r, (unsigned)max_redirects);
    res->r = r;
    rc = rgm_upreq_start(r, &cbs, res);
    if (rc < 0) {
        res->is_done = 1;
        EVP_MD_CTX_free(res->md);
        res->md = NULL;
    }
    return rc;
}

static void wait_all(struct res *res, int n)
{
    int i, all;

    do {
        all = 1;
        for (i = 0; i < n; i++)
            all = all && res[i].is_done;
        if (!all)
            uv_run(loop, UV_RUN_ONCE);
    } while (!all);
}

static void fetch(rgm_client_t *c, struct res *res, const char *method, const char *url,
                  const rgm_tls_opts_t *tls, const char *auth)
{
    if (start(c, res, method, url, tls, auth, -1) == 0)
        wait_all(res, 1);
}

/* method url with a body (rgm_upreq_set_body), to the end. A Content-Length header added by
 * the caller must be ignored: one is added (bogus) first. */
static void send_body(rgm_client_t *c, struct res *res, const char *method, const char *url,
                      const rgm_tls_opts_t *tls, const char *ctype, const void *data, size_t len)
{
    rgm_upreq_t *r;
    int rc;

    res_init(res);
    r = rgm_upreq_new(c, method, url, tls);
    if (!r) {
        res->is_done = 1;
        EVP_MD_CTX_free(res->md);
        res->md = NULL;
        return;
    }
    rgm_upreq_add_header(r, "Content-Length", "99999");
    rgm_upreq_set_body(r, "text/old", "replaced", 8);
    rgm_upreq_set_body(r, ctype, data, len);
    res->r = r;
    rc = rgm_upreq_start(r, &cbs, res);
    if (rc < 0) {
        res->is_done = 1;
        res->err = rc;
        EVP_MD_CTX_free(res->md);
        res->md = NULL;
        return;
    }
    wait_all(res, 1);
}

static void sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char dig[32];
    unsigned dlen = 0;
    unsigned i;

    out[0] = '\0';
    if (EVP_Digest(data, len, dig, &dlen, EVP_sha256(), NULL) != 1)
        return;
    for (i = 0; i < dlen && i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", dig[i]);
}

static void fetch_paused(rgm_client_t *c, struct res *res, const char *url,
                         const rgm_tls_opts_t *tls, int every)
{
    if (start(c, res, "GET", url, tls, NULL, -1) == 0) {
        res->pause_every = every;
        wait_all(res, 1);
    }
}

static int closed_port(void)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int port = -1;

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* ---- tests ---- */

static void test_bodies(rgm_client_t *c, int pa)
{
    char url[512];
    struct res res, res2;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/cl?size=100000", pa);
    fetch(c, &res, "GET", url, NULL, NULL);
    is_int(res.err, 0, "content-length body: done");
    is_int(res.status, 200, "content-length body: status");
    is_int(res.total, 100000, "content-length body: size");
    is_int(res.clen, 100000, "content-length body: rgm_upreq_content_length");
    is_str(res.sha, res.hdr_sha, "content-length body: hash");

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/cl?size=10", pa);
    fetch(c, &res, "GET", url, NULL, NULL);
    fetch(c, &res2, "GET", url, NULL, NULL);
    ok(res.err == 0 && res2.err == 0 && res.client_port[0], "keep-alive: both done");
    is_str(res2.client_port, res.client_port, "keep-alive: one TCP connection for two requests");

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/chunked?size=50000&chunk=777", pa);
    fetch(c, &res, "GET", url, NULL, NULL);
    is_int(res.err, 0, "chunked: done");
    is_int(res.total, 50000, "chunked: size");
    is_int(res.clen, -1, "chunked: length unknown");
    is_str(res.sha, res.hdr_sha, "chunked: hash");

    {
        /* The longest path a URL may carry (2,047 bytes) goes out whole; a longer one is
         * refused when the request is made, never cut. */
        char long_url[3100];
        int n = snprintf(long_url, sizeof(long_url), "http://127.0.0.1:%d/cl?size=10&pad=", pa);
        int pad = 2047 - (int)strlen("/cl?size=10&pad=");

        memset(long_url + n, 'a', (size_t)pad);
        long_url[n + pad] = '\0';
        fetch(c, &res, "GET", long_url, NULL, NULL);
        is_int(res.err, 0, "2,047-byte path: done");
        is_int(res.status, 200, "2,047-byte path: the peer parsed it whole");
        is_int(res.total, 10, "2,047-byte path: body");
        long_url[n + pad] = 'a';
        long_url[n + pad + 1] = '\0';
        ok(rgm_upreq_new(c, "GET", long_url, NULL) == NULL, "2,048-byte path: refused");
    }

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/close?size=30000", pa);
    fetch(c, &res, "GET", url, NULL, NULL);
    is_int(res.err, 0, "close-delimited: done");
    is_int(res.total, 30000, "close-delimited: size");
    is_str(res.sha, res.hdr_sha, "close-delimited: hash");

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/cl?size=12345", pa);
    fetch(c, &res, "HEAD", url, NULL, NULL);
    is_int(res.err, 0, "HEAD: done");
    is_int(res.clen, 12345, "HEAD: Content-Length reported");
    is_int(res.total, 0, "HEAD: no body");
    fetch(c, &res2, "GET", url, NULL, NULL);
    is_int(res2.total, 12345, "GET after HEAD: full body");
    is_str(res2.client_port, res.client_port, "GET after HEAD: same connection");

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/404", pa);
    fetch(c, &res, "GET", url, NULL, NULL);
    is_int(res.err, 0, "404: done");
    is_int(res.status, 404, "404: status");
    is_str(res.body, "not here", "404: body delivered");

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/trunc", pa);
    fetch(c, &res, "GET", url, NULL, NULL);
    is_int(res.err, UV_EOF, "truncated body: UV_EOF");
    is_int(res.total, 500, "truncated body: the bytes that came were delivered");

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/many-headers?n=100", pa);
    fetch(c, &res, "GET", url, NULL, NULL);
    is_int(res.err, UV_EPROTO, "more than 64 response headers: UV_EPROTO");
    is_int(res.status, 0, "more than 64 response headers: no on_head");

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/interim", pa);
    fetch(c, &res, "GET", url, NULL, NULL);
    is_int(res.status, 200, "100 Continue skipped: final status");
    is_str(res.body, "after interim", "100 Continue skipped: body");

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/echo-headers", pa);
    fetch(c, &res, "GET", url, NULL, NULL);
    ok(strstr(res.body, "User-Agent: regmirror/0.1") != NULL, "request has User-Agent");
    ok(strstr(res.body, "Accept-Encoding: identity") != NULL, "request has Accept-Encoding");
    ok(strstr(res.body, "Connection: keep-alive") != NULL, "request has Connection");
    snprintf(url, sizeof(url), "Host: 127.0.0.1:%d", pa);
    ok(strstr(res.body, url) != NULL, "request has Host with port");
}

static void test_redirects(rgm_client_t *c, int pa, int pb)
{
    char url[1024], inner[512];
    struct res res;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/redir?to=http://127.0.0.1:%d/echo-auth", pa,
             pb);
    fetch(c, &res, "GET", url, NULL, "Bearer s3cret");
    is_int(res.err, 0, "redirect to other origin: done");
    is_int(res.status, 200, "redirect to other origin: final status only");
    is_str(res.body, "auth=none", "redirect to other origin: Authorization dropped");
    snprintf(inner, sizeof(inner), "http://127.0.0.1:%d/echo-auth", pb);
    is_str(res.url, inner, "redirect to other origin: rgm_upreq_url is the final URL");

    /* A -> B -> A: Authorization stays dropped. */
    snprintf(url, sizeof(url),
             "http://127.0.0.1:%d/redir?code=302&to=http://127.0.0.1:%d/redir%%3Fto"
             "%%3Dhttp://127.0.0.1:%d/echo-auth",
             pa, pb, pa);
    fetch(c, &res, "GET", url, NULL, "Bearer s3cret");
    is_int(res.err, 0, "redirect A->B->A: done");
    is_str(res.body, "auth=none", "redirect A->B->A: Authorization not restored");

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/redir?to=/echo-auth", pa);
    fetch(c, &res, "GET", url, NULL, "Bearer s3cret");
    is_str(res.body, "auth=Bearer s3cret", "redirect same origin: Authorization kept");

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/redir?code=308&to=echo-auth", pa);
    fetch(c, &res, "GET", url, NULL, "Bearer s3cret");
    is_str(res.body, "auth=Bearer s3cret", "relative redirect: resolved, Authorization kept");

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/loop", pa);
    fetch(c, &res, "GET", url, NULL, NULL);
    is_int(res.err, UV_ELOOP, "redirect loop: UV_ELOOP");
    is_int(res.status, 0, "redirect loop: no on_head");

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/redir?to=/echo-auth", pa);
    if (start(c, &res, "GET", url, NULL, NULL, 0) == 0)
        wait_all(&res, 1);
    is_int(res.status, 307, "max_redirects 0: the redirect is the answer");
    is_str(res.location, "/echo-auth", "max_redirects 0: Location readable");

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/redir?code=303&to=/method", pa);
    fetch(c, &res, "POST", url, NULL, NULL);
    is_str(res.body, "GET", "303: followed with GET");
}

static void test_request_bodies(rgm_client_t *c, int pa, int pb)
{
    static const char form[] = "grant_type=refresh_token&refresh_token=rt%2Bs3cret&client_id=x";
    static const char ctype[] = "application/x-www-form-urlencoded";
    char url[1024], want[512], sha[65];
    struct res res, res2;
    unsigned char *big;
    size_t i, big_len = 300000;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/echo-body", pa);
    send_body(c, &res, "POST", url, NULL, ctype, form, strlen(form));
    snprintf(want, sizeof(want), "method=POST type=%s length=%zu te=none\n%s", ctype, strlen(form),
             form);
    is_int(res.err, 0, "POST with a body: done");
    is_str(res.body, want, "POST with a body: the peer got method, type, one Content-Length, body");

    send_body(c, &res, "POST", url, NULL, "text/plain", "", 0);
    is_str(res.body, "method=POST type=text/plain length=0 te=none\n",
           "empty body: Content-Length: 0");

    big = rgm_malloc(big_len);
    for (i = 0; i < big_len; i++)
        big[i] = (unsigned char)(i % 251); /* NUL bytes included */
    sha256_hex(big, big_len, sha);
    send_body(c, &res, "PUT", url, NULL, "application/octet-stream", big, big_len);
    is_int(res.err, 0, "300 kB binary body: done");
    is_str(res.hdr_sha, sha, "300 kB binary body: the peer got every byte");

    /* A reused connection that dies before answering: the retry sends the body again. */
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/die-next", pa);
    fetch(c, &res2, "GET", url, NULL, NULL);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/echo-body", pa);
    send_body(c, &res, "POST", url, NULL, ctype, form, strlen(form));
    is_int(res.err, 0, "dead reused connection under a POST: retried");
    snprintf(want, sizeof(want), "method=POST type=%s length=%zu te=none\n%s", ctype, strlen(form),
             form);
    is_str(res.body, want, "dead reused connection under a POST: the retry resent the body");
    ok(res2.client_port[0] && strcmp(res.client_port, res2.client_port) != 0,
       "dead reused connection under a POST: on a new connection");

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/redir?code=307&to=/echo-body", pa);
    send_body(c, &res, "POST", url, NULL, ctype, form, strlen(form));
    is_str(res.body, want, "307 to the same origin: method and body resent");
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/redir?code=308&to=/echo-body", pa);
    send_body(c, &res, "PUT", url, NULL, "application/octet-stream", big, big_len);
    is_str(res.hdr_sha, sha, "308 to the same origin: the 300 kB body resent");
    free(big);

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/redir?code=303&to=/echo-body", pa);
    send_body(c, &res, "POST", url, NULL, ctype, form, strlen(form));
    is_str(res.body, "method=GET type=none length=none te=none\n",
           "303: followed with a GET, no body, no Content-Type");
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/redir?code=302&to=/echo-body", pa);
    send_body(c, &res, "POST", url, NULL, ctype, form, strlen(form));
    is_str(res.body, "method=GET type=none length=none te=none\n",
           "302 of a POST: followed with a GET, no body");

    snprintf(url, sizeof(url),
             "http://127.0.0.1:%d/redir?code=307&to=http://127.0.0.1:%d/echo-body", pa, pb);
    send_body(c, &res, "POST", url, NULL, ctype, form, strlen(form));
    is_int(res.err, UV_EPERM, "307 to another origin with a body: UV_EPERM, the body stays");
    is_int(res.status, 0, "307 to another origin with a body: no on_head");
    snprintf(url, sizeof(url),
             "http://127.0.0.1:%d/redir?code=303&to=http://127.0.0.1:%d/echo-body", pa, pb);
    send_body(c, &res, "POST", url, NULL, ctype, form, strlen(form));
    is_str(res.body, "method=GET type=none length=none te=none\n",
           "303 to another origin: followed as a GET without the body");

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/echo-body", pa);
    send_body(c, &res, "POST", url, NULL, "text/plain\r\nX-Injected: 1", "x", 1);
    is_int(res.err, UV_EINVAL, "CR/LF in the body's Content-Type: refused at start");

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/echo-body", pa);
    fetch(c, &res, "GET", url, NULL, NULL);
    is_str(res.body, "method=GET type=none length=none te=none\n",
           "a request without a body has no Content-Length");
}

static void test_pause(rgm_client_t *c, int pa)
{
    char url[512];
    struct res res;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/cl?size=8388608", pa);
    fetch_paused(c, &res, url, NULL, 3);
    is_int(res.err, 0, "8 MiB paused/resumed: done, nothing delivered while paused");
    is_int(res.total, 8388608, "8 MiB paused/resumed: size");
    is_str(res.sha, res.hdr_sha, "8 MiB paused/resumed: hash");
    /* 8 MiB in reads of up to 256 KiB (RGM_POOL_RBUF_SIZE), a pause every 3rd callback */
    ok(res.n_pauses > 5, "8 MiB paused/resumed: paused %d times", res.n_pauses);

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/chunked?size=1000000&chunk=4096", pa);
    fetch_paused(c, &res, url, NULL, 1);
    is_int(res.err, 0, "chunked paused after every callback: done");
    is_str(res.sha, res.hdr_sha, "chunked paused after every callback: hash");
}

static void test_retry_and_errors(rgm_client_t *c, rgm_client_t *shortc, int pa)
{
    char url[512];
    struct res res, res2;
    uint64_t t0;
    int port;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/die-next", pa);
    fetch(c, &res, "GET", url, NULL, NULL);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/cl?size=10", pa);
    fetch(c, &res2, "GET", url, NULL, NULL);
    is_int(res2.err, 0, "dead reused connection: retried");
    is_int(res2.status, 200, "dead reused connection: answer from the retry");
    ok(res.client_port[0] && strcmp(res.client_port, res2.client_port) != 0,
       "dead reused connection: retried on a new connection");

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/stall?s=3", pa);
    t0 = uv_now(loop);
    fetch(shortc, &res, "GET", url, NULL, NULL);
    is_int(res.err, UV_ETIMEDOUT, "stall: read timeout");
    ok(uv_now(loop) - t0 < 2000, "stall: timed out after %llu ms",
       (unsigned long long)(uv_now(loop) - t0));

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/stall?s=2", pa);
    if (start(c, &res, "GET", url, NULL, NULL, -1) == 0) {
        rgm_upreq_cancel(res.r);
        rgm_upreq_cancel(res.r);
        ok(!res.is_done, "cancel: on_done not run from inside cancel");
        wait_all(&res, 1);
    }
    is_int(res.err, UV_ECANCELED, "cancel right after start: UV_ECANCELED");

    port = closed_port();
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", port);
    fetch(c, &res, "GET", url, NULL, NULL);
    is_int(res.err, UV_ECONNREFUSED, "closed port: UV_ECONNREFUSED");

    snprintf(url, sizeof(url), "http://localhost:%d/cl?size=10", pa);
    fetch(c, &res, "GET", url, NULL, NULL);
    is_int(res.status, 200, "localhost: resolved, addresses tried in order");

    ok(rgm_upreq_new(c, "GET", "ftp://x/", NULL) == NULL, "bad URL: NULL");
    res_init(&res);
    res.r = rgm_upreq_new(c, "GET", url, NULL);
    rgm_upreq_add_header(res.r, "X-Evil", "a\r\nInjected: 1");
    is_int(rgm_upreq_start(res.r, &cbs, &res), UV_EINVAL, "CR/LF in a header: refused");
    EVP_MD_CTX_free(res.md);
    res_init(&res);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/a b", pa);
    res.r = rgm_upreq_new(c, "GET", url, NULL);
    ok(!res.r || rgm_upreq_start(res.r, &cbs, &res) == UV_EINVAL, "space in the URL: refused");
    EVP_MD_CTX_free(res.md);
}

static void test_concurrency(void)
{
    rgm_client_opts_t o = {.max_conns_per_origin = 4};
    rgm_client_t *c = rgm_client_new(loop, &o);
    static struct res res[20];
    struct res st;
    char url[512];
    int port = peer_start(NULL, NULL);
    int i, all_ok = 1, conns = -1, max_active = -1;

    for (i = 0; i < 20; i++) {
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/slow?ms=100", port);
        if (start(c, &res[i], "GET", url, NULL, NULL, -1) < 0)
            all_ok = 0;
    }
    wait_all(res, 20);
    for (i = 0; i < 20; i++)
        all_ok = all_ok && res[i].err == 0 && res[i].status == 200;
    ok(all_ok, "20 concurrent requests with max 4 connections: all done");
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/stats", port);
    fetch(c, &st, "GET", url, NULL, NULL);
    if (sscanf(st.body, "conns=%d max_active=%d", &conns, &max_active) != 2)
        conns = -1;
    ok(conns >= 1 && conns <= 4, "at most 4 TCP connections (%d)", conns);
    ok(max_active >= 2 && max_active <= 4, "at most 4 requests in flight (%d)", max_active);
    rgm_client_close(c, NULL, NULL);
}

static void test_cancel_midway(rgm_client_t *c, int pa)
{
    char url[512];
    struct res res;
    uint64_t t0;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/stall?s=2", pa);
    if (start(c, &res, "GET", url, NULL, NULL, -1) == 0) {
        t0 = uv_now(loop);
        while (!res.is_done && uv_now(loop) - t0 < 100)
            uv_run(loop, UV_RUN_NOWAIT);
        rgm_upreq_cancel(res.r);
        wait_all(&res, 1);
    }
    is_int(res.err, UV_ECANCELED, "cancel while waiting for the answer: UV_ECANCELED");
}

static void test_tls(rgm_client_t *c)
{
    char cert[512], key[512], ca[512], ocert[512], okey[512], url[512];
    const char *mk[] = {"python3", script, "mkcerts", tmpdir, NULL};
    rgm_tls_opts_t with_ca = {0}, sys_ca = {0};
    rgm_tls_opts_t insecure = {.insecure_skip_verify = 1};
    struct res res, res2;
    int pt, pw;

    if (run_cmd(mk) != 0) {
        ok(0, "openssl certificates generated");
        return;
    }
    snprintf(ca, sizeof(ca), "%s/ca.pem", tmpdir);
    snprintf(cert, sizeof(cert), "%s/srv.pem", tmpdir);
    snprintf(key, sizeof(key), "%s/srv.key", tmpdir);
    snprintf(ocert, sizeof(ocert), "%s/other.pem", tmpdir);
    snprintf(okey, sizeof(okey), "%s/other.key", tmpdir);
    with_ca.ca_file = ca;
    with_ca.insecure_skip_verify = 0;
    pt = peer_start(cert, key);
    pw = peer_start(ocert, okey);
    ok(pt > 0 && pw > 0, "TLS peers started");

    snprintf(url, sizeof(url), "https://127.0.0.1:%d/cl?size=200000", pt);
    fetch(c, &res, "GET", url, &with_ca, NULL);
    is_int(res.err, 0, "TLS with ca_file: done");
    is_str(res.sha, res.hdr_sha, "TLS with ca_file: hash");
    fetch(c, &res2, "GET", url, &with_ca, NULL);
    is_str(res2.client_port, res.client_port, "TLS keep-alive: same connection");

    snprintf(url, sizeof(url), "https://localhost:%d/cl?size=100", pt);
    fetch(c, &res, "GET", url, &with_ca, NULL);
    is_int(res.err, 0, "TLS by host name (SNI, DNS SAN): done");

    snprintf(url, sizeof(url), "https://127.0.0.1:%d/cl?size=2000000", pt);
    fetch_paused(c, &res, url, &with_ca, 2);
    is_int(res.err, 0, "TLS paused/resumed: done");
    is_str(res.sha, res.hdr_sha, "TLS paused/resumed: hash");

    snprintf(url, sizeof(url), "https://127.0.0.1:%d/echo-body", pt);
    send_body(c, &res, "POST", url, &with_ca, "text/plain", "over TLS", 8);
    is_str(res.body, "method=POST type=text/plain length=8 te=none\nover TLS",
           "TLS POST with a body: the peer got it");

    snprintf(url, sizeof(url), "https://127.0.0.1:%d/cl?size=10", pt);
    fetch(c, &res, "GET", url, &sys_ca, NULL);
    is_int(res.err, UV_EPROTO, "TLS with system CAs only: UV_EPROTO");
    fetch(c, &res, "GET", url, &insecure, NULL);
    is_int(res.err, 0, "TLS insecure_skip_verify: done");
    is_int(res.status, 200, "TLS insecure_skip_verify: status");

    snprintf(url, sizeof(url), "https://127.0.0.1:%d/cl?size=10", pw);
    fetch(c, &res, "GET", url, &with_ca, NULL);
    is_int(res.err, UV_EPROTO, "TLS certificate for another name: UV_EPROTO");

    snprintf(url, sizeof(url), "https://127.0.0.1:%d/cl?size=10", pt);
    with_ca.ca_file = "/nonexistent/ca.pem";
    fetch(c, &res, "GET", url, &with_ca, NULL);
    ok(res.err < 0, "TLS with unreadable ca_file: error %d", res.err);
}

static void on_closed(void *ud)
{
    (*(int *)ud)++;
}

static int check_log(const char *path)
{
    char buf[65536];
    FILE *f = fopen(path, "r");
    size_t n;

    if (!f)
        return -1;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    ok(strstr(buf, "mod=tls") != NULL && strstr(buf, "verif") != NULL,
       "TLS verification failure logged at WARN with the reason");
    ok(strstr(buf, "s3cret") == NULL, "Authorization value never logged");
    return 0;
}

int main(int argc, char **argv)
{
    rgm_client_opts_t so = {.read_timeout_ms = 300};
    rgm_client_t *c, *shortc;
    char logpath[300];
    const char *rm[] = {"rm", "-rf", tmpdir, NULL};
    int pa, pb, closed = 0;

    (void)argc;
    alarm(240);
    signal(SIGPIPE, SIG_IGN);
    if (find_script(argv[0]) < 0) {
        printf("1..0 # SKIP client_peer.py not found\n");
        return 0;
    }
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/rgm-client-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        printf("1..0 # SKIP no temp dir\n");
        return 0;
    }
    snprintf(logpath, sizeof(logpath), "%s/log", tmpdir);
    if (rgm_log_open(logpath, RGM_LOG_DEBUG) < 0)
        ok(0, "log opened");
    loop = uv_default_loop();
    (void)uv_timer_init(loop, &resume_timer);
    pa = peer_start(NULL, NULL);
    pb = peer_start(NULL, NULL);
    ok(pa > 0 && pb > 0, "peers started (%d, %d)", pa, pb);
    if (pa > 0 && pb > 0) {
        c = rgm_client_new(loop, NULL);
        shortc = rgm_client_new(loop, &so);
        test_bodies(c, pa);
        test_redirects(c, pa, pb);
        test_request_bodies(c, pa, pb);
        test_pause(c, pa);
        test_retry_and_errors(c, shortc, pa);
        test_cancel_midway(c, pa);
        test_concurrency();
        test_tls(c);
        rgm_client_close(c, on_closed, &closed);
        rgm_client_close(shortc, on_closed, &closed);
        is_int(closed, 0, "client close callback not run synchronously");
    }
    uv_close((uv_handle_t *)&resume_timer, NULL);
    (void)uv_run(loop, UV_RUN_DEFAULT);
    if (pa > 0 && pb > 0)
        is_int(closed, 2, "both clients closed");
    is_int(uv_loop_close(loop), 0, "loop closed cleanly");
    check_log(logpath);
    rgm_log_close();
    peers_stop();
    (void)run_cmd(rm);
    return tap_done();
}
