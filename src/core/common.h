/* Common definitions for every module: allocation that aborts on OOM, container_of,
 * RGM_MUST_CHECK, and the banned string functions. Include after system headers. */
#ifndef RGM_COMMON_H
#define RGM_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>

#define RGM_MUST_CHECK    __attribute__((warn_unused_result))
#define RGM_PRINTF(a, b)  __attribute__((format(printf, a, b)))
#define RGM_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#define rgm_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* Allocation never returns NULL: on OOM it prints file:line and aborts. Every size a
 * peer can influence is checked against a configured limit before it gets here. */
void *rgm_malloc_(size_t n, const char *file, int line);
void *rgm_calloc_(size_t n, size_t m, const char *file, int line);
void *rgm_realloc_(void *p, size_t n, const char *file, int line);
char *rgm_strdup_(const char *s, const char *file, int line);
char *rgm_strndup_(const char *s, size_t n, const char *file, int line);
#define rgm_malloc(n)     rgm_malloc_((n), __FILE__, __LINE__)
#define rgm_calloc(n, m)  rgm_calloc_((n), (m), __FILE__, __LINE__)
#define rgm_realloc(p, n) rgm_realloc_((p), (n), __FILE__, __LINE__)
#define rgm_strdup(s)     rgm_strdup_((s), __FILE__, __LINE__)
#define rgm_strndup(s, n) rgm_strndup_((s), (n), __FILE__, __LINE__)
#define RGM_FREE(p)                                                                                \
    do {                                                                                           \
        free(p);                                                                                   \
        (p) = NULL;                                                                                \
    } while (0)

/* Our own invariants only, never peer input. */
#define RGM_BUG_ON(cond)                                                                           \
    do {                                                                                           \
        if (cond) {                                                                                \
            fprintf(stderr, "BUG at %s:%d: %s\n", __FILE__, __LINE__, #cond);                      \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Fault injection (tests): RGM_FAULT("store.write") is true when the environment variable
 * RGM_FAULT names this point, as "point" (always) or "point:N" (the Nth pass only). */
int rgm_fault_(const char *point);
#define RGM_FAULT(point) rgm_fault_(point)

#pragma GCC poison sprintf strcpy strcat strncpy strtok atoi atol gets

#endif
