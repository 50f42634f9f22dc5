/* Runs a fuzz target over its seed corpus (a regression test for builds without libFuzzer):
 * every file in $RGM_SRCDIR/tests/fuzz/corpus/<CORPUS_NAME>/, or the files given as arguments.
 * TAP, one test per input; a crash or an abort() in the target fails the whole binary. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int n_run;

static void run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL;
    long len = -1;
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;

    if (f && fseek(f, 0, SEEK_END) == 0)
        len = ftell(f);
    if (!f || len < 0 || fseek(f, 0, SEEK_SET) != 0) {
        printf("not ok %d - %s: cannot read\n", ++n_run, base);
        if (f)
            fclose(f);
        return;
    }
    buf = malloc((size_t)len + 1);
    if (!buf || fread(buf, 1, (size_t)len, f) != (size_t)len) {
        printf("not ok %d - %s: cannot read\n", ++n_run, base);
    } else {
        LLVMFuzzerTestOneInput(buf, (size_t)len);
        printf("ok %d - %s\n", ++n_run, base);
    }
    fflush(stdout);
    free(buf);
    fclose(f);
}

int main(int argc, char **argv)
{
    const char *top = getenv("RGM_SRCDIR");
    char dir[4096];
    char path[8192];
    struct dirent *e;
    DIR *d;
    int i;

    for (i = 1; i < argc; i++)
        run_file(argv[i]);
    if (argc == 1) {
        snprintf(dir, sizeof(dir), "%s/tests/fuzz/corpus/%s", top ? top : ".", CORPUS_NAME);
        d = opendir(dir);
        if (!d) {
            printf("not ok 1 - corpus %s not found\n1..1\n", dir);
            return 1;
        }
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.')
                continue;
            snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
            run_file(path);
        }
        closedir(d);
    }
    printf("1..%d\n", n_run);
    return 0;
}
