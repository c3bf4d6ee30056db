/* Prints LD_PRELOAD and allocates a little: the launcher's test subject. */
#include "check.h"

int main(void)
{
    const char *preload = getenv("LD_PRELOAD");
    char *copy = strdup(preload ? preload : "");
    CHECK(copy != NULL, "strdup failed");
    printf("LD_PRELOAD=%s\n", copy);
    free(copy);
    REPORT_OK();
    return 0;
}
