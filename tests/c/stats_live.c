/* Leaves 1000 blocks of 3000 bytes (class 3072) live at exit, for the
 * STRATA_STATS table. Closes stderr first, as GNU tools do. */
#include <unistd.h>

#include "check.h"

int main(void)
{
    for (int i = 0; i < 1000; i++)
        escape(memset(malloc(3000), 1, 3000));
    puts("done");
    fflush(stdout);
    fclose(stderr);
    return 0;
}
