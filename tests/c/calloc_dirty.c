/* calloc returns zeroed memory even where freed blocks were dirty: reused by
 * the same thread, freed by another thread, or in slices that went dirty and
 * were handed out again. */
#include <malloc.h>
#include <pthread.h>

#include "check.h"

static const size_t SIZES[] = {8, 24, 100, 1000, 3000, 20000, 40000, 200000, 3 << 20, 10 << 20};
enum { SIZE_COUNT = sizeof SIZES / sizeof SIZES[0] };

static size_t count_for(size_t size) { return size >= (1 << 20) ? 4 : size >= 100000 ? 16 : 600; }

static void **dirty_blocks(size_t size, size_t count)
{
    void **blocks = malloc(count * sizeof *blocks);
    CHECK(blocks != NULL, "malloc of the table failed");
    for (size_t i = 0; i < count; i++) {
        blocks[i] = malloc(size);
        CHECK(blocks[i] != NULL, "malloc(%zu) failed", size);
        fill(blocks[i], 0xa5, malloc_usable_size(blocks[i]));
    }
    return blocks;
}

static void free_blocks(void **blocks, size_t count)
{
    for (size_t i = 0; i < count; i++)
        free(blocks[i]);
    free(blocks);
}

static void expect_zeroed_callocs(size_t size, size_t count, const char *when)
{
    for (size_t i = 0; i < count; i++) {
        unsigned char *p = calloc(1, size);
        CHECK(p != NULL, "calloc(1, %zu) failed", size);
        CHECK(filled_with(p, 0, size), "%s: calloc(1, %zu) returned dirty memory", when, size);
        unsigned char *q = calloc(size / 4 + 1, 4);
        CHECK(q != NULL && filled_with(q, 0, size), "%s: calloc(%zu, 4) returned dirty memory", when, size / 4 + 1);
        free(p);
        free(q);
    }
}

struct batch {
    void **blocks;
    size_t count;
};

static void *free_batch(void *arg)
{
    struct batch *batch = arg;
    free_blocks(batch->blocks, batch->count);
    return NULL;
}

static void *calloc_everything(void *arg)
{
    for (size_t s = 0; s < SIZE_COUNT; s++)
        expect_zeroed_callocs(SIZES[s], count_for(SIZES[s]), (const char *)arg);
    return NULL;
}

int main(void)
{
    /* Same thread: freed blocks go back to this thread's cache first. */
    for (size_t s = 0; s < SIZE_COUNT; s++) {
        size_t count = count_for(SIZES[s]);
        free_blocks(dirty_blocks(SIZES[s], count), count);
        expect_zeroed_callocs(SIZES[s], count, "same thread");
    }
    /* Freed by another thread: remote frees, then dirty slices. */
    for (size_t s = 0; s < SIZE_COUNT; s++) {
        struct batch batch = {dirty_blocks(SIZES[s], count_for(SIZES[s])), count_for(SIZES[s])};
        pthread_t thread;
        CHECK(pthread_create(&thread, NULL, free_batch, &batch) == 0, "pthread_create failed");
        pthread_join(thread, NULL);
    }
    calloc_everything("after remote frees");
    pthread_t thread;
    CHECK(pthread_create(&thread, NULL, calloc_everything, "in a new thread") == 0, "pthread_create failed");
    pthread_join(thread, NULL);
    /* A slice emptied of one size class and formatted for another. */
    size_t count = 2000;
    void **blocks = dirty_blocks(48, count);
    free_blocks(blocks, count);
    expect_zeroed_callocs(40, count, "after a class change");
    REPORT_OK();
    return 0;
}
