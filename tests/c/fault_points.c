/* Strata when its page source fails, under the shim: run with
 * LD_PRELOAD=libfault_inject.so:libstrata.so (see fault_inject.c), or, for
 * the rlimit modes, with the shim alone.
 *
 *     fault_points first-map    (FAULT_MMAP=0,-1: every map fails from the start)
 *     fault_points growth       (maps fail once pages exist)
 *     fault_points huge         (the map of one huge allocation fails)
 *     fault_points realloc      (realloc growth cannot map)
 *     fault_points purge        (madvise fails in malloc_trim and the purge delay)
 *     fault_points unmap        (munmap fails)
 *     fault_points threads      (maps fail while other threads hold objects)
 *     fault_points rlimit       (RLIMIT_AS lowered under a running program)
 *     fault_points rlimit-start (RLIMIT_AS leaves no room for the first page)
 *
 * Each mode checks that every allocation function returns NULL (or ENOMEM,
 * or 0 for strata_alloc_bulk) with errno ENOMEM while the source fails, that
 * every live object keeps its pattern, and that allocation works again once
 * the source recovers. */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/resource.h>
#include <unistd.h>

#include "check.h"
#include "fault.h"
#include "strata.h"

/* From the preloaded libstrata.so: weak references link without it. */
#pragma weak strata_alloc_bulk
#pragma weak strata_free_bulk

static struct fault_api fault;

/* ----- objects with a pattern --------------------------------------------- */

struct object {
    unsigned char *p;
    size_t size;
    unsigned seed;
};

static unsigned char pattern(unsigned seed, size_t i)
{
    uint32_t x = seed * 0x9E3779B1u ^ (uint32_t)(i * 2654435761u) ^ (uint32_t)(i >> 12);
    return (unsigned char)(x >> 24);
}

static unsigned next_seed = 1;

static void paint(struct object *o)
{
    for (size_t i = 0; i < o->size; i++)
        o->p[i] = pattern(o->seed, i);
}

/* The first offset where `o` lost its pattern, or -1. */
static long damaged(const struct object *o, size_t upto)
{
    for (size_t i = 0; i < upto; i++)
        if (o->p[i] != pattern(o->seed, i))
            return (long)i;
    return -1;
}

#define CHECK_INTACT(o)                                                                        \
    do {                                                                                       \
        long bad_ = damaged((o), (o)->size);                                                  \
        CHECK(bad_ < 0, "object of %zu bytes at %p: byte %ld changed", (o)->size, (void *)(o)->p, bad_); \
        CHECK(malloc_usable_size((o)->p) >= (o)->size, "usable size below %zu", (o)->size);  \
    } while (0)

/* Allocates and paints an object; the allocation must succeed. */
static struct object make(size_t size)
{
    struct object o = {malloc(size), size, next_seed++};
    CHECK(o.p != NULL, "malloc(%zu) failed with the source working (errno %d)", size, errno);
    paint(&o);
    return o;
}

static void drop(struct object *o)
{
    CHECK_INTACT(o);
    free(o->p);
    o->p = NULL;
}

/* A figure of malloc_stats' table (printed to stderr, read back through a
 * pipe). */
static long stats_figure(const char *name)
{
    int fds[2];
    CHECK(pipe(fds) == 0, "pipe");
    int saved = dup(2);
    dup2(fds[1], 2);
    malloc_stats();
    dup2(saved, 2);
    close(saved);
    close(fds[1]);
    static char text[65536];
    size_t length = 0;
    ssize_t got;
    while (length < sizeof text - 1 && (got = read(fds[0], text + length, sizeof text - 1 - length)) > 0)
        length += (size_t)got;
    close(fds[0]);
    text[length] = 0;
    const char *line = strstr(text, name);
    CHECK(line != NULL, "no `%s` in malloc_stats' table:\n%s", name, text);
    return strtol(line + strlen(name), NULL, 10);
}

/* ----- every allocation function, expected to fail ------------------------ */

#define CHECK_ENOMEM(call)                                                                     \
    do {                                                                                       \
        errno = 0;                                                                             \
        void *block_ = (call);                                                                 \
        CHECK(block_ == NULL, "%s succeeded while the source fails", #call);                  \
        CHECK(errno == ENOMEM, "%s: errno %d, expected ENOMEM", #call, errno);                \
    } while (0)

/* Sizes of classes the program has not used before the source fails: each
 * needs a fresh slice. (The shim's thread heaps take the 13312-byte class:
 * see the size assertion in userspace-shim/src/front.rs.) */
static void check_all_fail(int small_too)
{
    if (small_too) {
        CHECK_ENOMEM(malloc(5500));
        CHECK_ENOMEM(calloc(3, 2000));
        CHECK_ENOMEM(realloc(NULL, 7000));
        CHECK_ENOMEM(memalign(4096, 9000));
        CHECK_ENOMEM(aligned_alloc(2048, 11000));
        void *out = (void *)0x1;
        errno = 0;
        CHECK(posix_memalign(&out, 1024, 15000) == ENOMEM, "posix_memalign did not return ENOMEM");
        CHECK(out == (void *)0x1, "posix_memalign wrote *out on failure");
        void *bulk[8];
        memset(bulk, 0xff, sizeof bulk);
        errno = 0;
        CHECK(strata_alloc_bulk(20000, 8, bulk) == 0, "strata_alloc_bulk succeeded");
        CHECK(errno == ENOMEM, "strata_alloc_bulk: errno %d", errno);
        for (int i = 0; i < 8; i++)
            CHECK(bulk[i] == NULL, "strata_alloc_bulk left out[%d] set", i);
        /* A span: whole slices. */
        CHECK_ENOMEM(malloc(300 * 1024));
        CHECK_ENOMEM(calloc(1, 1500 * 1024));
    }
    /* Huge: a mapping of its own, by size or by alignment. */
    CHECK_ENOMEM(malloc(64 << 20));
    CHECK_ENOMEM(calloc(16, 1 << 20));
    CHECK_ENOMEM(aligned_alloc(8 << 20, 4096));
    CHECK_ENOMEM(valloc(6 << 20));
    void *out = (void *)0x1;
    CHECK(posix_memalign(&out, 16 << 20, 100) == ENOMEM, "posix_memalign did not return ENOMEM");
    CHECK(out == (void *)0x1, "posix_memalign wrote *out on failure");
}

/* Allocates objects of every kind with the source working, checks and
 * frees them. */
static void check_all_work(void)
{
    size_t sizes[] = {1, 24, 1000, 5000, 7000, 20000, 32768, 300 * 1024, 1500 * 1024, 5 << 20, 64 << 20};
    struct object objects[sizeof sizes / sizeof sizes[0]];
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        objects[i] = make(sizes[i]);
    unsigned char *zeroed = calloc(1, 3 << 20);
    CHECK(zeroed != NULL, "calloc failed with the source working");
    for (size_t i = 0; i < (3u << 20); i += 4093)
        CHECK(zeroed[i] == 0, "calloc memory not zero");
    free(zeroed);
    void *aligned = aligned_alloc(8 << 20, 4096);
    CHECK(aligned != NULL && (uintptr_t)aligned % (8 << 20) == 0, "aligned_alloc(8 MiB) failed");
    free(aligned);
    void *bulk[8];
    CHECK(strata_alloc_bulk(20000, 8, bulk) == 8, "strata_alloc_bulk failed with the source working");
    strata_free_bulk(bulk, 8);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        drop(&objects[i]);
}

/* ----- modes ------------------------------------------------------------------ */

/* FAULT_MMAP=0,-1: Strata's first map, made when the library loads, fails. */
static void first_map(void)
{
    CHECK(fault.failures(FAULT_MAP) >= 1, "Strata made no map before main (%ld calls)", fault.calls(FAULT_MAP));
    CHECK_ENOMEM(malloc(16));
    CHECK_ENOMEM(malloc(0));
    CHECK_ENOMEM(calloc(1, 1));
    CHECK_ENOMEM(realloc(NULL, 100));
    check_all_fail(1);
    fault.set(FAULT_MAP, 0, 0);
    check_all_work();
    /* The thread that met the failure caches again: its heap could not be
     * set up while maps failed, and is set up once they work. Allocations
     * without a cache take no slice for a cache (no refill). */
    long refills = stats_figure("cache refills");
    static struct object small[5000];
    for (int i = 0; i < 5000; i++)
        small[i] = make(48);
    for (int i = 0; i < 5000; i++)
        drop(&small[i]);
    long after = stats_figure("cache refills");
    printf("refills_after_recovery=%ld\n", after - refills);
    CHECK(after > refills, "the main thread allocates without a cache after the failure (refills %ld)", after);
}

/* Maps fail once the program has pages: allocation runs until the mapped
 * pages are full, fails with ENOMEM, reuses freed memory, and recovers. */
static void growth(void)
{
    enum { KEPT = 3000, SPANS = 20, MAX_MORE = 200000 };
    static struct object kept[KEPT], spans[SPANS], more[MAX_MORE];
    for (int i = 0; i < KEPT; i++)
        kept[i] = make(1000);
    for (int i = 0; i < SPANS; i++)
        spans[i] = make(200 * 1024);
    long maps = fault.calls(FAULT_MAP);
    CHECK(maps >= 1, "no map seen");
    fault.set(FAULT_MAP, 0, -1);
    /* Fill the mapped pages. */
    int filled = 0;
    for (;;) {
        CHECK(filled < MAX_MORE, "%d allocations succeeded without a map", filled);
        errno = 0;
        unsigned char *p = malloc(1000);
        if (!p) {
            CHECK(errno == ENOMEM, "malloc: errno %d", errno);
            break;
        }
        more[filled] = (struct object){p, 1000, next_seed++};
        paint(&more[filled++]);
    }
    CHECK(fault.failures(FAULT_MAP) >= 1, "the failure came from elsewhere");
    check_all_fail(1);
    /* Realloc growth into a class with no slice fails, the block intact. */
    errno = 0;
    CHECK(realloc(kept[0].p, 6000) == NULL && errno == ENOMEM, "realloc growth did not fail with ENOMEM");
    CHECK_INTACT(&kept[0]);
    for (int i = 0; i < KEPT; i++)
        CHECK_INTACT(&kept[i]);
    for (int i = 0; i < SPANS; i++)
        CHECK_INTACT(&spans[i]);
    for (int i = 0; i < filled; i++)
        CHECK_INTACT(&more[i]);
    /* Freed memory serves new requests while the source still fails. */
    int freed = 0;
    for (int i = 0; i < KEPT; i += 2, freed++)
        drop(&kept[i]);
    for (int i = 0; i < KEPT; i += 2) {
        kept[i] = (struct object){malloc(1000), 1000, next_seed++};
        CHECK(kept[i].p != NULL, "freed memory was not reused (%d freed)", freed);
        paint(&kept[i]);
    }
    drop(&spans[0]);
    spans[0] = (struct object){malloc(200 * 1024), 200 * 1024, next_seed++};
    CHECK(spans[0].p != NULL, "a freed span was not reused");
    paint(&spans[0]);
    /* Recovery. */
    fault.set(FAULT_MAP, 0, 0);
    check_all_work();
    for (int i = 0; i < KEPT; i++)
        drop(&kept[i]);
    for (int i = 0; i < SPANS; i++)
        drop(&spans[i]);
    for (int i = 0; i < filled; i++)
        drop(&more[i]);
}

/* The map of one huge allocation fails; the next one works. */
static void huge(void)
{
    struct object live = make(9 << 20);
    struct object small = make(100);
    long before = fault.failures(FAULT_MAP);
    fault.set(FAULT_MAP, 0, 1);
    CHECK_ENOMEM(malloc(64 << 20));
    CHECK(fault.failures(FAULT_MAP) == before + 1, "not one failed map");
    struct object next = make(64 << 20);
    fault.set(FAULT_MAP, 0, 1);
    CHECK_ENOMEM(calloc(1, 32 << 20));
    fault.set(FAULT_MAP, 0, 1);
    CHECK_ENOMEM(aligned_alloc(16 << 20, 100));
    fault.set(FAULT_MAP, 0, 1);
    void *out = NULL;
    CHECK(posix_memalign(&out, 8 << 20, 3 << 20) == ENOMEM && out == NULL, "posix_memalign did not fail");
    CHECK(fault.failures(FAULT_MAP) == before + 4, "%ld failed maps", fault.failures(FAULT_MAP) - before);
    /* A huge block grown once keeps room to grow again: the next growth
     * needs neither a map nor a remap, so it works while both fail... */
    void *grown = realloc(live.p, 12 << 20);
    CHECK(grown != NULL, "realloc of a huge block to 12 MiB");
    live.p = grown;
    CHECK_INTACT(&live);
    fault.set(FAULT_MAP, 0, -1);
    fault.set(FAULT_REMAP, 0, -1);
    grown = realloc(live.p, 16 << 20);
    CHECK(grown == live.p, "growth into the room left did not stay in place");
    CHECK_INTACT(&live);
    /* ...and growth beyond it fails cleanly, the block intact. */
    long failed = fault.failures(FAULT_MAP) + fault.failures(FAULT_REMAP);
    errno = 0;
    CHECK(realloc(live.p, 40 << 20) == NULL && errno == ENOMEM, "realloc of a huge block did not fail");
    CHECK(fault.failures(FAULT_MAP) + fault.failures(FAULT_REMAP) > failed, "nothing was refused");
    fault.set(FAULT_MAP, 0, 0);
    fault.set(FAULT_REMAP, 0, 0);
    CHECK_INTACT(&live);
    unsigned char *zero = calloc(1, 32 << 20);
    CHECK(zero != NULL && zero[0] == 0 && zero[(32 << 20) - 1] == 0, "calloc after recovery");
    free(zero);
    drop(&next);
    drop(&live);
    drop(&small);
}

/* realloc that needs a new mapping fails and leaves the block as it was,
 * at every size; once maps work the same calls keep the prefix. */
static void reallocation(void)
{
    size_t sizes[] = {100, 20000, 300 * 1024, 5 << 20};
    enum { N = sizeof sizes / sizeof sizes[0] };
    struct object objects[N];
    for (int i = 0; i < N; i++)
        objects[i] = make(sizes[i]);
    fault.set(FAULT_MAP, 0, -1);
    for (int i = 0; i < N; i++) {
        size_t usable = malloc_usable_size(objects[i].p);
        errno = 0;
        void *moved = realloc(objects[i].p, 24 << 20);
        CHECK(moved == NULL && errno == ENOMEM, "realloc(%zu -> 24 MiB): %p, errno %d", sizes[i], moved, errno);
        CHECK(malloc_usable_size(objects[i].p) == usable, "the failed realloc changed the block");
        CHECK_INTACT(&objects[i]);
        errno = 0;
        CHECK(reallocarray(objects[i].p, 3, 10 << 20) == NULL && errno == ENOMEM, "reallocarray did not fail");
        CHECK_INTACT(&objects[i]);
    }
    /* Within the block's usable size, realloc needs no memory. */
    unsigned char *same = realloc(objects[2].p, 290 * 1024);
    CHECK(same == objects[2].p, "an in-place realloc moved or failed while maps fail");
    objects[2].size = 290 * 1024;
    CHECK_INTACT(&objects[2]);
    fault.set(FAULT_MAP, 0, 0);
    for (int i = 0; i < N; i++) {
        unsigned char *moved = realloc(objects[i].p, 24 << 20);
        CHECK(moved != NULL, "realloc failed after recovery");
        objects[i].p = moved;
        CHECK(damaged(&objects[i], objects[i].size) < 0, "realloc lost the prefix");
        objects[i].size = 24 << 20;
        paint(&objects[i]);
    }
    for (int i = 0; i < N; i++)
        drop(&objects[i]);
    check_all_work();
}

/* madvise fails when dirty slices are purged: no object is lost, freed
 * memory still serves (and calloc still zeroes it), and purging works again
 * afterwards. */
static void purge(void)
{
    enum { SMALL = 3000, SPANS = 40 };
    static struct object small[SMALL], spans[SPANS];
    for (int i = 0; i < SMALL; i++)
        small[i] = make(4000);
    for (int i = 0; i < SPANS; i++)
        spans[i] = make(256 * 1024);
    /* Free two in three: whole slices become dirty. */
    for (int i = 0; i < SMALL; i++)
        if (i % 3 != 0 || i < SMALL / 2)
            drop(&small[i]);
    for (int i = 0; i < SPANS; i++)
        if (i % 3 != 0)
            drop(&spans[i]);
    fault.set(FAULT_PURGE, 0, -1);
    malloc_trim(0);
    CHECK(fault.failures(FAULT_PURGE) >= 1, "malloc_trim made no madvise call (%ld calls)", fault.calls(FAULT_PURGE));
    for (int i = 0; i < SMALL; i++)
        if (small[i].p)
            CHECK_INTACT(&small[i]);
    for (int i = 0; i < SPANS; i++)
        if (spans[i].p)
            CHECK_INTACT(&spans[i]);
    /* The memory whose purge failed still holds the old bytes: calloc must
     * not take it for zero. */
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < SMALL; i++) {
            if (small[i].p)
                continue;
            unsigned char *p = calloc(1, 4000);
            CHECK(p != NULL, "calloc failed");
            int j = 0;
            while (j < 4000 && p[j] == 0)
                j++;
            CHECK(j == 4000, "calloc(4000) byte %d is %#x after a failed purge", j, p[j]);
            small[i] = (struct object){p, 4000, next_seed++};
            paint(&small[i]);
        }
        for (int i = 0; i < SPANS; i++) {
            if (spans[i].p)
                continue;
            unsigned char *p = calloc(1, 256 * 1024);
            CHECK(p != NULL, "calloc failed");
            int j = 0;
            while (j < 256 * 1024 && p[j] == 0)
                j++;
            CHECK(j == 256 * 1024, "calloc(256 KiB) byte %d is %#x after a failed purge", j, p[j]);
            spans[i] = (struct object){p, 256 * 1024, next_seed++};
            paint(&spans[i]);
        }
        for (int i = 0; i < SMALL; i++)
            if (i % 2 == round)
                drop(&small[i]);
        for (int i = 0; i < SPANS; i++)
            if (i % 2 == round)
                drop(&spans[i]);
        malloc_trim(0);
    }
    /* The purge delay path, as well: frees, then time passes. */
    usleep(300 * 1000);
    struct object late = make(100);
    drop(&late);
    long failed = fault.failures(FAULT_PURGE);
    fault.set(FAULT_PURGE, 0, 0);
    for (int i = 0; i < SMALL; i++)
        if (small[i].p)
            drop(&small[i]);
    for (int i = 0; i < SPANS; i++)
        if (spans[i].p)
            drop(&spans[i]);
    long calls = fault.calls(FAULT_PURGE);
    malloc_trim(0);
    CHECK(fault.calls(FAULT_PURGE) > calls, "no purge after recovery");
    CHECK(fault.failures(FAULT_PURGE) == failed, "a purge failed after recovery");
    check_all_work();
}

/* munmap fails: freed huge blocks and empty pages cannot go back. Nothing
 * crashes, nothing live changes, and allocation goes on. */
static void unmap(void)
{
    struct object keep = make(100);
    struct object huge_keep = make(6 << 20);
    fault.set(FAULT_UNMAP, 0, -1);
    for (int round = 0; round < 3; round++) {
        struct object big = make(10 << 20);
        drop(&big);
        struct object spans[20];
        for (int i = 0; i < 20; i++)
            spans[i] = make(1 << 20);
        for (int i = 0; i < 20; i++)
            drop(&spans[i]);
        malloc_trim(0);
    }
    CHECK(fault.failures(FAULT_UNMAP) >= 3, "only %ld munmap calls failed", fault.failures(FAULT_UNMAP));
    CHECK_INTACT(&keep);
    CHECK_INTACT(&huge_keep);
    check_all_work();
    fault.set(FAULT_UNMAP, 0, 0);
    check_all_work();
    drop(&keep);
    drop(&huge_keep);
}

/* ----- threads --------------------------------------------------------------- */

enum { THREADS = 4, PER_THREAD = 500 };
static pthread_barrier_t barrier;
enum { MAX_EXTRA = 100000 };
static struct object thread_objects[THREADS][PER_THREAD];
static struct object thread_extra[THREADS][MAX_EXTRA];
static int thread_extra_count[THREADS];

static void *thread_body(void *arg)
{
    int index = (int)(intptr_t)arg;
    struct object *mine = thread_objects[index];
    for (int i = 0; i < PER_THREAD; i++) {
        mine[i] = (struct object){malloc(64 + i * 8), 64 + i * 8, 0};
        CHECK(mine[i].p != NULL, "thread malloc failed");
        mine[i].seed = (unsigned)(index * 100000 + i + 1);
        paint(&mine[i]);
    }
    pthread_barrier_wait(&barrier); /* 1: objects made */
    pthread_barrier_wait(&barrier); /* 2: maps fail */
    CHECK_ENOMEM(malloc(64 << 20));
    /* All threads at once take what the mapped pages hold, until none is
     * left for anyone. */
    struct object *extra = thread_extra[index];
    int count = 0;
    for (;;) {
        CHECK(count < MAX_EXTRA, "%d allocations without a map", count);
        size_t size = (size_t)(1500 + 700 * index);
        errno = 0;
        unsigned char *p = malloc(size);
        if (!p) {
            CHECK(errno == ENOMEM, "malloc: errno %d", errno);
            break;
        }
        extra[count] = (struct object){p, size, (unsigned)(index * 100000 + 50000 + count)};
        paint(&extra[count++]);
    }
    thread_extra_count[index] = count;
    for (int i = 0; i < PER_THREAD; i++)
        CHECK_INTACT(&mine[i]);
    for (int i = 0; i < count; i++)
        CHECK_INTACT(&extra[i]);
    pthread_barrier_wait(&barrier); /* 3: checked */
    pthread_barrier_wait(&barrier); /* 4: maps work */
    /* Free the next thread's objects: cross-thread frees after the failure. */
    int next = (index + 1) % THREADS;
    for (int i = 0; i < PER_THREAD; i++)
        drop(&thread_objects[next][i]);
    for (int i = 0; i < thread_extra_count[next]; i++)
        drop(&thread_extra[next][i]);
    struct object big = make(64 << 20);
    drop(&big);
    struct object span = make(1 << 20);
    drop(&span);
    return NULL;
}

static void threads(void)
{
    pthread_t ids[THREADS];
    pthread_barrier_init(&barrier, NULL, THREADS + 1);
    for (int i = 0; i < THREADS; i++)
        CHECK(pthread_create(&ids[i], NULL, thread_body, (void *)(intptr_t)i) == 0, "pthread_create");
    pthread_barrier_wait(&barrier);
    fault.set(FAULT_MAP, 0, -1);
    pthread_barrier_wait(&barrier);
    pthread_barrier_wait(&barrier);
    fault.set(FAULT_MAP, 0, 0);
    pthread_barrier_wait(&barrier);
    for (int i = 0; i < THREADS; i++)
        pthread_join(ids[i], NULL);
    CHECK(fault.failures(FAULT_MAP) >= 2 * THREADS, "%ld failed maps", fault.failures(FAULT_MAP));
    check_all_work();
}

/* ----- RLIMIT_AS ------------------------------------------------------------- */

static void set_address_limit(rlim_t bytes)
{
    struct rlimit limit;
    CHECK(getrlimit(RLIMIT_AS, &limit) == 0, "getrlimit");
    limit.rlim_cur = bytes;
    CHECK(setrlimit(RLIMIT_AS, &limit) == 0, "setrlimit(%lu)", (unsigned long)bytes);
}

/* The address space is capped 48 MiB above what the program uses: maps fail
 * for real, as they do for a program near its limit. */
static void rlimit(void)
{
    enum { MAX = 1000 };
    static struct object blocks[MAX];
    struct object keep = make(1000);
    set_address_limit((rlim_t)status_kib("VmSize:") * 1024 + (48 << 20));
    int count = 0;
    for (;;) {
        CHECK(count < MAX, "RLIMIT_AS did not stop %d MiB", count);
        errno = 0;
        unsigned char *p = malloc(1 << 20);
        if (!p) {
            CHECK(errno == ENOMEM, "malloc: errno %d", errno);
            break;
        }
        blocks[count] = (struct object){p, 1 << 20, next_seed++};
        paint(&blocks[count++]);
    }
    CHECK(count >= 8, "only %d MiB fit under the limit", count);
    CHECK_ENOMEM(malloc(64 << 20));
    CHECK_ENOMEM(aligned_alloc(8 << 20, 100));
    for (int i = 0; i < count; i++)
        CHECK_INTACT(&blocks[i]);
    CHECK_INTACT(&keep);
    /* Freed spans are reused under the limit. */
    for (int i = 0; i < count; i += 2)
        drop(&blocks[i]);
    for (int i = 0; i < count; i += 2) {
        blocks[i] = (struct object){malloc(1 << 20), 1 << 20, next_seed++};
        CHECK(blocks[i].p != NULL, "a freed span was not reused under the limit");
        paint(&blocks[i]);
    }
    set_address_limit(RLIM_INFINITY);
    check_all_work();
    for (int i = 0; i < count; i++)
        drop(&blocks[i]);
    drop(&keep);
}

/* The parent lowers RLIMIT_AS to about its own size without Strata's first
 * page and runs the child mode under it: Strata's first map, at load,
 * fails for real. */
static void rlimit_start(const char *self)
{
    struct mallinfo2 info = mallinfo2();
    size_t strata_mapped = info.arena + info.hblkhd;
    long size = status_kib("VmSize:") * 1024;
    /* What the child needs before Strata maps, plus 4 MiB: less than the
     * first Strata page takes (4 MiB, mapped with 4 MiB less a page of slack
     * for its alignment). */
    set_address_limit((rlim_t)(size - (long)strata_mapped + (4 << 20)));
    execl(self, self, "rlimit-start-child", (char *)NULL);
    CHECK(0, "execl %s: errno %d", self, errno);
}

static void rlimit_start_child(void)
{
    CHECK_ENOMEM(malloc(16));
    CHECK_ENOMEM(calloc(1, 1));
    CHECK_ENOMEM(malloc(300 * 1024));
    CHECK_ENOMEM(malloc(64 << 20));
    set_address_limit(RLIM_INFINITY);
    check_all_work();
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    CHECK(strata_alloc_bulk != NULL, "libstrata.so is not preloaded");
    if (strncmp(mode, "rlimit", 6) != 0)
        fault = fault_api();
    if (strcmp(mode, "first-map") == 0)
        first_map();
    else if (strcmp(mode, "growth") == 0)
        growth();
    else if (strcmp(mode, "huge") == 0)
        huge();
    else if (strcmp(mode, "realloc") == 0)
        reallocation();
    else if (strcmp(mode, "purge") == 0)
        purge();
    else if (strcmp(mode, "unmap") == 0)
        unmap();
    else if (strcmp(mode, "threads") == 0)
        threads();
    else if (strcmp(mode, "rlimit") == 0)
        rlimit();
    else if (strcmp(mode, "rlimit-start") == 0)
        rlimit_start(argv[0]);
    else if (strcmp(mode, "rlimit-start-child") == 0)
        rlimit_start_child();
    else {
        fprintf(stderr, "usage: fault_points first-map|growth|huge|realloc|purge|unmap|threads|rlimit|rlimit-start\n");
        return 2;
    }
    printf("mode=%s\n", mode);
    if (strncmp(mode, "rlimit", 6) != 0)
        printf("map_calls=%ld\nmap_failures=%ld\npurge_calls=%ld\npurge_failures=%ld\nunmap_calls=%ld\nunmap_failures=%ld\n"
               "remap_calls=%ld\nremap_failures=%ld\n",
               fault.calls(FAULT_MAP), fault.failures(FAULT_MAP), fault.calls(FAULT_PURGE),
               fault.failures(FAULT_PURGE), fault.calls(FAULT_UNMAP), fault.failures(FAULT_UNMAP),
               fault.calls(FAULT_REMAP), fault.failures(FAULT_REMAP));
    REPORT_OK();
    return 0;
}
