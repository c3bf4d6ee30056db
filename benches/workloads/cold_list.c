// Allocation after frees in a random order: fills COUNT blocks of SIZE
// bytes (default 200000 of 64, 12.5 MiB, more than the caches hold), frees
// them in a shuffled order but for KEEP percent of them (default 0), which
// stay live, touches 8 MiB of other memory so that the blocks' lines are
// cold, then allocates as many blocks as it freed, with WORK units of
// other work (a few loads and stores of a small table) between two
// allocations, and times that second fill. An allocator that hands the
// blocks back in the order they were freed sends each allocation to a
// random place in memory; one that carves emptied memory afresh goes
// through it forwards (KEEP 0), and one that fetches the next block of its
// list ahead of time hides part of the wait (KEEP above 0, where the
// memory is not empty and keeps its order).
//
// Usage: cold_list [COUNT [SIZE [WORK [KEEP [ROUNDS]]]]]
//
// Every block carries its index while it lives and is checked before it is
// freed. Prints one line of key=value pairs: the median over ROUNDS
// (default 7) of the nanoseconds per allocation of the second fill, and
// ok=1 if every block read back what was written (ok=0 and exit status 1
// otherwise).
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t next(uint64_t *x) {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static double seconds(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec + now.tv_nsec * 1e-9;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// Writes `index` into every 8-byte word of the block (SIZE is a multiple
// of 8, at least 8).
static void fill(uint64_t *block, size_t words, uint64_t index) {
    for (size_t w = 0; w < words; w++) block[w] = index;
}

static int intact(const uint64_t *block, size_t words, uint64_t index) {
    for (size_t w = 0; w < words; w++)
        if (block[w] != index) return 0;
    return 1;
}

int main(int argc, char **argv) {
    size_t count = argc > 1 ? strtoul(argv[1], NULL, 10) : 200000;
    size_t size = argc > 2 ? strtoul(argv[2], NULL, 10) : 64;
    int work = argc > 3 ? atoi(argv[3]) : 0;
    int keep_percent = argc > 4 ? atoi(argv[4]) : 0;
    int rounds = argc > 5 ? atoi(argv[5]) : 7;
    if (argc > 6 || count == 0 || size < 8 || size % 8 != 0 || work < 0 || keep_percent < 0 || keep_percent > 99 ||
        rounds < 1 || rounds > 101) {
        fprintf(stderr, "usage: cold_list [COUNT [SIZE (a multiple of 8) [WORK [KEEP (0-99) [ROUNDS (1-101)]]]]]\n");
        return 2;
    }
    size_t words = size / 8;
    // The first `keep` blocks of the shuffled order stay live.
    size_t keep = count * (size_t)keep_percent / 100, again = count - keep;
    uint64_t **blocks = malloc(count * sizeof *blocks);
    size_t *order = malloc(count * sizeof *order);
    static uint8_t evict[8 << 20];
    static uint64_t table[512];
    double times[101];
    uint64_t seed = 0x9e3779b97f4a7c15u, sink = 0;
    int ok = blocks && order;
    for (int round = 0; ok && round < rounds; round++) {
        for (size_t i = 0; ok && i < count; i++) {
            blocks[i] = malloc(size);
            ok = blocks[i] != NULL;
            if (ok) fill(blocks[i], words, i);
            order[i] = i;
        }
        for (size_t i = count - 1; ok && i > 0; i--) {
            size_t j = next(&seed) % (i + 1), t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        for (size_t i = keep; ok && i < count; i++) {
            ok = intact(blocks[order[i]], words, order[i]);
            free(blocks[order[i]]);
        }
        for (size_t i = 0; i < sizeof evict; i += 64) evict[i]++;
        // The freed blocks' places are taken again, in allocation order.
        double start = seconds();
        for (size_t i = keep; ok && i < count; i++) {
            uint64_t *block = malloc(size);
            ok = block != NULL;
            if (ok) block[0] = i;
            blocks[order[i]] = block;
            for (int k = 0; k < work; k++) sink += table[(i * 7 + k) & 511]++;
        }
        times[round] = (seconds() - start) / again * 1e9;
        for (size_t i = 0; ok && i < count; i++) {
            ok = i < keep ? intact(blocks[order[i]], words, order[i]) : blocks[order[i]][0] == i;
            free(blocks[order[i]]);
        }
    }
    qsort(times, rounds, sizeof times[0], compare);
    printf("count=%zu size=%zu work=%d keep=%d ns_per_alloc=%.1f ok=%d sink=%d\n", count, size, work, keep_percent,
           times[rounds / 2], ok, (int)(sink & 1));
    free(order);
    free(blocks);
    return ok ? 0 : 1;
}
