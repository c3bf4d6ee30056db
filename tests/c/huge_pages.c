/* Prints whether the mappings that hold a small block and a huge block
 * carry the huge-page advice (the "hg" flag of /proc/self/smaps), as
 * "small: yes|no" and "huge: yes|no". The small block is allocated after
 * 16 MiB of others, so that it lies in a page mapped well after start-up. */
#include "check.h"

/* Whether the mapping that holds `block` has the "hg" flag. */
static int advised(const void *block)
{
    char line[1024];
    unsigned long address = (unsigned long)block, start, end;
    int inside = 0, found = -1;
    FILE *smaps = fopen("/proc/self/smaps", "r");
    CHECK(smaps != NULL, "cannot open /proc/self/smaps");
    while (found < 0 && fgets(line, sizeof line, smaps)) {
        if (sscanf(line, "%lx-%lx ", &start, &end) == 2)
            inside = address >= start && address < end;
        else if (inside && strncmp(line, "VmFlags:", 8) == 0)
            found = strstr(line, " hg") != NULL;
    }
    fclose(smaps);
    CHECK(found >= 0, "no mapping of /proc/self/smaps holds %p", block);
    return found;
}

int main(void)
{
    enum { COUNT = 262144, SIZE = 64 };
    char **blocks = calloc(COUNT, sizeof *blocks);
    CHECK(blocks != NULL, "calloc of the block table failed");
    for (int i = 0; i < COUNT; i++) {
        blocks[i] = malloc(SIZE);
        CHECK(blocks[i] != NULL, "malloc(%d) number %d failed", SIZE, i);
        memset(blocks[i], i & 0xff, SIZE);
    }
    char *huge = malloc(8 << 20);
    CHECK(huge != NULL, "malloc of 8 MiB failed");
    memset(huge, 0x5a, 8 << 20);
    printf("small: %s\n", advised(blocks[COUNT - 1]) ? "yes" : "no");
    printf("huge: %s\n", advised(huge) ? "yes" : "no");
    for (int i = 0; i < COUNT; i++) {
        CHECK(blocks[i][0] == (char)(i & 0xff) && blocks[i][SIZE - 1] == (char)(i & 0xff), "block %d changed", i);
        free(blocks[i]);
    }
    CHECK(huge[0] == 0x5a && huge[(8 << 20) - 1] == 0x5a, "the huge block changed");
    free(huge);
    free(blocks);
    REPORT_OK();
    return 0;
}
