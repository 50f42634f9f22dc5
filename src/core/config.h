/* Configuration: the struct, embedded defaults, the JSON file (jansson), command-line
 * overrides, and the effective configuration printed back as JSON. Every key is documented in
 * conf/regmirror.json; which keys exist is core/config-schema's table, how a value is parsed is
 * core/config-value's. Parsing is strict: a bad value names its key. */
#ifndef RGM_CORE_CONFIG_H
#define RGM_CORE_CONFIG_H

#include "core/common.h"

typedef struct rgm_registry_cfg {
    char *name;     /* "docker.io", "ghcr.io", "registry.example.com:5000" */
    char *endpoint; /* "https://registry-1.docker.io" (no trailing slash); NULL with
                     * endpoint_dns */
    /* "endpoint" given as an array (a mirror registry: the replicas of a cluster tier, each
     * digest sent to its owner, docs/cluster.md): every URL, endpoint being the first. NULL
     * and 0 when it is one string. endpoints_len must follow endpoints (the schema's list). */
    char **endpoints;
    size_t endpoints_len;
    char *endpoint_dns;  /* "http://NAME:PORT": a mirror registry's replicas are NAME's addresses */
    uint64_t tag_ttl_ms; /* tag_ttl, default 60 s */
    char *ca_file;       /* NULL: system CAs */
    int insecure_skip_verify;
    char *client_cert_file; /* presented to an https endpoint (mutual TLS); with client_key_file */
    char *client_key_file;
    int is_mirror;                 /* "mirror": true — the endpoint is another regmirror */
    unsigned max_parallel_fetches; /* 0: only the global limit */
    char *username;                /* credentials.username */
    char *password_file;           /* credentials.password_file: path of the password */
    char *password;                /* read from password_file at load; never logged or printed */
    char *docker_config;           /* credentials.docker_config: path of a docker config.json */
    /* Failure behaviour, each the registry's own when set, else the top level's: read them
     * with the rgm_config_*() accessors below. 0 is unset; a set value v is stored as v + 1
     * (RGM_CFGKEY_OPTIONAL), so a zeroed registry inherits everything. */
    uint64_t max_stale_opt;     /* ms + 1 */
    int stale_on_not_found_opt; /* 1 false, 2 true */
    uint64_t negative_ttl_opt;  /* ms + 1 */
    unsigned ratelimit_reserve_opt;
    char *cred_helper;         /* credentials.helper: docker-credential-NAME, or a path */
    uint64_t cred_lifetime_ms; /* credentials.lifetime: a helper's answer is kept (5 m) */
    uint64_t cred_timeout_ms;  /* credentials.timeout: a helper run's deadline (10 s) */
    int is_private;    /* "private": true — content fetched with the mirror's own identity is
                        * still subject to the access rule */
    int is_unlisted;   /* not a config key: made for allow_any_registry, so its host is a client's
                        * choice and may resolve only to public addresses (no SSRF) */
    char **repo_allow; /* repositories.allow: globs; none: every repository */
    size_t repo_allow_len;
    char **repo_deny; /* repositories.deny: globs, beating allow */
    size_t repo_deny_len;
} rgm_registry_cfg_t;

typedef struct rgm_config {
    char **listen; /* "127.0.0.1:5000" */
    size_t listen_len;
    char **health_listen; /* plain HTTP, only /healthz, /readyz and /metrics */
    size_t health_listen_len;

    /* "tls": every listener (not health_listen) serves HTTPS when cert_file is set */
    char *tls_cert_file; /* PEM, leaf then chain */
    char *tls_key_file;
    char *tls_client_ca_file; /* NULL: no client certificate asked for */

    char **allow_clients; /* CIDRs; none: everyone (checked at accept) */
    size_t allow_clients_len;
    char **allow_upstream_networks; /* CIDRs an unconfigured registry may resolve to */
    size_t allow_upstream_networks_len;

    char *storage;
    uint64_t max_cache_bytes; /* 0: unlimited */
    uint64_t orphan_grace_ms; /* a blob no cached manifest references is kept this long */
    char **pins;              /* "pin": image patterns never evicted */
    size_t pins_len;
    char *admin_socket; /* NULL: <storage>/admin.sock */
    char *default_registry;
    int allow_any_registry;
    unsigned max_parallel_fetches;
    rgm_registry_cfg_t *registries;
    size_t registries_len;

    /* downstream limits */
    unsigned max_connections;
    size_t max_header_bytes; /* all header lines together */
    unsigned max_headers;
    size_t max_url_len;
    uint64_t header_timeout_ms;   /* whole request head must arrive within (slowloris) */
    uint64_t idle_timeout_ms;     /* keep-alive idle */
    uint64_t send_timeout_ms;     /* no write progress for this long: client closed */
    uint64_t shutdown_timeout_ms; /* grace for responses in flight at SIGTERM */
    int use_sendfile;

    /* upstream */
    uint64_t upstream_connect_timeout_ms;
    uint64_t upstream_read_timeout_ms;
    uint64_t auth_cache_ttl_ms; /* private access decisions */

    /* failure behaviour: the defaults of every registry (see rgm_registry_cfg_t) */
    uint64_t max_stale_opt;     /* 0: no bound; else ms + 1 */
    int stale_on_not_found;     /* serve a public cached tag the upstream now answers 404 */
    uint64_t negative_ttl_ms;   /* a 404 is remembered this long; 0: off */
    unsigned ratelimit_reserve; /* RateLimit-Remaining below this: WARN, gauge, no prewarm */
    /* kubelet credential provider plugins (credential_providers.*, or the kubelet's flags) */
    char *cred_provider_config;        /* a CredentialProviderConfig file; NULL: none */
    char *cred_provider_bin_dir;       /* where the plugins are */
    uint64_t cred_provider_timeout_ms; /* a plugin run's deadline (the kubelet's 1 m) */
    /* cluster (docs/cluster.md): peers or peers_dns, and self; all unset: no cluster */
    char **cluster_peers; /* base URLs, as written */
    size_t cluster_peers_len;
    char *cluster_peers_dns; /* "http://NAME:PORT" */
    char *cluster_self;
    char *cluster_peer_ca_file;   /* verifies https peers; NULL: system CAs */
    char *cluster_peer_cert_file; /* presented to https peers (mutual TLS); with the key */
    char *cluster_peer_key_file;
    char *cluster_peer_server_name; /* peers' certificates name this; NULL: the peer URL's host */

    int log_level;  /* enum rgm_log_level */
    char *log_file; /* NULL: stderr */
    int access_log;
} rgm_config_t;

/* ---- a registry's failure behaviour: its own value, else the top level's ---- */

/* How long past its freshness a cached tag may be served while the upstream fails, in ms;
 * UINT64_MAX: no bound. */
static inline uint64_t rgm_config_max_stale(const rgm_config_t *cfg, const rgm_registry_cfg_t *r)
{
    uint64_t v = r->max_stale_opt ? r->max_stale_opt : cfg->max_stale_opt;

    return v ? v - 1 : UINT64_MAX;
}
/* 1: a public cached tag that the upstream answers 404 (to the mirror's own identity) is
 * served stale. */
static inline int rgm_config_stale_on_not_found(const rgm_config_t *cfg,
                                                const rgm_registry_cfg_t *r)
{
    return r->stale_on_not_found_opt ? r->stale_on_not_found_opt == 2 : cfg->stale_on_not_found;
}
/* How long an upstream 404 is remembered, in ms; 0: not at all. */
static inline uint64_t rgm_config_negative_ttl(const rgm_config_t *cfg, const rgm_registry_cfg_t *r)
{
    return r->negative_ttl_opt ? r->negative_ttl_opt - 1 : cfg->negative_ttl_ms;
}
/* Pulls kept back: RateLimit-Remaining below this warns and refuses prewarm. */
static inline unsigned rgm_config_ratelimit_reserve(const rgm_config_t *cfg,
                                                    const rgm_registry_cfg_t *r)
{
    return r->ratelimit_reserve_opt ? r->ratelimit_reserve_opt - 1 : cfg->ratelimit_reserve;
}

/* Embedded defaults: listen 127.0.0.1:5000, storage ./regmirror-data, docker.io and the
 * well-known public registries (DESIGN). */
void rgm_config_init(rgm_config_t *cfg);

/* Load a JSON file over the current values. On error returns <0 and writes a message naming the
 * key and the problem into err ("config.json: registries.docker.io.tag_ttl: bad duration
 * \"5x\""; syntax errors as "config.json:LINE:COL: ..."). Keys not known are errors; keys
 * starting with "//" are documentation and skipped at every level. "registries" in the file
 * replaces the embedded set. All or nothing: on error cfg is unchanged. password_file is read
 * here; ca_file and docker_config are checked readable. Blocking file I/O: call before the loop
 * runs. */
RGM_MUST_CHECK int rgm_config_load_file(rgm_config_t *cfg, const char *path, char *err,
                                        size_t errlen);

/* --registry NAME=URL: add or replace one registry's endpoint. An existing registry keeps its
 * other settings; a new one gets the defaults (tag_ttl 60 s, no credentials). 0 or UV_EINVAL
 * with a message in err. */
RGM_MUST_CHECK int rgm_config_set_registry(rgm_config_t *cfg, const char *arg, char *err,
                                           size_t errlen);

/* Check cross-key consistency (default_registry is configured, listen non-empty...). 0 or
 * UV_EINVAL with a message in err. */
RGM_MUST_CHECK int rgm_config_validate(const rgm_config_t *cfg, char *err, size_t errlen);

/* Borrowed; NULL when not configured. docker.io aliases (index.docker.io,
 * registry-1.docker.io) find docker.io. */
const rgm_registry_cfg_t *rgm_config_registry(const rgm_config_t *cfg, const char *name);

/* The command line of `regmirror serve` over cfg (from rgm_config_init): first every
 * --config FILE (-c), in order, wherever it stands, then the first max_files arguments that are
 * not options, read the same way; then the other flags in order (--listen replaces the list at
 * its first use and adds after that, --registry as rgm_config_set_registry, --storage,
 * --default-registry, --max-size, --allow-any-registry, --log-level, --log-file; --peer as
 * --listen, for cluster.peers; --peers-dns, --self); then
 * rgm_config_validate. argv[0] names the command in messages. Returns 0; 1 for --help (the
 * caller prints its usage); UV_EINVAL with the message in err, or with err empty when getopt
 * has printed it to stderr (an unknown option, a missing argument: the caller then prints its
 * usage). In every case cfg is left for rgm_config_free. Uses getopt's globals; blocking file
 * I/O: call before the loop runs. */
RGM_MUST_CHECK int rgm_config_parse_args(rgm_config_t *cfg, int argc, char **argv, int max_files,
                                         char *err, size_t errlen);

/* The effective configuration as indented JSON text ending in a newline: every key, in the
 * order of conf/regmirror.json, with defaults filled in; secrets (the password read from
 * password_file) as "<redacted>". Loading the text, without its redacted keys, gives the same
 * text again. Returns a malloc'd string (the caller frees), or NULL with a message in err when
 * a value cannot be written as JSON (a flag's bytes that are not UTF-8). */
char *rgm_config_dump(const rgm_config_t *cfg, char *err, size_t errlen);

/* Every key with its type, default and description, one per line, for --help. */
void rgm_config_describe(FILE *out);

/* Free everything cfg owns (secrets are wiped first) and zero it. */
void rgm_config_free(rgm_config_t *cfg);

/* 1 when name is a registry name as the config accepts it: a lowercase host name (labels of
 * [a-z0-9-], no leading/trailing '-') with an optional :PORT (1..65535); else 0. Useful to check
 * ?ns= values before they reach a URL. */
int rgm_config_valid_registry_name(const char *name);

#endif
