/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The C side of the Strata module, called from Rust (main.rs declares the
 * same functions in its `ffi` module).
 */
#ifndef STRATA_HELPERS_H
#define STRATA_HELPERS_H

#include <linux/gfp_types.h>
#include <linux/spinlock_types.h>
#include <linux/types.h>

struct kmem_cache;
struct strata_source_counts;
struct strata_timer;
struct strata_soft_timer;

unsigned long strata_irq_save(void);
void strata_irq_restore(unsigned long flags);
unsigned int strata_cpu(void);
unsigned int strata_cpu_ids(void);
u64 strata_now_ms(void);
u64 strata_cycles(void);
u64 strata_random(void);
void __noreturn strata_bug(void);
void strata_cond_resched(void);
void strata_lock_init(spinlock_t *lock);
unsigned long strata_lock(spinlock_t *lock);
bool strata_trylock(spinlock_t *lock, unsigned long *flags);
void strata_unlock(spinlock_t *lock, unsigned long flags);
void strata_source_configure(unsigned int fail_every, bool no_high_order);
bool strata_gfp_can_sleep(gfp_t gfp);
void *strata_map(size_t size, size_t align, gfp_t gfp);
void strata_unmap(void *memory, size_t size);
void strata_source_drain(void);
bool strata_register(unsigned long page, unsigned int shift, gfp_t gfp);
void strata_unregister(unsigned long page, unsigned int shift);
bool strata_owns(unsigned long page, unsigned int shift);
void strata_source_counts(struct strata_source_counts *counts);
void strata_on_each_cpu(void (*function)(void *, unsigned int), void *data);
int strata_run_workers(int (*function)(void *, unsigned int), void *data, unsigned int count);
struct strata_timer *strata_timer_start(void (*function)(void *), void *data, u64 period_ns);
void strata_timer_stop(struct strata_timer *t);
struct strata_soft_timer *strata_soft_timer_start(void (*function)(void *), void *data);
void strata_soft_timer_stop(struct strata_soft_timer *t);
void strata_debugfs_create(size_t (*text)(char *buffer, size_t size));
void strata_debugfs_remove(void);
u64 strata_bench_kmalloc_pairs(size_t size, unsigned int count);
u64 strata_bench_kmalloc_batches(size_t size, unsigned int batch, unsigned int rounds);
void *strata_kmalloc(size_t size);
void strata_kfree(void *block);
void *strata_cache_alloc(struct kmem_cache *cache);
void strata_cache_free(struct kmem_cache *cache, void *block);
unsigned int strata_online_cpus(void);
void strata_cpu_relax(void);
struct kmem_cache *strata_bench_cache_create(size_t size);
void strata_bench_cache_destroy(struct kmem_cache *cache);
u64 strata_bench_cache_pairs(struct kmem_cache *cache, unsigned int count);
u64 strata_bench_cache_batches(struct kmem_cache *cache, unsigned int batch, unsigned int rounds);
u64 strata_bench_cache_bulk(struct kmem_cache *cache, unsigned int batch, unsigned int rounds);

#endif
