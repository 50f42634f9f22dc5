#ifndef RGM_HTTP_TLS_H
#define RGM_HTTP_TLS_H
/* not written yet */
#endif
