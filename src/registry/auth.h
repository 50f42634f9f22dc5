#ifndef RGM_REGISTRY_AUTH_H
#define RGM_REGISTRY_AUTH_H
/* not written yet */
#endif
