#ifndef RGM_REGISTRY_ROUTES_H
#define RGM_REGISTRY_ROUTES_H
/* not written yet */
#endif
