/* After a program frees most of its memory, the resident set falls back.
 *
 * argv[1] = "trim": call malloc_trim(0) once and measure.
 * argv[1] = "pinned": allocate 2^20 blocks of 64 bytes, keep one in
 *   PIN_EVERY and free the rest, so that a few blocks are left in each
 *   slice, then call malloc_trim(0) and measure: a kept block keeps at
 *   most its own 4 KiB page resident.
 * argv[1] = "pinned-activity": the same blocks kept, with no malloc_trim:
 *   the light load of "activity" runs until the delayed purge has given
 *   the empty pages back, for at most ROUNDS rounds.
 * argv[1] = "activity": keep running a light, steady allocation load (a
 *   program that goes on serving small requests: one size, a working set
 *   that fits the thread's cache, so the allocator never needs new slices)
 *   and measure after each round, for at most ROUNDS rounds of
 *   ROUND_SLEEP_US; the purge delay must do the work.
 * Prints rss_peak_kib, rss_after_kib, rss_live_kib (what the kept blocks
 * need) and rounds. */
#define _GNU_SOURCE
#include <malloc.h>
#include <unistd.h>

#include "check.h"

enum { SMALL = 65536, SMALL_SIZE = 1000, SPANS = 256, SPAN_SIZE = 256 * 1024, HUGE = 8, HUGE_SIZE = 8 << 20 };
enum { ROUNDS = 300, ROUND_SLEEP_US = 10000, KEEP_PERCENT = 5 };

static void *small[SMALL], *spans[SPANS], *huge[HUGE];

enum { PINNED = 1 << 20, PINNED_SIZE = 64, PIN_EVERY = 1000 };
static unsigned char *pinned[PINNED];

static void light_load(void);

static int run_pinned(int trim)
{
    memset(pinned, 0, sizeof pinned);
    long base = status_kib("VmRSS:");
    for (long i = 0; i < PINNED; i++) {
        pinned[i] = malloc(PINNED_SIZE);
        CHECK(pinned[i] != NULL, "malloc(%d) failed", PINNED_SIZE);
        memset(pinned[i], (int)(i & 0xff), PINNED_SIZE);
    }
    long peak = status_kib("VmRSS:");
    long kept = 0;
    for (long i = 0; i < PINNED; i++) {
        if (i % PIN_EVERY == 0) {
            kept++;
        } else {
            free(pinned[i]);
        }
    }
    /* What the kept blocks need: a 4 KiB page each at most. */
    long live = base + kept * 4;
    long after = status_kib("VmRSS:");
    int rounds = 0;
    if (trim) {
        malloc_trim(0);
        after = status_kib("VmRSS:");
    } else {
        while (after > live + (peak - live) / 4 && rounds < ROUNDS) {
            light_load();
            usleep(ROUND_SLEEP_US);
            rounds++;
            after = status_kib("VmRSS:");
        }
    }
    for (long i = 0; i < PINNED; i += PIN_EVERY)
        for (int j = 0; j < PINNED_SIZE; j++)
            CHECK(pinned[i][j] == (unsigned char)(i & 0xff), "kept block %ld changed at byte %d", i, j);
    printf("rss_peak_kib=%ld\nrss_after_kib=%ld\nrss_live_kib=%ld\nrounds=%d\n", peak, after, live, rounds);
    REPORT_OK();
    return 0;
}

static void allocate_all(void **blocks, int count, size_t size)
{
    for (int i = 0; i < count; i++) {
        blocks[i] = malloc(size);
        CHECK(blocks[i] != NULL, "malloc(%zu) failed", size);
        memset(blocks[i], 0x33, size);
    }
}

/* Frees all but the first KEEP_PERCENT percent of the blocks. */
static size_t free_most(void **blocks, int count, size_t size)
{
    int keep = count * KEEP_PERCENT / 100;
    for (int i = keep; i < count; i++)
        free(blocks[i]);
    return (size_t)keep * size;
}

static void light_load(void)
{
    void *blocks[500];
    for (int i = 0; i < 500; i++) {
        blocks[i] = malloc(64);
        CHECK(blocks[i] != NULL, "malloc(64) failed");
    }
    for (int i = 0; i < 500; i++)
        free(blocks[i]);
}

int main(int argc, char **argv)
{
    CHECK(argc == 2 &&
              (strcmp(argv[1], "trim") == 0 || strcmp(argv[1], "activity") == 0 || strcmp(argv[1], "pinned") == 0 ||
               strcmp(argv[1], "pinned-activity") == 0),
          "usage: rss_return trim|activity|pinned|pinned-activity");
    if (strcmp(argv[1], "pinned") == 0)
        return run_pinned(1);
    if (strcmp(argv[1], "pinned-activity") == 0)
        return run_pinned(0);
    long base = status_kib("VmRSS:");
    allocate_all(small, SMALL, SMALL_SIZE);
    allocate_all(spans, SPANS, SPAN_SIZE);
    allocate_all(huge, HUGE, HUGE_SIZE);
    long peak = status_kib("VmRSS:");
    size_t kept = free_most(small, SMALL, SMALL_SIZE) + free_most(spans, SPANS, SPAN_SIZE) + free_most(huge, HUGE, HUGE_SIZE);
    long live = base + (long)(kept / 1024);
    long target = live + (peak - live) / 4;
    long after = status_kib("VmRSS:");
    int rounds = 0;
    if (strcmp(argv[1], "trim") == 0) {
        malloc_trim(0);
        after = status_kib("VmRSS:");
    } else {
        while (after > target && rounds < ROUNDS) {
            light_load();
            usleep(ROUND_SLEEP_US);
            rounds++;
            after = status_kib("VmRSS:");
        }
    }
    printf("rss_peak_kib=%ld\nrss_after_kib=%ld\nrss_live_kib=%ld\nrounds=%d\n", peak, after, live, rounds);
    REPORT_OK();
    return 0;
}
