// SPDX-License-Identifier: GPL-2.0

//! Strata as a Linux kernel module: the same core as the user-space fronts,
//! on kernel pages, with one heap per CPU.
//!
//! # Contexts
//!
//! Every allocation takes GFP flags. A CPU's heap is used with interrupts
//! disabled on that CPU, so an interrupt handler that allocates on the same
//! CPU never finds the heap half-updated, and the task cannot migrate while
//! it holds it. The domain lock is a spinlock taken with interrupts saved.
//! Inside those sections the page source is asked for memory without
//! sleeping; when that fails and the caller's flags allow sleeping, the
//! front leaves the section, grows the domain with the caller's own flags
//! (interrupts enabled, no lock held), and tries again. A `GFP_ATOMIC` or
//! `GFP_NOWAIT` caller therefore never sleeps, and gets a clean failure when
//! no memory is at hand. Large objects (spans and own mappings) take no heap
//! and are mapped with the caller's flags directly.
//!
//! Callable from process, softirq and hardirq context; not from NMI.

use core::alloc::Layout;
use core::cell::{Cell, UnsafeCell};
use core::mem::MaybeUninit;
use core::ffi::{c_int, c_uint, c_ulong, c_void};
use core::fmt::Write;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, Ordering};

use kernel::alloc::{flags, AllocError, Allocator, Flags, NumaNode};
use kernel::bindings;
use kernel::prelude::*;
use kernel::types::Opaque;

use strata::cache::Heap;
use strata::page::{PAGE_SHIFT, PAGE_SIZE};
use strata::size_class::class_of;
use strata::{Domain, FreeError, PageSource, RawLock, Stats};

mod bench;
mod selftest;

module! {
    type: StrataModule,
    name: "strata",
    authors: ["Strata developers"],
    description: "Strata slab allocator: per-CPU heaps on kernel pages, with a self-test and a benchmark",
    license: "GPL",
    params: {
        selftest: u32 {
            default: 1,
            description: "Run the self-test at load (1) or not (0); the load fails if it fails",
        },
        selftest_iterations: u32 {
            default: 20000,
            description: "Operations per self-test thread",
        },
        bench: u32 {
            default: 0,
            description: "Run the benchmark against kmalloc and kmem_cache at load (1)",
        },
        bench_iterations: u32 {
            default: 20000,
            description: "Operations per benchmark case",
        },
        fail_every: u32 {
            default: 0,
            description: "Fault injection: every Nth page-source request fails (0: never)",
        },
        no_high_order: u32 {
            default: 0,
            description: "Fault injection: every buddy request above the costly order fails (1)",
        },
    },
}

/// The C glue in `helpers.c`.
pub(crate) mod ffi {
    use core::ffi::{c_int, c_uint, c_ulong, c_void};
    use kernel::bindings;

    #[repr(C)]
    #[derive(Default)]
    pub(crate) struct SourceCounts {
        pub(crate) pages_held: i64,
        pub(crate) map_calls: i64,
        pub(crate) map_refused: i64,
        pub(crate) map_buddy: i64,
        pub(crate) map_vmalloc: i64,
        pub(crate) map_failed: i64,
    }

    extern "C" {
        pub(crate) fn strata_irq_save() -> c_ulong;
        pub(crate) fn strata_irq_restore(flags: c_ulong);
        pub(crate) fn strata_cpu() -> c_uint;
        pub(crate) fn strata_cpu_ids() -> c_uint;
        pub(crate) fn strata_now_ms() -> u64;
        pub(crate) fn strata_cycles() -> u64;
        pub(crate) fn strata_random() -> u64;
        pub(crate) fn strata_bug() -> !;
        pub(crate) fn strata_cond_resched();
        pub(crate) fn strata_lock_init(lock: *mut bindings::spinlock_t);
        pub(crate) fn strata_lock(lock: *mut bindings::spinlock_t) -> c_ulong;
        pub(crate) fn strata_trylock(lock: *mut bindings::spinlock_t, flags: *mut c_ulong) -> bool;
        pub(crate) fn strata_unlock(lock: *mut bindings::spinlock_t, flags: c_ulong);
        pub(crate) fn strata_source_configure(fail_every: c_uint, no_high_order: bool);
        pub(crate) fn strata_gfp_can_sleep(gfp: bindings::gfp_t) -> bool;
        pub(crate) fn strata_map(size: usize, align: usize, gfp: bindings::gfp_t) -> *mut c_void;
        pub(crate) fn strata_unmap(memory: *mut c_void, size: usize);
        pub(crate) fn strata_source_drain();
        pub(crate) fn strata_register(page: c_ulong, shift: c_uint, gfp: bindings::gfp_t) -> bool;
        pub(crate) fn strata_unregister(page: c_ulong, shift: c_uint);
        pub(crate) fn strata_owns(page: c_ulong, shift: c_uint) -> bool;
        pub(crate) fn strata_source_counts(counts: *mut SourceCounts);
        pub(crate) fn strata_on_each_cpu(function: extern "C" fn(*mut c_void, c_uint), data: *mut c_void);
        pub(crate) fn strata_run_workers(
            function: extern "C" fn(*mut c_void, c_uint) -> c_int,
            data: *mut c_void,
            count: c_uint,
        ) -> c_int;
        pub(crate) fn strata_timer_start(
            function: extern "C" fn(*mut c_void),
            data: *mut c_void,
            period_ns: u64,
        ) -> *mut c_void;
        pub(crate) fn strata_timer_stop(timer: *mut c_void);
        pub(crate) fn strata_soft_timer_start(function: extern "C" fn(*mut c_void), data: *mut c_void) -> *mut c_void;
        pub(crate) fn strata_soft_timer_stop(timer: *mut c_void);
        pub(crate) fn strata_debugfs_create(text: extern "C" fn(*mut u8, usize) -> usize);
        pub(crate) fn strata_debugfs_remove();
        pub(crate) fn strata_kmalloc(size: usize) -> *mut c_void;
        pub(crate) fn strata_kfree(block: *mut c_void);
        pub(crate) fn strata_cache_alloc(cache: *mut c_void) -> *mut c_void;
        pub(crate) fn strata_cache_free(cache: *mut c_void, block: *mut c_void);
        pub(crate) fn strata_online_cpus() -> c_uint;
        pub(crate) fn strata_cpu_relax();
        pub(crate) fn strata_bench_kmalloc_pairs(size: usize, count: c_uint) -> u64;
        pub(crate) fn strata_bench_kmalloc_batches(size: usize, batch: c_uint, rounds: c_uint) -> u64;
        pub(crate) fn strata_bench_cache_create(size: usize) -> *mut c_void;
        pub(crate) fn strata_bench_cache_destroy(cache: *mut c_void);
        pub(crate) fn strata_bench_cache_pairs(cache: *mut c_void, count: c_uint) -> u64;
        pub(crate) fn strata_bench_cache_batches(cache: *mut c_void, batch: c_uint, rounds: c_uint) -> u64;
        pub(crate) fn strata_bench_cache_bulk(cache: *mut c_void, batch: c_uint, rounds: c_uint) -> u64;
    }
}

// ---- the allocation context --------------------------------------------------

/// GFP flags: the allocation context the core carries down to the page
/// source. The default is `GFP_KERNEL`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Gfp(pub bindings::gfp_t);

impl Default for Gfp {
    fn default() -> Self {
        Gfp(bindings::GFP_KERNEL)
    }
}

impl Gfp {
    /// `GFP_ATOMIC`: never sleeps, may dip into reserves.
    pub const ATOMIC: Gfp = Gfp(bindings::GFP_ATOMIC);
    /// `GFP_KERNEL`: may sleep and reclaim.
    pub const KERNEL: Gfp = Gfp(bindings::GFP_KERNEL);
    /// `GFP_NOWAIT`: never sleeps.
    pub const NOWAIT: Gfp = Gfp(bindings::GFP_NOWAIT);

    /// Whether a caller with these flags may sleep.
    pub fn can_sleep(self) -> bool {
        // SAFETY: a pure function of the flags.
        unsafe { ffi::strata_gfp_can_sleep(self.0) }
    }

    /// The context for work done with interrupts disabled: never sleeps.
    fn without_sleeping(self) -> Gfp {
        if self.can_sleep() {
            Gfp(bindings::GFP_NOWAIT)
        } else {
            self
        }
    }

    /// The flags of the kernel crate's allocator API, and whether they ask
    /// for zeroed memory. `Flags` keeps its bits private, so the class is
    /// recognised from the public constants, most permissive first.
    fn from_flags(value: Flags) -> (Gfp, bool) {
        let base = if value.contains(flags::GFP_KERNEL) {
            Gfp::KERNEL
        } else if value.contains(flags::GFP_ATOMIC) {
            Gfp::ATOMIC
        } else {
            Gfp::NOWAIT
        };
        (base, value.contains(flags::__GFP_ZERO))
    }
}

// ---- the domain lock ----------------------------------------------------------

/// A kernel spinlock taken with interrupts saved: the domain lock.
///
/// The saved interrupt state lives in the lock while it is held; only the
/// holder writes or reads it.
pub struct KernelLock {
    raw: Opaque<bindings::spinlock_t>,
    flags: Cell<c_ulong>,
}

impl KernelLock {
    /// An unready lock; [`RawLock::init`] makes it ready in place.
    pub const fn new() -> Self {
        Self { raw: Opaque::uninit(), flags: Cell::new(0) }
    }
}

// SAFETY: the spinlock serialises every access to `flags`.
unsafe impl Sync for KernelLock {}
// SAFETY: the lock holds no thread-bound state while unlocked.
unsafe impl Send for KernelLock {}

// SAFETY: `spin_lock_irqsave` gives exclusive, acquire/release-ordered
// ownership; `init` runs `spin_lock_init` at the final address.
unsafe impl RawLock for KernelLock {
    unsafe fn init(&self) {
        // SAFETY: the caller guarantees the lock is pinned and unused.
        unsafe { ffi::strata_lock_init(self.raw.get()) }
    }

    fn lock(&self) {
        // SAFETY: an initialised spinlock.
        let saved = unsafe { ffi::strata_lock(self.raw.get()) };
        self.flags.set(saved);
    }

    fn try_lock(&self) -> bool {
        let mut saved = 0;
        // SAFETY: an initialised spinlock; `saved` is written on success.
        if unsafe { ffi::strata_trylock(self.raw.get(), &mut saved) } {
            self.flags.set(saved);
            true
        } else {
            false
        }
    }

    unsafe fn unlock(&self) {
        // SAFETY: the caller holds the lock, so `flags` is its own.
        unsafe { ffi::strata_unlock(self.raw.get(), self.flags.get()) }
    }
}

// ---- the page source ------------------------------------------------------------

/// Kernel pages: one buddy allocation per Strata page when a high order is
/// available, else (for callers that may sleep) vmalloc'ed memory built from
/// order-0 pages. Pointers are looked up through a mark in the `struct page`
/// of buddy pages and an xarray of vmalloc'ed ones. Purging does nothing: a
/// page goes back whole, once all its slices are unused.
pub struct KernelSource;

// SAFETY: `strata_map` returns exclusive, aligned, writable memory of the
// size asked, valid until `strata_unmap`; `owns` answers from the xarray
// that `register`/`unregister` maintain, without touching the page.
unsafe impl PageSource for KernelSource {
    type Context = Gfp;
    const ZEROED: bool = false;

    fn map(&self, size: usize, align: usize, context: Gfp) -> Option<NonNull<u8>> {
        // SAFETY: any size and alignment may be asked; NULL means failure.
        NonNull::new(unsafe { ffi::strata_map(size, align, context.0) }.cast())
    }

    unsafe fn unmap(&self, memory: NonNull<u8>, size: usize) {
        // SAFETY: the caller passes one live mapping with its size.
        unsafe { ffi::strata_unmap(memory.as_ptr().cast(), size) }
    }

    unsafe fn purge(&self, _memory: NonNull<u8>, _size: usize) -> bool {
        false
    }

    fn register(&self, page: usize, context: Gfp) -> bool {
        // SAFETY: `page` starts a live mapping of this source: its struct
        // page is marked, or its number stored in the xarray.
        unsafe { ffi::strata_register(page as c_ulong, PAGE_SHIFT, context.0) }
    }

    fn unregister(&self, page: usize) {
        // SAFETY: `page` was registered; the mark or entry is removed.
        unsafe { ffi::strata_unregister(page as c_ulong, PAGE_SHIFT) }
    }

    #[inline]
    fn owns(&self, page: usize) -> bool {
        // SAFETY: a lock-free lookup of any address; the page itself is not
        // touched.
        unsafe { ffi::strata_owns(page as c_ulong, PAGE_SHIFT) }
    }

    fn now_ms(&self) -> u64 {
        // SAFETY: reads jiffies.
        unsafe { ffi::strata_now_ms() }
    }

    fn entropy(&self) -> u64 {
        // SAFETY: the kernel's random pool.
        unsafe { ffi::strata_random() }
    }

    /// An overwritten free-list link: the slab cannot be trusted. One
    /// `pr_emerg` line with the error, then `BUG()` (which kills the task,
    /// or panics with `panic_on_oops`), as the kernel treats a corrupted
    /// slab it cannot repair.
    fn corrupted(&self, error: FreeError) -> ! {
        pr_emerg!("strata: heap corruption: {}\n", format_args!("{error}"));
        // SAFETY: reports the bug; does not return.
        unsafe { ffi::strata_bug() }
    }
}

// ---- the front --------------------------------------------------------------------

type KernelDomain = Domain<KernelSource, KernelLock>;

/// One Strata instance: a domain and a heap per possible CPU.
pub struct KernelStrata {
    domain: KernelDomain,
    /// Heap `i` is used only on CPU `i`, with interrupts disabled there.
    heaps: KVec<UnsafeCell<Heap>>,
}

// SAFETY: each heap is touched only by its CPU with interrupts disabled;
// the domain is Sync.
unsafe impl Sync for KernelStrata {}
// SAFETY: as above.
unsafe impl Send for KernelStrata {}

/// How often a caller that may sleep grows the domain and tries again.
const GROW_RETRIES: usize = 3;

impl KernelStrata {
    /// A new instance, pinned in a box and ready. Built in place: the
    /// domain is too large for a copy on the kernel stack.
    fn new() -> Result<Pin<KBox<Self>>> {
        // SAFETY: reads nr_cpu_ids.
        let cpus = unsafe { ffi::strata_cpu_ids() } as usize;
        let mut heaps = KVec::with_capacity(cpus, GFP_KERNEL)?;
        for _ in 0..cpus {
            heaps.push(UnsafeCell::new(Heap::new()), GFP_KERNEL)?;
        }
        let mut place = KBox::<Self>::new_uninit(GFP_KERNEL)?;
        let strata = place.as_mut_ptr();
        // SAFETY: both fields are written before `assume_init`; the domain
        // is built in its final place, and its lock is initialised there.
        unsafe {
            let domain = &mut *(ptr::addr_of_mut!((*strata).domain) as *mut MaybeUninit<KernelDomain>);
            Domain::init_at(domain, KernelSource, KernelLock::new());
            ptr::addr_of_mut!((*strata).heaps).write(heaps);
            let strata = place.assume_init();
            strata.domain.init();
            Ok(KBox::into_pin(strata))
        }
    }

    /// The domain.
    pub fn domain(&self) -> &KernelDomain {
        &self.domain
    }

    /// Runs `f` with this CPU's heap, interrupts disabled.
    fn with_heap<R>(&self, f: impl FnOnce(&mut Heap, &KernelDomain) -> R, no_heap: impl FnOnce() -> R) -> R {
        // SAFETY: saves and disables local interrupts; restored below.
        let saved = unsafe { ffi::strata_irq_save() };
        // SAFETY: with interrupts disabled the CPU number is stable.
        let cpu = unsafe { ffi::strata_cpu() } as usize;
        let result = match self.heaps.get(cpu) {
            // SAFETY: heap `cpu` is used only here, on CPU `cpu`, with
            // interrupts disabled, and calls into it do not nest.
            Some(heap) => f(unsafe { &mut *heap.get() }, &self.domain),
            None => no_heap(),
        };
        // SAFETY: restores what was saved above.
        unsafe { ffi::strata_irq_restore(saved) };
        result
    }

    /// Allocates `layout` within `gfp`; `None` when out of memory.
    pub fn alloc(&self, layout: Layout, gfp: Gfp, zeroed: bool) -> Option<NonNull<u8>> {
        if class_of(layout.size(), layout.align()).is_none() {
            return NonNull::new(self.domain.alloc_large(layout.size(), layout.align(), zeroed, gfp));
        }
        let inside = gfp.without_sleeping();
        for _ in 0..GROW_RETRIES {
            let object = self.with_heap(
                |heap, domain| {
                    if zeroed {
                        heap.alloc_zeroed_in(domain, layout, inside)
                    } else {
                        heap.alloc_in(domain, layout, inside)
                    }
                },
                || self.domain.allocate_uncached_in(layout, zeroed, inside),
            );
            if let Some(object) = NonNull::new(object) {
                return Some(object);
            }
            if !gfp.can_sleep() || !self.domain.grow(gfp) {
                return None;
            }
        }
        None
    }

    /// Frees `ptr`, or refuses it with the reason when it is not a live
    /// allocation of this instance.
    ///
    /// # Safety
    /// If `ptr` is live, it must not be used afterwards, and no other CPU may
    /// free it concurrently.
    pub unsafe fn free(&self, ptr: *mut u8) -> Result<(), FreeError> {
        self.with_heap(
            // SAFETY: the caller's contract.
            |heap, domain| unsafe { heap.free(domain, ptr) },
            // SAFETY: the caller's contract.
            || unsafe { self.domain.free_uncached(ptr as usize) },
        )
    }

    /// Allocates `out.len()` blocks of `layout` in one call, all or nothing;
    /// returns how many (`out.len()` or 0).
    pub fn alloc_bulk(&self, layout: Layout, out: &mut [*mut u8], gfp: Gfp) -> usize {
        let inside = gfp.without_sleeping();
        for _ in 0..GROW_RETRIES {
            // Each path takes the slice out of the cell; only one of them runs.
            let slots = Cell::new(Some(&mut *out));
            let count = self.with_heap(
                |heap, domain| heap.alloc_bulk_in(domain, layout, slots.take().unwrap_or_default(), inside),
                || self.domain.allocate_bulk_uncached(layout, slots.take().unwrap_or_default(), inside),
            );
            if count != 0 || out.is_empty() {
                return count;
            }
            if !gfp.can_sleep() || !self.domain.grow(gfp) {
                return 0;
            }
        }
        0
    }

    /// Frees every block of `blocks`; bad pointers are refused (the first
    /// is reported) and the rest still freed.
    ///
    /// # Safety
    /// As for [`KernelStrata::free`], for each block.
    pub unsafe fn free_bulk(&self, blocks: &[*mut u8]) -> Result<(), FreeError> {
        self.with_heap(
            // SAFETY: the caller's contract.
            |heap, domain| unsafe { heap.free_bulk(domain, blocks) },
            // SAFETY: the caller's contract.
            || unsafe { self.domain.free_bulk_uncached(blocks) },
        )
    }

    /// Runs `f` on every CPU's heap: on that CPU with interrupts off, or,
    /// for an offline CPU (which runs nothing), here.
    fn on_each_heap(&self, f: fn(&mut Heap, &KernelDomain)) {
        struct Call<'a> {
            strata: &'a KernelStrata,
            f: fn(&mut Heap, &KernelDomain),
        }
        extern "C" fn run(data: *mut c_void, cpu: c_uint) {
            // SAFETY: `data` is the `Call` below, alive until every CPU ran.
            let call = unsafe { &*(data as *const Call<'_>) };
            // SAFETY: interrupts are restored below.
            let saved = unsafe { ffi::strata_irq_save() };
            // SAFETY: this runs on CPU `cpu` with interrupts off, or `cpu`
            // is offline (hotplug held off): nothing else uses its heap.
            if let Some(heap) = call.strata.heaps.get(cpu as usize) {
                (call.f)(unsafe { &mut *heap.get() }, &call.strata.domain);
            }
            // SAFETY: as saved above.
            unsafe { ffi::strata_irq_restore(saved) };
        }
        let call = Call { strata: self, f };
        // SAFETY: returns once every CPU's turn has run.
        unsafe { ffi::strata_on_each_cpu(run, &call as *const Call<'_> as *mut c_void) };
    }

    /// Collects every heap's remote and pending frees, so the statistics see
    /// them. Two rounds: a heap's flush pushes its pending frees (frees into
    /// slices that were orphaned when freed) onto the remote lists of slices
    /// other CPUs' heaps have taken since, which their flushes collect in
    /// the second round.
    pub fn flush(&self) {
        for _round in 0..2 {
            self.on_each_heap(|heap, domain| heap.flush(domain));
        }
    }

    /// Gives every heap's slices back and returns every empty page.
    pub fn release_all(&self) {
        self.on_each_heap(|heap, domain| heap.release(domain, false));
        self.domain.purge_all();
    }

    /// A statistics snapshot, after a flush.
    pub fn stats(&self) -> Stats {
        self.flush();
        self.domain.stats()
    }
}

/// The page source's own counts.
pub(crate) fn source_counts() -> ffi::SourceCounts {
    let mut counts = ffi::SourceCounts::default();
    // SAFETY: fills the struct.
    unsafe { ffi::strata_source_counts(&mut counts) };
    counts
}

// ---- the kernel crate's allocator API -----------------------------------------------

/// The loaded instance, for [`StrataAllocator`].
static INSTANCE: AtomicPtr<KernelStrata> = AtomicPtr::new(ptr::null_mut());

fn instance() -> Option<&'static KernelStrata> {
    // SAFETY: set while the module is loaded, to a pinned box that outlives
    // every user (cleared before it is dropped).
    unsafe { INSTANCE.load(Ordering::Acquire).as_ref() }
}

/// `kernel::alloc::Allocator` on Strata: `KBox<T>`'s and `KVec<T>`'s
/// allocator parameter, so that kernel Rust code allocates from Strata.
pub struct StrataAllocator;

/// Every block is at least 8-aligned, like kmalloc's.
const MIN_ALIGN: usize = 8;

// SAFETY: blocks stay valid until freed through `realloc`; any live block of
// this allocator may be passed back to it; size and alignment are honoured.
unsafe impl Allocator for StrataAllocator {
    const MIN_ALIGN: usize = MIN_ALIGN;

    unsafe fn realloc(
        ptr: Option<NonNull<u8>>,
        layout: Layout,
        old_layout: Layout,
        flags: Flags,
        _nid: NumaNode,
    ) -> Result<NonNull<[u8]>, AllocError> {
        let strata = instance().ok_or(AllocError)?;
        let old = ptr.filter(|_| old_layout.size() != 0);
        if layout.size() == 0 {
            if let Some(old) = old {
                // SAFETY: the caller passes a live block of ours.
                free_or_warn(unsafe { strata.free(old.as_ptr()) });
            }
            let dangling = NonNull::new(layout.align() as *mut u8).ok_or(AllocError)?;
            return Ok(NonNull::slice_from_raw_parts(dangling, 0));
        }
        let (gfp, zeroed) = Gfp::from_flags(flags);
        let padded = layout.align_to(MIN_ALIGN).map_err(|_| AllocError)?;
        let new = strata.alloc(padded, gfp, zeroed).ok_or(AllocError)?;
        if let Some(old) = old {
            // SAFETY: both blocks hold the copied length and are distinct;
            // the old one is live and ours, and not used afterwards.
            unsafe {
                ptr::copy_nonoverlapping(old.as_ptr(), new.as_ptr(), old_layout.size().min(layout.size()));
                free_or_warn(strata.free(old.as_ptr()));
            }
        }
        Ok(NonNull::slice_from_raw_parts(new, layout.size()))
    }
}

/// A bad free through the allocator API: refused, with a warning.
fn free_or_warn(result: Result<(), FreeError>) {
    if let Err(error) = result {
        pr_warn!("refused a free: {}\n", format_args!("{error}"));
        kernel::warn_on!(true);
    }
}

/// `KBox` on Strata.
pub type SBox<T> = kernel::alloc::Box<T, StrataAllocator>;
/// `KVec` on Strata.
pub type SVec<T> = kernel::alloc::Vec<T, StrataAllocator>;

// ---- debugfs ------------------------------------------------------------------------

/// Writes into a fixed buffer, cutting what does not fit.
pub(crate) struct Buffer<'a> {
    bytes: &'a mut [u8],
    len: usize,
}

impl<'a> Buffer<'a> {
    pub(crate) fn new(bytes: &'a mut [u8]) -> Self {
        Self { bytes, len: 0 }
    }
}

impl Write for Buffer<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let Some(room) = self.bytes.get_mut(self.len..) else { return Ok(()) };
        let take = s.len().min(room.len());
        if let (Some(to), Some(from)) = (room.get_mut(..take), s.as_bytes().get(..take)) {
            to.copy_from_slice(from);
            self.len += take;
        }
        Ok(())
    }
}

/// Writes the statistics into a debugfs read's buffer.
fn write_stats(out: &mut impl Write) -> core::fmt::Result {
    let Some(strata) = instance() else { return writeln!(out, "strata: not loaded") };
    let stats = strata.stats();
    write!(out, "{stats}")?;
    let counts = source_counts();
    writeln!(out, "kernel page source")?;
    writeln!(out, "  4 KiB pages held {:>14}", counts.pages_held)?;
    writeln!(out, "  map calls        {:>14}", counts.map_calls)?;
    writeln!(out, "  from buddy       {:>14}", counts.map_buddy)?;
    writeln!(out, "  from vmalloc     {:>14}", counts.map_vmalloc)?;
    writeln!(out, "  refused (inject) {:>14}", counts.map_refused)?;
    writeln!(out, "  failed           {:>14}", counts.map_failed)
}

extern "C" fn stats_text(buffer: *mut u8, size: usize) -> usize {
    // SAFETY: debugfs passes a writable buffer of `size` bytes.
    let bytes = unsafe { core::slice::from_raw_parts_mut(buffer, size) };
    let mut out = Buffer::new(bytes);
    let _ = write_stats(&mut out);
    out.len
}

// ---- the module ---------------------------------------------------------------------

struct StrataModule {
    strata: Pin<KBox<KernelStrata>>,
}

impl kernel::Module for StrataModule {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let fail_every = *module_parameters::fail_every.value();
        let no_high_order = *module_parameters::no_high_order.value() != 0;
        // SAFETY: plain stores, before any allocation.
        unsafe { ffi::strata_source_configure(fail_every, no_high_order) };
        let strata = KernelStrata::new()?;
        INSTANCE.store(&*strata as *const KernelStrata as *mut KernelStrata, Ordering::Release);
        pr_info!(
            "strata: loaded: {} CPUs, {} KiB pages, fail_every={}, no_high_order={}\n",
            strata.heaps.len(),
            PAGE_SIZE >> 10,
            fail_every,
            no_high_order as u32
        );
        let module = StrataModule { strata };
        if *module_parameters::selftest.value() != 0 {
            let iterations = *module_parameters::selftest_iterations.value();
            // Either injection makes failures legitimate: with no high
            // orders, a GFP_ATOMIC request that needs a new page fails.
            let faults_expected = fail_every != 0 || no_high_order;
            if let Err(error) = selftest::run(&module.strata, iterations, faults_expected) {
                pr_err!("selftest: FAILED: {}\n", format_args!("{error}"));
                return Err(EINVAL);
            }
        }
        if *module_parameters::bench.value() != 0 {
            bench::run(&module.strata, *module_parameters::bench_iterations.value());
        }
        // SAFETY: the callback reads the instance, which outlives the file.
        unsafe { ffi::strata_debugfs_create(stats_text) };
        Ok(module)
    }
}

impl Drop for StrataModule {
    fn drop(&mut self) {
        // SAFETY: removes the file created at load; reads finish first.
        unsafe { ffi::strata_debugfs_remove() };
        self.strata.release_all();
        let stats = self.strata.domain().stats();
        INSTANCE.store(ptr::null_mut(), Ordering::Release);
        // SAFETY: waits for vfrees deferred from atomic context.
        unsafe { ffi::strata_source_drain() };
        let counts = source_counts();
        pr_info!(
            "strata: unloaded: {} bytes live, {} slab pages mapped, {} pages outstanding\n",
            stats.bytes_live,
            stats.pages_mapped,
            counts.pages_held
        );
        if counts.pages_held != 0 || stats.bytes_live != 0 {
            pr_err!("unload leaked memory\n");
        }
    }
}

/// The `c_int` of a worker's result.
pub(crate) fn status(ok: bool) -> c_int {
    if ok {
        0
    } else {
        1
    }
}
