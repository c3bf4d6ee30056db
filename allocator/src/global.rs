//! The `std` front: [`Strata`], a `GlobalAlloc` with thread-local heaps over
//! an mmap-backed domain.
//!
//! Each thread's heap sits in a `const`-initialised thread-local with no
//! destructor, so the fast path is a plain TLS access. A second thread-local,
//! touched once per thread on its first allocation, carries the destructor
//! that gives the heap back when the thread exits. While that destructor is
//! being registered (which may itself allocate), and after the thread's heap
//! is gone, allocations go straight to the domain without caching.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::{Cell, UnsafeCell};
use core::fmt::Write as _;
use core::ptr;

use std::io::Write as _;

use crate::cache::Heap;
use crate::domain::{Domain, FreeError};
use crate::lock::FutexLock;
use crate::source::MmapSource;
use crate::stats::Stats;

type StdDomain = Domain<MmapSource, FutexLock>;

/// Per-thread set-up state.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ThreadState {
    Fresh,
    Registering,
    Ready,
}

std::thread_local! {
    static HEAP: UnsafeCell<Heap> = const { UnsafeCell::new(Heap::new()) };
    static STATE: Cell<ThreadState> = const { Cell::new(ThreadState::Fresh) };
    static EXIT: ExitGuard = const { ExitGuard(Cell::new(ptr::null())) };
}

/// Gives the thread's heap back to its domain when the thread exits.
struct ExitGuard(Cell<*const StdDomain>);

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let domain = self.0.get();
        if domain.is_null() {
            return;
        }
        let _ = HEAP.try_with(|heap| {
            // SAFETY: the heap is this thread's and not borrowed (destructors
            // run outside allocator calls); the domain is 'static.
            unsafe { (*heap.get()).release(&*domain, true) };
        });
    }
}

/// The Strata global allocator for Rust programs on Linux.
///
/// ```no_run
/// #[global_allocator]
/// static GLOBAL: strata::Strata = strata::Strata::new();
///
/// fn main() {
///     let v: Vec<u64> = (0..1000).collect();
///     assert_eq!(v.len(), 1000);
///     println!("{}", GLOBAL.stats());
/// }
/// ```
///
/// Thread caches serve the first `Strata` a thread allocates from; other
/// instances used by the same thread allocate without a cache. Give each
/// program one instance.
pub struct Strata {
    domain: StdDomain,
}

impl Default for Strata {
    fn default() -> Self {
        Self::new()
    }
}

impl Strata {
    /// An allocator with no memory yet; usable in a `static`.
    pub const fn new() -> Self {
        Self { domain: Domain::new(MmapSource::new()) }
    }

    /// An allocator that moves the memory it has in use onto transparent
    /// huge pages (see [`MmapSource`]): each 2 MiB part of a slab page once
    /// all its slices are taken, and huge blocks as they are touched. Fewer
    /// page faults and TLB misses, for more resident memory: a part is
    /// resident whole once collapsed, until a purge in it splits it again
    /// ([`Strata::purge`] gives back what lies past the objects carved).
    /// Usable in a `static`.
    ///
    /// ```
    /// #[global_allocator]
    /// static GLOBAL: strata::Strata = strata::Strata::with_huge_pages();
    ///
    /// fn main() {
    ///     let v: Vec<u64> = (0..1000).collect();
    ///     assert_eq!(v.iter().sum::<u64>(), 499_500);
    ///     assert!(GLOBAL.domain().source().huge_pages());
    /// }
    /// ```
    pub const fn with_huge_pages() -> Self {
        Self { domain: Domain::new(MmapSource::with_huge_pages()) }
    }

    /// The underlying domain.
    pub fn domain(&self) -> &Domain<MmapSource, FutexLock> {
        &self.domain
    }

    /// Runs `cached` with this thread's heap, or `uncached` when the thread
    /// has no usable heap (set-up in progress, exiting, or serving another
    /// instance).
    #[inline(always)]
    fn with_heap<R>(&self, cached: impl FnOnce(&mut Heap) -> R, uncached: impl FnOnce() -> R) -> R {
        self.with_heap_at(HEAP.with(|heap| heap.get()), cached, uncached)
    }

    /// [`Strata::with_heap`] for a caller that has read this thread's heap
    /// pointer already.
    #[inline(always)]
    fn with_heap_at<R>(&self, heap: *mut Heap, cached: impl FnOnce(&mut Heap) -> R, uncached: impl FnOnce() -> R) -> R {
        // SAFETY: the heap belongs to this thread and no other borrow of it
        // is live: allocator calls do not nest while holding it.
        if unsafe { (*heap).serves(&self.domain) } {
            return cached(unsafe { &mut *heap });
        }
        self.with_new_heap(heap, cached, uncached)
    }

    #[cold]
    #[inline(never)]
    fn with_new_heap<R>(&self, heap: *mut Heap, cached: impl FnOnce(&mut Heap) -> R, uncached: impl FnOnce() -> R) -> R {
        // SAFETY: as in `with_heap`; no reference is held across the
        // registration below, which may call back into the allocator.
        if !unsafe { (*heap).is_unbound() } || STATE.with(|s| s.get()) != ThreadState::Fresh {
            return uncached();
        }
        STATE.with(|s| s.set(ThreadState::Registering));
        let domain: *const StdDomain = &self.domain;
        let registered = EXIT.try_with(|guard| guard.0.set(domain)).is_ok();
        STATE.with(|s| s.set(ThreadState::Ready));
        if !registered {
            return uncached();
        }
        // SAFETY: as above.
        let heap = unsafe { &mut *heap };
        heap.bind(&self.domain);
        // A thread keeps its heap for life: its remote frees can wait in
        // batches (pushed at the latest when the thread exits).
        heap.set_remote_batching(&self.domain, true);
        cached(heap)
    }

    /// [`GlobalAlloc::alloc`] past its fast path.
    #[cold]
    #[inline(never)]
    fn alloc_slow(&self, layout: Layout) -> *mut u8 {
        self.with_heap(|heap| heap.alloc(&self.domain, layout), || self.domain.allocate_uncached(layout, false))
    }

    /// [`GlobalAlloc::dealloc`] past its fast path.
    ///
    /// # Safety
    /// As for [`GlobalAlloc::dealloc`].
    /// `heap` is this thread's heap pointer, as the fast path read it.
    #[cold]
    #[inline(never)]
    unsafe fn dealloc_slow(&self, heap: *mut Heap, ptr: *mut u8) {
        let result = self.with_heap_at(
            heap,
            // SAFETY: the caller's contract; the fast path refused `ptr`.
            |heap| unsafe { heap.free_refused(&self.domain, ptr) },
            || unsafe { self.domain.free_uncached(ptr as usize) },
        );
        if let Err(error) = result {
            misuse("dealloc", error);
        }
    }

    /// Frees `ptr`, reporting a bad pointer instead of aborting.
    ///
    /// # Safety
    /// If `ptr` is a live allocation, it must not be used afterwards. A
    /// pointer that is not live is reported (and nothing is freed), as long
    /// as no other thread frees it concurrently.
    #[inline]
    pub unsafe fn free(&self, ptr: *mut u8) -> Result<(), FreeError> {
        self.with_heap(
            // SAFETY: the caller's contract.
            |heap| unsafe { heap.free(&self.domain, ptr) },
            || unsafe { self.domain.free_uncached(ptr as usize) },
        )
    }

    /// Resizes `ptr` to `layout`, reporting a bad pointer instead of
    /// aborting. Returns `Ok(null)` when out of memory; the old allocation is
    /// then untouched.
    ///
    /// # Safety
    /// As for [`Strata::free`].
    pub unsafe fn resize(&self, ptr: *mut u8, layout: Layout) -> Result<*mut u8, FreeError> {
        self.with_heap(
            // SAFETY: the caller's contract.
            |heap| unsafe { heap.realloc(&self.domain, ptr, layout) },
            // SAFETY: the caller's contract.
            || unsafe { self.domain.reallocate_uncached(ptr as usize, layout) },
        )
    }

    /// Allocates `out.len()` blocks of `layout` in one call, all or nothing:
    /// returns `out.len()`, or 0 when out of memory (then nothing stays
    /// allocated). See [`Heap::alloc_bulk_in`].
    ///
    /// ```
    /// use std::alloc::Layout;
    /// static ALLOCATOR: strata::Strata = strata::Strata::new();
    ///
    /// let mut blocks = [core::ptr::null_mut(); 64];
    /// assert_eq!(ALLOCATOR.alloc_bulk(Layout::new::<[u64; 4]>(), &mut blocks), 64);
    /// unsafe { ALLOCATOR.free_bulk(&blocks) }.unwrap();
    /// ```
    pub fn alloc_bulk(&self, layout: Layout, out: &mut [*mut u8]) -> usize {
        // Each path takes the slice out of the cell; only one of them runs.
        let out = Cell::new(Some(out));
        self.with_heap(
            |heap| heap.alloc_bulk(&self.domain, layout, out.take().unwrap_or_default()),
            || self.domain.allocate_bulk_uncached(layout, out.take().unwrap_or_default(), ()),
        )
    }

    /// Frees every block of `blocks`; a bad pointer is reported (the first
    /// one) and the others are still freed.
    ///
    /// # Safety
    /// As for [`Strata::free`], for each block.
    pub unsafe fn free_bulk(&self, blocks: &[*mut u8]) -> Result<(), FreeError> {
        self.with_heap(
            // SAFETY: the caller's contract.
            |heap| unsafe { heap.free_bulk(&self.domain, blocks) },
            // SAFETY: the caller's contract.
            || unsafe { self.domain.free_bulk_uncached(blocks) },
        )
    }

    /// The usable size of the allocation at `ptr`: every byte up to it may be
    /// written.
    pub fn usable_size(&self, ptr: *const u8) -> Result<usize, FreeError> {
        self.domain.usable_size(ptr as usize)
    }

    /// A snapshot of the allocator. The calling thread's cache is flushed
    /// first, so its remote and pending frees are counted as freed.
    pub fn stats(&self) -> Stats {
        self.with_heap(|heap| heap.flush(&self.domain), || ());
        self.domain.stats()
    }

    /// Returns memory to the OS now: gives the calling thread's cached
    /// slices back to the domain (as [`Strata::release_thread_cache`] does),
    /// then purges every dirty slice, unmaps every page left empty, and
    /// gives back the memory past the last carved object of every slice in
    /// use that no thread caches (resident from an earlier use of the slice,
    /// or from a huge page).
    ///
    /// Only the calling thread's cache can be given back from here: slices
    /// cached by other threads stay with them until those threads allocate
    /// again, exit, or call `purge` or `release_thread_cache` themselves. The
    /// thread's next allocation of each class takes a slice again.
    pub fn purge(&self) {
        self.with_heap(|heap| heap.release(&self.domain, false), || ());
        self.domain.purge_all();
    }

    /// Gives this thread's cached slices back to the domain (they are taken
    /// again on the next allocation), without purging. Their objects then
    /// count as free for every thread, and an emptied slice can serve any
    /// class; [`Strata::purge`] does this and then returns memory to the OS.
    pub fn release_thread_cache(&self) {
        self.with_heap(|heap| heap.release(&self.domain, false), || ());
    }

    /// Sets how long a dirty slice stays unused before it is purged.
    pub fn set_purge_delay_ms(&self, delay: u64) {
        self.domain.set_purge_delay_ms(delay);
    }

    /// Call in the parent before `fork` (a `pthread_atfork` prepare handler).
    pub fn fork_prepare(&self) {
        self.domain.fork_prepare();
    }

    /// Call in the parent after `fork`.
    ///
    /// # Safety
    /// Must follow [`Strata::fork_prepare`] on the same thread.
    pub unsafe fn fork_parent(&self) {
        // SAFETY: forwarded.
        unsafe { self.domain.fork_parent() }
    }

    /// Call in the child after `fork`.
    ///
    /// # Safety
    /// Must follow [`Strata::fork_prepare`] in the parent.
    pub unsafe fn fork_child(&self) {
        // SAFETY: forwarded.
        unsafe { self.domain.fork_child() }
    }
}

/// Prints one line about a bad free to stderr and aborts. Allocates nothing.
#[cold]
pub(crate) fn misuse(operation: &str, error: FreeError) -> ! {
    let mut line = LineBuffer { bytes: [0; 256], len: 0 };
    let _ = writeln!(line, "strata: {operation}: {error}; aborting");
    let _ = std::io::stderr().write_all(&line.bytes[..line.len]);
    std::process::abort();
}

struct LineBuffer {
    bytes: [u8; 256],
    len: usize,
}

impl core::fmt::Write for LineBuffer {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = self.bytes.len() - self.len;
        let take = s.len().min(room);
        self.bytes[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

// SAFETY: allocations come from the domain, sized and aligned by the class
// or span rules; frees are checked and abort on misuse rather than corrupt.
unsafe impl GlobalAlloc for Strata {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let heap = HEAP.with(|heap| heap.get());
        // SAFETY: the heap belongs to this thread and no `&mut` to it is
        // live: allocator calls do not nest while holding one.
        unsafe {
            if (*heap).serves(&self.domain) {
                let block = (*heap).try_alloc(layout.size(), layout.align());
                if !block.is_null() {
                    return block;
                }
            }
        }
        self.alloc_slow(layout)
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.with_heap(|heap| heap.alloc_zeroed(&self.domain, layout), || self.domain.allocate_uncached(layout, true))
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        let heap = HEAP.with(|heap| heap.get());
        // SAFETY: as in `alloc`; GlobalAlloc's contract: `ptr` is live and
        // ours. The fast path takes only a block of a slice the heap owns.
        unsafe {
            if (*heap).free_owned(&self.domain, ptr) {
                return;
            }
            self.dealloc_slow(heap, ptr);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: GlobalAlloc's contract guarantees a valid new layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: GlobalAlloc's contract: `ptr` is live and ours.
        match unsafe { self.resize(ptr, new_layout) } {
            Ok(moved) => moved,
            Err(error) => misuse("realloc", error),
        }
    }
}
