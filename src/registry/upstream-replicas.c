/* A mirror registry's replica sets (an endpoint array, or endpoint_dns; docs/cluster.md): start
 * and close them, the rendezvous key of a call, and which replica a call asks, first and after
 * one that did not answer. It sends nothing itself: upstream.c does, to the URL picked here.
 * Health probes and ranking are cluster/peers'. */
#include "registry/upstream-int.h"

#include <string.h>

#include "core/log.h"
#include "core/util.h"
#include "cluster/rendezvous.h"

#define PEER_TRIES 3 /* replicas tried for one call when they do not answer */

/* base followed by tail, malloc'd. */
char *rgm_upstream_join_url(const char *base, const char *tail)
{
    size_t blen = strlen(base), tlen = strlen(tail);
    char *u = rgm_malloc(blen + tlen + 1);

    memcpy(u, base, blen);
    memcpy(u + blen, tail, tlen + 1);
    return u;
}

/* The peer set of a mirror registry with several replicas; none when it has one endpoint. */
void rgm_upstream_replicas_start(rgm_upstream_t *up, const rgm_registry_cfg_t *reg,
                                 struct regstate *rs)
{
    rgm_peers_opts_t o;
    int err = 0;

    if (!reg->is_mirror || (reg->endpoints_len < 2 && !reg->endpoint_dns))
        return;
    memset(&o, 0, sizeof(o));
    o.urls = (const char *const *)reg->endpoints;
    o.n_urls = reg->endpoint_dns ? 0 : reg->endpoints_len;
    o.dns_url = reg->endpoint_dns;
    o.client = up->client;
    rs->peers = rgm_peers_new(up->loop, &o, &err);
    if (rs->peers && rgm_peers_start(rs->peers) < 0) {
        rgm_peers_close(rs->peers, NULL, NULL);
        rs->peers = NULL;
    }
    if (!rs->peers)
        rgm_log(RGM_LOG_ERROR, "upstream", "registry %s: no replica set; using %s", reg->name,
                reg->endpoint ? reg->endpoint : "nothing");
    else
        rgm_log(RGM_LOG_INFO, "upstream", "registry %s: each digest to its owner among %s",
                reg->name, reg->endpoint_dns ? reg->endpoint_dns : "the endpoints");
}

static void on_replicas_closed(void *ud)
{
    rgm_upstream_t *up = ud;

    if (--up->n_closing == 0 && up->stop_cb)
        up->stop_cb(up->stop_ud);
}

void rgm_upstream_stop(rgm_upstream_t *up, void (*cb)(void *ud), void *ud)
{
    size_t i;

    up->stop_cb = cb;
    up->stop_ud = ud;
    up->n_closing = 1; /* held until every close is started */
    for (i = 0; i < up->cfg->registries_len; i++) {
        if (!up->regs[i].peers)
            continue;
        up->n_closing++;
        rgm_peers_close(up->regs[i].peers, on_replicas_closed, up);
        up->regs[i].peers = NULL;
    }
    on_replicas_closed(up);
}

/* The rendezvous key of a call (docs/cluster.md): the digest of a blob or of a manifest by
 * digest, "registry/repository:tag" for a tag, the repository for anything else (tag lists:
 * any replica will do, this one spreads them). malloc'd. */
char *rgm_upstream_replica_key(const rgm_upcall_opts_t *o)
{
    char key[RGM_PEER_URL_MAX + 1024];
    const char *ref = NULL;

    if (strncmp(o->suffix, "blobs/", 6) == 0)
        return rgm_strdup(o->suffix + 6);
    if (strncmp(o->suffix, "manifests/", 10) == 0)
        ref = o->suffix + 10;
    if (ref && strchr(ref, ':'))
        return rgm_strdup(ref);
    if (ref && rgm_rendezvous_tag_key(o->reg->name, o->repo, ref, key, sizeof(key)) == 0)
        return rgm_strdup(key);
    return rgm_strdup(o->repo);
}

/* The replica for c's key: the owner among healthy ones, else any member. 0, or
 * UV_EHOSTUNREACH when the set is empty (nothing resolved yet). */
int rgm_upstream_replica_pick(rgm_upcall_t *c)
{
    rgm_peer_pick_t p;
    rgm_peers_t *peers = c->rs->peers;

    if (rgm_peers_rank(peers, c->key, strlen(c->key), 1, &p, 1) == 0 &&
        rgm_peers_rank(peers, c->key, strlen(c->key), 0, &p, 1) == 0)
        return UV_EHOSTUNREACH;
    memcpy(c->peer_url, p.url, sizeof(c->peer_url));
    free(c->url);
    c->url = rgm_upstream_join_url(p.url, c->tail);
    return 0;
}

/* A replica that gave no answer at all: mark it down, pick the key's next owner. 1 when the
 * caller is to send the request again, to c->url. */
int rgm_upstream_replica_next(rgm_upcall_t *c, int st, int err)
{
    if (!c->peer_url[0] || !c->rs || !c->rs->peers || c->is_head_delivered || st > 0 || err >= 0 ||
        err == UV_ECANCELED || c->is_cancelled || c->is_token_req || c->is_fill_req ||
        ++c->peer_tries >= PEER_TRIES)
        return 0;
    rgm_peers_report(c->rs->peers, c->peer_url, 0);
    if (rgm_upstream_replica_pick(c) < 0)
        return 0;
    rgm_log(RGM_LOG_INFO, "upstream", "registry %s: replica did not answer (%s); asking %s",
            c->reg->name, uv_strerror(err), c->peer_url);
    return 1;
}
