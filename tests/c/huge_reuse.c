/* Freed huge mappings are kept for reuse, bounded, and handed out again
 * safely: calloc of a reused mapping is zero, malloc_trim gives the cache
 * back, and the resident set stays bounded while large blocks churn.
 *
 * Prints rss_base_kib, rss_churn_max_kib (the highest resident set seen
 * during the churn) and rss_trim_kib. */
#include <malloc.h>
#include <stdint.h>

#include "check.h"

enum { MIB = 1 << 20 };

static int all_zero(const unsigned char *block, size_t size)
{
    for (size_t i = 0; i < size; i += 4096)
        if (block[i] != 0)
            return 0;
    for (size_t i = size - 4096; i < size; i++)
        if (block[i] != 0)
            return 0;
    return 1;
}

int main(void)
{
    /* calloc after free of the same and of nearby sizes: the mapping the
     * free left behind is reused, with its old bytes gone. */
    for (int round = 0; round < 50; round++) {
        size_t size = (size_t)(3 + round % 5) * MIB + (size_t)round * 4096;
        unsigned char *dirty = malloc(size);
        CHECK(dirty != NULL, "malloc(%zu) failed", size);
        memset(dirty, 0xa5, size);
        free(dirty);
        unsigned char *zeroed = calloc(1, size);
        CHECK(zeroed != NULL, "calloc(%zu) failed", size);
        CHECK(all_zero(zeroed, size), "round %d: calloc(%zu) of a reused mapping is not zero", round, size);
        memset(zeroed, 0x5a, size);
        free(zeroed);
        /* Smaller than the cached one: reused only when at least half. */
        unsigned char *smaller = calloc(size / 2 + 4096, 1);
        CHECK(smaller != NULL && all_zero(smaller, size / 2 + 4096), "round %d: smaller calloc", round);
        free(smaller);
    }

    malloc_trim(0);
    long base = status_kib("VmRSS:");
    /* Churn: blocks of 3 to 24 MiB, filled, four live at a time. */
    void *live[4] = {0};
    long highest = base;
    for (int i = 0; i < 2000; i++) {
        int slot = i % 4;
        free(live[slot]);
        size_t size = (size_t)(3 + (i * 7) % 22) * MIB;
        live[slot] = malloc(size);
        CHECK(live[slot] != NULL, "malloc(%zu) failed", size);
        memset(live[slot], i, size);
        if (i % 16 == 0) {
            long rss = status_kib("VmRSS:");
            if (rss > highest)
                highest = rss;
        }
    }
    for (int slot = 0; slot < 4; slot++)
        free(live[slot]);
    malloc_trim(0);
    long trimmed = status_kib("VmRSS:");
    /* At most four live blocks of 24 MiB, the 64 MiB cache, and slack. */
    CHECK(highest <= base + (4 * 24 + 64 + 16) * 1024L, "resident set grew to %ld KiB from %ld KiB", highest, base);
    CHECK(trimmed <= base + 8 * 1024L, "after malloc_trim the resident set is %ld KiB (base %ld KiB)", trimmed, base);
    printf("rss_base_kib=%ld\nrss_churn_max_kib=%ld\nrss_trim_kib=%ld\n", base, highest, trimmed);
    REPORT_OK();
    return 0;
}
