/* Blocks above the size classes keep their contents while they grow and
 * shrink by realloc: spans growing into the slices after them, huge blocks
 * remapped, and blocks moving between the two.
 *
 * One buffer grows in 64 KiB steps to 64 MiB; two buffers grow in turn
 * (so neither can simply extend into free address space after it); each
 * step checks every byte written so far, through the new pointer. Then
 * the buffers shrink in steps, back below a span, still checked.
 * Prints one_moves and two_moves: how many reallocs returned a new
 * address (the point of growth in place is that few do). */
#include <malloc.h>
#include <stdint.h>

#include "check.h"

enum { STEP = 64 << 10, TOP = 64 << 20 };

/* Byte i of a buffer tagged `tag` holds pattern(tag, i). */
static unsigned char pattern(int tag, size_t i) { return (unsigned char)(tag * 31 + i * 7 + (i >> 12)); }

static void write_range(unsigned char *block, int tag, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++)
        block[i] = pattern(tag, i);
}

static int holds(const unsigned char *block, int tag, size_t size)
{
    for (size_t i = 0; i < size; i += 509)
        if (block[i] != pattern(tag, i))
            return 0;
    return size == 0 || block[size - 1] == pattern(tag, size - 1);
}

/* Grows `*block` from `*size` to `next`, writes the new part, checks all. */
static int grow(unsigned char **block, size_t *size, size_t next, int tag)
{
    unsigned char *moved = realloc(*block, next);
    CHECK(moved != NULL, "realloc(%zu) failed", next);
    CHECK(malloc_usable_size(moved) >= next, "usable %zu < %zu", malloc_usable_size(moved), next);
    int was_moved = moved != *block;
    CHECK(holds(moved, tag, *size), "tag %d: contents lost growing %zu -> %zu", tag, *size, next);
    write_range(moved, tag, *size, next);
    *block = moved;
    *size = next;
    return was_moved;
}

static void shrink(unsigned char **block, size_t *size, size_t next, int tag)
{
    unsigned char *moved = realloc(*block, next);
    CHECK(moved != NULL, "realloc(%zu) failed", next);
    CHECK(holds(moved, tag, next), "tag %d: contents lost shrinking %zu -> %zu", tag, *size, next);
    *block = moved;
    *size = next;
}

int main(void)
{
    unsigned char *one = NULL;
    size_t one_size = 0;
    int one_moves = 0;
    for (size_t next = STEP; next <= TOP; next += STEP)
        one_moves += grow(&one, &one_size, next, 1);

    unsigned char *a = NULL, *b = NULL;
    size_t a_size = 0, b_size = 0;
    int two_moves = 0;
    for (size_t next = STEP; next <= TOP; next += STEP) {
        two_moves += grow(&a, &a_size, next, 2);
        two_moves += grow(&b, &b_size, next, 3);
    }
    CHECK(holds(one, 1, one_size) && holds(a, 2, a_size) && holds(b, 3, b_size), "final contents");

    /* Shrink by halves, through the huge sizes and spans to a small size. */
    for (size_t next = TOP / 2; next >= 1000; next /= 2) {
        shrink(&one, &one_size, next, 1);
        shrink(&a, &a_size, next, 2);
    }
    /* Grow a huge block by a large step at once, and a span past a span. */
    grow(&one, &one_size, 40 << 20, 1);
    grow(&b, &b_size, (size_t)TOP + (TOP >> 1), 3);
    free(one);
    free(a);
    free(b);

    /* A span grows in place when the slices after it are free, and its
     * contents survive growth in single slices up to the largest span. */
    unsigned char *span = NULL;
    size_t span_size = 0;
    for (size_t next = STEP; next <= (2 << 20); next += STEP)
        grow(&span, &span_size, next, 4);
    free(span);

    printf("one_moves=%d\ntwo_moves=%d\n", one_moves, two_moves);
    REPORT_OK();
    return 0;
}
