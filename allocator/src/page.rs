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
/// The largest multi-slice span; larger requests map directly.
pub const MAX_SPAN_SLICES: usize = 32;
/// The largest request served from a span.
pub const MAX_SPAN: usize = MAX_SPAN_SLICES * SLICE_SIZE;

/// Number of occupancy buckets used to prefer slices in fuller pages.
pub(crate) const BUCKETS: usize = 4;

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

/// Header of a slab page.
#[repr(C)]
pub(crate) struct PageHeader {
    pub(crate) common: PageCommon,
    /// Slices in state partial or full (owned slices and spans included).
    /// Domain lock.
    pub(crate) occupancy: Cell<u32>,
    /// Bucket the page's listed slices and its fresh entry are filed under:
    /// always `bucket_of(occupancy)`. Domain lock.
    pub(crate) bucket: Cell<u8>,
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
    /// Descriptors; index 0 describes the header slice and is never used.
    pub(crate) slices: [SliceMeta; SLICES_PER_PAGE],
}

const_assert!(size_of::<PageHeader>() <= SLICE_SIZE * FIRST_SLICE);
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
    /// Initialises a slab page header in place.
    ///
    /// # Safety
    /// `page` must be valid for writes of a `PageHeader`, aligned to
    /// [`PAGE_SIZE`], and not yet visible to any other thread.
    pub(crate) unsafe fn init(page: *mut PageHeader, domain: usize, map_base: usize, map_len: usize) {
        let common = PageCommon::new(PageKind::Slab, domain, map_base, map_len, 0, 0);
        // SAFETY: the caller guarantees exclusive access to writable memory.
        unsafe {
            ptr::addr_of_mut!((*page).common).write(common);
            ptr::addr_of_mut!((*page).occupancy).write(Cell::new(0));
            ptr::addr_of_mut!((*page).bucket).write(Cell::new(0));
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
            let slices = ptr::addr_of_mut!((*page).slices) as *mut SliceMeta;
            for i in 0..SLICES_PER_PAGE {
                slices.add(i).write(SliceMeta::new());
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
