/* A stand-in for another allocator: a shared library defining malloc, free,
 * calloc and realloc, forwarding to the __libc_* entry points. Listed in
 * LD_PRELOAD before libstrata.so, it is the one the program's malloc binds
 * to. (The __libc_* names resolve in lookup order too, so with the shim
 * later in LD_PRELOAD they reach the shim's aliases: every path leads to
 * the same allocator, whichever it is.) */
#include <stddef.h>

extern void *__libc_malloc(size_t size);
extern void __libc_free(void *ptr);
extern void *__libc_calloc(size_t count, size_t size);
extern void *__libc_realloc(void *ptr, size_t size);

void *malloc(size_t size)
{
    return __libc_malloc(size);
}

void free(void *ptr)
{
    __libc_free(ptr);
}

void *calloc(size_t count, size_t size)
{
    return __libc_calloc(count, size);
}

void *realloc(void *ptr, size_t size)
{
    return __libc_realloc(ptr, size);
}
