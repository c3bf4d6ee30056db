//! The per-thread slot, in initial-exec thread-local storage.
//!
//! # Why not `thread_local!`
//!
//! rustc compiles thread-locals of a `cdylib` with the *general-dynamic* TLS
//! model: every access calls `__tls_get_addr`. In glibc 2.36 that function
//! may itself call `malloc`, `realloc` and `free` when the thread's
//! dynamic thread vector is out of date (a module with TLS was `dlopen`ed or
//! `dlclose`d since the thread last looked): it resizes the vector and frees
//! blocks of unloaded modules. For an interposed malloc that is re-entry from
//! inside the TLS lookup the malloc itself started, with the vector still out
//! of date, which recurses without end (glibc fixed this only in 2.39).
//!
//! The *initial-exec* model has no such call: the slot lives at a fixed
//! offset from the thread pointer, set when the library is loaded. Stable
//! Rust cannot ask for that model, so on x86-64 the slot is a `.tdata`
//! symbol made by the core's `initial_exec_slot!`. The slot is 64 bytes,
//! well within the static TLS surplus glibc reserves for modules that are
//! `dlopen`ed later, so loading with `dlopen` works too (the library is then
//! marked `DF_STATIC_TLS`).
//!
//! Other architectures fall back to `thread_local!` (general-dynamic), which
//! is safe under `LD_PRELOAD` as long as the program does not `dlopen` more
//! than a dozen modules with thread-locals of their own.
//!
//! A new thread's slot holds [`EMPTY_HEAP`] in [`ThreadSlot::cache`] and
//! zeroes everywhere else ([`ThreadSlot::heap`] null, state
//! [`SlotState::Fresh`]): the slot lives in `.tdata`, whose initial image
//! carries the empty heap's address (a relocation the dynamic linker applies
//! to the image before any thread copies it). glibc copies the image again
//! when it reuses a cached thread stack.

use strata_core::{Heap, EMPTY_HEAP};

/// The address of [`EMPTY_HEAP`] (the core's heap that serves nothing): the
/// fast paths' heap for a thread that has none.
pub fn empty_heap() -> *const Heap {
    EMPTY_HEAP.as_ptr()
}

/// Where a thread stands with its heap.
#[repr(usize)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SlotState {
    /// No heap yet. Must be zero: new threads start here, and a thread
    /// whose heap could not be set up for want of memory comes back here to
    /// try again on a later call.
    Fresh = 0,
    /// The heap is being set up; allocations made meanwhile (by libc, on our
    /// behalf) go to the domain without a cache.
    Registering = 1,
    /// [`ThreadSlot::heap`] is valid.
    Ready = 2,
    /// The heap was given back (thread exit), or the process-wide set-up
    /// failed; the thread allocates without a cache from now on.
    Gone = 3,
}

/// Everything the shim keeps per thread.
#[repr(C)]
pub struct ThreadSlot {
    /// The heap the fast paths use: [`ThreadSlot::heap`] when it is set,
    /// else [`EMPTY_HEAP`]; never null. The fast paths read nothing else
    /// (but the free countdown).
    pub cache: *const Heap,
    /// The thread's heap, non-null exactly when `state` is
    /// [`SlotState::Ready`].
    pub heap: *mut Heap,
    /// Set-up state. Stored as a `usize` so that all-zero memory is valid.
    state: usize,
    /// Frees left before [`crate::front`]'s next tidying check, counted
    /// down by the frees made with the heap that do not take the fast path
    /// (those count down in their slice); the check comes once it goes
    /// negative (as an `isize`), so a new thread (0) checks at its first
    /// such free.
    pub frees_left: usize,
    /// Coarse-clock time (ms) before which tidying is skipped.
    pub next_tidy_ms: u64,
    /// Calls of the thread-exit key's destructor so far (see
    /// [`crate::front`]).
    pub exit_calls: usize,
    /// One more than the index of the heap's entry among the heaps of
    /// exiting threads, or 0 (see [`crate::front`]).
    pub limbo: usize,
    /// Whether the domain had memory waiting for the purge delay when this
    /// thread last tidied: tidying then comes every
    /// [`crate::front::TIDY_SOON`] frees instead of every
    /// [`crate::front::TIDY_EVERY`].
    pub purge_waiting: bool,
}

impl ThreadSlot {
    /// The set-up state.
    pub fn state(&self) -> SlotState {
        match self.state {
            0 => SlotState::Fresh,
            1 => SlotState::Registering,
            2 => SlotState::Ready,
            _ => SlotState::Gone,
        }
    }

    /// Moves to `state`, with `heap` (null unless `state` is `Ready`).
    pub fn set(&mut self, state: SlotState, heap: *mut Heap) {
        debug_assert_eq!(state == SlotState::Ready, !heap.is_null());
        self.heap = heap;
        self.cache = if heap.is_null() { empty_heap() } else { heap };
        self.state = state as usize;
    }
}

#[cfg(target_arch = "x86_64")]
strata_core::initial_exec_slot! {
    symbol: "__strata_thread_slot",
    size: core::mem::size_of::<ThreadSlot>(),
    align_log2: 4,
    first: EMPTY_HEAP,
    offset: fn slot_offset,
}

// The variable's initial image writes `cache` as the slot's first word.
const _: () = assert!(core::mem::offset_of!(ThreadSlot, cache) == 0);
const _: () = assert!(core::mem::size_of::<*const Heap>() == 8);

/// The calling thread's slot.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn slot() -> *mut ThreadSlot {
    let thread: usize;
    // SAFETY: reads the thread pointer, fixed for the life of the thread.
    unsafe {
        core::arch::asm!(
            "mov {thread}, qword ptr fs:[0]",
            thread = out(reg) thread,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    (thread + slot_offset()) as *mut ThreadSlot
}

/// The calling thread's [`ThreadSlot::cache`], read straight through the
/// thread pointer: the malloc fast path's only read of its slot.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn cache() -> *const Heap {
    // SAFETY: `cache` is the slot's first word (asserted above). The slot
    // is written by ordinary stores, which the compiler keeps before this
    // read.
    unsafe { strata_core::tls::read_thread_word(slot_offset()) as *const Heap }
}

/// Counts one free down in [`ThreadSlot::frees_left`], and runs `due`
/// once the count goes negative (as an `isize`): one decrement of the
/// slot's word in place, and one branch.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn count_free(due: impl FnOnce()) {
    // SAFETY: `frees_left` lies at its field offset in this thread's slot,
    // at `slot_offset()` from the thread pointer; only this thread touches
    // it. Without `nomem`, the compiler treats the slot as read and written.
    unsafe {
        core::arch::asm!(
            "dec qword ptr fs:[{offset} + {field}]",
            "js {due}",
            offset = in(reg) slot_offset(),
            field = const core::mem::offset_of!(ThreadSlot, frees_left),
            due = label { due() },
            options(nostack),
        );
    }
}

#[cfg(not(target_arch = "x86_64"))]
std::thread_local! {
    static SLOT: core::cell::UnsafeCell<ThreadSlot> = const {
        core::cell::UnsafeCell::new(ThreadSlot {
            cache: EMPTY_HEAP.as_ptr(),
            heap: core::ptr::null_mut(),
            state: 0,
            frees_left: 0,
            next_tidy_ms: 0,
            exit_calls: 0,
            limbo: 0,
            purge_waiting: false,
        })
    };
}

/// The calling thread's slot.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub fn slot() -> *mut ThreadSlot {
    SLOT.with(|slot| slot.get())
}

/// The calling thread's [`ThreadSlot::cache`].
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub fn cache() -> *const Heap {
    // SAFETY: the calling thread's slot, live for the thread's life.
    unsafe { (*slot()).cache }
}

/// Counts one free down in [`ThreadSlot::frees_left`], and runs `due`
/// once the count goes negative (as an `isize`).
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub fn count_free(due: impl FnOnce()) {
    let slot = slot();
    // SAFETY: as in `cache`; only this thread touches its slot.
    let left = unsafe {
        let left = (*slot).frees_left.wrapping_sub(1);
        (*slot).frees_left = left;
        left
    };
    if (left as isize) < 0 {
        due();
    }
}
