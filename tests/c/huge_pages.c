/* Prints whether the mapping that holds a small block has memory on huge
 * pages ("AnonHugePages" of /proc/self/smaps above 0), as "small: yes|no";
 * whether the one that holds a huge block of 8 MiB, grown by realloc from
 * 1 MiB, carries the huge-page advice (its "hg" flag), as "huge: yes|no",
 * and whether that block, filled, is on huge pages, as "huge backed:
 * yes|no"; and whether a block of 8 MiB allocated at its size and filled
 * carries the advice, as "allocated: yes|no". The small block is one of
 * 16 MiB of others, in the middle, so that its page is filled whole. */
#include "check.h"

/* Whether the /proc/self/smaps entry of the mapping that holds `block` has
 * a line starting with `field` that `test` accepts. */
static int mapping_has(const void *block, const char *field, int (*test)(const char *line))
{
    char line[1024];
    unsigned long address = (unsigned long)block, start, end;
    int inside = 0, found = -1;
    FILE *smaps = fopen("/proc/self/smaps", "r");
    CHECK(smaps != NULL, "cannot open /proc/self/smaps");
    while (found < 0 && fgets(line, sizeof line, smaps)) {
        if (sscanf(line, "%lx-%lx ", &start, &end) == 2)
            inside = address >= start && address < end;
        else if (inside && strncmp(line, field, strlen(field)) == 0)
            found = test(line);
    }
    fclose(smaps);
    CHECK(found >= 0, "no mapping of /proc/self/smaps holds %p with %s", block, field);
    return found;
}

static int has_hg_flag(const char *line) { return strstr(line, " hg") != NULL; }

static int has_huge_pages(const char *line)
{
    unsigned long kilobytes = 0;
    CHECK(sscanf(line, "AnonHugePages: %lu kB", &kilobytes) == 1, "unreadable line: %s", line);
    return kilobytes > 0;
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
    char *huge = malloc(1 << 20);
    CHECK(huge != NULL, "malloc of 1 MiB failed");
    memset(huge, 0x5a, 1 << 20);
    huge = realloc(huge, 8 << 20);
    CHECK(huge != NULL, "realloc to 8 MiB failed");
    CHECK(huge[0] == 0x5a && huge[(1 << 20) - 1] == 0x5a, "realloc lost the contents");
    memset(huge, 0x5a, 8 << 20);
    char *allocated = malloc(8 << 20);
    CHECK(allocated != NULL, "malloc of 8 MiB failed");
    memset(allocated, 0x3c, 8 << 20);
    printf("small: %s\n", mapping_has(blocks[COUNT / 2], "AnonHugePages:", has_huge_pages) ? "yes" : "no");
    printf("huge: %s\n", mapping_has(huge, "VmFlags:", has_hg_flag) ? "yes" : "no");
    printf("huge backed: %s\n", mapping_has(huge, "AnonHugePages:", has_huge_pages) ? "yes" : "no");
    printf("allocated: %s\n", mapping_has(allocated, "VmFlags:", has_hg_flag) ? "yes" : "no");
    for (int i = 0; i < COUNT; i++) {
        CHECK(blocks[i][0] == (char)(i & 0xff) && blocks[i][SIZE - 1] == (char)(i & 0xff), "block %d changed", i);
        free(blocks[i]);
    }
    CHECK(huge[0] == 0x5a && huge[(8 << 20) - 1] == 0x5a, "the huge block changed");
    CHECK(allocated[0] == 0x3c && allocated[(8 << 20) - 1] == 0x3c, "the allocated block changed");
    free(allocated);
    free(huge);
    free(blocks);
    REPORT_OK();
    return 0;
}
