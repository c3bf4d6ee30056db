//! The `std` front: [`Strata`], a `GlobalAlloc` with thread-local heaps over
//! an mmap-backed domain.
//!
//! Each thread's heap sits in a `const`-initialised thread-local with no
//! destructor. The fast paths find it through a pointer of their own in
//! initial-exec thread-local storage (see [`slot`]), one load through the
//! thread pointer, which points at [`EMPTY_HEAP`] until the thread's first
//! allocation. A second thread-local, touched once per thread on its first
//! allocation, carries the destructor that gives the heap back when the
//! thread exits. While that destructor is being registered (which may itself
//! allocate), and after the thread's heap is gone, allocations go straight
//! to the domain without caching.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::{Cell, UnsafeCell};
use core::fmt::Write as _;
use core::ptr;

use std::io::Write as _;

use crate::cache::{Heap, EMPTY_HEAP};
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

/// The pointer the fast paths read to find the calling thread's heap:
/// [`EMPTY_HEAP`] until the thread's first allocation sets up its heap, then
/// that heap (`HEAP`'s storage) for the rest of the thread's life.
///
/// `HEAP.with` would do, but its accessor is a call wherever the compiler
/// does not inline it (a `strata-kv` built with `HEAP.with` in the fast
/// paths has 182 calls of it), and even inlined it is compiled as a call
/// to `__tls_get_addr` that the linker only later turns into a load: the
/// code around it keeps its values out of the registers a call may clobber.
/// So an out-of-line `dealloc` would save and restore registers it never
/// needed. The pointer below is read with two instructions, inline, and
/// clobbers nothing.
///
/// On x86-64 the pointer is a thread-local of the initial-exec model, made
/// by [`initial_exec_slot!`](crate::initial_exec_slot) as the malloc shim's
/// thread slot is (see the `tls` module). Other architectures use
/// `thread_local!`.
mod slot {
    use super::{Heap, EMPTY_HEAP};

    #[cfg(target_arch = "x86_64")]
    crate::initial_exec_slot! {
        symbol: "__strata_std_heap",
        size: 8,
        align_log2: 3,
        first: EMPTY_HEAP,
        offset: fn offset,
    }

    /// The calling thread's heap pointer: never null, and [`EMPTY_HEAP`]
    /// (written through by nobody) until [`set_heap`].
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub(super) fn heap() -> *mut Heap {
        // SAFETY: the slot's own offset. `set_heap` writes the slot with an
        // assembly block the compiler treats as writing memory, so no read
        // is moved across it.
        unsafe { crate::tls::read_thread_word(offset()) as *mut Heap }
    }

    /// Points the calling thread's slot at `heap`, which must stay valid
    /// for the rest of the thread's life.
    #[cfg(target_arch = "x86_64")]
    pub(super) fn set_heap(heap: *mut Heap) {
        // SAFETY: writes this thread's slot, at `offset()` from the thread
        // pointer.
        unsafe {
            core::arch::asm!(
                "mov qword ptr fs:[{offset}], {heap}",
                offset = in(reg) offset(),
                heap = in(reg) heap,
                options(nostack, preserves_flags),
            );
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    std::thread_local! {
        static SLOT: core::cell::Cell<*mut Heap> = const { core::cell::Cell::new(EMPTY_HEAP.as_ptr()) };
    }

    /// The calling thread's heap pointer (see the x86-64 version).
    #[cfg(not(target_arch = "x86_64"))]
    #[inline(always)]
    pub(super) fn heap() -> *mut Heap {
        SLOT.with(|slot| slot.get())
    }

    /// Points the calling thread's slot at `heap` (see the x86-64 version).
    #[cfg(not(target_arch = "x86_64"))]
    pub(super) fn set_heap(heap: *mut Heap) {
        SLOT.with(|slot| slot.set(heap))
    }
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

    /// An allocator that backs the memory it has in use with transparent
    /// huge pages (see [`MmapSource`]): each 2 MiB part of a slab page, and
    /// of a huge block, from its first touch. Fewer page faults and TLB
    /// misses, for more resident memory: a part is resident whole, its
    /// never-used slices included, until the first purge in it splits it
    /// and gives those back ([`Strata::purge`] splits every part that has
    /// memory not in use). Usable in a `static`.
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
        self.with_heap_at(slot::heap(), cached, uncached)
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
        // `heap` is the empty heap until the thread sets up its own; after
        // that, the thread's heap serves another instance or is retired.
        if heap != EMPTY_HEAP.as_ptr() || STATE.with(|s| s.get()) != ThreadState::Fresh {
            return uncached();
        }
        STATE.with(|s| s.set(ThreadState::Registering));
        let domain: *const StdDomain = &self.domain;
        let registered = EXIT.try_with(|guard| guard.0.set(domain)).is_ok();
        STATE.with(|s| s.set(ThreadState::Ready));
        if !registered {
            return uncached();
        }
        // SAFETY: the thread's own heap, not borrowed (allocator calls do not
        // nest while holding it); no reference to it is held across the
        // registration above, which may call back into the allocator.
        let heap = unsafe { &mut *HEAP.with(|heap| heap.get()) };
        heap.bind(&self.domain);
        slot::set_heap(heap);
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
    unsafe fn dealloc_slow(&self, ptr: *mut u8, heap: *mut Heap) {
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

    /// Whether moving the block at `ptr` into a fresh allocation (allocate,
    /// copy, free the old) would help memory go back to the OS: `true` when
    /// it is a small block on a slice at most three quarters full that the
    /// calling thread does not allocate from (see [`Domain::defrag_hint`]):
    /// the copy, made by this thread, lands elsewhere. A
    /// service that compacts its data calls it for each block it might
    /// move, and moves only those, instead of copying everything. A pointer
    /// that is not a live allocation of this instance is an error.
    ///
    /// ```
    /// use std::alloc::{GlobalAlloc, Layout};
    /// use strata::Strata;
    ///
    /// static ALLOCATOR: Strata = Strata::new();
    ///
    /// fn main() {
    ///     let layout = Layout::from_size_align(64, 8).unwrap();
    ///     // SAFETY: the layout has a non-zero size; each block is freed once.
    ///     unsafe {
    ///         let blocks: Vec<*mut u8> = (0..10_000).map(|_| ALLOCATOR.alloc(layout)).collect();
    ///         // Free nine in ten, then let the thread's slices go.
    ///         for (i, &block) in blocks.iter().enumerate() {
    ///             if i % 10 != 0 {
    ///                 ALLOCATOR.dealloc(block, layout);
    ///             }
    ///         }
    ///         ALLOCATOR.release_thread_cache();
    ///         // A survivor sits on a slice nine tenths empty: worth moving.
    ///         assert_eq!(ALLOCATOR.defrag_hint(blocks[0]), Ok(true));
    ///         for block in blocks.iter().step_by(10) {
    ///             ALLOCATOR.dealloc(*block, layout);
    ///         }
    ///         assert!(ALLOCATOR.defrag_hint(blocks[0]).is_err(), "freed");
    ///     }
    /// }
    /// ```
    pub fn defrag_hint(&self, ptr: *const u8) -> Result<bool, FreeError> {
        self.with_heap(
            |heap| self.domain.defrag_hint(ptr as usize, Some(heap)),
            || self.domain.defrag_hint(ptr as usize, None),
        )
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
    /// or from a huge page), and the 4 KiB pages with no live object inside
    /// such slices when they are at most a quarter full (see
    /// [`Domain::purge_all`](crate::Domain::purge_all)).
    ///
    /// Only the calling thread's cache can be given back from here: slices
    /// cached by other threads stay with them until those threads allocate
    /// again, exit, or call `purge` or `release_thread_cache` themselves. The
    /// thread's next allocation of each class takes a slice again.
    pub fn purge(&self) {
        self.with_heap(|heap| heap.release(&self.domain, false), || ());
        self.domain.purge_all();
    }

    /// Runs the delayed purge if it is due, and returns whether memory still
    /// waits for the purge delay (dirty slices, sparse slices whose empty
    /// pages are to go back, cached huge mappings).
    ///
    /// The delayed purge runs when a thread refills its cache, so memory
    /// freed just before every thread goes idle would wait for the next
    /// request. A program whose threads idle (a server between bursts)
    /// calls this from an idle thread, after the purge delay and again
    /// until it returns `false`; the call costs one lock acquisition.
    ///
    /// ```
    /// use std::alloc::{GlobalAlloc, Layout};
    ///
    /// static ALLOCATOR: strata::Strata = strata::Strata::new();
    ///
    /// let layout = Layout::from_size_align(4096, 8).unwrap();
    /// let blocks: Vec<*mut u8> = (0..64).map(|_| unsafe { ALLOCATOR.alloc(layout) }).collect();
    /// for &block in &blocks {
    ///     unsafe { ALLOCATOR.dealloc(block, layout) };
    /// }
    /// // The thread goes idle: its cache goes back, and its emptied slices
    /// // wait for the delay (none here).
    /// ALLOCATOR.release_thread_cache();
    /// ALLOCATOR.set_purge_delay_ms(0);
    /// while ALLOCATOR.purge_if_due() {
    ///     std::thread::sleep(std::time::Duration::from_millis(1));
    /// }
    /// assert_eq!(ALLOCATOR.stats().slices_dirty, 0);
    /// ```
    pub fn purge_if_due(&self) -> bool {
        self.domain.purge_if_due()
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
        let heap = slot::heap();
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

    /// Out of line, unlike `alloc`: one function of 23 instructions that
    /// jumps to the slow path when its checks refuse the block,
    /// rather than a copy of them and of that call in every drop of the
    /// program. In `strata-kv` under `redis-benchmark` (16-byte `MSET`, four
    /// alternated rounds, `benches/kv-cell.sh`), the server ran at 0.85 of
    /// mimalloc's rate with the free inlined and 0.94 with it out of line;
    /// the free costs 33 instructions instead of 27 in `benches/callgrind.sh`.
    /// Being a leaf (the slow path is a jump, and the thread's slot is read
    /// without a call), it saves no registers.
    #[inline(never)]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        let heap = slot::heap();
        // SAFETY: as in `alloc`; GlobalAlloc's contract: `ptr` is live and
        // ours. The fast path takes only a block of a slice the heap owns.
        unsafe {
            if (*heap).free_owned(&self.domain, ptr) {
                return;
            }
            self.dealloc_slow(ptr, heap);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast paths find a thread's heap through its slot: the empty heap
    /// before the thread's first allocation, its own heap from then on,
    /// whichever instance it allocates from next.
    #[test]
    fn the_slot_names_the_thread_heap_from_its_first_allocation() {
        static FIRST: Strata = Strata::new();
        static SECOND: Strata = Strata::new();
        std::thread::spawn(|| {
            let layout = Layout::from_size_align(48, 16).unwrap();
            assert_eq!(slot::heap(), EMPTY_HEAP.as_ptr());
            // SAFETY: blocks of `layout`, each freed once with it.
            unsafe {
                let block = FIRST.alloc(layout);
                assert!(!block.is_null());
                let heap = slot::heap();
                assert_eq!(heap, HEAP.with(|heap| heap.get()));
                assert!((*heap).serves(&FIRST.domain));
                // Another instance allocates without a cache, and the slot
                // stays.
                let other = SECOND.alloc(layout);
                assert!(!other.is_null());
                assert_eq!(slot::heap(), heap);
                assert!(!(*heap).serves(&SECOND.domain));
                SECOND.dealloc(other, layout);
                // The block goes back to the heap's slice through the free
                // fast path, and the next allocation takes it from there,
                // all without the domain's lock.
                let locks = FIRST.domain.stats().lock_acquisitions;
                FIRST.dealloc(block, layout);
                assert_eq!(FIRST.alloc(layout), block);
                FIRST.dealloc(block, layout);
                assert_eq!(FIRST.domain.stats().lock_acquisitions, locks + 1);
            }
        })
        .join()
        .unwrap();
    }
}
