//! Pages: large aligned blocks from the page source, with a header in front.
//!
//! A slab page is [`PAGE_SIZE`] bytes aligned to [`PAGE_SIZE`]. Its first slice
//! holds the `PageHeader` with every slice descriptor; slices
//! [`FIRST_SLICE`]`..`[`SLICES_PER_PAGE`] hold objects. Because no object
//! starts at a page boundary, the header of any object is found by masking
//! `address - 1` down to the page alignment, and the slice by shifting the
//! offset.
//!
//! A huge allocation (larger than a span, or aligned to a page or more) gets a
//! mapping of its own with a short header of the same kind in front of the
//! object, placed so that the same mask finds it.

use core::cell::Cell;
use core::mem::size_of;
use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};

use static_assertions::const_assert;

use crate::size_class::CLASS_COUNT;
use crate::slice::SliceMeta;

/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 22;
/// Size and alignment of a slab page: 4 MiB.
pub const PAGE_SIZE: usize = 1 << PAGE_SHIFT;
/// log2 of [`SLICE_SIZE`].
pub const SLICE_SHIFT: u32 = 16;
/// Size and alignment of a slice: 64 KiB.
pub const SLICE_SIZE: usize = 1 << SLICE_SHIFT;
static_assertions::const_assert_eq!(SLICE_SIZE, crate::remote::LINK_REGION);
/// Slices per page, including the header slice.
pub const SLICES_PER_PAGE: usize = PAGE_SIZE / SLICE_SIZE;
/// The first slice that holds objects; slice 0 holds the header.
pub const FIRST_SLICE: usize = 1;
/// Slices per page that hold objects.
pub const USABLE_SLICES: usize = SLICES_PER_PAGE - FIRST_SLICE;
/// The part of a page the domain asks the page source to move onto one
/// huge page ([`PageSource::collapse`](crate::source::PageSource::collapse)):
/// 2 MiB, the transparent huge page of x86_64 and of arm64 with 4 KiB
/// pages. A page has [`COLLAPSE_PARTS`] of them.
pub const COLLAPSE_SIZE: usize = 2 << 20;
/// Collapse parts per page.
pub const COLLAPSE_PARTS: usize = PAGE_SIZE / COLLAPSE_SIZE;
// Parts are bits of a `u8` (`PageHeader::collapse`), and whole slices.
static_assertions::const_assert!(PAGE_SIZE.is_multiple_of(COLLAPSE_SIZE) && COLLAPSE_PARTS <= 7);
static_assertions::const_assert!(COLLAPSE_SIZE.is_multiple_of(SLICE_SIZE));
/// The largest multi-slice span; larger requests map directly.
pub const MAX_SPAN_SLICES: usize = 32;
/// The largest request served from a span.
pub const MAX_SPAN: usize = MAX_SPAN_SLICES * SLICE_SIZE;

/// Number of occupancy buckets used to prefer slices in fuller pages.
pub(crate) const BUCKETS: usize = 4;

/// Files of a page (see [`PageHeader::file_first`]): file `c` holds the
/// page's partial slices of class `c`, file `CLASS_COUNT + c` its dirty
/// slices that last held class `c` (`c` up to `SPAN_CLASS`, which is
/// `CLASS_COUNT`, for spans).
pub(crate) const PAGE_FILES: usize = 2 * CLASS_COUNT + 1;

/// The file of the page's partial slices of `class` (a small class).
#[inline(always)]
pub(crate) fn partial_file(class: usize) -> usize {
    class.min(CLASS_COUNT - 1)
}

/// The file of the page's dirty slices that last held `class` (a small
/// class, or `SPAN_CLASS`).
#[inline(always)]
pub(crate) fn dirty_file(class: usize) -> usize {
    CLASS_COUNT + class.min(CLASS_COUNT)
}

/// What a page holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PageKind {
    /// Slices of small objects and spans.
    Slab,
    /// One huge object.
    Huge,
}

/// Bit 0 of [`PageCommon::tag`]: the page holds one huge object. Domain
/// addresses are word-aligned, so the bit is free.
const HUGE_TAG: usize = 1;

/// Fields common to slab and huge pages.
///
/// Every free, on any thread, reads `tag` (and look-ups read `object` and
/// `object_size`) without the domain lock, so the fields read that way are
/// atomics, loaded and stored `Relaxed`: plain moves on x86. `tag`,
/// `map_base`, `map_len` and `object` are written before the page is
/// registered and never changed while it is; a free of a live object is
/// ordered after that by the chain that handed the object out (domain lock,
/// allocation, the caller's own hand-over), so Relaxed reads see the written
/// values. Only a pointer that was never live can race with a header being
/// written; atomics keep that a refused pointer rather than a data race on
/// these words.
#[repr(C)]
pub(crate) struct PageCommon {
    /// The owning domain's address, with [`HUGE_TAG`] set for a huge page:
    /// one word, so that the free fast path tests "a slab page of this
    /// domain" with one comparison. Frees check it before trusting anything
    /// else in the header.
    /// Invariant: set before the page is registered with its source, never
    /// changed while it is there.
    pub(crate) tag: AtomicUsize,
    /// The mapping the page came from, to give back to the source. Read only
    /// under the domain lock once the page is published.
    pub(crate) map_base: usize,
    pub(crate) map_len: usize,
    /// Huge pages: the object address (same rule as `tag`) and its usable
    /// size. `object_size` is set to 0 under the domain lock when the object
    /// is freed, while look-ups on other threads may read it without the
    /// lock (a racing double free or size query): Relaxed, as `tag`.
    pub(crate) object: AtomicUsize,
    pub(crate) object_size: AtomicUsize,
}

impl PageCommon {
    /// Fields for a page of `kind` owned by the domain at `domain`.
    pub(crate) const fn new(
        kind: PageKind,
        domain: usize,
        map_base: usize,
        map_len: usize,
        object: usize,
        object_size: usize,
    ) -> Self {
        let tag = match kind {
            PageKind::Slab => domain,
            PageKind::Huge => domain | HUGE_TAG,
        };
        Self {
            tag: AtomicUsize::new(tag),
            map_base,
            map_len,
            object: AtomicUsize::new(object),
            object_size: AtomicUsize::new(object_size),
        }
    }

    /// What the page holds, if it belongs to the domain at `domain`.
    #[inline(always)]
    pub(crate) fn kind_in(&self, domain: usize) -> Option<PageKind> {
        let tag = self.tag.load(Ordering::Relaxed);
        if tag == domain {
            Some(PageKind::Slab)
        } else if tag == domain | HUGE_TAG {
            Some(PageKind::Huge)
        } else {
            None
        }
    }

    /// Huge pages: the object's address.
    #[inline(always)]
    pub(crate) fn object(&self) -> usize {
        self.object.load(Ordering::Relaxed)
    }

    /// Huge pages: the object's usable size, 0 once freed.
    #[inline(always)]
    pub(crate) fn object_size(&self) -> usize {
        self.object_size.load(Ordering::Relaxed)
    }
}

/// Bits of [`PageHeader::collapse`]: every part asked for.
pub(crate) const COLLAPSE_ALL: u8 = (1 << COLLAPSE_PARTS) - 1;

/// The slices of collapse part `part`, as a mask of the page's `fresh` bits.
#[inline]
pub(crate) const fn part_slices(part: usize) -> u64 {
    const PER_PART: usize = SLICES_PER_PAGE / COLLAPSE_PARTS;
    (!0u64 >> (64 - PER_PART)) << (part * PER_PART)
}

/// The collapse part slice `index` lies in.
#[inline]
const fn part_of_slice(index: usize) -> usize {
    index / (SLICES_PER_PAGE / COLLAPSE_PARTS)
}

/// Header of a slab page.
#[repr(C)]
pub(crate) struct PageHeader {
    pub(crate) common: PageCommon,
    /// Slices in state partial or full (owned slices and spans included).
    /// Domain lock.
    pub(crate) occupancy: Cell<u32>,
    /// Bucket the page is filed under, with its fresh entry and its
    /// memberships of the domain's partial and dirty lists (one per
    /// non-empty file): always `bucket_of(occupancy)`. Domain lock.
    pub(crate) bucket: Cell<u8>,
    /// Bit `p`: collapse part `p` (see [`COLLAPSE_SIZE`]) may be on a huge
    /// page, and no purge has split it since. Set for every part when the
    /// page is mapped with huge pages asked for (the source backs each part
    /// with a huge page from its first touch), and for a part that was
    /// asked for since, by the heap handed the slice that left it with no
    /// fresh slice. Cleared by the first purge in the part, which splits it
    /// ([`PageSource::split`](crate::source::PageSource::split)) and purges
    /// its clean slices too. Domain lock.
    pub(crate) collapse: Cell<u8>,
    /// Bit i: slice i is clean or purged (the "fresh" cost tier). Domain lock.
    pub(crate) fresh: Cell<u64>,
    /// Bit i: slice i is dirty and not purged. Domain lock.
    pub(crate) dirty: Cell<u64>,
    /// Links in `fresh_pages[bucket]` while `fresh != 0`. Domain lock.
    pub(crate) fresh_next: Cell<*mut PageHeader>,
    pub(crate) fresh_prev: Cell<*mut PageHeader>,
    /// Links in the list of all slab pages. Domain lock.
    pub(crate) all_next: Cell<*mut PageHeader>,
    pub(crate) all_prev: Cell<*mut PageHeader>,
    /// The longest run of usable slices free for a span, capped at
    /// [`MAX_SPAN_SLICES`]: index 0, fresh or dirty; index 1, dirty only.
    /// The page is filed under it in the domain's span lists of that kind
    /// while it is not 0. Domain lock.
    pub(crate) runs: [Cell<u8>; 2],
    /// Links in those span lists, one pair per kind. Domain lock.
    pub(crate) run_next: [Cell<*mut PageHeader>; 2],
    pub(crate) run_prev: [Cell<*mut PageHeader>; 2],
    /// Bit `c`: file `c` (partial slices of class `c`) is not empty.
    /// Invariant: equals the set of `c < CLASS_COUNT` with
    /// `file_first[c] != 0`. Domain lock.
    pub(crate) partial_classes: Cell<u128>,
    /// Bit `c`: file `CLASS_COUNT + c` (dirty slices that last held class
    /// `c`, or spans for `SPAN_CLASS`) is not empty. Invariant: as
    /// `partial_classes`, for the dirty files. Domain lock.
    pub(crate) dirty_classes: Cell<u128>,
    /// The page's files ([`PAGE_FILES`]): the partial and dirty slices of
    /// the page that no heap owns, one list per state and class, instead of
    /// one list per state, class and bucket across the domain. Entry `f` is
    /// the index of the first slice on file `f` (the most recently filed),
    /// 0 (the header slice, never filed) when the file is empty; the
    /// others follow through the slices' `next` and `prev` links.
    /// Invariant: a slice is on file `f` exactly when its `linked` names
    /// that state and class. An index, not a pointer, so that the files fit
    /// the header's fifth OS page (see the assertion below). Domain lock.
    pub(crate) file_first: [Cell<u8>; PAGE_FILES],
    /// Per file, the page's links in the domain's list of pages with slices
    /// on that file and in the page's bucket (`partial[class][bucket]` or
    /// `dirty[class][bucket]`). Invariant: the page is on that list, for
    /// its current `bucket`, exactly while the file is not empty; a bucket
    /// change moves one membership per non-empty file, never a slice.
    /// Domain lock.
    pub(crate) file_next: [Cell<*mut PageHeader>; PAGE_FILES],
    pub(crate) file_prev: [Cell<*mut PageHeader>; PAGE_FILES],
    /// Descriptors; index 0 describes the header slice and is never used.
    pub(crate) slices: [SliceMeta; SLICES_PER_PAGE],
}

const_assert!(size_of::<PageHeader>() <= SLICE_SIZE * FIRST_SLICE);
// The header, files included, is written when the page is mapped and stays
// resident: five 4 KiB pages (the descriptors take four of them), counted
// in `Stats::bytes_resident`. Growing it past that costs every page 4 KiB.
const_assert!(size_of::<PageHeader>() <= 5 * 4096);
const_assert!(CLASS_COUNT < 128); // the class masks are u128, SPAN_CLASS (CLASS_COUNT) included
const_assert!(SLICES_PER_PAGE <= 256); // file heads are u8 slice indices
const_assert!(size_of::<PageCommon>() <= 64);
const_assert!(SLICES_PER_PAGE == 64); // the fresh and dirty masks are u64
const_assert!(MAX_SPAN_SLICES <= USABLE_SLICES);
const_assert!(core::mem::align_of::<PageHeader>() <= SLICE_SIZE);

/// The page unit holding `address`: the header address of a slab or huge
/// page, if `address` was handed out by Strata.
#[inline(always)]
pub(crate) fn page_of(address: usize) -> usize {
    (address.wrapping_sub(1)) & !(PAGE_SIZE - 1)
}

/// The occupancy bucket of a page with `occupancy` slices in use.
#[inline]
pub(crate) fn bucket_of(occupancy: u32) -> u8 {
    ((occupancy as usize * BUCKETS) / (USABLE_SLICES + 1)) as u8
}

impl PageHeader {
    /// Lets the collapse part holding slice `index` be asked for again
    /// ([`PageHeader::collapse`]): a purge in it split its huge page, if
    /// any. Domain lock.
    #[inline]
    pub(crate) fn part_split(&self, index: usize) {
        self.collapse.set(self.collapse.get() & !(1 << part_of_slice(index)));
    }

    /// Initialises a slab page header in place. `huge` says whether the
    /// source was asked for huge pages when it mapped the page: every part
    /// is then counted as on a huge page.
    ///
    /// # Safety
    /// `page` must be valid for writes of a `PageHeader`, aligned to
    /// [`PAGE_SIZE`], and not yet visible to any other thread.
    pub(crate) unsafe fn init(page: *mut PageHeader, domain: usize, map_base: usize, map_len: usize, huge: bool) {
        let common = PageCommon::new(PageKind::Slab, domain, map_base, map_len, 0, 0);
        // SAFETY: the caller guarantees exclusive access to writable memory.
        unsafe {
            ptr::addr_of_mut!((*page).common).write(common);
            ptr::addr_of_mut!((*page).occupancy).write(Cell::new(0));
            ptr::addr_of_mut!((*page).bucket).write(Cell::new(0));
            ptr::addr_of_mut!((*page).collapse).write(Cell::new(if huge { COLLAPSE_ALL } else { 0 }));
            let usable = !0u64 << FIRST_SLICE;
            ptr::addr_of_mut!((*page).fresh).write(Cell::new(usable));
            ptr::addr_of_mut!((*page).dirty).write(Cell::new(0));
            ptr::addr_of_mut!((*page).fresh_next).write(Cell::new(ptr::null_mut()));
            ptr::addr_of_mut!((*page).fresh_prev).write(Cell::new(ptr::null_mut()));
            ptr::addr_of_mut!((*page).all_next).write(Cell::new(ptr::null_mut()));
            ptr::addr_of_mut!((*page).all_prev).write(Cell::new(ptr::null_mut()));
            ptr::addr_of_mut!((*page).runs).write([Cell::new(0), Cell::new(0)]);
            ptr::addr_of_mut!((*page).run_next).write([Cell::new(ptr::null_mut()), Cell::new(ptr::null_mut())]);
            ptr::addr_of_mut!((*page).run_prev).write([Cell::new(ptr::null_mut()), Cell::new(ptr::null_mut())]);
            ptr::addr_of_mut!((*page).partial_classes).write(Cell::new(0));
            ptr::addr_of_mut!((*page).dirty_classes).write(Cell::new(0));
            // Every file empty: zero bytes are index 0 and null pointers,
            // valid values of these `Cell`s (written in place: the arrays
            // are too large for a kernel stack).
            ptr::addr_of_mut!((*page).file_first).write_bytes(0, 1);
            ptr::addr_of_mut!((*page).file_next).write_bytes(0, 1);
            ptr::addr_of_mut!((*page).file_prev).write_bytes(0, 1);
            let slices = ptr::addr_of_mut!((*page).slices) as *mut SliceMeta;
            for i in 0..SLICES_PER_PAGE {
                slices.add(i).write(SliceMeta::new(page as usize + i * SLICE_SIZE));
            }
        }
    }

    /// Address of the page.
    #[inline(always)]
    pub(crate) fn base(&self) -> usize {
        self as *const Self as usize
    }

    /// Address of slice `index`.
    #[inline(always)]
    pub(crate) fn slice_address(&self, index: usize) -> usize {
        self.base() + index * SLICE_SIZE
    }

    /// Index of the slice described by `slice`, which must belong to this page.
    #[inline]
    pub(crate) fn index_of(&self, slice: &SliceMeta) -> usize {
        (slice as *const SliceMeta as usize - self.slices.as_ptr() as usize) / size_of::<SliceMeta>()
    }

    /// The first slice on file `file` (see [`PageHeader::file_first`]), or
    /// null when the file is empty.
    #[inline]
    pub(crate) fn file_head(&self, file: usize) -> *mut SliceMeta {
        let index = self.file_first[file.min(PAGE_FILES - 1)].get() as usize;
        if index == 0 {
            ptr::null_mut()
        } else {
            &self.slices[index & (SLICES_PER_PAGE - 1)] as *const SliceMeta as *mut SliceMeta
        }
    }

    /// Sets (`on`) or clears the bit of file `file` in the class masks
    /// (`partial_classes`, `dirty_classes`).
    #[inline]
    pub(crate) fn set_file_bit(&self, file: usize, on: bool) {
        let (mask, bit) = if file < CLASS_COUNT {
            (&self.partial_classes, 1u128 << file)
        } else {
            (&self.dirty_classes, 1u128 << ((file - CLASS_COUNT) & 127))
        };
        mask.set(if on { mask.get() | bit } else { mask.get() & !bit });
    }

    /// Makes `slice` (a descriptor of this page, or null for none) the first
    /// slice on file `file`.
    #[inline]
    pub(crate) fn set_file_head(&self, file: usize, slice: *const SliceMeta) {
        let index = if slice.is_null() {
            0
        } else {
            (slice as usize - self.slices.as_ptr() as usize) / size_of::<SliceMeta>()
        };
        debug_assert!((FIRST_SLICE..SLICES_PER_PAGE).contains(&index) || slice.is_null());
        self.file_first[file.min(PAGE_FILES - 1)].set(index as u8);
    }
}

/// The page header that holds a descriptor.
///
/// # Safety
/// `slice` must be a descriptor inside a live page header.
#[inline]
pub(crate) unsafe fn page_of_slice(slice: &SliceMeta) -> &PageHeader {
    let page = (slice as *const SliceMeta as usize) & !(PAGE_SIZE - 1);
    // SAFETY: descriptors live in the header at the start of their page.
    unsafe { &*(page as *const PageHeader) }
}
