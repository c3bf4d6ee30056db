/* glibc's tuning and reporting functions: mallopt, mallinfo2, mallinfo,
 * malloc_trim and malloc_stats, answered from Strata's state. */
#include <malloc.h>

#include "check.h"

int main(void)
{
    CHECK(mallopt(M_MMAP_THRESHOLD, 1 << 20) == 1, "mallopt(M_MMAP_THRESHOLD) refused");
    CHECK(mallopt(M_TRIM_THRESHOLD, 1 << 20) == 1, "mallopt(M_TRIM_THRESHOLD) refused");
    CHECK(mallopt(M_ARENA_MAX, 2) == 1, "mallopt(M_ARENA_MAX) refused");
    CHECK(mallopt(12345, 1) == 0, "mallopt(12345) accepted an unknown parameter");

    struct mallinfo2 before = mallinfo2();
    enum { COUNT = 20000, SIZE = 1000 };
    static void *blocks[COUNT];
    for (int i = 0; i < COUNT; i++) {
        blocks[i] = malloc(SIZE);
        CHECK(blocks[i] != NULL, "malloc failed");
        memset(blocks[i], 1, SIZE);
    }
    void *huge = malloc(40 << 20);
    CHECK(huge != NULL, "malloc(40 MiB) failed");
    struct mallinfo2 during = mallinfo2();
    CHECK(during.uordblks >= before.uordblks + COUNT * SIZE + (40 << 20), "uordblks %zu, before %zu", during.uordblks,
          before.uordblks);
    CHECK(during.arena >= COUNT * SIZE, "arena %zu", during.arena);
    CHECK(during.hblks == before.hblks + 1 && during.hblkhd >= (40 << 20), "hblks %zu hblkhd %zu", during.hblks,
          during.hblkhd);
    struct mallinfo old = mallinfo();
    CHECK(old.uordblks > 0 && (size_t)old.hblks == during.hblks, "mallinfo uordblks %d hblks %d", old.uordblks, old.hblks);

    for (int i = 0; i < COUNT; i++)
        free(blocks[i]);
    free(huge);
    struct mallinfo2 freed = mallinfo2();
    CHECK(freed.uordblks <= before.uordblks + 4096, "uordblks %zu after freeing, %zu before", freed.uordblks,
          before.uordblks);
    CHECK(malloc_trim(0) == 1, "malloc_trim released nothing after 20 MB were freed");
    struct mallinfo2 trimmed = mallinfo2();
    CHECK(trimmed.keepcost == 0, "keepcost %zu after malloc_trim", trimmed.keepcost);
    malloc_stats();
    REPORT_OK();
    return 0;
}
