//! The shim's front: one domain for the process, one heap per thread.
//!
//! This is the only module that touches the core. It turns "the calling
//! thread" into a [`Heap`] and forwards to it, or straight to the domain when
//! the thread has no usable heap.
//!
//! # A thread's heap
//!
//! A heap is about 1.3 KiB, too large for the static TLS surplus that a
//! `dlopen`ed library may use, so the thread slot (see [`crate::tls`]) holds
//! only a pointer. The heap itself is an object allocated from the domain
//! without a cache, set up on the thread's first call:
//!
//! 1. the slot moves to [`SlotState::Registering`];
//! 2. the process-wide set-up runs once (`process_init`: the thread-exit
//!    key and the `fork` handlers);
//! 3. the heap is allocated, and registered as the value of the thread-exit
//!    key with `pthread_setspecific`, which may call `calloc` for keys past
//!    the first 32;
//! 4. the slot moves to [`SlotState::Ready`].
//!
//! Any allocation made during steps 2 and 3 finds the slot `Registering` and
//! is served by the domain directly, so set-up never recurses.
//!
//! When the thread exits, glibc calls `thread_exit` with the heap: the slot
//! moves to [`SlotState::Gone`], the heap gives its slices back to the domain
//! and its memory is freed. Destructors that run later on that thread still
//! allocate and free, without a cache.
//!
//! # Returning memory
//!
//! The core purges dirty slices older than the purge delay whenever a cache
//! refills or gives slices back. A thread that only frees never refills, so
//! every [`TIDY_EVERY`] frees, and at most twice per purge delay, the shim
//! has the thread's heap give its slices back ([`Heap::release`]), which runs
//! that delayed purge. `malloc_trim` purges everything at once.
//!
//! # Locks and `fork`
//!
//! The shim adds no lock of its own to the core's domain lock. The `fork`
//! handlers take that lock in the parent before `fork` and release it on both
//! sides after, so a child forked while other threads allocate finds it free.
//! Slices cached by the parent's other threads stay owned by heaps that do
//! not exist in the child: the child can free into them (their objects go on
//! remote lists) but they are not reused there.

use core::alloc::Layout;
use core::ptr;
use core::sync::atomic::{AtomicU32, AtomicU8, Ordering};

use strata_core::source::MmapSource;
use strata_core::{Domain, FreeError, Heap, PageSource, SpinLock, Stats};

use crate::tls::{self, SlotState, ThreadSlot};

/// The domain type of the shim.
pub type ShimDomain = Domain<MmapSource, SpinLock>;

/// The process's single domain.
pub static DOMAIN: ShimDomain = Domain::new(MmapSource::new());

/// Frees between two tidying checks; a power of two.
pub const TIDY_EVERY: usize = 1024;

/// Process set-up progress: [`NOT_STARTED`], [`RUNNING`], [`DONE`] or
/// [`FAILED`].
static PROCESS: AtomicU8 = AtomicU8::new(NOT_STARTED);
const NOT_STARTED: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;
const FAILED: u8 = 3;

/// The pthread key whose destructor returns a thread's heap. Valid once
/// `PROCESS` is [`DONE`].
static EXIT_KEY: AtomicU32 = AtomicU32::new(0);

// Heaps are allocated as small objects from the domain.
const _: () = assert!(core::mem::size_of::<Heap>() <= strata_core::size_class::MAX_SMALL);

/// Allocates `layout` for the calling thread; null when out of memory.
#[inline(always)]
pub fn alloc(layout: Layout) -> *mut u8 {
    let slot = tls::slot();
    // SAFETY: the slot is this thread's; a non-null heap is live and used by
    // this thread only, and allocator calls do not nest while it is borrowed.
    unsafe {
        let heap = (*slot).heap;
        if !heap.is_null() {
            return (*heap).alloc(&DOMAIN, layout);
        }
    }
    alloc_slow(layout, false)
}

/// Allocates `layout`, zeroed, for the calling thread; null when out of
/// memory.
#[inline]
pub fn alloc_zeroed(layout: Layout) -> *mut u8 {
    let slot = tls::slot();
    // SAFETY: as in `alloc`.
    unsafe {
        let heap = (*slot).heap;
        if !heap.is_null() {
            return (*heap).alloc_zeroed(&DOMAIN, layout);
        }
    }
    alloc_slow(layout, true)
}

#[cold]
#[inline(never)]
fn alloc_slow(layout: Layout, zeroed: bool) -> *mut u8 {
    match thread_heap() {
        // SAFETY: a live heap of this thread, not otherwise borrowed.
        Some(heap) if zeroed => unsafe { (*heap).alloc_zeroed(&DOMAIN, layout) },
        // SAFETY: as above.
        Some(heap) => unsafe { (*heap).alloc(&DOMAIN, layout) },
        None => DOMAIN.allocate_uncached(layout, zeroed),
    }
}

/// Frees `ptr` (not null), reporting a pointer that is not a live
/// allocation instead of freeing it.
///
/// # Safety
/// If `ptr` is a live allocation, the caller must not use it afterwards, and
/// no other thread may free it concurrently.
#[inline(always)]
pub unsafe fn free(ptr: *mut u8) -> Result<(), FreeError> {
    let slot = tls::slot();
    // SAFETY: as in `alloc`; the pointer is vetted by the core.
    unsafe {
        let heap = (*slot).heap;
        if heap.is_null() {
            return free_slow(ptr);
        }
        (*heap).free(&DOMAIN, ptr)?;
        (*slot).frees = (*slot).frees.wrapping_add(1);
        if (*slot).frees & (TIDY_EVERY - 1) == 0 {
            tidy(slot);
        }
    }
    Ok(())
}

/// [`free`] for a thread whose heap is not set up (or gone).
///
/// # Safety
/// As for [`free`].
#[cold]
#[inline(never)]
unsafe fn free_slow(ptr: *mut u8) -> Result<(), FreeError> {
    match thread_heap() {
        // SAFETY: the caller's contract; a live heap of this thread.
        Some(heap) => unsafe { (*heap).free(&DOMAIN, ptr) },
        // SAFETY: the caller's contract.
        None => unsafe { DOMAIN.free_uncached(ptr as usize) },
    }
}

/// Gives the thread's cached slices back when a purge may be due, so that
/// the core's delayed purge runs for threads that only free.
///
/// # Safety
/// `slot` must be the calling thread's slot, with a live heap.
#[cold]
#[inline(never)]
unsafe fn tidy(slot: *mut ThreadSlot) {
    let now = DOMAIN.source().now_ms();
    // SAFETY: the caller passes this thread's slot, with a live heap.
    unsafe {
        if now < (*slot).next_tidy_ms {
            return;
        }
        (*slot).next_tidy_ms = now + DOMAIN.purge_delay_ms() / 2;
        (*(*slot).heap).release(&DOMAIN, false);
    }
}

/// Allocates `out.len()` blocks of `layout` for the calling thread, all or
/// nothing: returns `out.len()` with every entry set, or 0 when out of
/// memory, with nothing left allocated and the entries filled so far reset
/// to null.
pub fn alloc_bulk(layout: Layout, out: &mut [*mut u8]) -> usize {
    let slot = tls::slot();
    // SAFETY: as in `alloc`.
    unsafe {
        let heap = (*slot).heap;
        if !heap.is_null() {
            return (*heap).alloc_bulk(&DOMAIN, layout, out);
        }
    }
    alloc_bulk_slow(layout, out)
}

#[cold]
#[inline(never)]
fn alloc_bulk_slow(layout: Layout, out: &mut [*mut u8]) -> usize {
    match thread_heap() {
        // SAFETY: a live heap of this thread, not otherwise borrowed.
        Some(heap) => unsafe { (*heap).alloc_bulk(&DOMAIN, layout, out) },
        None => alloc_bulk_uncached(layout, out),
    }
}

/// [`alloc_bulk`] without a cache: one block at a time from the domain,
/// with the same all-or-nothing result.
fn alloc_bulk_uncached(layout: Layout, out: &mut [*mut u8]) -> usize {
    for filled in 0..out.len() {
        let block = DOMAIN.allocate_uncached(layout, false);
        if block.is_null() {
            for taken in &mut out[..filled] {
                // SAFETY: a block allocated just above and never handed out;
                // a failure would be an allocator bug, and the block is then
                // left allocated rather than freed twice.
                let _ = unsafe { DOMAIN.free_uncached(*taken as usize) };
                *taken = ptr::null_mut();
            }
            return 0;
        }
        out[filled] = block;
    }
    out.len()
}

/// Frees every non-null block of `blocks` (null entries are skipped). A
/// pointer that is not a live allocation is not freed; the others still
/// are, and the first such pointer's error is returned.
///
/// # Safety
/// As for [`free`], for each non-null block; a block may appear only once.
pub unsafe fn free_bulk(blocks: &[*mut u8]) -> Result<(), FreeError> {
    let slot = tls::slot();
    // SAFETY: this thread's slot.
    let heap = unsafe { (*slot).heap };
    if heap.is_null() {
        // SAFETY: the caller's contract.
        return unsafe { free_bulk_slow(blocks) };
    }
    let mut freed = 0;
    each_run(blocks, |run| {
        freed += run.len();
        // SAFETY: as in `free`; the pointers are vetted by the core.
        unsafe { (*heap).free_bulk(&DOMAIN, run) }
    })?;
    // SAFETY: this thread's slot, with a live heap.
    unsafe {
        let before = (*slot).frees;
        (*slot).frees = before.wrapping_add(freed);
        // Tidy when the count passed a multiple of `TIDY_EVERY`.
        if (before ^ (*slot).frees) & !(TIDY_EVERY - 1) != 0 {
            tidy(slot);
        }
    }
    Ok(())
}

/// [`free_bulk`] for a thread whose heap is not set up (or gone).
///
/// # Safety
/// As for [`free_bulk`].
#[cold]
#[inline(never)]
unsafe fn free_bulk_slow(blocks: &[*mut u8]) -> Result<(), FreeError> {
    match thread_heap() {
        // SAFETY: the caller's contract; a live heap of this thread.
        Some(heap) => each_run(blocks, |run| unsafe { (*heap).free_bulk(&DOMAIN, run) }),
        None => each_run(blocks, |run| {
            let mut first = Ok(());
            for &block in run {
                // SAFETY: the caller's contract.
                if let Err(error) = unsafe { DOMAIN.free_uncached(block as usize) } {
                    first = first.and(Err(error));
                }
            }
            first
        }),
    }
}

/// Calls `free` on each run of non-null entries of `blocks`, every one of
/// them, and returns the first error.
fn each_run(blocks: &[*mut u8], mut free: impl FnMut(&[*mut u8]) -> Result<(), FreeError>) -> Result<(), FreeError> {
    let mut first = Ok(());
    for run in blocks.split(|block| block.is_null()).filter(|run| !run.is_empty()) {
        let result = free(run);
        first = first.and(result);
    }
    first
}

/// Resizes `ptr` (not null) to `layout`. `Ok(null)` means out of memory,
/// with the old allocation untouched.
///
/// # Safety
/// As for [`free`]; on success the old pointer must not be used unless it is
/// the one returned.
pub unsafe fn realloc(ptr: *mut u8, layout: Layout) -> Result<*mut u8, FreeError> {
    let heap = {
        let slot = tls::slot();
        // SAFETY: this thread's slot.
        let heap = unsafe { (*slot).heap };
        if heap.is_null() {
            thread_heap()
        } else {
            Some(heap)
        }
    };
    match heap {
        // SAFETY: the caller's contract; a live heap of this thread.
        Some(heap) => unsafe { (*heap).realloc(&DOMAIN, ptr, layout) },
        // SAFETY: the caller's contract.
        None => unsafe { DOMAIN.reallocate_uncached(ptr as usize, layout) },
    }
}

/// The usable size of the allocation at `ptr`: every byte up to it may be
/// written, and a `realloc` to it keeps the block in place.
pub fn usable_size(ptr: *const u8) -> Result<usize, FreeError> {
    DOMAIN.usable_size(ptr as usize)
}

/// Gives the calling thread's cached slices back to the domain (they are
/// taken again on its next allocation).
pub fn release_thread_cache() {
    let slot = tls::slot();
    // SAFETY: this thread's slot; a non-null heap is live.
    unsafe {
        let heap = (*slot).heap;
        if !heap.is_null() {
            (*heap).release(&DOMAIN, false);
        }
    }
}

/// Returns every unused byte to the OS now. Returns whether the resident
/// estimate went down.
pub fn trim() -> bool {
    release_thread_cache();
    let before = DOMAIN.stats().bytes_resident;
    DOMAIN.purge_all();
    DOMAIN.stats().bytes_resident < before
}

/// A statistics snapshot, with the calling thread's cache given back first
/// so that its frees count.
pub fn stats() -> Stats {
    release_thread_cache();
    DOMAIN.stats()
}

/// Makes sure the calling thread has a heap; see the module docs.
pub fn ensure_thread_heap() {
    let _ = thread_heap();
}

/// The calling thread's heap, set up on first use; `None` when the thread
/// cannot cache (set-up in progress, exited, or set-up failed).
#[cold]
fn thread_heap() -> Option<*mut Heap> {
    let slot = tls::slot();
    // SAFETY: the slot is this thread's. No reference to it is held across
    // the calls below that may re-enter the allocator.
    unsafe {
        match (*slot).state() {
            SlotState::Ready => return Some((*slot).heap),
            SlotState::Registering | SlotState::Gone => return None,
            SlotState::Fresh => {}
        }
        (*slot).set(SlotState::Registering, ptr::null_mut());
        let heap = new_heap();
        match heap {
            Some(heap) => (*slot).set(SlotState::Ready, heap),
            None => (*slot).set(SlotState::Gone, ptr::null_mut()),
        }
        heap
    }
}

/// Allocates and registers a heap for the calling thread, whose slot is
/// `Registering`.
fn new_heap() -> Option<*mut Heap> {
    if !process_init() {
        return None;
    }
    let layout = Layout::new::<Heap>();
    let heap = DOMAIN.allocate_uncached(layout, false) as *mut Heap;
    if heap.is_null() {
        return None;
    }
    // SAFETY: fresh memory sized and aligned for a heap.
    unsafe {
        heap.write(Heap::new());
        (*heap).bind(&DOMAIN);
    }
    let key = EXIT_KEY.load(Ordering::Acquire);
    // SAFETY: a key created by `process_init`.
    if unsafe { libc::pthread_setspecific(key, heap.cast()) } != 0 {
        // SAFETY: the heap never served an allocation; give its memory back.
        unsafe { discard_heap(heap) };
        return None;
    }
    Some(heap)
}

/// Retires `heap` and frees its memory.
///
/// # Safety
/// `heap` must be a heap made by `new_heap` that no thread uses any more.
unsafe fn discard_heap(heap: *mut Heap) {
    // SAFETY: the caller's contract.
    unsafe {
        (*heap).release(&DOMAIN, true);
        if let Err(error) = DOMAIN.free_uncached(heap as usize) {
            crate::output::misuse("thread exit", error);
        }
    }
}

/// The thread-exit key's destructor: gives the heap back.
extern "C" fn thread_exit(value: *mut libc::c_void) {
    let slot = tls::slot();
    // SAFETY: glibc runs key destructors on the exiting thread, with the
    // value set by `new_heap` for this thread; clearing the slot first sends
    // every later call on this thread to the domain.
    unsafe {
        if (*slot).heap == value as *mut Heap {
            (*slot).set(SlotState::Gone, ptr::null_mut());
        }
        discard_heap(value as *mut Heap);
    }
}

/// Creates the thread-exit key and installs the `fork` handlers, once per
/// process. Returns whether the thread caches can be used.
fn process_init() -> bool {
    loop {
        match PROCESS.compare_exchange(NOT_STARTED, RUNNING, Ordering::Acquire, Ordering::Acquire) {
            Ok(_) => break,
            Err(DONE) => return true,
            Err(FAILED) => return false,
            // Another thread is setting up; it calls nothing that waits for us.
            Err(_) => core::hint::spin_loop(),
        }
    }
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is a valid out-pointer; `thread_exit` is a valid
    // destructor. Neither call holds a lock of ours, so allocations they make
    // cannot deadlock (they run uncached: this thread is `Registering`).
    let ok = unsafe {
        libc::pthread_key_create(&mut key, Some(thread_exit)) == 0
            && libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child)) == 0
    };
    EXIT_KEY.store(key, Ordering::Release);
    PROCESS.store(if ok { DONE } else { FAILED }, Ordering::Release);
    ok
}

extern "C" fn fork_prepare() {
    DOMAIN.fork_prepare();
}

extern "C" fn fork_parent() {
    // SAFETY: glibc runs this after `fork_prepare` on the forking thread.
    unsafe { DOMAIN.fork_parent() };
}

extern "C" fn fork_child() {
    // SAFETY: glibc runs this in the child after `fork_prepare` ran in the
    // parent.
    unsafe { DOMAIN.fork_child() };
}
