/* regmirror serve: parse the command line over the config, open the store and index, wire
 * server, routes, upstream and client on one loop, and handle signals (TERM/INT: graceful
 * stop; HUP: reopen the log and re-read the TLS files, which a timer also watches). */
#include <sys/resource.h>
#include <sys/stat.h>
#include <signal.h>
#include <uv.h>

#include "core/common.h"
#include "core/config.h"
#include "core/log.h"
#include "core/util.h"
#include "http/server.h"
#include "http/client.h"
#include "http/tls.h"
#include "cache/store.h"
#include "cache/index.h"
#include "cache/fetch.h"
#include "cache/reconcile.h"
#include "cmd/cachemgmt.h"
#include "cmd/adminapi.h"
#include "cmd/adminsock.h"
#include "registry/identity.h"
#include "registry/upstream.h"
#include "registry/routes.h"
#include "cluster/peers.h"
#include "cmd/cmd.h"

#define FLUSH_INTERVAL_MS     2000
#define GC_INTERVAL_MS        5000
#define GC_AGAIN_MS           5
/* One eviction step's time on the loop (cache/evict's budget): a cached HEAD behind it waits
 * at most about this long. */
#define GC_BUDGET_US          2000
/* The background reconcile: rows or files per loop turn, and the pause between turns. A
 * batch is a few hundred stat(2) and SQLite lookups, well under a millisecond from the page
 * cache. RGM_RECONCILE_BATCH and RGM_RECONCILE_INTERVAL_MS override them (tests slow it down
 * to watch it run). */
#define RECONCILE_BATCH       256
#define RECONCILE_INTERVAL_MS 0
/* How often the TLS files are stat'ed for a change (cert-manager swaps a Secret volume's
 * symlink); RGM_TLS_CHECK_INTERVAL_MS overrides it. */
#define TLS_CHECK_INTERVAL_MS 30000
/* The image tally for /metrics (cache/evict): images per step, the pause between steps, and
 * between passes (RGM_TALLY_INTERVAL_MS overrides the last). */
#define TALLY_BATCH           100
#define TALLY_STEP_MS         200
#define TALLY_INTERVAL_MS     30000

struct serve {
    uv_loop_t loop;
    rgm_config_t cfg;
    rgm_store_t *store;
    rgm_index_t *index;
    rgm_fetches_t *fetches;
    rgm_client_t *client;
    rgm_upstream_t *up;
    rgm_routes_t *routes;
    rgm_server_t *server;
    rgm_server_t *admin; /* the admin socket's server (cmd/adminapi); NULL: none */
    struct rgm_adminapi adminapi;
    rgm_peers_t *peers;           /* NULL without a cluster */
    rgm_client_t *cluster_client; /* forwards and probes to peers */
    rgm_tls_opts_t peer_tls;      /* cluster.peer_* for it (strings borrowed from cfg) */
    uv_signal_t sig_term;
    uv_signal_t sig_int;
    uv_signal_t sig_hup;
    uv_timer_t flush_timer;
    uv_timer_t gc_timer;
    uv_timer_t reconcile_timer;
    uv_idle_t reconcile_idle;   /* drives it when there is no pause between turns */
    rgm_reconcile_t *reconcile; /* NULL once over */
    struct rgm_cachemgmt cm;    /* references, pins, eviction by image */
    uv_timer_t backfill_timer;
    uv_timer_t tally_timer;
    uint64_t tally_interval_ms;
    size_t reconcile_batch;
    uint64_t reconcile_interval_ms;
    uv_prepare_t batch_end; /* closes the index's read batch before the loop waits */
    uv_timer_t tls_timer;   /* stat the TLS files */
    rgm_cidr_t *allow_nets; /* allow_upstream_networks, parsed (the client borrows it) */
    uint64_t tls_sig;       /* what they looked like at the last (re)load */
    int is_stopping;
};

static void usage(FILE *out)
{
    fprintf(out, "usage: regmirror serve [--config FILE] [--listen ADDR:PORT]... [--storage DIR]\n"
                 "                       [--registry NAME=URL]... [--default-registry NAME]\n"
                 "                       [--max-size SIZE] [--allow-any-registry]\n"
                 "                       [--log-level error|warn|info|debug] [--log-file FILE]\n"
                 "                       [--tls-cert FILE --tls-key FILE [--tls-client-ca FILE]]\n"
                 "                       [--health-listen ADDR:PORT]...\n"
                 "                       [--peer URL]... [--peers-dns URL] [--self URL]\n"
                 "\n"
                 "Runs the mirror. Without --config: listen 127.0.0.1:5000, storage\n"
                 "./regmirror-data, docker.io and the well-known public registries.\n"
                 "Flags override the config file.\n");
}

static void on_client_closed(void *ud)
{
    (void)ud;
}

static void close_walk(uv_handle_t *h, void *ud)
{
    (void)ud;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void log_handle(uv_handle_t *h, void *ud)
{
    (void)ud;
    rgm_log(RGM_LOG_ERROR, "serve", "handle left open: %s (active %d, closing %d)",
            uv_handle_type_name(h->type), uv_is_active(h), uv_is_closing(h));
}

static void on_peers_closed(void *ud)
{
    struct serve *s = ud;

    rgm_client_close(s->cluster_client, on_client_closed, s);
    s->cluster_client = NULL;
}

static void on_upstream_stopped(void *ud)
{
    struct serve *s = ud;

    rgm_client_close(s->client, on_client_closed, s);
    s->client = NULL;
}

static void on_routes_stopped(void *ud)
{
    struct serve *s = ud;

    if (s->peers) {
        rgm_peers_close(s->peers, on_peers_closed, s);
        s->peers = NULL;
    }
    rgm_upstream_stop(s->up, on_upstream_stopped, s);
    uv_close((uv_handle_t *)&s->flush_timer, NULL);
    uv_close((uv_handle_t *)&s->gc_timer, NULL);
    uv_close((uv_handle_t *)&s->reconcile_timer, NULL);
    uv_close((uv_handle_t *)&s->reconcile_idle, NULL);
    uv_close((uv_handle_t *)&s->backfill_timer, NULL);
    uv_close((uv_handle_t *)&s->tally_timer, NULL);
    uv_close((uv_handle_t *)&s->batch_end, NULL);
    uv_close((uv_handle_t *)&s->tls_timer, NULL);
    uv_close((uv_handle_t *)&s->sig_term, NULL);
    uv_close((uv_handle_t *)&s->sig_int, NULL);
    uv_close((uv_handle_t *)&s->sig_hup, NULL);
}

static void on_server_stopped(rgm_server_t *srv, void *ud)
{
    struct serve *s = ud;

    (void)srv;
    rgm_log(RGM_LOG_INFO, "serve", "connections closed; stopping upstream work");
    rgm_routes_shutdown(s->routes, on_routes_stopped, s);
}

/* ---- TLS files: load, re-read, watch ---- */

static void sig_add(uint64_t *sig, const char *path)
{
    struct stat st;
    uint64_t v[4] = {0, 0, 0, 0};
    size_t i;

    if (!path)
        return;
    /* stat(2) of a few small files every 30 s, from the page cache: on the loop. */
    if (stat(path, &st) == 0) {
        v[0] = (uint64_t)st.st_ino;
        v[1] = (uint64_t)st.st_size;
        v[2] = (uint64_t)st.st_mtim.tv_sec * 1000000000u + (uint64_t)st.st_mtim.tv_nsec;
        v[3] = (uint64_t)st.st_ctim.tv_sec * 1000000000u + (uint64_t)st.st_ctim.tv_nsec;
    }
    for (i = 0; i < RGM_ARRAY_SIZE(v); i++)
        *sig = (*sig ^ v[i]) * 0x100000001b3ull; /* FNV-style mix: a change, not a secret */
}

/* A fingerprint of every TLS file's inode, size and times. */
static uint64_t tls_signature(const rgm_config_t *cfg)
{
    uint64_t sig = 0xcbf29ce484222325ull;
    size_t i;

    sig_add(&sig, cfg->tls_cert_file);
    sig_add(&sig, cfg->tls_key_file);
    sig_add(&sig, cfg->tls_client_ca_file);
    for (i = 0; i < cfg->registries_len; i++) {
        sig_add(&sig, cfg->registries[i].ca_file);
        sig_add(&sig, cfg->registries[i].client_cert_file);
        sig_add(&sig, cfg->registries[i].client_key_file);
    }
    sig_add(&sig, cfg->cluster_peer_ca_file);
    sig_add(&sig, cfg->cluster_peer_cert_file);
    sig_add(&sig, cfg->cluster_peer_key_file);
    return sig;
}

/* The server's TLS context from the config, or NULL with the reason in msg. */
static rgm_tls_server_t *tls_load(const rgm_config_t *cfg, char *msg, size_t msglen)
{
    return rgm_tls_server_new(cfg->tls_cert_file, cfg->tls_key_file, cfg->tls_client_ca_file, msg,
                              msglen);
}

/* A client pair that must load at start: 0, or UV_EINVAL logged and printed, naming where. */
static int client_files_check(const char *where, const rgm_tls_client_cfg_t *tc)
{
    char msg[600];

    if (rgm_tls_client_check(tc, msg, sizeof(msg)) == 0)
        return 0;
    rgm_log(RGM_LOG_ERROR, "serve", "%s: TLS client files: %s", where, msg);
    fprintf(stderr, "regmirror: %s: TLS client files: %s\n", where, msg);
    return UV_EINVAL;
}

/* At start: every pair must load, or serve exits 2 with the file and OpenSSL's reason. */
static int tls_start(struct serve *s)
{
    const rgm_config_t *cfg = &s->cfg;
    rgm_tls_server_t *tls;
    char where[300];
    char msg[600];
    size_t i;

    for (i = 0; i < cfg->registries_len; i++) {
        const rgm_registry_cfg_t *r = &cfg->registries[i];
        const rgm_tls_client_cfg_t tc = {r->ca_file, r->insecure_skip_verify, r->client_cert_file,
                                         r->client_key_file, NULL};

        snprintf(where, sizeof(where), "registries.%s", r->name);
        if (r->client_cert_file && strncmp(r->endpoint, "https://", 8) == 0 &&
            client_files_check(where, &tc) < 0)
            return UV_EINVAL;
    }
    if (cfg->cluster_peer_cert_file) {
        const rgm_tls_client_cfg_t tc = {cfg->cluster_peer_ca_file, 0, cfg->cluster_peer_cert_file,
                                         cfg->cluster_peer_key_file, NULL};

        if (client_files_check("cluster: peer", &tc) < 0)
            return UV_EINVAL;
    }
    s->tls_sig = tls_signature(cfg);
    if (!cfg->tls_cert_file)
        return 0;
    tls = tls_load(cfg, msg, sizeof(msg));
    if (!tls) {
        rgm_log(RGM_LOG_ERROR, "serve", "tls: %s", msg);
        fprintf(stderr, "regmirror: tls: %s\n", msg);
        return UV_EINVAL;
    }
    rgm_server_set_tls(s->server, tls);
    rgm_log(RGM_LOG_INFO, "serve", "TLS on every listener (%s)%s", cfg->tls_cert_file,
            cfg->tls_client_ca_file ? ", client certificates required" : "");
    return 0;
}

/* SIGHUP or a changed file: new handshakes get the new files; a bad pair keeps the old. */
static void tls_reload(struct serve *s, const char *why)
{
    rgm_tls_server_t *tls;
    char msg[600];
    int failures;

    s->tls_sig = tls_signature(&s->cfg);
    failures = rgm_tls_client_reload();
    if (s->cfg.tls_cert_file) {
        tls = tls_load(&s->cfg, msg, sizeof(msg));
        if (!tls) {
            rgm_log(RGM_LOG_ERROR, "serve", "%s: tls: %s; keeping the certificate in use", why,
                    msg);
            return;
        }
        rgm_server_set_tls(s->server, tls);
    }
    rgm_log(RGM_LOG_INFO, "serve", "%s: TLS files re-read%s", why,
            failures ? " (some client files failed, see above)" : "");
}

static void on_tls_timer(uv_timer_t *t)
{
    struct serve *s = rgm_container_of(t, struct serve, tls_timer);

    if (tls_signature(&s->cfg) != s->tls_sig)
        tls_reload(s, "TLS files changed");
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct serve *s = h->data;

    if (signum == SIGHUP) {
        if (rgm_log_reopen() < 0)
            rgm_log(RGM_LOG_ERROR, "serve", "cannot reopen the log file");
        else
            rgm_log(RGM_LOG_INFO, "serve", "log reopened");
        tls_reload(s, "SIGHUP");
        return;
    }
    if (s->is_stopping) {
        rgm_log(RGM_LOG_WARN, "serve",
                "signal %d: already stopping (responses get at most shutdown_timeout)", signum);
        return;
    }
    s->is_stopping = 1;
    rgm_log(RGM_LOG_INFO, "serve", "signal %d: stop accepting, finishing responses", signum);
    if (s->admin)
        rgm_server_shutdown(s->admin, NULL, NULL); /* its answers are never in flight long */
    rgm_server_shutdown(s->server, on_server_stopped, s);
}

/* The cluster of cfg.cluster, if any, over the ports actually bound. 0 or <0 (logged). */
static int start_cluster(struct serve *s)
{
    rgm_peers_opts_t o;
    rgm_client_opts_t copts;
    struct sockaddr_storage listen[16];
    char host[256];
    size_t i;
    int port, err = 0;

    if (s->cfg.cluster_peers_len == 0 && !s->cfg.cluster_peers_dns)
        return 0;
    memset(&copts, 0, sizeof(copts));
    /* A dead peer must cost little: its keys go to the next owner after this. */
    copts.connect_timeout_ms = 2000;
    copts.read_timeout_ms = s->cfg.upstream_read_timeout_ms;
    /* https peers: verified with peer_ca_file, and shown peer_cert_file (probes, forwards) */
    s->peer_tls.ca_file = s->cfg.cluster_peer_ca_file;
    s->peer_tls.client_cert_file = s->cfg.cluster_peer_cert_file;
    s->peer_tls.client_key_file = s->cfg.cluster_peer_key_file;
    s->peer_tls.server_name = s->cfg.cluster_peer_server_name;
    copts.tls = &s->peer_tls;
    s->cluster_client = rgm_client_new(&s->loop, &copts);
    memset(&o, 0, sizeof(o));
    o.urls = (const char *const *)s->cfg.cluster_peers;
    o.n_urls = s->cfg.cluster_peers_len;
    o.dns_url = s->cfg.cluster_peers_dns;
    o.self_url = s->cfg.cluster_self;
    o.find_self = 1;
    /* The bound addresses: a name (not an address) counts as the wildcard. */
    memset(listen, 0, sizeof(listen));
    for (i = 0; i < s->cfg.listen_len && i < RGM_ARRAY_SIZE(listen); i++) {
        port = rgm_server_port(s->server, i);
        if (rgm_parse_hostport(s->cfg.listen[i], host, sizeof(host), &err) < 0 ||
            (uv_ip4_addr(host, port, (struct sockaddr_in *)&listen[i]) < 0 &&
             uv_ip6_addr(host, port, (struct sockaddr_in6 *)&listen[i]) < 0))
            (void)uv_ip4_addr("0.0.0.0", port, (struct sockaddr_in *)&listen[i]);
    }
    err = 0;
    o.listen = listen;
    o.n_listen = i;
    o.client = s->cluster_client;
    s->peers = rgm_peers_new(&s->loop, &o, &err);
    if (!s->peers)
        return err;
    err = rgm_peers_start(s->peers);
    if (err < 0) {
        rgm_log(RGM_LOG_ERROR, "serve", "cluster: %s", uv_strerror(err));
        return err;
    }
    rgm_routes_set_cluster(s->routes, s->peers, s->cluster_client);
    rgm_log(RGM_LOG_INFO, "serve", "cluster: %zu static peers%s%s", s->cfg.cluster_peers_len,
            s->cfg.cluster_peers_dns ? ", peers_dns " : "",
            s->cfg.cluster_peers_dns ? s->cfg.cluster_peers_dns : "");
    return 0;
}

static void on_flush(uv_timer_t *t)
{
    struct serve *s = rgm_container_of(t, struct serve, flush_timer);

    if (rgm_index_flush(s->index) < 0)
        rgm_log(RGM_LOG_WARN, "serve", "index flush failed");
    rgm_upstream_prune(s->up);
}

/* Keep the cache under max_cache_bytes: one batch per tick (cache/evict: orphans, then whole
 * images, about RGM_EVICT_BATCH objects), soon again while more is needed, down to 90 % so
 * that eviction does not run on every fetch. */
static void on_gc(uv_timer_t *t)
{
    struct serve *s = rgm_container_of(t, struct serve, gc_timer);
    const rgm_evict_counters_t *c = rgm_evict_counters(s->cm.evict);
    uint64_t before = c->objects[RGM_EVICT_LRU_IMAGE] + c->objects[RGM_EVICT_ORPHAN];
    uint64_t bytes = c->bytes[RGM_EVICT_LRU_IMAGE] + c->bytes[RGM_EVICT_ORPHAN];
    const uint64_t t0 = uv_hrtime();
    int step;

    step = rgm_evict_step(s->cm.evict, &s->cm.opts);
    if (c->objects[RGM_EVICT_LRU_IMAGE] + c->objects[RGM_EVICT_ORPHAN] > before)
        rgm_log(RGM_LOG_INFO, "gc", "evicted %llu objects (%llu bytes) in %.2f ms",
                (unsigned long long)(c->objects[RGM_EVICT_LRU_IMAGE] +
                                     c->objects[RGM_EVICT_ORPHAN] - before),
                (unsigned long long)(c->bytes[RGM_EVICT_LRU_IMAGE] + c->bytes[RGM_EVICT_ORPHAN] -
                                     bytes),
                (double)(uv_hrtime() - t0) / 1e6);
    if (step == 1 && uv_timer_start(t, on_gc, GC_AGAIN_MS, GC_INTERVAL_MS) < 0)
        rgm_log(RGM_LOG_WARN, "gc", "cannot rearm the gc timer");
}

static void on_batch_end(uv_prepare_t *h)
{
    struct serve *s = rgm_container_of(h, struct serve, batch_end);

    rgm_index_end_batch(s->index);
}

/* Flags override the config file, which overrides the embedded defaults (core/config).
 * Returns 0, 1 after --help, or 2 for a usage or config error (printed). */
static int parse_args(struct serve *s, int argc, char **argv)
{
    char err[512];
    int rc;

    rgm_config_init(&s->cfg);
    rc = rgm_config_parse_args(&s->cfg, argc, argv, 0, err, sizeof(err));
    if (rc == 1)
        usage(stdout);
    else if (rc < 0 && err[0])
        fprintf(stderr, "regmirror: %s\n", err);
    else if (rc < 0)
        usage(stderr);
    return rc < 0 ? 2 : rc;
}

/* Every connection and every open blob is a descriptor: take the hard limit. */
static void raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            rgm_log(RGM_LOG_WARN, "serve", "cannot raise the open file limit");
    }
}

static int start_signals(struct serve *s)
{
    int err;

    uv_signal_init(&s->loop, &s->sig_term);
    uv_signal_init(&s->loop, &s->sig_int);
    uv_signal_init(&s->loop, &s->sig_hup);
    s->sig_term.data = s->sig_int.data = s->sig_hup.data = s;
    err = uv_signal_start(&s->sig_term, on_signal, SIGTERM);
    if (err == 0)
        err = uv_signal_start(&s->sig_int, on_signal, SIGINT);
    if (err == 0)
        err = uv_signal_start(&s->sig_hup, on_signal, SIGHUP);
    return err;
}

static int open_cache(struct serve *s)
{
    char path[4096];
    int err;

    err = rgm_store_open(s->cfg.storage, &s->store);
    if (err < 0) {
        rgm_log(RGM_LOG_ERROR, "serve", "cannot open storage %s: %s", s->cfg.storage,
                uv_strerror(err));
        return err;
    }
    if (!rgm_store_is_owner(s->store)) {
        rgm_log(RGM_LOG_ERROR, "serve",
                "storage %s is in use by another regmirror process (%s/.lock)", s->cfg.storage,
                s->cfg.storage);
        return UV_EBUSY;
    }
    err = rgm_store_index_path(s->store, path, sizeof(path));
    if (err == 0)
        err = rgm_index_open(path, &s->index);
    if (err < 0) {
        rgm_log(RGM_LOG_ERROR, "serve", "cannot open the index in %s: %s", s->cfg.storage,
                uv_strerror(err));
        return err;
    }
    rgm_index_use_loop(s->index, &s->loop);
    /* The reconcile runs in the background (start_reconcile): serving is correct meanwhile. */
    s->reconcile = rgm_reconcile_new(s->index, s->store);
    return 0;
}

/* The references of a cache written before them (or by an older build), in steps: until it
 * is over, eviction waits (cache/evict). */
static void on_backfill(uv_timer_t *t)
{
    struct serve *s = rgm_container_of(t, struct serve, backfill_timer);
    int rc = rgm_refs_backfill_step(s->cm.refs, RECONCILE_BATCH);

    if (rc > 0 && !s->is_stopping && uv_timer_start(t, on_backfill, 0, 0) == 0)
        return;
    if (rc == 0)
        rgm_log(RGM_LOG_INFO, "refs", "references back-filled");
    else if (rc < 0)
        rgm_log(RGM_LOG_ERROR, "refs", "back-fill failed: eviction stays off");
}

static uint64_t env_knob(const char *name, uint64_t def, uint64_t max);

/* A step of the image tally behind /metrics' image gauges, off the hot path: a few images
 * per tick, then a pause until the next pass. It waits for the reconcile and back-fill. */
static void on_tally(uv_timer_t *t)
{
    struct serve *s = rgm_container_of(t, struct serve, tally_timer);
    int rc = 1;

    /* Not before the reconcile and the back-fill are over: its lookups would check (and
     * drop) rows the reconcile has not reached, and the edges may be missing. */
    if (!s->reconcile && rgm_refs_is_complete(s->cm.refs))
        rc = rgm_evict_tally_step(s->cm.evict, &s->cm.opts, TALLY_BATCH);

    if (rc < 0)
        rgm_log(RGM_LOG_WARN, "refs", "image tally failed; trying again later");
    if (!s->is_stopping &&
        uv_timer_start(t, on_tally, rc == 1 ? TALLY_STEP_MS : s->tally_interval_ms, 0) < 0)
        rgm_log(RGM_LOG_WARN, "refs", "cannot rearm the tally timer");
}

static int open_cachemgmt(struct serve *s)
{
    char err[600];

    if (rgm_cachemgmt_open(&s->cm, &s->cfg, s->index, s->store, s->fetches,
                           rgm_routes_inuse(s->routes), err, sizeof(err)) < 0) {
        rgm_log(RGM_LOG_ERROR, "serve", "%s", err);
        return UV_EINVAL;
    }
    s->cm.opts.is_served_kept = 1; /* nodes mid-rollout resolve those tags again */
    s->cm.opts.budget_us = GC_BUDGET_US;
    rgm_routes_set_refs(s->routes, s->cm.refs);
    rgm_routes_set_evict(s->routes, s->cm.evict, &s->cm.opts);
    s->tally_interval_ms = env_knob("RGM_TALLY_INTERVAL_MS", TALLY_INTERVAL_MS, 3600000);
    uv_timer_init(&s->loop, &s->tally_timer);
    if (uv_timer_start(&s->tally_timer, on_tally, TALLY_STEP_MS, 0) < 0)
        return UV_EINVAL;
    uv_unref((uv_handle_t *)&s->tally_timer);
    uv_timer_init(&s->loop, &s->backfill_timer);
    return uv_timer_start(&s->backfill_timer, on_backfill, 0, 0);
}

static uint64_t env_knob(const char *name, uint64_t def, uint64_t max)
{
    const char *v = getenv(name);
    uint64_t x;

    if (!v || rgm_parse_uint(v, max, &x) < 0)
        return def;
    return x;
}

/* One batch per turn. With no pause between turns an idle handle drives it, not a 0 ms timer:
 * libuv 1.44 runs a timer re-armed at 0 ms again within the same pass over the timers, so the
 * loop would not poll a socket until the reconcile was over (/v2/ waited 8 s at 1,000,000
 * objects). An active idle handle makes each turn poll without blocking. */
static void reconcile_turn(struct serve *s);

static void on_reconcile(uv_timer_t *t)
{
    reconcile_turn(rgm_container_of(t, struct serve, reconcile_timer));
}

static void on_reconcile_idle(uv_idle_t *h)
{
    reconcile_turn(rgm_container_of(h, struct serve, reconcile_idle));
}

static void reconcile_turn(struct serve *s)
{
    const int rc = rgm_reconcile_step(s->reconcile, s->reconcile_batch);

    if (rc > 0 && !s->is_stopping) {
        if (s->reconcile_interval_ms == 0)
            return; /* the idle handle runs again next turn */
        if (uv_timer_start(&s->reconcile_timer, on_reconcile, s->reconcile_interval_ms, 0) == 0)
            return;
    }
    if (uv_idle_stop(&s->reconcile_idle) < 0)
        rgm_log(RGM_LOG_WARN, "serve", "reconcile: idle stop failed");
    rgm_reconcile_free(s->reconcile);
    s->reconcile = NULL;
}

static int start_reconcile(struct serve *s)
{
    s->reconcile_batch = (size_t)env_knob("RGM_RECONCILE_BATCH", RECONCILE_BATCH, 1000000);
    s->reconcile_interval_ms = env_knob("RGM_RECONCILE_INTERVAL_MS", RECONCILE_INTERVAL_MS, 60000);
    if (s->reconcile_batch == 0)
        s->reconcile_batch = 1;
    uv_timer_init(&s->loop, &s->reconcile_timer);
    uv_idle_init(&s->loop, &s->reconcile_idle);
    if (s->reconcile_interval_ms == 0)
        return uv_idle_start(&s->reconcile_idle, on_reconcile_idle);
    return uv_timer_start(&s->reconcile_timer, on_reconcile, 0, 0);
}

/* Listen on each of addrs: the main listeners (TLS when set) or the health ones (plain). */
static int listen_all(struct serve *s, char **addrs, size_t n, int is_health)
{
    size_t i;
    int err;

    for (i = 0; i < n; i++) {
        err = is_health ? rgm_server_listen_health(s->server, addrs[i])
                        : rgm_server_listen(s->server, addrs[i]);
        if (err < 0) {
            rgm_log(RGM_LOG_ERROR, "serve", "cannot listen on %s: %s", addrs[i], uv_strerror(err));
            return err;
        }
        if (is_health)
            rgm_log(RGM_LOG_INFO, "serve",
                    "health listener on %s (plain HTTP: /healthz, /readyz, /metrics)", addrs[i]);
        else
            rgm_log(RGM_LOG_INFO, "serve", "listening on %s%s (storage %s)", addrs[i],
                    s->cfg.tls_cert_file ? " (https)" : "", s->cfg.storage);
    }
    return 0;
}

/* The admin API on <storage>/admin.sock (or admin_socket), with its own server so that no TCP
 * listener ever routes to it. A default path too long for a unix socket only loses the admin
 * API (WARN); a configured one that cannot be bound stops serve. */
static int start_admin(struct serve *s)
{
    char path[256];
    int err;

    if (rgm_adminsock_path(&s->cfg, path, sizeof(path)) < 0) {
        if (s->cfg.admin_socket) {
            rgm_log(RGM_LOG_ERROR, "serve", "admin_socket %s: too long for a unix socket",
                    s->cfg.admin_socket);
            return UV_ENAMETOOLONG;
        }
        rgm_log(RGM_LOG_WARN, "serve",
                "%s/admin.sock is too long for a unix socket: no admin API (set admin_socket)",
                s->cfg.storage);
        return 0;
    }
    s->adminapi.ops.store = s->store;
    s->adminapi.ops.index = s->index;
    s->adminapi.ops.cm = &s->cm;
    s->admin = rgm_server_new(&s->loop, &s->cfg, rgm_adminapi_handle, &s->adminapi);
    err = rgm_server_listen_unix(s->admin, path, RGM_ADMINSOCK_MAX_BODY);
    if (err < 0) {
        rgm_log(RGM_LOG_ERROR, "serve", "cannot listen on the admin socket %s: %s", path,
                uv_strerror(err));
        return err;
    }
    rgm_log(RGM_LOG_INFO, "serve", "admin API on %s (mode 0600; this uid and root)", path);
    return 0;
}

int rgm_cmd_serve(int argc, char **argv)
{
    struct serve s;
    rgm_client_opts_t copts;
    char msg[600];
    size_t i;
    int rc = 1;
    int err;

    memset(&s, 0, sizeof(s));
    err = parse_args(&s, argc, argv);
    if (err != 0) {
        rgm_config_free(&s.cfg);
        return err == 1 ? 0 : err;
    }
    if (rgm_identity_check(&s.cfg, msg, sizeof(msg)) < 0) {
        fprintf(stderr, "regmirror: credential_providers.config: %s\n", msg);
        rgm_config_free(&s.cfg);
        return 1;
    }
    if (rgm_log_open(s.cfg.log_file, s.cfg.log_level) < 0) {
        fprintf(stderr, "regmirror: cannot open log file %s\n", s.cfg.log_file);
        rgm_config_free(&s.cfg);
        return 1;
    }
    raise_nofile();
    if (uv_loop_init(&s.loop) < 0)
        goto out_cfg;
    if (open_cache(&s) < 0)
        goto out_cache;

    memset(&copts, 0, sizeof(copts));
    copts.connect_timeout_ms = s.cfg.upstream_connect_timeout_ms;
    copts.read_timeout_ms = s.cfg.upstream_read_timeout_ms;
    {
        const char *bad = NULL;

        /* validated at load: a failure here is a bug */
        RGM_BUG_ON(rgm_cidr_parse_list(s.cfg.allow_upstream_networks,
                                       s.cfg.allow_upstream_networks_len, &s.allow_nets, &bad) < 0);
        copts.allow_nets = s.allow_nets;
        copts.allow_nets_len = s.cfg.allow_upstream_networks_len;
    }
    s.fetches = rgm_fetches_new(&s.loop, s.store);
    s.client = rgm_client_new(&s.loop, &copts);
    s.up = rgm_upstream_new(&s.loop, &s.cfg, s.client);
    s.routes = rgm_routes_new(&s.loop, &s.cfg, s.store, s.index, s.fetches, s.up);
    s.server = rgm_server_new(&s.loop, &s.cfg, rgm_routes_handle, s.routes);
    rgm_routes_set_server(s.routes, s.server);
    if (tls_start(&s) < 0) {
        rc = 2;
        goto out_stop;
    }
    if (open_cachemgmt(&s) < 0)
        goto out_stop;
    if (listen_all(&s, s.cfg.listen, s.cfg.listen_len, 0) < 0 ||
        listen_all(&s, s.cfg.health_listen, s.cfg.health_listen_len, 1) < 0 || start_admin(&s) < 0)
        goto out_stop;
    if (start_cluster(&s) < 0)
        goto out_stop;
    if (start_signals(&s) < 0)
        goto out_stop;
    uv_timer_init(&s.loop, &s.flush_timer);
    if (uv_timer_start(&s.flush_timer, on_flush, FLUSH_INTERVAL_MS, FLUSH_INTERVAL_MS) < 0)
        goto out_stop;
    uv_unref((uv_handle_t *)&s.flush_timer);
    uv_prepare_init(&s.loop, &s.batch_end);
    if (uv_prepare_start(&s.batch_end, on_batch_end) < 0)
        goto out_stop;
    uv_unref((uv_handle_t *)&s.batch_end);
    rgm_index_set_batching(s.index, 1);
    uv_timer_init(&s.loop, &s.gc_timer);
    if (s.cfg.max_cache_bytes > 0 &&
        uv_timer_start(&s.gc_timer, on_gc, GC_INTERVAL_MS, GC_INTERVAL_MS) < 0)
        goto out_stop;
    uv_unref((uv_handle_t *)&s.gc_timer);
    if (start_reconcile(&s) < 0)
        goto out_stop;
    uv_timer_init(&s.loop, &s.tls_timer);
    i = (size_t)env_knob("RGM_TLS_CHECK_INTERVAL_MS", TLS_CHECK_INTERVAL_MS, 3600000);
    if (uv_timer_start(&s.tls_timer, on_tls_timer, i ? i : 1, i ? i : 1) < 0)
        goto out_stop;
    uv_unref((uv_handle_t *)&s.tls_timer);

    uv_run(&s.loop, UV_RUN_DEFAULT);
    rc = 0;
    goto out_free;

out_stop:
    /* Start-up failed after handles were made: close them all and drain the loop. */
    s.is_stopping = 1;
    if (s.admin)
        rgm_server_shutdown(s.admin, NULL, NULL);
    rgm_server_shutdown(s.server, NULL, NULL);
    rgm_upstream_stop(s.up, on_upstream_stopped, &s);
    if (s.peers)
        rgm_peers_close(s.peers, on_peers_closed, &s);
    else if (s.cluster_client)
        rgm_client_close(s.cluster_client, on_client_closed, &s);
    s.peers = NULL;
    uv_walk(&s.loop, close_walk, NULL);
    uv_run(&s.loop, UV_RUN_DEFAULT);
out_free:
    rgm_reconcile_free(s.reconcile); /* stopped before it was over */
    rgm_server_free(s.admin);
    rgm_server_free(s.server);
    rgm_routes_free(s.routes);
    rgm_cachemgmt_close(&s.cm);
    rgm_upstream_free(s.up);
    rgm_fetches_free(s.fetches);
    free(s.allow_nets);
out_cache:
    if (s.index)
        rgm_index_close(s.index);
    if (s.store)
        rgm_store_close(s.store);
    err = uv_loop_close(&s.loop);
    if (err != 0) {
        rgm_log(RGM_LOG_ERROR, "serve", "loop not empty at exit: %s", uv_strerror(err));
        uv_walk(&s.loop, log_handle, NULL);
        rc = 1;
    } else if (rc == 0) {
        rgm_log(RGM_LOG_INFO, "serve", "stopped cleanly");
    }
out_cfg:
    rgm_log_close();
    rgm_config_free(&s.cfg);
    return rc;
}
