#ifndef RGM_REGISTRY_REFERENCE_H
#define RGM_REGISTRY_REFERENCE_H
/* not written yet */
#endif
