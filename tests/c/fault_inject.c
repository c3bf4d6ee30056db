/* A preload library that makes Strata's page source fail on a schedule:
 *
 *     LD_PRELOAD=libfault_inject.so:libstrata.so program
 *
 * It wraps mmap (and mmap64, the same function in glibc on x86-64), madvise,
 * munmap and mremap. A call whose caller lies in libstrata.so (found with
 * _dl_find_object, which takes no lock and does not allocate) follows the
 * schedule of its kind; every other call goes straight to glibc. glibc's own
 * mappings (thread stacks, the loader) do not come through these symbols at
 * all, and are never failed.
 *
 * The schedule of a kind: the next `after` calls pass, then `count` calls
 * fail (count < 0: every call until the next schedule), then calls pass
 * again. A failed call returns what the kernel would on the failure (mmap:
 * MAP_FAILED; madvise and munmap: -1) with errno ENOMEM.
 *
 * It is set two ways:
 * - from the start, by the environment: FAULT_MMAP, FAULT_MADVISE and
 *   FAULT_MUNMAP, FAULT_MREMAP hold "after,count" (read at the first call of the kind, so
 *   that it applies to Strata's very first mapping);
 * - at any time, by the program: fault_set(kind, after, count), found with
 *   dlsym(RTLD_DEFAULT, "fault_set") (see fault.h).
 *
 * fault_calls(kind) counts the calls from Strata seen so far and
 * fault_failures(kind) those failed. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>

#define FAULT_INJECT_LIBRARY
#include "fault.h"

struct schedule {
    atomic_long pass;     /* calls still to pass before failing */
    atomic_long fail;     /* calls still to fail; negative: all */
    atomic_long calls;    /* calls from Strata seen */
    atomic_long failures; /* of which failed */
    atomic_int state;     /* 0: environment not read, 1: reading, 2: read */
};

static struct schedule schedules[FAULT_KINDS];

static const char *const variables[FAULT_KINDS] = {"FAULT_MMAP", "FAULT_MADVISE", "FAULT_MUNMAP", "FAULT_MREMAP"};

/* Reads "after,count" from the kind's variable, once. getenv and strtol
 * neither allocate nor map. */
static void configure(int kind)
{
    struct schedule *s = &schedules[kind];
    int expected = 0;
    if (atomic_load(&s->state) == 2)
        return;
    if (!atomic_compare_exchange_strong(&s->state, &expected, 1)) {
        while (atomic_load(&s->state) != 2)
            ;
        return;
    }
    const char *value = getenv(variables[kind]);
    if (value && *value) {
        char *end;
        long after = strtol(value, &end, 10);
        long count = *end == ',' ? strtol(end + 1, NULL, 10) : -1;
        atomic_store(&s->fail, count);
        atomic_store(&s->pass, after);
    }
    atomic_store(&s->state, 2);
}

/* Whether this call, of `kind`, from Strata, is to fail. */
static int take_fault(int kind)
{
    struct schedule *s = &schedules[kind];
    configure(kind);
    atomic_fetch_add(&s->calls, 1);
    long pass = atomic_load(&s->pass);
    while (pass > 0)
        if (atomic_compare_exchange_weak(&s->pass, &pass, pass - 1))
            return 0;
    long fail = atomic_load(&s->fail);
    while (fail != 0) {
        if (fail < 0 || atomic_compare_exchange_weak(&s->fail, &fail, fail - 1)) {
            atomic_fetch_add(&s->failures, 1);
            return 1;
        }
    }
    return 0;
}

/* Whether `caller` (a return address) lies in libstrata.so. */
static int from_strata(void *caller)
{
    struct dl_find_object found;
    if (_dl_find_object(caller, &found) != 0 || !found.dlfo_link_map || !found.dlfo_link_map->l_name)
        return 0;
    return strstr(found.dlfo_link_map->l_name, "libstrata") != NULL;
}

typedef void *(*mmap_fn)(void *, size_t, int, int, int, off_t);
typedef int (*madvise_fn)(void *, size_t, int);
typedef int (*munmap_fn)(void *, size_t);
typedef void *(*mremap_fn)(void *, size_t, size_t, int, ...);

/* glibc's definitions. dlsym on a name that exists does not allocate. */
static mmap_fn real_mmap(void)
{
    static _Atomic(mmap_fn) real;
    mmap_fn fn = atomic_load(&real);
    if (!fn) {
        fn = (mmap_fn)dlsym(RTLD_NEXT, "mmap");
        atomic_store(&real, fn);
    }
    return fn;
}

static madvise_fn real_madvise(void)
{
    static _Atomic(madvise_fn) real;
    madvise_fn fn = atomic_load(&real);
    if (!fn) {
        fn = (madvise_fn)dlsym(RTLD_NEXT, "madvise");
        atomic_store(&real, fn);
    }
    return fn;
}

static munmap_fn real_munmap(void)
{
    static _Atomic(munmap_fn) real;
    munmap_fn fn = atomic_load(&real);
    if (!fn) {
        fn = (munmap_fn)dlsym(RTLD_NEXT, "munmap");
        atomic_store(&real, fn);
    }
    return fn;
}

static mremap_fn real_mremap(void)
{
    static _Atomic(mremap_fn) real;
    mremap_fn fn = atomic_load(&real);
    if (!fn) {
        fn = (mremap_fn)dlsym(RTLD_NEXT, "mremap");
        atomic_store(&real, fn);
    }
    return fn;
}

static void *mapping(void *caller, void *address, size_t length, int prot, int flags, int fd, off_t offset)
{
    if (from_strata(caller) && take_fault(FAULT_MAP)) {
        errno = ENOMEM;
        return MAP_FAILED;
    }
    return real_mmap()(address, length, prot, flags, fd, offset);
}

__attribute__((noinline)) void *mmap(void *address, size_t length, int prot, int flags, int fd, off_t offset)
{
    return mapping(__builtin_return_address(0), address, length, prot, flags, fd, offset);
}

__attribute__((noinline)) void *mmap64(void *address, size_t length, int prot, int flags, int fd, off_t offset)
{
    return mapping(__builtin_return_address(0), address, length, prot, flags, fd, offset);
}

__attribute__((noinline)) int madvise(void *address, size_t length, int advice)
{
    if (from_strata(__builtin_return_address(0)) && take_fault(FAULT_PURGE)) {
        errno = ENOMEM;
        return -1;
    }
    return real_madvise()(address, length, advice);
}

__attribute__((noinline)) int munmap(void *address, size_t length)
{
    if (from_strata(__builtin_return_address(0)) && take_fault(FAULT_UNMAP)) {
        errno = ENOMEM;
        return -1;
    }
    return real_munmap()(address, length);
}

__attribute__((noinline)) void *mremap(void *address, size_t old_length, size_t new_length, int flags, ...)
{
    void *new_address = NULL;
    if (flags & MREMAP_FIXED) {
        va_list arguments;
        va_start(arguments, flags);
        new_address = va_arg(arguments, void *);
        va_end(arguments);
    }
    if (from_strata(__builtin_return_address(0)) && take_fault(FAULT_REMAP)) {
        errno = ENOMEM;
        return MAP_FAILED;
    }
    return real_mremap()(address, old_length, new_length, flags, new_address);
}

void fault_set(int kind, long after, long count)
{
    if (kind < 0 || kind >= FAULT_KINDS)
        abort();
    configure(kind);
    struct schedule *s = &schedules[kind];
    atomic_store(&s->fail, 0);
    atomic_store(&s->pass, after);
    atomic_store(&s->fail, count);
}

long fault_calls(int kind)
{
    if (kind < 0 || kind >= FAULT_KINDS)
        abort();
    return atomic_load(&schedules[kind].calls);
}

long fault_failures(int kind)
{
    if (kind < 0 || kind >= FAULT_KINDS)
        abort();
    return atomic_load(&schedules[kind].failures);
}
