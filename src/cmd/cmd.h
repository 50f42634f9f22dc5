/* The subcommands. Each takes the arguments after its own name (argv[0] is the subcommand)
 * and returns the process exit status: 0 success, 1 failure, 2 usage error. */
#ifndef RGM_CMD_CMD_H
#define RGM_CMD_CMD_H

int rgm_cmd_serve(int argc, char **argv);
int rgm_cmd_prewarm(int argc, char **argv);
int rgm_cmd_hosts(int argc, char **argv);
int rgm_cmd_gc(int argc, char **argv);
int rgm_cmd_ls(int argc, char **argv);
int rgm_cmd_verify(int argc, char **argv);
int rgm_cmd_config(int argc, char **argv);

#endif
