//! The `no_std` front: [`SharedStrata`], a `GlobalAlloc` over any page source
//! with a small set of lock-protected heaps.
//!
//! Without thread-locals there is no per-thread heap. Instead a call picks a
//! heap with `try_lock`, starting from one chosen by the caller's stack
//! address (so concurrent threads tend to start on different heaps), and
//! waits only when every heap is busy.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;

use crate::cache::Heap;
use crate::domain::{Domain, FreeError};
use crate::lock::{ConstLock, RawLock};
use crate::source::PageSource;
use crate::stats::Stats;

/// The heap a caller tries first: a hash of its stack's megabyte, so that
/// calls from one thread keep starting on the same heap and threads (whose
/// stacks lie megabytes apart) spread over the heaps.
#[inline]
fn preferred_heap<const HEAPS: usize>() -> usize {
    #[cfg(all(test, feature = "mmap"))]
    if let Some(index) = tests::FIRST_HEAP.with(core::cell::Cell::get) {
        return index % HEAPS;
    }
    let marker = 0u8;
    let megabyte = (&marker as *const u8 as usize >> 20) as u64;
    (megabyte.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize % HEAPS
}

struct HeapSlot<L> {
    /// Protects `heap`.
    lock: L,
    heap: UnsafeCell<Heap>,
}

/// A Strata allocator for `no_std` targets.
///
/// ```
/// use core::alloc::{GlobalAlloc, Layout};
/// use strata::{source::ArenaSource, SharedStrata, SpinLock};
///
/// static ALLOCATOR: SharedStrata<ArenaSource, SpinLock, 4> = SharedStrata::new(ArenaSource::empty());
///
/// // On a real target this is a `static mut` region or a linker-provided one.
/// let region: &'static mut [u8] = Box::leak(vec![0u8; 16 << 20].into_boxed_slice());
/// assert!(ALLOCATOR.source().init(region));
///
/// let layout = Layout::new::<[u64; 4]>();
/// let p = unsafe { ALLOCATOR.alloc(layout) };
/// assert!(!p.is_null());
/// unsafe { ALLOCATOR.dealloc(p, layout) };
/// ```
pub struct SharedStrata<S: PageSource, L: RawLock, const HEAPS: usize = 4> {
    domain: Domain<S, L>,
    heaps: [HeapSlot<L>; HEAPS],
}

// SAFETY: each heap is only touched with its lock held; the domain is Sync.
unsafe impl<S: PageSource + Sync, L: RawLock + Sync, const HEAPS: usize> Sync for SharedStrata<S, L, HEAPS> {}

impl<S: PageSource, L: ConstLock, const HEAPS: usize> SharedStrata<S, L, HEAPS> {
    /// An allocator drawing pages from `source`; usable in a `static`.
    pub const fn new(source: S) -> Self {
        Self {
            domain: Domain::new(source),
            heaps: [const { HeapSlot { lock: L::UNLOCKED, heap: UnsafeCell::new(Heap::new()) } }; HEAPS],
        }
    }
}

impl<S: PageSource, L: RawLock, const HEAPS: usize> SharedStrata<S, L, HEAPS> {
    /// The page source.
    pub fn source(&self) -> &S {
        self.domain.source()
    }

    /// The underlying domain.
    pub fn domain(&self) -> &Domain<S, L> {
        &self.domain
    }

    fn with_heap<R>(&self, f: impl FnOnce(&mut Heap, &Domain<S, L>) -> R) -> R {
        let start = preferred_heap::<HEAPS>();
        let mut chosen = None;
        for i in 0..HEAPS {
            let slot = &self.heaps[(start + i) % HEAPS];
            if slot.lock.try_lock() {
                chosen = Some(slot);
                break;
            }
        }
        let slot = chosen.unwrap_or_else(|| {
            let slot = &self.heaps[start];
            slot.lock.lock();
            slot
        });
        // SAFETY: the slot's lock is held.
        let result = f(unsafe { &mut *slot.heap.get() }, &self.domain);
        // SAFETY: taken above.
        unsafe { slot.lock.unlock() };
        result
    }

    /// Runs `attempt` with the first free heap, and returns what it gave
    /// if `found` says it found memory. Otherwise, with the domain out of
    /// slices for it and the page source mapping no more, freed objects
    /// may still wait in a heap: among the frees into slices no heap owned,
    /// which it keeps for the domain, while another heap may have taken
    /// their slice since. So every heap is flushed, which hands those
    /// objects to the domain or to their slice's owner, and then `attempt`
    /// runs with every heap in turn, since each may own a slice of the
    /// class with room. (Tried in turn without the flush, a heap could hand
    /// its kept objects to a heap already tried, and the call fail with
    /// them free.) Returns the first attempt that found memory, else the
    /// last.
    fn with_memory<R>(
        &self,
        mut attempt: impl FnMut(&mut Heap, &Domain<S, L>) -> R,
        found: impl Fn(&R) -> bool,
    ) -> R {
        let mut result = self.with_heap(&mut attempt);
        if found(&result) {
            return result;
        }
        self.flush_heaps();
        for slot in &self.heaps {
            slot.lock.lock();
            // SAFETY: the slot's lock is held.
            result = attempt(unsafe { &mut *slot.heap.get() }, &self.domain);
            // SAFETY: taken above.
            unsafe { slot.lock.unlock() };
            if found(&result) {
                break;
            }
        }
        result
    }

    /// Allocates with the first free heap, and with every heap before it
    /// reports no memory ([`SharedStrata::with_memory`]).
    fn allocate(&self, layout: Layout, zeroed: bool) -> *mut u8 {
        self.with_memory(
            |heap, domain| {
                if zeroed {
                    heap.alloc_zeroed(domain, layout)
                } else {
                    heap.alloc(domain, layout)
                }
            },
            |object| !object.is_null(),
        )
    }

    /// Frees `ptr`, reporting a bad pointer instead of panicking.
    ///
    /// # Safety
    /// If `ptr` is a live allocation, it must not be used afterwards.
    pub unsafe fn free(&self, ptr: *mut u8) -> Result<(), FreeError> {
        // SAFETY: the caller's contract.
        self.with_heap(|heap, domain| unsafe { heap.free(domain, ptr) })
    }

    /// Allocates `out.len()` blocks of `layout` in one call, all or nothing:
    /// returns `out.len()`, or 0 when out of memory, which it reports only
    /// once every heap's kept frees were flushed and every heap was tried,
    /// as an allocation does. See [`Heap::alloc_bulk_in`].
    pub fn alloc_bulk(&self, layout: Layout, out: &mut [*mut u8]) -> usize {
        let wanted = out.len();
        self.with_memory(|heap, domain| heap.alloc_bulk(domain, layout, out), |&count| count == wanted)
    }

    /// Frees every block of `blocks`; a bad pointer is reported (the first
    /// one) and the others are still freed.
    ///
    /// # Safety
    /// As for [`SharedStrata::free`], for each block.
    pub unsafe fn free_bulk(&self, blocks: &[*mut u8]) -> Result<(), FreeError> {
        // SAFETY: the caller's contract.
        self.with_heap(|heap, domain| unsafe { heap.free_bulk(domain, blocks) })
    }

    /// The usable size of the allocation at `ptr`.
    pub fn usable_size(&self, ptr: *const u8) -> Result<usize, FreeError> {
        self.domain.usable_size(ptr as usize)
    }

    /// Whether moving the block at `ptr` into a fresh allocation would help
    /// memory go back (see [`Domain::defrag_hint`]). The copy may come from
    /// any of the heaps, so a slice any heap holds is refused.
    pub fn defrag_hint(&self, ptr: *const u8) -> Result<bool, FreeError> {
        self.domain.defrag_hint(ptr as usize, None)
    }

    /// Gives every heap's slices back to the domain.
    pub fn release_caches(&self) {
        for slot in &self.heaps {
            slot.lock.lock();
            // SAFETY: the slot's lock is held.
            unsafe { (*slot.heap.get()).release(&self.domain, false) };
            // SAFETY: taken above.
            unsafe { slot.lock.unlock() };
        }
    }

    /// A snapshot, after flushing every heap's remote and pending frees.
    ///
    /// Two passes over the heaps: a heap's flush pushes its pending frees
    /// (frees into slices that were orphaned when freed) onto the remote
    /// lists of slices other heaps have taken since, which those heaps'
    /// flushes collect in the second pass.
    /// With no other call running meanwhile, every freed object then counts
    /// as freed.
    pub fn stats(&self) -> Stats {
        for _pass in 0..2 {
            self.flush_heaps();
        }
        self.domain.stats()
    }

    /// Flushes every heap's remote and pending frees, one heap at a time.
    fn flush_heaps(&self) {
        for slot in &self.heaps {
            slot.lock.lock();
            // SAFETY: the slot's lock is held.
            unsafe { (*slot.heap.get()).flush(&self.domain) };
            // SAFETY: taken above.
            unsafe { slot.lock.unlock() };
        }
    }

    /// Purges every dirty slice and returns empty pages to the source, and
    /// what else [`Domain::purge_all`] gives back.
    pub fn purge(&self) {
        self.domain.purge_all();
    }
}

// SAFETY: as for the std front; misuse panics with the error instead of
// corrupting the heap (there is no process to abort on `no_std`).
unsafe impl<S: PageSource + Sync, L: RawLock + Sync, const HEAPS: usize> GlobalAlloc for SharedStrata<S, L, HEAPS> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.allocate(layout, false)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.allocate(layout, true)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: GlobalAlloc's contract.
        if let Err(error) = unsafe { self.free(ptr) } {
            panic!("strata: dealloc: {error}");
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: GlobalAlloc guarantees the new layout is valid.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // A move that finds no memory tries every heap, as an allocation
        // does; each attempt leaves the block untouched when it fails.
        let resized = self.with_memory(
            // SAFETY: GlobalAlloc's contract.
            |heap, domain| unsafe { heap.realloc(domain, ptr, new_layout) },
            |result| !matches!(result, Ok(moved) if moved.is_null()),
        );
        match resized {
            Ok(moved) => moved,
            Err(error) => panic!("strata: realloc: {error}"),
        }
    }
}

#[cfg(all(test, feature = "mmap"))]
mod tests {
    use super::*;
    use crate::source::{FailingSource, MmapSource};
    use crate::SpinLock;
    use core::cell::Cell;
    use std::vec::Vec;

    std::thread_local! {
        /// The heap this thread's calls try first, when set: tests steer
        /// calls to a heap with it, where the stack's address would choose.
        pub(super) static FIRST_HEAP: Cell<Option<usize>> = const { Cell::new(None) };
    }

    type Failing = SharedStrata<FailingSource<MmapSource>, SpinLock, 2>;

    /// Runs `f` with calls trying heap `index` first.
    fn through<R>(index: usize, f: impl FnOnce() -> R) -> R {
        FIRST_HEAP.with(|first| first.set(Some(index)));
        let result = f();
        FIRST_HEAP.with(|first| first.set(None));
        result
    }

    /// Through heap 0, fills one page with 1000-byte blocks (after the
    /// blocks of `before`, also through heap 0), with the page source
    /// failing from the first allocation on; then frees two blocks of the
    /// first slice through heap 1 and two through heap 0: each heap keeps
    /// them for the domain, the slice having been given back full. Returns
    /// the blocks left live and the layout.
    fn fill_and_free_through_both_heaps(allocator: &'static Failing, before: impl FnOnce()) -> (Vec<*mut u8>, Layout) {
        let layout = Layout::from_size_align(1000, 8).unwrap();
        let mut blocks: Vec<*mut u8> = through(0, || {
            before();
            let mut blocks = Vec::new();
            loop {
                // SAFETY: a valid layout.
                let p = unsafe { allocator.alloc(layout) };
                if p.is_null() {
                    break blocks;
                }
                // The first block's page is the last the source maps.
                allocator.source().set_failing(true);
                blocks.push(p);
            }
        });
        assert!(blocks.len() >= 64 * 8, "{} blocks", blocks.len());
        // SAFETY: live blocks, each freed once.
        through(1, || blocks.drain(..2).for_each(|p| unsafe { allocator.dealloc(p, layout) }));
        // SAFETY: as above.
        through(0, || blocks.drain(..2).for_each(|p| unsafe { allocator.dealloc(p, layout) }));
        (blocks, layout)
    }

    /// Frees `blocks` with the source working again, and checks that
    /// nothing is left live.
    fn free_all(allocator: &'static Failing, blocks: Vec<*mut u8>, layout: Layout) {
        allocator.source().set_failing(false);
        for p in blocks {
            // SAFETY: live blocks, freed once.
            unsafe { allocator.dealloc(p, layout) };
        }
        assert_eq!(allocator.stats().bytes_live, 0);
    }

    /// With the page source failing, an allocation must find the objects
    /// freed through one heap into a slice that another heap then took,
    /// which wait among the first heap's frees for the domain. Before the
    /// heaps were flushed on that path, trying heap 0 and then heap 1 found
    /// them only once heap 1's refill had handed them over, too late for
    /// heap 0, and the allocation returned null with two objects free.
    #[test]
    fn an_allocation_that_finds_no_memory_first_flushes_every_heap() {
        static ALLOCATOR: Failing = SharedStrata::new(FailingSource::new(MmapSource::new()));
        let (mut blocks, layout) = fill_and_free_through_both_heaps(&ALLOCATOR, || {});
        // One page's 63 slices of 64 blocks.
        assert_eq!(blocks.len() + 4, crate::page::USABLE_SLICES * 64);
        // Heap 0's refill hands its two to the domain, takes the slice
        // back, and serves them; heap 1's two stay free, and both come
        // back, then nothing.
        through(0, || {
            for round in 0..4 {
                // SAFETY: a valid layout.
                let p = unsafe { ALLOCATOR.alloc(layout) };
                assert!(!p.is_null(), "freed object {round} of 4 was not found");
                blocks.push(p);
            }
            // SAFETY: a valid layout.
            assert!(unsafe { ALLOCATOR.alloc(layout) }.is_null());
        });
        free_all(&ALLOCATOR, blocks, layout);
    }

    /// As for an allocation, a reallocation that moves a block finds the
    /// objects another heap keeps, and its contents move with it.
    #[test]
    fn a_reallocation_that_finds_no_memory_first_flushes_every_heap() {
        static ALLOCATOR: Failing = SharedStrata::new(FailingSource::new(MmapSource::new()));
        let small = Layout::from_size_align(16, 8).unwrap();
        let mut moving = Vec::new();
        let (mut blocks, layout) = fill_and_free_through_both_heaps(&ALLOCATOR, || {
            for byte in 1..=4u8 {
                // SAFETY: a valid layout.
                let p = unsafe { ALLOCATOR.alloc(small) };
                assert!(!p.is_null());
                // SAFETY: 16 writable bytes.
                unsafe { p.write_bytes(byte, small.size()) };
                moving.push(p);
            }
        });
        through(0, || {
            for (index, &p) in moving.iter().enumerate() {
                // SAFETY: a live block of layout `small`, not used again
                // unless the reallocation fails.
                let moved = unsafe { ALLOCATOR.realloc(p, small, layout.size()) };
                assert!(!moved.is_null(), "freed object {index} of 4 was not found");
                // SAFETY: the first 16 bytes moved with the block.
                let contents = unsafe { core::slice::from_raw_parts(moved, small.size()) };
                assert!(contents.iter().all(|&byte| usize::from(byte) == index + 1), "block {index}: {contents:?}");
                blocks.push(moved);
            }
            let last = blocks[blocks.len() - 1];
            // SAFETY: a live block of `layout`; a failed move leaves it so.
            assert!(unsafe { ALLOCATOR.realloc(last, layout, 2 * layout.size()) }.is_null());
        });
        free_all(&ALLOCATOR, blocks, layout);
    }

    /// A bulk allocation, all or nothing, also finds them, and takes none
    /// when it asks for more than there are.
    #[test]
    fn a_bulk_allocation_that_finds_no_memory_first_flushes_every_heap() {
        static ALLOCATOR: Failing = SharedStrata::new(FailingSource::new(MmapSource::new()));
        let (mut blocks, layout) = fill_and_free_through_both_heaps(&ALLOCATOR, || {});
        through(0, || {
            let mut five = [core::ptr::null_mut(); 5];
            assert_eq!(ALLOCATOR.alloc_bulk(layout, &mut five), 0);
            assert!(five.iter().all(|p| p.is_null()));
            let mut four = [core::ptr::null_mut(); 4];
            assert_eq!(ALLOCATOR.alloc_bulk(layout, &mut four), 4, "the four freed objects were not all found");
            blocks.extend_from_slice(&four);
            // SAFETY: a valid layout.
            assert!(unsafe { ALLOCATOR.alloc(layout) }.is_null());
        });
        free_all(&ALLOCATOR, blocks, layout);
    }
}
