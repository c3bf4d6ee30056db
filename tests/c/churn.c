/* Thousands of short-lived threads, each caching slices of many size
 * classes: a dead thread's cache must go back, so the resident set stays
 * bounded. Prints VmRSS after a warm-up and at the end, and VmHWM. */
#include <malloc.h>
#include <pthread.h>

#include "check.h"

enum { THREADS = 4000, AT_ONCE = 8, WARMUP = 400, BLOCKS = 48 };

/* Blocks a thread leaves for the next one to free (remote frees into slices
 * whose owner has exited). */
static void *handoff[AT_ONCE][BLOCKS];

static void *short_life(void *arg)
{
    size_t lane = (size_t)arg;
    void *mine[BLOCKS];
    for (int i = 0; i < BLOCKS; i++) {
        /* 16 bytes to 28 KiB over many classes, plus one span. */
        size_t size = i == 0 ? 150000 : (size_t)16 << (i % 11);
        size += (size_t)i * 24;
        mine[i] = malloc(size);
        CHECK(mine[i] != NULL, "malloc(%zu) failed", size);
        memset(mine[i], i, size);
    }
    for (int i = 0; i < BLOCKS; i++) {
        free(handoff[lane][i]);
        handoff[lane][i] = NULL;
    }
    for (int i = 0; i < BLOCKS; i++) {
        if (i % 4 == 0)
            handoff[lane][i] = mine[i];
        else
            free(mine[i]);
    }
    return NULL;
}

int main(void)
{
    long warm_rss = 0;
    for (int done = 0; done < THREADS; done += AT_ONCE) {
        pthread_t threads[AT_ONCE];
        for (size_t t = 0; t < AT_ONCE; t++)
            CHECK(pthread_create(&threads[t], NULL, short_life, (void *)t) == 0, "pthread_create failed");
        for (size_t t = 0; t < AT_ONCE; t++)
            pthread_join(threads[t], NULL);
        if (done + AT_ONCE == WARMUP)
            warm_rss = status_kib("VmRSS:");
    }
    printf("threads=%d\n", THREADS);
    printf("rss_warm_kib=%ld\n", warm_rss);
    printf("rss_end_kib=%ld\n", status_kib("VmRSS:"));
    printf("hwm_kib=%ld\n", status_kib("VmHWM:"));
    REPORT_OK();
    return 0;
}
