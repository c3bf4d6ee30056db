/* The schedule interface of the fault-injection library (fault_inject.c).
 *
 * Test programs do not link against the library: they find it in the
 * process with fault_api(), which fails the program if it is not preloaded. */
#ifndef STRATA_TEST_FAULT_H
#define STRATA_TEST_FAULT_H

enum fault_kind {
    FAULT_MAP = 0,   /* mmap: a new slab page or huge allocation */
    FAULT_PURGE = 1, /* madvise: giving a dirty slice's memory back */
    FAULT_UNMAP = 2, /* munmap: an empty page, a freed huge allocation, the trim of a mapping */
    FAULT_REMAP = 3, /* mremap: a huge block grown or shrunk in place, or moved */
    FAULT_KINDS = 4
};

/* From now on, the next `after` calls of `kind` made by Strata pass, then
 * `count` fail (all if negative), then calls pass again. */
void fault_set(int kind, long after, long count);
/* Calls of `kind` made by Strata so far, and how many of them failed. */
long fault_calls(int kind);
long fault_failures(int kind);

#ifndef FAULT_INJECT_LIBRARY
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

struct fault_api {
    void (*set)(int kind, long after, long count);
    long (*calls)(int kind);
    long (*failures)(int kind);
};

/* The preloaded library's functions; exits with a message if it is not
 * loaded. */
static inline struct fault_api fault_api(void)
{
    struct fault_api api = {
        (void (*)(int, long, long))dlsym(RTLD_DEFAULT, "fault_set"),
        (long (*)(int))dlsym(RTLD_DEFAULT, "fault_calls"),
        (long (*)(int))dlsym(RTLD_DEFAULT, "fault_failures"),
    };
    if (!api.set || !api.calls || !api.failures) {
        fprintf(stderr, "FAIL: libfault_inject.so is not preloaded\n");
        exit(1);
    }
    return api;
}
#endif

#endif
