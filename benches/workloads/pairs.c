/* The fast-path harness for allocators preloaded into a C program: a loop of
 * malloc(size) and free, counted by benches/callgrind-preload.sh under
 * callgrind with --toggle-collect on measured_loop.
 *
 *   pairs SIZE PAIRS
 *
 * One object of the size is kept live for the whole loop, so that no
 * allocator takes its slice-empty or page-empty path at each free: the loop
 * measures the steady state a program sees. The calls go through
 * measured_malloc and measured_free, which are never inlined, so the cost of
 * each side can be read from the call graph. A second run with the
 * environment variable PAIRS_BASELINE set calls empty functions instead: the
 * loop and call overhead, with no allocator behind it. */
#include <stdio.h>
#include <stdlib.h>

static void *volatile sink;

__attribute__((noinline)) void *measured_malloc(size_t size)
{
    return malloc(size);
}

__attribute__((noinline)) void measured_free(void *block)
{
    free(block);
}

__attribute__((noinline)) void *baseline_malloc(size_t size)
{
    __asm__ volatile("" ::: "memory");
    return (void *)(size | 1);
}

__attribute__((noinline)) void baseline_free(void *block)
{
    __asm__ volatile("" ::"r"(block) : "memory");
}

static inline void run_loop(size_t size, long pairs, int baseline)
{
    void *(*get)(size_t) = baseline ? baseline_malloc : measured_malloc;
    void (*put)(void *) = baseline ? baseline_free : measured_free;
    for (long i = 0; i < pairs; i++) {
        void *block = get(size);
        sink = block;
        put(block);
    }
}

/* Not collected: the warm-up. */
__attribute__((noinline)) void warm_up(size_t size, long pairs, int baseline)
{
    run_loop(size, pairs, baseline);
}

/* Collected: the measured loop and everything it calls. */
__attribute__((noinline)) void measured_loop(size_t size, long pairs, int baseline)
{
    run_loop(size, pairs, baseline);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: pairs SIZE PAIRS\n");
        return 2;
    }
    size_t size = strtoul(argv[1], NULL, 10);
    long pairs = strtol(argv[2], NULL, 10);
    int baseline = getenv("PAIRS_BASELINE") != NULL;
    void *keep = malloc(size);
    if (!keep) {
        perror("malloc");
        return 1;
    }
    /* Warm-up: first-touch faults, thread caches, lazy initialisation. */
    warm_up(size, 10000, baseline);
    measured_loop(size, pairs, baseline);
    free(keep);
    return 0;
}
