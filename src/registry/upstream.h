#ifndef RGM_REGISTRY_UPSTREAM_H
#define RGM_REGISTRY_UPSTREAM_H
/* not written yet */
#endif
