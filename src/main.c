/* regmirror: subcommand dispatch. Each subcommand lives in src/cmd/. */
#include "config.h"

#include <stdio.h>
#include <string.h>
#include <signal.h>

#include "core/common.h"
#include "cmd/cmd.h"

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} commands[] = {
    {"serve", rgm_cmd_serve, "run the mirror"},
    {"prewarm", rgm_cmd_prewarm, "pull a list of images into a mirror's cache"},
    {"hosts", rgm_cmd_hosts, "write containerd hosts.toml files for a mirror"},
    {"gc", rgm_cmd_gc, "evict least recently used images over max_cache_bytes"},
    {"ls", rgm_cmd_ls, "list cached tags and objects (--images: by image)"},
    {"purge", rgm_cmd_purge, "remove cached images (by reference, registry, repository, age)"},
    {"pin", rgm_cmd_pin, "pin images: never evicted"},
    {"unpin", rgm_cmd_unpin, "remove pins made by regmirror pin"},
    {"verify", rgm_cmd_verify, "re-hash every cached object"},
    {"config", rgm_cmd_config, "check a configuration and print it with defaults filled in"},
};

static void usage(FILE *out)
{
    size_t i;

    fprintf(out, "usage: regmirror <command> [options]\n\ncommands:\n");
    for (i = 0; i < RGM_ARRAY_SIZE(commands); i++)
        fprintf(out, "  %-8s %s\n", commands[i].name, commands[i].help);
    fprintf(out, "\n'regmirror <command> --help' describes a command's options.\n");
}

int main(int argc, char **argv)
{
    size_t i;

    signal(SIGPIPE, SIG_IGN);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
        printf("regmirror %s\n", PACKAGE_VERSION);
        return 0;
    }
    for (i = 0; i < RGM_ARRAY_SIZE(commands); i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "regmirror: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
