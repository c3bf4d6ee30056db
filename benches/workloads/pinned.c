/*
 * A few long-lived blocks pinning sparse memory: allocates 2^20 blocks of
 * 64 bytes, keeps one in 1,000 and frees the rest, then calls
 * malloc_trim(0). Prints the resident memory after the allocations, after
 * the frees and after the trim, and checks every block kept.
 *
 *   gcc -O2 -o pinned benches/workloads/pinned.c
 *   LD_PRELOAD=target/release/libstrata.so ./pinned
 *
 * The resident figures include the 8 MiB array of block pointers, the
 * same under every allocator.
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { BLOCKS = 1 << 20, SIZE = 64, KEEP_EVERY = 1000 };

static long resident_kib(void)
{
    long size = 0, resident = 0;
    FILE *statm = fopen("/proc/self/statm", "r");
    if (statm == NULL || fscanf(statm, "%ld %ld", &size, &resident) != 2) {
        perror("/proc/self/statm");
        exit(2);
    }
    fclose(statm);
    return resident * 4;
}

int main(void)
{
    unsigned char **blocks = malloc(BLOCKS * sizeof *blocks);
    if (blocks == NULL)
        return 2;
    for (long i = 0; i < BLOCKS; i++) {
        blocks[i] = malloc(SIZE);
        if (blocks[i] == NULL)
            return 2;
        memset(blocks[i], (int)(i * 7 & 0xff), SIZE);
    }
    long full = resident_kib();
    long kept = 0;
    for (long i = 0; i < BLOCKS; i++) {
        if (i % KEEP_EVERY == 0) {
            kept++;
        } else {
            free(blocks[i]);
            blocks[i] = NULL;
        }
    }
    long freed = resident_kib();
    malloc_trim(0);
    long trimmed = resident_kib();
    for (long i = 0; i < BLOCKS; i += KEEP_EVERY) {
        for (int j = 0; j < SIZE; j++) {
            if (blocks[i][j] != (unsigned char)(i * 7 & 0xff)) {
                fprintf(stderr, "pinned: block %ld changed\n", i);
                return 1;
            }
        }
    }
    printf("kept %ld of %d blocks of %d bytes: resident %ld KiB after the allocations, "
           "%ld KiB after the frees, %ld KiB after malloc_trim(0)\n",
           kept, BLOCKS, SIZE, full, freed, trimmed);
    return 0;
}
