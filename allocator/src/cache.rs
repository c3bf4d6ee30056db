//! Heaps: the per-thread (or per-CPU) caches, and the fast paths.
//!
//! A [`Heap`] owns, per size class, a *current* slice and up to
//! [`MAX_PARKED`] *parked* ones: slices it ran dry recently, kept so that the
//! owner's frees into them stay on the fast path. Allocation pops the current
//! slice's free list; a free by the owner pushes onto its slice's list.
//! Neither takes a lock nor does an atomic read-modify-write: the
//! descriptor fields they touch belong to the owner alone (see `SliceMeta`).
//!
//! The fast paths, as the malloc front runs them:
//!
//! - **allocation** ([`Heap::try_alloc_aligned16`]): the current slice from
//!   the heap's direct table, indexed by `(size + 15) / 16` up to
//!   [`DIRECT_MAX`] (by the size itself with the `byte-table` feature);
//!   take its free list's head if the head lies in the
//!   slice (which also tells the end of the list apart), making the head's
//!   decoded link the new head, checked by the next allocation; clear the
//!   object's free marker; count it used.
//! - **free** ([`Heap::free_owned`]): the pointer's slice must be in the
//!   heap's table of the slices it owns, the pointer must be a carved object
//!   boundary, and the object must not carry the free marker; then mark it,
//!   push it, and count it free and one step of the slice's housekeeping
//!   countdown, in one subtraction ([`Heap::free_owned_counted`]).
//!
//! Whatever they do not take goes to the slow paths, which are out of line.
//!
//! A free of an object whose slice another heap owns is a *remote free*: one
//! compare-and-swap onto that slice's remote list, which the owner drains
//! when its free list runs dry. A heap whose front turned batching on
//! ([`Heap::set_remote_batching`]: the std front and the malloc shim, whose
//! threads keep their heap) links its remote frees into a batch per slice
//! instead, and pushes each batch with one compare-and-swap once it holds
//! [`REMOTE_BATCH`] objects, when its entry is needed for another slice, or
//! when the heap is flushed or released. A free into a slice that no heap
//! owns is handed to the domain under its lock, batched: a batching heap
//! links such frees into a batch per slice too, and when the push finds the
//! slice orphaned, keeps the whole chain in `Heap::chains`, which the
//! domain splices onto the slice's free list in O(1), [`PENDING_CHAINS`]
//! chains per critical section; a heap that does not batch keeps the
//! objects one by one in `Heap::pending`, [`PENDING`] per critical section.
//!
//! When the current slice has nothing left, the heap first looks for freed
//! objects on its parked slices and switches to one that has some. Only when
//! none has does it go to the domain: it parks the dry slice, gives back the
//! oldest parked one if there are too many, and receives the cheapest slice
//! the domain has (see `domain.rs`), in one critical section.

use core::alloc::Layout;
use core::ptr::{self, NonNull};
use core::sync::atomic::Ordering;

use crate::domain::{Domain, FreeError, Lookup};
use crate::lock::RawLock;
use crate::page::{SLICE_SHIFT, SLICE_SIZE};
use crate::remote::{Link, Push, Walked};
use crate::size_class::{
    class_index, class_of, direct8_entry, direct_entry, is_carved_object, CLASS_COUNT, DIRECT8_ENTRIES, DIRECT8_ENTRIES_OF,
    DIRECT_CLASS, DIRECT_ENTRIES, DIRECT_ENTRIES_OF, DIRECT_MAX, MAX_SMALL,
};
use crate::slice::{FreeObject, SliceMeta, SmallObject, MAX_COUNTDOWN, NO_ADDRESS};
use crate::source::PageSource;

/// Frees into orphaned slices batched before the domain lock is taken.
pub const PENDING: usize = 64;

/// Chains of frees into orphaned slices (one slice each, from a batching
/// heap's batches of remote frees) kept before the domain lock is taken.
pub const PENDING_CHAINS: usize = 8;

/// Dry slices a heap keeps per class beside its current one.
pub const MAX_PARKED: usize = 4;

/// A descriptor with no free object, standing for "no current slice", so the
/// fast path needs no null check. It is never written: its free list is
/// always empty, which sends every allocation to the slow path.
struct EmptySlice(SliceMeta);
// SAFETY: nothing ever writes to the sentinel.
unsafe impl Sync for EmptySlice {}
static EMPTY: EmptySlice = EmptySlice(SliceMeta::new(NO_ADDRESS));

const fn empty() -> *mut SliceMeta {
    &EMPTY.0 as *const SliceMeta as *mut SliceMeta
}

/// Value of `Heap::domain` once a heap has been retired (its thread exited).
const RETIRED: usize = usize::MAX;

/// Entries of a heap's table of the slices it owns (its field `owned`; see
/// [`Heap::free_owned`]); a power of two.
pub const OWNED_SLICES: usize = 64;

/// The address of an empty entry of a heap's `owned` table: odd, so no
/// slice address (a multiple of the slice size) is ever equal to it.
const NO_SLICE: usize = 1;

/// One entry of a heap's `owned` table: a slice the heap owns, by address
/// and descriptor.
#[derive(Clone, Copy)]
#[repr(C)]
struct OwnedSlice {
    /// The slice's address, or [`NO_SLICE`].
    address: usize,
    /// Its descriptor: the empty slice's when `address` is [`NO_SLICE`].
    meta: *const SliceMeta,
}

/// An unused entry of the `owned` table. Its descriptor is the empty
/// slice's, whose carved limit is 0, so that an address the slice test lets
/// through (one below 64 KiB) fails the boundary test without a null test.
const NO_OWNED_SLICE: OwnedSlice = OwnedSlice { address: NO_SLICE, meta: empty() };

/// The entry of the `owned` table for the slice at `address`:
/// `(address / SLICE_SIZE) % OWNED_SLICES`.
#[inline(always)]
fn owned_index(address: usize) -> usize {
    (address >> SLICE_SHIFT) % OWNED_SLICES
}

/// Counters a heap keeps locally and hands to the domain when it takes the
/// lock anyway.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counters {
    pub(crate) remote_frees: u64,
    pub(crate) flushes: u64,
}

/// A cache of slices for one thread or CPU.
///
/// A heap serves the first domain it is used with. The owner of a heap must
/// give it back with [`Heap::release`] before the heap's memory is reused
/// (thread exit); the fronts do this.
pub struct Heap {
    /// The current slice of each class that serves 16-byte-aligned requests
    /// up to [`DIRECT_MAX`] bytes, indexed by `direct_entry(size)`, so that
    /// the malloc front finds its slice with one load.
    /// Invariant: `direct[i] == current[DIRECT_CLASS[i]]` for every `i`
    /// (kept by [`Heap::set_current`], the only writer of `current`).
    direct: [*mut SliceMeta; DIRECT_ENTRIES],
    /// The same for requests aligned to 8 bytes or less, indexed by
    /// `direct8_entry(size)` (8-byte steps), for the Rust front.
    /// Invariant: `direct8[i] == current[DIRECT8_CLASS[i]]` for every `i`.
    direct8: [*mut SliceMeta; DIRECT8_ENTRIES],
    /// The owned slice of each class, or the empty sentinel.
    /// Invariant: every non-sentinel entry has `owner == self` and `CACHED`.
    current: [*mut SliceMeta; CLASS_COUNT],
    /// Parked slices of each class, newest first, linked through their
    /// `next` field. Invariant: each has `owner == self` and `CACHED`, and
    /// there are at most [`MAX_PARKED`] per class. Every slice the heap owns
    /// is current or parked.
    parked: [*mut SliceMeta; CLASS_COUNT],
    /// The domain this heap serves: 0 before first use, [`RETIRED`] after
    /// release.
    domain: usize,
    /// The domain's free-marker key, copied here for the free fast path.
    key: usize,
    /// The domain's free-list link key ([`Domain::link_key`]), copied here
    /// for the fast paths.
    link_key: usize,
    /// State of the generator that shuffles carved runs (xorshift64; never
    /// 0 once bound).
    random: u64,
    /// Slices this heap owns, direct-mapped by address: entry
    /// `owned_index(address)` holds the slice at `address` and its
    /// descriptor, or [`NO_SLICE`]. A slice whose entry is taken by another
    /// is simply not listed (its frees take the slow path). The free fast
    /// path takes a pointer whose slice is listed here without asking the
    /// page source or reading the descriptor's owner: the slice is this
    /// heap's, so its page is live (a page with a slice in a heap's cache is
    /// never given back) and formatted for a small class.
    /// Invariant: every listed slice is owned by this heap (current or
    /// parked), and sits at its own entry.
    owned: [OwnedSlice; OWNED_SLICES],
    /// Objects freed into orphaned slices, waiting for the domain lock.
    pending: [*mut FreeObject; PENDING],
    pending_len: usize,
    /// Chains of objects freed into orphaned slices, one slice each,
    /// waiting for the domain lock: batches of remote frees whose push
    /// found their slice orphaned ([`Heap::push_remote`]).
    /// Invariant: `chains[..chains_len]` hold batches of at least two
    /// objects, and `chains_len < PENDING_CHAINS` between calls.
    chains: [RemoteBatch; PENDING_CHAINS],
    chains_len: usize,
    counters: Counters,
    /// Remote frees not yet pushed, one batch per slice, direct-mapped by
    /// the slice's descriptor (see [`Heap::batch_remote`]); all empty
    /// unless `batching`.
    remote: [RemoteBatch; REMOTE_BATCHES],
    /// Whether remote frees are batched ([`Heap::set_remote_batching`]).
    batching: bool,
    /// Fast-path frees into one slice between two housekeeping checks
    /// ([`Heap::free_owned_counted`]), from 1 to [`MAX_COUNTDOWN`]: the
    /// countdown armed on every slice the heap receives.
    check_interval: u16,
}

/// Remote frees a heap holds back, to push them onto their slice's remote
/// list together: [`REMOTE_BATCH`] objects of one slice cost one
/// compare-and-swap instead of one each.
#[derive(Clone, Copy)]
pub(crate) struct RemoteBatch {
    /// The slice of every object in the batch; null when it is empty.
    pub(crate) slice: *const SliceMeta,
    /// The newest object; its link leads to the next newest, and so on to
    /// `last`, links encoded with the heap's link key.
    pub(crate) first: *mut FreeObject,
    /// The oldest object, whose link is set when the batch is pushed (or
    /// spliced onto its slice's free list, see [`Heap::chains`]).
    pub(crate) last: *mut FreeObject,
    /// Objects in the batch, at most [`REMOTE_BATCH`]. They count as in use
    /// in their slice until the owner takes them off the remote list, as
    /// remote frees do (or the domain splices them), so the slice (and its
    /// page) stays formatted.
    pub(crate) count: u32,
}

impl RemoteBatch {
    const EMPTY: Self = Self { slice: ptr::null(), first: ptr::null_mut(), last: ptr::null_mut(), count: 0 };
}

/// Remote frees of one slice a heap holds back and pushes together onto the
/// slice's remote list, with one compare-and-swap.
pub const REMOTE_BATCH: u32 = 32;

/// Batches of remote frees a heap keeps open at once, for as many slices:
/// a consumer that frees objects of mixed sizes frees into one slice per
/// class in turn. A power of two.
const REMOTE_BATCHES: usize = 16;

/// The entry of a heap's batches for the slice that holds `address` (any
/// address in it: the slice's own, or an object's): neighbouring slices
/// take neighbouring entries.
#[inline(always)]
fn remote_batch_index(address: usize) -> usize {
    (address >> SLICE_SHIFT) % REMOTE_BATCHES
}

/// What [`Heap::drain_pending`] takes out of a heap for the domain.
pub(crate) struct Drained {
    /// Objects freed into orphaned slices: `objects[..object_count]`.
    pub(crate) objects: [*mut FreeObject; PENDING],
    pub(crate) object_count: usize,
    /// Chains of such frees, one slice each: `chains[..chain_count]`.
    pub(crate) chains: [RemoteBatch; PENDING_CHAINS],
    pub(crate) chain_count: usize,
    pub(crate) counters: Counters,
}

/// What [`Heap::free_owned_counted`] did with a pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum OwnedFree {
    /// Not a live small object of a slice this heap owns: nothing changed;
    /// the pointer goes to [`Heap::free`] (or the front's slow path).
    Refused,
    /// Freed.
    Freed,
    /// Freed, and the slice's countdown of frees ran out: the caller's
    /// housekeeping check is due, after which it re-arms the countdown with
    /// [`Heap::rearm_check`] (until then every free into the slice answers
    /// this).
    CheckDue,
}

// SAFETY: a heap is used by one thread at a time; the fronts guarantee it.
unsafe impl Send for Heap {}

/// A heap with no slices, never bound and never written: the heap a front's
/// fast paths read for a thread that has none yet, so that they need no null
/// test. Its direct table holds only the empty slice (every allocation falls
/// to the slow path), no slice names it as owner (every free falls to the
/// slow path), and [`Heap::is_unbound`] holds, so that a slow path can tell
/// it from the thread's own heap. With the `std` feature only: the fronts
/// that keep a heap per thread need it, and a kernel module would carry
/// its few kilobytes unused.
#[cfg(feature = "std")]
pub static EMPTY_HEAP: EmptyHeap = EmptyHeap(Heap::new());

/// [`EMPTY_HEAP`]'s type: a [`Heap`] that is only ever read.
#[cfg(feature = "std")]
pub struct EmptyHeap(Heap);

// SAFETY: the empty heap is only ever read, through `&Heap` methods that
// write nothing of the heap itself (only slices it owns, and it owns none).
#[cfg(feature = "std")]
unsafe impl Sync for EmptyHeap {}

#[cfg(feature = "std")]
impl EmptyHeap {
    /// The heap's address, for a front's per-thread pointer. Nothing may be
    /// written through it.
    pub const fn as_ptr(&'static self) -> *mut Heap {
        &self.0 as *const Heap as *mut Heap
    }
}

impl Default for Heap {
    fn default() -> Self {
        Self::new()
    }
}

impl Heap {
    /// An empty heap, bound to no domain yet.
    pub const fn new() -> Self {
        Self {
            direct: [empty(); DIRECT_ENTRIES],
            direct8: [empty(); DIRECT8_ENTRIES],
            current: [empty(); CLASS_COUNT],
            parked: [ptr::null_mut(); CLASS_COUNT],
            owned: [NO_OWNED_SLICE; OWNED_SLICES],
            domain: 0,
            key: 0,
            link_key: 0,
            random: 0,
            pending: [ptr::null_mut(); PENDING],
            pending_len: 0,
            chains: [RemoteBatch::EMPTY; PENDING_CHAINS],
            chains_len: 0,
            counters: Counters { remote_frees: 0, flushes: 0 },
            remote: [RemoteBatch::EMPTY; REMOTE_BATCHES],
            batching: false,
            check_interval: MAX_COUNTDOWN,
        }
    }

    /// Has the heap batch its remote frees (see [`REMOTE_BATCH`]): up to 32
    /// objects of one slice go onto its remote list with one
    /// compare-and-swap, instead of one each, but the slice's owner sees
    /// them only once the batch is pushed (when it fills, when its entry is
    /// needed, or when the heap is flushed or released). Off by default.
    /// For a front whose threads each keep their heap (the std front, the
    /// malloc shim); a front that picks a heap per call (`SharedStrata`)
    /// leaves it off, so that a block freed through one heap is seen at
    /// once by the heap that allocates next. Turning it off pushes what the
    /// heap holds (`domain` is the heap's own).
    pub fn set_remote_batching<S: PageSource, L: RawLock>(&mut self, domain: &Domain<S, L>, on: bool) {
        if !on && self.domain == domain.id() {
            self.flush_remote(domain);
        }
        self.batching = on;
    }

    /// Sets how many fast-path frees into one slice come between two
    /// housekeeping checks ([`Heap::free_owned_counted`]) on the slices the
    /// heap receives from now on (1 to [`MAX_COUNTDOWN`], the default; other
    /// values are clamped). A front that keeps no such check leaves the
    /// default.
    pub fn set_check_interval(&mut self, frees: u16) {
        self.check_interval = frees.clamp(1, MAX_COUNTDOWN);
    }

    /// Re-arms the housekeeping countdown of the slice that holds `ptr` with
    /// `frees` frees (clamped as in [`Heap::set_check_interval`]), if the
    /// heap still owns that slice and lists it; does nothing otherwise (a
    /// slice given back meanwhile is re-armed by the next heap that
    /// receives it). Reads nothing through `ptr`: only the heap's own table.
    pub fn rearm_check(&self, ptr: *mut u8, frees: u16) {
        let address = ptr as usize;
        let entry = self.owned[owned_index(address)];
        if address.wrapping_sub(entry.address) < SLICE_SIZE {
            // SAFETY: a listed slice is this heap's, its descriptor live.
            unsafe { (*entry.meta).arm_countdown(frees) };
        }
    }

    /// Re-arms the countdown of every slice the heap owns with `frees`
    /// frees: for a front whose checks must come sooner from now on.
    pub fn rearm_checks(&self, frees: u16) {
        self.for_each_owned(|slice| slice.arm_countdown(frees));
    }

    /// Runs `f` on every slice the heap owns: current, then parked, class
    /// by class. `f` must not change which slices the heap owns.
    fn for_each_owned(&self, mut f: impl FnMut(&SliceMeta)) {
        for class in 0..CLASS_COUNT {
            let current = self.current[class];
            if current != empty() {
                // SAFETY: an owned slice.
                f(unsafe { &*current });
            }
            let mut parked = self.parked[class];
            while !parked.is_null() {
                // SAFETY: parked entries are owned slices; `next` is read
                // after `f`, which leaves the parked list alone.
                unsafe {
                    f(&*parked);
                    parked = (*parked).next.get();
                }
            }
        }
    }

    /// Whether the heap serves `domain` (is bound to it and not retired).
    #[inline(always)]
    pub fn serves<S: PageSource, L: RawLock>(&self, domain: &Domain<S, L>) -> bool {
        self.domain == domain.id()
    }

    /// Whether the heap has not served any domain yet.
    pub fn is_unbound(&self) -> bool {
        self.domain == 0
    }

    /// Binds an unbound heap to `domain`. Fronts that must prepare per-thread
    /// clean-up call this before first use; otherwise the first allocation
    /// binds the heap.
    pub fn bind<S: PageSource, L: RawLock>(&mut self, domain: &Domain<S, L>) {
        if self.domain == 0 {
            self.domain = domain.id();
            self.key = domain.key();
            self.link_key = domain.link_key();
            self.random = domain.random() | 1;
        }
    }

    /// The next word of the heap's shuffle generator (xorshift64).
    fn next_random(&mut self) -> u64 {
        self.random = crate::slice::next_random(self.random);
        self.random
    }

    #[inline(always)]
    fn id(&self) -> usize {
        self as *const Self as usize
    }

    /// Lists a slice the heap has just received in `owned`, if its entry
    /// is free, and arms its countdown of frees.
    fn note_owned(&mut self, slice: &SliceMeta) {
        slice.arm_countdown(self.check_interval);
        let address = slice.address;
        let entry = &mut self.owned[owned_index(address)];
        if entry.address == NO_SLICE {
            *entry = OwnedSlice { address, meta: slice };
        }
    }

    /// Unlists a slice the heap is about to give back.
    fn forget_owned(&mut self, slice: &SliceMeta) {
        let address = slice.address;
        let entry = &mut self.owned[owned_index(address)];
        if entry.address == address {
            *entry = NO_OWNED_SLICE;
        }
    }

    /// Makes `slice` (an owned slice, or the empty sentinel) the current
    /// slice of `class`, in `current` and in the direct-table entries that
    /// map to the class.
    fn set_current(&mut self, class: usize, slice: *mut SliceMeta) {
        let class = class_index(class);
        self.current[class] = slice;
        let (first, end) = DIRECT_ENTRIES_OF[class];
        for entry in self.direct.iter_mut().take(end as usize).skip(first as usize) {
            *entry = slice;
        }
        let (first, end) = DIRECT8_ENTRIES_OF[class];
        for entry in self.direct8.iter_mut().take(end as usize).skip(first as usize) {
            *entry = slice;
        }
    }

    /// Allocates `layout`. Returns null when out of memory.
    #[inline(always)]
    pub fn alloc<S: PageSource, L: RawLock>(&mut self, domain: &Domain<S, L>, layout: Layout) -> *mut u8 {
        self.alloc_in(domain, layout, S::Context::default())
    }

    /// Allocates `layout` within the allocation context `context`: only a
    /// refill that maps memory looks at it. Returns null when out of memory.
    #[inline(always)]
    pub fn alloc_in<S: PageSource, L: RawLock>(
        &mut self,
        domain: &Domain<S, L>,
        layout: Layout,
        context: S::Context,
    ) -> *mut u8 {
        match class_of(layout.size(), layout.align()) {
            Some(class) => self.alloc_small_in(domain, class, context),
            None => domain.alloc_large(layout.size(), layout.align(), false, context),
        }
    }

    /// Allocates `layout`, zeroed.
    pub fn alloc_zeroed<S: PageSource, L: RawLock>(&mut self, domain: &Domain<S, L>, layout: Layout) -> *mut u8 {
        self.alloc_zeroed_in(domain, layout, S::Context::default())
    }

    /// Allocates `layout`, zeroed, within `context`.
    pub fn alloc_zeroed_in<S: PageSource, L: RawLock>(
        &mut self,
        domain: &Domain<S, L>,
        layout: Layout,
        context: S::Context,
    ) -> *mut u8 {
        match class_of(layout.size(), layout.align()) {
            Some(class) => {
                let object = self.alloc_small_in(domain, class, context);
                if !object.is_null() {
                    // SAFETY: the object is at least `layout.size()` bytes.
                    unsafe { ptr::write_bytes(object, 0, layout.size()) };
                }
                object
            }
            None => domain.alloc_large(layout.size(), layout.align(), true, context),
        }
    }

    /// Allocates one object of size class `class`.
    #[inline(always)]
    pub fn alloc_small<S: PageSource, L: RawLock>(&mut self, domain: &Domain<S, L>, class: usize) -> *mut u8 {
        self.alloc_small_in(domain, class, S::Context::default())
    }

    /// Allocates one object of size class `class` within `context`.
    #[inline(always)]
    pub fn alloc_small_in<S: PageSource, L: RawLock>(
        &mut self,
        domain: &Domain<S, L>,
        class: usize,
        context: S::Context,
    ) -> *mut u8 {
        if self.domain == domain.id() {
            // An out-of-range class finds no slice here and is clamped on
            // the slow path.
            let slice = self.current.get(class).copied().unwrap_or(empty());
            // SAFETY: `current` holds the sentinel or a slice this heap owns.
            let object = unsafe { self.pop(slice) };
            if !object.is_null() {
                return object;
            }
        }
        self.alloc_slow(domain, class, context)
    }

    /// Allocates `size` bytes aligned to 16, the malloc front's request:
    /// up to [`DIRECT_MAX`] bytes, the slice comes from the direct table,
    /// one load away. Returns null when out of memory.
    ///
    /// The fast path does not compare `domain` with the heap's: the direct
    /// table holds slices only once the heap is bound (its first slow path
    /// binds it), and a heap serves one domain for its life. A caller must
    /// therefore pass the same domain on every call, as the fronts do; a
    /// call with another domain is served from the bound one.
    #[inline(always)]
    pub fn alloc_aligned16<S: PageSource, L: RawLock>(&mut self, domain: &Domain<S, L>, size: usize) -> *mut u8 {
        let object = self.try_alloc_aligned16(size);
        if !object.is_null() {
            return object;
        }
        self.alloc_aligned16_slow(domain, size)
    }

    /// The fast path of [`Heap::alloc_aligned16`] alone: an object off the
    /// current slice's free list, or null when there is none at hand (the
    /// list is empty, `size` is above [`DIRECT_MAX`], or the heap is not
    /// bound yet); the caller then calls [`Heap::alloc_aligned16`].
    #[inline(always)]
    pub fn try_alloc_aligned16(&self, size: usize) -> *mut u8 {
        if size > DIRECT_MAX {
            return ptr::null_mut();
        }
        // SAFETY: `direct` holds the sentinel or slices this heap owns;
        // `direct_entry(size) < DIRECT_ENTRIES` since `size <= DIRECT_MAX`.
        unsafe { self.pop(*self.direct.get_unchecked(direct_entry(size))) }
    }

    #[cold]
    #[inline(never)]
    fn alloc_aligned16_slow<S: PageSource, L: RawLock>(&mut self, domain: &Domain<S, L>, size: usize) -> *mut u8 {
        if size <= DIRECT_MAX {
            // The fast path found nothing at hand: the slow path moves to
            // the next slice, or binds the heap.
            let class = DIRECT_CLASS.get(direct_entry(size)).copied().unwrap_or(0) as usize;
            return self.alloc_slow(domain, class, S::Context::default());
        }
        match Layout::from_size_align(size, 16) {
            Ok(layout) => self.alloc(domain, layout),
            Err(_) => ptr::null_mut(),
        }
    }

    /// The Rust front's allocation fast path: an object for `size` bytes
    /// aligned to `align` off the current slice's free list, through the
    /// 8-byte direct table, or null when there is none at hand or the
    /// request is not one the table serves exactly: up to [`DIRECT_MAX`]
    /// bytes, aligned to 8, or aligned to less with a size that is a
    /// multiple of 8 (so the class is the one [`class_of`] gives; a
    /// byte-aligned 17-byte request keeps its 18-byte class through the
    /// slow path). The caller then calls [`Heap::alloc`].
    ///
    /// Like [`Heap::try_alloc_aligned16`], it serves the domain the heap is
    /// bound to: the caller checks that it is the one it means
    /// ([`Heap::serves`]).
    #[inline(always)]
    pub fn try_alloc(&self, size: usize, align: usize) -> *mut u8 {
        if size > DIRECT_MAX || !(align == 8 || (align < 8 && size & 7 == 0)) {
            return ptr::null_mut();
        }
        // SAFETY: `direct8` holds the sentinel or slices this heap owns;
        // `direct8_entry(size) < DIRECT8_ENTRIES` since `size <= DIRECT_MAX`.
        unsafe { self.pop(*self.direct8.get_unchecked(direct8_entry(size))) }
    }

    /// Takes the first object off `slice`'s free list, or returns null when
    /// the list is empty or its head came from an overwritten link (the
    /// slow path then reports it, keeping the report out of the inlined
    /// code).
    ///
    /// # Safety
    /// `slice` must be the empty sentinel or a slice this heap owns.
    #[inline(always)]
    unsafe fn pop(&self, slice: *mut SliceMeta) -> *mut u8 {
        // SAFETY: the caller's contract: this heap holds the list, whose
        // links are encoded with its link key.
        unsafe { (*slice).take(self.link_key) as *mut u8 }
    }

    #[cold]
    #[inline(never)]
    fn alloc_slow<S: PageSource, L: RawLock>(
        &mut self,
        domain: &Domain<S, L>,
        class: usize,
        context: S::Context,
    ) -> *mut u8 {
        let class = class_index(class);
        self.bind(domain);
        if self.domain != domain.id() {
            return domain.alloc_uncached(class, context);
        }
        let current = self.current[class];
        // SAFETY: `current` holds the sentinel or a slice this heap owns.
        let slice = unsafe { &*current };
        // The fast path refused the head: report it if a link decoded from
        // an overwritten word put it there. A class out of range, now
        // clamped, also comes here with an object at the head: serve it
        // from the fast path.
        if slice.corrupt_head().is_some() {
            domain.corrupted_list(slice);
        }
        if slice.head_is_object(slice.free.get()) {
            return self.alloc_small_in(domain, class, context);
        }
        if current != empty() {
            // First the slice's untouched end, then what other threads gave
            // back. Carving first lets remote frees pile up, so one swap
            // takes many of them: draining a short list at every dry spell
            // makes the owner and the freeing threads fight over the list.
            // SAFETY: an owned slice with an empty free list.
            let random = self.next_random();
            // SAFETY: as above.
            if unsafe { (*current).carve(self.key, self.link_key, random) || collect_remote(domain, &*current) != 0 } {
                return self.alloc_small_in(domain, class, context);
            }
        }
        // Then a parked slice with objects freed since it was parked.
        if let Some(slice) = self.unpark_one_with_free(domain, class) {
            if current != empty() {
                self.park(class, current);
            }
            self.set_current(class, slice);
            return self.alloc_small_in(domain, class, context);
        }
        // Park the dry slice; give back the oldest when there are too many.
        let mut old = None;
        if current != empty() {
            if self.parked_len(class) == MAX_PARKED {
                // SAFETY: parked entries are owned slices.
                let oldest = unsafe { &*self.unpark_oldest(class) };
                // The refill gives it back, whether or not it finds a slice.
                self.forget_owned(oldest);
                old = Some(oldest);
            }
            self.park(class, current);
        }
        self.set_current(class, empty());
        // Frees this heap holds back for slices no heap owns go to the
        // domain with the refill, so that it can hand them out again.
        self.release_orphaned_batches(domain);
        match domain.refill(self, class, old, context) {
            Some(slice) => {
                // SAFETY: the domain handed the slice to this heap.
                self.note_owned(unsafe { slice.as_ref() });
                self.set_current(class, slice.as_ptr());
                self.alloc_small_in(domain, class, context)
            }
            None => ptr::null_mut(),
        }
    }

    /// Allocates `out.len()` blocks of `layout` in one call: the patent's
    /// *set of objects*, in the manner of `kmem_cache_alloc_bulk`. Small
    /// objects are taken straight off the current slice's free list, and the
    /// heap refills a slice at a time. All or nothing: returns `out.len()`
    /// with every entry set, or 0 when memory ran out, with every block taken
    /// on the way freed again and `out` left holding nulls.
    pub fn alloc_bulk_in<S: PageSource, L: RawLock>(
        &mut self,
        domain: &Domain<S, L>,
        layout: Layout,
        out: &mut [*mut u8],
        context: S::Context,
    ) -> usize {
        let Some(class) = class_of(layout.size(), layout.align()) else {
            for filled in 0..out.len() {
                let block = domain.alloc_large(layout.size(), layout.align(), false, context);
                if block.is_null() {
                    self.undo_bulk(domain, &mut out[..filled]);
                    return 0;
                }
                out[filled] = block;
            }
            return out.len();
        };
        let mut filled = 0;
        while filled < out.len() {
            if self.domain == domain.id() {
                let slice = self.current.get(class).copied().unwrap_or(empty());
                // SAFETY: `current` holds the sentinel or a slice this heap
                // owns; the sentinel's list is empty, so it is not written.
                let slice = unsafe { &*slice };
                let mut taken = 0;
                for entry in out[filled..].iter_mut() {
                    // SAFETY: as in `pop`. A head that is not an object
                    // (the list's end, or a corrupt link, which the slow
                    // path below reports) stops the run.
                    let object = unsafe { slice.take(self.link_key) };
                    if object.is_null() {
                        break;
                    }
                    *entry = object as *mut u8;
                    taken += 1;
                }
                if taken != 0 {
                    filled += taken;
                    continue;
                }
            }
            // The current slice is dry: one object through the slow path,
            // which moves the heap to its next slice.
            let object = self.alloc_slow(domain, class, context);
            if object.is_null() {
                self.undo_bulk(domain, &mut out[..filled]);
                return 0;
            }
            out[filled] = object;
            filled += 1;
        }
        out.len()
    }

    /// [`Heap::alloc_bulk_in`] in the default context.
    pub fn alloc_bulk<S: PageSource, L: RawLock>(
        &mut self,
        domain: &Domain<S, L>,
        layout: Layout,
        out: &mut [*mut u8],
    ) -> usize {
        self.alloc_bulk_in(domain, layout, out, S::Context::default())
    }

    /// Frees the blocks of a bulk allocation that could not be completed.
    fn undo_bulk<S: PageSource, L: RawLock>(&mut self, domain: &Domain<S, L>, taken: &mut [*mut u8]) {
        for block in taken.iter_mut() {
            // SAFETY: blocks this call just allocated and never handed out;
            // a failure here would be an allocator bug, and the block is then
            // left allocated rather than freed twice.
            let _ = unsafe { self.free(domain, *block) };
            *block = ptr::null_mut();
        }
    }

    /// Frees every block in `blocks`, in the manner of `kmem_cache_free_bulk`.
    /// A bad pointer is refused as [`Heap::free`] refuses it, and the others
    /// are still freed; the first error is returned.
    ///
    /// # Safety
    /// As for [`Heap::free`], for each block.
    pub unsafe fn free_bulk<S: PageSource, L: RawLock>(
        &mut self,
        domain: &Domain<S, L>,
        blocks: &[*mut u8],
    ) -> Result<(), FreeError> {
        let mut first = Ok(());
        for &block in blocks {
            // SAFETY: the caller's contract, block by block.
            if let Err(error) = unsafe { self.free(domain, block) } {
                if first.is_ok() {
                    first = Err(error);
                }
            }
        }
        first
    }

    /// Frees `ptr`, checking that it is a live allocation of `domain`.
    ///
    /// # Safety
    /// If `ptr` is a live allocation of `domain`, the caller must not use it
    /// afterwards. Any other pointer is rejected with an error, provided no
    /// other thread frees the same pointer concurrently.
    #[inline(always)]
    pub unsafe fn free<S: PageSource, L: RawLock>(
        &mut self,
        domain: &Domain<S, L>,
        ptr: *mut u8,
    ) -> Result<(), FreeError> {
        // SAFETY: the caller's contract.
        if unsafe { self.free_owned(domain, ptr) } {
            return Ok(());
        }
        self.free_slow(domain, ptr as usize)
    }

    /// The free fast path: frees `ptr` if it is a live small object of a
    /// slice this heap owns, and returns `true`; returns `false`, having
    /// changed nothing, for every other pointer, which the caller then
    /// passes to [`Heap::free`] (its slow path validates the pointer in
    /// full, frees remotely, and reports misuse).
    ///
    /// The checks, cheapest order first: the pointer's slice must be listed
    /// in the heap's own table of the slices it owns ([`OWNED_SLICES`]
    /// entries: a pointer Strata never handed out, or one of another heap
    /// or domain, is refused before anything is read through it, without
    /// asking the page source; a listed slice is formatted for a small
    /// class), the pointer must be a carved object boundary, and the object
    /// must not carry the free marker (a double free). `domain` is the
    /// heap's own; the fast path does not need it.
    ///
    /// # Safety
    /// As for [`Heap::free`].
    #[inline(always)]
    pub unsafe fn free_owned<S: PageSource, L: RawLock>(&self, domain: &Domain<S, L>, ptr: *mut u8) -> bool {
        // SAFETY: the caller's contract.
        unsafe { self.free_owned_in::<S, L, false>(domain, ptr) != OwnedFree::Refused }
    }

    /// [`Heap::free_owned`] for a front that keeps a housekeeping check:
    /// the same frees, and besides a countdown of frees into each slice
    /// (armed with the heap's [`Heap::set_check_interval`] when the heap
    /// receives the slice), kept in the same word as the slice's count of
    /// objects in use, so that both cost one subtraction. When it runs out,
    /// the answer is [`OwnedFree::CheckDue`]: the caller makes its check,
    /// then re-arms with [`Heap::rearm_check`].
    ///
    /// # Safety
    /// As for [`Heap::free`].
    #[inline(always)]
    pub unsafe fn free_owned_counted<S: PageSource, L: RawLock>(&self, domain: &Domain<S, L>, ptr: *mut u8) -> OwnedFree {
        // SAFETY: the caller's contract.
        unsafe { self.free_owned_in::<S, L, true>(domain, ptr) }
    }

    /// The body of [`Heap::free_owned`] (`COUNTDOWN` false: the slice's
    /// countdown is left alone, and the answer is never
    /// [`OwnedFree::CheckDue`]) and [`Heap::free_owned_counted`] (true).
    ///
    /// # Safety
    /// As for [`Heap::free`].
    #[inline(always)]
    unsafe fn free_owned_in<S: PageSource, L: RawLock, const COUNTDOWN: bool>(
        &self,
        domain: &Domain<S, L>,
        ptr: *mut u8,
    ) -> OwnedFree {
        let _ = domain; // The heap's own: see above.
        let address = ptr as usize;
        // SAFETY: the index is reduced modulo the table's length.
        let entry = unsafe { *self.owned.get_unchecked(owned_index(address)) };
        // The pointer's offset in the entry's slice, and at once the test
        // that it lies in that slice. An unused entry ([`NO_SLICE`]) passes
        // only for addresses below 64 KiB, and then names the empty slice,
        // which has no carved object: the boundary test below refuses them.
        let offset = address.wrapping_sub(entry.address);
        if offset >= SLICE_SIZE {
            return OwnedFree::Refused;
        }
        // SAFETY: a listed slice is this heap's, its descriptor live; an
        // unused entry names the empty slice, a static.
        let slice = unsafe { &*entry.meta };
        // An owned slice is formatted for a small class: the pointer must be
        // an object boundary (a multiple of the object size from the slice's
        // start) among the objects carved so far, the only ones ever handed
        // out.
        let offset = offset as u32;
        // SAFETY: the heap owns the slice, so only it writes these fields
        // now (carving), and its own writes are ordered before these reads:
        // plain reads race with no write.
        let (multiplier, limit) = unsafe { (slice.multiplier.read_owned(), slice.carved_limit.read_owned()) };
        if !is_carved_object(offset, multiplier, limit) {
            return OwnedFree::Refused;
        }
        let object = address as *mut FreeObject;
        let marker = FreeObject::marker_of(self.key);
        // SAFETY: a carved object of an owned slice: at least 16 bytes,
        // and this heap alone touches the slice's free list.
        unsafe {
            if FreeObject::marker(object) == marker {
                return OwnedFree::Refused;
            }
            FreeObject::set_marker(object, marker);
            FreeObject::set_next(object, slice.free.get(), self.link_key);
        }
        slice.free.set(object);
        if !COUNTDOWN {
            slice.count_returned();
            OwnedFree::Freed
        } else if slice.count_freed() {
            OwnedFree::CheckDue
        } else {
            OwnedFree::Freed
        }
    }

    /// Frees the object at `address` of `slice`, which [`Domain::lookup`]
    /// found live (without the free marker): marks it and gives it back, to
    /// the slice's free list if this heap owns the slice, else remotely
    /// (batched, if the heap batches, whether or not the slice has an
    /// owner).
    ///
    /// # Safety
    /// `address` must be a carved object boundary of `slice`, a formatted
    /// slice of `domain`, that `lookup` has just validated (it refuses an
    /// object that carries the marker), and the caller's contract of
    /// [`Heap::free`] holds.
    #[inline(always)]
    unsafe fn free_object<S: PageSource, L: RawLock>(
        &mut self,
        domain: &Domain<S, L>,
        slice: &SliceMeta,
        address: usize,
    ) -> Result<(), FreeError> {
        let object = address as *mut FreeObject;
        // SAFETY: a carved object of `slice`: at least 16 writable bytes.
        unsafe { FreeObject::set_marker(object, FreeObject::marker_of(self.key)) };
        let owner = slice.owner.load(Ordering::Relaxed);
        if owner == self.id() {
            // SAFETY: this heap owns the slice.
            unsafe { FreeObject::set_next(object, slice.free.get(), self.link_key) };
            slice.free.set(object);
            slice.set_used(slice.used() - 1);
            return Ok(());
        }
        if self.batching {
            // Whoever owns the slice when the batch goes out, if anyone,
            // receives it then (see `push_remote`).
            // SAFETY: the object is the caller's, freed and marked.
            unsafe { self.batch_remote(domain, slice, object) };
        } else if owner == 0 {
            // No heap owns the slice: the domain frees it under its lock
            // (which also copes with a heap that took the slice meanwhile).
            self.free_orphaned(domain, object);
        } else {
            // SAFETY: as above; a chain of one.
            unsafe { self.push_remote(domain, slice, object, object, 1) };
        }
        Ok(())
    }

    /// Adds a freed object of `slice`, a slice this heap does not own, to
    /// the heap's batch of remote frees for that slice, which goes onto the
    /// slice's remote list in one compare-and-swap
    /// ([`Heap::flush_batch`]) once it holds [`REMOTE_BATCH`] objects, or
    /// when a remote free of another slice needs its entry. A producer's
    /// objects reach a consumer mostly in the order they were carved, slice
    /// by slice (one slice per size class at a time), so most batches fill.
    ///
    /// # Safety
    /// `object` must be a freed, marked object of `slice`, the caller's
    /// alone.
    #[inline]
    unsafe fn batch_remote<S: PageSource, L: RawLock>(&mut self, domain: &Domain<S, L>, slice: &SliceMeta, object: *mut FreeObject) {
        let index = remote_batch_index(slice.address);
        // SAFETY: reduced modulo the table's length.
        let batch = unsafe { self.remote.get_unchecked_mut(index) };
        if !ptr::eq(batch.slice, slice) {
            let old = core::mem::replace(batch, RemoteBatch { slice, first: object, last: object, count: 1 });
            self.flush_batch(domain, old);
            return;
        }
        // SAFETY: the batch's objects are this heap's alone until pushed.
        unsafe { FreeObject::set_next(object, batch.first, self.link_key) };
        batch.first = object;
        batch.count += 1;
        if batch.count >= REMOTE_BATCH {
            let full = core::mem::replace(batch, RemoteBatch::EMPTY);
            self.flush_batch(domain, full);
        }
    }

    /// Takes out of the heap's table every batch of remote frees whose slice
    /// has no owner, for the domain ([`Heap::flush_batch`]): the refill
    /// that follows hands the chains over in its critical section, so a
    /// heap's own frees into slices it gave back are there to be handed out
    /// again before memory is mapped. Batches of owned slices stay open.
    fn release_orphaned_batches<S: PageSource, L: RawLock>(&mut self, domain: &Domain<S, L>) {
        for index in 0..REMOTE_BATCHES {
            let slice = self.remote[index].slice;
            // SAFETY: an open batch's slice is live (see `RemoteBatch`).
            if !slice.is_null() && unsafe { (*slice).owner.load(Ordering::Relaxed) } == 0 {
                let batch = core::mem::replace(&mut self.remote[index], RemoteBatch::EMPTY);
                self.flush_batch(domain, batch);
            }
        }
    }

    /// Pushes every batch of remote frees (see [`Heap::flush_batch`]). The
    /// fronts' flushes ([`Heap::flush`], [`Heap::release`]) come here first.
    pub(crate) fn flush_remote<S: PageSource, L: RawLock>(&mut self, domain: &Domain<S, L>) {
        for index in 0..REMOTE_BATCHES {
            let batch = core::mem::replace(&mut self.remote[index], RemoteBatch::EMPTY);
            self.flush_batch(domain, batch);
        }
    }

    /// Pushes `batch`, taken out of the heap's table, onto its slice's
    /// remote list, or, when the slice has no owner any more, hands its
    /// objects to the domain like any free into an orphaned slice.
    fn flush_batch<S: PageSource, L: RawLock>(&mut self, domain: &Domain<S, L>, batch: RemoteBatch) {
        if batch.slice.is_null() {
            return;
        }
        // SAFETY: a batch holds freed objects of one slice, linked from
        // `first` to `last`, this heap's alone; the slice is in use while
        // they count as used, so its descriptor is live.
        let slice = unsafe { &*batch.slice };
        if slice.owner.load(Ordering::Relaxed) == self.id() {
            // The heap has received the slice since: the batch goes onto
            // its free list directly.
            let walked = Walked { first: batch.first as *mut Link, last: batch.last as *mut Link, count: batch.count };
            // SAFETY: the heap owns the slice, and the batch is its own.
            unsafe { slice.take_walked(walked, self.link_key) };
            return;
        }
        // SAFETY: as above.
        unsafe { self.push_remote(domain, slice, batch.first, batch.last, batch.count) };
    }

    /// Pushes the chain of `count` freed objects of `slice`, `first` to
    /// `last`, onto the slice's remote list with one compare-and-swap, or,
    /// when the slice has no owner, keeps the chain for the domain
    /// ([`Heap::free_orphaned_chain`]); a chain of one object goes the way
    /// of any single free into an orphaned slice ([`PENDING`]).
    ///
    /// # Safety
    /// The chain's objects must be freed, marked objects of `slice`, this
    /// heap's alone, linked from `first` to `last` with the heap's link key
    /// (`last`'s own link is set here).
    unsafe fn push_remote<S: PageSource, L: RawLock>(
        &mut self,
        domain: &Domain<S, L>,
        slice: &SliceMeta,
        first: *mut FreeObject,
        last: *mut FreeObject,
        count: u32,
    ) {
        // SAFETY: the caller's contract.
        match unsafe { slice.remote.push_chain(first as *mut Link, last as *mut Link, count, self.link_key) } {
            Push::Pushed => self.counters.remote_frees += u64::from(count),
            Push::Orphaned if count == 1 => self.free_orphaned(domain, first),
            Push::Orphaned => self.free_orphaned_chain(domain, RemoteBatch { slice, first, last, count }),
        }
    }

    /// Keeps a chain of at least two freed objects of one slice, whose push
    /// found the slice orphaned, for the domain, which takes the chains
    /// under its lock every [`PENDING_CHAINS`] chains and splices each onto
    /// its slice's free list whole (`Domain::free_chain_pending`).
    #[cold]
    #[inline(never)]
    fn free_orphaned_chain<S: PageSource, L: RawLock>(&mut self, domain: &Domain<S, L>, chain: RemoteBatch) {
        // Invariant: `chains_len < PENDING_CHAINS` between calls (as for
        // `pending` in `free_orphaned`).
        debug_assert!(self.chains_len < PENDING_CHAINS && chain.count >= 2);
        if let Some(slot) = self.chains.get_mut(self.chains_len) {
            *slot = chain;
            self.chains_len += 1;
        }
        if self.chains_len >= PENDING_CHAINS {
            self.counters.flushes += 1;
            domain.flush_heap(self);
        }
    }

    /// Keeps a freed object whose slice no heap owns for the domain, which
    /// takes the batch under its lock every [`PENDING`] objects.
    #[cold]
    #[inline(never)]
    fn free_orphaned<S: PageSource, L: RawLock>(&mut self, domain: &Domain<S, L>, object: *mut FreeObject) {
        // Invariant: `pending_len < PENDING` between calls, so the slot
        // exists: `Domain::flush_heap` empties `pending` under the lock and
        // frees nothing through here (the batch of remote frees, whose
        // flush does, is pushed by the callers of `flush_heap` first).
        debug_assert!(self.pending_len < PENDING);
        if let Some(slot) = self.pending.get_mut(self.pending_len) {
            *slot = object;
            self.pending_len += 1;
        }
        if self.pending_len >= PENDING {
            self.counters.flushes += 1;
            domain.flush_heap(self);
        }
    }

    /// [`Heap::free`] for a pointer that [`Heap::free_owned`] just refused:
    /// the slow path alone, which validates the pointer in full, frees it
    /// remotely (or into a slice no heap owns), or reports misuse. Fronts
    /// that run `free_owned` themselves call this rather than
    /// [`Heap::free`], which would run the fast path's tests again.
    ///
    /// # Safety
    /// As for [`Heap::free`].
    ///
    /// The slow path's body is inlined here: fronts call this from a cold
    /// function of their own, which then holds the whole remote free with
    /// no further call.
    #[inline(always)]
    pub unsafe fn free_refused<S: PageSource, L: RawLock>(
        &mut self,
        domain: &Domain<S, L>,
        ptr: *mut u8,
    ) -> Result<(), FreeError> {
        self.free_slow_inline(domain, ptr as usize)
    }

    /// [`Heap::free_slow`], out of line, for [`Heap::free`].
    #[cold]
    #[inline(never)]
    fn free_slow<S: PageSource, L: RawLock>(&mut self, domain: &Domain<S, L>, address: usize) -> Result<(), FreeError> {
        self.free_slow_inline(domain, address)
    }

    /// Every free the fast path refuses. Its own body is the remote free
    /// of a live small object into an open batch of its slice, the common
    /// case of a thread that frees what others allocate, kept to a few
    /// loads and stores with no call; every other case leaves through a
    /// call of its own ([`Heap::free_unbound`], [`Heap::free_checked`],
    /// [`Heap::free_object_outlined`]).
    #[inline(always)]
    fn free_slow_inline<S: PageSource, L: RawLock>(&mut self, domain: &Domain<S, L>, address: usize) -> Result<(), FreeError> {
        if self.domain != domain.id() {
            return self.free_unbound(domain, address);
        }
        // The heap is bound to `domain`: its key is the domain's.
        // SAFETY: reduced modulo the table's length.
        let batch = unsafe { self.remote.get_unchecked_mut(remote_batch_index(address)) };
        // First, a free into the slice of an open batch with room for more
        // than this object (the one that fills it goes through
        // `batch_remote`, which pushes it). Only a heap that batches has
        // open batches. The slice was found to be a formatted slice of this
        // domain when its batch was opened, and stays so while the batch
        // holds its objects (they count as in use), so only the object's own
        // tests remain: a carved object boundary, without the free marker.
        // Whoever owns the slice by now, the batch's objects reach it when
        // the batch is pushed (see `flush_batch`).
        let open = batch.slice;
        if !open.is_null() && batch.count < REMOTE_BATCH - 1 {
            // SAFETY: an open batch's slice is live (see above).
            let slice = unsafe { &*open };
            // SAFETY: tested only for an address inside the live slice.
            if address.wrapping_sub(slice.address) < SLICE_SIZE
                && unsafe { slice.small_object(address, self.key) } == SmallObject::Live
            {
                let object = address as *mut FreeObject;
                // SAFETY: a live carved object, now the caller's to free: at
                // least 16 writable bytes. The batch's objects are this
                // heap's alone until pushed.
                unsafe {
                    FreeObject::set_marker(object, FreeObject::marker_of(self.key));
                    FreeObject::set_next(object, batch.first, self.link_key);
                }
                batch.first = object;
                batch.count += 1;
                return Ok(());
            }
        }
        // Any other pointer is validated in full.
        let Some(slice) = domain.live_small(address, self.key) else {
            return self.free_checked(domain, address);
        };
        // SAFETY: `live_small` validated the object boundary and found the
        // object live; the caller's contract.
        unsafe { self.free_object_outlined(domain, slice, address) }
    }

    /// [`Heap::free_object`], out of line for [`Heap::free_slow`].
    ///
    /// # Safety
    /// As for [`Heap::free_object`].
    #[inline(never)]
    unsafe fn free_object_outlined<S: PageSource, L: RawLock>(
        &mut self,
        domain: &Domain<S, L>,
        slice: &SliceMeta,
        address: usize,
    ) -> Result<(), FreeError> {
        // SAFETY: the caller's contract.
        unsafe { self.free_object(domain, slice, address) }
    }

    /// [`Heap::free_slow`] for an address that is not a live small object:
    /// a large allocation, or misuse, which the full lookup classifies.
    #[cold]
    #[inline(never)]
    fn free_checked<S: PageSource, L: RawLock>(&mut self, domain: &Domain<S, L>, address: usize) -> Result<(), FreeError> {
        match domain.lookup_with_key(address, self.key).map_err(FreeError::in_free)? {
            // SAFETY: `lookup` validated the object boundary and found the
            // object live.
            Lookup::Small { slice } => unsafe { self.free_object(domain, slice, address) },
            // SAFETY: the caller's contract.
            _ => unsafe { domain.free_large(address) },
        }
    }

    /// [`Heap::free_slow`] for a heap not bound to `domain`: binds it if it
    /// is bound to none, else frees without the cache.
    #[cold]
    #[inline(never)]
    fn free_unbound<S: PageSource, L: RawLock>(&mut self, domain: &Domain<S, L>, address: usize) -> Result<(), FreeError> {
        self.bind(domain);
        if self.domain != domain.id() {
            // SAFETY: the caller's contract.
            return unsafe { domain.free_uncached(address) };
        }
        self.free_slow(domain, address)
    }

    /// Resizes the allocation at `ptr` to `layout`, in place when its class
    /// (or span, or mapping) allows, else by moving it. Returns `Ok(null)`
    /// when out of memory, leaving the old allocation untouched.
    ///
    /// # Safety
    /// As for [`Heap::free`]; on success the old pointer must not be used
    /// unless it is the one returned.
    pub unsafe fn realloc<S: PageSource, L: RawLock>(
        &mut self,
        domain: &Domain<S, L>,
        ptr: *mut u8,
        layout: Layout,
    ) -> Result<*mut u8, FreeError> {
        // SAFETY: forwarded.
        unsafe { self.realloc_in(domain, ptr, layout, S::Context::default()) }
    }

    /// [`Heap::realloc`] within an allocation context.
    ///
    /// # Safety
    /// As for [`Heap::realloc`].
    pub unsafe fn realloc_in<S: PageSource, L: RawLock>(
        &mut self,
        domain: &Domain<S, L>,
        ptr: *mut u8,
        layout: Layout,
        context: S::Context,
    ) -> Result<*mut u8, FreeError> {
        let address = ptr as usize;
        let size = layout.size();
        let aligned = address.is_multiple_of(layout.align());
        let (usable, keep) = match domain.lookup(address)? {
            Lookup::Small { slice } => {
                let usable = slice.object_size.get() as usize;
                let same_class = class_of(size, layout.align()) == Some(slice.class.get() as usize);
                (usable, aligned && (same_class || (size <= usable && size > usable / 2)))
            }
            Lookup::Span { slice } => {
                let usable = slice.span.get() as usize * SLICE_SIZE;
                (usable, aligned && size <= usable && size > usable / 2 && size > MAX_SMALL)
            }
            Lookup::Huge { common } => {
                // The object runs to the end of its mapping.
                let usable = common.object_size();
                (usable, aligned && size <= usable && size >= usable / 2)
            }
        };
        if keep {
            return Ok(ptr);
        }
        if usable > MAX_SMALL {
            // Spans and huge blocks resize without a copy where they can.
            // SAFETY: the caller's contract.
            if let Some(resized) = unsafe { domain.resize_large(address, size, layout.align(), context) } {
                return Ok(resized);
            }
        }
        let moved = match domain.alloc_large_to_grow(usable, size, layout.align(), context) {
            Some(block) => block,
            None => self.alloc_in(domain, layout, context),
        };
        if moved.is_null() {
            return Ok(moved);
        }
        // SAFETY: both blocks hold at least the copied length and are distinct.
        unsafe {
            ptr::copy_nonoverlapping(ptr, moved, usable.min(size));
            self.free(domain, ptr)?;
        }
        Ok(moved)
    }

    /// Gives every slice and pending free back to `domain`. The heap can be
    /// used again afterwards unless `retire` is set, in which case later
    /// calls go straight to the domain without caching.
    pub fn release<S: PageSource, L: RawLock>(&mut self, domain: &Domain<S, L>, retire: bool) {
        if self.domain == domain.id() {
            domain.release_heap(self);
        }
        if retire {
            self.domain = RETIRED;
        }
    }

    /// Pushes the heap's batch of remote frees, collects remote frees on
    /// the current slices and hands pending frees and counters to the
    /// domain, keeping the slices.
    pub fn flush<S: PageSource, L: RawLock>(&mut self, domain: &Domain<S, L>) {
        if self.domain != domain.id() {
            return;
        }
        // First, so that a batch of frees into slices this heap owns by now
        // is counted free before the statistics are read.
        self.flush_remote(domain);
        // SAFETY: every slice passed is owned by this heap.
        self.for_each_owned(|slice| unsafe {
            collect_remote(domain, slice);
        });
        domain.flush_heap(self);
    }

    /// Takes the pending frees (objects and chains) and counters out of
    /// the heap.
    pub(crate) fn drain_pending(&mut self) -> Drained {
        let drained = Drained {
            objects: self.pending,
            object_count: self.pending_len,
            chains: self.chains,
            chain_count: self.chains_len,
            counters: self.counters,
        };
        self.pending_len = 0;
        self.chains_len = 0;
        self.counters = Counters::default();
        drained
    }

    /// Takes one owned slice of `class` out of the heap: the current one,
    /// then the parked ones. `None` once the heap owns none of the class.
    pub(crate) fn take_slice(&mut self, class: usize) -> Option<NonNull<SliceMeta>> {
        let class = class_index(class);
        let current = self.current[class];
        let taken = if current != empty() {
            self.set_current(class, empty());
            current
        } else if self.parked[class].is_null() {
            return None;
        } else {
            self.unpark_oldest(class)
        };
        // SAFETY: an owned slice.
        self.forget_owned(unsafe { &*taken });
        NonNull::new(taken)
    }

    /// How many slices of `class` are parked (at most [`MAX_PARKED`]; the
    /// list is walked, on the slow path only).
    fn parked_len(&self, class: usize) -> usize {
        let mut count = 0;
        let mut slice = self.parked[class_index(class)];
        while !slice.is_null() {
            count += 1;
            // SAFETY: parked entries are owned slices.
            slice = unsafe { (*slice).next.get() };
        }
        count
    }

    fn park(&mut self, class: usize, slice: *mut SliceMeta) {
        let class = class_index(class);
        // SAFETY: an owned slice; `next` is the heap's while it is CACHED.
        unsafe { (*slice).next.set(self.parked[class]) };
        self.parked[class] = slice;
    }

    /// Removes and returns the oldest parked slice of `class` (the list must
    /// not be empty).
    fn unpark_oldest(&mut self, class: usize) -> *mut SliceMeta {
        let class = class_index(class);
        let mut link: *mut *mut SliceMeta = &mut self.parked[class];
        // SAFETY: parked entries are owned slices; `link` always points at
        // the head or at a `next` field of one of them.
        unsafe {
            while !(*(**link).next.as_ptr()).is_null() {
                link = (**link).next.as_ptr();
            }
            let oldest = *link;
            *link = ptr::null_mut();
            (*oldest).next.set(ptr::null_mut());
            oldest
        }
    }

    /// Removes and returns a parked slice of `class` that has free objects,
    /// collecting remote frees on the way.
    fn unpark_one_with_free<S: PageSource, L: RawLock>(&mut self, domain: &Domain<S, L>, class: usize) -> Option<*mut SliceMeta> {
        let class = class_index(class);
        let mut link: *mut *mut SliceMeta = &mut self.parked[class];
        // SAFETY: as in `unpark_oldest`.
        unsafe {
            while !(*link).is_null() {
                let slice = &**link;
                collect_remote(domain, slice);
                if !slice.free_is_empty() || slice.carved.get() < slice.capacity.get() {
                    let found = *link;
                    *link = slice.next.get();
                    slice.next.set(ptr::null_mut());
                    return Some(found);
                }
                link = slice.next.as_ptr();
            }
        }
        None
    }
}

/// Moves the remote frees of an owned slice onto its free list; returns how
/// many there were. Into an empty free list, the remote list goes as it is,
/// in O(1): it ends with the slice's end marker, as a free list does, and
/// each of its links is checked when it becomes the head, as every free
/// list's are. In front of a non-empty one, it is walked to its last
/// object, and a corrupted link on the way is reported through `domain`.
///
/// # Safety
/// The calling heap must own `slice`.
unsafe fn collect_remote<S: PageSource, L: RawLock>(domain: &Domain<S, L>, slice: &SliceMeta) -> u32 {
    let taken = slice.remote.take(slice.address);
    if taken.count == 0 {
        return 0;
    }
    let key = domain.link_key();
    // SAFETY: taken in one swap: free objects of this slice, ours alone; the
    // caller owns the slice, so its free list is ours too.
    unsafe {
        if slice.free_is_empty() {
            slice.free.set(taken.first as *mut FreeObject);
            slice.set_used(slice.used() - taken.count);
        } else {
            let remote = Walked::walk(taken, key).unwrap_or_else(|object| domain.corrupted(object));
            slice.take_walked(remote, key);
        }
    }
    taken.count
}

#[cfg(all(test, feature = "mmap"))]
mod tests {
    use super::*;
    use crate::lock::SpinLock;
    use crate::page::USABLE_SLICES;
    use crate::size_class::objects_per_slice;
    use crate::source::MmapSource;

    extern crate std;
    use std::vec::Vec;

    type TestDomain = Domain<MmapSource, SpinLock>;

    fn domain() -> &'static TestDomain {
        std::boxed::Box::leak(std::boxed::Box::new(Domain::new(MmapSource::new())))
    }

    /// The slices the heap owns: current and parked.
    fn owned_slices(heap: &Heap) -> Vec<*mut SliceMeta> {
        let mut slices = Vec::new();
        for class in 0..CLASS_COUNT {
            if heap.current[class] != empty() {
                slices.push(heap.current[class]);
            }
            let mut parked = heap.parked[class];
            while !parked.is_null() {
                slices.push(parked);
                // SAFETY: parked entries are owned slices.
                parked = unsafe { (*parked).next.get() };
            }
        }
        slices
    }

    /// The invariant of `owned`: every listed slice is owned by the heap,
    /// at its own entry, with its own descriptor. Returns how many owned
    /// slices are not listed (their entry holds another).
    fn check_owned(heap: &Heap) -> usize {
        let slices = owned_slices(heap);
        for (index, entry) in heap.owned.iter().enumerate() {
            if entry.address == NO_SLICE {
                continue;
            }
            assert_eq!(owned_index(entry.address), index);
            assert!(slices.contains(&(entry.meta as *mut SliceMeta)), "entry {index} lists a slice the heap does not own");
            // SAFETY: an owned slice.
            assert_eq!(unsafe { (*entry.meta).address }, entry.address);
        }
        slices
            .iter()
            // SAFETY: owned slices.
            .filter(|&&slice| !core::ptr::eq(heap.owned[owned_index(unsafe { (*slice).address })].meta, slice))
            .count()
    }

    #[test]
    fn low_addresses_pass_the_slice_test_of_unused_entries_and_are_refused() {
        // An unused entry's address is 1, so addresses 1 to 64 KiB pass the
        // fast path's slice test against it; its descriptor, the empty
        // slice's, must then refuse them without being read as a real one.
        let domain = domain();
        let mut heap = Heap::new();
        let block = heap.alloc_small(domain, 0);
        assert!(!block.is_null());
        for address in [1usize, 2, 16, 0x1000, 0x8000, 0xfff0, 0x10000] {
            // SAFETY: the fast path reads nothing through a pointer whose
            // slice the heap does not list.
            assert!(!unsafe { heap.free_owned(domain, address as *mut u8) });
        }
        // SAFETY: a live block of this heap.
        assert!(unsafe { heap.free_owned(domain, block) });
        heap.release(domain, false);
    }

    // The head test is the hardened one: without hardening, any head but a
    // list end is taken.
    #[cfg(not(strata_unhardened))]
    #[test]
    fn only_a_head_inside_the_slice_is_taken() {
        let domain = domain();
        let mut heap = Heap::new();
        let block = heap.alloc_small(domain, 0);
        assert!(!block.is_null());
        let current = heap.current[0];
        // SAFETY: the heap's current slice, owned, its list ours.
        let slice = unsafe { &*current };
        let address = slice.address;
        assert_eq!(block as usize & !(SLICE_SIZE - 1), address);
        let head = slice.free.get();
        assert!(slice.head_is_object(head), "a carved list starts at an object");
        assert!(slice.head_is_object(address as *mut FreeObject));
        for refused in [slice.end() as usize, 1, address - 16, address + SLICE_SIZE, address ^ (1 << 40), 0] {
            assert!(!slice.head_is_object(refused as *mut FreeObject), "{refused:#x} taken as an object");
        }
        assert!(slice.corrupt_head().is_none());
        // A head decoded from an overwritten link: refused, and told apart
        // from an empty list, before anything is read through it.
        for corrupt in [address + SLICE_SIZE, address - 16, 0x1000] {
            slice.free.set(corrupt as *mut FreeObject);
            assert_eq!(slice.corrupt_head(), Some(corrupt));
            assert!(!slice.free_is_empty());
            // SAFETY: the heap owns the slice.
            assert!(unsafe { slice.take(heap.link_key) }.is_null());
        }
        slice.free.set(slice.end());
        assert!(slice.free_is_empty() && slice.corrupt_head().is_none());
        slice.free.set(head);
        // The empty sentinel's list is never taken from.
        // SAFETY: nothing is written through the sentinel when its head is refused.
        assert!(unsafe { (*empty()).take(heap.link_key) }.is_null());
        // SAFETY: a live block of this heap.
        unsafe { heap.free(domain, block).unwrap() };
        heap.release(domain, false);
    }

    #[test]
    fn the_countdown_of_frees_comes_due_and_is_re_armed() {
        let domain = domain();
        let mut heap = Heap::new();
        heap.set_check_interval(4);
        // One object stays live, so the frees below never empty the slice.
        let keep = heap.alloc_small(domain, 0);
        assert!(!keep.is_null());
        // SAFETY: the heap's current slice, owned.
        let slice = unsafe { &*heap.current[0] };
        let mut answers = Vec::new();
        for _ in 0..10 {
            let block = heap.alloc_small(domain, 0);
            assert_eq!(slice.used(), 2);
            // SAFETY: a live block of this heap.
            let answer = unsafe { heap.free_owned_counted(domain, block) };
            assert_eq!(slice.used(), 1, "the countdown never shows in the count of objects in use");
            if answer == OwnedFree::CheckDue {
                heap.rearm_check(block, 3);
            }
            answers.push(answer == OwnedFree::CheckDue);
        }
        // Armed with 4 when the heap received the slice, then with 3.
        let due: Vec<usize> = answers.iter().enumerate().filter(|(_, &due)| due).map(|(i, _)| i + 1).collect();
        assert_eq!(due, [4, 7, 10]);
        // Frees through `free_owned` leave the countdown alone.
        slice.set_used(slice.used());
        for _ in 0..10 {
            let block = heap.alloc_small(domain, 0);
            // SAFETY: a live block of this heap.
            assert!(unsafe { heap.free_owned(domain, block) });
        }
        let block = heap.alloc_small(domain, 0);
        // SAFETY: a live block of this heap.
        let answer = unsafe { heap.free_owned_counted(domain, block) };
        assert_eq!(answer, OwnedFree::Freed, "the countdown was re-armed with 3 and has had one free since");
        // Once due, every counted free answers so until re-armed; a
        // re-arm of a pointer in no slice the heap owns changes nothing.
        for _ in 0..2 {
            let block = heap.alloc_small(domain, 0);
            // SAFETY: a live block of this heap.
            let _ = unsafe { heap.free_owned_counted(domain, block) };
        }
        heap.rearm_check(0x1000 as *mut u8, 100);
        for _ in 0..3 {
            let block = heap.alloc_small(domain, 0);
            // SAFETY: a live block of this heap.
            assert_eq!(unsafe { heap.free_owned_counted(domain, block) }, OwnedFree::CheckDue);
        }
        assert_eq!(slice.used(), 1);
        // SAFETY: a live block of this heap.
        unsafe { heap.free(domain, keep).unwrap() };
        assert_eq!(slice.used(), 0);
        heap.release(domain, false);
    }

    #[test]
    fn remote_frees_wait_in_batches_and_are_all_counted_once_pushed() {
        let domain = domain();
        let mut owner = Heap::new();
        let mut other = Heap::new();
        other.bind(domain);
        other.set_remote_batching(domain, true);
        let blocks: Vec<*mut u8> = (0..40).map(|_| owner.alloc_small(domain, 0)).collect();
        assert!(blocks.iter().all(|block| !block.is_null()));
        // SAFETY: the owner's current slice.
        let slice = unsafe { &*owner.current[0] };
        assert_eq!(slice.used(), 40);
        for &block in &blocks[..31] {
            // SAFETY: live blocks, freed once, by a heap that does not own
            // their slice: remote frees.
            unsafe { other.free(domain, block).unwrap() };
        }
        // Held back: nothing on the remote list yet.
        // SAFETY: the owner's slice.
        assert_eq!(unsafe { collect_remote(domain, slice) }, 0);
        assert_eq!(slice.used(), 40);
        // The 32nd fills the batch, which goes out whole.
        // SAFETY: as above.
        unsafe { other.free(domain, blocks[31]).unwrap() };
        // SAFETY: the owner's slice.
        assert_eq!(unsafe { collect_remote(domain, slice) }, REMOTE_BATCH);
        assert_eq!(slice.used(), 8);
        // A freed block that waits in a batch is still caught as freed.
        for &block in &blocks[32..36] {
            // SAFETY: as above.
            unsafe { other.free(domain, block).unwrap() };
        }
        // SAFETY: a block freed just above: misuse the heap must refuse.
        let again = unsafe { other.free(domain, blocks[32]) };
        assert_eq!(again.unwrap_err().kind, crate::FreeErrorKind::DoubleFree);
        // So is a pointer into the open batch's slice that starts no
        // object: the batch's own shortcut tests the boundary too.
        // SAFETY: refused before anything is written through it.
        let interior = unsafe { other.free(domain, blocks[36].wrapping_add(8)) };
        assert_eq!(interior.unwrap_err().kind, crate::FreeErrorKind::NotAllocated);
        assert_eq!(slice.used(), 8, "nothing was freed by the refused calls");
        // The owner gives the slice back before the batch goes out: the
        // push is refused and the domain frees the blocks instead.
        owner.release(domain, false);
        assert_eq!(slice.used(), 8);
        other.flush(domain);
        assert_eq!(slice.used(), 4);
        for &block in &blocks[36..] {
            // SAFETY: the rest, freed once.
            unsafe { other.free(domain, block).unwrap() };
        }
        other.release(domain, false);
        assert_eq!(slice.used(), 0);
        assert_eq!(domain.stats().bytes_live, 0);
    }

    /// A slice a heap gave back, and the live blocks of it the heap had
    /// allocated.
    type GivenBack = (&'static SliceMeta, Vec<*mut u8>);

    /// Two heaps of `domain`, the second batching its remote frees, and
    /// the blocks of `class` the first allocated: enough slices' worth
    /// that at least [`PENDING_CHAINS`] slices went back to the domain
    /// full, with every object live. Returns the heaps, every block, and
    /// the slices given back with their blocks, in allocation order.
    fn slices_given_back_full(domain: &'static TestDomain, class: usize) -> (Heap, Heap, Vec<*mut u8>, Vec<GivenBack>) {
        let mut owner = Heap::new();
        let mut other = Heap::new();
        other.bind(domain);
        other.set_remote_batching(domain, true);
        let count = objects_per_slice(class) * (PENDING_CHAINS + MAX_PARKED + 2);
        let blocks: Vec<*mut u8> = (0..count).map(|_| owner.alloc_small(domain, class)).collect();
        assert!(blocks.iter().all(|block| !block.is_null()));
        let mut given_back: Vec<GivenBack> = Vec::new();
        for &block in &blocks {
            // SAFETY: a live object of a slab page of the domain.
            let slice = unsafe { crate::domain::slice_of(block as usize) };
            if slice.owner.load(Ordering::Relaxed) != 0 {
                continue;
            }
            match given_back.iter_mut().find(|(known, _)| ptr::eq(*known, slice)) {
                Some((_, objects)) => objects.push(block),
                None => given_back.push((slice, std::vec![block])),
            }
        }
        assert!(given_back.len() >= PENDING_CHAINS, "only {} slices given back", given_back.len());
        (owner, other, blocks, given_back)
    }

    #[test]
    fn batched_frees_into_slices_given_back_reach_the_domain_as_whole_chains() {
        let domain = domain();
        let (mut owner, mut other, blocks, mut given_back) = slices_given_back_full(domain, 12);
        // One chain fewer than the heap keeps: the flush hands them over.
        given_back.truncate(PENDING_CHAINS - 1);
        let capacity = given_back[0].0.capacity.get();
        // Twenty frees into each slice, slice after slice: each run waits in
        // its batch (neighbouring slices have batches of their own).
        let mut freed = Vec::new();
        let locks_before = domain.stats().lock_acquisitions;
        for (index, (slice, objects)) in given_back.iter().enumerate() {
            for &block in &objects[..20] {
                // SAFETY: live blocks, each freed once.
                unsafe { other.free(domain, block).unwrap() };
                freed.push(block);
            }
            // Nothing reaches any slice until the domain takes the chains.
            assert_eq!(slice.used(), capacity, "slice {index}");
        }
        // A freed block that waits in a chain is still caught as freed.
        // SAFETY: a block freed above: misuse the heap must refuse.
        let again = unsafe { other.free(domain, freed[0]) };
        assert_eq!(again.unwrap_err().kind, crate::FreeErrorKind::DoubleFree);
        assert!(given_back.iter().all(|(slice, _)| slice.used() == capacity));
        // (`stats` takes the lock once itself.)
        assert_eq!(domain.stats().lock_acquisitions, locks_before + 1, "the chains waited without the lock");
        // The flush pushes the batches, whose pushes find the slices
        // orphaned, and hands the chains over in one critical section.
        other.flush(domain);
        assert_eq!(domain.stats().lock_acquisitions, locks_before + 3);
        // Each slice's free list, empty before, now holds exactly the blocks
        // freed into it, and ends with the slice's end marker.
        for (slice, objects) in &given_back {
            assert_eq!(slice.used(), capacity - 20);
            assert_eq!(slice.owner.load(Ordering::Relaxed), 0);
            let mut listed = Vec::new();
            let mut object = slice.free.get();
            while slice.head_is_object(object) && listed.len() <= capacity as usize {
                listed.push(object as *mut u8);
                // SAFETY: a free object of a slice no heap owns; this test's
                // thread is the only one using the domain.
                object = unsafe { FreeObject::next(object, other.link_key) };
            }
            assert_eq!(object, slice.end());
            listed.sort_unstable();
            let mut expected = objects[..20].to_vec();
            expected.sort_unstable();
            assert_eq!(listed, expected);
        }
        for &block in blocks.iter().filter(|block| !freed.contains(block)) {
            // SAFETY: the remaining live blocks, freed once.
            unsafe { owner.free(domain, block).unwrap() };
        }
        owner.release(domain, false);
        other.release(domain, false);
        assert_eq!(domain.stats().bytes_live, 0);
    }

    #[test]
    fn full_chains_go_to_the_domain_once_the_heap_holds_as_many_as_it_keeps() {
        let domain = domain();
        let (mut owner, mut other, blocks, given_back) = slices_given_back_full(domain, 12);
        let capacity = given_back[0].0.capacity.get();
        let locks_before = domain.stats().lock_acquisitions;
        // A full batch goes out at once; its push finds the slice orphaned
        // and the heap keeps it, until it keeps `PENDING_CHAINS`.
        for (index, (slice, objects)) in given_back.iter().take(PENDING_CHAINS).enumerate() {
            for &block in &objects[..REMOTE_BATCH as usize] {
                // SAFETY: live blocks, each freed once.
                unsafe { other.free(domain, block).unwrap() };
            }
            // One acquisition by each `stats`, and one for the chains.
            let expected_locks = locks_before + index as u64 + 1 + u64::from(index + 1 == PENDING_CHAINS);
            assert_eq!(domain.stats().lock_acquisitions, expected_locks, "after slice {index}");
            assert_eq!(slice.used(), capacity - if index + 1 == PENDING_CHAINS { REMOTE_BATCH } else { 0 });
        }
        for (slice, _) in given_back.iter().take(PENDING_CHAINS) {
            assert_eq!(slice.used(), capacity - REMOTE_BATCH);
        }
        for (_, objects) in given_back.iter().take(PENDING_CHAINS) {
            for &block in &objects[REMOTE_BATCH as usize..] {
                // SAFETY: the rest of those slices' blocks, freed once.
                unsafe { other.free(domain, block).unwrap() };
            }
        }
        let freed: Vec<*mut u8> = given_back.iter().take(PENDING_CHAINS).flat_map(|(_, objects)| objects.iter().copied()).collect();
        for &block in blocks.iter().filter(|block| !freed.contains(block)) {
            // SAFETY: the remaining live blocks, freed once.
            unsafe { owner.free(domain, block).unwrap() };
        }
        other.release(domain, false);
        owner.release(domain, false);
        assert_eq!(domain.stats().bytes_live, 0);
    }

    #[test]
    fn owned_table_lists_only_slices_the_heap_owns() {
        let domain = domain();
        let mut heap = Heap::new();
        let classes = CLASS_COUNT - 9..CLASS_COUNT;
        // Fill three pages' worth of slices of each of the largest classes;
        // the slices the heap runs dry go back to the domain, full.
        let mut blocks: Vec<Vec<*mut u8>> = Vec::new();
        for class in classes.clone() {
            let count = objects_per_slice(class) * USABLE_SLICES * 3;
            blocks.push((0..count).map(|_| heap.alloc_small(domain, class)).collect());
            check_owned(&heap);
        }
        assert!(domain.stats().pages_mapped > 16);
        // Free one block of every slice: each becomes partial, in pages all
        // over the domain, and the heap takes them again one by one, owning
        // slices of many pages at once, some of them sharing an entry (the
        // same slice index in different pages).
        let mut freed = 0;
        for (blocks, class) in blocks.iter_mut().zip(classes.clone()) {
            for block in blocks.iter_mut().step_by(objects_per_slice(class)) {
                // SAFETY: a live block of this heap's domain.
                unsafe { heap.free(domain, *block) }.unwrap();
                *block = ptr::null_mut();
                freed += 1;
            }
        }
        let mut unlisted_seen = 0;
        for (blocks, class) in blocks.iter_mut().zip(classes.clone()) {
            for block in blocks.iter_mut().filter(|block| block.is_null()) {
                *block = heap.alloc_small(domain, class);
                assert!(!block.is_null());
                unlisted_seen += check_owned(&heap);
            }
        }
        assert!(freed > 0);
        assert!(unlisted_seen > 0, "the test never had two owned slices share an entry");
        for block in blocks.into_iter().flatten() {
            // SAFETY: live blocks of this heap's domain.
            unsafe { heap.free(domain, block) }.unwrap();
            check_owned(&heap);
        }
        heap.release(domain, false);
        assert!(heap.owned.iter().all(|entry| entry.address == NO_SLICE));
        assert_eq!(domain.stats().bytes_live, 0);
    }

    #[test]
    fn a_block_of_a_slice_given_back_is_freed_through_the_slow_path() {
        let domain = domain();
        let mut heap = Heap::new();
        let class = 10;
        let first = heap.alloc_small(domain, class);
        // Run through more slices than the heap keeps, so the first one goes
        // back to the domain while `first` is live.
        let mut others = Vec::new();
        for _ in 0..objects_per_slice(class) * (MAX_PARKED + 3) {
            others.push(heap.alloc_small(domain, class));
        }
        // `first` is live; its slice is no longer the heap's.
        // SAFETY: `first` is a live object of a slab page of the domain,
        // which stays mapped while the object is live (to its free below).
        let first_slice = unsafe { crate::domain::slice_of(first as usize) };
        assert_ne!(first_slice.owner.load(Ordering::Relaxed), heap.id());
        // SAFETY: a live block of this domain.
        assert!(!unsafe { heap.free_owned(domain, first) });
        unsafe { heap.free(domain, first) }.unwrap();
        // A second free of it is refused, not taken.
        let error = unsafe { heap.free(domain, first) }.unwrap_err();
        assert_eq!(error.kind, crate::domain::FreeErrorKind::DoubleFree);
        for block in others {
            // SAFETY: live blocks of this domain.
            unsafe { heap.free(domain, block) }.unwrap();
        }
        heap.release(domain, false);
        assert_eq!(domain.stats().bytes_live, 0);
    }

    #[test]
    fn a_refill_takes_the_domain_lock_once_when_no_purge_check_is_due() {
        let domain = domain();
        // No check for the delayed purge falls due within this delay.
        domain.set_purge_delay_ms(u64::MAX);
        let mut heap = Heap::new();
        // The largest class: two objects a slice, so a refill every second
        // allocation, all within the first page (no page mapped meanwhile).
        let class = CLASS_COUNT - 1;
        assert_eq!(objects_per_slice(class), 2);
        let count = USABLE_SLICES;
        let mut blocks = Vec::from([heap.alloc_small(domain, class)]);
        let before = domain.stats();
        blocks.extend((0..count).map(|_| heap.alloc_small(domain, class)));
        let after = domain.stats();
        assert!(blocks.iter().all(|block| !block.is_null()));
        assert_eq!(after.pages_mapped, before.pages_mapped);
        let refills = after.refills - before.refills;
        assert!(refills >= (count / 2) as u64, "{refills} refills for {count} blocks");
        // One acquisition per refill, and the second `stats`'s own.
        assert_eq!(after.lock_acquisitions - before.lock_acquisitions, refills + 1);
        for block in blocks {
            // SAFETY: live blocks of this domain.
            unsafe { heap.free(domain, block) }.unwrap();
        }
        heap.release(domain, false);
        assert_eq!(domain.stats().bytes_live, 0);
    }
}
