/* The subcommands. Each takes the arguments after its own name (argv[0] is the subcommand)
 * and returns the process exit status: 0 success, 1 failure, 2 usage error. */
#ifndef RGM_CMD_CMD_H
#define RGM_CMD_CMD_H

#include <stddef.h>

int rgm_cmd_serve(int argc, char **argv);
int rgm_cmd_prewarm(int argc, char **argv);
int rgm_cmd_hosts(int argc, char **argv);
int rgm_cmd_gc(int argc, char **argv);
int rgm_cmd_ls(int argc, char **argv);
int rgm_cmd_verify(int argc, char **argv);
int rgm_cmd_config(int argc, char **argv);
int rgm_cmd_purge(int argc, char **argv);
int rgm_cmd_pin(int argc, char **argv);
int rgm_cmd_unpin(int argc, char **argv);

struct rgm_config;
struct rgm_store;
struct rgm_index;
/* ls --images: one line (or JSON object) per cached image. 0 or 1 (printed). */
int rgm_images_list(struct rgm_config *cfg, struct rgm_store *store, struct rgm_index *idx,
                    int is_json);

/* Pin refs (n, borrowed) on cfg's storage as regmirror pin does: through the admin socket
 * when a server owns it, else in the index. Lines go to stderr. Returns the exit status
 * (0, 1, or 2 for a malformed reference). cfg is borrowed. */
int rgm_images_pin(const struct rgm_config *cfg, char *const *refs, size_t n);

#endif
