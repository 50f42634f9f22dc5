/* The cache-by-image services from the config: pins normalised, tag_ttl (the longest of the
 * registries') for served tags and moved pins, 90 % of max_cache_bytes as the target. */
#include "cmd/cachemgmt.h"

#include <uv.h>

#include "registry/filter.h"

static int take_pins(struct rgm_cachemgmt *m, const rgm_config_t *cfg, char *err, size_t errlen)
{
    char **v = rgm_calloc(cfg->pins_len + 1, sizeof(*v));
    char out[1024];
    char msg[512];
    size_t i;
    int rc = 0;

    for (i = 0; rc == 0 && i < cfg->pins_len; i++) {
        rc = rgm_filter_pin_normalize(cfg->pins[i], out, sizeof(out), msg, sizeof(msg));
        if (rc < 0)
            snprintf(err, errlen, "pin[%zu]: %s", i, msg);
        else
            v[i] = rgm_strdup(out);
    }
    if (rc == 0)
        rgm_pins_set_config(m->pins, v, cfg->pins_len);
    for (i = 0; i < cfg->pins_len; i++)
        free(v[i]);
    free(v);
    return rc;
}

int rgm_cachemgmt_open(struct rgm_cachemgmt *m, const rgm_config_t *cfg, rgm_index_t *idx,
                       rgm_store_t *store, rgm_fetches_t *fetches, rgm_inuse_t *inuse, char *err,
                       size_t errlen)
{
    size_t i;
    int rc;

    memset(m, 0, sizeof(*m));
    err[0] = '\0';
    rc = rgm_refs_open(idx, store, &m->refs);
    if (rc == 0)
        rc = rgm_pins_open(idx, &m->pins);
    if (rc < 0) {
        snprintf(err, errlen, "cannot open the references and pins tables");
        return rc;
    }
    rc = take_pins(m, cfg, err, errlen);
    if (rc < 0)
        return rc;
    m->opts.max_bytes = cfg->max_cache_bytes;
    m->opts.target_bytes = cfg->max_cache_bytes / 10 * 9;
    m->opts.orphan_grace_ms = cfg->orphan_grace_ms;
    /* A replica's blobs may be another replica's images' layers (docs/cluster.md). */
    m->opts.is_cluster = cfg->cluster_peers_len > 0 || cfg->cluster_peers_dns != NULL;
    for (i = 0; i < cfg->registries_len; i++)
        if (cfg->registries[i].tag_ttl_ms > m->opts.tag_ttl_ms)
            m->opts.tag_ttl_ms = cfg->registries[i].tag_ttl_ms;
    m->evict = rgm_evict_new(idx, store, m->refs, m->pins, fetches, inuse);
    return 0;
}

void rgm_cachemgmt_close(struct rgm_cachemgmt *m)
{
    rgm_evict_free(m->evict);
    rgm_pins_close(m->pins);
    rgm_refs_close(m->refs);
    memset(m, 0, sizeof(*m));
}
