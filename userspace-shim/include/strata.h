/* Strata's extensions to the C allocation functions, exported by
 * libstrata.so. */
#ifndef STRATA_H
#define STRATA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Allocates count blocks of size bytes, each aligned as malloc's (16 bytes),
 * into out[0] to out[count - 1]. All or nothing: returns count, or 0 with
 * errno set to ENOMEM (also for sizes malloc refuses), no block allocated and
 * every out[i] set to NULL. count == 0 returns 0 and leaves errno alone; out
 * == NULL with count > 0 returns 0 with errno set to EINVAL. Each block may be
 * freed with strata_free_bulk, free or realloc. */
size_t strata_alloc_bulk(size_t size, size_t count, void **out);

/* Frees blocks[0] to blocks[count - 1], skipping NULL entries as free(NULL)
 * does. A double free or a pointer that is not a live allocation aborts the
 * process with a message, as free does. */
void strata_free_bulk(void **blocks, size_t count);

#ifdef __cplusplus
}
#endif

#endif
