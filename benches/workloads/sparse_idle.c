// A service that frees most of what it holds and then idles: fills MIB
// MiB (default 400) with blocks of SIZE bytes, each filled with a byte of
// its own, frees a random 90% of them, then serves light traffic for two
// seconds (every 50 ms, 64 malloc/free pairs of 48 bytes), and checks
// every surviving block's contents.
//
// Usage: sparse_idle SIZE [MIB]
//
// Prints one line of key=value pairs: the anonymous memory (RssAnon, KiB)
// after the fill, after the frees and after the idle time, the live bytes
// left (KiB), and ok=1 if every surviving block was intact (ok=0 and exit
// status 1 otherwise).
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static long rss_anon_kib(void) {
    FILE *status = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    if (!status) return -1;
    while (fgets(line, sizeof line, status))
        if (sscanf(line, "RssAnon: %ld kB", &kib) == 1) break;
    fclose(status);
    return kib;
}

static uint64_t next(uint64_t *x) {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: sparse_idle SIZE [MIB]\n");
        return 2;
    }
    size_t size = strtoul(argv[1], NULL, 10);
    size_t mib = argc == 3 ? strtoul(argv[2], NULL, 10) : 400;
    if (size == 0 || mib == 0) {
        fprintf(stderr, "sparse_idle: SIZE and MIB must be positive\n");
        return 2;
    }
    size_t count = (mib << 20) / size;
    unsigned char **blocks = calloc(count, sizeof *blocks);
    if (!blocks) return 1;
    for (size_t i = 0; i < count; i++) {
        blocks[i] = malloc(size);
        if (!blocks[i]) {
            fprintf(stderr, "sparse_idle: malloc failed\n");
            return 1;
        }
        memset(blocks[i], (int)(i & 0xff), size);
    }
    long full = rss_anon_kib();
    uint64_t x = 0x9e3779b97f4a7c15u;
    size_t live = 0;
    for (size_t i = 0; i < count; i++) {
        if (next(&x) % 10 != 0) {
            free(blocks[i]);
            blocks[i] = NULL;
        } else {
            live += size;
        }
    }
    long freed = rss_anon_kib();
    struct timespec pause = {0, 50 * 1000 * 1000};
    for (int step = 0; step < 40; step++) {
        nanosleep(&pause, NULL);
        for (int pair = 0; pair < 64; pair++) {
            volatile unsigned char *light = malloc(48);
            if (!light) return 1;
            light[0] = (unsigned char)pair;
            free((void *)light);
        }
    }
    long idle = rss_anon_kib();
    int ok = 1;
    for (size_t i = 0; i < count; i++) {
        if (!blocks[i]) continue;
        for (size_t b = 0; b < size; b++)
            if (blocks[i][b] != (unsigned char)(i & 0xff)) ok = 0;
        free(blocks[i]);
    }
    free(blocks);
    printf("size=%zu full_kib=%ld freed_kib=%ld idle_kib=%ld live_kib=%zu ok=%d\n", size, full, freed, idle,
           live >> 10, ok);
    return ok ? 0 : 1;
}
