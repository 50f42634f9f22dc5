/* The mirror's own identity per registry. The source of each configured registry is decided
 * once at start (a docker config.json is read then); registries that are not configured
 * (allow_any_registry) and configured ones without credentials use the credential providers
 * when one matches, but "mirror": true endpoints never do (they get the client's identity). */
#include "registry/identity.h"

#include "core/log.h"
#include "registry/auth.h"
#include "registry/credhelper.h"
#include "registry/credprovider.h"

#define ERRORS_MAX 256
#define IMAGE_MAX  2048

enum source { SRC_NONE = 0, SRC_STATIC, SRC_HELPER };

struct regid {
    enum source src;
    rgm_cred_t cred; /* SRC_STATIC */
    char *helper;    /* SRC_HELPER */
};

struct errcount {
    char *source;
    char *registry;
    uint64_t n;
};

struct rgm_identity {
    uv_loop_t *loop;
    const rgm_config_t *cfg;
    struct regid *regs; /* parallel to cfg->registries */
    rgm_credhelper_t *helpers;
    rgm_credproviders_t *providers; /* NULL: none configured */
    struct errcount errors[ERRORS_MAX];
    size_t n_errors;
};

struct rgm_identity_wait {
    rgm_identity_t *id;
    rgm_credhelper_wait_t *hw;
    rgm_credproviders_wait_t *pw;
    rgm_identity_cb cb;
    void *ud;
    char source[300];
    char registry[300];
};

/* ---- set-up ---- */

static void setup_docker_config(struct regid *ri, const rgm_registry_cfg_t *reg)
{
    char *user = NULL;
    char *pass = NULL;
    char *helper = NULL;
    int err;

    err = rgm_auth_docker_config_helper(reg->docker_config, reg->name, &helper);
    if (err == 1) {
        ri->src = SRC_HELPER;
        ri->helper = helper;
        rgm_log(RGM_LOG_INFO, "identity", "registry %s: credential helper %s (from %s)", reg->name,
                helper, reg->docker_config);
        return;
    }
    if (rgm_auth_docker_config_lookup(reg->docker_config, reg->name, &user, &pass) == 0) {
        ri->src = SRC_STATIC;
        ri->cred.username = user;
        ri->cred.secret = pass;
        return;
    }
    rgm_log(RGM_LOG_WARN, "identity", "registry %s: no entry in docker config %s", reg->name,
            reg->docker_config);
    free(user);
    free(pass);
}

rgm_identity_t *rgm_identity_new(uv_loop_t *loop, const rgm_config_t *cfg, char *err, size_t errlen)
{
    rgm_identity_t *id = rgm_calloc(1, sizeof(*id));
    const rgm_registry_cfg_t *reg;
    size_t i;

    id->loop = loop;
    id->cfg = cfg;
    id->helpers = rgm_credhelper_new(loop);
    id->regs = rgm_calloc(cfg->registries_len ? cfg->registries_len : 1, sizeof(*id->regs));
    if (cfg->cred_provider_config &&
        rgm_credproviders_load(loop, cfg->cred_provider_config, cfg->cred_provider_bin_dir,
                               cfg->cred_provider_timeout_ms, err, errlen, &id->providers) < 0) {
        rgm_identity_free(id);
        return NULL;
    }
    if (id->providers)
        rgm_log(RGM_LOG_INFO, "identity", "%zu credential provider(s) from %s, plugins in %s",
                rgm_credproviders_count(id->providers), cfg->cred_provider_config,
                cfg->cred_provider_bin_dir);
    for (i = 0; i < cfg->registries_len; i++) {
        reg = &cfg->registries[i];
        if (reg->username && reg->password) {
            id->regs[i].src = SRC_STATIC;
            id->regs[i].cred.username = rgm_strdup(reg->username);
            id->regs[i].cred.secret = rgm_strdup(reg->password);
        } else if (reg->cred_helper) {
            id->regs[i].src = SRC_HELPER;
            id->regs[i].helper = rgm_strdup(reg->cred_helper);
        } else if (reg->docker_config) {
            setup_docker_config(&id->regs[i], reg);
        }
    }
    return id;
}

int rgm_identity_check(const rgm_config_t *cfg, char *err, size_t errlen)
{
    rgm_credproviders_t *p = NULL;
    int e;

    if (!cfg->cred_provider_config)
        return 0;
    e = rgm_credproviders_load(NULL, cfg->cred_provider_config, cfg->cred_provider_bin_dir,
                               cfg->cred_provider_timeout_ms, err, errlen, &p);
    rgm_credproviders_free(p);
    return e;
}

void rgm_identity_free(rgm_identity_t *id)
{
    size_t i;

    if (!id)
        return;
    for (i = 0; i < id->cfg->registries_len; i++) {
        rgm_cred_clear(&id->regs[i].cred);
        free(id->regs[i].helper);
    }
    free(id->regs);
    for (i = 0; i < id->n_errors; i++) {
        free(id->errors[i].source);
        free(id->errors[i].registry);
    }
    rgm_credhelper_free(id->helpers);
    rgm_credproviders_free(id->providers);
    free(id);
}

/* ---- which source ---- */

static const struct regid *regid_of(const rgm_identity_t *id, const rgm_registry_cfg_t *reg)
{
    size_t i = (size_t)(reg - id->cfg->registries);

    if (reg >= id->cfg->registries && i < id->cfg->registries_len)
        return &id->regs[i];
    return NULL;
}

/* Does reg have credentials of its own configured ("credentials" in the file)? */
static int has_own(const rgm_registry_cfg_t *reg)
{
    return (reg->username && reg->password) || reg->cred_helper || reg->docker_config;
}

/* The image as the kubelet names it to a plugin: registry[:port]/repository. */
static int image_of(const rgm_registry_cfg_t *reg, const char *repo, char *out, size_t len)
{
    int n = snprintf(out, len, "%s/%s", reg->name, repo);

    return n < 0 || (size_t)n >= len ? UV_ENAMETOOLONG : 0;
}

static int uses_providers(const rgm_identity_t *id, const rgm_registry_cfg_t *reg, const char *repo,
                          char *image, size_t len)
{
    if (!id->providers || reg->is_mirror || has_own(reg))
        return 0;
    if (image_of(reg, repo, image, len) < 0)
        return 0;
    return rgm_credproviders_matches(id->providers, image);
}

int rgm_identity_has(const rgm_identity_t *id, const rgm_registry_cfg_t *reg, const char *repo)
{
    const struct regid *ri = regid_of(id, reg);
    char image[IMAGE_MAX];

    if (reg->is_mirror)
        return 0;
    if (ri && ri->src != SRC_NONE)
        return 1;
    return uses_providers(id, reg, repo, image, sizeof(image));
}

/* ---- errors ---- */

void rgm_identity_count_error(rgm_identity_t *id, const char *source, const char *registry)
{
    size_t i;

    for (i = 0; i < id->n_errors; i++) {
        if (strcmp(id->errors[i].source, source) == 0 &&
            strcmp(id->errors[i].registry, registry) == 0) {
            id->errors[i].n++;
            return;
        }
    }
    if (id->n_errors == ERRORS_MAX)
        return; /* bounded: unconfigured registries could be many */
    id->errors[id->n_errors].source = rgm_strdup(source);
    id->errors[id->n_errors].registry = rgm_strdup(registry);
    id->errors[id->n_errors].n = 1;
    id->n_errors++;
}

int rgm_identity_metrics(const rgm_identity_t *id, rgm_buf_t *out)
{
    char src[400];
    char reg[400];
    size_t i;
    int err = 0;

    err |= rgm_buf_appendf(out, "# HELP regmirror_credential_errors_total Credential helper and "
                                "provider plugin failures (the request went on anonymously), "
                                "by source and registry.\n"
                                "# TYPE regmirror_credential_errors_total counter\n");
    for (i = 0; i < id->n_errors; i++)
        err |=
            rgm_buf_appendf(out, "regmirror_credential_errors_total{source=%s,registry=%s} %llu\n",
                            rgm_log_quote(id->errors[i].source, src, sizeof(src)),
                            rgm_log_quote(id->errors[i].registry, reg, sizeof(reg)),
                            (unsigned long long)id->errors[i].n);
    return err < 0 ? UV_ENOBUFS : 0;
}

uint64_t rgm_identity_runs(const rgm_identity_t *id)
{
    return rgm_credhelper_runs(id->helpers) +
           (id->providers ? rgm_credproviders_runs(id->providers) : 0);
}

/* ---- getting credentials ---- */

static void on_helper(int err, const rgm_cred_t *cred, void *ud)
{
    rgm_identity_wait_t *w = ud;

    if (err < 0)
        rgm_identity_count_error(w->id, w->source, w->registry);
    w->hw = NULL;
    w->cb(cred, w->ud);
    free(w);
}

static void on_provider(int err, const rgm_cred_t *cred, const char *provider, void *ud)
{
    rgm_identity_wait_t *w = ud;
    char src[300];

    if (err < 0) {
        snprintf(src, sizeof(src), "provider/%s", provider);
        rgm_identity_count_error(w->id, src, w->registry);
    }
    w->pw = NULL;
    w->cb(cred, w->ud);
    free(w);
}

static int get_helper(rgm_identity_t *id, const rgm_registry_cfg_t *reg, const char *helper,
                      rgm_identity_wait_t *w, rgm_cred_t *now, int *is_cached)
{
    rgm_credhelper_req_t rq;
    int r;

    memset(&rq, 0, sizeof(rq));
    rq.helper = helper;
    rq.server_url = rgm_auth_helper_server_url(reg->name);
    rq.registry = reg->name;
    rq.lifetime_ms = reg->cred_lifetime_ms;
    rq.timeout_ms = reg->cred_timeout_ms;
    snprintf(w->source, sizeof(w->source), "helper/%s", helper);
    r = rgm_credhelper_get(id->helpers, &rq, on_helper, w, &w->hw, now);
    if (r == 1) {
        *is_cached = 1;
        return 1;
    }
    if (r < 0) {
        rgm_identity_count_error(id, w->source, reg->name);
        return 1; /* anonymous; logged by credhelper */
    }
    return 0;
}

static int get_provider(rgm_identity_t *id, const char *image, rgm_identity_wait_t *w,
                        rgm_cred_t *now, int *is_cached)
{
    int r = rgm_credproviders_get(id->providers, image, on_provider, w, &w->pw, now);

    if (r == 1) {
        *is_cached = 1;
        return 1;
    }
    if (r < 0) {
        snprintf(w->source, sizeof(w->source), "provider");
        rgm_identity_count_error(id, w->source, w->registry);
        return 1;
    }
    return 0;
}

int rgm_identity_get(rgm_identity_t *id, const rgm_registry_cfg_t *reg, const char *repo,
                     rgm_identity_cb cb, void *ud, rgm_identity_wait_t **out, rgm_cred_t *now,
                     int *is_cached)
{
    const struct regid *ri = regid_of(id, reg);
    rgm_identity_wait_t *w;
    char image[IMAGE_MAX];
    int r = 1;

    *out = NULL;
    *is_cached = 0;
    memset(now, 0, sizeof(*now));
    if (reg->is_mirror)
        return 1;
    if (ri && ri->src == SRC_STATIC) {
        rgm_cred_copy(now, &ri->cred);
        return 1;
    }
    w = rgm_calloc(1, sizeof(*w));
    w->id = id;
    w->cb = cb;
    w->ud = ud;
    snprintf(w->registry, sizeof(w->registry), "%s", reg->name);
    if (ri && ri->src == SRC_HELPER)
        r = get_helper(id, reg, ri->helper, w, now, is_cached);
    else if (uses_providers(id, reg, repo, image, sizeof(image)))
        r = get_provider(id, image, w, now, is_cached);
    if (r == 1) {
        free(w);
        return 1;
    }
    *out = w;
    return 0;
}

void rgm_identity_cancel(rgm_identity_wait_t *w)
{
    if (w->hw)
        rgm_credhelper_cancel(w->hw);
    if (w->pw)
        rgm_credproviders_cancel(w->pw);
    free(w);
}

void rgm_identity_forget(rgm_identity_t *id, const rgm_registry_cfg_t *reg, const char *repo)
{
    const struct regid *ri = regid_of(id, reg);
    char image[IMAGE_MAX];

    if (ri && ri->src == SRC_HELPER)
        rgm_credhelper_forget(id->helpers, ri->helper, rgm_auth_helper_server_url(reg->name));
    else if (uses_providers(id, reg, repo, image, sizeof(image)))
        rgm_credproviders_forget(id->providers, image);
}
