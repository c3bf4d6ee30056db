//! The shim's front: one domain for the process, one heap per thread.
//!
//! This is the only module that touches the core. It turns "the calling
//! thread" into a [`Heap`] and forwards to it, or straight to the domain when
//! the thread has no usable heap.
//!
//! # A thread's heap
//!
//! A heap is about 4.5 KiB, too large for the static TLS surplus that a
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
//! 4. the slot moves to [`SlotState::Ready`] (or back to
//!    [`SlotState::Fresh`] when memory ran out, so that a later call tries
//!    again).
//!
//! Any allocation made during steps 2 and 3 finds the slot `Registering` and
//! is served by the domain directly, so set-up never recurses.
//!
//! # Thread exit
//!
//! When the thread exits, glibc calls `thread_exit` with the heap. glibc runs
//! key destructors in rounds, each in key order, and starts another round
//! (up to `PTHREAD_DESTRUCTOR_ITERATIONS`, 4) while some destructor set a
//! value again. The shim's key is created early, so its destructor comes
//! before those of keys created later (by libraries loaded later, or the
//! program), which may well allocate. So, as jemalloc re-arms its key,
//! `thread_exit` sets the key's value again in every round but the last:
//! the heap stays in place and the other destructors allocate with it. In
//! the last round the slot moves to [`SlotState::Gone`], the heap gives its
//! slices back to the domain and its memory is freed. Destructors that run
//! after that (later in the last round) still allocate and free, without a
//! cache.
//!
//! Counting calls tells the round only for a heap that existed before the
//! rounds began. A thread whose first allocation is made by a destructor
//! gets its heap during the rounds, and nothing the shim can observe tells
//! in which: its last call may be one glibc never makes. So a heap kept for
//! another round is also entered, with its thread's id, in [`LIMBO`], and
//! leaves it in its last call. A heap still there once its thread is gone
//! (the kernel knows no such thread) was left behind, and is given back by
//! the next thread that looks ([`reap_orphans`]: when [`LIMBO`] is full,
//! and in [`trim`] and [`stats`]). When [`LIMBO`] is full even so, the heap
//! goes back at once, as it would without re-arming.
//!
//! # Returning memory
//!
//! The core purges dirty slices, makes holes of the empty pages of sparse
//! slices no heap owns, and gives back cached huge mappings, once they
//! have waited the purge delay, whenever a cache refills or gives slices
//! back. A
//! thread that only frees never refills, and one that works lightly (a small
//! `malloc`/`free` now and then) is served from its cache and never refills
//! either. So the shim's frees count down to a check (`tidy`), which, at
//! most twice per purge delay, has the thread's heap give its slices back
//! ([`Heap::release`]) and so runs that delayed purge. The check comes every
//! [`TIDY_EVERY`] frees, or every [`TIDY_SOON`] while the domain has memory
//! waiting for the delay, so that light work reaches it too; each check asks
//! the domain again (without its lock) whether memory still waits, so that
//! a thread whose cache just took back what it gave goes back to the long
//! interval at its next check. Frees that
//! take the fast path count down in the slice they free into
//! ([`Heap::free_owned_counted`]: the countdown shares a word with the
//! slice's count of objects in use, so the fast path pays nothing for it
//! but the branch); the others (remote frees, frees into slices the thread
//! does not own, batches) count down in the thread slot. A check that finds
//! memory newly waiting re-arms every slice the heap owns with the shorter
//! interval. `malloc_trim` purges everything at once.
//!
//! # Locks and `fork`
//!
//! The shim adds no lock of its own to the core's domain lock. The `fork`
//! handlers take that lock in the parent before `fork` (after glibc's stdio
//! list lock; see `process_init` for why) and release both on each side
//! after, so a child forked while other threads allocate finds them free.
//! Slices cached by the parent's other threads stay owned by heaps that do
//! not exist in the child: the child can free into them (their objects go on
//! remote lists, or, for a slice whose heap was giving it back at the fork,
//! its remote list already closed, onto its free list under the domain
//! lock) but they are not reused there. Likewise, the objects those threads
//! had freed but not yet pushed (their batches of remote frees) stay in use
//! in the child.

use core::alloc::Layout;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU8, AtomicUsize, Ordering};

use strata_core::source::MmapSource;
use strata_core::{Domain, FreeError, FutexLock, Heap, OwnedFree, PageSource, Stats};

use crate::tls::{self, SlotState, ThreadSlot};

/// The domain type of the shim.
pub type ShimDomain = Domain<MmapSource, FutexLock>;

/// The process's single domain.
pub static DOMAIN: ShimDomain = Domain::new(MmapSource::new());

/// Frees between two tidying checks (into one slice, or counted in the
/// thread slot); a power of two.
pub const TIDY_EVERY: usize = 4096;

/// Frees between two tidying checks while memory waits for the purge delay
/// (see [`tidy`]): a thread that works lightly then still reaches the
/// delayed purge after a few calls.
pub const TIDY_SOON: usize = 16;

// Both intervals are countdowns a slice can hold.
const _: () = assert!(TIDY_SOON >= 1 && TIDY_EVERY <= strata_core::MAX_COUNTDOWN as usize);

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

/// How many times glibc calls the exit key's destructor if it sets the
/// value again each time (`PTHREAD_DESTRUCTOR_ITERATIONS`): the heap goes
/// back in the last call. Read once by `process_init`.
static EXIT_ROUNDS: AtomicUsize = AtomicUsize::new(1);

/// Whether `fork_prepare` took the locks, for the handlers after `fork`.
/// Written only with the stdio list lock held, so concurrent forks see
/// their own.
static FORK_LOCKED: AtomicBool = AtomicBool::new(false);

/// Entries of [`LIMBO`].
const LIMBO_ENTRIES: usize = 64;

/// Heaps kept for another round of thread-exit destructors (see the module
/// docs): null, [`CLAIMED`] while a thread works on the entry, or a heap,
/// whose thread's id is in [`LIMBO_TID`].
static LIMBO: [AtomicPtr<Heap>; LIMBO_ENTRIES] = [const { AtomicPtr::new(ptr::null_mut()) }; LIMBO_ENTRIES];

/// The thread of each heap in [`LIMBO`], written before the heap.
static LIMBO_TID: [AtomicI32; LIMBO_ENTRIES] = [const { AtomicI32::new(0) }; LIMBO_ENTRIES];

/// A [`LIMBO`] entry a thread is filling in or examining; never a heap.
const CLAIMED: *mut Heap = ptr::dangling_mut();

// Heaps are allocated as small objects from the domain, of the 13312-byte
// class (most of it the direct table): the fault-injection tests
// (tests/c/fault_points.c) take requests of other classes above 5 KiB as
// classes that no allocation made before the source failed can serve.
const _: () = assert!(core::mem::size_of::<Heap>() > 12288 && core::mem::size_of::<Heap>() <= 13312);

/// The malloc fast path: a block of `size` bytes aligned to 16 from the
/// calling thread's cache, or null when the fast path cannot serve it (no
/// heap yet, a size above the direct table, an empty free list); the
/// caller then calls [`alloc16`].
#[inline(always)]
pub fn try_alloc16(size: usize) -> *mut u8 {
    // SAFETY: `cache` is this thread's heap or the empty heap, live and
    // never null; no `&mut` to the heap exists while a call runs.
    unsafe { (*tls::cache()).try_alloc_aligned16(size) }
}

/// Allocates `size` bytes aligned to 16 (malloc's alignment) for the
/// calling thread; null when out of memory.
#[inline(always)]
pub fn alloc16(size: usize) -> *mut u8 {
    let slot = tls::slot();
    // SAFETY: as in `alloc`.
    unsafe {
        let heap = (*slot).heap;
        if !heap.is_null() {
            return (*heap).alloc_aligned16(&DOMAIN, size);
        }
    }
    // A zero-size request asks for one byte, so that every path (the debug
    // mode's too) hands out a block with a usable size.
    match Layout::from_size_align(size.max(1), 16) {
        Ok(layout) => alloc_slow(layout, false),
        Err(_) => ptr::null_mut(),
    }
}

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
    // Decided here, before the first heap exists: in debug mode no thread
    // gets one, so every call comes this way.
    if crate::debug::enabled() {
        let _ = thread_heap();
        return crate::debug::alloc(layout, zeroed);
    }
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
    // SAFETY: the caller's contract.
    unsafe {
        if free_fast(ptr) {
            return Ok(());
        }
        free_slow(ptr)
    }
}

/// The free fast path: frees `ptr` and returns `true` if it is a small
/// object of a slice the calling thread's heap owns; else changes nothing
/// and returns `false`, and the caller must pass `ptr` to [`free_slow`].
///
/// # Safety
/// As for [`free`].
#[inline(always)]
pub unsafe fn free_fast(ptr: *mut u8) -> bool {
    // SAFETY: as in `try_alloc16`; the pointer is vetted by the core.
    match unsafe { (*tls::cache()).free_owned_counted(&DOMAIN, ptr) } {
        OwnedFree::Freed => true,
        OwnedFree::CheckDue => {
            // SAFETY: only a real heap owns slices, so the thread's heap is
            // live, as `tidy` needs.
            unsafe { tidy_after_free(ptr) };
            true
        }
        OwnedFree::Refused => false,
    }
}

/// The check a fast-path free found due: tidies, then re-arms the countdown
/// of the slice it freed into (if the heap still owns it).
///
/// # Safety
/// The calling thread's heap must be live.
#[cold]
#[inline(never)]
unsafe fn tidy_after_free(ptr: *mut u8) {
    let slot = tls::slot();
    // SAFETY: the caller's contract.
    unsafe {
        tidy(slot);
        (*(*slot).heap).rearm_check(ptr, tidy_interval(slot));
    }
}

/// Frees until the next check, from the thread's state: [`TIDY_SOON`] while
/// memory waits for the purge delay, else [`TIDY_EVERY`].
///
/// # Safety
/// `slot` must be the calling thread's slot.
unsafe fn tidy_interval(slot: *mut ThreadSlot) -> u16 {
    // SAFETY: the caller's contract.
    (if unsafe { (*slot).purge_waiting } { TIDY_SOON } else { TIDY_EVERY }) as u16
}

/// [`free`] for every pointer [`free_fast`] refused (and only for those):
/// a thread whose heap is not set up (or gone), a remote free, a block
/// that is not small, and misuse, which the core's full check reports.
///
/// # Safety
/// As for [`free`].
#[cold]
#[inline(never)]
pub unsafe fn free_slow(ptr: *mut u8) -> Result<(), FreeError> {
    let slot = tls::slot();
    // SAFETY: this thread's slot.
    let heap = unsafe { (*slot).heap };
    if !heap.is_null() {
        // SAFETY: the caller's contract (the fast path refused `ptr`); a
        // live heap of this thread.
        unsafe {
            (*heap).free_refused(&DOMAIN, ptr)?;
            tls::count_free(|| tidy(slot));
        }
        return Ok(());
    }
    if crate::debug::enabled() {
        // SAFETY: the caller's contract.
        return unsafe { crate::debug::free(ptr) };
    }
    match thread_heap() {
        // SAFETY: the caller's contract; a live heap of this thread.
        Some(heap) => unsafe { (*heap).free(&DOMAIN, ptr) },
        // SAFETY: the caller's contract.
        None => unsafe { DOMAIN.free_uncached(ptr as usize) },
    }
}

/// Gives the thread's cached slices back when a purge may be due, so that
/// the core's delayed purge runs for threads that only free, or that work
/// so lightly that their cache never refills.
///
/// # Safety
/// `slot` must be the calling thread's slot, with a live heap.
#[cold]
#[inline(never)]
unsafe fn tidy(slot: *mut ThreadSlot) {
    let now = DOMAIN.source().now_ms();
    // SAFETY: the caller passes this thread's slot, with a live heap.
    unsafe {
        let was_waiting = (*slot).purge_waiting;
        if now >= (*slot).next_tidy_ms {
            (*slot).next_tidy_ms = now + DOMAIN.purge_delay_ms() / 2;
            (*(*slot).heap).release(&DOMAIN, false);
            (*slot).purge_waiting = DOMAIN.purge_if_due();
        } else {
            // Too soon to give the cache back. Memory freed since the last
            // look may now wait for the delay, and what waited may be gone
            // (purged, or taken back by a heap: the slice this thread gave
            // back a moment ago, with its live objects, is the common
            // case): look again soon only while memory waits. The domain
            // answers without its lock.
            (*slot).purge_waiting = DOMAIN.memory_waiting();
        }
        // Look again after TIDY_SOON more frees rather than TIDY_EVERY
        // while memory waits for the purge delay: in the thread slot, in
        // the slices the heap receives from now on, and, when memory has
        // just begun to wait, in every slice it owns already.
        let interval = tidy_interval(slot);
        (*slot).frees_left = interval as usize - 1;
        let heap = &mut *(*slot).heap;
        heap.set_check_interval(interval);
        if (*slot).purge_waiting && !was_waiting {
            heap.rearm_checks(interval);
        }
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
    if crate::debug::enabled() {
        for filled in 0..out.len() {
            let block = alloc_slow(layout, false);
            if block.is_null() {
                for taken in out[..filled].iter_mut() {
                    // SAFETY: blocks just allocated here and never handed out.
                    let _ = unsafe { crate::debug::free(*taken) };
                    *taken = ptr::null_mut();
                }
                return 0;
            }
            out[filled] = block;
        }
        return out.len();
    }
    match thread_heap() {
        // SAFETY: a live heap of this thread, not otherwise borrowed.
        Some(heap) => unsafe { (*heap).alloc_bulk(&DOMAIN, layout, out) },
        None => DOMAIN.allocate_bulk_uncached(layout, out, ()),
    }
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
        // Tidy when the countdown runs out within this batch.
        let left = ((*slot).frees_left as isize).saturating_sub(freed as isize);
        (*slot).frees_left = left as usize;
        if left < 0 {
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
    if crate::debug::enabled() {
        // SAFETY: the caller's contract, block by block.
        return each_run(blocks, |run| {
            run.iter().map(|&block| unsafe { crate::debug::free(block) }).fold(Ok(()), Result::and)
        });
    }
    match thread_heap() {
        // SAFETY: the caller's contract; a live heap of this thread.
        Some(heap) => each_run(blocks, |run| unsafe { (*heap).free_bulk(&DOMAIN, run) }),
        // SAFETY: the caller's contract.
        None => each_run(blocks, |run| unsafe { DOMAIN.free_bulk_uncached(run) }),
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
    if crate::debug::enabled() {
        // SAFETY: the caller's contract.
        return unsafe { crate::debug::realloc(ptr, layout) };
    }
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
    if crate::debug::enabled() {
        return crate::debug::usable_size(ptr);
    }
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
    reap_orphans();
    release_thread_cache();
    let before = DOMAIN.stats().bytes_resident;
    DOMAIN.purge_all();
    DOMAIN.stats().bytes_resident < before
}

/// A statistics snapshot, with the calling thread's cache (and those left
/// behind by exited threads) given back first so that their frees count.
pub fn stats() -> Stats {
    reap_orphans();
    release_thread_cache();
    DOMAIN.stats()
}

/// Makes sure the calling thread has a heap; see the module docs.
pub fn ensure_thread_heap() {
    let _ = thread_heap();
}

/// The calling thread's heap, set up on first use; `None` when the thread
/// cannot cache (set-up in progress or out of memory, exited, or the
/// process-wide set-up failed).
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
        if crate::debug::enabled() {
            // Debug mode keeps no caches: set up the process (the `fork`
            // handlers) and serve this thread from the domain.
            process_init();
            (*slot).set(SlotState::Gone, ptr::null_mut());
            return None;
        }
        match new_heap() {
            HeapSetup::Ready(heap) => {
                (*slot).set(SlotState::Ready, heap);
                Some(heap)
            }
            // Out of memory for now: this call goes without a cache, and a
            // later one tries again. (Gone here would leave the thread
            // uncached, taking the domain lock on every call, for the rest
            // of its life, after a failure that may last a moment.)
            HeapSetup::Later => {
                (*slot).set(SlotState::Fresh, ptr::null_mut());
                None
            }
            HeapSetup::Never => {
                (*slot).set(SlotState::Gone, ptr::null_mut());
                None
            }
        }
    }
}

/// The outcome of [`new_heap`].
enum HeapSetup {
    /// The thread's heap, registered.
    Ready(*mut Heap),
    /// Out of memory (for the heap itself, or for glibc's key storage): the
    /// thread may try again later.
    Later,
    /// The process-wide set-up failed: no thread will ever cache.
    Never,
}

/// Allocates and registers a heap for the calling thread, whose slot is
/// `Registering`.
fn new_heap() -> HeapSetup {
    if !process_init() {
        return HeapSetup::Never;
    }
    let layout = Layout::new::<Heap>();
    let heap = DOMAIN.allocate_uncached(layout, false) as *mut Heap;
    if heap.is_null() {
        return HeapSetup::Later;
    }
    // SAFETY: fresh memory sized and aligned for a heap.
    unsafe {
        heap.write(Heap::new());
        (*heap).bind(&DOMAIN);
        (*heap).set_check_interval(TIDY_EVERY as u16);
        // A thread keeps its heap until it exits: its remote frees can wait
        // in batches (pushed by `tidy` and at thread exit at the latest).
        (*heap).set_remote_batching(&DOMAIN, true);
    }
    let key = EXIT_KEY.load(Ordering::Acquire);
    // SAFETY: a key created by `process_init`. It fails only with ENOMEM,
    // for the block holding keys past the first 32.
    if unsafe { libc::pthread_setspecific(key, heap.cast()) } != 0 {
        // SAFETY: the heap never served an allocation; give its memory back.
        unsafe { discard_heap(heap) };
        return HeapSetup::Later;
    }
    HeapSetup::Ready(heap)
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

/// The thread-exit key's destructor: keeps the heap for the other keys'
/// destructors until glibc's last round, then gives it back (see the module
/// docs).
extern "C" fn thread_exit(value: *mut libc::c_void) {
    let slot = tls::slot();
    let heap = value as *mut Heap;
    // SAFETY: glibc runs key destructors on the exiting thread, with the
    // value set by `new_heap` (or an earlier call) for this thread. The slot
    // is this thread's; clearing it first sends every later call on this
    // thread to the domain.
    unsafe {
        if (*slot).heap == heap {
            (*slot).exit_calls += 1;
            if (*slot).exit_calls < EXIT_ROUNDS.load(Ordering::Relaxed) && keep_for_next_round(slot, heap) {
                return;
            }
            (*slot).set(SlotState::Gone, ptr::null_mut());
            if (*slot).limbo != 0 {
                limbo_leave((*slot).limbo - 1, heap);
                (*slot).limbo = 0;
            }
        }
        discard_heap(heap);
    }
}

/// Has glibc call `thread_exit` again in its next round, with the heap
/// entered in [`LIMBO`] meanwhile. Returns false, with nothing armed, when
/// the heap must go now.
///
/// # Safety
/// `slot` is the calling thread's, in `thread_exit`, with `heap` its heap.
unsafe fn keep_for_next_round(slot: *mut ThreadSlot, heap: *mut Heap) -> bool {
    // SAFETY: the caller's contract.
    unsafe {
        if (*slot).limbo == 0 {
            match limbo_enter(heap) {
                Some(index) => (*slot).limbo = index + 1,
                None => return false,
            }
        }
        // A key below 32 takes no allocation; a higher one has its block
        // already, holding the value glibc just cleared.
        libc::pthread_setspecific(EXIT_KEY.load(Ordering::Relaxed), heap.cast()) == 0
    }
}

/// Enters `heap`, of the calling thread, in [`LIMBO`]; `None` when it is
/// full even after reaping.
fn limbo_enter(heap: *mut Heap) -> Option<usize> {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    for attempt in 0..2 {
        for (index, entry) in LIMBO.iter().enumerate() {
            if entry.compare_exchange(ptr::null_mut(), CLAIMED, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                LIMBO_TID[index].store(tid, Ordering::Relaxed);
                entry.store(heap, Ordering::Release);
                return Some(index);
            }
        }
        if attempt == 0 {
            reap_orphans();
        }
    }
    None
}

/// Takes `heap`, of the calling thread, out of [`LIMBO`] entry `index`.
fn limbo_leave(index: usize, heap: *mut Heap) {
    loop {
        match LIMBO[index].compare_exchange(heap, ptr::null_mut(), Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return,
            // A thread is examining the entry, or filling it in after a fork
            // cleared it; it is done in a few instructions.
            Err(current) if current == CLAIMED => core::hint::spin_loop(),
            // Cleared in a child process by `fork_child`: nothing to take out.
            Err(_) => return,
        }
    }
}

/// Gives back the heaps in [`LIMBO`] whose thread is gone: exited after a
/// last round in which `thread_exit` expected another.
fn reap_orphans() {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    for (index, entry) in LIMBO.iter().enumerate() {
        let heap = entry.load(Ordering::Acquire);
        if heap.is_null() || heap == CLAIMED {
            continue;
        }
        if entry.compare_exchange(heap, CLAIMED, Ordering::Acquire, Ordering::Relaxed).is_err() {
            continue;
        }
        let tid = LIMBO_TID[index].load(Ordering::Relaxed);
        // SAFETY: signal 0 only checks that the thread exists. A thread of
        // this process keeps its id until it is gone, so ESRCH means the
        // owner will never touch the heap again; an id reused since by
        // another thread only keeps the heap longer.
        let gone = unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, 0) } == -1
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            // SAFETY: the heap's thread has exited; the claim keeps every
            // other thread away from it.
            unsafe { discard_heap(heap) };
            entry.store(ptr::null_mut(), Ordering::Release);
        } else {
            entry.store(heap, Ordering::Release);
        }
    }
}

/// Creates the thread-exit key and installs the `fork` handlers, once per
/// process. Returns whether the thread caches can be used.
///
/// # The `fork` handlers and glibc's locks
///
/// glibc's `fork` (2.34 and later) runs the atfork prepare handlers, then
/// takes the stdio list lock (`_IO_list_lock`), and only then its own malloc
/// locks, last because "the libio list lock has an indirect malloc
/// dependency" (posix/fork.c): `fflush(NULL)` and `exit` hold the list lock
/// while they take each stream's lock, and `getline`, `open_memstream` or a
/// `fopencookie` write allocate while holding a stream's lock. A prepare
/// handler that takes the domain lock and returns would have `fork` wait for
/// the list lock with the domain lock held: with one thread in
/// `fflush(NULL)` waiting for a stream that another thread holds while it
/// waits for the domain, nobody moves.
///
/// Holding no lock across `fork` and resetting the domain lock in the child
/// is no way out: another thread may be halfway through a change to the
/// domain's lists at that moment, and the child would inherit them half
/// changed; glibc also holds its arena locks across `fork`. So
/// `fork_prepare` takes the locks in glibc's order itself: the stdio list
/// lock first (a recursive lock, which `fork` then takes again on the same
/// thread), then the domain lock. No thread holds the domain lock while it
/// waits for anything else (nothing calls into libc under it), so the order
/// is list lock before domain lock everywhere. The other lock `fork` takes
/// before the list lock, that of the NSS configuration, is only ever held
/// for copies, never across an allocation. Like glibc, the handlers take no
/// lock when the process has a single thread (`__libc_single_threaded`):
/// nobody else can hold them, and a `fork` from a signal handler that
/// interrupted an allocation must not wait for itself.
///
/// After `fork` the parent releases the domain lock and its hold on the list
/// lock (glibc releases its own); the child, the only thread there,
/// releases the domain lock and resets the list lock, as glibc does.
///
/// Prepare handlers run in the reverse order of registration, so the
/// handlers of libraries that register after the shim (all of them, in
/// practice: this runs at the process's first allocation) run before
/// `fork_prepare` and may allocate.
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
    // SAFETY: `sysconf` has no memory-safety preconditions. glibc answers
    // PTHREAD_DESTRUCTOR_ITERATIONS; anything unexpected means no extra
    // rounds, the behaviour of a single-round C library.
    let rounds = unsafe { libc::sysconf(libc::_SC_THREAD_DESTRUCTOR_ITERATIONS) };
    EXIT_ROUNDS.store(usize::try_from(rounds).map_or(1, |rounds| rounds.clamp(1, 16)), Ordering::Relaxed);
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

extern "C" {
    /// Nonzero while the process has had a single thread (glibc 2.32).
    static __libc_single_threaded: core::ffi::c_char;
    /// Takes glibc's stdio list lock (recursive).
    fn _IO_list_lock();
    /// Releases one hold on the stdio list lock.
    fn _IO_list_unlock();
    /// Resets the stdio list lock to unlocked.
    fn _IO_list_resetlock();
}

extern "C" fn fork_prepare() {
    // SAFETY: a byte glibc maintains; read as glibc's `fork` reads it.
    if unsafe { core::ptr::read_volatile(&raw const __libc_single_threaded) } != 0 {
        return;
    }
    // SAFETY: takes the stdio list lock; no lock of ours is held.
    unsafe { _IO_list_lock() };
    DOMAIN.fork_prepare();
    FORK_LOCKED.store(true, Ordering::Relaxed);
}

extern "C" fn fork_parent() {
    if FORK_LOCKED.swap(false, Ordering::Relaxed) {
        // SAFETY: glibc runs this on the forking thread, after `fork_prepare`
        // took both locks there.
        unsafe {
            DOMAIN.fork_parent();
            _IO_list_unlock();
        }
    }
}

extern "C" fn fork_child() {
    if FORK_LOCKED.swap(false, Ordering::Relaxed) {
        // SAFETY: glibc runs this in the child, the only thread, after
        // `fork_prepare` took both locks in the parent.
        unsafe {
            DOMAIN.fork_child();
            _IO_list_resetlock();
        }
    }
    // The parent's other exiting threads do not exist here, and their ids
    // mean nothing: their heaps stay with those of the parent's other
    // threads. The forking thread, if it is exiting, keeps its entry under
    // its new id.
    for entry in &LIMBO {
        entry.store(ptr::null_mut(), Ordering::Relaxed);
    }
    let slot = tls::slot();
    // SAFETY: this thread's slot; gettid has no preconditions.
    unsafe {
        if (*slot).limbo != 0 && !(*slot).heap.is_null() {
            let index = (*slot).limbo - 1;
            LIMBO_TID[index].store(libc::gettid(), Ordering::Relaxed);
            LIMBO[index].store((*slot).heap, Ordering::Release);
        }
    }
}
