/* libstrata.so loaded with dlopen (argv[1] is its path). A dlopen'ed malloc
 * does not interpose, so the program's own malloc stays glibc's; the
 * library's functions, looked up with dlsym, must work, from several
 * threads too (its thread-local slot then lives in the static TLS surplus),
 * and keep working after dlclose (the library is NODELETE). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>

#include "check.h"

static void *(*s_malloc)(size_t);
static void (*s_free)(void *);
static void *(*s_calloc)(size_t, size_t);
static void *(*s_realloc)(void *, size_t);
static int (*s_posix_memalign)(void **, size_t, size_t);
static size_t (*s_usable)(void *);
static int (*s_trim)(size_t);

static void *lookup(void *library, const char *name)
{
    void *symbol = dlsym(library, name);
    CHECK(symbol != NULL, "dlsym(%s): %s", name, dlerror());
    return symbol;
}

static void *use_strata(void *arg)
{
    size_t rounds = (size_t)arg;
    for (size_t r = 0; r < rounds; r++) {
        void *blocks[64];
        for (int i = 0; i < 64; i++) {
            size_t size = 1 + (size_t)(i * 997 + r) % 70000;
            blocks[i] = i % 3 ? s_malloc(size) : s_calloc(1, size);
            CHECK(blocks[i] != NULL, "strata malloc(%zu) failed", size);
            CHECK(s_usable(blocks[i]) >= size, "strata usable size %zu < %zu", s_usable(blocks[i]), size);
            memset(blocks[i], 0x5a, size);
        }
        for (int i = 0; i < 64; i++) {
            blocks[i] = s_realloc(blocks[i], 100 + i);
            CHECK(blocks[i] != NULL, "strata realloc failed");
            s_free(blocks[i]);
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    CHECK(argc == 2, "usage: dlopen_shim /path/to/libstrata.so");
    void *library = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    CHECK(library != NULL, "dlopen: %s", dlerror());
    s_malloc = lookup(library, "malloc");
    s_free = lookup(library, "free");
    s_calloc = lookup(library, "calloc");
    s_realloc = lookup(library, "realloc");
    s_posix_memalign = lookup(library, "posix_memalign");
    s_usable = lookup(library, "malloc_usable_size");
    s_trim = lookup(library, "malloc_trim");
    CHECK((void *)s_malloc != dlsym(RTLD_DEFAULT, "malloc"), "the library's malloc is the process's malloc");

    use_strata((void *)10);
    pthread_t threads[4];
    for (size_t t = 0; t < 4; t++)
        CHECK(pthread_create(&threads[t], NULL, use_strata, (void *)50) == 0, "pthread_create failed");
    for (size_t t = 0; t < 4; t++)
        pthread_join(threads[t], NULL);

    void *aligned = NULL;
    CHECK(s_posix_memalign(&aligned, 1 << 20, 100) == 0 && (uintptr_t)aligned % (1 << 20) == 0,
          "strata posix_memalign failed: %p", aligned);
    s_free(aligned);
    s_trim(0);

    /* glibc's malloc still serves the program. */
    void *mine = malloc(100);
    CHECK(mine != NULL, "glibc malloc failed");
    free(mine);

    CHECK(dlclose(library) == 0, "dlclose: %s", dlerror());
    use_strata((void *)2);
    REPORT_OK();
    return 0;
}
