/* fork() from a program whose threads allocate all the time: each child
 * allocates (including from a new thread) and exits normally. A child that
 * inherited a held allocator lock would hang; the test harness's hang guard
 * turns a hang into a reported failure instead of a stuck test. */
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

enum { WORKERS = 4, FORKS = 200, KEEP = 64 };

static atomic_int stop;

static size_t next_size(unsigned *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    unsigned r = *seed >> 8;
    if (r % 64 == 0)
        return 200000 + r % 3000000; /* spans and huge mappings */
    return 1 + r % 5000;
}

static void *worker(void *arg)
{
    unsigned seed = (unsigned)(size_t)arg;
    void *kept[KEEP] = {0};
    while (!atomic_load(&stop)) {
        size_t slot = (seed >> 4) % KEEP;
        free(kept[slot]);
        size_t size = next_size(&seed);
        kept[slot] = malloc(size);
        if (kept[slot])
            memset(kept[slot], 1, size < 256 ? size : 256);
    }
    for (int i = 0; i < KEEP; i++)
        free(kept[i]);
    return NULL;
}

static void *child_thread(void *arg)
{
    unsigned seed = (unsigned)(size_t)arg;
    for (int i = 0; i < 200; i++) {
        void *p = malloc(next_size(&seed));
        free(p);
    }
    return NULL;
}

static void child(int round)
{
    unsigned seed = (unsigned)round;
    void *blocks[256];
    for (int i = 0; i < 256; i++) {
        blocks[i] = i % 2 ? malloc(next_size(&seed)) : calloc(1, next_size(&seed));
        if (!blocks[i])
            _exit(3);
    }
    for (int i = 0; i < 256; i++)
        free(blocks[i]);
    pthread_t thread;
    if (pthread_create(&thread, NULL, child_thread, (void *)(size_t)round) != 0)
        _exit(4);
    pthread_join(thread, NULL);
    malloc_trim(0);
    exit(0);
}

int main(void)
{
    pthread_t workers[WORKERS];
    for (int i = 0; i < WORKERS; i++)
        CHECK(pthread_create(&workers[i], NULL, worker, (void *)(size_t)(i + 1)) == 0, "pthread_create failed");
    fork_rounds(FORKS, child);
    atomic_store(&stop, 1);
    for (int i = 0; i < WORKERS; i++)
        pthread_join(workers[i], NULL);
    printf("forks=%d\n", FORKS);
    REPORT_OK();
    return 0;
}
