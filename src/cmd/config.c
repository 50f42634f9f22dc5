/* regmirror config --check: read a configuration exactly as serve does (the same files and
 * flags, the same errors, exit 2) and print the effective configuration as JSON, defaults
 * filled in and secrets redacted. It opens neither the storage nor the log file nor a socket. */
#include "core/common.h"
#include "core/config.h"
#include "cmd/cmd.h"

/* The key list (every key with its type, default and description) only for --help. */
static void usage(FILE *out, int has_keys)
{
    fprintf(out,
            "usage: regmirror config --check [FILE] [--config FILE] [--listen ADDR:PORT]...\n"
            "                        [--storage DIR] [--registry NAME=URL]...\n"
            "                        [--default-registry NAME] [--max-size SIZE]\n"
            "                        [--allow-any-registry] [--log-level LEVEL] [--log-file F]\n"
            "\n"
            "Checks the configuration of FILE (read like --config, after any --config) with\n"
            "serve's flags over it, as serve would, and prints the effective configuration\n"
            "as JSON: every key, defaults filled in, secrets as \"<redacted>\". Without FILE\n"
            "or --config: the embedded defaults. Exit 0 valid, 2 invalid, 1 when the\n"
            "configuration cannot be written as JSON.\n");
    if (has_keys) {
        fprintf(out, "\nkeys:\n");
        rgm_config_describe(out);
    }
}

int rgm_cmd_config(int argc, char **argv)
{
    rgm_config_t cfg;
    char err[512]; /* as serve's: the same messages, cut at the same length */
    char *text;
    int rc;

    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage(stdout, 1);
        return 0;
    }
    if (argc < 2 || strcmp(argv[1], "--check") != 0) {
        fprintf(stderr, "regmirror: config: --check must come first\n");
        usage(stderr, 0);
        return 2;
    }
    /* Drop "--check": the rest is serve's command line, with "config" as its name. */
    argv[1] = argv[0];
    rgm_config_init(&cfg);
    rc = rgm_config_parse_args(&cfg, argc - 1, argv + 1, 1, err, sizeof(err));
    if (rc != 0) {
        if (rc == 1)
            usage(stdout, 1);
        else if (err[0])
            fprintf(stderr, "regmirror: %s\n", err);
        else
            usage(stderr, 0);
        rgm_config_free(&cfg);
        return rc == 1 ? 0 : 2;
    }
    text = rgm_config_dump(&cfg, err, sizeof(err));
    rgm_config_free(&cfg);
    if (!text) {
        fprintf(stderr, "regmirror: %s\n", err);
        return 1;
    }
    rc = fputs(text, stdout) < 0 || fflush(stdout) != 0 ? 1 : 0;
    free(text);
    if (rc != 0)
        fprintf(stderr, "regmirror: config: cannot write the output\n");
    return rc;
}
