// SPDX-License-Identifier: GPL-2.0
/*
 * The C side of the Strata module: what the 7.2 Rust API does not offer
 * (interrupt masking, spinlocks taken with interrupts saved, page_address,
 * kthreads bound to a CPU, hrtimers, debugfs seq files) and the kernel page
 * source's memory calls. Every function is a thin wrapper; the allocator and
 * the tests are in Rust (main.rs and the core crate).
 */
#include <linux/atomic.h>
#include <linux/completion.h>
#include <linux/cpu.h>
#include <linux/cpumask.h>
#include <linux/debugfs.h>
#include <linux/delay.h>
#include <linux/gfp.h>
#include <linux/hrtimer.h>
#include <linux/jiffies.h>
#include <linux/kthread.h>
#include <linux/llist.h>
#include <linux/mm.h>
#include <linux/random.h>
#include <linux/sched.h>
#include <linux/timex.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/smp.h>
#include <linux/spinlock.h>
#include <linux/vmalloc.h>
#include <linux/workqueue.h>
#include <linux/xarray.h>

#include "helpers.h"

/* ---- interrupts, CPUs, time --------------------------------------------- */

unsigned long strata_irq_save(void)
{
	unsigned long flags;

	local_irq_save(flags);
	return flags;
}

void strata_irq_restore(unsigned long flags)
{
	local_irq_restore(flags);
}

unsigned int strata_cpu(void)
{
	return raw_smp_processor_id();
}

unsigned int strata_cpu_ids(void)
{
	return nr_cpu_ids;
}

u64 strata_now_ms(void)
{
	return jiffies_to_msecs(jiffies);
}

/* The time stamp counter: the benchmark's clock (the guest's clocksource
 * may be jiffies, too coarse to time a loop). */
u64 strata_cycles(void)
{
	return get_cycles();
}

u64 strata_random(void)
{
	return get_random_u64();
}

/* Heap corruption found by the core: Rust has printed the details. */
void __noreturn strata_bug(void)
{
	BUG();
}

void strata_cond_resched(void)
{
	cond_resched();
}

/* ---- the domain lock: a spinlock taken with interrupts saved ------------ */

void strata_lock_init(spinlock_t *lock)
{
	spin_lock_init(lock);
}

unsigned long strata_lock(spinlock_t *lock)
{
	unsigned long flags;

	spin_lock_irqsave(lock, flags);
	return flags;
}

bool strata_trylock(spinlock_t *lock, unsigned long *flags)
{
	return spin_trylock_irqsave(lock, *flags);
}

void strata_unlock(spinlock_t *lock, unsigned long flags)
{
	spin_unlock_irqrestore(lock, flags);
}

/* ---- the page source ----------------------------------------------------- */

/*
 * Which addresses are Strata pages: the pointer lookup that replaces the
 * user-space registry. A page from the buddy allocator (in the direct map)
 * is marked in its struct page: page->private holds its address mixed with
 * a key drawn at load, so no lock or RCU section is needed to look a
 * pointer up. A vmalloc'ed page is indexed by page number in an xarray,
 * whose loads are lock-free (RCU); stores and erases take the array's lock
 * with interrupts saved, since allocation may happen in interrupt context.
 */
static DEFINE_XARRAY_FLAGS(strata_pages, XA_FLAGS_LOCK_IRQ);
static unsigned long strata_page_key;

/* 4 KiB pages the source holds now: must be 0 after unload. */
static atomic_long_t strata_pages_held = ATOMIC_LONG_INIT(0);
static atomic_long_t strata_map_calls = ATOMIC_LONG_INIT(0);
static atomic_long_t strata_map_refused = ATOMIC_LONG_INIT(0);
static atomic_long_t strata_map_buddy = ATOMIC_LONG_INIT(0);
static atomic_long_t strata_map_vmalloc = ATOMIC_LONG_INIT(0);
static atomic_long_t strata_map_failed = ATOMIC_LONG_INIT(0);

/* Fault injection, set from module parameters. */
static unsigned int strata_fail_every;
static bool strata_no_high_order;

void strata_source_configure(unsigned int fail_every, bool no_high_order)
{
	strata_fail_every = fail_every;
	strata_no_high_order = no_high_order;
	/* Never 0: a page with no private data must not look like ours. */
	strata_page_key = get_random_long() | 1;
}

bool strata_gfp_can_sleep(gfp_t gfp)
{
	return gfpflags_allow_blocking(gfp);
}

/*
 * Maps @size bytes aligned to @align within @gfp. A power-of-two size first
 * tries one buddy allocation (naturally aligned, in the direct map), without
 * retrying or warning. When that fails, or when high orders are disabled, a
 * caller that may sleep gets vmalloc'ed memory built from order-0 pages; a
 * caller that may not sleep gets NULL, since vmalloc is not safe in every
 * atomic context.
 */
void *strata_map(size_t size, size_t align, gfp_t gfp)
{
	unsigned int order = get_order(size);
	void *memory = NULL;
	long call = atomic_long_inc_return(&strata_map_calls);

	gfp &= ~__GFP_ZERO;
	if (strata_fail_every && call % strata_fail_every == 0) {
		atomic_long_inc(&strata_map_refused);
		return NULL;
	}
	if (size == (PAGE_SIZE << order) && align <= size && order <= MAX_PAGE_ORDER &&
	    !(strata_no_high_order && order > PAGE_ALLOC_COSTLY_ORDER)) {
		struct page *page = alloc_pages(gfp | __GFP_COMP | __GFP_NOWARN | __GFP_NORETRY, order);

		if (page) {
			memory = page_address(page);
			atomic_long_inc(&strata_map_buddy);
		}
	}
	if (!memory && gfpflags_allow_blocking(gfp)) {
		memory = vrealloc_node_align(NULL, size, align, gfp | __GFP_NOWARN, NUMA_NO_NODE);
		if (memory)
			atomic_long_inc(&strata_map_vmalloc);
	}
	if (!memory) {
		atomic_long_inc(&strata_map_failed);
		return NULL;
	}
	atomic_long_add(size >> PAGE_SHIFT, &strata_pages_held);
	return memory;
}

/*
 * vfree may sleep, and vfree_atomic is not exported: vmalloc'ed memory given
 * back in atomic context waits on this list (linked through the memory
 * itself) for a work item. Its pages count as held until then.
 */
struct strata_deferred {
	struct llist_node node;
	size_t size;
};
static LLIST_HEAD(strata_deferred_list);

static void strata_free_deferred(struct work_struct *work)
{
	struct llist_node *node = llist_del_all(&strata_deferred_list);

	while (node) {
		struct strata_deferred *deferred = llist_entry(node, struct strata_deferred, node);
		size_t size = deferred->size;

		node = node->next;
		vfree(deferred);
		atomic_long_sub(size >> PAGE_SHIFT, &strata_pages_held);
	}
}
static DECLARE_WORK(strata_free_work, strata_free_deferred);

void strata_unmap(void *memory, size_t size)
{
	if (!is_vmalloc_addr(memory)) {
		__free_pages(virt_to_page(memory), get_order(size));
		atomic_long_sub(size >> PAGE_SHIFT, &strata_pages_held);
	} else if (in_interrupt() || irqs_disabled() || !preemptible()) {
		struct strata_deferred *deferred = memory;

		deferred->size = size;
		llist_add(&deferred->node, &strata_deferred_list);
		schedule_work(&strata_free_work);
	} else {
		vfree(memory);
		atomic_long_sub(size >> PAGE_SHIFT, &strata_pages_held);
	}
}

/* Waits until every deferred vfree is done; before unload. */
void strata_source_drain(void)
{
	flush_work(&strata_free_work);
	strata_free_deferred(NULL);
}

bool strata_register(unsigned long page, unsigned int shift, gfp_t gfp)
{
	unsigned long flags;
	void *old;

	if (!is_vmalloc_addr((void *)page)) {
		if (!virt_addr_valid(page))
			return false;
		set_page_private(virt_to_page((void *)page), page ^ strata_page_key);
		return true;
	}
	if (gfpflags_allow_blocking(gfp) && !irqs_disabled())
		return !xa_is_err(xa_store_irq(&strata_pages, page >> shift, (void *)page, gfp));
	xa_lock_irqsave(&strata_pages, flags);
	old = __xa_store(&strata_pages, page >> shift, (void *)page, gfp & ~__GFP_DIRECT_RECLAIM);
	xa_unlock_irqrestore(&strata_pages, flags);
	return !xa_is_err(old);
}

void strata_unregister(unsigned long page, unsigned int shift)
{
	unsigned long flags;

	if (!is_vmalloc_addr((void *)page)) {
		set_page_private(virt_to_page((void *)page), 0);
		return;
	}
	xa_lock_irqsave(&strata_pages, flags);
	__xa_erase(&strata_pages, page >> shift);
	xa_unlock_irqrestore(&strata_pages, flags);
}

/* Any address may be asked about; none is dereferenced. */
bool strata_owns(unsigned long page, unsigned int shift)
{
	if (virt_addr_valid(page))
		return page_private(virt_to_page((void *)page)) == (page ^ strata_page_key);
	if (is_vmalloc_addr((void *)page))
		return xa_load(&strata_pages, page >> shift) == (void *)page;
	return false;
}

struct strata_source_counts {
	long pages_held;
	long map_calls;
	long map_refused;
	long map_buddy;
	long map_vmalloc;
	long map_failed;
};

void strata_source_counts(struct strata_source_counts *counts)
{
	counts->pages_held = atomic_long_read(&strata_pages_held);
	counts->map_calls = atomic_long_read(&strata_map_calls);
	counts->map_refused = atomic_long_read(&strata_map_refused);
	counts->map_buddy = atomic_long_read(&strata_map_buddy);
	counts->map_vmalloc = atomic_long_read(&strata_map_vmalloc);
	counts->map_failed = atomic_long_read(&strata_map_failed);
}

/* ---- running work on every CPU, and on kthreads ------------------------- */

struct strata_call {
	void (*function)(void *, unsigned int);
	void *data;
	unsigned int cpu;
};

static long strata_call_here(void *argument)
{
	struct strata_call *call = argument;

	call->function(call->data, call->cpu);
	return 0;
}

/*
 * Runs @function(@data, cpu) for every possible CPU, in process context on that
 * CPU (a kworker bound to it), one CPU after the other. A CPU that is
 * offline runs nothing, so its turn runs here instead. Not an IPI: the
 * function takes spinlock_t locks, which hardirq context may not.
 */
void strata_on_each_cpu(void (*function)(void *, unsigned int), void *data)
{
	struct strata_call call = { function, data, 0 };
	unsigned int cpu;

	cpus_read_lock();
	for_each_possible_cpu(cpu) {
		call.cpu = cpu;
		if (cpu_online(cpu))
			work_on_cpu(cpu, strata_call_here, &call);
		else
			function(data, cpu);
	}
	cpus_read_unlock();
}

struct strata_worker {
	int (*function)(void *data, unsigned int index);
	void *data;
	unsigned int index;
	int result;
	struct completion done;
};

static int strata_worker_main(void *argument)
{
	struct strata_worker *worker = argument;

	worker->result = worker->function(worker->data, worker->index);
	complete(&worker->done);
	return 0;
}

/*
 * Runs @function(@data, i) for i in 0..@count on kthreads, thread i bound
 * to CPU i while i < the number of online CPUs, the rest unbound, and waits
 * for all. Returns the number of threads whose function returned non-zero,
 * or -ENOMEM.
 */
int strata_run_workers(int (*function)(void *, unsigned int), void *data, unsigned int count)
{
	struct strata_worker *workers;
	unsigned int i, started = 0;
	int failed = 0;

	workers = kcalloc(count, sizeof(*workers), GFP_KERNEL);
	if (!workers)
		return -ENOMEM;
	for (i = 0; i < count; i++) {
		struct task_struct *task;

		workers[i].function = function;
		workers[i].data = data;
		workers[i].index = i;
		init_completion(&workers[i].done);
		if (i < num_online_cpus() && cpu_online(i))
			task = kthread_run_on_cpu(strata_worker_main, &workers[i], i, "strata/%u");
		else
			task = kthread_run(strata_worker_main, &workers[i], "strata-x/%u", i);
		if (IS_ERR(task)) {
			workers[i].result = -ECHILD;
			failed++;
			continue;
		}
		started++;
	}
	for (i = 0; i < count; i++) {
		if (workers[i].result == -ECHILD)
			continue;
		wait_for_completion(&workers[i].done);
		if (workers[i].result)
			failed++;
	}
	kfree(workers);
	return failed;
}

/* ---- a periodic hrtimer pinned to the CPU that starts it ----------------- */

struct strata_timer {
	struct hrtimer timer;
	u64 period_ns;
	void (*function)(void *data);
	void *data;
};

static enum hrtimer_restart strata_timer_fire(struct hrtimer *timer)
{
	struct strata_timer *t = container_of(timer, struct strata_timer, timer);

	t->function(t->data);
	hrtimer_forward_now(timer, ns_to_ktime(t->period_ns));
	return HRTIMER_RESTART;
}

struct strata_timer *strata_timer_start(void (*function)(void *), void *data, u64 period_ns)
{
	struct strata_timer *t = kzalloc(sizeof(*t), GFP_KERNEL);

	if (!t)
		return NULL;
	t->period_ns = period_ns;
	t->function = function;
	t->data = data;
	hrtimer_setup(&t->timer, strata_timer_fire, CLOCK_MONOTONIC, HRTIMER_MODE_REL_PINNED);
	hrtimer_start(&t->timer, ns_to_ktime(period_ns), HRTIMER_MODE_REL_PINNED);
	return t;
}

void strata_timer_stop(struct strata_timer *t)
{
	if (!t)
		return;
	hrtimer_cancel(&t->timer);
	kfree(t);
}

/* ---- a periodic timer_list (softirq) pinned to the CPU that starts it ---- */

struct strata_soft_timer {
	struct timer_list timer;
	void (*function)(void *data);
	void *data;
	bool stopping;
};

static void strata_soft_timer_fire(struct timer_list *timer)
{
	struct strata_soft_timer *t = timer_container_of(t, timer, timer);

	t->function(t->data);
	if (!READ_ONCE(t->stopping))
		mod_timer(&t->timer, jiffies + 1);
}

struct strata_soft_timer *strata_soft_timer_start(void (*function)(void *), void *data)
{
	struct strata_soft_timer *t = kzalloc(sizeof(*t), GFP_KERNEL);

	if (!t)
		return NULL;
	t->function = function;
	t->data = data;
	timer_setup(&t->timer, strata_soft_timer_fire, TIMER_PINNED);
	mod_timer(&t->timer, jiffies + 1);
	return t;
}

void strata_soft_timer_stop(struct strata_soft_timer *t)
{
	if (!t)
		return;
	WRITE_ONCE(t->stopping, true);
	timer_delete_sync(&t->timer);
	kfree(t);
}

/* ---- debugfs: strata/stats ----------------------------------------------- */

static size_t (*strata_stats_text)(char *buffer, size_t size);
static struct dentry *strata_debugfs_dir;

static int strata_stats_show(struct seq_file *file, void *unused)
{
	char *buffer = kmalloc(PAGE_SIZE * 4, GFP_KERNEL);
	size_t length;

	if (!buffer)
		return -ENOMEM;
	length = strata_stats_text(buffer, PAGE_SIZE * 4);
	seq_write(file, buffer, length);
	kfree(buffer);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(strata_stats);

void strata_debugfs_create(size_t (*text)(char *buffer, size_t size))
{
	strata_stats_text = text;
	strata_debugfs_dir = debugfs_create_dir("strata", NULL);
	debugfs_create_file("stats", 0444, strata_debugfs_dir, NULL, &strata_stats_fops);
}

void strata_debugfs_remove(void)
{
	debugfs_remove(strata_debugfs_dir);
	strata_debugfs_dir = NULL;
}

/* ---- the comparison: kmalloc and kmem_cache, timed here ----------------- */

/* Single calls, for the cross-CPU pattern, which runs in Rust. */
void *strata_kmalloc(size_t size)
{
	return kmalloc(size, GFP_KERNEL);
}

void strata_kfree(void *block)
{
	kfree(block);
}

void *strata_cache_alloc(struct kmem_cache *cache)
{
	return kmem_cache_alloc(cache, GFP_KERNEL);
}

void strata_cache_free(struct kmem_cache *cache, void *block)
{
	kmem_cache_free(cache, block);
}

unsigned int strata_online_cpus(void)
{
	return num_online_cpus();
}

void strata_cpu_relax(void)
{
	cpu_relax();
}

/*
 * The timed loops, written once for both peers: ALLOC and FREE are the
 * peer's calls, inlined into each loop as they would be in a caller.
 *
 * Pairs: alloc then free, @count times. Batches: @batch allocations, then
 * @batch frees, @rounds times. Both return TSC cycles, or 0 on failure.
 */
#define STRATA_BENCH_LOOPS(name, params, ALLOC, FREE)				\
u64 strata_bench_##name##_pairs(params, unsigned int count)			\
{										\
	u64 start = get_cycles();						\
	unsigned int i;								\
										\
	for (i = 0; i < count; i++) {						\
		void *p = ALLOC;						\
										\
		if (!p)								\
			return 0;						\
		*(volatile char *)p = 1;					\
		FREE(p);							\
	}									\
	return get_cycles() - start;						\
}										\
										\
u64 strata_bench_##name##_batches(params, unsigned int batch, unsigned int rounds) \
{										\
	void **blocks = kmalloc_array(batch, sizeof(void *), GFP_KERNEL);	\
	u64 start, elapsed;							\
	unsigned int r, i;							\
										\
	if (!blocks)								\
		return 0;							\
	start = get_cycles();							\
	for (r = 0; r < rounds; r++) {						\
		for (i = 0; i < batch; i++) {					\
			blocks[i] = ALLOC;					\
			if (!blocks[i])						\
				goto out;					\
			*(volatile char *)blocks[i] = 1;			\
		}								\
		for (i = 0; i < batch; i++)					\
			FREE(blocks[i]);					\
	}									\
out:										\
	elapsed = get_cycles() - start;						\
	kfree(blocks);								\
	return r == rounds ? elapsed : 0;					\
}

#define STRATA_KFREE(p) kfree(p)
#define STRATA_CACHE_FREE(p) kmem_cache_free(cache, p)

STRATA_BENCH_LOOPS(kmalloc, size_t size, kmalloc(size, GFP_KERNEL), STRATA_KFREE)
STRATA_BENCH_LOOPS(cache, struct kmem_cache *cache, kmem_cache_alloc(cache, GFP_KERNEL), STRATA_CACHE_FREE)

struct kmem_cache *strata_bench_cache_create(size_t size)
{
	return kmem_cache_create("strata_bench", size, 0, 0, NULL);
}

void strata_bench_cache_destroy(struct kmem_cache *cache)
{
	kmem_cache_destroy(cache);
}

/* kmem_cache_alloc_bulk/kmem_cache_free_bulk of @batch, @rounds times. */
u64 strata_bench_cache_bulk(struct kmem_cache *cache, unsigned int batch, unsigned int rounds)
{
	void **blocks = kmalloc_array(batch, sizeof(void *), GFP_KERNEL);
	u64 start, elapsed;
	unsigned int r, i;

	if (!blocks)
		return 0;
	start = get_cycles();
	for (r = 0; r < rounds; r++) {
		/* All or nothing, as Strata's: true when every object came. */
		if (!kmem_cache_alloc_bulk(cache, GFP_KERNEL, batch, blocks))
			break;
		for (i = 0; i < batch; i++)
			*(volatile char *)blocks[i] = 1;
		kmem_cache_free_bulk(cache, batch, blocks);
	}
	elapsed = get_cycles() - start;
	kfree(blocks);
	return r == rounds ? elapsed : 0;
}
