/* Config schema: the tables of keys (the top level, each registries.NAME and its
 * credentials), each key with its type, limits, default, where it is stored, whether it is
 * secret and a line of description; and the walks over a table: defaults, applying a JSON
 * object, deep copy, free, the effective configuration as JSON, the key list for --help.
 * Adding a key is one line in a table plus its struct field. How one value is parsed is
 * core/config-value's; files, flags and the public API are core/config's. */
#ifndef RGM_CORE_CONFIG_SCHEMA_H
#define RGM_CORE_CONFIG_SCHEMA_H

#include <jansson.h>

#include "core/common.h"
#include "core/config-value.h"

enum rgm_cfgtype {
    RGM_CFG_STRING,     /* char *: a non-empty string */
    RGM_CFG_FILE,       /* char *: the path of a file, checked readable at load */
    RGM_CFG_REGNAME,    /* char *: a registry name */
    RGM_CFG_URL,        /* char *: an http(s) endpoint, stored without trailing slashes */
    RGM_CFG_BOOL,       /* int: true or false */
    RGM_CFG_UINT,       /* unsigned integer of the member's width: an integer, min..max */
    RGM_CFG_SIZE,       /* uint64_t or size_t: a size string or an integer, min..max */
    RGM_CFG_DURATION,   /* uint64_t milliseconds: a duration string, min..365d */
    RGM_CFG_LEVEL,      /* int: a log level name */
    RGM_CFG_ADDRS,      /* char ** with its size_t count at off2: HOST:PORT, one or an array */
    RGM_CFG_CIDRS,      /* char ** with its size_t count at off2: CIDR prefixes, one or an array */
    RGM_CFG_URLS,       /* char ** with its size_t count at off2: base URLs, one or an array */
    RGM_CFG_OBJECT,     /* an object of the keys of sub, stored in this same struct */
    RGM_CFG_REGISTRIES, /* rgm_registry_cfg_t * with its size_t count at off2: NAME -> sub */
    RGM_CFG_STRINGS,    /* char ** with its size_t count at off2: one string or an array */
};

#define RGM_CFGKEY_SECRET   1u /* printed as "<redacted>"; wiped before it is freed */
#define RGM_CFGKEY_DERIVED  2u /* set by the load, not a file key: printed only when set */
#define RGM_CFGKEY_REQUIRED 4u /* the object must set it ("KEY: NAME is required") */
/* BOOL, UINT, DURATION: null or absent is unset, stored as 0; a value v is stored as v + 1,
 * so that a zeroed struct is all unset (a registry's key that inherits the top level's). */
#define RGM_CFGKEY_OPTIONAL 8u
#define RGM_CFGKEY_EMPTY_OK 16u /* ADDRS, CIDRS: an empty array (the default) means none */
/* URL only: an array of URLs is accepted too; the first goes to the member, all of them to the
 * char ** at off2 with its size_t count right after it (NULL, 0 for a string). */
#define RGM_CFGKEY_LIST     32u

typedef struct rgm_cfgtable rgm_cfgtable_t;

typedef struct rgm_cfgkey {
    const char *name;
    enum rgm_cfgtype type;
    size_t off;  /* offsetof the member in the table's struct */
    size_t size; /* sizeof the member: integers are stored at their own width */
    size_t off2; /* ADDRS, CIDRS, STRINGS and REGISTRIES: offsetof the count */
    uint64_t min, max;
    /* The default as text: for BOOL, UINT and REGISTRIES its JSON; for the other types the
     * string a file would give. NULL: unset (zero, NULL); a string-valued key without a default
     * and not REQUIRED also accepts null, meaning unset. */
    const char *def;
    unsigned flags;            /* RGM_CFGKEY_* */
    const rgm_cfgtable_t *sub; /* OBJECT and REGISTRIES */
    const char *desc;          /* one line for --help */
} rgm_cfgkey_t;

struct rgm_cfgtable {
    const char *path; /* how --help writes its keys' prefix: "", "registries.NAME." ... */
    const rgm_cfgkey_t *keys;
    size_t len;
    size_t size;   /* sizeof the struct the offsets are in */
    int is_hinted; /* an unknown key's message lists the keys */
    /* NULL, or the rules between keys, run once the object's keys are set (before that, keys
     * are parsed one by one). base is the struct; key the object's path. 0 or UV_EINVAL. */
    int (*finish)(const rgm_cfgval_ctx_t *c, const char *key, void *base);
};

/* The file's top level (over rgm_config_t) and each registries.NAME (rgm_registry_cfg_t). */
extern const rgm_cfgtable_t rgm_cfgschema_top;
extern const rgm_cfgtable_t rgm_cfgschema_registry;

/* Fill base, which must be zeroed, with every key's default (nested objects included). The
 * defaults are the table's own and must parse: a bad one is a bug (abort). */
void rgm_cfgschema_defaults(const rgm_cfgtable_t *t, void *base);

/* Set the keys of the JSON object obj on base, each replacing the value there; key is the
 * object's path in messages ("" for the top level). Keys starting with "//" are skipped, at
 * every level; an unknown key is an error. On error returns UV_EINVAL with the message in c,
 * and base holds what was set before the bad key (the caller applies to a copy). */
RGM_MUST_CHECK int rgm_cfgschema_apply(const rgm_cfgval_ctx_t *c, const rgm_cfgtable_t *t,
                                       void *base, const char *key, const json_t *obj);

/* dst = a deep copy of src (t->size bytes); free it with rgm_cfgschema_free. */
void rgm_cfgschema_copy(const rgm_cfgtable_t *t, void *dst, const void *src);

/* Free what the keys of base own (secrets wiped first) and zero the struct. */
void rgm_cfgschema_free(const rgm_cfgtable_t *t, void *base);

/* The effective values of base as a new JSON object (the caller owns it), in table order,
 * secrets as "<redacted>". NULL when a string is not UTF-8: the key is named in c. */
json_t *rgm_cfgschema_dump(const rgm_cfgval_ctx_t *c, const rgm_cfgtable_t *t, const void *base);

/* One line per key: "  path.key (type, default D): description". */
void rgm_cfgschema_describe(const rgm_cfgtable_t *t, FILE *out);

#endif
