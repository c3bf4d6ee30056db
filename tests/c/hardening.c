/* Hardening, one case per run (argv[1]). The program prints the pointer it
 * is about to misuse on stdout, then misuses it; the allocator must stop it:
 * abort with one line on stderr, or (a guard page) SIGSEGV. Reaching the end
 * is a failure (exit 1).
 *
 *   forged-link         a use-after-free write of a live block's address
 *                       into a freed block's free-list link
 *   forged-remote-link  the same, the block freed by another thread (after
 *                       a neighbour, so that the two reach the slice's
 *                       remote list together, the forged link between them)
 *   overrun-small       (STRATA_DEBUG=1) one byte written past a 40-byte
 *                       block, then the block freed
 *   overrun-large       (STRATA_DEBUG=1) writes running on past the end of
 *                       a 100000-byte block, up to 72 KiB past it
 *   clean               (STRATA_DEBUG=1) blocks of many sizes written up to
 *                       malloc_usable_size, resized and freed: no report */
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>

#include "check.h"

static void announce(void *p)
{
    printf("%p\n", p);
    fflush(stdout);
}

static void *free_and_forge(void *arg)
{
    void **blocks = arg;
    /* Two blocks of one slice, freed by this thread, go onto the slice's
     * remote list together, the second linked to the first. */
    free(blocks[0]);
    free(blocks[1]);
    /* The use after free: the freed block's first word is its link. */
    memcpy(blocks[1], &blocks[2], sizeof(void *));
    return NULL;
}

int main(int argc, char **argv)
{
    CHECK(argc == 2, "usage: hardening CASE");
    const char *what = argv[1];
    if (strcmp(what, "forged-link") == 0) {
        void *live = malloc(48);
        void *freed = malloc(48);
        announce(freed);
        free(freed);
        memcpy(freed, &live, sizeof live);
        void *first = malloc(48);
        void *second = malloc(48);
        fprintf(stderr, "followed: %p %p (live %p)\n", first, second, live);
    } else if (strcmp(what, "forged-remote-link") == 0) {
        long on_stack[8] = {0};
        void *older = malloc(48);
        void *blocks[3] = {older, malloc(48), on_stack};
        announce(blocks[1]);
        pthread_t thread;
        pthread_create(&thread, NULL, free_and_forge, blocks);
        pthread_join(thread, NULL);
        /* Run the slice dry, so its owner takes the remote frees back. */
        for (int i = 0; i < 3000; i++)
            escape(malloc(48));
        fprintf(stderr, "followed: %ld\n", on_stack[0]);
    } else if (strcmp(what, "overrun-small") == 0) {
        char *p = malloc(40);
        announce(p);
        memset(p, 1, 40);
        p[40] = 'x';
        free(p);
    } else if (strcmp(what, "overrun-large") == 0) {
        volatile char *p = malloc(100000);
        announce((void *)p);
        for (size_t i = 0; i < 100000 + 72 * 1024; i++)
            p[i] = 1;
        free((void *)p);
    } else if (strcmp(what, "clean") == 0) {
        const char *mode = getenv("STRATA_DEBUG");
        int debug = mode != NULL && strcmp(mode, "1") == 0;
        static const size_t sizes[] = {1, 7, 8, 15, 16, 24, 40, 100, 1000, 4096, 32760, 32768, 40000, 100000, 3 << 20};
        void *blocks[sizeof sizes / sizeof sizes[0]];
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            size_t size = sizes[i];
            char *p = (i % 2) ? calloc(1, size) : malloc(size);
            CHECK(p != NULL, "malloc(%zu) failed", size);
            size_t usable = malloc_usable_size(p);
            /* In debug mode the usable size is the size asked for. */
            CHECK(debug ? usable == size : usable >= size, "usable size of %zu is %zu", size, usable);
            memset(p, 0x5a, usable);
            p = realloc(p, size + 10);
            CHECK(p != NULL && p[size - 1] == 0x5a, "realloc(%zu) lost the contents", size + 10);
            memset(p, 0x33, size + 10);
            blocks[i] = p;
        }
        void *aligned = NULL;
        CHECK(posix_memalign(&aligned, 4096, 5000) == 0 && (uintptr_t)aligned % 4096 == 0, "posix_memalign");
        memset(aligned, 1, 5000);
        free(aligned);
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
            free(blocks[i]);
        REPORT_OK();
        return 0;
    } else {
        CHECK(0, "unknown case %s", what);
    }
    fprintf(stderr, "misuse went unnoticed\n");
    return 1;
}
