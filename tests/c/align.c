/* Alignment from 8 bytes to 16 MiB through every aligned entry point, with
 * malloc_usable_size exact and writable to its end. */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdint.h>

#include "check.h"

enum { LIVE = 6 };

typedef void *(*aligned_fn)(size_t align, size_t size);

static void *via_posix_memalign(size_t align, size_t size)
{
    void *out = NULL;
    return posix_memalign(&out, align, size) == 0 ? out : NULL;
}
static void *via_aligned_alloc(size_t align, size_t size) { return aligned_alloc(align, size); }
static void *via_memalign(size_t align, size_t size) { return memalign(align, size); }

static void exercise(const char *name, aligned_fn allocate, size_t align, size_t size)
{
    void *blocks[LIVE];
    size_t usable[LIVE];
    /* Several at once, each filled to its usable end with its own byte: an
     * overstated usable size or a misplaced block shows as a clobbered
     * neighbour. */
    for (int i = 0; i < LIVE; i++) {
        blocks[i] = allocate(align, size);
        CHECK(blocks[i] != NULL, "%s(%zu, %zu) failed", name, align, size);
        CHECK((uintptr_t)blocks[i] % align == 0, "%s(%zu, %zu) = %p is misaligned", name, align, size, blocks[i]);
        usable[i] = malloc_usable_size(blocks[i]);
        CHECK(usable[i] >= size, "%s(%zu, %zu): usable size %zu", name, align, size, usable[i]);
        fill(blocks[i], 0x40 + i, usable[i]);
    }
    for (int i = 0; i < LIVE; i++) {
        CHECK(filled_with(blocks[i], 0x40 + i, usable[i]), "%s(%zu, %zu): block %d was overwritten", name, align, size, i);
        /* Exact: the allocator agrees the block holds its usable size. */
        void *same = realloc(blocks[i], usable[i]);
        CHECK(same == blocks[i], "%s(%zu, %zu): realloc to the usable size %zu moved the block", name, align, size, usable[i]);
        free(blocks[i]);
    }
}

int main(void)
{
    struct { const char *name; aligned_fn allocate; } fns[] = {
        {"posix_memalign", via_posix_memalign},
        {"aligned_alloc", via_aligned_alloc},
        {"memalign", via_memalign},
    };
    for (size_t f = 0; f < sizeof fns / sizeof fns[0]; f++) {
        for (size_t align = 8; align <= ((size_t)16 << 20); align *= 2) {
            size_t sizes[] = {0, 1, align - 1, align, align + 1, 3 * align + 5, 100000};
            for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
                if (align >= ((size_t)1 << 20) && sizes[s] > 2 * align)
                    continue; /* keep the mappings small */
                exercise(fns[f].name, fns[f].allocate, align, sizes[s]);
            }
        }
    }
    /* Plain malloc gives 16-byte alignment at every size. */
    for (size_t size = 0; size < 5000; size += 7) {
        void *p = malloc(size);
        CHECK(p && (uintptr_t)p % 16 == 0, "malloc(%zu) = %p", size, p);
        free(p);
    }
    REPORT_OK();
    return 0;
}
