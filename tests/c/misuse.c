/* Heap misuse, one case per run (argv[1]). The program prints the pointer it
 * is about to misuse on stdout, then misuses it; the allocator must abort
 * with one line on stderr. Reaching the end is a failure (exit 1). */
#include <malloc.h>
#include <pthread.h>

#include "check.h"
#include "strata.h"

/* From the preloaded libstrata.so; see bulk.c. */
#pragma weak strata_alloc_bulk
#pragma weak strata_free_bulk

static void announce(void *p)
{
    printf("%p\n", p);
    fflush(stdout);
}

static void *free_it(void *p)
{
    free(p);
    return NULL;
}

int main(int argc, char **argv)
{
    CHECK(argc == 2, "usage: misuse CASE");
    const char *what = argv[1];
    long on_stack = 0;
    if (strcmp(what, "double-free") == 0) {
        void *p = malloc(64);
        announce(p);
        free(p);
        free(p);
    } else if (strcmp(what, "double-free-span") == 0) {
        void *p = malloc(300000);
        announce(p);
        free(p);
        free(p);
    } else if (strcmp(what, "double-free-remote") == 0) {
        void *p = malloc(200);
        announce(p);
        pthread_t a, b;
        pthread_create(&a, NULL, free_it, p);
        pthread_join(a, NULL);
        pthread_create(&b, NULL, free_it, p);
        pthread_join(b, NULL);
    } else if (strcmp(what, "foreign") == 0) {
        announce(&on_stack);
        free(&on_stack);
    } else if (strcmp(what, "interior") == 0) {
        char *p = malloc(64);
        announce(p + 16);
        free(p + 16);
    } else if (strcmp(what, "realloc-foreign") == 0) {
        announce(&on_stack);
        void *q = realloc(&on_stack, 100);
        escape(q);
    } else if (strcmp(what, "double-free-bulk") == 0) {
        void *set[4];
        CHECK(strata_alloc_bulk != NULL && strata_alloc_bulk(64, 4, set) == 4, "strata_alloc_bulk failed");
        announce(set[2]);
        free(set[2]);
        strata_free_bulk(set, 4);
    } else {
        CHECK(0, "unknown case %s", what);
    }
    fprintf(stderr, "misuse went unnoticed\n");
    return 1;
}
