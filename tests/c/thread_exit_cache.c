/* Thread-exit destructors of a pthread key created after the shim's own (as
 * a library loaded later creates its keys) allocate and free many objects.
 * glibc runs key destructors in rounds, in key order, and runs another round
 * (up to PTHREAD_DESTRUCTOR_ITERATIONS, 4) while destructors set values
 * again. Those allocations must still be served by the thread's cache, in
 * the first round and in later ones, and the cache must still go back when
 * the thread is gone.
 *
 * Phase r (1 to 3): THREADS threads whose destructor does its work in round
 * r (it sets its value again until then). The shim's statistics
 * (malloc_stats) give the cache refills of each phase: a cache refills at
 * least once per slice of objects, an allocation without a cache never does.
 * Another key's destructor allocates and sets its value again in every
 * round, so its last call comes after the shim has given the cache back.
 *
 * Fresh phases first: threads that allocate nothing before they exit, so
 * that their heap is made by the destructor, in round 1 or 3, and the shim
 * cannot count the rounds it has left.
 *
 * At the end, live bytes are back to where they were: a heap the shim kept
 * for a round that never came would hold its slices' objects and itself. */
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>

#include "check.h"

enum { THREADS = 400, AT_ONCE = 8, WARMUP = 16, OBJECTS = 2000, SIZE = 256 };

static pthread_key_t late_key, restless_key;

/* The destructor round in which `late_key`'s destructor does its work. */
static atomic_int work_round;

/* Whether threads allocate only in `late_key`'s destructor. */
static atomic_int fresh;

static void allocate_and_free(void)
{
    void *blocks[OBJECTS];
    for (int i = 0; i < OBJECTS; i++) {
        blocks[i] = malloc(SIZE);
        CHECK(blocks[i] != NULL, "malloc(%d) failed in a destructor", SIZE);
        memset(blocks[i], i, SIZE);
    }
    for (int i = 0; i < OBJECTS; i++)
        free(blocks[i]);
}

/* Called once per round, with the round number as the value. */
static void late_destructor(void *value)
{
    uintptr_t round = (uintptr_t)value;
    if (round == (uintptr_t)atomic_load(&work_round))
        allocate_and_free();
    else
        CHECK(pthread_setspecific(late_key, (void *)(round + 1)) == 0, "pthread_setspecific failed");
}

/* Keeps glibc going until its last round. */
static void restless_destructor(void *value)
{
    (void)value;
    if (!atomic_load(&fresh)) {
        void *block = malloc(24);
        CHECK(block != NULL, "malloc(24) failed in a destructor");
        escape(block);
        free(block);
    }
    CHECK(pthread_setspecific(restless_key, (void *)1) == 0, "pthread_setspecific failed");
}

static void *body(void *arg)
{
    (void)arg;
    CHECK(pthread_setspecific(late_key, (void *)1) == 0, "pthread_setspecific failed");
    CHECK(pthread_setspecific(restless_key, (void *)1) == 0, "pthread_setspecific failed");
    if (atomic_load(&fresh))
        return NULL;
    /* The thread has its cache before it exits. */
    void *block = malloc(16);
    CHECK(block != NULL, "malloc(16) failed");
    escape(block);
    free(block);
    return NULL;
}

static void run_threads(int count)
{
    for (int done = 0; done < count; done += AT_ONCE) {
        pthread_t threads[AT_ONCE];
        for (int t = 0; t < AT_ONCE; t++)
            CHECK(pthread_create(&threads[t], NULL, body, NULL) == 0, "pthread_create failed");
        for (int t = 0; t < AT_ONCE; t++)
            CHECK(pthread_join(threads[t], NULL) == 0, "pthread_join failed");
    }
}

/* Figures of the shim's statistics table. */
struct figures {
    long refills, bytes_live;
};

/* Reads the table malloc_stats prints to stderr, through a pipe. */
static struct figures read_figures(void)
{
    static char text[1 << 16];
    int fds[2];
    CHECK(pipe(fds) == 0, "pipe failed");
    fflush(stderr);
    int saved = dup(2);
    CHECK(saved >= 0 && dup2(fds[1], 2) == 2, "dup2 failed");
    malloc_stats();
    CHECK(dup2(saved, 2) == 2, "dup2 failed");
    close(saved);
    close(fds[1]);
    size_t used = 0;
    ssize_t n;
    while (used < sizeof text - 1 && (n = read(fds[0], text + used, sizeof text - 1 - used)) > 0)
        used += (size_t)n;
    close(fds[0]);
    text[used] = '\0';

    struct figures figures = {-1, -1};
    for (char *line = text, *next; *line; line = next) {
        char *end = strchr(line, '\n');
        next = end ? end + 1 : line + strlen(line);
        if (end)
            *end = '\0';
        sscanf(line, " cache refills %ld", &figures.refills);
        sscanf(line, " bytes live %ld", &figures.bytes_live);
    }
    CHECK(figures.refills >= 0 && figures.bytes_live >= 0, "no statistics table from malloc_stats:\n%s", text);
    return figures;
}

int main(void)
{
    CHECK(pthread_key_create(&late_key, late_destructor) == 0, "pthread_key_create failed");
    CHECK(pthread_key_create(&restless_key, restless_destructor) == 0, "pthread_key_create failed");

    atomic_store(&work_round, 1);
    run_threads(WARMUP);
    struct figures start = read_figures();
    long rss_start = status_kib("VmRSS:");

    atomic_store(&fresh, 1);
    for (int round = 1; round <= 3; round += 2) {
        atomic_store(&work_round, round);
        run_threads(THREADS);
        read_figures();
    }
    atomic_store(&fresh, 0);

    for (int round = 1; round <= 3; round++) {
        atomic_store(&work_round, round);
        struct figures before = read_figures();
        run_threads(THREADS);
        struct figures after = read_figures();
        printf("refills_round%d=%ld\n", round, after.refills - before.refills);
    }

    struct figures end = read_figures();
    printf("threads_per_round=%d\n", THREADS);
    printf("live_growth=%ld\n", end.bytes_live - start.bytes_live);
    printf("rss_growth_kib=%ld\n", status_kib("VmRSS:") - rss_start);
    REPORT_OK();
    return 0;
}
