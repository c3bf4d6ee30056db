/* malloc_usable_size is exact: every byte up to it can be written without
 * touching a neighbour, and the allocator keeps a block in place when asked
 * to resize it to that size. */
#include <malloc.h>

#include "check.h"

enum { LIVE = 8 };

static void exercise(size_t size)
{
    unsigned char *blocks[LIVE];
    size_t usable[LIVE];
    for (int i = 0; i < LIVE; i++) {
        blocks[i] = malloc(size);
        CHECK(blocks[i] != NULL, "malloc(%zu) failed", size);
        usable[i] = malloc_usable_size(blocks[i]);
        CHECK(usable[i] >= size, "malloc(%zu): usable size %zu", size, usable[i]);
        CHECK(usable[i] <= size + size / 8 + 16 || size > 32768, "malloc(%zu): usable size %zu wastes more than 1/8", size,
              usable[i]);
        fill(blocks[i], 0x10 + i, usable[i]);
    }
    for (int i = 0; i < LIVE; i++) {
        CHECK(filled_with(blocks[i], 0x10 + i, usable[i]), "malloc(%zu): block %d was overwritten", size, i);
        CHECK(realloc(blocks[i], usable[i]) == blocks[i], "malloc(%zu): realloc to usable size %zu moved it", size,
              usable[i]);
        CHECK(malloc_usable_size(blocks[i]) == usable[i], "malloc(%zu): usable size changed", size);
        free(blocks[i]);
    }
}

int main(void)
{
    for (size_t size = 0; size <= 2048; size++)
        exercise(size);
    for (size_t size = 2048; size <= 300000; size += size / 16 + 1)
        exercise(size);
    size_t large[] = {32768, 32769, 65536, 65537, 2 << 20, (2 << 20) + 1, 5 << 20, 33 << 20};
    for (size_t i = 0; i < sizeof large / sizeof large[0]; i++)
        exercise(large[i]);
    REPORT_OK();
    return 0;
}
