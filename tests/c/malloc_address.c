/* Takes the address of malloc and free, as Python does for its allocator
 * tables. In a non-PIE executable (-no-pie) a function whose address the
 * program takes gets a canonical address, its own PLT stub: that becomes
 * the value of the executable's (undefined) malloc symbol, and it is what
 * dlsym(RTLD_DEFAULT, "malloc") returns. Prints dlsym_in_program=1 when
 * that is so, 0 otherwise. */
#define _GNU_SOURCE
#include <dlfcn.h>

#include "check.h"

static void *(*volatile allocate)(size_t);
static void (*volatile release)(void *);

int main(void)
{
    /* Taken in code, not in a data initializer (which a dynamic relocation
     * can fill in): non-PIC code needs the address as a link-time
     * constant. */
    allocate = malloc;
    release = free;
    for (size_t size = 1; size <= 100000; size *= 7) {
        char *block = allocate(size);
        CHECK(block != NULL, "malloc(%zu) failed", size);
        memset(block, 0x5a, size);
        release(block);
    }
    Dl_info program, found;
    void *symbol = dlsym(RTLD_DEFAULT, "malloc");
    CHECK(symbol != NULL, "dlsym(malloc): %s", dlerror());
    CHECK(dladdr((void *)main, &program) != 0, "dladdr(main) failed");
    CHECK(dladdr(symbol, &found) != 0, "dladdr(malloc) failed");
    printf("dlsym_in_program=%d\n", found.dli_fbase == program.dli_fbase);
    REPORT_OK();
    return 0;
}
