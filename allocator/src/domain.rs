//! The domain: an independent pool of pages, and the slice state machine.
//!
//! Everything here runs under the domain lock except page mapping, purging
//! and unmapping, which are done with the lock released, and the closing
//! and walking of the remote list of a slice a heap gives back, done by
//! that heap before it takes the lock (`Domain::close`; the protocol is in
//! the crate documentation, under "Locks, in order").
//!
//! # Choosing a slice (the cost model)
//!
//! A cache that needs objects of class `c` is handed a whole slice, whose free
//! objects are the "set of objects" it refills with. The slice is chosen by
//! state cost first, cheapest first:
//!
//! 1. a **partial** slice of class `c`: formatted and resident;
//! 2. a **dirty** slice that last held class `c`: resident;
//! 3. any other **dirty** slice: resident. Either is formatted again and
//!    carved from its start, its old free list dropped (see
//!    `Domain::prepare`), so the two cost the same; the same class still
//!    comes first, as the design's tie-break asks;
//! 4. a **clean** or **purged** slice of a mapped page: costs first-touch
//!    faults and grows the resident set;
//! 5. a **full** slice of class `c` that still has a free object: little to
//!    give, so a cache comes back soon;
//! 6. a new page from the source.
//!
//! Within tiers 1–4, memory cost breaks ties: slices are found through
//! their pages, which are filed in buckets by their occupancy (how many of
//! their slices are in use, in quarters), and the fullest bucket is searched
//! first, so allocation packs into busy pages and sparse pages drain until
//! they can be returned. Within a bucket the page most recently filed into
//! comes first, and in it the most recently filed slice (its memory is
//! warmest); fresh slices are taken lowest address first. Every step is a
//! list head or a bitmap lookup: O(1) in the number of slices and pages.
//!
//! # Filing pages, not slices
//!
//! A partial or dirty slice that no heap owns is filed on its own page: each
//! page header has one *file* (a list of its slices) per class for partial
//! slices, and one per last class for dirty ones (spans included). The
//! domain lists pages: `partial[class][bucket]` holds the pages of `bucket`
//! whose partial file of `class` is not empty, `dirty[class][bucket]` the
//! same for dirty files, and a bitmap per bucket says which dirty lists are
//! not empty. Filing or unfiling a slice is O(1): its page's file, and the
//! page's membership of one domain list when the file starts or ends (or
//! moves to the front of that list). When a page's occupancy crosses a
//! quarter and its bucket changes, the page moves: its fresh entry and one
//! membership per non-empty file, found by bit scans of two class masks in
//! the header. Its slices stay where they are. The work under the lock is
//! therefore bounded by the number of classes the page holds partial or
//! dirty slices of (usually one or a few, at most one per slice), not by
//! its number of filed slices, and a slice's own filing never walks a list.
//!
//! # Where the rest lives
//!
//! This file holds the state machine, the cost model and the paths heaps
//! take (refill, give-back, pending frees). Its submodules add to
//! [`Domain`] one concern each: `large` (spans and huge blocks), `lookup`
//! (validating a pointer), `purge` (returning memory to the page source)
//! and `statistics` (the [`Stats`] snapshot).

use core::alloc::Layout;
use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::num::NonZeroU32;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::cache::{Heap, RemoteBatch};
use crate::lock::{ConstLock, Guard, RawLock};
use crate::page::{
    bucket_of, dirty_file, page_of, page_of_slice, partial_file, PageCommon, PageHeader, PageKind, BUCKETS,
    part_slices, COLLAPSE_ALL, COLLAPSE_PARTS, COLLAPSE_SIZE, FIRST_SLICE, MAX_SPAN, MAX_SPAN_SLICES,
    PAGE_FILES, PAGE_SIZE, SLICES_PER_PAGE, SLICE_SHIFT, SLICE_SIZE,
};
use crate::remote::{Link, Push, Walked};
use crate::size_class::{
    boundary_multiplier, class_index, class_of, class_size, objects_per_slice, CLASS_COUNT,
};
use crate::slice::{
    objects_on_page, pages_of, FreeObject, Linked, SliceFlags, SliceMeta, SliceState, SmallObject, HOLES_PER_SLICE, HOLE_SIZE, NO_FREE, SPAN_CLASS,
};
use crate::source::PageSource;
use crate::stats::Stats;

/// Default delay before an unused dirty slice is purged, in milliseconds.
pub const DEFAULT_PURGE_DELAY_MS: u64 = 250;

/// How full a slice may be, as a fraction (numerator, denominator), for
/// [`Domain::defrag_hint`] to advise moving its objects out: at most three
/// quarters. A slice that full wastes at most a quarter of itself, and
/// moving its objects would cost a copy of three times what it gives back.
pub const DEFRAG_MAX_USED: (u64, u64) = (3, 4);

/// How full a slice in use may be, as a fraction (numerator, denominator),
/// for [`Domain::purge_all`], and for the delayed purge once the slice
/// has waited the purge delay on the sparse list, to look for empty 4 KiB
/// pages inside it and give them back: at most a quarter. The look is a
/// walk of the slice's free list; a fuller slice seldom has a page with no
/// live object.
pub const HOLE_MAX_USED: (u64, u64) = (1, 4);

/// How much of a sparse slice's free room must be freed since its free
/// list was last walked for empty pages before the delayed purge walks it
/// again, as a divisor: an eighth. Each walk then costs at most about eight
/// steps per free that made it due.
pub(crate) const REWALK_SHARE: u32 = 8;

/// Slices purged per round, with the lock released around the source calls.
const PURGE_BATCH: usize = 32;

/// Slices a heap gives back per critical section when it is released: their
/// remote lists are closed and walked before the lock is taken, a batch at a
/// time, so the work under the lock stays bounded whatever the heap holds.
const RELEASE_BATCH: usize = 16;

/// Mask of the usable slices of a page in the `fresh` and `dirty` masks.
const USABLE_MASK: u64 = !0u64 << FIRST_SLICE;

/// Bytes of a huge allocation's header, before the object.
const HUGE_HEADER: usize = 64;

/// What went wrong in a free (or a size query) of a bad pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreeErrorKind {
    /// The object is already free, and was given to `free` again.
    DoubleFree,
    /// The object is already free, and was given to a call other than
    /// `free` (a resize or a size query).
    Freed,
    /// The pointer was never handed out by this allocator: outside its pages,
    /// not at the start of an object, or in memory that holds no allocation.
    NotAllocated,
    /// Heap corruption: the free-list link of the free object at `address`
    /// was overwritten (a use-after-free write) and leads out of its slice.
    /// Found while walking a remote-free list, before the link is followed.
    Corrupted,
    /// Heap corruption: a free-list link of a free object in the slice at
    /// `address` was overwritten (a use-after-free write). Found by an
    /// allocation when that link became the head of the slice's free list
    /// (the object it belonged to had just been handed out, legitimately:
    /// it was free): the head does not lead into the slice and is not
    /// followed.
    CorruptedList,
}

/// A rejected free, with the offending address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreeError {
    /// What was wrong.
    pub kind: FreeErrorKind,
    /// The pointer passed in.
    pub address: usize,
}

impl FreeError {
    pub(crate) fn new(kind: FreeErrorKind, address: usize) -> Self {
        Self { kind, address }
    }

    /// The error as a free reports it: a freed block given to `free` is a
    /// double free.
    pub(crate) fn in_free(self) -> Self {
        match self.kind {
            FreeErrorKind::Freed => Self::new(FreeErrorKind::DoubleFree, self.address),
            _ => self,
        }
    }
}

/// The splitmix64 finaliser: spreads weak entropy over all bits.
fn mix(mut x: u64) -> u64 {
    x ^= 0x9e37_79b9_7f4a_7c15;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl core::fmt::Display for FreeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.kind {
            FreeErrorKind::DoubleFree => write!(f, "double free of {:#x}", self.address),
            FreeErrorKind::Freed => write!(f, "{:#x} was already freed", self.address),
            FreeErrorKind::NotAllocated => write!(
                f,
                "free of {:#x}, which is not an allocation of this allocator (foreign, interior or already freed pointer)",
                self.address
            ),
            FreeErrorKind::Corrupted => write!(
                f,
                "heap corruption: the free-list link of freed object {:#x} was overwritten (use after free)",
                self.address
            ),
            FreeErrorKind::CorruptedList => write!(
                f,
                "heap corruption: the free-list link of a freed object in the slice at {:#x} was overwritten (use after free)",
                self.address
            ),
        }
    }
}

/// `bucket` as an index into per-bucket tables (the compiler sees it is in
/// range; buckets come from `bucket_of`, always below [`BUCKETS`]).
#[inline(always)]
fn bucket_index(bucket: u8) -> usize {
    bucket as usize & (BUCKETS - 1)
}

/// A class recorded by a dirty slice (a small class, or `SPAN_CLASS`) as an
/// index into the dirty lists.
#[inline(always)]
fn dirty_index(class: u8) -> usize {
    (class as usize).min(CLASS_COUNT)
}

static_assertions::const_assert!(BUCKETS.is_power_of_two());
static_assertions::const_assert_eq!(SPAN_CLASS as usize, CLASS_COUNT);

/// Occupancy of a slice's memory from the allocation's point of view.
fn state_for(used: u32, capacity: u32) -> SliceState {
    if used == 0 {
        SliceState::Dirty
    } else if used >= capacity - capacity / 8 {
        SliceState::Full
    } else {
        SliceState::Partial
    }
}

/// A pool of pages and the lists that find slices in them.
///
/// `S` supplies pages, `L` is the domain lock. A domain is usually a `static`
/// inside a front (`Strata`, `SharedStrata`, the kernel module); all methods
/// take `&self`.
pub struct Domain<S: PageSource, L: RawLock> {
    /// Protects `inner`: every list, every page header field marked "domain
    /// lock", and the descriptors of slices no heap owns.
    lock: L,
    inner: UnsafeCell<Inner>,
    source: S,
    /// Key of the free marker; non-zero once initialised.
    key: AtomicUsize,
    /// Key the free-list links are encoded with (see `remote::Link`);
    /// non-zero once initialised. Drawn apart from `key`: the marker of a
    /// freed object shows `key` to whoever can read it, and the link key
    /// must not follow from it.
    link_key: AtomicUsize,
    /// Counter behind [`Domain::random`].
    random: AtomicU64,
    purge_delay_ms: AtomicU64,
    /// When (the source's clock, in ms) the delayed purge was last checked
    /// for ([`Domain::maybe_purge`]): every refill calls that check, which
    /// takes the lock at most once per quarter of the purge delay. Written
    /// under the lock; read first without it (Relaxed), where a stale value
    /// costs one look under the lock, which reads it again.
    purge_checked_ms: AtomicU64,
    /// Collapse parts moved onto huge pages ([`Domain::collapse_parts`]).
    /// Relaxed: a statistic.
    collapses: AtomicU64,
    /// Whether memory waits for the purge delay ([`Domain::memory_waiting`]),
    /// as the lists the lock protects stood when it was last released:
    /// written at the end of every critical section (`Domain::locked`).
    /// Relaxed: a hint for the fronts, which read it without the lock to
    /// decide how often to look at the clock.
    waiting: AtomicBool,
    /// Slices whose holes the heap that received them filled with the lock
    /// released ([`Domain::refill`]). Relaxed: a statistic.
    hole_fills: AtomicU64,
    /// Objects those fills listed again. Relaxed: a statistic.
    hole_fill_objects: AtomicU64,
}

// SAFETY: all shared mutable state is behind `lock` or atomic; descriptors of
// owned slices are touched only by their owning heap (see `SliceMeta`).
unsafe impl<S: PageSource + Sync, L: RawLock + Sync> Sync for Domain<S, L> {}
// SAFETY: the domain owns its pages through raw pointers only.
unsafe impl<S: PageSource + Send, L: RawLock + Send> Send for Domain<S, L> {}

type SliceList = *mut SliceMeta;
type PageList = *mut PageHeader;

/// The lists threaded through a slice's age links (`SliceMeta::age_next`).
#[derive(Clone, Copy)]
enum AgeList {
    /// `Inner::age_head`: dirty slices, for the delayed purge.
    Dirty,
    /// `Inner::sparse_head`: sparse slices, for the delayed holes.
    Sparse,
}

struct Inner {
    /// Pages with partial slices no heap owns, by class and page bucket:
    /// `partial[c][b]` lists, through their file links, the pages in bucket
    /// `b` whose partial file of class `c` is not empty.
    partial: [[PageList; BUCKETS]; CLASS_COUNT],
    /// Full slices with at least one free object, by class.
    full: [SliceList; CLASS_COUNT],
    /// Pages with dirty, unpurged slices, by the slices' last class (spans:
    /// `SPAN_CLASS`) and page bucket, as `partial`.
    dirty: [[PageList; BUCKETS]; CLASS_COUNT + 1],
    /// Bit `c` of `dirty_classes[b]`: `dirty[c][b]` is not empty.
    dirty_classes: [u128; BUCKETS],
    /// Dirty slices in the order they became dirty, for purging.
    age_head: SliceList,
    age_tail: SliceList,
    /// Sparse slices no heap owns whose free list grew since their empty
    /// pages were last looked for, in the order they joined, for the
    /// delayed purge to make holes of those pages (`SliceMeta::sparse_listed`).
    /// Threaded through the same links as the age list, which no sparse
    /// slice is on.
    sparse_head: SliceList,
    sparse_tail: SliceList,
    /// Pages with at least one clean or purged slice, by bucket.
    fresh_pages: [*mut PageHeader; BUCKETS],
    /// Every slab page.
    all_pages: *mut PageHeader,
    /// Freed huge mappings kept for reuse.
    huge_cache: large::HugeCache,
    /// Pages by the longest run of slices free for a span
    /// (`PageHeader::runs`): `[kind][length]`, kind 0 fresh or dirty, kind 1
    /// dirty only.
    run_pages: [[*mut PageHeader; MAX_SPAN_SLICES + 1]; 2],
    /// Bit `n` of `run_lengths[kind]`: `run_pages[kind][n]` is not empty.
    run_lengths: [u64; 2],

    pages_mapped: usize,
    pages_released: u64,
    huge_allocations: usize,
    huge_bytes_live: usize,
    huge_bytes_mapped: usize,
    purges: u64,
    refills: u64,
    flushes: u64,
    remote_frees: u64,
    /// Times the domain lock was taken (counted while it is held).
    lock_acquisitions: u64,
    /// Of those, times it was already held when asked for.
    lock_contended: u64,
    /// Remote-free objects of slices given back by heaps, walked before the
    /// lock was taken (`Domain::close`); only an O(1) splice of each list
    /// happens under it (`take_back`). Counted when the splice is.
    remote_walked_unlocked: u64,
    /// Slices given back with a non-empty remote list (walks counted in
    /// `remote_walked_unlocked`).
    remote_lists_walked: u64,
    /// Free objects walked for empty pages, with the lock released
    /// (`Domain::purge_holes_older_than`); counted when the list goes back.
    hole_walked_unlocked: u64,
    // `dirty_classes` aligns `Inner` to 16 bytes, and `a_zeroed_inner_is_empty`
    // needs it free of implicit padding: the fields above fill it exactly (an
    // explicit padding word goes here if a field is added or removed).
}

impl Inner {
    /// Whether memory waits for the purge delay: a dirty slice not yet
    /// purged, a sparse slice, or a cached huge mapping (see
    /// [`Domain::memory_waiting`]).
    fn memory_waiting(&self) -> bool {
        !self.age_head.is_null() || !self.sparse_head.is_null() || !self.huge_cache.is_empty()
    }

    const fn new() -> Self {
        Self {
            partial: [[ptr::null_mut(); BUCKETS]; CLASS_COUNT],
            full: [ptr::null_mut(); CLASS_COUNT],
            dirty: [[ptr::null_mut(); BUCKETS]; CLASS_COUNT + 1],
            dirty_classes: [0; BUCKETS],
            age_head: ptr::null_mut(),
            age_tail: ptr::null_mut(),
            sparse_head: ptr::null_mut(),
            sparse_tail: ptr::null_mut(),
            fresh_pages: [ptr::null_mut(); BUCKETS],
            all_pages: ptr::null_mut(),
            huge_cache: large::HugeCache::new(),
            run_pages: [[ptr::null_mut(); MAX_SPAN_SLICES + 1]; 2],
            run_lengths: [0; 2],
            pages_mapped: 0,
            pages_released: 0,
            huge_allocations: 0,
            huge_bytes_live: 0,
            huge_bytes_mapped: 0,
            purges: 0,
            refills: 0,
            flushes: 0,
            remote_frees: 0,
            lock_acquisitions: 0,
            lock_contended: 0,
            remote_walked_unlocked: 0,
            remote_lists_walked: 0,
            hole_walked_unlocked: 0,
        }
    }

    /// The page file a slice listed as `linked` is on (see
    /// [`PageHeader::file_first`]); `None` for the other lists.
    #[inline]
    fn file_of(linked: Linked) -> Option<usize> {
        match linked {
            Linked::Partial { class } => Some(partial_file(class as usize)),
            Linked::Dirty { class } => Some(dirty_file(class as usize)),
            Linked::Full { .. } | Linked::None => None,
        }
    }

    /// The head of the domain's list of pages in `bucket` with slices on
    /// file `file`.
    #[inline]
    fn pages(&mut self, file: usize, bucket: u8) -> &mut PageList {
        let bucket = bucket_index(bucket);
        if file < CLASS_COUNT {
            &mut self.partial[class_index(file)][bucket]
        } else {
            &mut self.dirty[dirty_index((file - CLASS_COUNT) as u8)][bucket]
        }
    }

    /// Puts `page` first on the domain's list for `file` and `bucket`.
    /// O(1).
    fn page_link(&mut self, page: &PageHeader, file: usize, bucket: u8) {
        let me = page as *const PageHeader as *mut PageHeader;
        let head = self.pages(file, bucket);
        let first = *head;
        *head = me;
        let file = file.min(PAGE_FILES - 1);
        page.file_prev[file].set(ptr::null_mut());
        page.file_next[file].set(first);
        if !first.is_null() {
            // SAFETY: list members are live page headers.
            unsafe { (*first).file_prev[file].set(me) };
        }
        if file >= CLASS_COUNT {
            self.dirty_classes[bucket_index(bucket)] |= 1u128 << (file - CLASS_COUNT);
        }
    }

    /// Takes `page` off the domain's list for `file` and `bucket`. O(1).
    fn page_unlink(&mut self, page: &PageHeader, file: usize, bucket: u8) {
        let file = file.min(PAGE_FILES - 1);
        let (prev, next) = (page.file_prev[file].get(), page.file_next[file].get());
        // SAFETY: list members are live page headers.
        unsafe {
            if !next.is_null() {
                (*next).file_prev[file].set(prev);
            }
            if prev.is_null() {
                *self.pages(file, bucket) = next;
            } else {
                (*prev).file_next[file].set(next);
            }
        }
        if file >= CLASS_COUNT && self.pages(file, bucket).is_null() {
            self.dirty_classes[bucket_index(bucket)] &= !(1u128 << (file - CLASS_COUNT));
        }
        page.file_next[file].set(ptr::null_mut());
        page.file_prev[file].set(ptr::null_mut());
    }

    /// Files `slice` on the list `linked` names: its page's file for a
    /// partial or dirty slice (the page joins the domain's list for that
    /// file and its bucket, or moves to its front), `full[class]` for a full
    /// one. O(1).
    fn link(&mut self, slice: &SliceMeta, linked: Linked) {
        let me = slice as *const SliceMeta as *mut SliceMeta;
        let first = match linked {
            Linked::None => return,
            Linked::Full { class } => {
                let head = &mut self.full[class_index(class as usize)];
                let first = *head;
                *head = me;
                first
            }
            Linked::Partial { .. } | Linked::Dirty { .. } => {
                let file = Self::file_of(linked).unwrap_or(0);
                // SAFETY: descriptors live in page headers.
                let page = unsafe { page_of_slice(slice) };
                let first = page.file_head(file);
                page.set_file_head(file, me);
                let bucket = page.bucket.get();
                if first.is_null() {
                    page.set_file_bit(file, true);
                    self.page_link(page, file, bucket);
                } else if !page.file_prev[file.min(PAGE_FILES - 1)].get().is_null() {
                    // The most recently filed slice wins within a bucket:
                    // its page goes first.
                    self.page_unlink(page, file, bucket);
                    self.page_link(page, file, bucket);
                }
                first
            }
        };
        slice.prev.set(ptr::null_mut());
        slice.next.set(first);
        if !first.is_null() {
            // SAFETY: list members are live descriptors.
            unsafe { (*first).prev.set(me) };
        }
        slice.linked.set(linked);
    }

    /// Takes `slice` off the list it is on, if any; a page whose file
    /// empties leaves the domain's list for that file. O(1).
    fn unlink(&mut self, slice: &SliceMeta) {
        let linked = slice.linked.get();
        if linked == Linked::None {
            return;
        }
        let (prev, next) = (slice.prev.get(), slice.next.get());
        if !next.is_null() {
            // SAFETY: list members are live descriptors.
            unsafe { (*next).prev.set(prev) };
        }
        if !prev.is_null() {
            // SAFETY: as above.
            unsafe { (*prev).next.set(next) };
        } else if let Some(file) = Self::file_of(linked) {
            // SAFETY: descriptors live in page headers.
            let page = unsafe { page_of_slice(slice) };
            page.set_file_head(file, next);
            if next.is_null() {
                page.set_file_bit(file, false);
                self.page_unlink(page, file, page.bucket.get());
            }
        } else if let Linked::Full { class } = linked {
            self.full[class_index(class as usize)] = next;
        }
        slice.linked.set(Linked::None);
        slice.next.set(ptr::null_mut());
        slice.prev.set(ptr::null_mut());
    }

    /// The two ends of `list`.
    fn age_ends(&mut self, list: AgeList) -> (&mut SliceList, &mut SliceList) {
        match list {
            AgeList::Dirty => (&mut self.age_head, &mut self.age_tail),
            AgeList::Sparse => (&mut self.sparse_head, &mut self.sparse_tail),
        }
    }

    /// Appends `slice`, on neither age list, to `list`.
    fn age_push(&mut self, list: AgeList, slice: &SliceMeta) {
        let me = slice as *const _ as *mut SliceMeta;
        let (head, tail) = self.age_ends(list);
        slice.age_next.set(ptr::null_mut());
        slice.age_prev.set(*tail);
        if tail.is_null() {
            *head = me;
        } else {
            // SAFETY: list members are live descriptors.
            unsafe { (**tail).age_next.set(me) };
        }
        *tail = me;
    }

    /// Takes `slice` off `list`, which it is on.
    fn age_remove(&mut self, list: AgeList, slice: &SliceMeta) {
        let (prev, next) = (slice.age_prev.get(), slice.age_next.get());
        let (head, tail) = self.age_ends(list);
        // SAFETY: list members are live descriptors.
        unsafe {
            if prev.is_null() {
                *head = next;
            } else {
                (*prev).age_next.set(next);
            }
            if next.is_null() {
                *tail = prev;
            } else {
                (*next).age_prev.set(prev);
            }
        }
        slice.age_next.set(ptr::null_mut());
        slice.age_prev.set(ptr::null_mut());
    }

    /// Whether `slice` is in use for a small class and no heap owns it (nor
    /// a purge holds it): one whose tail and holes `Domain::purge_tails`
    /// may give back.
    fn purgeable_in_use(slice: &SliceMeta) -> bool {
        let flags = slice.flags.get();
        matches!(slice.state.get(), SliceState::Partial | SliceState::Full)
            && !flags.intersects(
                SliceFlags::CACHED
                    | SliceFlags::PURGING
                    | SliceFlags::PURGED
                    | SliceFlags::SPAN_HEAD
                    | SliceFlags::SPAN_TAIL,
            )
            && slice.object_size.get() != 0
    }

    /// Whether `slice` may have holes made of its empty pages, and so wait
    /// on the sparse list: [purgeable](Inner::purgeable_in_use), partial,
    /// and at most [`HOLE_MAX_USED`] full.
    fn hole_candidate(slice: &SliceMeta) -> bool {
        let (numerator, denominator) = HOLE_MAX_USED;
        let (used, capacity) = (u64::from(slice.used()), u64::from(slice.capacity.get()));
        Self::purgeable_in_use(slice)
            && slice.state.get() == SliceState::Partial
            && used * denominator <= capacity * numerator
    }

    /// Puts `slice` on the sparse list, if it is a
    /// [hole candidate](Inner::hole_candidate) not on it yet, whose free
    /// list grew by [`REWALK_SHARE`] of its free room since it was last
    /// walked for empty pages: its free list just grew.
    fn note_sparse(&mut self, slice: &SliceMeta, now: u64) {
        let used = slice.used();
        let grown = (slice.capacity.get().saturating_sub(used) / REWALK_SHARE).max(1);
        if used.saturating_add(grown) <= slice.used_when_walked.get() {
            self.list_sparse(slice, now);
        }
    }

    /// Puts `slice` on the sparse list if it is a
    /// [hole candidate](Inner::hole_candidate) not on it yet, however little
    /// was freed since its last walk: for an explicit purge, which looks at
    /// every sparse slice.
    fn list_sparse(&mut self, slice: &SliceMeta, now: u64) {
        if !slice.sparse_listed.get() && Self::hole_candidate(slice) {
            self.age_push(AgeList::Sparse, slice);
            slice.age_since.set(now);
            slice.sparse_listed.set(true);
        }
    }

    /// Takes `slice` off the sparse list if it is on it.
    fn forget_sparse(&mut self, slice: &SliceMeta) {
        if slice.sparse_listed.get() {
            self.age_remove(AgeList::Sparse, slice);
            slice.sparse_listed.set(false);
        }
    }

    fn fresh_link(&mut self, page: &PageHeader) {
        let bucket = bucket_index(page.bucket.get());
        let first = self.fresh_pages[bucket];
        page.fresh_prev.set(ptr::null_mut());
        page.fresh_next.set(first);
        if !first.is_null() {
            // SAFETY: list members are live page headers.
            unsafe { (*first).fresh_prev.set(page as *const _ as *mut _) };
        }
        self.fresh_pages[bucket] = page as *const _ as *mut _;
    }

    fn fresh_unlink(&mut self, page: &PageHeader) {
        let (prev, next) = (page.fresh_prev.get(), page.fresh_next.get());
        // SAFETY: list members are live page headers.
        unsafe {
            if !next.is_null() {
                (*next).fresh_prev.set(prev);
            }
            if prev.is_null() {
                self.fresh_pages[bucket_index(page.bucket.get())] = next;
            } else {
                (*prev).fresh_next.set(next);
            }
        }
        page.fresh_next.set(ptr::null_mut());
        page.fresh_prev.set(ptr::null_mut());
    }

    /// Where a slice belongs, by its state and flags.
    fn list_for(slice: &SliceMeta) -> Linked {
        let flags = slice.flags.get();
        if flags.intersects(SliceFlags::CACHED | SliceFlags::PURGING | SliceFlags::PURGED) {
            return Linked::None;
        }
        let class = slice.class.get();
        match slice.state.get() {
            SliceState::Clean => Linked::None,
            SliceState::Partial => Linked::Partial { class },
            SliceState::Full => {
                if flags.intersects(SliceFlags::SPAN_HEAD | SliceFlags::SPAN_TAIL)
                    || slice.used() >= slice.capacity.get()
                {
                    Linked::None
                } else {
                    Linked::Full { class }
                }
            }
            SliceState::Dirty => Linked::Dirty { class },
        }
    }

    /// Moves `slice` to `state` with `flags`. This is the only place that
    /// changes a slice's state or flags once its page is published: it keeps
    /// the lists, the page masks, the page occupancy and its bucket in step.
    /// Calling it with the current state re-files the slice (for example when
    /// a full slice gains a free object).
    fn transition(&mut self, slice: &SliceMeta, state: SliceState, flags: SliceFlags, now: u64) {
        // SAFETY: descriptors live in page headers.
        let page = unsafe { page_of_slice(slice) };
        let bit = 1u64 << page.index_of(slice);
        let was_dirty_listed = matches!(slice.linked.get(), Linked::Dirty { .. });
        self.unlink(slice);
        if was_dirty_listed {
            self.age_remove(AgeList::Dirty, slice);
        }
        let had_fresh = page.fresh.get() != 0;
        page.fresh.set(page.fresh.get() & !bit);
        page.dirty.set(page.dirty.get() & !bit);

        let was_in_use = slice.in_use();
        slice.state.set(state);
        // `ZEROED` says what a purge left: it lasts only as long as `PURGED`.
        let flags = if flags.contains(SliceFlags::PURGED) { flags } else { flags - SliceFlags::ZEROED };
        slice.flags.set(flags);
        // Off the sparse list once no longer a candidate (before a dirty
        // slice joins the age list, through the same links).
        if !Self::hole_candidate(slice) {
            self.forget_sparse(slice);
        }
        let in_use = slice.in_use();
        if was_in_use != in_use {
            let occupancy = if in_use { page.occupancy.get() + 1 } else { page.occupancy.get() - 1 };
            page.occupancy.set(occupancy);
        }

        match state {
            SliceState::Clean => page.fresh.set(page.fresh.get() | bit),
            SliceState::Dirty if flags.contains(SliceFlags::PURGED) => {
                page.fresh.set(page.fresh.get() | bit);
                // Its part may be collapsed again once it fills.
                page.part_split(page.index_of(slice));
            }
            SliceState::Dirty if !flags.contains(SliceFlags::PURGING) => {
                page.dirty.set(page.dirty.get() | bit);
                slice.age_since.set(now);
                self.age_push(AgeList::Dirty, slice);
            }
            _ => {}
        }
        let has_fresh = page.fresh.get() != 0;
        if had_fresh && !has_fresh {
            self.fresh_unlink(page);
        }
        let list = Self::list_for(slice);
        if list != Linked::None {
            self.link(slice, list);
        }
        let bucket = bucket_of(page.occupancy.get());
        if bucket != page.bucket.get() {
            self.rebucket(page, bucket, has_fresh && had_fresh);
        }
        if has_fresh && !had_fresh {
            self.fresh_link(page);
        }
        self.refile_runs(page);
    }

    /// Re-files a page after its bucket changed: its fresh entry, and its
    /// membership of the domain's list for each of its non-empty files,
    /// found by bit scans of its two class masks. Its slices stay where they
    /// are, on the page's files: the work is one move per class the page
    /// has partial or dirty slices of, however many slices that is.
    fn rebucket(&mut self, page: &PageHeader, bucket: u8, fresh_linked: bool) {
        let old = page.bucket.get();
        if fresh_linked {
            self.fresh_unlink(page);
        }
        page.bucket.set(bucket);
        if fresh_linked {
            self.fresh_link(page);
        }
        for (mask, first_file) in [(page.partial_classes.get(), 0), (page.dirty_classes.get(), CLASS_COUNT)] {
            let mut classes = mask;
            while classes != 0 {
                let file = first_file + classes.trailing_zeros() as usize;
                classes &= classes - 1;
                self.page_unlink(page, file, old);
                self.page_link(page, file, bucket);
            }
        }
    }

    /// The first slice on file `file` of the first page of `list`, if any.
    #[inline]
    fn first_filed<'a>(list: PageList, file: usize) -> Option<&'a SliceMeta> {
        if list.is_null() {
            return None;
        }
        // SAFETY: pages on the domain's lists are live, and each has a slice
        // on the file it is listed for.
        unsafe { (*list).file_head(file).as_ref() }
    }

    /// Picks the cheapest slice for class `class` (see the module docs), or
    /// `None` when every mapped page is exhausted.
    fn choose<'a>(&self, class: usize) -> Option<&'a SliceMeta> {
        let class = class_index(class);
        for bucket in (0..BUCKETS).rev() {
            if let Some(slice) = Self::first_filed(self.partial[class][bucket], partial_file(class)) {
                return Some(slice);
            }
        }
        for bucket in (0..BUCKETS).rev() {
            if let Some(slice) = Self::first_filed(self.dirty[class][bucket], dirty_file(class)) {
                return Some(slice);
            }
        }
        for bucket in (0..BUCKETS).rev() {
            let classes = self.dirty_classes[bucket];
            if classes != 0 {
                let other = dirty_index(classes.trailing_zeros() as u8);
                // A set bit means the list is not empty.
                return Self::first_filed(self.dirty[other][bucket], dirty_file(other));
            }
        }
        for bucket in (0..BUCKETS).rev() {
            let page = self.fresh_pages[bucket];
            if !page.is_null() {
                // SAFETY: pages on the fresh list are live and have a fresh slice.
                let page = unsafe { &*page };
                let index = page.fresh.get().trailing_zeros() as usize;
                return Some(&page.slices[index & (SLICES_PER_PAGE - 1)]);
            }
        }
        let slice = self.full[class];
        // SAFETY: as above.
        (!slice.is_null()).then(|| unsafe { &*slice })
    }
}

impl<S: PageSource, L: ConstLock> Domain<S, L> {
    /// A domain with no pages yet, ready to use; `const`, for a `static`.
    pub const fn new(source: S) -> Self {
        Self::with_lock(source, L::UNLOCKED)
    }
}

impl<S: PageSource, L: RawLock> Domain<S, L> {
    /// A domain with no pages yet, guarded by `lock`. A lock that needs
    /// run-time set-up (a kernel lock) is made ready by [`Domain::init`].
    pub const fn with_lock(source: S, lock: L) -> Self {
        Self {
            lock,
            inner: UnsafeCell::new(Inner::new()),
            source,
            key: AtomicUsize::new(0),
            link_key: AtomicUsize::new(0),
            random: AtomicU64::new(0),
            purge_delay_ms: AtomicU64::new(DEFAULT_PURGE_DELAY_MS),
            purge_checked_ms: AtomicU64::new(0),
            collapses: AtomicU64::new(0),
            waiting: AtomicBool::new(false),
            hole_fills: AtomicU64::new(0),
            hole_fill_objects: AtomicU64::new(0),
        }
    }

    /// Builds a domain in place, in `place`, without a copy of it on the
    /// stack: a domain is several kilobytes, too much for a kernel stack.
    /// The lock still needs [`Domain::init`] once the domain is pinned.
    pub fn init_at(place: &mut MaybeUninit<Self>, source: S, lock: L) -> &mut Self {
        let domain = place.as_mut_ptr();
        // SAFETY: every field is written before the reference is made. The
        // lists and counters start empty and zero: `Inner::new()` is all
        // zero bytes (null pointers and zero counts; see the unit test
        // `a_zeroed_inner_is_empty`), so zeroing writes it in place.
        unsafe {
            ptr::addr_of_mut!((*domain).lock).write(lock);
            ptr::addr_of_mut!((*domain).inner).write_bytes(0, 1);
            ptr::addr_of_mut!((*domain).source).write(source);
            ptr::addr_of_mut!((*domain).key).write(AtomicUsize::new(0));
            ptr::addr_of_mut!((*domain).link_key).write(AtomicUsize::new(0));
            ptr::addr_of_mut!((*domain).random).write(AtomicU64::new(0));
            ptr::addr_of_mut!((*domain).purge_delay_ms).write(AtomicU64::new(DEFAULT_PURGE_DELAY_MS));
            ptr::addr_of_mut!((*domain).purge_checked_ms).write(AtomicU64::new(0));
            ptr::addr_of_mut!((*domain).collapses).write(AtomicU64::new(0));
            ptr::addr_of_mut!((*domain).waiting).write(AtomicBool::new(false));
            ptr::addr_of_mut!((*domain).hole_fills).write(AtomicU64::new(0));
            ptr::addr_of_mut!((*domain).hole_fill_objects).write(AtomicU64::new(0));
            &mut *domain
        }
    }

    /// Makes a domain built by [`Domain::with_lock`] ready, at its final
    /// address. Domains built by [`Domain::new`] need no call.
    ///
    /// # Safety
    /// Once, before any other use of the domain; the domain must not move
    /// afterwards.
    pub unsafe fn init(&self) {
        // SAFETY: forwarded; the domain (and so its lock) is pinned.
        unsafe { self.lock.init() }
    }

    /// The page source.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// Identity of the domain, as recorded in its page headers.
    #[inline(always)]
    pub(crate) fn id(&self) -> usize {
        self as *const Self as usize
    }

    /// The free-marker key, initialised on first use.
    pub(crate) fn key(&self) -> usize {
        self.lazy_key(&self.key, 0)
    }

    /// The key free-list links are encoded with (see `remote::Link`),
    /// initialised on first use from its own draw of the source's entropy.
    pub(crate) fn link_key(&self) -> usize {
        self.lazy_key(&self.link_key, 0x6a09_e667_f3bc_c909)
    }

    #[inline(always)]
    fn lazy_key(&self, slot: &AtomicUsize, salt: u64) -> usize {
        let key = slot.load(Ordering::Relaxed);
        if key != 0 {
            return key;
        }
        self.make_key(slot, salt)
    }

    /// Draws the key of `slot` on its first use (see `lazy_key`).
    #[cold]
    #[inline(never)]
    fn make_key(&self, slot: &AtomicUsize, salt: u64) -> usize {
        let fresh = (mix(self.source.entropy() ^ salt) as usize) | 1 << (usize::BITS - 1);
        match slot.compare_exchange(0, fresh, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => fresh,
            Err(existing) => existing,
        }
    }

    /// A fresh pseudo-random word, for the shuffled order of carved runs:
    /// a counter mixed with the link key, so it cannot be foreseen without
    /// the key.
    pub(crate) fn random(&self) -> u64 {
        let count = self.random.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        mix(count ^ self.link_key() as u64)
    }

    /// Reports a free-list link found overwritten in the free object at
    /// `object`, through the page source ([`PageSource::corrupted`]); the
    /// link is never followed.
    #[cold]
    #[inline(never)]
    pub(crate) fn corrupted(&self, object: usize) -> ! {
        self.source.corrupted(FreeError::new(FreeErrorKind::Corrupted, object))
    }

    /// Reports a slice whose free-list head is corrupt
    /// ([`SliceMeta::corrupt_head`]) through the page source; never returns.
    #[cold]
    pub(crate) fn corrupted_list(&self, slice: &SliceMeta) -> ! {
        self.source.corrupted(FreeError::new(FreeErrorKind::CorruptedList, slice.address))
    }

    /// Delay before an unused dirty slice is purged.
    pub fn set_purge_delay_ms(&self, delay: u64) {
        self.purge_delay_ms.store(delay, Ordering::Relaxed);
    }

    /// The current purge delay in milliseconds.
    pub fn purge_delay_ms(&self) -> u64 {
        self.purge_delay_ms.load(Ordering::Relaxed)
    }

    /// Runs `f` with the lock held, counting the acquisition and whether
    /// it had to wait.
    fn locked<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let contended = !self.lock.try_lock();
        if contended {
            self.lock.lock();
        }
        let _guard = Guard::adopt(&self.lock);
        // SAFETY: the lock gives exclusive access to `inner`.
        let inner = unsafe { &mut *self.inner.get() };
        inner.lock_acquisitions += 1;
        inner.lock_contended += u64::from(contended);
        let result = f(inner);
        self.waiting.store(inner.memory_waiting(), Ordering::Relaxed);
        result
    }

    /// Takes the domain lock before `fork`, so the child never inherits it
    /// held by a thread that does not exist there.
    pub fn fork_prepare(&self) {
        self.lock.lock();
    }

    /// Releases the lock in the parent after `fork`.
    ///
    /// # Safety
    /// Must follow [`Domain::fork_prepare`] on the same thread.
    pub unsafe fn fork_parent(&self) {
        // SAFETY: held since fork_prepare.
        unsafe { self.lock.unlock() }
    }

    /// Releases the lock in the child after `fork`.
    ///
    /// # Safety
    /// Must follow [`Domain::fork_prepare`] in the parent.
    pub unsafe fn fork_child(&self) {
        // SAFETY: the forking thread held it; it is the child's only thread.
        unsafe { self.lock.unlock() }
    }

    // ----- formatting and handing out slices -------------------------------

    /// Formats `slice` for `class` and carves its first objects onto the
    /// free list (in the order of `SliceMeta::carve`), each with its free
    /// marker. The rest is carved as it is needed.
    fn format(&self, slice: &SliceMeta, class: usize) {
        slice.free.set(slice.end());
        slice.set_used(0);
        slice.object_size.set(class_size(class) as u32);
        slice.multiplier.set(boundary_multiplier(class));
        slice.capacity.set(objects_per_slice(class) as u32);
        slice.set_carved(0);
        slice.holes.set(0);
        slice.used_when_walked.set(u32::MAX);
        slice.class.set(class as u8);
        // SAFETY: the slice was just chosen under the lock; it is formatted
        // and its free list is empty.
        unsafe { slice.carve(self.key(), self.link_key(), self.random()) };
    }

    /// Makes `slice` (just chosen) ready to serve `class`: a partial or full
    /// slice keeps its format and free list; a clean or dirty one is
    /// formatted, so that only its first objects are carved, in address
    /// order window by window. A dirty slice's old free list is dropped
    /// even when it last held `class`: it runs in the order the frees came,
    /// which after frees in a random order sends each allocation to a
    /// random place in the slice, a cache miss apiece once the slice has
    /// gone cold, where a carved run goes through memory forwards and its
    /// neighbours arrive with the hardware prefetcher. Carving costs a few
    /// stores per object. `benches/cold-list.sh` measures both (see
    /// `benches/RESULTS.md`, "Allocation after frees in a random order").
    ///
    /// Returns whether it has holes: the caller then lists their withheld
    /// objects again ([`Domain::fill_holes`]) before anything is allocated
    /// from it, under the lock for a slice the domain keeps, with the lock
    /// released once a heap owns it ([`Domain::refill`]). Lock held.
    #[must_use]
    fn prepare(&self, slice: &SliceMeta, class: usize) -> bool {
        if !matches!(slice.state.get(), SliceState::Partial | SliceState::Full) {
            self.format(slice, class);
        }
        debug_assert_eq!(slice.class.get() as usize, class);
        let holed = slice.holes.get() != 0;
        if holed {
            // Its pages are about to be resident again: it may be walked
            // for empty pages again.
            slice.used_when_walked.set(u32::MAX);
        }
        holed
    }

    /// Puts the objects that `slice`'s holes withheld back on its free
    /// list, in address order, each with its link and free marker (writing
    /// them brings the pages back), and clears the holes (see
    /// [`SliceMeta::holes`]). Visits only the objects that overlap a hole.
    /// Returns how many it listed.
    ///
    /// # Safety
    /// The caller must hold the slice (as for [`SliceMeta::carve`]): either
    /// it holds the domain lock and no heap owns the slice, or it is the
    /// heap that owns it. The slice must be formatted, and no purge of its
    /// holes may be in flight (a slice that a heap owns, or that `choose`
    /// may return, has none: the purge keeps it `PURGING` until the source
    /// has taken the pages).
    unsafe fn fill_holes(&self, slice: &SliceMeta) -> u32 {
        // Formatted: never 0.
        let Some(size) = NonZeroU32::new(slice.object_size.get()) else { return 0 };
        let (marker, link_key) = (FreeObject::marker_of(self.key()), self.link_key());
        let mut head = slice.free.get();
        let mut listed = 0;
        // Hole pages from the last one down, and each one's objects from the
        // last one down, so that the list comes out in address order. `end`
        // bounds the objects still to list: one that straddles two holes
        // is listed with the later one only.
        let mut end = slice.carved.get();
        let mut holes = slice.holes.get();
        while holes != 0 {
            let page = u16::BITS - 1 - holes.leading_zeros();
            holes &= !(1 << page);
            let objects = objects_on_page(page, size, end);
            let first = objects.start;
            for index in objects.rev() {
                let object = (slice.address + (index * size.get()) as usize) as *mut FreeObject;
                // SAFETY: a carved object of the slice (`index < carved`)
                // that overlaps a hole, so withheld: no one uses it, and its
                // memory reads as zero or as before. The caller holds the
                // slice's list.
                unsafe {
                    FreeObject::set_marker(object, marker);
                    FreeObject::set_next(object, head, link_key);
                }
                head = object;
                listed += 1;
            }
            end = end.min(first);
        }
        slice.free.set(head);
        slice.holes.set(0);
        listed
    }

    /// Maps a new slab page, writes its header and registers it with the
    /// source. Called without the lock.
    fn map_page(&self, context: S::Context) -> Option<NonNull<PageHeader>> {
        // Read before the mapping, which reads it again (see
        // `MmapSource::huge_pages` on a change in between).
        let huge = self.source.collapses();
        let memory = self.source.map(PAGE_SIZE, PAGE_SIZE, context)?;
        let page = memory.as_ptr() as *mut PageHeader;
        // SAFETY: fresh, exclusive, page-aligned memory of PAGE_SIZE bytes.
        unsafe { PageHeader::init(page, self.id(), page as usize, PAGE_SIZE, huge) };
        if !self.source.register(page as usize, context) {
            // SAFETY: the mapping was never published.
            unsafe { self.source.unmap(memory, PAGE_SIZE) };
            return None;
        }
        Some(memory.cast())
    }

    /// Maps one more page into the domain now, so that later requests find
    /// fresh slices without mapping. A front whose callers may wait uses it
    /// outside the sections where waiting is forbidden (the kernel module,
    /// with interrupts enabled), then retries there. Returns `false` when the
    /// source is out of memory.
    pub fn grow(&self, context: S::Context) -> bool {
        let Some(page) = self.map_page_or_reclaim(context) else { return false };
        self.locked(|inner| self.add_page(inner, page));
        true
    }

    /// Adds a page mapped by `map_page` to the domain.
    fn add_page(&self, inner: &mut Inner, page: NonNull<PageHeader>) {
        // SAFETY: initialised by map_page, not yet shared.
        let page = unsafe { page.as_ref() };
        page.all_next.set(inner.all_pages);
        if !inner.all_pages.is_null() {
            // SAFETY: live page header.
            unsafe { (*inner.all_pages).all_prev.set(page as *const _ as *mut _) };
        }
        inner.all_pages = page as *const _ as *mut _;
        inner.fresh_link(page);
        inner.refile_runs(page);
        inner.pages_mapped += 1;
    }

    /// Runs `take` on the cheapest slice for `class`, mapping a page if none
    /// is left. Returns `None` when the source is out of memory.
    fn with_slice<R>(
        &self,
        class: usize,
        context: S::Context,
        mut take: impl FnMut(&Self, &mut Inner, &SliceMeta, u64) -> R,
    ) -> Option<R> {
        let now = self.source.now_ms();
        let result = self.locked(|inner| {
            let slice = inner.choose(class)?;
            if self.prepare(slice, class) {
                // SAFETY: chosen under the lock, so no heap owns it and no
                // purge of its holes is in flight; formatted by `prepare`.
                unsafe { self.fill_holes(slice) };
            }
            Some(take(self, inner, slice, now))
        });
        if result.is_some() {
            return result;
        }
        let page = self.map_page_or_reclaim(context)?;
        self.locked(|inner| {
            self.add_page(inner, page);
            let slice = inner.choose(class)?;
            if self.prepare(slice, class) {
                // SAFETY: chosen under the lock, so no heap owns it and no
                // purge of its holes is in flight; formatted by `prepare`.
                unsafe { self.fill_holes(slice) };
            }
            Some(take(self, inner, slice, now))
        })
    }

    /// Gives `slice` to `heap`: the heap now owns it, every free object on
    /// it, and any objects its holes withheld, which [`Domain::refill`]
    /// lists once the lock is released. Domain lock held.
    fn hand_over(&self, inner: &mut Inner, slice: &SliceMeta, heap: usize, now: u64) {
        let state = if slice.used() >= slice.capacity.get() - slice.capacity.get() / 8 {
            SliceState::Full
        } else {
            SliceState::Partial
        };
        let flags = (slice.flags.get() - SliceFlags::PURGED) | SliceFlags::CACHED;
        inner.transition(slice, state, flags, now);
        slice.remote.adopt();
        slice.owner.store(heap, Ordering::Relaxed);
        inner.refills += 1;
    }

    /// First half of giving a heap's slice back, run by the owning heap
    /// *without* the domain lock: clears the owner word, closes the slice's
    /// remote list (detaches it and marks the slice orphaned, one swap) and
    /// walks what was detached, checking its links. [`Domain::take_back`]
    /// finishes under the lock.
    ///
    /// From the swap on, a remote free of the slice is refused and goes to
    /// the domain lock (`free_pending`), which finds the slice orphaned and
    /// frees into its free list there, even before `take_back` (the slice
    /// is still `CACHED` then, so only its list and count change). The heap
    /// must not touch the slice's free list or count after this call: they
    /// are the domain lock's from the swap on (see `RemoteList::orphan`).
    fn close<'a>(&self, slice: &'a SliceMeta) -> Closed<'a> {
        slice.owner.store(0, Ordering::Relaxed);
        let detached = slice.remote.orphan(slice.address);
        // SAFETY: detached by the swap: free objects of `slice`, ours alone.
        let remote = unsafe { Walked::walk(detached, self.link_key()) }.unwrap_or_else(|object| self.corrupted(object));
        Closed { slice, remote }
    }

    /// Second half of giving a heap's slice back: puts the remote frees
    /// walked by [`Domain::close`] in front of the slice's free list (O(1):
    /// nothing is walked here), counts them free, and files the slice by
    /// its new state. Domain lock held.
    fn take_back(&self, inner: &mut Inner, closed: Closed<'_>, now: u64) {
        let Closed { slice, remote } = closed;
        // SAFETY: the walked objects are ours alone (detached by `close`);
        // the free list is the lock holder's since the slice was orphaned.
        unsafe { slice.take_walked(remote, self.link_key()) };
        inner.remote_walked_unlocked += u64::from(remote.count);
        inner.remote_lists_walked += u64::from(remote.count != 0);
        let state = state_for(slice.used(), slice.capacity.get());
        inner.transition(slice, state, slice.flags.get() - SliceFlags::CACHED, now);
        if self.source.purges() {
            // What its heap freed into it is not known: it may be walked.
            slice.used_when_walked.set(u32::MAX);
            inner.note_sparse(slice, now);
        }
    }

    /// Frees the chain of `count` objects of `slice`, `first` to `last`
    /// (one object: `first == last`), into the slice, which no heap owns:
    /// puts it in front of the free list in O(1) and re-files the slice if
    /// its state changed. Domain lock held; the objects' markers are
    /// already set and the links from `first` up to `last` encoded with the
    /// domain's link key; `last`'s own link is set here.
    fn free_locked(&self, inner: &mut Inner, slice: &SliceMeta, first: *mut FreeObject, last: *mut FreeObject, count: u32, now: u64) {
        // SAFETY: the caller validated the chain's objects as live objects
        // of `slice`, now freed and the caller's alone.
        unsafe { FreeObject::set_next(last, slice.free.get(), self.link_key()) };
        slice.free.set(first);
        let used = slice.used() - count;
        slice.set_used(used);
        if slice.has(SliceFlags::CACHED) {
            return;
        }
        let state = state_for(used, slice.capacity.get());
        // Most frees change nothing the lists see: skip the re-filing then.
        if state != slice.state.get() || Inner::list_for(slice) != slice.linked.get() {
            inner.transition(slice, state, slice.flags.get(), now);
        }
        if self.source.purges() {
            inner.note_sparse(slice, now);
        }
    }

    // ----- entry points for heaps -----------------------------------------

    /// Releases `old` (if any) and hands a new slice of `class` to `heap`,
    /// flushing the heap's pending frees in the same critical section. The
    /// old slice and the flushed frees go back first, so the choice sees
    /// them: a slice they made partial beats a clean one.
    pub(crate) fn refill(
        &self,
        heap: &mut Heap,
        class: usize,
        old: Option<&SliceMeta>,
        context: S::Context,
    ) -> Option<NonNull<SliceMeta>> {
        let heap_id = heap as *const Heap as usize;
        let now = self.source.now_ms();
        // The slice handed over, the parts of its page to collapse, and
        // whether it has holes to fill.
        let give = |inner: &mut Inner| {
            let slice = inner.choose(class)?;
            let holed = self.prepare(slice, class);
            self.hand_over(inner, slice, heap_id, now);
            // SAFETY: descriptors live in page headers.
            let parts = self.claim_collapse(unsafe { page_of_slice(slice) });
            Some((NonNull::from(slice), parts, holed))
        };
        // The old slice's remote list is closed and walked before the lock.
        let closed = old.map(|old| self.close(old));
        let mut taken = self.locked(|inner| {
            if let Some(closed) = closed {
                self.take_back(inner, closed, now);
            }
            self.flush_locked(inner, heap, now);
            give(inner)
        });
        if taken.is_none() {
            if let Some(page) = self.map_page_or_reclaim(context) {
                taken = self.locked(|inner| {
                    self.add_page(inner, page);
                    give(inner)
                });
            }
        }
        if let Some((slice, _, true)) = taken {
            // The holes' pages fault back in here, with the lock released,
            // before the heap allocates from the slice.
            // SAFETY: the heap owns the slice (descriptors live in page
            // headers, and its page stays while the heap holds it); it came
            // through `choose`, so no purge of its holes is in flight;
            // `prepare` formatted it.
            let listed = unsafe { self.fill_holes(slice.as_ref()) };
            self.hole_fills.fetch_add(1, Ordering::Relaxed);
            self.hole_fill_objects.fetch_add(u64::from(listed), Ordering::Relaxed);
        }
        self.maybe_purge();
        let (slice, parts, _) = taken?;
        if parts != 0 {
            // SAFETY: the heap owns the slice, so its page stays live.
            unsafe { self.collapse_parts(slice.as_ptr() as usize, parts) };
        }
        Some(slice)
    }

    /// The collapse parts of `page` that the caller, which has just taken a
    /// slice of it under the lock, is to ask the source for: those with no
    /// fresh slice left that nobody asked for since they last had one (none
    /// while the source does not collapse). Marks them asked for. Lock held.
    fn claim_collapse(&self, page: &PageHeader) -> u8 {
        let asked = page.collapse.get();
        if asked == COLLAPSE_ALL || !self.source.collapses() {
            return 0;
        }
        let fresh = page.fresh.get();
        let parts = (0..COLLAPSE_PARTS)
            .filter(|&part| asked & (1 << part) == 0 && fresh & part_slices(part) == 0)
            .fold(0u8, |parts, part| parts | 1 << part);
        page.collapse.set(asked | parts);
        parts
    }

    /// Asks the source to move `parts` (claimed by
    /// [`Self::claim_collapse`]) of the page holding `address` onto huge
    /// pages ([`PageSource::collapse`]), for fewer TLB misses on memory in
    /// use. Parts moved are counted in [`Stats::parts_collapsed`]. Called
    /// without the lock.
    ///
    /// # Safety
    /// `address` lies in a slab page of this domain that stays live until
    /// the call returns (the caller holds one of its slices).
    unsafe fn collapse_parts(&self, address: usize, parts: u8) {
        let page = address & !(PAGE_SIZE - 1);
        for part in (0..COLLAPSE_PARTS).filter(|&part| parts & (1 << part) != 0) {
            let start = page + part * COLLAPSE_SIZE;
            // SAFETY: inside a live page of this source, by the caller's
            // contract; never null.
            if unsafe { self.source.collapse(NonNull::new_unchecked(start as *mut u8)) } {
                self.collapses.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Moves a heap's counters and pending frees into the domain. Lock held.
    fn flush_locked(&self, inner: &mut Inner, heap: &mut Heap, now: u64) {
        let drained = heap.drain_pending();
        for &object in drained.objects.iter().take(drained.object_count) {
            self.free_pending(inner, object, now);
        }
        for chain in drained.chains.iter().take(drained.chain_count) {
            self.free_chain_pending(inner, chain, now);
        }
        inner.remote_frees += drained.counters.remote_frees;
        inner.flushes += drained.counters.flushes;
    }

    /// Frees one object that found its slice orphaned. Lock held.
    ///
    /// The slice may have been handed to a heap since (adoption happens
    /// only under the lock), and that heap may close its remote list again
    /// at any moment, without the lock (`close`). So the push is tried
    /// first, and its outcome says on which side of the closing swap the
    /// object landed: pushed, it is the owner's (or on the list the owner
    /// detaches and splices); refused, the slice is orphaned and stays so
    /// while the lock is held, and the object goes into its free list here.
    fn free_pending(&self, inner: &mut Inner, object: *mut FreeObject, now: u64) {
        // SAFETY: `object` was validated by `lookup` as an object of a live
        // slab page of this domain, which cannot go away while one of its
        // objects is in use (this one, until the free completes).
        let slice = unsafe { slice_of(object as usize) };
        // SAFETY: a live object of `slice`, owned by the caller.
        match unsafe { slice.remote.push(object as *mut Link, self.link_key()) } {
            Push::Pushed => inner.remote_frees += 1,
            Push::Orphaned => {
                // Acquire: the last owner's writes to the free list and
                // count are seen (the push's own read is Relaxed).
                let orphaned = slice.remote.is_orphaned();
                debug_assert!(orphaned, "a slice was adopted without the domain lock");
                self.free_locked(inner, slice, object, object, 1, now);
            }
        }
    }

    /// [`Domain::free_pending`] for a chain of objects of one slice, which
    /// a heap's batch of remote frees found orphaned: pushed whole onto
    /// the remote list if the slice has been handed to a heap since, else
    /// spliced whole onto its free list. Lock held.
    fn free_chain_pending(&self, inner: &mut Inner, chain: &RemoteBatch, now: u64) {
        // SAFETY: a chain holds objects of one slice, which count as in use
        // until freed here, so the slice's descriptor is live.
        let slice = unsafe { &*chain.slice };
        let (first, last) = (chain.first as *mut Link, chain.last as *mut Link);
        // SAFETY: the chain's objects are freed, marked and the caller's
        // alone, linked from `first` to `last` with the domain's link key
        // (the heap's, which is bound to this domain).
        match unsafe { slice.remote.push_chain(first, last, chain.count, self.link_key()) } {
            Push::Pushed => inner.remote_frees += u64::from(chain.count),
            Push::Orphaned => {
                // Acquire, as in `free_pending`.
                let orphaned = slice.remote.is_orphaned();
                debug_assert!(orphaned, "a slice was adopted without the domain lock");
                self.free_locked(inner, slice, chain.first, chain.last, chain.count, now);
            }
        }
    }

    /// Gives every slice and pending free of `heap` back to the domain,
    /// [`RELEASE_BATCH`] slices per critical section: each batch's remote
    /// lists are closed and walked before the lock is taken, and only
    /// spliced under it. The pending frees go with the last batch.
    pub(crate) fn release_heap(&self, heap: &mut Heap) {
        // First the remote frees the heap holds back: they may belong to
        // slices it owns by now, which it is about to close.
        heap.flush_remote(self);
        let now = self.source.now_ms();
        let mut class = 0;
        loop {
            let mut batch: [Option<Closed<'_>>; RELEASE_BATCH] = [None; RELEASE_BATCH];
            // Filled in order, through an iterator (no index to check).
            for entry in batch.iter_mut() {
                let slice = loop {
                    if class == CLASS_COUNT {
                        break None;
                    }
                    match heap.take_slice(class) {
                        Some(slice) => break Some(slice),
                        None => class += 1,
                    }
                };
                let Some(slice) = slice else { break };
                // SAFETY: a slice the heap owned; descriptors are never
                // freed while their page is in use.
                *entry = Some(self.close(unsafe { slice.as_ref() }));
            }
            let last = class == CLASS_COUNT;
            self.locked(|inner| {
                for closed in batch.iter().flatten() {
                    self.take_back(inner, *closed, now);
                }
                if last {
                    self.flush_locked(inner, heap, now);
                    inner.flushes += 1;
                }
            });
            if last {
                break;
            }
        }
        self.maybe_purge();
    }

    /// Flushes a heap's pending frees and counters without releasing slices.
    pub(crate) fn flush_heap(&self, heap: &mut Heap) {
        let now = self.source.now_ms();
        self.locked(|inner| self.flush_locked(inner, heap, now));
    }

    /// Allocates one object of `class` with no cache: for threads whose
    /// cache is gone (exiting) or serves another domain.
    pub fn alloc_uncached(&self, class: usize, context: S::Context) -> *mut u8 {
        let object = self.with_slice(class, context, |domain, inner, slice, now| {
            if slice.corrupt_head().is_some() {
                domain.corrupted_list(slice);
            }
            if slice.free_is_empty() {
                // SAFETY: an unowned slice, held under the lock.
                unsafe { slice.carve(domain.key(), domain.link_key(), domain.random()) };
            }
            // SAFETY: an unowned slice, its list held under the lock.
            let object = unsafe { slice.take(domain.link_key()) };
            if object.is_null() {
                // The chosen slice was owned or exhausted (never, by `choose`).
                return ptr::null_mut();
            }
            let used = slice.used();
            let flags = slice.flags.get() - SliceFlags::PURGED;
            inner.transition(slice, state_for(used, slice.capacity.get()), flags, now);
            object as *mut u8
        });
        object.unwrap_or(ptr::null_mut())
    }

    /// Allocates `layout` with no cache (zeroed if asked): for callers with
    /// no usable heap.
    pub fn allocate_uncached(&self, layout: Layout, zeroed: bool) -> *mut u8 {
        self.allocate_uncached_in(layout, zeroed, S::Context::default())
    }

    /// [`Domain::allocate_uncached`] within an allocation context.
    pub fn allocate_uncached_in(&self, layout: Layout, zeroed: bool, context: S::Context) -> *mut u8 {
        match class_of(layout.size(), layout.align()) {
            Some(class) => {
                let object = self.alloc_uncached(class, context);
                if zeroed && !object.is_null() {
                    // SAFETY: the object holds at least `layout.size()` bytes.
                    unsafe { ptr::write_bytes(object, 0, layout.size()) };
                }
                object
            }
            None => self.alloc_large(layout.size(), layout.align(), zeroed, context),
        }
    }

    /// Allocates `out.len()` blocks of `layout` with no cache, one at a time,
    /// all or nothing like [`Heap::alloc_bulk_in`]: returns `out.len()`, or
    /// 0 with every block taken on the way freed again and `out` holding
    /// nulls.
    pub fn allocate_bulk_uncached(&self, layout: Layout, out: &mut [*mut u8], context: S::Context) -> usize {
        for filled in 0..out.len() {
            let block = self.allocate_uncached_in(layout, false, context);
            if block.is_null() {
                for taken in out.iter_mut().take(filled) {
                    // SAFETY: a block allocated just above and never handed
                    // out; a failure would be an allocator bug, and the
                    // block is then left allocated rather than freed twice.
                    let _ = unsafe { self.free_uncached(*taken as usize) };
                    *taken = ptr::null_mut();
                }
                return 0;
            }
            if let Some(slot) = out.get_mut(filled) {
                *slot = block;
            }
        }
        out.len()
    }

    /// Frees every block of `blocks` with no cache. A bad pointer is
    /// refused and the others are still freed; the first error is returned.
    ///
    /// # Safety
    /// As for [`Domain::free_uncached`], for each block.
    pub unsafe fn free_bulk_uncached(&self, blocks: &[*mut u8]) -> Result<(), FreeError> {
        let mut first = Ok(());
        for &block in blocks {
            // SAFETY: the caller's contract.
            if let Err(error) = unsafe { self.free_uncached(block as usize) } {
                first = first.and(Err(error));
            }
        }
        first
    }

    /// Resizes the allocation at `address` to `layout` with no cache, by
    /// moving it. Returns `Ok(null)` when out of memory, leaving the old
    /// allocation untouched.
    ///
    /// # Safety
    /// As for [`Domain::free_uncached`]; on success the old allocation must
    /// not be used.
    pub unsafe fn reallocate_uncached(&self, address: usize, layout: Layout) -> Result<*mut u8, FreeError> {
        let usable = self.usable_size(address)?;
        if usable > crate::size_class::MAX_SMALL {
            // SAFETY: a live allocation of the caller's.
            if let Some(resized) = unsafe { self.resize_large(address, layout.size(), layout.align(), S::Context::default()) } {
                return Ok(resized);
            }
        }
        let moved = match self.alloc_large_to_grow(usable, layout.size(), layout.align(), S::Context::default()) {
            Some(block) => block,
            None => self.allocate_uncached(layout, false),
        };
        if !moved.is_null() {
            // SAFETY: both blocks hold the copied length and are distinct;
            // the caller's contract covers the free.
            unsafe {
                ptr::copy_nonoverlapping(address as *const u8, moved, usable.min(layout.size()));
                self.free_uncached(address)?;
            }
        }
        Ok(moved)
    }

    /// Frees `address` with no cache. Checks it fully.
    ///
    /// # Safety
    /// `address` must not be used by the caller after a successful free.
    pub unsafe fn free_uncached(&self, address: usize) -> Result<(), FreeError> {
        let found = self.lookup(address).map_err(FreeError::in_free)?;
        match found {
            Lookup::Small { slice } => {
                // SAFETY: `lookup` proved it is an object boundary of a
                // carved object of a formatted slice of ours.
                let object = unsafe { FreeObject::mark_freed(address, self.key())? };
                // SAFETY: the object is ours to give back.
                unsafe {
                    if slice.remote.push(object as *mut Link, self.link_key()) == Push::Pushed {
                        self.locked(|inner| inner.remote_frees += 1);
                        return Ok(());
                    }
                }
                let now = self.source.now_ms();
                self.locked(|inner| self.free_pending(inner, object, now));
                Ok(())
            }
            Lookup::Span { .. } | Lookup::Huge { .. } => {
                // SAFETY: forwarded.
                unsafe { self.free_large(address) }
            }
        }
    }
}

/// What an address points at.
pub(crate) enum Lookup<'a> {
    Small { slice: &'a SliceMeta },
    Span { slice: &'a SliceMeta },
    Huge { common: &'a PageCommon },
}

/// The descriptor of the slice holding `address`: the header of its page
/// is found by masking the address, with no check at all.
///
/// # Safety
/// `address` must lie inside a slab page (past its header slice) that is
/// mapped and initialised, and the page must stay mapped for as long as
/// the returned reference is used: the `'static` lifetime is the caller's
/// promise, not a fact (pages go back to the source once empty). Addresses
/// validated by `Domain::lookup`, of objects in use, qualify while the
/// object is.
#[inline(always)]
pub(crate) unsafe fn slice_of(address: usize) -> &'static SliceMeta {
    let page = page_of(address);
    // SAFETY: the caller guarantees a live slab page.
    let header = unsafe { &*(page as *const PageHeader) };
    &header.slices[((address - page) >> SLICE_SHIFT) & (SLICES_PER_PAGE - 1)]
}

/// A slice on its way back from a heap to the domain: its remote list
/// closed and walked outside the lock ([`Domain::close`]), waiting for the
/// splice under it ([`Domain::take_back`]). Between the two the slice is
/// orphaned but still `CACHED`, on no list, so no heap can be handed it.
#[derive(Clone, Copy)]
struct Closed<'a> {
    slice: &'a SliceMeta,
    /// The remote frees detached when the list was closed.
    remote: Walked,
}

mod large;
mod lookup;
mod purge;
mod statistics;
#[cfg(test)]
use large::find_run;
pub use large::{HUGE_CACHE_BYTES, HUGE_CACHE_ENTRIES};

#[cfg(test)]
mod tests;
