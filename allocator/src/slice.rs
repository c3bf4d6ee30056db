//! Slices: the unit that carries a state and a size class.
//!
//! A `SliceMeta` is the descriptor of one slice. Descriptors live in the page
//! header, never in the slice, so object memory holds nothing but objects and
//! free-list links. The state machine itself (which list a slice sits on, what
//! each transition updates) is in `domain.rs`, in `Domain::transition`; this
//! module only defines the states and the descriptor.

use core::cell::Cell;
use core::num::NonZeroU32;
use core::ops::Range;
use core::ptr;
use core::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use crate::domain::{FreeError, FreeErrorKind};
use crate::remote::{Link, RemoteList, Walked, LINK_REGION, ORPHAN};
use crate::page::SLICE_SIZE;
use crate::size_class::is_carved_object;

/// The state of a slice. See the state table in the crate documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SliceState {
    /// Never used for allocation since the page was mapped.
    Clean,
    /// Holds live objects, fewer than the full threshold.
    Partial,
    /// Holds at least the full threshold of live objects, or is part of a
    /// multi-slice span.
    Full,
    /// Holds no live object but was used; remembers its last class.
    Dirty,
}

bitflags::bitflags! {
    /// Flags that combine with a [`SliceState`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct SliceFlags: u8 {
        /// A dirty slice whose memory went back to the page source. Its
        /// allocation cost is that of a clean slice; it is still not clean.
        const PURGED = 1 << 0;
        /// Owned by a heap (a thread or CPU cache) and on no domain list.
        const CACHED = 1 << 1;
        /// First slice of a multi-slice span.
        const SPAN_HEAD = 1 << 2;
        /// A following slice of a multi-slice span.
        const SPAN_TAIL = 1 << 3;
        /// Being purged outside the domain lock; on no list.
        const PURGING = 1 << 4;
        /// With `PURGED` only: the purge left the slice's memory reading as
        /// zero (the page source said so), so a span laid over it for a
        /// zeroed request needs no clearing. Dropped with `PURGED`
        /// (`Inner::transition` keeps it only beside `PURGED`).
        const ZEROED = 1 << 5;
    }
}

/// Which list a slice no heap owns is linked on. The partial and dirty
/// lists are the files of the slice's own page (`PageHeader::file_first`),
/// which the domain finds through its lists of pages by class and bucket;
/// a bucket change moves the page, not its slices, so no bucket is
/// recorded here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Linked {
    /// On no list.
    None,
    /// The page's partial file of `class` (`page::partial_file`).
    Partial { class: u8 },
    /// The domain's `full[class]`.
    Full { class: u8 },
    /// The page's dirty file of `class` (`page::dirty_file`; `SPAN_CLASS`
    /// for spans), and the purge age list.
    Dirty { class: u8 },
}

/// A free object: its [`Link`] (the encoded next free object), followed by
/// the free marker (the domain's random marker key, see
/// [`FreeObject::marker_of`]) that makes double frees detectable.
///
/// Objects of the small classes (18, 20, 22 … bytes) are only 2- or 4-byte
/// aligned, so both words are always read and written unaligned, through the
/// functions below, never through a reference.
#[repr(C)]
pub(crate) struct FreeObject {
    pub(crate) link: Link,
    pub(crate) marker: usize,
}

impl FreeObject {
    /// The next free object of a slice's free list as decoded, unchecked:
    /// an object of the same slice or the slice's end marker, unless the
    /// link was overwritten. Whoever makes it a list's head checks it before
    /// reading through it ([`SliceMeta::head_is_object`]).
    ///
    /// # Safety
    /// `this` must point to a readable object of at least 16 bytes.
    #[inline(always)]
    pub(crate) unsafe fn next(this: *mut Self, key: usize) -> *mut Self {
        // SAFETY: the caller guarantees 16 readable bytes; no alignment needed.
        unsafe { Link::next(this.cast::<Link>(), key) as *mut Self }
    }

    /// Asks the processor to bring `this`'s cache line in, so that the next
    /// allocation from the list finds its head's link, and the marker it
    /// clears, in the cache instead of waiting for memory: frees in a
    /// random order, a remote free or a long idle spell leave a free
    /// object's line cold. A hint only, which never faults, so any address
    /// will do, the end marker or a corrupt link included; a no-op where no
    /// instruction is used for it (other architectures, and Miri).
    ///
    /// `prefetcht0`, which every x86-64 processor has (the kernel included),
    /// rather than `prefetchw`, which only some do.
    #[inline(always)]
    pub(crate) fn prefetch(this: *mut Self) {
        #[cfg(all(target_arch = "x86_64", not(miri)))]
        // SAFETY: a prefetch changes no memory, no register but its
        // address operand's (read only) and no flag, and raises no fault,
        // whatever the address.
        unsafe {
            core::arch::asm!("prefetcht0 [{0}]", in(reg) this, options(readonly, nostack, preserves_flags));
        }
        #[cfg(not(all(target_arch = "x86_64", not(miri))))]
        let _ = this;
    }

    /// Sets the next free object (or the end marker), encoded with `key`.
    ///
    /// # Safety
    /// `this` must point to a writable object of at least 16 bytes.
    #[inline(always)]
    pub(crate) unsafe fn set_next(this: *mut Self, next: *mut Self, key: usize) {
        // SAFETY: as above.
        unsafe { Link::set_next(this.cast::<Link>(), next as usize, key) }
    }

    /// The free marker word.
    ///
    /// # Safety
    /// As for [`FreeObject::next`].
    #[inline(always)]
    pub(crate) unsafe fn marker(this: *mut Self) -> usize {
        // SAFETY: as above; the marker is the second word.
        unsafe { ptr::read_unaligned(this.cast::<usize>().wrapping_add(1)) }
    }

    /// The free marker every free object carries, for the domain's marker
    /// key `key`: the key itself. A handed-out object has 0 there (the
    /// allocation clears it, and the key is never 0), so a free finds the
    /// marker only on an object that is free already. The key is random and
    /// not derived from the link key, so reading a freed object's marker
    /// tells nothing about its link's encoding (see [`Link`]).
    ///
    /// One word for every object, rather than one mixed with the address:
    /// the fast path compares and stores it as loaded, with no arithmetic.
    #[inline(always)]
    pub(crate) fn marker_of(key: usize) -> usize {
        key
    }

    /// Marks the object at `address` freed, with the free marker
    /// ([`FreeObject::marker_of`]), or reports a double free if it carries
    /// that marker already.
    ///
    /// # Safety
    /// `address` must be a carved object of a formatted slice.
    #[inline(always)]
    pub(crate) unsafe fn mark_freed(address: usize, key: usize) -> Result<*mut Self, FreeError> {
        let object = address as *mut Self;
        let marker = Self::marker_of(key);
        // SAFETY: carved objects hold at least 16 writable bytes.
        unsafe {
            if Self::marker(object) == marker {
                return Err(FreeError::new(FreeErrorKind::DoubleFree, address));
            }
            Self::set_marker(object, marker);
        }
        Ok(object)
    }

    /// Sets the free marker word (0 when the object is handed out).
    ///
    /// # Safety
    /// As for [`FreeObject::set_next`].
    #[inline(always)]
    pub(crate) unsafe fn set_marker(this: *mut Self, marker: usize) {
        // SAFETY: as above.
        unsafe { ptr::write_unaligned(this.cast::<usize>().wrapping_add(1), marker) }
    }
}

/// A descriptor field that one side writes (the slice's holder, or the
/// domain under its lock) while other threads may read it without that lock
/// (frees and pointer look-ups on any thread).
///
/// Loads and stores are `Relaxed`: plain moves on x86 and most other targets,
/// no read-modify-write. Relaxed is enough because nothing is published
/// through these fields: whoever acts on a value they read (frees an object
/// of the slice, resizes it) was handed that object after it was formatted
/// and carved, through a chain of happens-before edges (the domain lock, the
/// owner's allocation, the caller's own hand-over of the pointer), so it
/// reads the value of that time or a later one. Reads made for a pointer
/// that is not a live allocation may see any value; they only decide whether
/// the pointer is refused. Each field's comment names the edge it relies on.
macro_rules! relaxed_field {
    ($(#[$doc:meta])* $name:ident, $atomic:ty, $value:ty, |$raw:ident| $from:expr, |$v:ident| $to:expr) => {
        $(#[$doc])*
        #[repr(transparent)]
        pub(crate) struct $name($atomic);

        impl $name {
            pub(crate) const fn new($v: $value) -> Self {
                Self(<$atomic>::new($to))
            }

            /// Relaxed load.
            #[inline(always)]
            pub(crate) fn get(&self) -> $value {
                let $raw = self.0.load(Ordering::Relaxed);
                $from
            }

            /// Relaxed store.
            #[inline(always)]
            pub(crate) fn set(&self, $v: $value) {
                self.0.store($to, Ordering::Relaxed)
            }

            /// A plain (non-atomic) load, which the compiler may fold into
            /// the instruction that uses it.
            ///
            /// # Safety
            /// No other thread may write the field concurrently: the caller
            /// is the only writer (the slice's owner reading a field only it
            /// writes while it owns the slice), or holds the lock that
            /// orders every write.
            #[allow(dead_code)]
            #[inline(always)]
            pub(crate) unsafe fn read_owned(&self) -> $value {
                // SAFETY: the caller's contract: no write races with this
                // read (concurrent atomic reads by others are no race).
                let $raw = unsafe { self.0.as_ptr().read() };
                $from
            }
        }
    };
}

relaxed_field!(
    /// A `u32` descriptor field read across threads (see `relaxed_field!`).
    RelaxedU32, AtomicU32, u32, |raw| raw, |value| value
);
relaxed_field!(
    /// A `u64` descriptor field read across threads (see `relaxed_field!`).
    RelaxedU64, AtomicU64, u64, |raw| raw, |value| value
);
relaxed_field!(
    /// A `u16` descriptor field read across threads (see `relaxed_field!`).
    RelaxedU16, AtomicU16, u16, |raw| raw, |value| value
);
relaxed_field!(
    /// A `u8` descriptor field read across threads (see `relaxed_field!`).
    RelaxedU8, AtomicU8, u8, |raw| raw, |value| value
);
relaxed_field!(
    /// A [`SliceState`] read across threads (see `relaxed_field!`).
    RelaxedState, AtomicU8, SliceState, |raw| SliceState::from_u8(raw), |state| state as u8
);
relaxed_field!(
    /// [`SliceFlags`] read across threads (see `relaxed_field!`).
    RelaxedFlags, AtomicU8, SliceFlags, |raw| SliceFlags::from_bits_retain(raw), |flags| flags.bits()
);

impl SliceState {
    /// The state stored as `raw` by [`RelaxedState`]. Total (no panic
    /// path): only the four discriminants are ever stored.
    #[inline(always)]
    const fn from_u8(raw: u8) -> Self {
        match raw {
            0 => SliceState::Clean,
            1 => SliceState::Partial,
            2 => SliceState::Full,
            _ => SliceState::Dirty,
        }
    }
}

/// A zero-sized field that starts a new cache line in a `repr(C)` struct.
#[derive(Default)]
#[repr(C, align(64))]
pub(crate) struct CacheLine;

/// Descriptor of one slice.
///
/// Three groups, each on its own cache lines, so that threads do not fight
/// over lines they do not need: the owner writes the first group on every
/// allocation and free; every free reads the second; remote frees write the
/// third.
///
/// Every field that some thread reads or writes while another may write it
/// without a lock in common is atomic (`used`, `owner`, the `Relaxed*`
/// fields, the remote list); each says which ordering it relies on. The
/// `Cell` fields are touched only by the slice's holder: the owning heap
/// while `CACHED` is set, else the domain-lock holder; the lock orders the
/// hand-overs between them. The one exception is `free` (and `used`), which
/// the owner hands back early, without the lock, when it closes the remote
/// list of a slice it gives back (see `free`).
#[repr(C, align(64))]
pub(crate) struct SliceMeta {
    /// Free objects ready to hand out, linked through [`Link`]s; the list
    /// ends at an odd value (the slice's end marker, or [`NO_FREE`]).
    /// Invariant: on a formatted slice, every link and the head lead into
    /// the slice (objects, or the end marker), unless a use-after-free write
    /// overwrote a link. Links are checked when they become the head: a
    /// taker reads through the head only once [`SliceMeta::head_is_object`]
    /// passes, and a head that is neither an object nor a list end is
    /// reported ([`SliceMeta::corrupt_head`]). The list is accessed only by
    /// the owning heap while it owns the slice, and only under the domain
    /// lock otherwise. The owner gives it up when it closes the remote list
    /// to give the slice back (`RemoteList::orphan`, Release), before it
    /// takes the lock: from then on, while the slice is still `CACHED`, a
    /// free refused by the closed list may already push onto this list
    /// under the lock (`Domain::free_locked`), and the owner's splice of
    /// the walked remote list comes under the lock too
    /// (`Domain::take_back`).
    pub(crate) free: Cell<*mut FreeObject>,
    /// Two counts in one word, so that the free fast path keeps both with
    /// one subtraction ([`SliceMeta::count_freed`]):
    /// - bits 0 to 15 ([`USED_MASK`]): objects handed out and not yet back
    ///   on `free` (objects on the remote list, and on a closed list not yet
    ///   spliced, still count); read through [`SliceMeta::used`]. Never above
    ///   the capacity (at most 4096), so adding or taking one never carries
    ///   into the other half;
    /// - bits 16 to 31, signed: the owning heap's countdown of fast-path
    ///   frees into this slice before its next housekeeping check
    ///   ([`Heap::free_owned_counted`](crate::Heap::free_owned_counted)),
    ///   due once it is negative; armed when a heap receives the slice and
    ///   after each check, meaningless while the domain holds the slice.
    ///
    /// Same access rule as `free`; relaxed loads and stores only, so
    /// statistics can read it from another thread.
    pub(crate) used: AtomicU32,
    /// The slice's address (its first object's), fixed when the page is set
    /// up; [`NO_ADDRESS`] for the empty sentinel. Read by the allocation
    /// fast path's head test, on the same cache line as `free`.
    pub(crate) address: usize,

    _read_mostly: CacheLine,
    /// Object size in bytes while formatted for a small class, else 0.
    /// Invariant: non-zero only for small slices whose objects carry valid
    /// links and markers (so frees can be checked against it).
    /// Written under the domain lock while no heap owns the slice (format,
    /// purge, span set-up); read without it by frees and look-ups on any
    /// thread. Relaxed: a free of a live object is ordered after the format
    /// by the lock (hand-over to the owner) and the object's allocation.
    pub(crate) object_size: RelaxedU32,
    /// `BOUNDARY_MULTIPLIERS[class]` while `object_size` is non-zero (the
    /// free fast path's object test, see `size_class::is_carved_object`).
    /// Written and read as `object_size`, with the same ordering argument.
    pub(crate) multiplier: RelaxedU64,
    /// Objects per slice in the current format. Written under the domain
    /// lock while no heap owns the slice; read by the holder only (the owner,
    /// which received the slice through the lock, or the lock holder).
    pub(crate) capacity: Cell<u32>,
    /// Objects carved so far: objects `0..carved` have carried a link and a
    /// marker at least once; the rest of the slice was never touched. Grows
    /// only, by the slice's holder (owner, or domain under the lock); reset
    /// to 0 under the lock while no heap owns the slice.
    /// Invariant: `used + free objects + withheld objects == carved` (remote
    /// ones count as used; withheld ones are those `holes` keeps, none
    /// while a heap owns the slice), and `carved == 0` whenever
    /// `object_size == 0`, so that the free fast
    /// path's `index < carved` test also refuses unformatted slices.
    /// Read without a lock by frees on any thread while the owner carves:
    /// atomic for that. Relaxed: the carve that covered an object comes
    /// before its allocation, which comes before any free of it, so the
    /// freeing thread reads that carve's value or a later, larger one.
    pub(crate) carved: RelaxedU32,
    /// `size_class::carved_limit(carved, object_size, multiplier)`: with
    /// `multiplier`, it tells the free fast path in one multiplication and
    /// one comparison whether an offset is a carved object's boundary.
    /// Written with `carved` ([`SliceMeta::set_carved`]), read as `carved`,
    /// with the same ordering argument. Invariant: equals that function of
    /// the current `carved`, `object_size` and `multiplier` (0 while
    /// `carved` is 0, so an unformatted slice refuses every offset).
    pub(crate) carved_limit: RelaxedU64,
    /// The pages of the slice ([`HOLE_SIZE`] bytes each, bit `i` for the
    /// one at `address + i * HOLE_SIZE`) given back to the page source
    /// while the slice is in use: the empty pages of a sparse slice that no
    /// heap owns, found by the purge's walks (`Domain::purge_holes_older_than`).
    /// Invariant: no live object and no object on the free list overlaps a
    /// page in `holes`. The carved objects that do are *withheld*: neither
    /// in use nor free, until `Domain::fill_holes` lists them again (and
    /// clears `holes`) before anyone allocates from the slice: under the
    /// domain lock when the domain allocates from it, or, when a heap
    /// receives it, by that heap right after the refill's critical section
    /// (`Domain::refill`). So a heap's slice has no holes once the refill
    /// returns. Formatting clears it.
    /// Written under the domain lock while no heap owns the slice, and by
    /// the fill of the heap that owns it; read without the lock by frees
    /// and look-ups on any thread, which refuse an object starting on a
    /// hole before reading it, and find any other withheld object freed by
    /// the marker it kept ([`SliceMeta::small_object`]).
    /// Relaxed: no live object overlaps a hole, so a free of one needs no
    /// particular value (the allocation that handed it out came after the
    /// fill that last cleared a bit of its pages, on the owning heap's
    /// thread or through the lock); other reads only decide whether a
    /// pointer is refused.
    pub(crate) holes: RelaxedU16,
    /// Address of the owning heap, 0 when the domain holds the slice.
    /// Set under the domain lock when the slice is handed to a heap
    /// (during that heap's refill), cleared by that heap without the lock
    /// when it closes the slice to give it back (`Domain::close`); read
    /// without a lock by frees. Relaxed: a heap only ever compares it with
    /// its own address, and only its own thread (or heap-lock holder)
    /// stores that address or takes it away, so the comparison is exact;
    /// other readers only learn "not mine".
    pub(crate) owner: AtomicUsize,
    /// Current state. Written under the domain lock; read without it by
    /// look-ups of pointers that are not live small objects (span double
    /// frees). Relaxed: a look-up of a live span is ordered after its
    /// allocation by the lock; other look-ups only refuse the pointer.
    pub(crate) state: RelaxedState,
    /// Flags. Written under the domain lock; read without it by look-ups
    /// (`SPAN_HEAD`). Relaxed, as `state`.
    pub(crate) flags: RelaxedFlags,
    /// Class currently formatted for, or last held when dirty, `SPAN_CLASS`
    /// for span slices. Written under the domain lock while no heap owns the
    /// slice; read without it by look-ups and resizes. Relaxed, as `state`.
    pub(crate) class: RelaxedU8,
    /// Where the slice is linked. Domain lock.
    pub(crate) linked: Cell<Linked>,
    /// For a span head: its length in slices; 0 otherwise. Written under the
    /// domain lock; read without it by look-ups and resizes of the span.
    /// Relaxed, as `state`.
    pub(crate) span: RelaxedU32,
    /// State-list links: in the domain's `full[class]`, or in the page
    /// file the slice is on (see `linked`). Domain lock; while the slice is
    /// `CACHED`, `next` belongs to the owning heap, which links its parked
    /// slices with it.
    pub(crate) next: Cell<*mut SliceMeta>,
    pub(crate) prev: Cell<*mut SliceMeta>,
    /// Purge age-list links, oldest first: on the dirty age list while the
    /// slice is dirty and filed as such (`linked` is `Dirty`), on the
    /// sparse list while `sparse_listed` is set. Invariant: never both,
    /// since a slice on the sparse list is partial. Domain lock.
    pub(crate) age_next: Cell<*mut SliceMeta>,
    pub(crate) age_prev: Cell<*mut SliceMeta>,
    /// When the slice joined the age list it is on, in the source's
    /// milliseconds: when it became dirty, or when it joined the sparse
    /// list. Domain lock.
    pub(crate) age_since: Cell<u64>,
    /// On the domain's sparse list: a partial slice no heap owns, at most
    /// [`HOLE_MAX_USED`](crate::domain::HOLE_MAX_USED) full, whose free
    /// list grew since its empty pages were last looked for, waiting for
    /// the delayed purge to make holes of them. Invariant: set only while
    /// the slice is such a slice (`Inner::transition` takes it off the list
    /// when it stops being one). Domain lock.
    pub(crate) sparse_listed: Cell<bool>,
    /// `used` when the free list was last walked for empty pages
    /// (`Domain::walk_for_empty_pages`); `u32::MAX` if it was not since the
    /// slice was formatted or last given back by a heap. The slice joins
    /// the sparse list again only once at least an eighth of its free room
    /// has been freed since ([`REWALK_SHARE`](crate::domain::REWALK_SHARE)),
    /// so that a walk costs at most a few steps per free. Domain lock.
    pub(crate) used_when_walked: Cell<u32>,

    _remote: CacheLine,
    /// Objects freed by threads other than the owner.
    pub(crate) remote: RemoteList,
}

/// The page size of [`SliceMeta::holes`]: the page size of the sources
/// that give memory back (`MADV_DONTNEED` works in 4 KiB pages).
pub(crate) const HOLE_SIZE: usize = 4096;

/// Pages of [`HOLE_SIZE`] in a slice: one bit each in [`SliceMeta::holes`].
pub(crate) const HOLES_PER_SLICE: usize = SLICE_SIZE / HOLE_SIZE;

static_assertions::const_assert_eq!(HOLES_PER_SLICE, u16::BITS as usize);

/// The indexes of the objects of `size` bytes that overlap page `page` of
/// a slice (bytes `page * HOLE_SIZE` up to the next page), the first
/// `carved` only: from the object holding the page's first byte to the
/// last one that starts before its end. Empty when none of them is carved.
/// The divisor is never 0, so no division here can panic (the kernel
/// module counts panic paths).
#[inline]
pub(crate) fn objects_on_page(page: u32, size: NonZeroU32, carved: u32) -> Range<u32> {
    let start = page * HOLE_SIZE as u32;
    let first = start / size;
    let past_last = ((start + HOLE_SIZE as u32 + size.get() - 1) / size).min(carved);
    first..past_last
}

/// The pages of a slice that `size` bytes at `offset` overlap, as a
/// [`SliceMeta::holes`] mask; bytes past the slice's end count as its last
/// page, and a `size` of 0 as 1, so that any input gives a mask.
#[inline(always)]
pub(crate) fn pages_of(offset: u32, size: u32) -> u16 {
    const LAST: u32 = SLICE_SIZE as u32 - 1;
    let first = offset.min(LAST) / HOLE_SIZE as u32;
    let last = offset.saturating_add(size.max(1) - 1).min(LAST) / HOLE_SIZE as u32;
    // At most 16 pages: the shift stays below 32, and the mask fits 16 bits.
    (((1u32 << (last - first + 1)) - 1) << first) as u16
}

/// Bytes of objects carved at a time (see [`SliceMeta::carve`]).
pub(crate) const CARVE_BYTES: usize = 4096;

/// Objects of a carved run shuffled together. The run is linked window by
/// window, in address order, and each window's objects in a random order
/// (see [`shuffle`]): consecutive allocations from a fresh run are never
/// more than two windows apart, so that whoever reads them in that order
/// (another thread, through the hardware prefetcher) still moves forward
/// through memory, while the order within each window cannot be predicted.
/// A window is 512 bytes of 16-byte objects, and the whole run (one OS
/// page) for objects of 128 bytes and more. A shuffle of the whole run
/// defeats the prefetcher of a thread that reads another's objects in the
/// order they were allocated: see the hardening section of
/// `benches/RESULTS.md` for what each costs.
pub(crate) const SHUFFLE_WINDOW: usize = 32;

/// Fewest objects carved at a time when the run is shuffled, so that even
/// the large classes (a few objects per OS page) get a shuffled order.
pub(crate) const MIN_CARVE: usize = if cfg!(strata_unhardened) { 1 } else { 8 };

/// The free list of a slice that holds no free object and has no format:
/// any odd value ends a list (see [`Link::is_end`]). A formatted slice's
/// empty list holds its own end marker instead ([`SliceMeta::end`]).
pub(crate) const NO_FREE: *mut FreeObject = ptr::without_provenance_mut(1);

/// The bits of `SliceMeta::used` that count objects in use; the rest is the
/// owner's countdown of frees.
pub(crate) const USED_MASK: u32 = 0xffff;

/// What one fast-path free takes from `SliceMeta::used`: one object in use
/// and one step of the countdown.
const FREE_STEP: u32 = 1 << 16 | 1;

/// The longest countdown of frees between two housekeeping checks, in frees
/// into one slice.
pub const MAX_COUNTDOWN: u16 = 0x8000;

/// The address recorded by a descriptor that describes no slice (the heaps'
/// empty sentinel): no head passes [`SliceMeta::head_is_object`] against it
/// but values in the top 64 KiB of the address space, where no list head
/// of the sentinel (always [`NO_FREE`]) lies.
pub(crate) const NO_ADDRESS: usize = usize::MAX;

/// The start position and stride of a shuffled window of `count` objects
/// (see [`SHUFFLE_WINDOW`]): position `i` of the list is object
/// `(start + i * stride) % count` of the window. The stride is coprime to
/// `count`, so every object comes exactly once. It is 1 (address order)
/// only when `count <= 2` or hardening is off. Otherwise it is neither 1
/// nor `count - 1`, both of which step to a neighbour, so that two
/// consecutive objects of the window are never neighbours in memory;
/// windows of 3, 4 and 6 objects, for which no other stride is coprime to
/// the count, are walked downwards (stride `count - 1`).
pub(crate) fn shuffle(count: usize, random: u64) -> (usize, usize) {
    if cfg!(strata_unhardened) || count <= 2 {
        return (0, 1);
    }
    let start = (random % count as u64) as usize;
    if matches!(count, 3 | 4 | 6) {
        return (start, count - 1);
    }
    // A stride from 2 to `count - 2`, the first coprime one from a random
    // point, wrapping: one exists, 2 for an odd count, else the odd one of
    // `count / 2 - 1` and `count / 2 - 2` (`count` is 8 or more).
    let mut stride = 2 + ((random >> 32) % (count as u64 - 3)) as usize;
    while gcd(stride, count) != 1 {
        stride = if stride == count - 2 { 2 } else { stride + 1 };
    }
    (start, stride)
}

/// The word after `x` in a xorshift64 sequence (never 0 after a word that
/// is not 0): the heaps' generator, and the choices of a carved run's later
/// windows.
pub(crate) fn next_random(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// What an address is to the slice it lies in, for a small object
/// ([`SliceMeta::small_object`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum SmallObject {
    /// A carved object boundary without the free marker: a live object.
    Live,
    /// A carved object boundary carrying the free marker: a freed object.
    Freed,
    /// Not a carved object boundary.
    NotAnObject,
}

/// Pseudo-class recorded by slices of multi-slice spans.
pub(crate) const SPAN_CLASS: u8 = crate::size_class::CLASS_COUNT as u8;

impl SliceMeta {
    /// A clean, orphaned descriptor of the slice at `address` (a multiple of
    /// the slice size, or [`NO_ADDRESS`]).
    pub(crate) const fn new(address: usize) -> Self {
        Self {
            free: Cell::new(NO_FREE),
            used: AtomicU32::new(0),
            address,
            _read_mostly: CacheLine,
            object_size: RelaxedU32::new(0),
            multiplier: RelaxedU64::new(0),
            capacity: Cell::new(0),
            carved: RelaxedU32::new(0),
            carved_limit: RelaxedU64::new(0),
            holes: RelaxedU16::new(0),
            owner: AtomicUsize::new(0),
            state: RelaxedState::new(SliceState::Clean),
            flags: RelaxedFlags::new(SliceFlags::empty()),
            class: RelaxedU8::new(0),
            linked: Cell::new(Linked::None),
            span: RelaxedU32::new(0),
            next: Cell::new(ptr::null_mut()),
            prev: Cell::new(ptr::null_mut()),
            age_next: Cell::new(ptr::null_mut()),
            age_prev: Cell::new(ptr::null_mut()),
            age_since: Cell::new(0),
            sparse_listed: Cell::new(false),
            used_when_walked: Cell::new(u32::MAX),
            _remote: CacheLine,
            remote: RemoteList { head: AtomicUsize::new(ORPHAN) },
        }
    }

    /// Objects of the slice in use (see the `used` field).
    #[inline(always)]
    pub(crate) fn used(&self) -> u32 {
        self.used.load(Ordering::Relaxed) & USED_MASK
    }

    /// Sets the count of objects in use, keeping the countdown. The caller
    /// holds the slice, as for `free`.
    #[inline(always)]
    pub(crate) fn set_used(&self, used: u32) {
        debug_assert!(used <= USED_MASK);
        let word = self.used.load(Ordering::Relaxed);
        self.used.store((word & !USED_MASK) | used, Ordering::Relaxed)
    }

    /// Counts one object handed out: one addition to the whole word, which
    /// cannot carry into the countdown (the count stays within the
    /// capacity). The caller holds the slice.
    #[inline(always)]
    fn count_taken(&self) {
        let word = self.used.load(Ordering::Relaxed);
        self.used.store(word.wrapping_add(1), Ordering::Relaxed)
    }

    /// Counts one object back on `free`, leaving the countdown alone: one
    /// subtraction from the whole word, which cannot borrow from the
    /// countdown (the object was in use, so the count is at least 1). The
    /// caller holds the slice.
    #[inline(always)]
    pub(crate) fn count_returned(&self) {
        let word = self.used.load(Ordering::Relaxed);
        self.used.store(word.wrapping_sub(1), Ordering::Relaxed)
    }

    /// Counts one object back on `free` and one step of the countdown, with
    /// one subtraction of [`FREE_STEP`]; returns whether the countdown has
    /// run out (the owner's housekeeping check is due). The count of objects
    /// in use is at least 1 before (the object was in use), so nothing
    /// borrows from the countdown; the countdown itself wraps harmlessly if
    /// nobody re-arms it. The caller owns the slice.
    ///
    /// On x86-64 this is one `sub` on the word in memory and a branch on its
    /// sign (the compiler makes a load, an add and a store of the relaxed
    /// atomic word, and a branch): an unlocked read-modify-write, that is an
    /// aligned 4-byte load and store, each single-copy atomic, as the relaxed
    /// load and store elsewhere are. Only the owner writes the word now;
    /// other threads only load it.
    #[inline(always)]
    pub(crate) fn count_freed(&self) -> bool {
        #[cfg(all(target_arch = "x86_64", not(miri)))]
        {
            // SAFETY: `used` is a live, aligned `AtomicU32`; see above for
            // why the unlocked `sub` races with nothing. `nostack`: no push.
            unsafe {
                core::arch::asm!(
                    "sub dword ptr [{meta} + {used}], {step}",
                    "js {due}",
                    meta = in(reg) self as *const Self,
                    used = const core::mem::offset_of!(SliceMeta, used),
                    step = const FREE_STEP,
                    due = label { return true; },
                    options(nostack),
                );
            }
            false
        }
        #[cfg(not(all(target_arch = "x86_64", not(miri))))]
        {
            let word = self.used.load(Ordering::Relaxed).wrapping_sub(FREE_STEP);
            self.used.store(word, Ordering::Relaxed);
            (word as i32) < 0
        }
    }

    /// Arms the countdown: the `frees`-th fast-path free from now finds the
    /// check due (`frees` from 1 to [`MAX_COUNTDOWN`]; larger values are
    /// taken as that). The caller owns the slice.
    #[inline]
    pub(crate) fn arm_countdown(&self, frees: u16) {
        let countdown = u32::from(frees.clamp(1, MAX_COUNTDOWN) - 1);
        let word = self.used.load(Ordering::Relaxed);
        self.used.store((word & USED_MASK) | countdown << 16, Ordering::Relaxed)
    }

    /// Puts the walked remote frees `walked` (objects of this slice) in
    /// front of its free list, linked with `key`, and counts them free: the
    /// free list and the count of objects in use move together. O(1).
    ///
    /// # Safety
    /// The walked objects must be the caller's alone (detached from this
    /// slice's remote list in one swap, see [`Walked::walk`]), and the caller
    /// must hold the free list (own the slice, or hold the domain lock for a
    /// slice no heap owns).
    pub(crate) unsafe fn take_walked(&self, walked: Walked, key: usize) {
        // SAFETY: the caller's contract.
        let head = unsafe { walked.prepend_to(self.free.get() as usize, key) };
        self.free.set(head as *mut FreeObject);
        self.set_used(self.used() - walked.count);
    }

    pub(crate) fn has(&self, flag: SliceFlags) -> bool {
        self.flags.get().contains(flag)
    }

    /// The end marker of this slice's free list (see [`Link::end_of`]).
    pub(crate) fn end(&self) -> *mut FreeObject {
        Link::end_of(self.address) as *mut FreeObject
    }

    /// Whether `head`, read from this slice's free list, is a free object of
    /// the slice that can be taken: the list's first object. One test does
    /// it, the allocation fast path's: the offset from the slice's address
    /// must be below the end marker's (`LINK_REGION - 1`). Every other value
    /// fails it: the end marker, [`NO_FREE`] (below any slice), any head of
    /// the empty sentinel, and a link decoded from an overwritten word (bar
    /// a chance of 2^-48 for a value written without the key, which still
    /// leads into the slice). Without hardening, the head is taken unless it
    /// is a list end.
    #[inline(always)]
    pub(crate) fn head_is_object(&self, head: *mut FreeObject) -> bool {
        if cfg!(strata_unhardened) {
            !Link::is_end(head as usize)
        } else {
            (head as usize ^ self.address) < LINK_REGION - 1
        }
    }

    /// Takes the first object off the free list and counts it in use, or
    /// returns null when the head is not an object ([`SliceMeta::head_is_object`]):
    /// the list is empty, or its head came from an overwritten link, which
    /// the caller's slow path tells apart ([`SliceMeta::corrupt_head`]).
    /// The object's own link becomes the head unchecked: the next take
    /// checks it before reading through it.
    ///
    /// # Safety
    /// The caller must hold the free list (own the slice, or hold the domain
    /// lock for one no heap owns), and `link_key` must be the key its links
    /// are encoded with. The empty sentinel qualifies: its head is never an
    /// object, so nothing is written.
    #[inline(always)]
    pub(crate) unsafe fn take(&self, link_key: usize) -> *mut FreeObject {
        let object = self.free.get();
        if !self.head_is_object(object) {
            return ptr::null_mut();
        }
        // SAFETY: an object of the slice, at least 16 bytes, on the list the
        // caller holds.
        let next = unsafe { FreeObject::next(object, link_key) };
        self.free.set(next);
        FreeObject::prefetch(next);
        // SAFETY: as above.
        unsafe { FreeObject::set_marker(object, 0) };
        self.count_taken();
        object
    }

    /// Whether the free list is empty: its head is the slice's end marker or
    /// [`NO_FREE`]. A corrupt head (see [`SliceMeta::corrupt_head`]) is not.
    #[inline(always)]
    pub(crate) fn free_is_empty(&self) -> bool {
        let head = self.free.get();
        head == NO_FREE || head == self.end()
    }

    /// The head of the free list if it is neither an object of the slice
    /// nor a list end: a link decoded from a word that a use-after-free
    /// write overwrote, which must be reported and never followed.
    pub(crate) fn corrupt_head(&self) -> Option<usize> {
        let head = self.free.get();
        if self.head_is_object(head) || self.free_is_empty() {
            None
        } else {
            Some(head as usize)
        }
    }

    /// Carves the next run of never-used objects (about one OS page of them,
    /// at least [`MIN_CARVE`]) onto the free list, writing each one's link
    /// (encoded with `link_key`) and free marker (`marker_key`).
    /// Returns whether there was anything left to carve.
    ///
    /// Carving lazily keeps a slice's untouched memory untouched: a class
    /// that holds a few objects costs a few pages of memory, not 64 KiB.
    ///
    /// Unless built with `--cfg strata_unhardened`, the run is linked in a
    /// shuffled order, window by window ([`SHUFFLE_WINDOW`]): within each
    /// window, from a random start, with a random stride coprime to the
    /// window's length that steps to no neighbour (see [`shuffle`]), and a
    /// window never starts with the neighbour of the object before it, so
    /// that consecutive allocations from a run are not neighbours in memory
    /// (bar windows of 3, 4 or 6 objects and a last window of 1 or 2).
    /// `random` seeds the choices.
    ///
    /// # Safety
    /// The caller must hold the slice (own it, or hold the domain lock for an
    /// unowned one), its free list must be empty, and it must be formatted.
    pub(crate) unsafe fn carve(&self, marker_key: usize, link_key: usize, random: u64) -> bool {
        let size = self.object_size.get() as usize;
        let first = self.carved.get() as usize;
        let capacity = self.capacity.get() as usize;
        if first >= capacity || size == 0 {
            return false;
        }
        let last = capacity.min(first + (CARVE_BYTES / size).max(MIN_CARVE));
        let count = last - first;
        let base = self.address + first * size;
        let marker = FreeObject::marker_of(marker_key);
        // The run's first link is written to `first_link`, a stand-in for
        // the list head, so that every object's link is written alike.
        let mut first_link = 0usize;
        let mut previous = ptr::addr_of_mut!(first_link).cast::<Link>();
        let mut random = random;
        // Window by window: `start` is the window's first object's index in
        // the run. Within a window the walk goes by byte offsets, `step`
        // bytes at a time, wrapping at the window's end.
        let mut start = 0;
        while start < count {
            let window = (count - start).min(SHUFFLE_WINDOW);
            let (mut position, stride) = shuffle(window, random);
            random = next_random(random);
            let window_base = base + start * size;
            // The window before may have ended with its last object, the
            // neighbour of this one's first: start one further on.
            if stride != 1 && position == 0 && start != 0 && previous as usize + size == window_base {
                position = 1;
            }
            let (window_bytes, step) = (window * size, stride * size);
            let mut offset = position * size;
            for _ in 0..window {
                let object = (window_base + offset) as *mut FreeObject;
                // SAFETY: the object lies inside the slice, past every
                // object handed out so far; the caller holds the slice.
                // `previous` is the object before, or `first_link`: a
                // writable word either way.
                unsafe {
                    FreeObject::set_marker(object, marker);
                    Link::set_next(previous, object as usize, link_key);
                }
                previous = object.cast::<Link>();
                offset += step;
                if offset >= window_bytes {
                    offset -= window_bytes;
                }
            }
            start += window;
        }
        // SAFETY: `first_link` holds the first object's link, encoded.
        let head = unsafe { Link::next(ptr::addr_of_mut!(first_link).cast::<Link>(), link_key) } as *mut FreeObject;
        // SAFETY: as above; `count >= 1`, so `previous` is the last object.
        unsafe { Link::set_next(previous, Link::end_of(base), link_key) };
        self.free.set(head);
        self.set_carved(last as u32);
        true
    }

    /// Sets the count of carved objects (and `carved_limit` with it). The
    /// caller holds the slice, as for [`SliceMeta::carve`].
    #[inline]
    pub(crate) fn set_carved(&self, carved: u32) {
        self.carved.set(carved);
        let limit = crate::size_class::carved_limit(carved, self.object_size.get(), self.multiplier.get());
        self.carved_limit.set(limit);
    }

    /// What `address` is as a small object of this slice, by the free
    /// marker of `key` (the domain's marker key): a live object, a freed
    /// one, or not an object: not a carved object boundary (every address
    /// of an unformatted slice, whose carved limit is 0), or an object that
    /// starts on a hole, whose memory is not read
    /// ([`SliceMeta::starts_on_hole`]). Any other withheld object reads as
    /// freed.
    ///
    /// # Safety
    /// `address` must lie in this slice, and the slice in a live page: an
    /// object boundary is then at least 16 readable bytes.
    #[inline(always)]
    pub(crate) unsafe fn small_object(&self, address: usize, key: usize) -> SmallObject {
        let offset = (address & (SLICE_SIZE - 1)) as u32;
        if !is_carved_object(offset, self.multiplier.get(), self.carved_limit.get()) || self.starts_on_hole(offset) {
            return SmallObject::NotAnObject;
        }
        // SAFETY: a carved object boundary of a live slice (the caller's
        // contract).
        if unsafe { FreeObject::marker(address as *mut FreeObject) } == FreeObject::marker_of(key) {
            SmallObject::Freed
        } else {
            SmallObject::Live
        }
    }

    /// Whether the carved object at `offset` starts on a hole (see
    /// [`SliceMeta::holes`]): it is withheld, and its free marker, on its
    /// first page, may be gone. A withheld object that starts on a page
    /// still resident keeps the marker it had on the free list, so
    /// [`SliceMeta::small_object`] finds it freed without this test: one
    /// shift and one bit test, with no call, on the remote free's path.
    #[inline(always)]
    pub(crate) fn starts_on_hole(&self, offset: u32) -> bool {
        // Offsets past the slice (none reach here) wrap the shift, no panic.
        u32::from(self.holes.get()).wrapping_shr(offset / HOLE_SIZE as u32) & 1 != 0
    }

    /// Whether objects of this slice count as in use (the page's occupancy).
    pub(crate) fn in_use(&self) -> bool {
        matches!(self.state.get(), SliceState::Partial | SliceState::Full)
    }
}

// One line for the owner, two for the read-mostly and lock-protected fields,
// one for remote frees.
static_assertions::const_assert_eq!(core::mem::size_of::<SliceMeta>(), 4 * 64);
// The count of objects in use fits its half of `used`, with room to spare.
static_assertions::const_assert!(crate::page::SLICE_SIZE / crate::size_class::MIN_SMALL < USED_MASK as usize);
