/* The command-line side of the admin socket: its path, and one HTTP/1.1 request with
 * Connection: close, read to EOF. Blocking socket calls with a receive timeout; the answer
 * is bounded. */
#include "cmd/adminsock.h"

#include <errno.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <uv.h>

#define ANSWER_MAX (256u * 1024 * 1024)
#define TIMEOUT_S  120

int rgm_adminsock_path(const rgm_config_t *cfg, char *buf, size_t len)
{
    struct sockaddr_un sun;
    int n;

    if (cfg->admin_socket)
        n = snprintf(buf, len, "%s", cfg->admin_socket);
    else
        n = snprintf(buf, len, "%s/admin.sock", cfg->storage);
    if (n < 0 || (size_t)n >= len || (size_t)n >= sizeof(sun.sun_path))
        return UV_ENAMETOOLONG;
    return 0;
}

static int write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        const ssize_t n = write(fd, p, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : UV_EPIPE;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Everything until EOF into *buf (the caller's). 0 or <0. */
static int read_all(int fd, char **buf, size_t *len)
{
    size_t cap = 16 * 1024;

    *buf = rgm_malloc(cap + 1);
    *len = 0;
    for (;;) {
        ssize_t n;

        if (*len == cap) {
            if (cap >= ANSWER_MAX)
                return UV_E2BIG;
            cap *= 2;
            *buf = rgm_realloc(*buf, cap + 1);
        }
        n = read(fd, *buf + *len, cap - *len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno == EAGAIN ? UV_ETIMEDOUT : -errno;
        if (n == 0)
            break;
        *len += (size_t)n;
    }
    (*buf)[*len] = '\0';
    return 0;
}

static int connect_to(const char *path, int *fd_out)
{
    struct sockaddr_un sun;
    struct timeval tv = {TIMEOUT_S, 0};
    int fd;

    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sun.sun_path))
        return UV_ENAMETOOLONG;
    memcpy(sun.sun_path, path, strlen(path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0 ||
        connect(fd, (const struct sockaddr *)&sun, sizeof(sun)) < 0) {
        const int err = -errno;

        close(fd);
        return err;
    }
    *fd_out = fd;
    return 0;
}

/* The status and JSON body of a complete answer in buf. 0 or UV_EPROTO. */
static int parse_answer(const char *buf, size_t len, int *status, json_t **out)
{
    const char *body = strstr(buf, "\r\n\r\n");
    int st = 0;

    if (!body || len < 12 || strncmp(buf, "HTTP/1.1 ", 9) != 0)
        return UV_EPROTO;
    if (sscanf(buf + 9, "%3d", &st) != 1 || st < 100)
        return UV_EPROTO;
    body += 4;
    *status = st;
    *out = json_loadb(body, len - (size_t)(body - buf), 0, NULL);
    return 0;
}

int rgm_adminsock_call(const char *path, const char *method, const char *target, const json_t *body,
                       int *status, json_t **out, char *msg, size_t msglen)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    const size_t text_len = text ? strlen(text) : 0;
    char head[1024];
    char *ans = NULL;
    size_t ans_len = 0;
    int fd = -1;
    int n;
    int err;

    *out = NULL;
    *status = 0;
    n = snprintf(head, sizeof(head),
                 "%s %s HTTP/1.1\r\nHost: regmirror\r\nConnection: close\r\n"
                 "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                 method, target, text_len);
    if (n < 0 || (size_t)n >= sizeof(head)) {
        err = UV_EINVAL;
        snprintf(msg, msglen, "request target too long");
        goto out;
    }
    err = connect_to(path, &fd);
    if (err < 0) {
        snprintf(msg, msglen, "cannot reach the admin socket %s: %s", path, uv_strerror(err));
        goto out;
    }
    err = write_all(fd, head, (size_t)n);
    if (err == 0 && text_len > 0)
        err = write_all(fd, text, text_len);
    if (err == 0)
        err = read_all(fd, &ans, &ans_len);
    if (err == 0 && ans_len == 0)
        err = UV_ECONNRESET;
    if (err == UV_ECONNRESET || err == UV_EPIPE) {
        snprintf(msg, msglen,
                 "the admin socket %s closed the connection (it serves only the server's own "
                 "user and root)",
                 path);
        goto out;
    }
    if (err == 0)
        err = parse_answer(ans, ans_len, status, out);
    if (err < 0)
        snprintf(msg, msglen, "admin socket %s: %s", path, uv_strerror(err));
out:
    if (fd >= 0)
        close(fd);
    free(ans);
    free(text);
    return err;
}
