/* The /v2 API served to clients (read side of the OCI distribution spec), plus /healthz,
 * /readyz and /metrics: validates input, picks the registry, checks access, serves from the
 * cache or drives an upstream fetch that every concurrent client joins. */
#ifndef RGM_REGISTRY_ROUTES_H
#define RGM_REGISTRY_ROUTES_H

#include <uv.h>
#include "core/config.h"
#include "http/server.h"
#include "cache/store.h"
#include "cache/index.h"
#include "cache/fetch.h"
#include "cache/refs.h"
#include "cache/inuse.h"
#include "registry/upstream.h"
#include "cluster/peers.h"

typedef struct rgm_routes rgm_routes_t;

/* Everything borrowed; all must outlive the routes. */
rgm_routes_t *rgm_routes_new(uv_loop_t *loop, const rgm_config_t *cfg, rgm_store_t *store,
                             rgm_index_t *index, rgm_fetches_t *fetches, rgm_upstream_t *up);
/* For /metrics (open connections). */
void rgm_routes_set_server(rgm_routes_t *r, rgm_server_t *srv);
/* Where manifests record their references (borrowed; outlives r), and the set of stored
 * files open for responses, which r owns and eviction reads (valid until rgm_routes_free). */
void rgm_routes_set_refs(rgm_routes_t *r, rgm_refs_t *refs);
rgm_inuse_t *rgm_routes_inuse(rgm_routes_t *r);
/* Shard by rendezvous hashing over peers (docs/cluster.md): requests for keys another healthy
 * peer owns are forwarded to it through client. Both borrowed; call before serving. */
void rgm_routes_set_cluster(rgm_routes_t *r, rgm_peers_t *peers, rgm_client_t *client);
/* The server's handler: ud is the rgm_routes_t. */
void rgm_routes_handle(rgm_req_t *req, void *ud);
/* Cancel every upstream job; done runs once none is left (maybe later, never inside). */
void rgm_routes_shutdown(rgm_routes_t *r, void (*done)(void *ud), void *ud);
void rgm_routes_free(rgm_routes_t *r);

#endif
