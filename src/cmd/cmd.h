#ifndef RGM_CMD_CMD_H
#define RGM_CMD_CMD_H
/* not written yet */
#endif
