/* Allocation wrappers that abort on OOM, and the fault-injection switch. */
#include "core/common.h"

static void oom(const char *file, int line)
{
    fprintf(stderr, "out of memory at %s:%d\n", file, line);
    abort();
}

void *rgm_malloc_(size_t n, const char *file, int line)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(file, line);
    return p;
}

void *rgm_calloc_(size_t n, size_t m, const char *file, int line)
{
    void *p = calloc(n ? n : 1, m ? m : 1);
    if (!p)
        oom(file, line);
    return p;
}

void *rgm_realloc_(void *p, size_t n, const char *file, int line)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(file, line);
    return q;
}

char *rgm_strdup_(const char *s, const char *file, int line)
{
    return rgm_strndup_(s, strlen(s), file, line);
}

char *rgm_strndup_(const char *s, size_t n, const char *file, int line)
{
    char *p = rgm_malloc_(n + 1, file, line);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

int rgm_fault_(const char *point)
{
    static unsigned long passes[16]; // cppcheck-suppress unassignedVariable
    static const char *names[16];
    const char *spec = getenv("RGM_FAULT");
    size_t plen = strlen(point);
    unsigned long want = 0;
    size_t i;

    if (!spec || strncmp(spec, point, plen) != 0)
        return 0;
    if (spec[plen] == ':')
        want = strtoul(spec + plen + 1, NULL, 10);
    else if (spec[plen] != '\0')
        return 0;
    if (want == 0)
        return 1;
    for (i = 0; i < RGM_ARRAY_SIZE(names); i++) {
        if (!names[i] || strcmp(names[i], point) == 0) {
            names[i] = point;
            return ++passes[i] == want;
        }
    }
    return 0;
}
