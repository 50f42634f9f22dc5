#ifndef RGM_CORE_BUF_H
#define RGM_CORE_BUF_H
/* not written yet */
#endif
