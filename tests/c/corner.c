/* glibc corner cases of the allocation functions. */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <unistd.h>

#include "check.h"

/* glibc's own names, exported by glibc 2.36 and so by the shim. */
extern void *__libc_valloc(size_t);
extern void *__libc_pvalloc(size_t);

static void *const SENTINEL = (void *)0x5157;

static void zero_sizes(void)
{
    void *a = malloc(0), *b = malloc(0);
    CHECK(a && b, "malloc(0) returned %p and %p", a, b);
    CHECK(a != b, "malloc(0) twice gave the same pointer %p", a);
    CHECK((uintptr_t)a % 16 == 0, "malloc(0) = %p is not 16-byte aligned", a);
    free(a);
    free(b);
    void *c = calloc(0, 10), *d = calloc(10, 0);
    CHECK(c && d && c != d, "calloc with a zero gave %p and %p", c, d);
    free(c);
    free(d);
    free(NULL);
    CHECK(malloc_usable_size(NULL) == 0, "malloc_usable_size(NULL) = %zu", malloc_usable_size(NULL));
}

static void expect_enomem(void *block, const char *what)
{
    CHECK(block == NULL, "%s returned %p", what, block);
    CHECK(errno == ENOMEM, "%s set errno %d, not ENOMEM", what, errno);
}

static void overflow_and_absurd_sizes(void)
{
    size_t absurd[] = {SIZE_MAX, SIZE_MAX - 4096, SIZE_MAX / 2, (size_t)PTRDIFF_MAX, (size_t)1 << 62, (size_t)1 << 48};
    for (size_t i = 0; i < sizeof absurd / sizeof absurd[0]; i++) {
        errno = 0;
        expect_enomem(malloc(absurd[i]), "malloc(absurd)");
        errno = 0;
        expect_enomem(calloc(1, absurd[i]), "calloc(1, absurd)");
        errno = 0;
        expect_enomem(aligned_alloc(64, absurd[i]), "aligned_alloc(64, absurd)");
        errno = 0;
        expect_enomem(valloc(absurd[i]), "valloc(absurd)");
    }
    errno = 0;
    expect_enomem(calloc(SIZE_MAX / 2, 3), "calloc(SIZE_MAX/2, 3)");
    errno = 0;
    expect_enomem(calloc((size_t)1 << 33, (size_t)1 << 33), "calloc(2^33, 2^33)");
    errno = 0;
    expect_enomem(pvalloc(SIZE_MAX - 10), "pvalloc(SIZE_MAX - 10)");

    char *p = malloc(32);
    CHECK(p != NULL, "malloc(32) failed");
    strcpy(p, "still here");
    errno = 0;
    expect_enomem(reallocarray(p, SIZE_MAX / 2, 3), "reallocarray overflow");
    CHECK(strcmp(p, "still here") == 0, "reallocarray overflow touched the block: %s", p);
    errno = 0;
    expect_enomem(realloc(p, SIZE_MAX), "realloc(p, SIZE_MAX)");
    errno = 0;
    expect_enomem(realloc(p, (size_t)1 << 62), "realloc(p, 2^62)");
    CHECK(strcmp(p, "still here") == 0, "failed realloc touched the block: %s", p);
    char *q = reallocarray(p, 100, 10);
    CHECK(q && strcmp(q, "still here") == 0, "reallocarray(p, 100, 10) lost the contents");
    CHECK(malloc_usable_size(q) >= 1000, "reallocarray gave %zu bytes", malloc_usable_size(q));
    free(q);
}

static void posix_memalign_rules(void)
{
    size_t bad[] = {0, 1, 2, 4, 3, 12, 24, 48, 4095, (size_t)1 << 63 | 8};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        void *out = SENTINEL;
        int rc = posix_memalign(&out, bad[i], 64);
        CHECK(rc == EINVAL, "posix_memalign(align %zu) = %d, not EINVAL", bad[i], rc);
        CHECK(out == SENTINEL, "posix_memalign(align %zu) wrote *memptr = %p", bad[i], out);
    }
    void *out = SENTINEL;
    int rc = posix_memalign(&out, 64, SIZE_MAX - 100);
    CHECK(rc == ENOMEM, "posix_memalign(64, huge) = %d, not ENOMEM", rc);
    CHECK(out == SENTINEL, "failed posix_memalign wrote *memptr = %p", out);
    size_t good[] = {8, 16, 32, 64, 4096, (size_t)1 << 20};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        rc = posix_memalign(&out, good[i], 0);
        CHECK(rc == 0 && out != SENTINEL && (uintptr_t)out % good[i] == 0,
              "posix_memalign(align %zu, 0) = %d, %p", good[i], rc, out);
        free(out);
    }
}

static void memalign_rules(void)
{
    /* glibc 2.36: aligned_alloc is memalign; a non-power-of-two alignment is
     * rounded up, only an alignment above SIZE_MAX/2+1 is EINVAL. */
    void *p = aligned_alloc(24, 48);
    CHECK(p && (uintptr_t)p % 32 == 0, "aligned_alloc(24, 48) = %p", p);
    free(p);
    p = memalign(3, 48);
    CHECK(p && (uintptr_t)p % 16 == 0, "memalign(3, 48) = %p", p);
    free(p);
    p = aligned_alloc(0, 48);
    CHECK(p && (uintptr_t)p % 16 == 0, "aligned_alloc(0, 48) = %p", p);
    free(p);
    p = memalign(4096, 0);
    CHECK(p && (uintptr_t)p % 4096 == 0, "memalign(4096, 0) = %p", p);
    free(p);
    errno = 0;
    p = aligned_alloc(SIZE_MAX / 2 + 2, 8);
    CHECK(p == NULL && errno == EINVAL, "aligned_alloc(SIZE_MAX/2+2, 8) = %p, errno %d", p, errno);
    errno = 0;
    p = memalign(SIZE_MAX, 8);
    CHECK(p == NULL && errno == EINVAL, "memalign(SIZE_MAX, 8) = %p, errno %d", p, errno);
    long page = sysconf(_SC_PAGESIZE);
    p = valloc(1);
    CHECK(p && (uintptr_t)p % page == 0, "valloc(1) = %p", p);
    free(p);
    p = pvalloc(page + 1);
    CHECK(p && (uintptr_t)p % page == 0 && malloc_usable_size(p) >= 2 * (size_t)page,
          "pvalloc(page + 1) = %p with %zu bytes", p, malloc_usable_size(p));
    free(p);
    p = __libc_valloc(100);
    CHECK(p && (uintptr_t)p % page == 0, "__libc_valloc(100) = %p", p);
    free(p);
    p = __libc_pvalloc(100);
    CHECK(p && (uintptr_t)p % page == 0 && malloc_usable_size(p) >= 4096, "__libc_pvalloc(100) = %p with %zu bytes", p,
          malloc_usable_size(p));
    free(p);
}

static void realloc_rules(void)
{
    struct mallinfo2 before = mallinfo2();
    char *p = malloc(5000);
    CHECK(p != NULL, "malloc(5000) failed");
    CHECK(mallinfo2().uordblks >= before.uordblks + 5000, "mallinfo2 did not count 5000 bytes");
    errno = 0;
    void *r = realloc(p, 0);
    CHECK(r == NULL, "realloc(p, 0) = %p, not NULL", r);
    CHECK(mallinfo2().uordblks == before.uordblks, "realloc(p, 0) did not free p: %zu live bytes, %zu before",
          mallinfo2().uordblks, before.uordblks);

    p = realloc(NULL, 100);
    CHECK(p && malloc_usable_size(p) >= 100, "realloc(NULL, 100) = %p", p);
    for (int i = 0; i < 100; i++)
        p[i] = (char)i;
    /* Grow through a span and a huge mapping, then shrink back. */
    size_t sizes[] = {1000, 40000, 300000, 5 << 20, 40 << 20, 70000, 50};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        p = realloc(p, sizes[s]);
        CHECK(p && malloc_usable_size(p) >= sizes[s], "realloc to %zu failed", sizes[s]);
        for (int i = 0; i < 50; i++)
            CHECK(p[i] == (char)i, "realloc to %zu lost byte %d", sizes[s], i);
        memset(p + 50, 0x7e, sizes[s] - 50);
    }
    free(p);
}

int main(void)
{
    zero_sizes();
    overflow_and_absurd_sizes();
    posix_memalign_rules();
    memalign_rules();
    realloc_rules();
    REPORT_OK();
    return 0;
}
