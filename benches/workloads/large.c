/* The large-block cases of issue 8, one per run, for benches/large.sh:
 *
 *   grow1   one buffer grown by realloc in 64 KiB steps to 64 MiB, the new
 *           part written at each step
 *   grow2   two buffers grown in turn the same way
 *   churn   2000 x (malloc 3 MiB, fill it, free)
 *   rlimit  under RLIMIT_AS of (address space in use + 512 MiB): fill with
 *           1.5 MiB blocks (written) until malloc fails, free them all,
 *           malloc 3 MiB
 *
 * Prints one line: case, seconds (CLOCK_MONOTONIC around the case),
 * peak_rss_kib (getrusage ru_maxrss) and, for rlimit, whether the last
 * malloc succeeded (ok=1) and how many blocks fit. The allocator is
 * whatever serves malloc (LD_PRELOAD). Exit status 0 even when rlimit's
 * malloc fails: that is a result, not an error. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

enum { KIB = 1024, MIB = 1024 * 1024, STEP = 64 * KIB, TOP = 64 * MIB };

static double seconds(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

static long status_kib(const char *field)
{
    char line[256];
    long value = 0;
    FILE *status = fopen("/proc/self/status", "r");
    if (!status)
        return 0;
    while (fgets(line, sizeof line, status))
        if (strncmp(line, field, strlen(field)) == 0)
            value = strtol(line + strlen(field), NULL, 10);
    fclose(status);
    return value;
}

static void die(const char *what)
{
    fprintf(stderr, "large: %s failed\n", what);
    exit(2);
}

/* Grows *block from *size to next by realloc and writes the new part. */
static void grow(unsigned char **block, size_t *size, size_t next)
{
    unsigned char *moved = realloc(*block, next);
    if (!moved)
        die("realloc");
    memset(moved + *size, (int)(next >> 16), next - *size);
    *block = moved;
    *size = next;
}

int main(int argc, char **argv)
{
    const char *name = argc > 1 ? argv[1] : "";
    int ok = 1, blocks = 0;
    double start = seconds();
    if (strcmp(name, "grow1") == 0) {
        unsigned char *one = NULL;
        size_t size = 0;
        for (size_t next = STEP; next <= TOP; next += STEP)
            grow(&one, &size, next);
        if (one[TOP - 1] != (unsigned char)(TOP >> 16))
            die("check");
        free(one);
    } else if (strcmp(name, "grow2") == 0) {
        unsigned char *a = NULL, *b = NULL;
        size_t a_size = 0, b_size = 0;
        for (size_t next = STEP; next <= TOP; next += STEP) {
            grow(&a, &a_size, next);
            grow(&b, &b_size, next);
        }
        free(a);
        free(b);
    } else if (strcmp(name, "churn") == 0) {
        for (int i = 0; i < 2000; i++) {
            unsigned char *block = malloc(3 * MIB);
            if (!block)
                die("malloc");
            memset(block, i, 3 * MIB);
            __asm__ volatile("" : : "r"(block) : "memory");
            free(block);
        }
    } else if (strcmp(name, "rlimit") == 0) {
        static void *held[4096];
        struct rlimit limit = {.rlim_cur = (rlim_t)status_kib("VmSize:") * KIB + 512UL * MIB, .rlim_max = RLIM_INFINITY};
        start = seconds();
        if (setrlimit(RLIMIT_AS, &limit) != 0)
            die("setrlimit");
        while (blocks < 4096 && (held[blocks] = malloc(3 * MIB / 2)) != NULL) {
            memset(held[blocks], blocks, 3 * MIB / 2);
            blocks++;
        }
        for (int i = 0; i < blocks; i++)
            free(held[i]);
        void *big = malloc(3 * MIB);
        ok = big != NULL;
        free(big);
    } else {
        fprintf(stderr, "usage: large grow1|grow2|churn|rlimit\n");
        return 2;
    }
    double elapsed = seconds() - start;
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    printf("case=%s seconds=%.4f peak_rss_kib=%ld ok=%d blocks=%d\n", name, elapsed, usage.ru_maxrss, ok, blocks);
    return 0;
}
