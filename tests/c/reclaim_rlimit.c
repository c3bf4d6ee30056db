/* Under an address-space limit, memory freed but still held by the
 * allocator (dirty span slices, empty pages, cached huge mappings) is given
 * back and the request retried before malloc reports ENOMEM.
 *
 * The limit is the address space in use at start plus 512 MiB. Phase 1
 * fills it with 1.5 MiB blocks, frees them all, and asks for 3 MiB (a
 * mapping of its own). Phase 2 fills it with 3 MiB blocks (huge), frees
 * them (some stay cached), and fills with 1.5 MiB blocks again. Prints
 * the block counts. */
#define _GNU_SOURCE
#include <errno.h>
#include <sys/resource.h>

#include "check.h"

enum { MIB = 1 << 20, MAX_BLOCKS = 1024 };

static void *blocks[MAX_BLOCKS];

/* Allocates blocks of `size` until malloc fails; returns how many. */
static int fill_until_full(size_t size)
{
    int count = 0;
    while (count < MAX_BLOCKS) {
        void *block = malloc(size);
        if (block == NULL) {
            CHECK(errno == ENOMEM, "malloc failed with errno %d, not ENOMEM", errno);
            break;
        }
        memset(block, 0x77, 4096);
        blocks[count++] = block;
    }
    CHECK(count < MAX_BLOCKS, "the address-space limit was never reached");
    return count;
}

static void free_all(int count)
{
    for (int i = 0; i < count; i++)
        free(blocks[i]);
}

int main(void)
{
    long in_use = status_kib("VmSize:");
    struct rlimit limit = {.rlim_cur = (rlim_t)in_use * 1024 + 512UL * MIB, .rlim_max = RLIM_INFINITY};
    CHECK(setrlimit(RLIMIT_AS, &limit) == 0, "setrlimit failed");

    int spans = fill_until_full(3 * MIB / 2);
    CHECK(spans >= 100, "only %d blocks of 1.5 MiB fit in 512 MiB", spans);
    free_all(spans);
    void *big = malloc(3 * MIB);
    CHECK(big != NULL, "malloc(3 MiB) after freeing %d blocks of 1.5 MiB: errno %d", spans, errno);
    memset(big, 1, 3 * MIB);
    free(big);

    int huge = fill_until_full(3 * MIB);
    CHECK(huge >= 100, "only %d blocks of 3 MiB fit", huge);
    free_all(huge);
    int again = fill_until_full(3 * MIB / 2);
    CHECK(again >= spans * 9 / 10, "%d blocks of 1.5 MiB after the huge blocks, %d before", again, spans);
    free_all(again);
    void *last = calloc(1, 3 * MIB);
    CHECK(last != NULL, "calloc(3 MiB) at the end failed");
    free(last);

    printf("spans=%d\nhuge=%d\nagain=%d\n", spans, huge, again);
    REPORT_OK();
    return 0;
}
