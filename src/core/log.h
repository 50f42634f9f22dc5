/* Leveled logging in logfmt to stderr or a file (reopened on SIGHUP), and the access log.
 * Never pass Authorization values or tokens to it. */
#ifndef RGM_CORE_LOG_H
#define RGM_CORE_LOG_H

#include "core/common.h"

enum rgm_log_level { RGM_LOG_ERROR = 0, RGM_LOG_WARN, RGM_LOG_INFO, RGM_LOG_DEBUG };

extern int rgm_log_level_cur;

/* Set the level (ignored when not a valid level) and the destination. path NULL: stderr;
 * otherwise opened O_APPEND|O_CREAT|O_CLOEXEC, mode 0644. Every line goes out in one write(2).
 * Returns 0 or a negative errno (the previous destination stays). */
RGM_MUST_CHECK int rgm_log_open(const char *path, int level);
/* Reopen the file (SIGHUP, after rotation); no-op on stderr. */
RGM_MUST_CHECK int rgm_log_reopen(void);
void rgm_log_close(void);
/* "error", "warn", "info", "debug" -> level; <0 when unknown. */
int rgm_log_parse_level(const char *s);

/* One line: time=<RFC3339 ms> level=<l> mod=<module> msg="<formatted, escaped>" */
void rgm_log_write(int level, const char *module, const char *fmt, ...) RGM_PRINTF(3, 4);
/* One line: time=... level=... mod=<module> <kv>, where kv is already logfmt (use
 * rgm_log_quote for values from requests). */
void rgm_log_kv(int level, const char *module, const char *fmt, ...) RGM_PRINTF(3, 4);

/* Arguments are evaluated only when the level is enabled. */
#define rgm_log(level, module, ...)                                                                \
    do {                                                                                           \
        if ((level) <= rgm_log_level_cur)                                                          \
            rgm_log_write((level), (module), __VA_ARGS__);                                         \
    } while (0)

/* Quote s for logfmt into out, surrounding double quotes included (always NUL-terminated;
 * truncated with "..." before the closing quote when too long; outlen < 8 gives ""): double
 * quotes, backslashes, \n \r \t escaped, other control and non-ASCII bytes as \xHH. s NULL is
 * quoted as empty. Returns out. */
char *rgm_log_quote(const char *s, char *out, size_t outlen);

#endif
