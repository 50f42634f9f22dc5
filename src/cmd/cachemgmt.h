/* What serve and the offline commands share to manage the cache by image: the references
 * table, the pins (config patterns normalised and stored ones), eviction and its options
 * from the config. Internal to src/cmd. */
#ifndef RGM_CMD_CACHEMGMT_H
#define RGM_CMD_CACHEMGMT_H

#include "core/config.h"
#include "cache/store.h"
#include "cache/index.h"
#include "cache/fetch.h"
#include "cache/inuse.h"
#include "cache/refs.h"
#include "cache/pins.h"
#include "cache/evict.h"

struct rgm_cachemgmt {
    rgm_refs_t *refs;
    rgm_pins_t *pins;
    rgm_evict_t *evict;
    rgm_evict_opts_t opts;
};

/* Open refs and pins on idx (both borrowed, as are store, fetches and inuse, which may be
 * NULL), take the config's pins and limits. 0, or <0 with a message in err (a bad pin
 * pattern names its key). On error m is left for rgm_cachemgmt_close. */
RGM_MUST_CHECK int rgm_cachemgmt_open(struct rgm_cachemgmt *m, const rgm_config_t *cfg,
                                      rgm_index_t *idx, rgm_store_t *store, rgm_fetches_t *fetches,
                                      rgm_inuse_t *inuse, char *err, size_t errlen);
void rgm_cachemgmt_close(struct rgm_cachemgmt *m);

#endif
