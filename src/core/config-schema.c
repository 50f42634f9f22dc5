/* Config schema: which keys exist, at the top level, in each registries.NAME and in its
 * credentials; and the walks that interpret those tables (defaults, apply a JSON object, copy,
 * free, print, describe). Rules between keys live in the finish hooks below the tables. The
 * parsing of one value is core/config-value's; this file reads no file except through it. */
#include "core/config-schema.h"

#include <uv.h>

#include "core/cidr.h"
#include "core/config.h"

#define KEY_MAX 512

/* ---- the tables ---- */

/* One key of struct st stored in member m. */
#define KEY_(st, k, type, m, lo, hi, def, flags, desc)                                             \
    {                                                                                              \
        k, RGM_CFG_##type, offsetof(st, m), sizeof(((st *)0)->m), 0, lo, hi, def, flags, NULL,     \
            desc                                                                                   \
    }
/* A key with a count member n (ADDRS, CIDRS, REGISTRIES) or a sub-table. */
#define LIST_(st, k, type, m, n, def, sub, desc)                                                   \
    {                                                                                              \
        k, RGM_CFG_##type, offsetof(st, m), sizeof(((st *)0)->m), offsetof(st, n), 0, 0, def, 0,   \
            sub, desc                                                                              \
    }
/* A list that may be empty, and is by default. */
#define OPTLIST_(st, k, type, m, n, desc)                                                          \
    {                                                                                              \
        k, RGM_CFG_##type, offsetof(st, m), sizeof(((st *)0)->m), offsetof(st, n), 0, 0, NULL,     \
            RGM_CFGKEY_EMPTY_OK, NULL, desc                                                        \
    }
#define OBJ_(k, sub, desc)                                                                         \
    {                                                                                              \
        k, RGM_CFG_OBJECT, 0, 0, 0, 0, 0, NULL, 0, sub, desc                                       \
    }

#define TOP(k, type, m, lo, hi, def, flags, desc)                                                  \
    KEY_(rgm_config_t, k, type, m, lo, hi, def, flags, desc)
#define REG(k, type, m, lo, hi, def, flags, desc)                                                  \
    KEY_(rgm_registry_cfg_t, k, type, m, lo, hi, def, flags, desc)

/* The embedded registries (DESIGN): docker.io and the well-known public ones. */
#define EMBEDDED_REGISTRIES                                                                        \
    "{\"docker.io\": {\"endpoint\": \"https://registry-1.docker.io\"},"                            \
    " \"ghcr.io\": {\"endpoint\": \"https://ghcr.io\"},"                                           \
    " \"quay.io\": {\"endpoint\": \"https://quay.io\"},"                                           \
    " \"registry.k8s.io\": {\"endpoint\": \"https://registry.k8s.io\"},"                           \
    " \"gcr.io\": {\"endpoint\": \"https://gcr.io\"},"                                             \
    " \"public.ecr.aws\": {\"endpoint\": \"https://public.ecr.aws\"},"                             \
    " \"mcr.microsoft.com\": {\"endpoint\": \"https://mcr.microsoft.com\"}}"

static int finish_credentials(const rgm_cfgval_ctx_t *c, const char *key, void *base);
static int finish_registry(const rgm_cfgval_ctx_t *c, const char *key, void *base);
static int finish_tls(const rgm_cfgval_ctx_t *c, const char *key, void *base);

/* The tables stay one line a key, wider than clang-format's 100 columns, so that adding a key
 * is one line: name, type, member, min, max, default, flags, description. Keys are in the
 * order of conf/regmirror.json, which is the order the effective configuration prints. */
// clang-format off
static const rgm_cfgkey_t credentials_keys[] = {
    REG("username", STRING, username, 0, 0, NULL, 0, "user name for Basic auth and token requests; needs password_file"),
    REG("password_file", STRING, password_file, 0, 0, NULL, 0, "file holding the password (trailing newline stripped), read at load"),
    REG("password", STRING, password, 0, 0, NULL, RGM_CFGKEY_SECRET | RGM_CFGKEY_DERIVED, "the password read from password_file; printed as <redacted>"),
    REG("docker_config", STRING, docker_config, 0, 0, NULL, 0, "a docker config.json (auths, credHelpers, credsStore) for this registry, checked readable at load"),
    REG("helper", STRING, cred_helper, 0, 0, NULL, 0, "a docker credential helper: NAME runs docker-credential-NAME from PATH, or an absolute path"),
    REG("lifetime", DURATION, cred_lifetime_ms, 0, 0, "5m", 0, "a credential helper's answer is kept this long (also for docker_config's helpers); 0: ask on every token fetch"),
    REG("timeout", DURATION, cred_timeout_ms, 1, 0, "10s", 0, "a credential helper run that takes longer is killed; the request goes on anonymously"),
};


static const rgm_cfgtable_t credentials_table = {
    .path = "registries.NAME.credentials.", .keys = credentials_keys,
    .len = RGM_ARRAY_SIZE(credentials_keys), .size = sizeof(rgm_registry_cfg_t),
    .is_hinted = 1, .finish = finish_credentials,
};

static const rgm_cfgkey_t repositories_keys[] = {
    LIST_(rgm_registry_cfg_t, "allow", STRINGS, repo_allow, repo_allow_len, NULL, NULL, "repositories served (globs over the normalised name: * one segment, ** any depth); empty: all"),
    LIST_(rgm_registry_cfg_t, "deny", STRINGS, repo_deny, repo_deny_len, NULL, NULL, "repositories refused with 403 DENIED, cached or not; deny beats allow"),
};

static const rgm_cfgtable_t repositories_table = {
    .path = "registries.NAME.repositories.", .keys = repositories_keys,
    .len = RGM_ARRAY_SIZE(repositories_keys), .size = sizeof(rgm_registry_cfg_t),
    .is_hinted = 1,
};

static const rgm_cfgkey_t registry_keys[] = {
    {"endpoint", RGM_CFG_URL, offsetof(rgm_registry_cfg_t, endpoint), sizeof(char *), offsetof(rgm_registry_cfg_t, endpoints), 0, 0, NULL, RGM_CFGKEY_LIST, NULL, "base URL of the registry API (http:// or https://, no query), without /v2/; required unless endpoint_dns; a mirror's may be an array of a cluster's replicas"},
    REG("endpoint_dns", URL, endpoint_dns, 0, 0, NULL, 0, "mirror registries: http://NAME:PORT, every A record of NAME a replica of the cluster tier (docs/cluster.md)"),
    REG("tag_ttl", DURATION, tag_ttl_ms, 0, 0, "60s", 0, "a tag is served from cache this long, then revalidated upstream with a HEAD"),
    REG("ca_file", FILE, ca_file, 0, 0, NULL, 0, "PEM CA certificates to verify this registry's TLS with instead of the system's"),
    REG("insecure_skip_verify", BOOL, insecure_skip_verify, 0, 0, "false", 0, "do not verify the upstream's TLS certificate (tests only)"),
    REG("client_cert_file", FILE, client_cert_file, 0, 0, NULL, 0, "PEM certificate chain presented to an https endpoint (mutual TLS); needs client_key_file"),
    REG("client_key_file", FILE, client_key_file, 0, 0, NULL, 0, "PEM private key of client_cert_file"),
    REG("mirror", BOOL, is_mirror, 0, 0, "false", 0, "the endpoint is another regmirror (tiering): send ?ns= and the client's Authorization"),
    REG("max_parallel_fetches", UINT, max_parallel_fetches, 0, 1024, "0", 0, "upstream fetches in flight for this registry; 0: only the global limit"),
    REG("max_stale", DURATION, max_stale_opt, 0, 0, NULL, RGM_CFGKEY_OPTIONAL, "how long past tag_ttl a cached tag is served while the upstream fails; null: the top level's"),
    REG("stale_on_not_found", BOOL, stale_on_not_found_opt, 0, 0, NULL, RGM_CFGKEY_OPTIONAL, "serve a public cached tag the upstream now answers 404 for; null: the top level's"),
    REG("negative_ttl", DURATION, negative_ttl_opt, 0, 0, NULL, RGM_CFGKEY_OPTIONAL, "how long an upstream 404 is remembered (\"0\": not at all); null: the top level's"),
    REG("ratelimit_reserve", UINT, ratelimit_reserve_opt, 0, 1000000, NULL, RGM_CFGKEY_OPTIONAL, "RateLimit-Remaining below this warns and refuses prewarm; null: the top level's"),
    OBJ_("credentials", &credentials_table, "upstream credentials: username with password_file, docker_config, or helper"),
    REG("private", BOOL, is_private, 0, 0, "false", 0, "content fetched with the mirror's own identity is still served only to clients the registry accepts"),
    OBJ_("repositories", &repositories_table, "repository filters: allow and deny lists of globs"),
};

static const rgm_cfgkey_t providers_keys[] = {
    TOP("config", FILE, cred_provider_config, 0, 0, NULL, 0, "the kubelet's CredentialProviderConfig (YAML or JSON), as --image-credential-provider-config"),
    TOP("bin_dir", STRING, cred_provider_bin_dir, 0, 0, NULL, 0, "the directory of the plugins, as --image-credential-provider-bin-dir"),
    TOP("timeout", DURATION, cred_provider_timeout_ms, 1, 60000, "1m", 0, "a plugin run that takes longer is killed (the kubelet's 1 m at most)"),
};

static const rgm_cfgtable_t providers_table = {
    .path = "credential_providers.", .keys = providers_keys,
    .len = RGM_ARRAY_SIZE(providers_keys), .size = sizeof(rgm_config_t),
    .is_hinted = 1,
};

static const rgm_cfgkey_t tls_keys[] = {
    TOP("cert_file", FILE, tls_cert_file, 0, 0, NULL, 0, "PEM server certificate, leaf first then the chain; every listener serves HTTPS"),
    TOP("key_file", FILE, tls_key_file, 0, 0, NULL, 0, "PEM private key of cert_file"),
    TOP("client_ca_file", FILE, tls_client_ca_file, 0, 0, NULL, 0, "PEM CAs of acceptable client certificates; clients without one are refused in the handshake"),
};

static const rgm_cfgtable_t tls_table = {
    .path = "tls.", .keys = tls_keys, .len = RGM_ARRAY_SIZE(tls_keys),
    .size = sizeof(rgm_config_t), .is_hinted = 1, .finish = finish_tls,
};

static const rgm_cfgkey_t cluster_keys[] = {
    LIST_(rgm_config_t, "peers", URLS, cluster_peers, cluster_peers_len, NULL, NULL, "base URLs of every replica of this cluster, this one included (docs/cluster.md)"),
    TOP("peers_dns", URL, cluster_peers_dns, 0, 0, NULL, 0, "http://NAME:PORT of a headless Service: every A record of NAME is a replica, re-resolved every 15 s"),
    TOP("self", URL, cluster_self, 0, 0, NULL, 0, "this replica's base URL; null: the peer with a local address and a listen port"),
    TOP("peer_ca_file", FILE, cluster_peer_ca_file, 0, 0, NULL, 0, "PEM CAs that https peers are verified with instead of the system's"),
    TOP("peer_cert_file", FILE, cluster_peer_cert_file, 0, 0, NULL, 0, "PEM certificate chain presented to https peers (mutual TLS); needs peer_key_file"),
    TOP("peer_key_file", FILE, cluster_peer_key_file, 0, 0, NULL, 0, "PEM private key of peer_cert_file"),
    TOP("peer_server_name", STRING, cluster_peer_server_name, 0, 0, NULL, 0, "the name https peers' certificates are checked against instead of the peer URL's host (peers_dns members are addresses)"),
};

static int finish_cluster(const rgm_cfgval_ctx_t *c, const char *key, void *base)
{
    const rgm_config_t *cfg = base;

    if (!cfg->cluster_peer_cert_file != !cfg->cluster_peer_key_file)
        return rgm_cfgval_fail(c, key, "peer_cert_file and peer_key_file go together");
    return 0;
}

static const rgm_cfgtable_t cluster_table = {
    .path = "cluster.", .keys = cluster_keys, .len = RGM_ARRAY_SIZE(cluster_keys),
    .size = sizeof(rgm_config_t), .is_hinted = 1, .finish = finish_cluster,
};

static const rgm_cfgkey_t top_keys[] = {
    LIST_(rgm_config_t, "listen", ADDRS, listen, listen_len, "127.0.0.1:5000", NULL, "addresses to listen on, HOST:PORT or [IPV6]:PORT (port 0: any free port)"),
    OPTLIST_(rgm_config_t, "health_listen", ADDRS, health_listen, health_listen_len, "extra plain-HTTP addresses that serve only /healthz, /readyz and /metrics (probes, scrapes)"),
    OBJ_("tls", &tls_table, "HTTPS on every listener: cert_file, key_file, optional client_ca_file (re-read on SIGHUP and when they change)"),
    OPTLIST_(rgm_config_t, "allow_clients", CIDRS, allow_clients, allow_clients_len, "CIDRs clients may connect from; others are closed at accept; empty: everyone"),
    TOP("storage", STRING, storage, 0, 0, "./regmirror-data", 0, "cache directory (blobs/, tmp/, index.db), created if missing"),
    TOP("max_cache_bytes", SIZE, max_cache_bytes, 0, UINT64_MAX, "0", 0, "least recently used images are evicted above this size; 0: unlimited"),
    TOP("orphan_grace", DURATION, orphan_grace_ms, 0, 0, "1h", 0, "a blob that no cached manifest references is evicted first, once unrequested this long"),
    LIST_(rgm_config_t, "pin", STRINGS, pins, pins_len, NULL, NULL, "images never evicted: references or globs (registry.k8s.io/pause:*, ghcr.io/org/**)"),
    TOP("admin_socket", STRING, admin_socket, 0, 0, NULL, 0, "the admin API's unix socket; null: <storage>/admin.sock"),
    TOP("default_registry", REGNAME, default_registry, 0, 0, "docker.io", 0, "registry of requests that name none; one of registries"),
    TOP("allow_any_registry", BOOL, allow_any_registry, 0, 0, "false", 0, "fetch any registry named by ?ns= from https://NAME (false: 403 DENIED)"),
    OPTLIST_(rgm_config_t, "allow_upstream_networks", CIDRS, allow_upstream_networks, allow_upstream_networks_len, "CIDRs an unconfigured registry may be reached at although loopback, private or link-local"),
    TOP("max_parallel_fetches", UINT, max_parallel_fetches, 1, 1024, "16", 0, "upstream fetches in flight, all registries together"),
    LIST_(rgm_config_t, "registries", REGISTRIES, registries, registries_len, EMBEDDED_REGISTRIES, &rgm_cfgschema_registry, "upstream registries by name; replaces the embedded docker.io, ghcr.io, quay.io, registry.k8s.io, gcr.io, public.ecr.aws, mcr.microsoft.com"),
    TOP("max_connections", UINT, max_connections, 1, 1000000, "4096", 0, "client connections open at once; more are accepted and closed"),
    TOP("max_header_bytes", SIZE, max_header_bytes, 1024, 1 << 20, "16KiB", 0, "all request header lines together; more get 431"),
    TOP("max_headers", UINT, max_headers, 8, 1024, "64", 0, "request header fields; more get 431"),
    TOP("max_url_length", SIZE, max_url_len, 256, 1 << 20, "4096", 0, "request target length; longer get 414"),
    TOP("header_timeout", DURATION, header_timeout_ms, 1, 0, "30s", 0, "the whole request head must arrive within this (slowloris guard)"),
    TOP("idle_timeout", DURATION, idle_timeout_ms, 1, 0, "60s", 0, "a keep-alive connection with no request for this long is closed"),
    TOP("send_timeout", DURATION, send_timeout_ms, 1, 0, "2m", 0, "a client that accepts no response bytes for this long is closed"),
    TOP("shutdown_timeout", DURATION, shutdown_timeout_ms, 0, 0, "10s", 0, "grace for responses in flight after SIGTERM or SIGINT"),
    TOP("upstream_connect_timeout", DURATION, upstream_connect_timeout_ms, 1, 0, "10s", 0, "upstream TCP connect plus TLS handshake"),
    TOP("upstream_timeout", DURATION, upstream_read_timeout_ms, 1, 0, "60s", 0, "an upstream that sends nothing for this long is given up on"),
    TOP("auth_cache_ttl", DURATION, auth_cache_ttl_ms, 0, 0, "60s", 0, "how long an upstream decision on a client's access to a private repository is kept"),
    TOP("max_stale", DURATION, max_stale_opt, 0, 0, NULL, RGM_CFGKEY_OPTIONAL, "how long past tag_ttl a cached tag is served while the upstream fails; null: no bound, \"0\": never"),
    TOP("stale_on_not_found", BOOL, stale_on_not_found, 0, 0, "false", 0, "serve a public cached tag the upstream now answers 404 for (to the mirror's own identity)"),
    TOP("negative_ttl", DURATION, negative_ttl_ms, 0, 0, "10s", 0, "how long an upstream 404 to the mirror's own identity is remembered; \"0\": not at all"),
    TOP("ratelimit_reserve", UINT, ratelimit_reserve, 0, 1000000, "10", 0, "RateLimit-Remaining below this: one WARN, a gauge at 1, and prewarm refused (429)"),
    OBJ_("credential_providers", &providers_table, "the kubelet's credential provider plugins as the mirror's own identity, for registries without credentials"),
    TOP("sendfile", BOOL, use_sendfile, 0, 0, "false", 0, "serve blobs with sendfile(2) on plain TCP instead of pread+write"),
    TOP("log_level", LEVEL, log_level, 0, 0, "info", 0, "error, warn, info or debug"),
    TOP("log_file", STRING, log_file, 0, 0, NULL, 0, "log file, appended, reopened on SIGHUP; null: stderr"),
    TOP("access_log", BOOL, access_log, 0, 0, "true", 0, "one log line per request (Authorization is never logged)"),
    OBJ_("cluster", &cluster_table, "replicas that shard the cache by rendezvous hashing: peers or peers_dns, and self"),
};
// clang-format on

const rgm_cfgtable_t rgm_cfgschema_registry = {
    .path = "registries.NAME.",
    .keys = registry_keys,
    .len = RGM_ARRAY_SIZE(registry_keys),
    .size = sizeof(rgm_registry_cfg_t),
    .finish = finish_registry,
};

_Static_assert(offsetof(rgm_registry_cfg_t, endpoints_len) ==
                   offsetof(rgm_registry_cfg_t, endpoints) + sizeof(char **),
               "RGM_CFGKEY_LIST: the count follows the list");

const rgm_cfgtable_t rgm_cfgschema_top = {
    .path = "",
    .keys = top_keys,
    .len = RGM_ARRAY_SIZE(top_keys),
    .size = sizeof(rgm_config_t),
};

/* ---- rules between keys ---- */

/* 0 when url is a base URL (no path), else UV_EINVAL naming key.name. */
static int check_base(const rgm_cfgval_ctx_t *c, const char *key, const char *name, const char *url)
{
    char kpath[KEY_MAX];
    json_t *v = json_string(url);
    int rc;

    if (snprintf(kpath, sizeof(kpath), "%s.%s", key, name) < 0)
        kpath[0] = '\0';
    rc = v ? rgm_cfgval_base_url(c, kpath, v) : UV_EINVAL;
    json_decref(v);
    return rc;
}

/* An endpoint or endpoint_dns; a list of endpoints and endpoint_dns only for a mirror. */
static int finish_registry(const rgm_cfgval_ctx_t *c, const char *key, void *base)
{
    const rgm_registry_cfg_t *r = base;
    size_t i;

    if (!r->endpoint && !r->endpoint_dns)
        return rgm_cfgval_fail(c, key, "endpoint is required");
    if (r->endpoint && r->endpoint_dns)
        return rgm_cfgval_fail(c, key, "use either endpoint or endpoint_dns");
    if (!r->is_mirror && (r->endpoint_dns || r->endpoints_len > 1))
        return rgm_cfgval_fail(c, key, "%s needs \"mirror\": true (a cluster of regmirrors)",
                               r->endpoint_dns ? "endpoint_dns" : "an endpoint array");
    /* Replicas are named by base URLs: the hashing contract has no paths. */
    for (i = 0; r->endpoints_len > 1 && i < r->endpoints_len; i++) {
        if (check_base(c, key, "endpoint", r->endpoints[i]) < 0)
            return UV_EINVAL;
    }
    if (r->endpoint_dns && check_base(c, key, "endpoint_dns", r->endpoint_dns) < 0)
        return UV_EINVAL;
    if (!r->client_cert_file != !r->client_key_file)
        return rgm_cfgval_fail(c, key, "client_cert_file and client_key_file go together");
    return 0;
}

/* username goes with password_file, docker_config alone; then the files are read, so that a
 * wrong combination is reported before a missing file. */
static int finish_credentials(const rgm_cfgval_ctx_t *c, const char *key, void *base)
{
    rgm_registry_cfg_t *r = base;
    char kpath[KEY_MAX];

    if ((r->docker_config && (r->username || r->password_file)) ||
        (r->cred_helper && (r->username || r->password_file || r->docker_config)))
        return rgm_cfgval_fail(c, key,
                               "use one of: username with password_file, docker_config, helper");
    if (r->username && !r->password_file)
        return rgm_cfgval_fail(c, key, "username needs password_file");
    if (r->password_file && !r->username)
        return rgm_cfgval_fail(c, key, "password_file needs username");
    if (r->password) {
        explicit_bzero(r->password, strlen(r->password));
        RGM_FREE(r->password);
    }
    if (r->password_file) {
        if (snprintf(kpath, sizeof(kpath), "%s.password_file", key) < 0)
            kpath[0] = '\0';
        return rgm_cfgval_secret_file(c, kpath, r->password_file, &r->password);
    }
    if (r->docker_config) {
        if (snprintf(kpath, sizeof(kpath), "%s.docker_config", key) < 0)
            kpath[0] = '\0';
        return rgm_cfgval_readable(c, kpath, r->docker_config);
    }
    return 0;
}

static int finish_tls(const rgm_cfgval_ctx_t *c, const char *key, void *base)
{
    const rgm_config_t *cfg = base;

    if (!cfg->tls_cert_file != !cfg->tls_key_file)
        return rgm_cfgval_fail(c, key, "cert_file and key_file go together");
    if (cfg->tls_client_ca_file && !cfg->tls_cert_file)
        return rgm_cfgval_fail(c, key, "client_ca_file needs cert_file and key_file");
    return 0;
}

/* ---- member access ---- */

static int is_string_type(enum rgm_cfgtype t)
{
    return t == RGM_CFG_STRING || t == RGM_CFG_FILE || t == RGM_CFG_REGNAME || t == RGM_CFG_URL;
}

/* The types stored as a char ** with its size_t count at off2. */
static int is_list_type(enum rgm_cfgtype t)
{
    return t == RGM_CFG_ADDRS || t == RGM_CFG_CIDRS || t == RGM_CFG_STRINGS || t == RGM_CFG_URLS;
}

static char **string_at(const rgm_cfgkey_t *k, void *base)
{
    return (char **)(void *)((char *)base + k->off);
}

static const char *string_of(const rgm_cfgkey_t *k, const void *base)
{
    return *(char *const *)(const void *)((const char *)base + k->off);
}

static size_t count_of(const rgm_cfgkey_t *k, const void *base)
{
    return *(const size_t *)(const void *)((const char *)base + k->off2);
}

static void set_count(const rgm_cfgkey_t *k, void *base, size_t n)
{
    *(size_t *)(void *)((char *)base + k->off2) = n;
}

/* Integers are stored at the member's own width (unsigned, size_t, uint64_t, int). */
static void store_uint(const rgm_cfgkey_t *k, void *base, uint64_t u)
{
    uint32_t u32 = (uint32_t)u;

    RGM_BUG_ON(k->size != sizeof(u32) && k->size != sizeof(u));
    if (k->size == sizeof(u))
        memcpy((char *)base + k->off, &u, sizeof(u));
    else
        memcpy((char *)base + k->off, &u32, sizeof(u32));
}

static uint64_t load_uint(const rgm_cfgkey_t *k, const void *base)
{
    uint64_t u = 0;
    uint32_t u32 = 0;

    if (k->size == sizeof(u)) {
        memcpy(&u, (const char *)base + k->off, sizeof(u));
        return u;
    }
    memcpy(&u32, (const char *)base + k->off, sizeof(u32));
    return u32;
}

static void store_int(const rgm_cfgkey_t *k, void *base, int i)
{
    RGM_BUG_ON(k->size != sizeof(i));
    memcpy((char *)base + k->off, &i, sizeof(i));
}

static int load_int(const rgm_cfgkey_t *k, const void *base)
{
    int i = 0;

    memcpy(&i, (const char *)base + k->off, sizeof(i));
    return i;
}

static void free_string(const rgm_cfgkey_t *k, char **slot)
{
    if (*slot && (k->flags & RGM_CFGKEY_SECRET))
        explicit_bzero(*slot, strlen(*slot));
    RGM_FREE(*slot);
}

static void free_strings(char **v, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void free_owned(const rgm_cfgtable_t *t, void *base);

static void free_registries(const rgm_cfgtable_t *sub, rgm_registry_cfg_t *regs, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        free(regs[i].name);
        free_owned(sub, &regs[i]);
    }
    free(regs);
}

/* ---- applying JSON ---- */

static int is_doc_key(const char *key)
{
    return key[0] == '/' && key[1] == '/';
}

/* prefix.key into out (KEY_MAX bytes); a path too long is cut short, which only shortens a
 * message. */
static void join_key(char *out, const char *prefix, const char *key)
{
    int n;

    if (prefix && *prefix)
        n = snprintf(out, KEY_MAX, "%s.%s", prefix, key);
    else
        n = snprintf(out, KEY_MAX, "%s", key);
    if (n < 0)
        out[0] = '\0';
}

static int accepts_null(const rgm_cfgkey_t *k)
{
    return is_string_type(k->type) && !k->def && !(k->flags & RGM_CFGKEY_REQUIRED);
}

static const rgm_cfgkey_t *find_key(const rgm_cfgtable_t *t, const char *name)
{
    size_t i;

    for (i = 0; i < t->len; i++) {
        if (!(t->keys[i].flags & RGM_CFGKEY_DERIVED) && strcmp(t->keys[i].name, name) == 0)
            return &t->keys[i];
    }
    return NULL;
}

/* "unknown key", with the keys it could have been when the table asks for it. */
static int fail_unknown(const rgm_cfgval_ctx_t *c, const rgm_cfgtable_t *t, const char *key)
{
    char hint[KEY_MAX] = "";
    size_t i, len = 0, left = 0;
    int n;

    if (!t->is_hinted)
        return rgm_cfgval_fail(c, key, "unknown key");
    for (i = 0; i < t->len; i++)
        left += !(t->keys[i].flags & RGM_CFGKEY_DERIVED);
    for (i = 0; i < t->len && len < sizeof(hint); i++) {
        if (t->keys[i].flags & RGM_CFGKEY_DERIVED)
            continue;
        left--;
        n = snprintf(hint + len, sizeof(hint) - len, "%s%s",
                     len == 0 ? "" : (left == 0 ? " or " : ", "), t->keys[i].name);
        if (n < 0)
            break;
        len += (size_t)n;
    }
    return rgm_cfgval_fail(c, key, "unknown key (expected %s)", hint);
}

static char ***list_at(const rgm_cfgkey_t *k, void *base)
{
    return (char ***)(void *)((char *)base + k->off2);
}

static size_t *list_len_at(const rgm_cfgkey_t *k, void *base)
{
    return (size_t *)(void *)((char *)base + k->off2 + sizeof(char **));
}

static int check_endpoint(const rgm_cfgval_ctx_t *c, const char *key, const json_t *v)
{
    char *out = NULL;
    int rc;

    if (!json_is_string(v))
        return rgm_cfgval_fail(c, key, "expected a URL string, got %s", rgm_cfgval_type_name(v));
    rc = rgm_cfgval_endpoint(c, key, json_string_value(v), &out);
    free(out);
    return rc;
}

/* A LIST key given an array: every URL (trailing slashes dropped) to the list, the first to
 * the member. */
static int set_url_list(const rgm_cfgval_ctx_t *c, const rgm_cfgkey_t *k, void *base,
                        const char *key, const json_t *v)
{
    char **list = NULL;
    char *val = NULL;
    size_t n = 0, i;

    if (rgm_cfgval_list(c, key, v, "URL", check_endpoint, &list, &n) < 0)
        return UV_EINVAL;
    for (i = 0; i < n; i++) {
        if (rgm_cfgval_endpoint(c, key, list[i], &val) < 0) {
            free_strings(list, n);
            return UV_EINVAL;
        }
        free(list[i]);
        list[i] = val;
    }
    free_strings(*list_at(k, base), *list_len_at(k, base));
    *list_at(k, base) = list;
    *list_len_at(k, base) = n;
    free_string(k, string_at(k, base));
    *string_at(k, base) = rgm_strdup(list[0]);
    return 0;
}

static int set_string(const rgm_cfgval_ctx_t *c, const rgm_cfgkey_t *k, void *base, const char *key,
                      const json_t *v)
{
    const char *s = NULL;
    char *val = NULL;

    if ((k->flags & RGM_CFGKEY_LIST) && json_is_array(v))
        return set_url_list(c, k, base, key, v);
    if (k->flags & RGM_CFGKEY_LIST) {
        free_strings(*list_at(k, base), *list_len_at(k, base));
        *list_at(k, base) = NULL;
        *list_len_at(k, base) = 0;
    }
    if (rgm_cfgval_string(c, key, v, accepts_null(k), &s) < 0)
        return UV_EINVAL;
    if (s && k->type == RGM_CFG_REGNAME && rgm_cfgval_regname(c, key, s) < 0)
        return UV_EINVAL;
    if (s && k->type == RGM_CFG_FILE && rgm_cfgval_readable(c, key, s) < 0)
        return UV_EINVAL;
    if (s && k->type == RGM_CFG_URL && rgm_cfgval_endpoint(c, key, s, &val) < 0)
        return UV_EINVAL;
    if (s && !val)
        val = rgm_strdup(s);
    free_string(k, string_at(k, base));
    *string_at(k, base) = val;
    return 0;
}

static int check_cidr(const rgm_cfgval_ctx_t *c, const char *key, const json_t *v)
{
    rgm_cidr_t cidr;

    if (!json_is_string(v))
        return rgm_cfgval_fail(c, key, "expected a \"ADDRESS/BITS\" string, got %s",
                               rgm_cfgval_type_name(v));
    if (rgm_cidr_parse(json_string_value(v), &cidr) < 0)
        return rgm_cfgval_fail(c, key,
                               "bad network \"%.200s\" (use ADDRESS/BITS with the host bits zero, "
                               "e.g. 10.0.0.0/8 or fd00::/8)",
                               json_string_value(v));
    return 0;
}

/* A pattern or reference of a STRINGS list: a string without spaces or control characters. */
static int check_word(const rgm_cfgval_ctx_t *c, const char *key, const json_t *v)
{
    const char *s = NULL;
    const char *p;

    if (rgm_cfgval_string(c, key, v, 0, &s) < 0)
        return UV_EINVAL;
    for (p = s; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            return rgm_cfgval_fail(c, key, "\"%s\" holds a space or a control character", s);
    return 0;
}

/* ADDRS, CIDRS and STRINGS: one string or an array of them (an empty array when the key
 * allows it; always for STRINGS, since [] is how an unset one prints). */
static int set_addrs(const rgm_cfgval_ctx_t *c, const rgm_cfgkey_t *k, void *base, const char *key,
                     const json_t *v)
{
    const int is_cidr = k->type == RGM_CFG_CIDRS;
    char **list = NULL;
    size_t n = 0;
    int is_words = k->type == RGM_CFG_STRINGS;

    if (k->type == RGM_CFG_URLS && json_is_null(v)) {
        /* unset: an empty list prints as null, and reads back as such */
    } else if (k->type == RGM_CFG_URLS) {
        if (rgm_cfgval_list(c, key, v, "URL", rgm_cfgval_base_url, &list, &n) < 0)
            return UV_EINVAL;
    } else if (((k->flags & RGM_CFGKEY_EMPTY_OK) || is_words) && json_is_array(v) &&
               json_array_size(v) == 0) {
        list = NULL;
    } else if (rgm_cfgval_list(c, key, v,
                               is_cidr    ? "network"
                               : is_words ? "pattern"
                                          : "address",
                               is_cidr    ? check_cidr
                               : is_words ? check_word
                                          : rgm_cfgval_hostport,
                               &list, &n) < 0) {
        return UV_EINVAL;
    }
    free_strings(*(char ***)(void *)((char *)base + k->off), count_of(k, base));
    *(char ***)(void *)((char *)base + k->off) = list;
    set_count(k, base, n);
    return 0;
}

/* "registries": NAME -> object, replacing the whole set. */
static int set_registries(const rgm_cfgval_ctx_t *c, const rgm_cfgkey_t *k, void *base,
                          const char *key, const json_t *obj)
{
    rgm_registry_cfg_t **slot = (rgm_registry_cfg_t **)(void *)((char *)base + k->off);
    rgm_registry_cfg_t *regs = NULL;
    char kpath[KEY_MAX];
    const char *name;
    size_t n = 0;
    json_t *v;
    int err = 0;

    if (!json_is_object(obj))
        return rgm_cfgval_fail(c, key, "expected an object of NAME: {endpoint...}, got %s",
                               rgm_cfgval_type_name(obj));
    regs = rgm_calloc(json_object_size(obj), sizeof(*regs));
    json_object_foreach((json_t *)obj, name, v)
    {
        if (is_doc_key(name))
            continue;
        join_key(kpath, key, name);
        err = rgm_cfgval_regname(c, kpath, name);
        if (err < 0)
            goto out;
        regs[n].name = rgm_strdup(name);
        rgm_cfgschema_defaults(k->sub, &regs[n]);
        n++;
        err = rgm_cfgschema_apply(c, k->sub, &regs[n - 1], kpath, v);
        if (err < 0)
            goto out;
    }
    free_registries(k->sub, *slot, count_of(k, base));
    *slot = regs;
    set_count(k, base, n);
    regs = NULL;
out:
    if (regs)
        free_registries(k->sub, regs, n);
    return err;
}

static int set_value(const rgm_cfgval_ctx_t *c, const rgm_cfgkey_t *k, void *base, const char *key,
                     const json_t *v)
{
    uint64_t u = 0;
    int i = 0;
    unsigned opt = (k->flags & RGM_CFGKEY_OPTIONAL) ? 1 : 0;

    if (opt && json_is_null(v)) {
        if (k->type == RGM_CFG_BOOL)
            store_int(k, base, 0);
        else
            store_uint(k, base, 0);
        return 0;
    }
    switch (k->type) {
    case RGM_CFG_STRING:
    case RGM_CFG_FILE:
    case RGM_CFG_REGNAME:
    case RGM_CFG_URL:
        return set_string(c, k, base, key, v);
    case RGM_CFG_BOOL:
        if (rgm_cfgval_bool(c, key, v, &i) < 0)
            return UV_EINVAL;
        store_int(k, base, i + (int)opt);
        return 0;
    case RGM_CFG_LEVEL:
        if (rgm_cfgval_level(c, key, v, &i) < 0)
            return UV_EINVAL;
        store_int(k, base, i);
        return 0;
    case RGM_CFG_UINT:
        if (rgm_cfgval_uint(c, key, v, k->min, k->max, &u) < 0)
            return UV_EINVAL;
        store_uint(k, base, u + opt);
        return 0;
    case RGM_CFG_SIZE:
        if (rgm_cfgval_size(c, key, v, k->min, k->max, &u) < 0)
            return UV_EINVAL;
        store_uint(k, base, u);
        return 0;
    case RGM_CFG_DURATION:
        if (rgm_cfgval_duration(c, key, v, k->min, &u) < 0)
            return UV_EINVAL;
        store_uint(k, base, u + opt);
        return 0;
    case RGM_CFG_ADDRS:
    case RGM_CFG_CIDRS:
    case RGM_CFG_STRINGS:
    case RGM_CFG_URLS:
        return set_addrs(c, k, base, key, v);
    case RGM_CFG_OBJECT:
        return rgm_cfgschema_apply(c, k->sub, base, key, v);
    case RGM_CFG_REGISTRIES:
        return set_registries(c, k, base, key, v);
    }
    RGM_BUG_ON(1);
    return UV_EINVAL;
}

int rgm_cfgschema_apply(const rgm_cfgval_ctx_t *c, const rgm_cfgtable_t *t, void *base,
                        const char *key, const json_t *obj)
{
    const rgm_cfgkey_t *k;
    char kpath[KEY_MAX];
    const char *name;
    size_t i;
    json_t *v;

    if (!json_is_object(obj))
        return rgm_cfgval_fail(c, key, "expected an object, got %s", rgm_cfgval_type_name(obj));
    json_object_foreach((json_t *)obj, name, v)
    {
        if (is_doc_key(name))
            continue;
        join_key(kpath, key, name);
        k = find_key(t, name);
        if (!k)
            return fail_unknown(c, t, kpath);
        if (set_value(c, k, base, kpath, v) < 0)
            return UV_EINVAL;
    }
    for (i = 0; i < t->len; i++) {
        k = &t->keys[i];
        if ((k->flags & RGM_CFGKEY_REQUIRED) && is_string_type(k->type) && !string_of(k, base))
            return rgm_cfgval_fail(c, key, "%s is required", k->name);
    }
    return t->finish ? t->finish(c, key, base) : 0;
}

/* ---- defaults, copies, freeing ---- */

void rgm_cfgschema_defaults(const rgm_cfgtable_t *t, void *base)
{
    rgm_cfgval_ctx_t c;
    char err[512];
    const rgm_cfgkey_t *k;
    json_t *v;
    size_t i;
    int rc;

    c.file = "built-in default";
    c.err = err;
    c.errlen = sizeof(err);
    for (i = 0; i < t->len; i++) {
        k = &t->keys[i];
        if (k->type == RGM_CFG_OBJECT)
            rgm_cfgschema_defaults(k->sub, base);
        if (!k->def)
            continue;
        if (k->type == RGM_CFG_BOOL || k->type == RGM_CFG_UINT || k->type == RGM_CFG_REGISTRIES)
            v = json_loads(k->def, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
        else
            v = json_string(k->def);
        RGM_BUG_ON(!v);
        rc = set_value(&c, k, base, k->name, v);
        json_decref(v);
        if (rc < 0)
            fprintf(stderr, "%s\n", err);
        RGM_BUG_ON(rc < 0);
    }
}

static void copy_owned(const rgm_cfgtable_t *t, void *dst, const void *src)
{
    const rgm_registry_cfg_t *sregs;
    rgm_registry_cfg_t *dregs;
    const rgm_cfgkey_t *k;
    char *const *sv;
    char **dv;
    size_t i, j, n;

    for (i = 0; i < t->len; i++) {
        k = &t->keys[i];
        if (is_string_type(k->type)) {
            *string_at(k, dst) = string_of(k, src) ? rgm_strdup(string_of(k, src)) : NULL;
            if (k->flags & RGM_CFGKEY_LIST) {
                n = *list_len_at(k, (void *)src);
                sv = *list_at(k, (void *)src);
                dv = n ? rgm_calloc(n, sizeof(char *)) : NULL;
                for (j = 0; j < n; j++)
                    dv[j] = rgm_strdup(sv[j]);
                *list_at(k, dst) = dv;
            }
        } else if (is_list_type(k->type)) {
            n = count_of(k, src);
            sv = *(char **const *)(const void *)((const char *)src + k->off);
            dv = rgm_calloc(n, sizeof(char *));
            for (j = 0; j < n; j++)
                dv[j] = rgm_strdup(sv[j]);
            *(char ***)(void *)((char *)dst + k->off) = dv;
        } else if (k->type == RGM_CFG_REGISTRIES) {
            n = count_of(k, src);
            sregs = *(rgm_registry_cfg_t *const *)(const void *)((const char *)src + k->off);
            dregs = rgm_calloc(n, sizeof(*dregs));
            for (j = 0; j < n; j++) {
                dregs[j] = sregs[j];
                dregs[j].name = rgm_strdup(sregs[j].name);
                copy_owned(k->sub, &dregs[j], &sregs[j]);
            }
            *(rgm_registry_cfg_t **)(void *)((char *)dst + k->off) = dregs;
        } else if (k->type == RGM_CFG_OBJECT) {
            copy_owned(k->sub, dst, src);
        }
    }
}

void rgm_cfgschema_copy(const rgm_cfgtable_t *t, void *dst, const void *src)
{
    memcpy(dst, src, t->size);
    copy_owned(t, dst, src);
}

static void free_owned(const rgm_cfgtable_t *t, void *base)
{
    const rgm_cfgkey_t *k;
    size_t i;

    for (i = 0; i < t->len; i++) {
        k = &t->keys[i];
        if (is_string_type(k->type))
            free_string(k, string_at(k, base));
        if (is_string_type(k->type) && (k->flags & RGM_CFGKEY_LIST))
            free_strings(*list_at(k, base), *list_len_at(k, base));
        else if (is_list_type(k->type))
            free_strings(*(char ***)(void *)((char *)base + k->off), count_of(k, base));
        else if (k->type == RGM_CFG_REGISTRIES)
            free_registries(k->sub, *(rgm_registry_cfg_t **)(void *)((char *)base + k->off),
                            count_of(k, base));
        else if (k->type == RGM_CFG_OBJECT)
            free_owned(k->sub, base);
    }
}

void rgm_cfgschema_free(const rgm_cfgtable_t *t, void *base)
{
    free_owned(t, base);
    memset(base, 0, t->size);
}

/* ---- printing ---- */

static json_t *dump_object(const rgm_cfgval_ctx_t *c, const rgm_cfgtable_t *t, const void *base,
                           const char *prefix);

/* A string as JSON; NULL (and a message) when it is not UTF-8, which only a flag can give. */
static json_t *dump_string(const rgm_cfgval_ctx_t *c, const char *key, const char *s)
{
    json_t *v = json_string(s);

    if (!v)
        rgm_cfgval_fail(c, key, "is not valid UTF-8, so it cannot be printed as JSON");
    return v;
}

static json_t *dump_registries(const rgm_cfgval_ctx_t *c, const rgm_cfgkey_t *k, const void *base,
                               const char *key)
{
    const rgm_registry_cfg_t *regs =
        *(rgm_registry_cfg_t *const *)(const void *)((const char *)base + k->off);
    json_t *obj = json_object(), *v;
    char kpath[KEY_MAX];
    size_t i;

    for (i = 0; obj && i < count_of(k, base); i++) {
        join_key(kpath, key, regs[i].name);
        v = dump_object(c, k->sub, &regs[i], kpath);
        if (!v || json_object_set_new(obj, regs[i].name, v) < 0) {
            json_decref(obj);
            return NULL;
        }
    }
    return obj;
}

static json_t *dump_value(const rgm_cfgval_ctx_t *c, const rgm_cfgkey_t *k, const void *base,
                          const char *key)
{
    char *const *sv;
    json_t *arr, *v;
    size_t i;
    uint64_t opt = (k->flags & RGM_CFGKEY_OPTIONAL) ? 1 : 0;

    if (opt && (k->type == RGM_CFG_BOOL ? load_int(k, base) == 0 : load_uint(k, base) == 0))
        return json_null();
    switch (k->type) {
    case RGM_CFG_STRING:
    case RGM_CFG_FILE:
    case RGM_CFG_REGNAME:
    case RGM_CFG_URL:
        if ((k->flags & RGM_CFGKEY_LIST) && *list_len_at(k, (void *)base) > 1) {
            arr = json_array();
            sv = *list_at(k, (void *)base);
            for (i = 0; arr && i < *list_len_at(k, (void *)base); i++) {
                v = dump_string(c, key, sv[i]);
                if (!v || json_array_append_new(arr, v) < 0) {
                    json_decref(arr);
                    return NULL;
                }
            }
            return arr;
        }
        if (!string_of(k, base))
            return json_null();
        if (k->flags & RGM_CFGKEY_SECRET)
            return json_string("<redacted>");
        return dump_string(c, key, string_of(k, base));
    case RGM_CFG_BOOL:
        return json_boolean(load_int(k, base) - (int)opt);
    case RGM_CFG_LEVEL:
        if (!rgm_cfgval_level_name(load_int(k, base))) {
            rgm_cfgval_fail(c, key, "%d is not a log level", load_int(k, base));
            return NULL;
        }
        return json_string(rgm_cfgval_level_name(load_int(k, base)));
    case RGM_CFG_UINT:
        return json_integer((json_int_t)(load_uint(k, base) - opt));
    case RGM_CFG_SIZE:
        return rgm_cfgval_size_json(load_uint(k, base));
    case RGM_CFG_DURATION:
        return rgm_cfgval_duration_json(load_uint(k, base) - opt);
    case RGM_CFG_URLS:
        if (count_of(k, base) == 0)
            return json_null();
        /* fall through */
    case RGM_CFG_ADDRS:
    case RGM_CFG_CIDRS:
    case RGM_CFG_STRINGS:
        arr = json_array();
        sv = *(char **const *)(const void *)((const char *)base + k->off);
        for (i = 0; arr && i < count_of(k, base); i++) {
            v = dump_string(c, key, sv[i]);
            if (!v || json_array_append_new(arr, v) < 0) {
                json_decref(arr);
                return NULL;
            }
        }
        return arr;
    case RGM_CFG_OBJECT:
        return dump_object(c, k->sub, base, key);
    case RGM_CFG_REGISTRIES:
        return dump_registries(c, k, base, key);
    }
    return NULL;
}

static json_t *dump_object(const rgm_cfgval_ctx_t *c, const rgm_cfgtable_t *t, const void *base,
                           const char *prefix)
{
    json_t *obj = json_object(), *v;
    const rgm_cfgkey_t *k;
    char kpath[KEY_MAX];
    size_t i;

    for (i = 0; obj && i < t->len; i++) {
        k = &t->keys[i];
        if ((k->flags & RGM_CFGKEY_DERIVED) && is_string_type(k->type) && !string_of(k, base))
            continue;
        join_key(kpath, prefix, k->name);
        v = dump_value(c, k, base, kpath);
        if (!v || json_object_set_new(obj, k->name, v) < 0) {
            json_decref(obj);
            return NULL;
        }
    }
    return obj;
}

json_t *rgm_cfgschema_dump(const rgm_cfgval_ctx_t *c, const rgm_cfgtable_t *t, const void *base)
{
    return dump_object(c, t, base, "");
}

/* ---- describing ---- */

static const char *type_text(enum rgm_cfgtype t)
{
    static const char *const names[] = {
        [RGM_CFG_STRING] = "string",
        [RGM_CFG_FILE] = "file",
        [RGM_CFG_REGNAME] = "registry",
        [RGM_CFG_URL] = "URL",
        [RGM_CFG_BOOL] = "boolean",
        [RGM_CFG_UINT] = "integer",
        [RGM_CFG_SIZE] = "size",
        [RGM_CFG_DURATION] = "duration",
        [RGM_CFG_LEVEL] = "log level",
        [RGM_CFG_ADDRS] = "HOST:PORT list",
        [RGM_CFG_CIDRS] = "CIDR list",
        [RGM_CFG_OBJECT] = "object",
        [RGM_CFG_REGISTRIES] = "object of NAME: registry",
        [RGM_CFG_STRINGS] = "string list",
        [RGM_CFG_URLS] = "URL list",
    };

    return names[t];
}

void rgm_cfgschema_describe(const rgm_cfgtable_t *t, FILE *out)
{
    const rgm_cfgkey_t *k;
    const char *dflt;
    size_t i;

    for (i = 0; i < t->len; i++) {
        k = &t->keys[i];
        if (k->flags & RGM_CFGKEY_DERIVED)
            dflt = ", set at load";
        else if (k->flags & RGM_CFGKEY_REQUIRED)
            dflt = ", required";
        else if (k->flags & RGM_CFGKEY_OPTIONAL)
            dflt = ", default null";
        else if (k->type == RGM_CFG_OBJECT || k->type == RGM_CFG_REGISTRIES || !k->def)
            dflt = "";
        else
            dflt = ", default ";
        fprintf(out, "  %s%s (%s%s%s%s): %s\n", t->path, k->name, type_text(k->type),
                k->flags & RGM_CFGKEY_SECRET ? ", secret" : "", dflt,
                strcmp(dflt, ", default ") == 0 ? k->def : "", k->desc);
        if (k->sub)
            rgm_cfgschema_describe(k->sub, out);
    }
}
