/* regmirror prewarm: being written. */
#include <stdio.h>
#include "cmd/cmd.h"

int rgm_cmd_prewarm(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "regmirror prewarm: not available yet\n");
    return 1;
}
