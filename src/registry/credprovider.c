/* kubelet credential provider plugins at run time: the response cache per provider (Image,
 * then Registry, then Global key; expiry, a bound, forget), and jobs that go through the
 * matching providers in order for one image, from the cache or by running the plugin through
 * credrun, merging their auth maps, with every waiter for that image on one job. The config
 * is read by credprovider-config.c, responses checked by credprovider-response.c. */
#include "registry/credprovider.h"

#include <string.h>

#include "core/log.h"
#include "core/util.h"
#include "registry/credprovider-int.h"

#define CACHE_MAX  1024 /* entries per provider */
#define GLOBAL_KEY "global"

struct cache_entry {
    struct cache_entry *next;
    char *key;
    json_t *auth; /* normalised key -> {username, password} */
    uint64_t expires_ms;
};

struct job {
    struct job *next;
    rgm_credproviders_t *p;
    char *image;
    size_t idx; /* the provider running or to look at next */
    rgm_credrun_t *run;
    json_t *combined; /* normalised key -> {username, password, provider}; first wins */
    int first_err;
    char *first_err_provider;
    rgm_credproviders_wait_t *waiters;
};

struct rgm_credproviders_wait {
    rgm_credproviders_wait_t *next;
    struct job *job;
    rgm_credproviders_cb cb;
    void *ud;
};

/* ---- the cache ---- */

static void cache_drop_all(struct provider *pv)
{
    struct cache_entry *e;

    while (pv->cache) {
        e = pv->cache;
        pv->cache = e->next;
        free(e->key);
        json_decref(e->auth);
        free(e);
    }
    pv->n_cache = 0;
}

static void image_registry(const char *image, char *out, size_t len)
{
    size_t n = strcspn(image, "/");

    snprintf(out, len, "%.*s", (int)n, image);
}

static struct cache_entry *cache_find(struct provider *pv, const char *key, uint64_t now)
{
    struct cache_entry **pp;
    struct cache_entry *e;

    for (pp = &pv->cache; *pp;) {
        e = *pp;
        if (e->expires_ms <= now) {
            *pp = e->next;
            pv->n_cache--;
            free(e->key);
            json_decref(e->auth);
            free(e);
            continue;
        }
        if (strcmp(e->key, key) == 0)
            return e;
        pp = &e->next;
    }
    return NULL;
}

/* The kubelet looks up the Image key, then the Registry key, then the Global one. */
static json_t *cache_lookup(struct provider *pv, const char *image, uint64_t now)
{
    char reg[IMAGE_MAX];
    struct cache_entry *e = cache_find(pv, image, now);

    if (!e) {
        image_registry(image, reg, sizeof(reg));
        e = cache_find(pv, reg, now);
    }
    if (!e)
        e = cache_find(pv, GLOBAL_KEY, now);
    return e ? e->auth : NULL;
}

static void cache_del(struct provider *pv, const char *key)
{
    struct cache_entry **pp;
    struct cache_entry *e;

    for (pp = &pv->cache; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->key, key) == 0) {
            e = *pp;
            *pp = e->next;
            pv->n_cache--;
            free(e->key);
            json_decref(e->auth);
            free(e);
            return;
        }
    }
}

static void cache_put(struct provider *pv, const char *key, json_t *auth, uint64_t expires_ms)
{
    struct cache_entry *e;
    struct cache_entry **pp;

    cache_del(pv, key);
    if (pv->n_cache >= CACHE_MAX) {
        /* Drop the oldest (the list's tail). */
        for (pp = &pv->cache; (*pp)->next; pp = &(*pp)->next)
            ;
        e = *pp;
        *pp = NULL;
        pv->n_cache--;
        free(e->key);
        json_decref(e->auth);
        free(e);
    }
    e = rgm_calloc(1, sizeof(*e));
    e->key = rgm_strdup(key);
    e->auth = rgm_credprovider_normalised(auth);
    e->expires_ms = expires_ms;
    e->next = pv->cache;
    pv->cache = e;
    pv->n_cache++;
}

void rgm_credproviders_forget(rgm_credproviders_t *p, const char *image)
{
    char reg[IMAGE_MAX];
    size_t i;

    image_registry(image, reg, sizeof(reg));
    for (i = 0; i < p->n_provs; i++) {
        cache_del(&p->provs[i], image);
        cache_del(&p->provs[i], reg);
        cache_del(&p->provs[i], GLOBAL_KEY);
    }
}

/* ---- jobs ---- */

static int prov_matches(const struct provider *pv, const char *image)
{
    size_t i;

    for (i = 0; i < pv->n_match; i++)
        if (rgm_credprovider_match_image(pv->match[i], image))
            return 1;
    return 0;
}

int rgm_credproviders_matches(const rgm_credproviders_t *p, const char *image)
{
    size_t i;

    for (i = 0; i < p->n_provs; i++)
        if (prov_matches(&p->provs[i], image))
            return 1;
    return 0;
}

/* Add a provider's (normalised) auth to the job's, keeping earlier providers' entries. */
static void merge(json_t *combined, json_t *auth, const char *provider)
{
    const char *key;
    json_t *v;
    json_t *c;

    json_object_foreach(auth, key, v)
    {
        if (json_object_get(combined, key))
            continue;
        c = json_deep_copy(v);
        json_object_set_new(c, "provider", json_string(provider));
        json_object_set_new(combined, key, c);
    }
}

static void job_free(struct job *j)
{
    rgm_credproviders_wait_t *w;

    while (j->waiters) {
        w = j->waiters;
        j->waiters = w->next;
        free(w);
    }
    json_decref(j->combined);
    free(j->first_err_provider);
    free(j->image);
    free(j);
}

static void job_unlink(rgm_credproviders_t *p, struct job *j)
{
    struct job **pp;

    for (pp = &p->jobs; *pp; pp = &(*pp)->next) {
        if (*pp == j) {
            *pp = j->next;
            return;
        }
    }
}

static void job_fail(struct job *j, int err, const char *provider)
{
    if (j->first_err == 0) {
        j->first_err = err;
        j->first_err_provider = rgm_strdup(provider);
    }
}

/* The result of a finished job: cred filled or anonymous; returns err for the callback. */
static int job_result(struct job *j, rgm_cred_t *cred, const char **provider)
{
    json_t *e = rgm_credprovider_pick_entry(j->combined, j->image);
    const char *u;
    const char *pw;

    memset(cred, 0, sizeof(*cred));
    *provider = j->first_err_provider ? j->first_err_provider : "";
    if (!e)
        return j->first_err;
    u = rgm_credprovider_str(e, "username");
    pw = rgm_credprovider_str(e, "password");
    cred->username = rgm_strdup(u ? u : "");
    cred->secret = rgm_strdup(pw ? pw : "");
    *provider = rgm_credprovider_str(e, "provider");
    return 0;
}

static void on_plugin_done(const rgm_credrun_result_t *res, void *ud);

static int start_plugin(struct job *j, struct provider *pv)
{
    rgm_credrun_opts_t o;
    json_t *req;
    char *body;
    char img[IMAGE_MAX + 8];
    int err;

    req = json_pack("{s:s, s:s, s:s}", "apiVersion", pv->api_version, "kind",
                    "CredentialProviderRequest", "image", j->image);
    body = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!body)
        return UV_ENOMEM;
    memset(&o, 0, sizeof(o));
    o.file = pv->file;
    o.args = (const char *const *)pv->args;
    o.env = pv->env[0] ? (const char *const *)pv->env : NULL;
    o.input = body;
    o.input_len = strlen(body);
    o.timeout_ms = j->p->timeout_ms;
    o.stdout_max = RGM_CREDPROVIDER_OUT_MAX;
    err = rgm_credrun_start(j->p->loop, &o, on_plugin_done, j, &j->run);
    free(body);
    if (err < 0) {
        j->run = NULL;
        rgm_log(RGM_LOG_WARN, "credprovider", "provider %s for %s: cannot run %s: %s", pv->name,
                rgm_log_quote(j->image, img, sizeof(img)), pv->file, uv_strerror(err));
        return err;
    }
    j->p->runs++;
    j->p->live_runs++;
    return 0;
}

/* Go on from provider j->idx: use cached answers, start the next run. 1 when the job is
 * done, 0 when a run is in flight. */
static int job_step(struct job *j)
{
    rgm_credproviders_t *p = j->p;
    struct provider *pv;
    json_t *cached;
    uint64_t now = rgm_time_ms();
    int err;

    for (; j->idx < p->n_provs; j->idx++) {
        pv = &p->provs[j->idx];
        if (!prov_matches(pv, j->image))
            continue;
        cached = cache_lookup(pv, j->image, now);
        if (cached) {
            merge(j->combined, cached, pv->name);
            continue;
        }
        err = start_plugin(j, pv);
        if (err == 0)
            return 0;
        job_fail(j, err, pv->name);
    }
    return 1;
}

static void fmt_dur(uint64_t ms, char *out, size_t len)
{
    if (ms % 1000 == 0)
        snprintf(out, len, "%llus", (unsigned long long)(ms / 1000));
    else
        snprintf(out, len, "%llums", (unsigned long long)ms);
}

static const char *const keytype_names[] = {"Image", "Registry", "Global"};

/* Judge one plugin run: 0 with the response cached and merged, or <0 (logged). */
static int take_response(struct job *j, struct provider *pv, const rgm_credrun_result_t *res)
{
    rgm_credprovider_keytype_t kt = RGM_CP_KEY_IMAGE;
    json_t *auth = NULL;
    uint64_t dur = 0;
    int has_dur = 0;
    char why[300];
    char img[IMAGE_MAX + 8];
    char key[IMAGE_MAX];
    char life[32];
    char qwhy[600];

    rgm_log_quote(j->image, img, sizeof(img));
    if (res->err_line[0])
        rgm_log(RGM_LOG_WARN, "credprovider", "provider %s for %s: stderr: %s", pv->name, img,
                rgm_log_quote(res->err_line, qwhy, sizeof(qwhy)));
    if (res->err == UV_ETIMEDOUT) {
        rgm_log(RGM_LOG_WARN, "credprovider",
                "provider %s for %s: killed after %llu ms (timeout); going on without it", pv->name,
                img, (unsigned long long)res->elapsed_ms);
        return UV_ETIMEDOUT;
    }
    if (res->err < 0) {
        rgm_log(RGM_LOG_WARN, "credprovider", "provider %s for %s: %s; going on without it",
                pv->name, img,
                res->err == UV_E2BIG ? "too much output (killed)" : uv_strerror(res->err));
        return res->err;
    }
    if (res->exit_status != 0 || res->term_signal != 0) {
        rgm_log(RGM_LOG_WARN, "credprovider",
                "provider %s for %s: exit status %lld, signal %d (stdout not logged); going on "
                "without it",
                pv->name, img, (long long)res->exit_status, res->term_signal);
        return UV_EPROTO;
    }
    if (rgm_credprovider_parse_response(res->out, res->out_len, pv->api_version, &kt, &has_dur,
                                        &dur, &auth, why, sizeof(why)) < 0) {
        rgm_log(RGM_LOG_WARN, "credprovider",
                "provider %s for %s: bad CredentialProviderResponse (%s; %zu bytes, not "
                "logged); going on without it",
                pv->name, img, why, res->out_len);
        return UV_EPROTO;
    }
    if (!has_dur)
        dur = pv->default_cache_ms;
    if (kt == RGM_CP_KEY_IMAGE)
        snprintf(key, sizeof(key), "%s", j->image);
    else if (kt == RGM_CP_KEY_REGISTRY)
        image_registry(j->image, key, sizeof(key));
    else
        snprintf(key, sizeof(key), "%s", GLOBAL_KEY);
    if (dur > 0)
        cache_put(pv, key, auth, rgm_time_ms() + dur);
    fmt_dur(dur, life, sizeof(life));
    rgm_log(RGM_LOG_INFO, "credprovider",
            "provider %s for %s: exit 0 in %llu ms, %zu auth entries (passwords <redacted>), "
            "cacheKeyType %s, %s %s%s",
            pv->name, img, (unsigned long long)res->elapsed_ms, json_object_size(auth),
            keytype_names[kt], has_dur ? "cacheDuration" : "defaultCacheDuration", life,
            dur > 0 ? "" : " (not cached)");
    {
        json_t *norm = rgm_credprovider_normalised(auth);

        merge(j->combined, norm, pv->name);
        json_decref(norm);
    }
    json_decref(auth);
    return 0;
}

static void job_finish(struct job *j)
{
    rgm_credproviders_t *p = j->p;
    rgm_credproviders_wait_t *w;
    rgm_cred_t cred;
    const char *prov;
    int err;

    job_unlink(p, j);
    err = job_result(j, &cred, &prov);
    while (j->waiters) {
        w = j->waiters;
        j->waiters = w->next;
        w->cb(err, &cred, prov ? prov : "", w->ud);
        free(w);
    }
    rgm_cred_clear(&cred);
    job_free(j);
}

static void on_plugin_done(const rgm_credrun_result_t *res, void *ud)
{
    struct job *j = ud;
    rgm_credproviders_t *p = j->p;
    struct provider *pv;
    int err;

    j->run = NULL;
    p->live_runs--;
    if (p->is_freeing) {
        job_free(j);
        if (p->live_runs == 0)
            rgm_credproviders_free(p);
        return;
    }
    pv = &p->provs[j->idx];
    err = take_response(j, pv, res);
    if (err < 0)
        job_fail(j, err, pv->name);
    j->idx++;
    if (job_step(j))
        job_finish(j);
}

int rgm_credproviders_get(rgm_credproviders_t *p, const char *image, rgm_credproviders_cb cb,
                          void *ud, rgm_credproviders_wait_t **out, rgm_cred_t *now)
{
    struct job *j;
    rgm_credproviders_wait_t *w;
    const char *prov;
    int err;

    *out = NULL;
    memset(now, 0, sizeof(*now));
    if (!image || !image[0] || strlen(image) >= IMAGE_MAX)
        return UV_EINVAL;
    for (j = p->jobs; j; j = j->next)
        if (strcmp(j->image, image) == 0)
            break;
    if (!j) {
        j = rgm_calloc(1, sizeof(*j));
        j->p = p;
        j->image = rgm_strdup(image);
        j->combined = json_object();
        if (job_step(j)) {
            /* Everything came from the cache (or nothing matched, or nothing could start). */
            err = job_result(j, now, &prov);
            job_free(j);
            return err < 0 ? err : 1;
        }
        j->next = p->jobs;
        p->jobs = j;
    }
    w = rgm_calloc(1, sizeof(*w));
    w->job = j;
    w->cb = cb;
    w->ud = ud;
    w->next = j->waiters;
    j->waiters = w;
    *out = w;
    return 0;
}

void rgm_credproviders_cancel(rgm_credproviders_wait_t *w)
{
    rgm_credproviders_wait_t **pp;

    for (pp = &w->job->waiters; *pp; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            free(w);
            return;
        }
    }
}

uint64_t rgm_credproviders_runs(const rgm_credproviders_t *p)
{
    return p->runs;
}

void rgm_credproviders_free(rgm_credproviders_t *p)
{
    struct job *j;
    struct job *next;
    size_t i;

    if (!p)
        return;
    if (!p->is_freeing) {
        p->is_freeing = 1;
        /* A cancel may call on_plugin_done at once: hold a count so it cannot free p here. */
        p->live_runs++;
        for (j = p->jobs; j; j = next) {
            next = j->next;
            if (j->run)
                rgm_credrun_cancel(j->run); /* on_plugin_done frees j, then p */
        }
        p->jobs = NULL;
        p->live_runs--;
    }
    if (p->live_runs > 0)
        return;
    for (i = 0; i < p->n_provs; i++)
        cache_drop_all(&p->provs[i]);
    rgm_credprovider_provs_free(p);
    free(p);
}
