/* strata_alloc_bulk and strata_free_bulk, the shim's extensions (strata.h):
 * sets of blocks of several sizes and counts, distinct, aligned, usable and
 * keeping their contents; freed in bulk or one by one; the all-or-nothing
 * failure, count 0 and a null array; and calls from a thread whose heap is
 * gone (a thread-exit destructor). */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/resource.h>

#include "check.h"
#include "strata.h"

/* The functions come from the preloaded libstrata.so: weak references link
 * without it, and are null if it is not loaded. */
#pragma weak strata_alloc_bulk
#pragma weak strata_free_bulk

static void *const SENTINEL = (void *)0x5157;

static int by_address(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (void *const *)a, y = (uintptr_t) * (void *const *)b;
    return (x > y) - (x < y);
}

/* Writes block i's stamp: all of a small block, the two ends of a large one
 * (so 1000 blocks of 3 MiB stay mostly untouched). */
static void stamp(unsigned char *block, size_t size, size_t i)
{
    size_t edge = size < 8192 ? size : 4096;
    memset(block, (int)(i * 7 + 1), edge);
    memset(block + size - edge, (int)(i * 7 + 1), edge);
}

static int stamped(const unsigned char *block, size_t size, size_t i)
{
    size_t edge = size < 8192 ? size : 4096;
    return filled_with(block, (int)(i * 7 + 1), edge) && filled_with(block + size - edge, (int)(i * 7 + 1), edge);
}

/* One bulk set: allocates, checks, frees every seventh block with free and
 * the rest (with the holes now NULL) with strata_free_bulk. */
static void exercise(size_t size, size_t count)
{
    void **blocks = malloc(count * sizeof *blocks);
    void **sorted = malloc(count * sizeof *sorted);
    CHECK(blocks && sorted, "malloc of the arrays failed");
    for (size_t i = 0; i < count; i++)
        blocks[i] = SENTINEL;
    errno = 0;
    size_t got = strata_alloc_bulk(size, count, blocks);
    CHECK(got == count, "strata_alloc_bulk(%zu, %zu) = %zu, errno %d", size, count, got, errno);
    for (size_t i = 0; i < count; i++) {
        unsigned char *block = blocks[i];
        CHECK(block != NULL && block != SENTINEL, "bulk(%zu, %zu): block %zu is %p", size, count, i, blocks[i]);
        CHECK((uintptr_t)block % 16 == 0, "bulk(%zu, %zu): block %zu = %p is not 16-aligned", size, count, i, blocks[i]);
        size_t usable = malloc_usable_size(block);
        CHECK(usable >= size, "bulk(%zu, %zu): block %zu has %zu usable bytes", size, count, i, usable);
        stamp(block, size, i);
        sorted[i] = block;
    }
    qsort(sorted, count, sizeof *sorted, by_address);
    for (size_t i = 1; i < count; i++)
        CHECK((uintptr_t)sorted[i - 1] + size <= (uintptr_t)sorted[i], "bulk(%zu, %zu): %p and %p overlap", size,
              count, sorted[i - 1], sorted[i]);
    for (size_t i = 0; i < count; i++)
        CHECK(stamped(blocks[i], size, i), "bulk(%zu, %zu): block %zu lost its contents", size, count, i);
    for (size_t i = 0; i < count; i += 7) {
        free(blocks[i]);
        blocks[i] = NULL;
    }
    strata_free_bulk(blocks, count);
    free(sorted);
    free(blocks);
}

static void failures(void)
{
    void *out[8];

    /* count 0: nothing, errno untouched, even with a null array. */
    errno = 1234;
    CHECK(strata_alloc_bulk(64, 0, out) == 0 && errno == 1234, "count 0 set errno %d", errno);
    CHECK(strata_alloc_bulk(64, 0, NULL) == 0 && errno == 1234, "count 0 with NULL out set errno %d", errno);
    strata_free_bulk(NULL, 0);
    strata_free_bulk(out, 0);

    /* A null array. */
    errno = 0;
    CHECK(strata_alloc_bulk(64, 4, NULL) == 0, "NULL out did not fail");
    CHECK(errno == EINVAL, "NULL out set errno %d, not EINVAL", errno);

    /* Sizes malloc refuses. */
    size_t absurd[] = {SIZE_MAX / 2, SIZE_MAX, (size_t)1 << 62};
    for (size_t s = 0; s < sizeof absurd / sizeof absurd[0]; s++) {
        for (size_t i = 0; i < 8; i++)
            out[i] = SENTINEL;
        errno = 0;
        CHECK(strata_alloc_bulk(absurd[s], 8, out) == 0, "size %zu did not fail", absurd[s]);
        CHECK(errno == ENOMEM, "size %zu set errno %d, not ENOMEM", absurd[s], errno);
        for (size_t i = 0; i < 8; i++)
            CHECK(out[i] == NULL, "size %zu: out[%zu] = %p after failure", absurd[s], i, out[i]);
    }

    /* An array of NULLs frees nothing. */
    for (size_t i = 0; i < 8; i++)
        out[i] = NULL;
    strata_free_bulk(out, 8);
}

/* Memory runs out part-way (an address-space limit): nothing may stay
 * allocated, and every entry is NULL. */
static void all_or_nothing(size_t size, size_t count)
{
    void **blocks = malloc(count * sizeof *blocks);
    CHECK(blocks != NULL, "malloc of the array failed");
    for (size_t i = 0; i < count; i++)
        blocks[i] = SENTINEL;
    size_t before = mallinfo2().uordblks;
    struct rlimit old, tight;
    CHECK(getrlimit(RLIMIT_AS, &old) == 0, "getrlimit failed");
    tight = old;
    tight.rlim_cur = (rlim_t)status_kib("VmSize:") * 1024 + ((rlim_t)256 << 20);
    CHECK(setrlimit(RLIMIT_AS, &tight) == 0, "setrlimit failed");
    errno = 0;
    size_t got = strata_alloc_bulk(size, count, blocks);
    int error = errno;
    CHECK(setrlimit(RLIMIT_AS, &old) == 0, "restoring the limit failed");
    CHECK(got == 0, "bulk(%zu, %zu) past the limit returned %zu", size, count, got);
    CHECK(error == ENOMEM, "bulk(%zu, %zu) past the limit set errno %d", size, count, error);
    for (size_t i = 0; i < count; i++)
        CHECK(blocks[i] == NULL, "bulk(%zu, %zu) past the limit left out[%zu] = %p", size, count, i, blocks[i]);
    size_t after = mallinfo2().uordblks;
    CHECK(after <= before + 4096, "bulk(%zu, %zu) past the limit left %zu bytes live (%zu before)", size, count, after,
          before);
    free(blocks);
}

/* A bulk set allocated on one thread and freed on another. */
static void *free_set(void *set)
{
    strata_free_bulk(set, 64);
    return NULL;
}

static void cross_thread(void)
{
    void *set[64];
    CHECK(strata_alloc_bulk(200, 64, set) == 64, "bulk(200, 64) failed");
    for (size_t i = 0; i < 64; i++)
        stamp(set[i], 200, i);
    for (size_t i = 0; i < 64; i++)
        CHECK(stamped(set[i], 200, i), "bulk(200, 64): block %zu lost its contents", i);
    pthread_t thread;
    CHECK(pthread_create(&thread, NULL, free_set, set) == 0, "pthread_create failed");
    pthread_join(thread, NULL);
}

/* Bulk calls from a thread-exit destructor, which runs after the shim's own
 * (its key is older) when the thread's heap is gone: the uncached path. */
static pthread_key_t late_key;
static volatile int late_ok;

static void late_destructor(void *value)
{
    (void)value;
    void *set[100];
    if (strata_alloc_bulk(48, 100, set) != 100)
        return;
    for (size_t i = 0; i < 100; i++)
        stamp(set[i], 48, i);
    for (size_t i = 0; i < 100; i++)
        if (!stamped(set[i], 48, i))
            return;
    void *big[3];
    if (strata_alloc_bulk(100000, 3, big) != 3)
        return;
    set[5] = NULL;
    strata_free_bulk(set, 100);
    strata_free_bulk(big, 3);
    late_ok = 1;
}

static void *late_thread(void *arg)
{
    free(malloc(16)); /* the thread's heap exists */
    pthread_setspecific(late_key, arg);
    return NULL;
}

static void thread_exit(void)
{
    CHECK(pthread_key_create(&late_key, late_destructor) == 0, "pthread_key_create failed");
    pthread_t thread;
    CHECK(pthread_create(&thread, NULL, late_thread, (void *)1) == 0, "pthread_create failed");
    pthread_join(thread, NULL);
    CHECK(late_ok, "bulk calls failed in a thread-exit destructor");
}

int main(void)
{
    CHECK(strata_alloc_bulk != NULL && strata_free_bulk != NULL, "libstrata.so is not loaded");
    size_t before = mallinfo2().uordblks;
    size_t sizes[] = {16, 24, 100, 4000, 100000, 3 << 20};
    size_t counts[] = {1, 64, 1000};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
        for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++)
            exercise(sizes[s], counts[c]);
    size_t after = mallinfo2().uordblks;
    CHECK(after <= before + 4096, "%zu bytes live after freeing every set, %zu before", after, before);
    failures();
    all_or_nothing(8 << 20, 100);
    all_or_nothing(4000, 100000);
    cross_thread();
    thread_exit();
    REPORT_OK();
    return 0;
}
