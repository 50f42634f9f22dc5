/* regmirror gc, ls, verify: being written. */
#include <stdio.h>
#include "cmd/cmd.h"

int rgm_cmd_gc(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "regmirror gc: not available yet\n");
    return 1;
}

int rgm_cmd_ls(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "regmirror ls: not available yet\n");
    return 1;
}

int rgm_cmd_verify(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "regmirror verify: not available yet\n");
    return 1;
}
