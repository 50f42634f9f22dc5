/* The per-registry upstream counters as Prometheus text (rgm_upstream_metrics): requests by
 * status class, body bytes, the RateLimit-* gauges, the reserve, pulls and pulls avoided, then
 * the mirror's own identity's. It only reads what upstream-limits.c and upstream.c count. */
#include "registry/upstream-int.h"

#include <stddef.h>
#include <string.h>

/* One family with a series for every configured registry (from start-up, zeros too). off:
 * the regstate member, an int (is_in_reserve) or a uint64_t. */
static int per_registry(const rgm_upstream_t *up, rgm_buf_t *out, const char *name,
                        const char *type, const char *help, size_t off)
{
    const char *p;
    uint64_t v;
    int iv;
    size_t i;
    int err = 0;

    err |= rgm_buf_appendf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    for (i = 0; i < up->cfg->registries_len; i++) {
        p = (const char *)&up->regs[i] + off;
        if (off == offsetof(struct regstate, is_in_reserve)) {
            memcpy(&iv, p, sizeof(iv));
            v = (uint64_t)iv;
        } else {
            memcpy(&v, p, sizeof(v));
        }
        err |= rgm_buf_appendf(out, "%s{registry=\"%s\"} %llu\n", name, up->cfg->registries[i].name,
                               (unsigned long long)v);
    }
    return err;
}

int rgm_upstream_metrics(const rgm_upstream_t *up, rgm_buf_t *out)
{
    static const char *const classes[N_CLASSES] = {"1xx", "2xx", "3xx", "4xx", "5xx", "error"};
    size_t i;
    size_t k;
    int err = 0;

    err |= rgm_buf_appendf(out, "# HELP regmirror_upstream_http_requests_total HTTP requests to "
                                "upstreams (token requests included), by registry and status.\n"
                                "# TYPE regmirror_upstream_http_requests_total counter\n");
    for (i = 0; i < up->cfg->registries_len; i++)
        for (k = 0; k < N_CLASSES; k++)
            err |= rgm_buf_appendf(out,
                                   "regmirror_upstream_http_requests_total{registry=\"%s\","
                                   "status=\"%s\"} %llu\n",
                                   up->cfg->registries[i].name, classes[k],
                                   (unsigned long long)up->regs[i].requests[k]);
    err |= rgm_buf_appendf(out, "# HELP regmirror_upstream_http_bytes_total Response body bytes "
                                "received from upstreams, by registry.\n"
                                "# TYPE regmirror_upstream_http_bytes_total counter\n");
    for (i = 0; i < up->cfg->registries_len; i++)
        err |= rgm_buf_appendf(out, "regmirror_upstream_http_bytes_total{registry=\"%s\"} %llu\n",
                               up->cfg->registries[i].name, (unsigned long long)up->regs[i].bytes);
    err |= rgm_buf_appendf(out, "# HELP regmirror_upstream_ratelimit_remaining Pulls left in the "
                                "upstream's rate-limit window (RateLimit-Remaining), where seen.\n"
                                "# TYPE regmirror_upstream_ratelimit_remaining gauge\n");
    for (i = 0; i < up->cfg->registries_len; i++)
        if (up->regs[i].rl_remaining >= 0)
            err |= rgm_buf_appendf(
                out, "regmirror_upstream_ratelimit_remaining{registry=\"%s\"} %lld\n",
                up->cfg->registries[i].name, (long long)up->regs[i].rl_remaining);
    err |=
        rgm_buf_appendf(out, "# HELP regmirror_upstream_ratelimit_limit The upstream's rate-limit "
                             "window size (RateLimit-Limit), where seen.\n"
                             "# TYPE regmirror_upstream_ratelimit_limit gauge\n");
    for (i = 0; i < up->cfg->registries_len; i++)
        if (up->regs[i].rl_limit >= 0)
            err |=
                rgm_buf_appendf(out, "regmirror_upstream_ratelimit_limit{registry=\"%s\"} %lld\n",
                                up->cfg->registries[i].name, (long long)up->regs[i].rl_limit);
    err |= per_registry(up, out, "regmirror_upstream_ratelimit_reserve", "gauge",
                        "1 while RateLimit-Remaining is below ratelimit_reserve (prewarm is "
                        "refused), else 0.",
                        offsetof(struct regstate, is_in_reserve));
    err |= per_registry(up, out, "regmirror_upstream_pulls_total", "counter",
                        "Manifest GETs the upstream answered 2xx (what Docker Hub counts as "
                        "pulls).",
                        offsetof(struct regstate, pulls));
    err |= per_registry(up, out, "regmirror_upstream_pulls_avoided_total", "counter",
                        "Tag GETs answered from cache after a HEAD named a digest already here "
                        "(resolve by digest first).",
                        offsetof(struct regstate, pulls_avoided));
    err |= rgm_identity_metrics(up->id, out);
    return err < 0 ? UV_ENOBUFS : 0;
}
