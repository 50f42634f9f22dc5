/* Leveled logfmt logging to stderr or an append-only file. Each line is formatted into a stack
 * buffer and written with a single write(2), so lines never interleave. No buffering in
 * memory, no threads; the file is reopened on request (SIGHUP after rotation). */
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 8192
#define LOG_MSG_MAX  4096

int rgm_log_level_cur = RGM_LOG_INFO;

static int log_fd = STDERR_FILENO;
static char *log_path;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

/* ---- file handling ---- */

static int open_file(const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);

    if (fd < 0)
        return -errno;
    return fd;
}

int rgm_log_open(const char *path, int level)
{
    int fd;

    if (level >= RGM_LOG_ERROR && level <= RGM_LOG_DEBUG)
        rgm_log_level_cur = level;
    if (!path) {
        rgm_log_close();
        return 0;
    }
    fd = open_file(path);
    if (fd < 0)
        return fd;
    rgm_log_close();
    log_fd = fd;
    log_path = rgm_strdup(path);
    return 0;
}

int rgm_log_reopen(void)
{
    int fd;

    if (!log_path)
        return 0;
    fd = open_file(log_path);
    if (fd < 0)
        return fd; /* keep writing to the old file */
    if (close(log_fd) < 0) {
        /* nothing useful to do: the old descriptor is gone either way */
    }
    log_fd = fd;
    return 0;
}

void rgm_log_close(void)
{
    if (log_path) {
        if (close(log_fd) < 0) {
            /* the descriptor is released even on error (Linux) */
        }
        RGM_FREE(log_path);
    }
    log_fd = STDERR_FILENO;
}

int rgm_log_parse_level(const char *s)
{
    size_t i;

    for (i = 0; i < RGM_ARRAY_SIZE(level_names); i++) {
        if (strcmp(s, level_names[i]) == 0)
            return (int)i;
    }
    return -1;
}

/* ---- formatting ---- */

char *rgm_log_quote(const char *s, char *out, size_t outlen)
{
    static const char hexd[] = "0123456789abcdef";
    char esc[5];
    size_t o = 0, i;
    const unsigned char *p;

    if (outlen == 0)
        return out;
    if (outlen < 8) { /* too small for "x..." plus quotes */
        out[0] = '\0';
        return out;
    }
    out[o++] = '"';
    for (p = (const unsigned char *)(s ? s : ""); *p; p++) {
        size_t elen = 0;

        if (*p == '"' || *p == '\\') {
            esc[elen++] = '\\';
            esc[elen++] = (char)*p;
        } else if (*p == '\n') {
            esc[elen++] = '\\';
            esc[elen++] = 'n';
        } else if (*p == '\r') {
            esc[elen++] = '\\';
            esc[elen++] = 'r';
        } else if (*p == '\t') {
            esc[elen++] = '\\';
            esc[elen++] = 't';
        } else if (*p < 0x20 || *p >= 0x7f) {
            esc[elen++] = '\\';
            esc[elen++] = 'x';
            esc[elen++] = hexd[*p >> 4];
            esc[elen++] = hexd[*p & 15];
        } else {
            esc[elen++] = (char)*p;
        }
        /* keep room for '...' '"' and the NUL */
        if (o + elen + 5 > outlen) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        for (i = 0; i < elen; i++)
            out[o++] = esc[i];
    }
    out[o++] = '"';
    out[o] = '\0';
    return out;
}

/* "time=... level=... mod=... " into line; returns its length. */
static size_t prefix(char *line, size_t linelen, int level, const char *module)
{
    struct timespec ts;
    struct tm tm;
    char stamp[32];
    int n;

    if (clock_gettime(CLOCK_REALTIME, &ts) < 0) {
        ts.tv_sec = 0;
        ts.tv_nsec = 0;
    }
    if (!gmtime_r(&ts.tv_sec, &tm) || strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm) == 0)
        stamp[0] = '\0';
    if (level < RGM_LOG_ERROR || level > RGM_LOG_DEBUG)
        level = RGM_LOG_ERROR;
    n = snprintf(line, linelen, "time=%s.%03ldZ level=%s mod=%s ", stamp, ts.tv_nsec / 1000000L,
                 level_names[level], module ? module : "-");
    if (n < 0)
        return 0;
    return (size_t)n < linelen ? (size_t)n : linelen - 1;
}

static void emit(char *line, size_t len, size_t linelen)
{
    size_t off = 0;

    if (len >= linelen - 1)
        len = linelen - 2; /* truncated: keep room for the newline */
    line[len++] = '\n';
    /* One write per line; loop only on the rare partial write or EINTR. */
    while (off < len) {
        ssize_t w = write(log_fd, line + off, len - off);

        if (w < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        off += (size_t)w;
    }
}

void rgm_log_write(int level, const char *module, const char *fmt, ...)
{
    char line[LOG_LINE_MAX];
    char msg[LOG_MSG_MAX];
    va_list ap;
    size_t n;

    if (level > rgm_log_level_cur)
        return;
    va_start(ap, fmt);
    if (vsnprintf(msg, sizeof(msg), fmt, ap) < 0)
        msg[0] = '\0';
    va_end(ap);
    n = prefix(line, sizeof(line), level, module);
    memcpy(line + n, "msg=", 4);
    n += 4;
    rgm_log_quote(msg, line + n, sizeof(line) - n);
    n += strlen(line + n);
    emit(line, n, sizeof(line));
}

void rgm_log_kv(int level, const char *module, const char *fmt, ...)
{
    char line[LOG_LINE_MAX];
    va_list ap;
    size_t n;
    int k;

    if (level > rgm_log_level_cur)
        return;
    n = prefix(line, sizeof(line), level, module);
    va_start(ap, fmt);
    k = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
    va_end(ap);
    if (k < 0)
        k = 0;
    n += (size_t)k;
    if (n > sizeof(line) - 1)
        n = sizeof(line) - 1;
    emit(line, n, sizeof(line));
}
