//! Unit tests of the slice state machine and the cost model: slices are put
//! in known states, and the tests assert which one a request takes.

use super::*;
use crate::lock::SpinLock;
use crate::page::{SLICES_PER_PAGE, USABLE_SLICES};

extern crate std;

/// The page source of the tests: mmap, or under Miri an arena (Miri runs
/// no partial `munmap`, which the mmap source uses to trim its mappings to
/// their alignment, and no `madvise`).
#[cfg(not(miri))]
type TestSource = crate::source::MmapSource;
#[cfg(miri)]
type TestSource = crate::source::ArenaSource;

type TestDomain = Domain<TestSource, SpinLock>;

#[cfg(not(miri))]
fn source() -> TestSource {
    TestSource::new()
}

/// An arena with room for the largest test, a huge allocation of five pages
/// aligned to four, at any alignment of the region.
#[cfg(miri)]
fn source() -> TestSource {
    let source = TestSource::empty();
    let region: &'static mut [u8] = std::boxed::Box::leak(std::vec![0u8; 14 * PAGE_SIZE].into_boxed_slice());
    assert!(source.init(region));
    source
}

/// Domains built by the tests, kept reachable for the life of the process so
/// that descriptors can be borrowed for `'static` (and leak checkers agree).
static DOMAINS: std::sync::Mutex<std::vec::Vec<usize>> = std::sync::Mutex::new(std::vec::Vec::new());

fn domain() -> &'static TestDomain {
    domain_with(source())
}

/// Maps and publishes a page.
fn page(domain: &TestDomain) -> &'static PageHeader {
    let page = domain.map_page(()).expect("map a page");
    domain.locked(|inner| domain.add_page(inner, page));
    // SAFETY: the page stays mapped for the test (domains are leaked).
    unsafe { &*page.as_ptr() }
}

/// Formats slice `index` of `page` for `class` and puts it in `state` with
/// `used` objects handed out.
fn put(domain: &TestDomain, page: &PageHeader, index: usize, class: usize, state: SliceState, used: u32) -> usize {
    put_with_first(domain, page, index, class, state, used).0
}

/// As [`put`], and also returns the first object handed out (0 if none):
/// carving shuffles, so it need not be the slice's first object.
fn put_with_first(
    domain: &TestDomain,
    page: &PageHeader,
    index: usize,
    class: usize,
    state: SliceState,
    used: u32,
) -> (usize, usize) {
    let slice = &page.slices[index];
    let mut first = 0;
    domain.locked(|inner| {
        domain.format(slice, class);
        // Hand out `used` objects from the front of the free list.
        for _ in 0..used {
            if slice.free_is_empty() {
                // SAFETY: held under the lock, formatted, free list empty.
                unsafe { slice.carve(domain.key(), domain.link_key(), domain.random()) };
            }
            // SAFETY: held under the lock.
            let object = unsafe { slice.take(domain.link_key()) };
            assert!(!object.is_null(), "a formatted slice with room hands out an object");
            if first == 0 {
                first = object as usize;
            }
        }
        slice.set_used(used);
        inner.transition(slice, state, SliceFlags::empty(), 0);
    });
    (page.slice_address(index), first)
}

/// The address of the slice the domain would give a cache of `class`.
fn chosen(domain: &TestDomain, class: usize) -> Option<usize> {
    domain.locked(|inner| {
        inner.choose(class).map(|slice| {
            // SAFETY: descriptors live in page headers.
            let page = unsafe { page_of_slice(slice) };
            page.slice_address(page.index_of(slice))
        })
    })
}

/// Occupies `count` slices of `page` from `first` on with full spans, to set
/// the page's occupancy.
fn occupy(domain: &TestDomain, page: &PageHeader, first: usize, count: usize) {
    domain.locked(|inner| {
        for i in first..first + count {
            let slice = &page.slices[i];
            slice.set_used(1);
            slice.capacity.set(1);
            slice.class.set(SPAN_CLASS);
            slice.span.set(1);
            inner.transition(slice, SliceState::Full, SliceFlags::SPAN_HEAD, 0);
        }
    });
}

const CLASS: usize = 10;
const OTHER: usize = 20;

#[test]
fn full_threshold_is_seven_eighths() {
    assert_eq!(state_for(0, 64), SliceState::Dirty);
    assert_eq!(state_for(55, 64), SliceState::Partial);
    assert_eq!(state_for(56, 64), SliceState::Full);
    assert_eq!(state_for(64, 64), SliceState::Full);
    assert_eq!(state_for(1, 2), SliceState::Partial);
    assert_eq!(state_for(2, 2), SliceState::Full);
}

#[test]
fn partial_beats_dirty_beats_clean_beats_full() {
    let d = domain();
    let p = page(d);
    let capacity = objects_per_slice(CLASS) as u32;
    let full = put(d, p, 5, CLASS, SliceState::Full, capacity - 1);
    let dirty_other = put(d, p, 6, OTHER, SliceState::Dirty, 0);
    let dirty_same = put(d, p, 7, CLASS, SliceState::Dirty, 0);
    let partial = put(d, p, 8, CLASS, SliceState::Partial, 3);

    assert_eq!(chosen(d, CLASS), Some(partial), "partial first");
    d.locked(|inner| inner.unlink(&p.slices[8]));
    p.slices[8].linked.set(Linked::None);
    assert_eq!(chosen(d, CLASS), Some(dirty_same), "then dirty of the same class");
    d.locked(|inner| inner.transition(&p.slices[7], SliceState::Full, SliceFlags::CACHED, 0));
    assert_eq!(chosen(d, CLASS), Some(dirty_other), "then any dirty slice");
    d.locked(|inner| inner.transition(&p.slices[6], SliceState::Full, SliceFlags::CACHED, 0));
    // Clean slices: the lowest address first.
    assert_eq!(chosen(d, CLASS), Some(p.slice_address(FIRST_SLICE)), "then clean, lowest first");
    d.locked(|inner| {
        for i in FIRST_SLICE..SLICES_PER_PAGE {
            if p.slices[i].state.get() == SliceState::Clean {
                inner.transition(&p.slices[i], SliceState::Full, SliceFlags::CACHED, 0);
            }
        }
    });
    assert_eq!(chosen(d, CLASS), Some(full), "full last");
    // A full slice with nothing free is not offered at all.
    d.locked(|inner| {
        p.slices[5].set_used(capacity);
        inner.transition(&p.slices[5], SliceState::Full, SliceFlags::empty(), 0);
    });
    assert_eq!(chosen(d, CLASS), None);
}

#[test]
fn purged_slices_cost_what_clean_slices_cost() {
    let d = domain();
    let p = page(d);
    // Take every clean slice out, then purge one dirty slice.
    occupy(d, p, FIRST_SLICE, USABLE_SLICES - 2);
    let dirty = put(d, p, SLICES_PER_PAGE - 2, OTHER, SliceState::Dirty, 0);
    let partial_other = put(d, p, SLICES_PER_PAGE - 1, OTHER, SliceState::Partial, 1);
    assert_eq!(chosen(d, CLASS), Some(dirty));
    d.purge_all();
    let (state, flags, class) = d.slice_info(dirty).unwrap();
    assert_eq!((state, class), (SliceState::Dirty, OTHER), "a purged slice stays dirty and keeps its class");
    assert!(flags.contains(SliceFlags::PURGED));
    // It is now in the clean tier: chosen, and formatted afresh.
    assert_eq!(chosen(d, CLASS), Some(dirty));
    let stats = d.stats();
    assert_eq!(stats.slices_purged, 1);
    assert_eq!(stats.slices_dirty, 0);
    assert_ne!(chosen(d, OTHER), Some(dirty), "a partial slice of the class still wins");
    assert_eq!(chosen(d, OTHER), Some(partial_other));
}

#[test]
fn fuller_pages_win_ties() {
    let d = domain();
    let sparse = page(d);
    let busy = page(d);
    occupy(d, busy, FIRST_SLICE, 40);
    let in_sparse = put(d, sparse, 60, CLASS, SliceState::Partial, 1);
    let in_busy = put(d, busy, 50, CLASS, SliceState::Partial, 1);
    assert_eq!(chosen(d, CLASS), Some(in_busy), "partial in the busier page");

    // When the busy page drains below the sparse one, the order flips: the
    // buckets follow occupancy changes.
    d.locked(|inner| {
        for i in FIRST_SLICE..FIRST_SLICE + 40 {
            busy.slices[i].set_used(0);
            inner.transition(&busy.slices[i], SliceState::Dirty, SliceFlags::empty(), 0);
        }
    });
    occupy(d, sparse, FIRST_SLICE, 40);
    assert_eq!(chosen(d, CLASS), Some(in_sparse), "re-bucketed after occupancy changed");

    // Clean slices: the busier page's first.
    let d = domain();
    let sparse = page(d);
    let busy = page(d);
    occupy(d, busy, FIRST_SLICE, 20);
    let _ = sparse;
    assert_eq!(chosen(d, CLASS), Some(busy.slice_address(FIRST_SLICE + 20)));
}

#[test]
fn a_dirty_slice_is_carved_again_in_address_order() {
    let d = domain();
    let p = page(d);
    let address = put(d, p, 3, CLASS, SliceState::Dirty, 0);
    let slice = &p.slices[3];
    let size = class_size(CLASS);
    let capacity = objects_per_slice(CLASS);
    let first_run = (crate::slice::CARVE_BYTES / size).max(crate::slice::MIN_CARVE);
    // Every object carved, then freed from the first one up, so that the
    // list runs from the last object down (any order other than the
    // carve's will do).
    d.locked(|_| {
        // SAFETY: held under the lock (no heap owns the slice), formatted;
        // each object is linked once, with the domain's keys.
        unsafe {
            while (slice.carved.get() as usize) < capacity {
                slice.free.set(slice.end());
                slice.carve(d.key(), d.link_key(), d.random());
            }
            let mut head = slice.end();
            for index in 0..capacity {
                let object = (address + index * size) as *mut FreeObject;
                FreeObject::set_marker(object, FreeObject::marker_of(d.key()));
                FreeObject::set_next(object, head, d.link_key());
                head = object;
            }
            slice.free.set(head);
        }
    });
    assert_eq!(slice.free.get() as usize, address + (capacity - 1) * size, "the last object first");
    assert_eq!(chosen(d, CLASS), Some(address));
    assert!(!d.locked(|_| d.prepare(slice, CLASS)), "no holes to fill");
    // The freed order is dropped: the slice is carved afresh, its first run
    // only, so allocation runs through it from the start again.
    assert_eq!(slice.carved.get() as usize, first_run, "carved again from the start");
    assert_eq!(slice.used(), 0);
    let mut listed = std::vec::Vec::new();
    let mut object = slice.free.get();
    while slice.head_is_object(object) {
        listed.push((object as usize - address) / size);
        // SAFETY: an object of the slice's list, under the domain's link key.
        object = unsafe { FreeObject::next(object, d.link_key()) };
    }
    listed.sort_unstable();
    assert_eq!(listed, (0..first_run).collect::<std::vec::Vec<_>>(), "the first run, each object once");
    assert!(!d.locked(|_| d.prepare(slice, OTHER)), "a format leaves no holes");
    assert_eq!(slice.object_size.get() as usize, class_size(OTHER));
    // Only the first few objects are carved; the rest of the slice is untouched.
    let carved = slice.carved.get() as usize;
    assert_eq!(carved, (crate::slice::CARVE_BYTES / class_size(OTHER)).max(crate::slice::MIN_CARVE));
    // The new list starts at one of them (in a shuffled order).
    let head = slice.free.get() as usize - address;
    assert!(head.is_multiple_of(class_size(OTHER)) && head / class_size(OTHER) < carved, "re-formatted for another class");
    assert!(carved < objects_per_slice(OTHER));
    assert_eq!(d.usable_size(address + carved * class_size(OTHER)).unwrap_err().kind, FreeErrorKind::NotAllocated);
}

#[test]
fn transitions_keep_masks_and_occupancy() {
    let d = domain();
    let p = page(d);
    assert_eq!(p.fresh.get(), USABLE_MASK);
    put(d, p, 9, CLASS, SliceState::Partial, 2);
    assert_eq!(p.occupancy.get(), 1);
    assert_eq!(p.fresh.get() & (1 << 9), 0);
    d.locked(|inner| {
        p.slices[9].set_used(0);
        inner.transition(&p.slices[9], SliceState::Dirty, SliceFlags::empty(), 7);
    });
    assert_eq!(p.occupancy.get(), 0);
    assert_eq!(p.dirty.get(), 1 << 9);
    assert_eq!(p.slices[9].age_since.get(), 7);
    d.locked(|inner| {
        assert_eq!(inner.age_head, &p.slices[9] as *const _ as *mut _);
        assert_ne!(inner.dirty_classes[0] & (1 << CLASS), 0);
    });
    d.purge_all();
    // The page was empty once the slice was purged: it went back.
    assert_eq!(d.stats().pages_mapped, 0);
    assert_eq!(d.stats().pages_released, 1);
}

#[test]
fn objects_come_from_the_chosen_slice() {
    let d = domain();
    let p = page(d);
    let (partial, first) = put_with_first(d, p, 12, CLASS, SliceState::Partial, 1);
    let object = d.alloc_uncached(CLASS, ()) as usize;
    assert!(object >= partial && object < partial + SLICE_SIZE);
    assert_eq!(d.slice_info(object).unwrap().0, SliceState::Partial);
    assert_eq!(p.slices[12].used(), 2);
    // Freeing both objects of this slice leaves it dirty, keeping its class.
    // SAFETY: both are live objects of this domain.
    unsafe {
        d.free_uncached(object).unwrap();
        d.free_uncached(first).unwrap();
    }
    assert_eq!(d.slice_info(object), Some((SliceState::Dirty, SliceFlags::empty(), CLASS)));
    // SAFETY: a second free is detected, not performed.
    let again = unsafe { d.free_uncached(object) };
    assert_eq!(again.unwrap_err().kind, FreeErrorKind::DoubleFree);
}

#[test]
fn bad_pointers_are_rejected() {
    let d = domain();
    let p = page(d);
    let base = put(d, p, 4, CLASS, SliceState::Partial, 1);
    let not_ours = FreeErrorKind::NotAllocated;
    for address in [0usize, 8, base + 1, base + class_size(CLASS) / 2, p.base(), p.base() + 64] {
        // SAFETY: rejected pointers are never touched beyond the checks.
        assert_eq!(unsafe { d.free_uncached(address) }.unwrap_err().kind, not_ours, "{address:#x}");
    }
    let local = 0u64;
    assert_eq!(d.usable_size(&local as *const u64 as usize).unwrap_err().kind, not_ours);
    // Another domain's object is foreign here.
    let other = domain();
    let q = page(other);
    let (_, theirs) = put_with_first(other, q, 4, CLASS, SliceState::Partial, 1);
    assert_eq!(d.usable_size(theirs).unwrap_err().kind, not_ours);
    assert_eq!(other.usable_size(theirs), Ok(class_size(CLASS)));
}

#[test]
fn spans_take_contiguous_slices_and_come_back_dirty() {
    let d = domain();
    let span = d.alloc_large(3 * SLICE_SIZE - 100, 8, true, ());
    assert!(!span.is_null());
    assert_eq!(span as usize % SLICE_SIZE, 0);
    assert_eq!(d.usable_size(span as usize), Ok(3 * SLICE_SIZE));
    let (state, flags, _) = d.slice_info(span as usize).unwrap();
    assert_eq!(state, SliceState::Full);
    assert!(flags.contains(SliceFlags::SPAN_HEAD));
    // SAFETY: the span is live.
    unsafe { d.free_large(span as usize).unwrap() };
    let (state, _, class) = d.slice_info(span as usize).unwrap();
    assert_eq!((state, class), (SliceState::Dirty, SPAN_CLASS as usize));
    // SAFETY: a second free is detected.
    assert_eq!(unsafe { d.free_large(span as usize) }.unwrap_err().kind, FreeErrorKind::DoubleFree);
    // A dirty span slice serves any class.
    assert_eq!(chosen(d, CLASS), Some(span as usize + 2 * SLICE_SIZE).or(chosen(d, CLASS)));
}

#[test]
fn spans_serve_alignments_up_to_half_a_page() {
    let d = domain();
    for align in [2 * SLICE_SIZE, 8 * SLICE_SIZE, PAGE_SIZE / 2] {
        let span = d.alloc_large(3 * SLICE_SIZE, align, false, ());
        assert!(!span.is_null());
        assert_eq!(span as usize % align, 0, "align {align:#x}");
        assert!(d.slice_info(span as usize).unwrap().1.contains(SliceFlags::SPAN_HEAD));
        // SAFETY: the span is live.
        unsafe { d.free_large(span as usize).unwrap() };
    }
    let page_aligned = d.alloc_large(3 * SLICE_SIZE, PAGE_SIZE, false, ());
    assert_eq!(page_aligned as usize % PAGE_SIZE, 0);
    assert_eq!(d.stats().huge_allocations, 1, "page alignment takes a mapping");
    // SAFETY: live.
    unsafe { d.free_large(page_aligned as usize).unwrap() };
}

#[test]
fn huge_allocations_map_and_unmap() {
    let d = domain();
    for align in [8usize, 4096, PAGE_SIZE, 4 * PAGE_SIZE] {
        let object = d.alloc_large(5 * PAGE_SIZE + 3, align, false, ());
        assert!(!object.is_null());
        assert_eq!(object as usize % align, 0);
        let usable = d.usable_size(object as usize).unwrap();
        assert!(usable >= 5 * PAGE_SIZE + 3);
        // SAFETY: the whole usable size is writable.
        unsafe { ptr::write_bytes(object, 0xa5, usable) };
        assert_eq!(d.stats().huge_allocations, 1);
        // SAFETY: live huge allocation.
        unsafe { d.free_large(object as usize).unwrap() };
        assert_eq!(d.stats().huge_allocations, 0);
        assert_eq!(d.usable_size(object as usize).unwrap_err().kind, FreeErrorKind::NotAllocated);
    }
    assert!(d.alloc_large(usize::MAX - 100, 8, false, ()).is_null());
    assert!(d.alloc_large(1 << 62, 8, false, ()).is_null());
}

#[test]
fn runs_are_found_lowest_first_and_aligned() {
    assert_eq!(find_run(0b1110_1100, 2, 1), Some(2));
    assert_eq!(find_run(0b1110_1100, 3, 1), Some(5));
    assert_eq!(find_run(0b1110_1100, 4, 1), None);
    assert_eq!(find_run(!0 << 1, 63, 1), Some(1));
    assert_eq!(find_run(!0 << 1, 1, 1), Some(1));
    assert_eq!(find_run(!0 << 1, 2, 4), Some(4));
    assert_eq!(find_run(!0 << 1, 32, 32), Some(32));
    assert_eq!(find_run(!0 << 1, 33, 32), None);
    assert_eq!(find_run(0b0110_0110, 2, 2), None);
}

#[test]
fn a_zeroed_inner_is_empty() {
    // `Domain::init_at` writes `Inner::new()` as zero bytes.
    let inner = Inner::new();
    let bytes = unsafe {
        core::slice::from_raw_parts(&inner as *const Inner as *const u8, core::mem::size_of::<Inner>())
    };
    assert!(bytes.iter().all(|&b| b == 0));
}

#[test]
fn a_domain_built_in_place_serves() {
    let mut place = std::boxed::Box::new(core::mem::MaybeUninit::<TestDomain>::uninit());
    let domain = Domain::init_at(&mut place, source(), SpinLock::UNLOCKED);
    let object = domain.alloc_uncached(3, ());
    assert!(!object.is_null());
    unsafe { domain.free_uncached(object as usize) }.unwrap();
    assert_eq!(domain.stats().bytes_live, 0);
    domain.purge_all();
    assert_eq!(domain.stats().pages_mapped, 0);
}

/// A spinlock whose first `busy` `try_lock` calls fail, as if another thread
/// held it: contention made deterministic.
struct BusyAtFirst {
    inner: SpinLock,
    busy: core::sync::atomic::AtomicU32,
}

// SAFETY: locking is the inner spinlock's; the failed `try_lock` calls take
// nothing.
unsafe impl RawLock for BusyAtFirst {
    fn lock(&self) {
        self.inner.lock()
    }

    fn try_lock(&self) -> bool {
        let busy = self.busy.load(Ordering::Relaxed);
        if busy > 0 {
            self.busy.store(busy - 1, Ordering::Relaxed);
            return false;
        }
        self.inner.try_lock()
    }

    unsafe fn unlock(&self) {
        // SAFETY: forwarded.
        unsafe { self.inner.unlock() }
    }
}

#[test]
fn lock_acquisitions_and_contention_are_counted() {
    let lock = BusyAtFirst { inner: SpinLock::UNLOCKED, busy: core::sync::atomic::AtomicU32::new(2) };
    let domain = std::boxed::Box::leak(std::boxed::Box::new(Domain::with_lock(source(), lock)));
    // SAFETY: leaked, so it never moves; nothing else uses it yet.
    unsafe { domain.init() };
    // Two acquisitions that find the lock "held", then one that does not.
    let object = domain.alloc_uncached(3, ());
    assert!(!object.is_null());
    unsafe { domain.free_uncached(object as usize) }.unwrap();
    let stats = domain.stats();
    // At least the allocation, the free and the snapshot itself; each wait
    // counted once.
    assert!(stats.lock_acquisitions >= 3, "{stats}");
    assert_eq!(stats.lock_contended, 2, "{stats}");
    // A snapshot takes the lock exactly once, uncontended.
    let later = domain.stats();
    assert_eq!(later.lock_acquisitions, stats.lock_acquisitions + 1);
    assert_eq!(later.lock_contended, 2);
}

/// The carving order of one window: for every length and many random
/// words, each object comes exactly once, and (hardened, more than two
/// objects) never in address order, and no two neighbours come in a row
/// but in windows of 3, 4 or 6 objects, which have no stride for it.
#[test]
fn shuffled_carving_visits_every_object_once_out_of_address_order() {
    // Plain arithmetic, with nothing for Miri to check: a short range there.
    let (counts, rounds) = if cfg!(miri) { (40, 4) } else { (300, 20) };
    let mut random = 0x9e37_79b9_7f4a_7c15u64;
    for count in 1..=counts {
        for _ in 0..rounds {
            random = mix(random);
            let (start, stride) = crate::slice::shuffle(count, random);
            assert!(start < count && stride >= 1 && stride < count.max(2), "{count}: {start} {stride}");
            let mut seen = std::vec![false; count];
            let mut position = start;
            let mut order = std::vec::Vec::with_capacity(count);
            for _ in 0..count {
                assert!(!seen[position], "{count}: object {position} twice (stride {stride})");
                seen[position] = true;
                order.push(position);
                position = (position + stride) % count;
            }
            let sequential = order.windows(2).all(|pair| pair[1] == pair[0] + 1);
            let neighbours = order.windows(2).any(|pair| pair[0].abs_diff(pair[1]) == 1);
            if cfg!(strata_unhardened) || count <= 2 {
                assert_eq!((start, stride), (0, 1));
            } else if matches!(count, 3 | 4 | 6) {
                assert_eq!(stride, count - 1, "{count}: the only stride left");
            } else {
                assert!(!sequential, "{count}: address order (start {start}, stride {stride})");
                assert!(!neighbours, "{count}: neighbours in a row (start {start}, stride {stride}): {order:?}");
            }
        }
    }
}

/// A carved run is shuffled window by window: each `SHUFFLE_WINDOW`
/// consecutive objects of the free list are the objects of one window of
/// the run, windows in address order, and (hardened) no window's objects
/// come in address order, and no two objects in a row of the whole run,
/// across windows too, are neighbours in memory.
#[test]
fn a_carved_run_is_shuffled_within_windows_in_address_order() {
    use crate::slice::SHUFFLE_WINDOW;
    let domain = domain();
    let page = page(domain);
    let class = class_of(16, 8).expect("a small class");
    let slice = &page.slices[crate::page::FIRST_SLICE];
    let run = crate::slice::CARVE_BYTES / 16;
    assert_eq!(run % SHUFFLE_WINDOW, 0, "the test takes whole windows");
    let order: std::vec::Vec<usize> = domain.locked(|_| {
        // Formatting carves the first run.
        domain.format(slice, class);
        // SAFETY: held under the lock.
        (0..run).map(|_| (unsafe { slice.take(domain.link_key()) } as usize - slice.address) / 16).collect()
    });
    for (window, objects) in order.chunks(SHUFFLE_WINDOW).enumerate() {
        let mut sorted = objects.to_vec();
        sorted.sort_unstable();
        let expected: std::vec::Vec<usize> = (window * SHUFFLE_WINDOW..(window + 1) * SHUFFLE_WINDOW).collect();
        assert_eq!(sorted, expected, "window {window}: {objects:?}");
        if !cfg!(strata_unhardened) {
            assert_ne!(objects, &expected[..], "window {window} in address order");
        }
    }
    if !cfg!(strata_unhardened) {
        let neighbours = order.windows(2).position(|pair| pair[0].abs_diff(pair[1]) == 1);
        assert_eq!(neighbours, None, "neighbours in a row: {order:?}");
    }
}

/// Over every run of many slices, each carved from its own random word, no
/// two objects in a row of a run are neighbours in memory, at window
/// boundaries too: a window never starts with the neighbour of the object
/// before it. (Under Miri, two slices, for time.)
#[test]
#[cfg(not(strata_unhardened))]
fn carved_runs_never_hand_out_neighbours_in_a_row() {
    let domain = domain();
    let page = page(domain);
    let class = class_of(16, 8).expect("a small class");
    let slices = if cfg!(miri) { 2 } else { USABLE_SLICES };
    let mut random = 0x2545_f491_4f6c_dd1du64;
    let mut runs = 0;
    domain.locked(|_| {
        for slice in &page.slices[crate::page::FIRST_SLICE..][..slices] {
            // Formatting carves the first run.
            domain.format(slice, class);
            loop {
                let mut order = std::vec::Vec::new();
                loop {
                    // SAFETY: held under the lock.
                    let object = unsafe { slice.take(domain.link_key()) };
                    if object.is_null() {
                        break;
                    }
                    order.push((object as usize - slice.address) / 16);
                }
                let neighbours = order.windows(2).position(|pair| pair[0].abs_diff(pair[1]) == 1);
                assert_eq!(neighbours, None, "run {runs}: neighbours in a row: {order:?}");
                runs += 1;
                random = mix(random);
                // SAFETY: held under the lock; the free list is empty and
                // the slice formatted.
                if !unsafe { slice.carve(domain.key(), domain.link_key(), random) } {
                    break;
                }
            }
        }
    });
    assert_eq!(runs, slices * SLICE_SIZE / crate::slice::CARVE_BYTES, "every run of every slice");
}

#[test]
fn longest_runs_are_capped_at_the_largest_span() {
    use large::longest_run;
    assert_eq!(longest_run(0), 0);
    assert_eq!(longest_run(0b1011_0111), 3);
    assert_eq!(longest_run(0b1111_0110_1110), 4);
    assert_eq!(longest_run(USABLE_MASK), MAX_SPAN_SLICES as u8);
    assert_eq!(longest_run(1 << 63), 1);
}

#[test]
fn spans_take_dirty_runs_before_clean_ones() {
    let d = domain();
    let p = page(d);
    // Slices 20..24 dirty, the rest of the page clean: a span of four takes
    // the dirty run although clean slices come first.
    for index in 20..24 {
        put(d, p, index, CLASS, SliceState::Dirty, 0);
    }
    let span = d.alloc_large(4 * SLICE_SIZE, 8, false, ());
    assert_eq!(span as usize, p.slice_address(20));
    // A span longer than any dirty run takes clean slices.
    let long = d.alloc_large(6 * SLICE_SIZE, 8, false, ());
    assert_eq!(long as usize, p.slice_address(1));
    // SAFETY: live spans.
    unsafe {
        d.free_large(span as usize).unwrap();
        d.free_large(long as usize).unwrap();
    }
}

#[test]
fn spans_find_the_page_with_room_among_many() {
    let d = domain();
    let pages: std::vec::Vec<&PageHeader> = (0..6).map(|_| page(d)).collect();
    // Every page but one has only runs of three free slices.
    for (n, page) in pages.iter().enumerate() {
        if n == 3 {
            continue;
        }
        for index in (FIRST_SLICE..SLICES_PER_PAGE).step_by(4) {
            occupy(d, page, index, 1);
        }
    }
    let span = d.alloc_large(10 * SLICE_SIZE, 8, false, ());
    assert_eq!(page_of(span as usize), pages[3].base());
    // Aligned spans, and runs of exactly the length asked on the others.
    let three = d.alloc_large(3 * SLICE_SIZE, 8, false, ());
    assert_ne!(page_of(three as usize), pages[3].base(), "the shortest fitting run is taken");
    let aligned = d.alloc_large(4 * SLICE_SIZE, 4 * SLICE_SIZE, false, ());
    assert_eq!(aligned as usize % (4 * SLICE_SIZE), 0);
    assert_eq!(page_of(aligned as usize), pages[3].base());
    // SAFETY: live spans.
    unsafe {
        for block in [span, three, aligned] {
            d.free_large(block as usize).unwrap();
        }
    }
}

#[test]
fn spans_grow_into_free_slices_and_shrink() {
    let d = domain();
    let span = d.alloc_large(2 * SLICE_SIZE, 8, false, ());
    // SAFETY: the span is live and owned here.
    unsafe {
        ptr::write_bytes(span, 0x5c, 2 * SLICE_SIZE);
        let grown = d.resize_large(span as usize, 7 * SLICE_SIZE, 8, ()).expect("the slices after it are free");
        assert_eq!(grown, span);
        assert_eq!(d.usable_size(span as usize).unwrap(), 7 * SLICE_SIZE);
        ptr::write_bytes(span.add(2 * SLICE_SIZE), 0x5d, 5 * SLICE_SIZE);
        // A span right after it blocks further growth.
        let next = d.alloc_large(SLICE_SIZE, 8, false, ());
        assert_eq!(next as usize, span as usize + 7 * SLICE_SIZE);
        assert!(d.resize_large(span as usize, 8 * SLICE_SIZE, 8, ()).is_none());
        assert_eq!(*span, 0x5c);
        let shrunk = d.resize_large(span as usize, SLICE_SIZE, 8, ()).unwrap();
        assert_eq!(shrunk, span);
        assert_eq!(d.usable_size(span as usize).unwrap(), SLICE_SIZE);
        assert_eq!(d.stats().slices_dirty, 6);
        d.free_large(span as usize).unwrap();
        d.free_large(next as usize).unwrap();
    }
}

#[cfg(not(miri))]
#[test]
fn huge_blocks_grow_by_remap_and_keep_their_contents() {
    let d = domain();
    let size = 3 * PAGE_SIZE;
    let block = d.alloc_large(size, 8, false, ());
    assert!(!block.is_null());
    // SAFETY: the block is live and owned here; each resize returns the
    // block's new address.
    unsafe {
        for i in 0..size / 4096 {
            *block.add(i * 4096) = i as u8;
        }
        let grown = d.resize_large(block as usize, 9 * PAGE_SIZE, 8, ()).expect("mremap");
        assert!(d.usable_size(grown as usize).unwrap() >= 9 * PAGE_SIZE);
        for i in 0..size / 4096 {
            assert_eq!(*grown.add(i * 4096), i as u8);
        }
        ptr::write_bytes(grown.add(size), 1, 6 * PAGE_SIZE);
        let stats = d.stats();
        assert_eq!(stats.huge_allocations, 1);
        assert_eq!(stats.bytes_live, d.usable_size(grown as usize).unwrap());
        let shrunk = d.resize_large(grown as usize, PAGE_SIZE, 8, ()).expect("mremap");
        assert_eq!(*shrunk.add(4096), 1);
        assert!(d.usable_size(shrunk as usize).unwrap() < 2 * PAGE_SIZE);
        d.free_large(shrunk as usize).unwrap();
    }
    assert_eq!(d.stats().bytes_live, 0);
}

/// Headroom for growth follows the object, not the mapping: a block placed
/// a page into its mapping for a page alignment, then grown with a smaller
/// one, gets half its new size again, not half of the dead prefix too.
#[cfg(not(miri))]
#[test]
fn growth_headroom_follows_the_object_not_its_offset() {
    let d = domain();
    let block = d.alloc_large(MAX_SPAN + 4096, PAGE_SIZE, false, ());
    assert!(!block.is_null());
    assert_eq!(block as usize % PAGE_SIZE, 0);
    let size = MAX_SPAN + MAX_SPAN / 2;
    // SAFETY: the block is live and owned here; the resize returns its new
    // address.
    unsafe {
        let grown = d.resize_large(block as usize, size, 8, ()).expect("mremap");
        let usable = d.usable_size(grown as usize).unwrap();
        assert!(usable >= size, "usable {usable} < {size}");
        let most = size + size / 2 + 4096;
        assert!(usable <= most, "grew to {usable} for {size}: headroom over half the object ({most})");
        d.free_large(grown as usize).unwrap();
    }
    assert_eq!(d.stats().bytes_live, 0);
}

#[test]
fn freed_huge_mappings_are_reused_then_given_back() {
    let d = domain();
    let size = 2 * PAGE_SIZE;
    let first = d.alloc_large(size, 8, false, ());
    // SAFETY: live block, then freed and not used again.
    unsafe {
        ptr::write_bytes(first, 0xee, size);
        d.free_large(first as usize).unwrap();
    }
    let stats = d.stats();
    assert_eq!(stats.huge_allocations, 0);
    assert!(stats.huge_cached_bytes >= size);
    let again = d.alloc_large(size, 8, true, ());
    assert_eq!(again, first, "the cached mapping is reused");
    // SAFETY: a live zeroed block of `size` bytes.
    unsafe {
        // Compared a page at a time: one memcmp each, fast under Miri too.
        let zero = [0u8; 4096];
        let bytes = core::slice::from_raw_parts(again, size);
        assert!(bytes.chunks(4096).all(|page| page == &zero[..page.len()]), "reused for calloc, not zero");
        d.free_large(again as usize).unwrap();
    }
    // The double free is still caught while the mapping is cached.
    // SAFETY: refused, touches nothing.
    assert_eq!(unsafe { d.free_large(again as usize) }.unwrap_err().kind, FreeErrorKind::NotAllocated);
    d.purge_all();
    let stats = d.stats();
    assert_eq!(stats.huge_cached_bytes, 0);
    assert_eq!(stats.bytes_mapped, 0);
    // More than the cache holds goes back at once (not on Miri's arena,
    // which is smaller than that).
    #[cfg(not(miri))]
    {
        let big = d.alloc_large(HUGE_CACHE_BYTES + PAGE_SIZE, 8, false, ());
        assert!(!big.is_null());
        // SAFETY: live.
        unsafe { d.free_large(big as usize).unwrap() };
        assert_eq!(d.stats().bytes_mapped, 0);
    }
}

#[test]
fn reclaim_gives_back_unused_pages_and_lets_a_retry_succeed() {
    let d = domain();
    let spans: std::vec::Vec<*mut u8> = (0..4).map(|_| d.alloc_large(MAX_SPAN, 8, false, ())).collect();
    // SAFETY: live spans.
    unsafe {
        for &span in &spans {
            ptr::write_bytes(span, 3, MAX_SPAN);
            d.free_large(span as usize).unwrap();
        }
    }
    assert!(d.stats().pages_mapped >= 2);
    assert!(d.reclaim(), "there were pages to give back");
    assert_eq!(d.stats().pages_mapped, 0);
    assert!(!d.reclaim(), "nothing left to give back");
}

#[cfg(not(miri))]
#[test]
fn a_huge_block_moved_by_remap_is_found_at_its_new_address_only() {
    let d = domain();
    let size = 2 * PAGE_SIZE;
    let block = d.alloc_large(size, 8, false, ());
    assert!(!block.is_null());
    let (base, len) = {
        // SAFETY: a live huge block's header.
        let common = unsafe { &*(page_of(block as usize) as *const PageCommon) };
        (common.map_base, common.map_len)
    };
    // Occupy the address space right after the mapping, so that it cannot
    // grow in place and must move.
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping.
    let guard = unsafe {
        libc::mmap(
            (base + len) as *mut libc::c_void,
            4096,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    assert_eq!(guard as usize, base + len, "the guard page could not be placed");
    // SAFETY: the block is live and owned here.
    unsafe {
        ptr::write_bytes(block, 0x6b, size);
        let moved = d.resize_large(block as usize, 5 * PAGE_SIZE, 8, ()).expect("mremap");
        assert_ne!(moved, block, "the guard keeps it from growing in place");
        assert_eq!(*moved.add(size - 1), 0x6b);
        assert!(d.usable_size(moved as usize).unwrap() >= 5 * PAGE_SIZE);
        assert_eq!(d.usable_size(block as usize).unwrap_err().kind, FreeErrorKind::NotAllocated);
        assert_eq!(d.free_large(block as usize).unwrap_err().kind, FreeErrorKind::NotAllocated);
        d.free_large(moved as usize).unwrap();
        libc::munmap(guard, 4096);
    }
}

/// Checks every invariant of the domain's lists and the pages' files, and
/// returns the number of slices filed on them. Lock held.
fn check_lists(inner: &mut Inner) -> usize {
    let mut filed = 0;
    let mut page = inner.all_pages;
    while !page.is_null() {
        // SAFETY: live page header.
        let header = unsafe { &*page };
        let occupancy = header.slices[FIRST_SLICE..].iter().filter(|s| s.in_use()).count() as u32;
        assert_eq!(header.occupancy.get(), occupancy);
        assert_eq!(header.bucket.get(), bucket_of(occupancy));
        // How many slices of the page name each file in their `linked`.
        let mut named = [0usize; PAGE_FILES];
        for slice in &header.slices[FIRST_SLICE..] {
            if let Some(file) = Inner::file_of(slice.linked.get()) {
                named[file] += 1;
            }
        }
        for (file, &named) in named.iter().enumerate() {
            // The file's list, walked forwards, with its back links: exactly
            // the slices whose `linked` names the file.
            let mut on_file = 0;
            let mut prev: *mut SliceMeta = ptr::null_mut();
            let mut slice = header.file_head(file);
            while !slice.is_null() {
                // SAFETY: a descriptor of this page.
                let s = unsafe { &*slice };
                assert_eq!(s.prev.get(), prev);
                assert_eq!(Inner::file_of(s.linked.get()), Some(file));
                on_file += 1;
                prev = slice;
                slice = s.next.get();
            }
            assert_eq!(on_file, named, "file {file}");
            filed += named;
            let (mask, bit) = if file < CLASS_COUNT {
                (header.partial_classes.get(), file)
            } else {
                (header.dirty_classes.get(), file - CLASS_COUNT)
            };
            assert_eq!(mask & (1 << bit) != 0, named != 0, "mask bit of file {file}");
            // A page with slices on the file is on the domain's list for the
            // file and its bucket (that it is on no other list follows from
            // the check of every list below).
            if named != 0 {
                let mut listed = false;
                let mut other = *inner.pages(file, header.bucket.get());
                while !other.is_null() {
                    listed |= other == page;
                    // SAFETY: live page headers.
                    other = unsafe { (*other).file_next[file].get() };
                }
                assert!(listed, "file {file}: page not on its bucket's list");
            }
        }
        for slice in &header.slices[FIRST_SLICE..] {
            assert_eq!(slice.linked.get(), Inner::list_for(slice), "every slice where its state puts it");
        }
        page = header.all_next.get();
    }
    // The domain's lists hold only pages of the right bucket with the file,
    // with sound back links, and `dirty_classes` says which are not empty.
    for file in 0..PAGE_FILES {
        for bucket in 0..BUCKETS as u8 {
            let mut prev: *mut PageHeader = ptr::null_mut();
            let mut page = *inner.pages(file, bucket);
            if file >= CLASS_COUNT {
                let bit = inner.dirty_classes[bucket as usize] & (1 << (file - CLASS_COUNT)) != 0;
                assert_eq!(bit, !page.is_null(), "dirty_classes of file {file}, bucket {bucket}");
            }
            while !page.is_null() {
                // SAFETY: live page headers.
                let header = unsafe { &*page };
                assert_eq!(header.file_prev[file].get(), prev);
                assert_eq!(header.bucket.get(), bucket);
                assert!(!header.file_head(file).is_null());
                prev = page;
                page = header.file_next[file].get();
            }
        }
    }
    // The two age lists: sound back links, oldest first; the dirty one
    // holds the slices filed dirty, the sparse one those marked listed,
    // each a hole candidate, and none is on both.
    let mut marked = 0;
    let mut dirty_filed = 0;
    let mut page = inner.all_pages;
    while !page.is_null() {
        // SAFETY: live page header.
        let header = unsafe { &*page };
        for slice in &header.slices[FIRST_SLICE..] {
            marked += usize::from(slice.sparse_listed.get());
            dirty_filed += usize::from(matches!(slice.linked.get(), Linked::Dirty { .. }));
        }
        page = header.all_next.get();
    }
    for (head, tail, expected, sparse) in
        [(inner.age_head, inner.age_tail, dirty_filed, false), (inner.sparse_head, inner.sparse_tail, marked, true)]
    {
        let (mut count, mut prev, mut slice, mut since) = (0, ptr::null_mut::<SliceMeta>(), head, 0);
        while !slice.is_null() {
            // SAFETY: a live descriptor on an age list.
            let s = unsafe { &*slice };
            assert_eq!(s.age_prev.get(), prev);
            assert!(s.age_since.get() >= since, "oldest first");
            since = s.age_since.get();
            if sparse {
                assert!(s.sparse_listed.get() && Inner::hole_candidate(s));
            } else {
                assert!(matches!(s.linked.get(), Linked::Dirty { .. }) && !s.sparse_listed.get());
            }
            count += 1;
            prev = slice;
            slice = s.age_next.get();
        }
        assert_eq!(prev, tail);
        assert_eq!(count, expected, "age list (sparse: {sparse})");
    }
    filed
}

/// What `choose` must give, found by looking at every slice: the tier (0
/// partial, 1 dirty of the class, 2 any dirty, 3 fresh, 4 full), the bucket
/// of its page, and for tier 2 the class (the lowest of that bucket).
fn expected_choice(inner: &Inner, class: usize) -> Option<(u8, u8, u8)> {
    let mut best: Option<(u8, u8, u8)> = None;
    let mut page = inner.all_pages;
    while !page.is_null() {
        // SAFETY: live page header.
        let header = unsafe { &*page };
        let bucket = header.bucket.get();
        for slice in &header.slices[FIRST_SLICE..] {
            let candidate = match slice.linked.get() {
                Linked::Partial { class: c } if c as usize == class => Some((0, bucket, c)),
                Linked::Dirty { class: c } if c as usize == class => Some((1, bucket, c)),
                Linked::Dirty { class: c } => Some((2, bucket, c)),
                Linked::Full { class: c } if c as usize == class => Some((4, 0, c)),
                _ if slice.state.get() == SliceState::Clean || slice.has(SliceFlags::PURGED) => {
                    (!slice.has(SliceFlags::CACHED)).then_some((3, bucket, 0))
                }
                _ => None,
            };
            // Lower tier first, then higher bucket, then lower class.
            let key = |(tier, bucket, class): (u8, u8, u8)| (tier, u8::MAX - bucket, class);
            if let Some(candidate) = candidate {
                let candidate = if candidate.0 == 2 { candidate } else { (candidate.0, candidate.1, 0) };
                if best.is_none_or(|b| key(candidate) < key(b)) {
                    best = Some(candidate);
                }
            }
        }
        page = header.all_next.get();
    }
    best.map(|(tier, bucket, class)| if tier == 4 { (4, 0, 0) } else { (tier, bucket, class) })
}

/// The tier, bucket and (tier 2) class of what `choose` gave, as
/// `expected_choice` names them.
fn actual_choice(inner: &Inner, class: usize) -> Option<(u8, u8, u8)> {
    let slice = inner.choose(class)?;
    // SAFETY: descriptors live in page headers.
    let bucket = unsafe { page_of_slice(slice) }.bucket.get();
    Some(match slice.linked.get() {
        Linked::Partial { .. } => (0, bucket, 0),
        Linked::Dirty { class: c } if c as usize == class => (1, bucket, 0),
        Linked::Dirty { class: c } => (2, bucket, c),
        Linked::Full { .. } => (4, 0, 0),
        Linked::None => (3, bucket, 0),
    })
}

/// Random transitions over three pages, slices of a few classes in every
/// state: after each, the lists and files are consistent and `choose` picks
/// from the right tier and the fullest bucket.
#[test]
fn random_transitions_keep_the_files_and_the_cost_order() {
    let d = domain();
    let pages = [page(d), page(d), page(d)];
    let classes = [CLASS, OTHER, 30, 41];
    // The classes asked for: those slices are formatted for, and one never
    // formatted (only dirty slices of other classes, fresh or nothing).
    let asked = [CLASS, OTHER, 30, 41, 55];
    let steps = if cfg!(miri) { 40 } else { 20_000 };
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut random = move |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    let mut bucket_changes = 0;
    let mut sparse_noted = 0;
    for step in 0..steps {
        // Mostly fill, sometimes drain, in phases, so that pages move across
        // every bucket.
        let filling = (step / 500) % 2 == 0;
        let page = pages[random(pages.len())];
        let slice = &page.slices[FIRST_SLICE + random(USABLE_SLICES)];
        let before = page.bucket.get();
        d.locked(|inner| {
            let class = classes[random(classes.len())];
            let flags = slice.flags.get();
            match slice.state.get() {
                _ if flags.contains(SliceFlags::CACHED) => {
                    // A heap gives it back: empty, or nearly full.
                    let capacity = slice.capacity.get();
                    let used = if random(2) == 0 { 0 } else { capacity - random(capacity as usize / 8) as u32 };
                    slice.set_used(used);
                    inner.transition(slice, state_for(used, slice.capacity.get()), SliceFlags::empty(), step as u64);
                }
                SliceState::Clean | SliceState::Dirty if filling || random(4) == 0 => {
                    // Formatted for a class and handed out, or left partial.
                    // Mostly full (few partial slices: the later tiers
                    // get chosen too), sometimes with no free object left.
                    let capacity = objects_per_slice(class) as u32;
                    slice.class.set(class as u8);
                    slice.object_size.set(class_size(class) as u32);
                    slice.capacity.set(capacity);
                    let used = match random(24) {
                        0 => 1 + random(capacity as usize) as u32,
                        1 => capacity,
                        _ => capacity - random(capacity as usize / 8) as u32,
                    };
                    slice.set_used(used.min(capacity));
                    let flags = if random(3) == 0 { SliceFlags::CACHED } else { SliceFlags::empty() };
                    inner.transition(slice, state_for(slice.used(), capacity), flags, step as u64);
                }
                SliceState::Dirty if !flags.contains(SliceFlags::PURGED) && random(3) == 0 => {
                    inner.transition(slice, SliceState::Dirty, SliceFlags::PURGED, step as u64);
                }
                SliceState::Partial | SliceState::Full if !filling || random(4) == 0 => {
                    // Drains, mostly, or changes its count.
                    let used = if random(8) != 0 { 0 } else { random(slice.capacity.get() as usize) as u32 };
                    slice.set_used(used);
                    inner.transition(slice, state_for(used, slice.capacity.get()), SliceFlags::empty(), step as u64);
                    // Objects freed into it: a sparse one waits for holes.
                    inner.note_sparse(slice, step as u64);
                    sparse_noted += usize::from(slice.sparse_listed.get());
                }
                _ => {}
            }
            check_lists(inner);
            for class in asked {
                assert_eq!(actual_choice(inner, class), expected_choice(inner, class), "step {step}, class {class}");
            }
        });
        bucket_changes += usize::from(page.bucket.get() != before);
    }
    assert!(bucket_changes > if cfg!(miri) { 0 } else { 20 }, "only {bucket_changes} bucket changes");
    // (Miri's 40 steps may note none.)
    assert!(cfg!(miri) || sparse_noted > 20, "only {sparse_noted} slices noted sparse");
}

/// A bucket change moves the page's memberships, one per class it has
/// filed slices of; its slices stay linked as they were.
#[test]
fn a_bucket_change_moves_the_page_not_its_slices() {
    let d = domain();
    let p = page(d);
    // Twelve partial slices of one class and eight dirty ones of another:
    // 12 slices of 63 in use, bucket 0.
    let partial: std::vec::Vec<usize> = (FIRST_SLICE..FIRST_SLICE + 12).collect();
    let dirty: std::vec::Vec<usize> = (20..28).collect();
    for &i in &partial {
        put(d, p, i, CLASS, SliceState::Partial, 1);
    }
    for &i in &dirty {
        put(d, p, i, OTHER, SliceState::Dirty, 0);
    }
    assert_eq!(p.bucket.get(), 0);
    let links = |indices: &[usize]| -> std::vec::Vec<(usize, usize)> {
        indices.iter().map(|&i| (p.slices[i].next.get() as usize, p.slices[i].prev.get() as usize)).collect()
    };
    let (partial_links, dirty_links) = (links(&partial), links(&dirty));
    // Four more slices in use: 16 of 63, bucket 1.
    occupy(d, p, 40, 4);
    assert_eq!(p.bucket.get(), 1);
    assert_eq!(links(&partial), partial_links, "partial slices untouched by the bucket change");
    assert_eq!(links(&dirty), dirty_links, "dirty slices untouched by the bucket change");
    d.locked(|inner| {
        check_lists(inner);
        assert_eq!(inner.partial[CLASS][1], p as *const PageHeader as *mut PageHeader);
        assert!(inner.partial[CLASS][0].is_null());
        assert_eq!(inner.dirty[OTHER][1], p as *const PageHeader as *mut PageHeader);
        assert_eq!(inner.dirty_classes[1], 1 << OTHER);
        assert_eq!(inner.dirty_classes[0], 0);
    });
    // The most recently filed partial slice comes first.
    assert_eq!(chosen(d, CLASS), Some(p.slice_address(*partial.last().unwrap())));
}

/// A domain over `source` (a page source made by the test).
fn domain_with(source: TestSource) -> &'static TestDomain {
    let domain: &'static TestDomain = std::boxed::Box::leak(std::boxed::Box::new(Domain::new(source)));
    DOMAINS.lock().unwrap().push(domain as *const TestDomain as usize);
    domain
}

/// Moves slice `index` of `page`, dirty, to purged, as a purge does.
fn purge_slice(domain: &TestDomain, page: &PageHeader, index: usize) {
    put(domain, page, index, CLASS, SliceState::Dirty, 0);
    domain.locked(|inner| inner.transition(&page.slices[index], SliceState::Dirty, SliceFlags::PURGED, 0));
}

/// Each 2 MiB part of a page is asked for once, when its last fresh slice
/// is taken; again only after a purge in it (which splits a huge page);
/// and not at all while the source does not collapse, so that a part that
/// filled then is asked for once it does. (The mmap source's answer needs
/// `madvise`, which Miri lacks: see `tests/huge_pages.rs` for the rest.)
#[test]
#[cfg(not(miri))]
fn each_filled_part_is_asked_for_once_until_a_purge_splits_it() {
    let source = TestSource::new();
    let domain = domain_with(source);
    let page = page(domain);
    let claim = || domain.locked(|_| domain.claim_collapse(page));
    let half = SLICES_PER_PAGE / 2;
    for index in FIRST_SLICE..half {
        put(domain, page, index, CLASS, SliceState::Partial, 1);
    }
    // Part 0 is full, but the source does not collapse: nothing is asked.
    assert_eq!(claim(), 0);
    domain.source.set_huge_pages(true);
    assert_eq!(claim(), 0b01);
    assert_eq!(claim(), 0, "a part is asked for once");
    for index in half..SLICES_PER_PAGE - 1 {
        put(domain, page, index, CLASS, SliceState::Partial, 1);
    }
    assert_eq!(claim(), 0, "part 1 still has a fresh slice");
    put(domain, page, SLICES_PER_PAGE - 1, CLASS, SliceState::Partial, 1);
    assert_eq!(claim(), 0b10);
    assert_eq!(claim(), 0);
    // A purge in part 1 makes it fresh again: nothing to ask until the
    // slice is taken, then part 1 alone.
    purge_slice(domain, page, half + 3);
    assert_eq!(claim(), 0);
    put(domain, page, half + 3, OTHER, SliceState::Partial, 1);
    assert_eq!(claim(), 0b10);
    // A purge in part 0 clears part 0's bit alone.
    purge_slice(domain, page, FIRST_SLICE);
    assert_eq!(page.collapse.get(), 0b10, "the purge in part 0 cleared its bit");
}

/// An explicit purge gives back the memory past the last carved object of a
/// slice in use that no heap owns (here written by an earlier use), keeps
/// the carved objects and their contents, files the slice back where it
/// was, so that it is the one the next refill of its class takes, and lets
/// the slice's part be collapsed again.
#[test]
fn an_explicit_purge_gives_back_what_lies_past_the_carved_objects() {
    let domain = domain();
    let page = page(domain);
    let index = FIRST_SLICE + 4;
    let (address, first) = put_with_first(domain, page, index, CLASS, SliceState::Partial, 3);
    let slice = &page.slices[index];
    let carved_end = address + slice.carved.get() as usize * class_size(CLASS);
    let tail = carved_end.next_multiple_of(4096);
    assert!(tail < address + SLICE_SIZE, "a few objects leave most of the slice uncarved");
    // SAFETY: a handed-out object of the slice (at least 16 bytes), and
    // memory of the slice past its carved objects, which the test owns.
    unsafe {
        (first as *mut u64).write(0x5eed_f00d);
        ptr::write_bytes(tail as *mut u8, 0x77, address + SLICE_SIZE - tail);
    }
    #[cfg(not(miri))]
    assert_eq!(resident_pages(tail, address + SLICE_SIZE - tail), (address + SLICE_SIZE - tail) / 4096);
    // Part 0 asked for (collapsed): the tail's purge splits it, and clears
    // its bit so that it may be collapsed again.
    domain.locked(|_| page.collapse.set(0b01));
    domain.purge_all();
    assert_eq!(page.collapse.get(), 0, "the tail's part may be collapsed again");
    #[cfg(not(miri))]
    {
        assert_eq!(resident_pages(tail, address + SLICE_SIZE - tail), 0, "the tail went back");
        // SAFETY: as above; the purged range reads as zero.
        assert_eq!(unsafe { (tail as *const u8).read() }, 0);
    }
    // SAFETY: as above.
    assert_eq!(unsafe { (first as *const u64).read() }, 0x5eed_f00d, "a carved object kept its contents");
    assert_eq!(domain.slice_info(address), Some((SliceState::Partial, SliceFlags::empty(), CLASS)));
    assert_eq!(chosen(domain, CLASS), Some(address), "the slice is filed as partial again");
    let stats = domain.stats();
    assert_eq!(stats.slices_partial, 1);
}

/// With huge pages asked for, a page counts both its parts as on huge
/// pages, which make a part's never-used slices resident from its first
/// touch. The first purge in a part splits it: its clean slices go back
/// with the purged slice and stay clean, its bit is cleared (the part may
/// be collapsed again once it fills), and the other part is left alone
/// until an explicit purge, which splits every part with a clean slice.
#[test]
#[cfg(not(miri))]
fn the_first_purge_in_a_huge_part_gives_back_its_clean_slices_too() {
    let domain = domain_with(TestSource::with_huge_pages());
    let page = page(domain);
    assert_eq!(page.collapse.get(), COLLAPSE_ALL, "mapped with huge pages asked for");
    let half = SLICES_PER_PAGE / 2;
    let in_use = put(domain, page, FIRST_SLICE, CLASS, SliceState::Partial, 1);
    put(domain, page, FIRST_SLICE + 1, CLASS, SliceState::Dirty, 0);
    let (clean_0, clean_1) = (page.slice_address(FIRST_SLICE + 5), page.slice_address(half + 2));
    // What a huge page does to a part's clean slices, and to the header
    // slice past the header: make them resident.
    let header_end = page.base() + size_of::<PageHeader>().next_multiple_of(4096);
    let header_rest = page.base() + SLICE_SIZE - header_end;
    // SAFETY: the header slice past the header, which nothing uses.
    unsafe { ptr::write_bytes(header_end as *mut u8, 0, header_rest) };
    for clean in [clean_0, clean_1] {
        // SAFETY: a clean slice of the test's page, unused; zero is what a
        // clean slice holds.
        unsafe { ptr::write_bytes(clean as *mut u8, 0, SLICE_SIZE) };
        assert_eq!(resident_pages(clean, SLICE_SIZE), SLICE_SIZE / 4096);
    }
    domain.purge_older_than(u64::MAX, false);
    assert_eq!(page.collapse.get(), 0b10, "the purge split part 0 alone");
    assert_eq!(resident_pages(clean_0, SLICE_SIZE), 0, "part 0's clean slice went back");
    assert_eq!(resident_pages(header_end, header_rest), 0, "and the header slice's unused end");
    assert_eq!(resident_pages(page.base(), 4096), 1, "the header stays");
    assert_eq!(resident_pages(clean_1, SLICE_SIZE), SLICE_SIZE / 4096, "part 1 was left alone");
    let fresh = page.fresh.get();
    for index in FIRST_SLICE + 2..SLICES_PER_PAGE {
        assert_eq!(domain.slice_info(page.slice_address(index)).map(|info| info.0), Some(SliceState::Clean));
        assert_ne!(fresh & 1 << index, 0, "slice {index} is fresh again");
    }
    assert_eq!(
        domain.slice_info(page.slice_address(FIRST_SLICE + 1)).map(|info| info.1 & SliceFlags::PURGED),
        Some(SliceFlags::PURGED)
    );
    assert_eq!(domain.stats().slices_purged, 1, "only the dirty slice counts as purged");
    // The explicit purge splits part 1 by its clean slices.
    domain.purge_all();
    assert_eq!(page.collapse.get(), 0);
    assert_eq!(resident_pages(clean_1, SLICE_SIZE), 0, "part 1's clean slice went back");
    assert_eq!(domain.slice_info(clean_1).map(|info| (info.0, info.1)), Some((SliceState::Clean, SliceFlags::empty())));
    assert_eq!(domain.slice_info(in_use).map(|info| info.0), Some(SliceState::Partial));
    assert_eq!(chosen(domain, CLASS), Some(in_use), "the slice in use is still filed as partial");
}

/// The explicit purge walks the slices in use a batch at a time, across
/// pages: every one of more than two batches' worth, on two pages, is
/// filed back as it was, and the lists stay consistent.
#[test]
fn the_tail_purge_files_back_every_slice_of_every_batch() {
    let domain = domain();
    let pages = [page(domain), page(domain)];
    let mut slices = std::vec::Vec::new();
    for page in pages {
        for index in FIRST_SLICE..SLICES_PER_PAGE {
            let class = if index % 2 == 0 { CLASS } else { OTHER };
            let (address, _) = put_with_first(domain, page, index, class, SliceState::Partial, 1);
            slices.push((address, class));
        }
    }
    assert!(slices.len() > 2 * PURGE_BATCH);
    domain.purge_all();
    for &(address, class) in &slices {
        assert_eq!(domain.slice_info(address), Some((SliceState::Partial, SliceFlags::empty(), class)));
    }
    let listed = domain.locked(check_lists);
    assert_eq!(listed, slices.len(), "every slice is on its page's partial file again");
    assert_eq!(domain.stats().slices_partial, slices.len());
}

/// How many 4 KiB pages of `[start, start + len)` are resident.
#[cfg(not(miri))]
fn resident_pages(start: usize, len: usize) -> usize {
    let mut vector = std::vec![0u8; len.div_ceil(4096)];
    // SAFETY: a mapped range of the test's, and a vector with a byte per page.
    let result = unsafe { libc::mincore(start as *mut libc::c_void, len, vector.as_mut_ptr().cast()) };
    assert_eq!(result, 0, "mincore");
    vector.iter().filter(|&&byte| byte & 1 != 0).count()
}

/// Frees a written span of four slices, beside a span of one kept in use
/// (so that the page stays mapped), purges everything, and takes a zeroed
/// span of four again. Returns the flags the purge left on the freed
/// span's first slice and the new span, which must read as zero.
fn zeroed_span_after_a_purge<S: PageSource<Context = ()>>(domain: &Domain<S, SpinLock>) -> (SliceFlags, usize) {
    let kept = domain.alloc_large(SLICE_SIZE, 8, false, ());
    let span = domain.alloc_large(4 * SLICE_SIZE, 8, false, ()) as usize;
    assert!(!kept.is_null() && span != 0);
    // SAFETY: a live span of four slices, the test's to write and free.
    unsafe {
        ptr::write_bytes(span as *mut u8, 0xa5, 4 * SLICE_SIZE);
        domain.free_large(span).unwrap();
    }
    domain.purge_all();
    let (state, flags, _) = domain.slice_info(span).expect("a slice of a live page");
    assert_eq!(state, SliceState::Dirty);
    let again = domain.alloc_large(4 * SLICE_SIZE, 8, true, ()) as usize;
    assert_eq!(again, span, "the purged run is taken again, lowest first");
    (flags, again)
}

/// Whether the `len` bytes at `address` (8-byte aligned, `len` a multiple
/// of 8) are all zero; read a word at a time, which Miri runs faster.
fn reads_as_zero(address: usize, len: usize) -> bool {
    // SAFETY: the caller's live, aligned allocation of at least `len` bytes.
    unsafe { core::slice::from_raw_parts(address as *const u64, len / 8) }.iter().all(|&word| word == 0)
}

/// A zeroed span laid over slices that a purge left reading as zero is not
/// cleared again: its pages stay out of memory until the caller touches
/// them, as a fresh mapping's would.
#[test]
#[cfg(not(miri))]
fn a_zeroed_span_over_slices_purged_to_zero_is_not_cleared_again() {
    let (flags, span) = zeroed_span_after_a_purge(domain());
    assert_eq!(flags, SliceFlags::PURGED | SliceFlags::ZEROED, "madvise(MADV_DONTNEED) zeroes");
    assert_eq!(resident_pages(span, 4 * SLICE_SIZE), 0, "nothing written: no clearing, no page faults");
    assert!(reads_as_zero(span, 4 * SLICE_SIZE));
}

/// Over slices whose purge did not zero them (an arena gives nothing back,
/// and says so), a zeroed span is cleared.
#[test]
fn a_zeroed_span_over_slices_a_purge_did_not_zero_is_cleared() {
    let source = crate::source::ArenaSource::empty();
    let region = std::vec![0u8; crate::source::ArenaSource::MIN_UNALIGNED_REGION];
    assert!(source.init(std::boxed::Box::leak(region.into_boxed_slice())));
    let domain: &'static Domain<crate::source::ArenaSource, SpinLock> =
        std::boxed::Box::leak(std::boxed::Box::new(Domain::new(source)));
    DOMAINS.lock().unwrap().push(domain as *const Domain<_, _> as usize);
    let (flags, span) = zeroed_span_after_a_purge(domain);
    assert_eq!(flags, SliceFlags::PURGED, "the arena's purge leaves the bytes");
    assert!(reads_as_zero(span, 4 * SLICE_SIZE), "the 0xa5 written before the purge is cleared");
}

/// `ZEROED` lasts only as long as `PURGED`: a slice purged to zero and
/// then taken for objects (here by an uncached allocation, which carves
/// into it) no longer claims to read as zero.
#[test]
#[cfg(not(miri))]
fn a_purged_slice_taken_for_objects_is_no_longer_zeroed() {
    let d = domain();
    let p = page(d);
    let dirty = put(d, p, FIRST_SLICE, OTHER, SliceState::Dirty, 0);
    put(d, p, FIRST_SLICE + 1, OTHER, SliceState::Partial, 1);
    d.purge_all();
    assert_eq!(d.slice_info(dirty).unwrap().1, SliceFlags::PURGED | SliceFlags::ZEROED);
    assert_eq!(chosen(d, CLASS), Some(dirty));
    let object = d.alloc_uncached(CLASS, ()) as usize;
    assert_eq!(object & !(SLICE_SIZE - 1), dirty, "the object comes from the purged slice");
    let (state, flags, class) = d.slice_info(dirty).unwrap();
    assert_eq!((state, class), (SliceState::Partial, CLASS));
    assert!(!flags.intersects(SliceFlags::PURGED | SliceFlags::ZEROED), "{flags:?}");
}

#[test]
fn pages_of_names_every_page_an_object_touches() {
    use crate::slice::pages_of;
    assert_eq!(pages_of(0, 16), 0b1);
    assert_eq!(pages_of(4080, 16), 0b1);
    assert_eq!(pages_of(4088, 16), 0b11, "across a page boundary");
    assert_eq!(pages_of(3 * 4096, 4096), 0b1000);
    assert_eq!(pages_of(4096 - 8, 2 * 4096), 0b111);
    assert_eq!(pages_of(0, SLICE_SIZE as u32), u16::MAX);
    assert_eq!(pages_of(SLICE_SIZE as u32 - 16, 16), 1 << 15);
    // Out of range: clamped to the last page, never a panic.
    assert_eq!(pages_of(SLICE_SIZE as u32 - 16, 64), 1 << 15);
    assert_eq!(pages_of(u32::MAX, u32::MAX), 1 << 15);
    assert_eq!(pages_of(100, 0), 0b1, "a size of 0 counts as 1");
}

/// A source that gives memory back as `MADV_DONTNEED` leaves it, reading
/// as zero (here by writing zeros, which Miri can follow), so that the
/// holes of sparse slices are made and checked under Miri too.
struct ZeroingSource(TestSource);

// SAFETY: every call is forwarded to a source that keeps the contract, and
// `purge` writes zeros only over the range the caller gives up.
unsafe impl PageSource for ZeroingSource {
    type Context = ();
    const ZEROED: bool = <TestSource as PageSource>::ZEROED;

    fn map(&self, size: usize, align: usize, context: ()) -> Option<NonNull<u8>> {
        self.0.map(size, align, context)
    }

    fn register(&self, page: usize, context: ()) -> bool {
        self.0.register(page, context)
    }

    fn unregister(&self, page: usize) {
        self.0.unregister(page)
    }

    fn owns(&self, page: usize) -> bool {
        self.0.owns(page)
    }

    unsafe fn unmap(&self, ptr: NonNull<u8>, size: usize) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.0.unmap(ptr, size) }
    }

    unsafe fn purge(&self, ptr: NonNull<u8>, size: usize) -> bool {
        // SAFETY: the caller gives the range up; it stays mapped.
        unsafe { ptr::write_bytes(ptr.as_ptr(), 0, size) };
        true
    }

    fn purges(&self) -> bool {
        true
    }
}

/// A domain over a [`ZeroingSource`], kept for the life of the process.
fn zeroing_domain() -> &'static Domain<ZeroingSource, SpinLock> {
    let domain: &'static Domain<ZeroingSource, SpinLock> =
        std::boxed::Box::leak(std::boxed::Box::new(Domain::new(ZeroingSource(source()))));
    DOMAINS.lock().unwrap().push(domain as *const Domain<_, _> as usize);
    domain
}

/// Fills one slice of `domain` with `size`-byte objects through the
/// uncached path, which fills a slice until it counts as full (seven
/// eighths) before it takes the next. Returns the blocks in address order
/// and the slice's address.
fn fill_one_slice(domain: &Domain<ZeroingSource, SpinLock>, size: usize) -> (std::vec::Vec<usize>, usize) {
    let layout = Layout::from_size_align(size, 8).unwrap();
    let capacity = objects_per_slice(class_of(size, 8).unwrap());
    let full = capacity - capacity / 8;
    let mut blocks: std::vec::Vec<usize> =
        (0..full).map(|_| domain.allocate_uncached(layout, false) as usize).collect();
    blocks.sort_unstable();
    let slice = blocks[0] & !(SLICE_SIZE - 1);
    assert!(blocks.iter().all(|&block| block & !(SLICE_SIZE - 1) == slice), "one slice");
    (blocks, slice)
}

/// The empty pages of a sparse slice become holes on an explicit purge:
/// the objects on them are withheld (a free of one is refused, and their
/// memory is not read), the object kept is untouched, and the next
/// allocation from the slice lists them again, each handed out once.
#[test]
fn an_explicit_purge_makes_holes_of_a_sparse_slices_empty_pages() {
    let domain = zeroing_domain();
    // 1 KiB objects: 64 to a slice, 4 to a 4 KiB page.
    let layout = Layout::from_size_align(1024, 8).unwrap();
    let (blocks, slice) = fill_one_slice(domain, 1024);
    let full = blocks.len();
    let kept = blocks[0];
    assert_eq!(kept, slice, "the slice's first object");
    // The pages its objects cover (all carved ones were handed out).
    let pages = (blocks[full - 1] + 1024 - slice).div_ceil(4096);
    // SAFETY: a live block of 1 KiB.
    unsafe { (kept as *mut u64).write(0x0b1e_c7ed) };
    for &block in blocks.iter().filter(|&&block| block != kept) {
        // SAFETY: live blocks, freed once.
        unsafe { domain.free_uncached(block) }.unwrap();
    }
    domain.purge_all();
    let stats = domain.stats();
    assert_eq!(stats.hole_pages, pages - 1, "every page but the kept object's: {stats}");
    // Its free list, walked with the lock released.
    assert_eq!(stats.hole_walked_unlocked, (full - 1) as u64);
    // SAFETY: the live block.
    assert_eq!(unsafe { (kept as *const u64).read() }, 0x0b1e_c7ed);
    let on_a_hole = kept + 4096;
    // SAFETY: a pointer the domain must refuse without reading it.
    let refused = unsafe { domain.free_uncached(on_a_hole) }.unwrap_err();
    assert_eq!(refused.kind, FreeErrorKind::NotAllocated);
    // The next allocation takes the slice and lists the withheld objects
    // again: the slice serves until it counts as full, each object once,
    // those on the former holes among them.
    let again: std::vec::Vec<usize> = (1..full).map(|_| domain.allocate_uncached(layout, false) as usize).collect();
    assert_eq!(domain.stats().hole_pages, 0);
    let mut sorted = again.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), full - 1, "no object handed out twice");
    assert!(sorted.iter().all(|&block| block & !(SLICE_SIZE - 1) == slice && block != kept));
    assert!(sorted.contains(&on_a_hole), "a withheld object serves again");
    for &block in &again {
        // SAFETY: live blocks of 1 KiB.
        unsafe { ptr::write_bytes(block as *mut u8, 0x3c, 1024) };
    }
    for &block in again.iter().chain([kept].iter()) {
        // SAFETY: live blocks, freed once.
        unsafe { domain.free_uncached(block) }.unwrap();
    }
}

/// An object that a hole withholds but that starts on a page still
/// resident (objects of 3 KiB straddle pages) keeps its free marker there:
/// a free of it is refused as a double free, and the pages stay holes.
#[test]
fn a_withheld_object_that_starts_before_a_hole_reads_as_freed() {
    let domain = zeroing_domain();
    let size = 3072;
    assert_eq!(class_size(class_of(size, 8).unwrap()), size);
    let (blocks, slice) = fill_one_slice(domain, size);
    let kept = slice;
    assert!(blocks.contains(&kept));
    for &block in blocks.iter().filter(|&&block| block != kept) {
        // SAFETY: live blocks, freed once.
        unsafe { domain.free_uncached(block) }.unwrap();
    }
    domain.purge_all();
    let holes = domain.stats().hole_pages;
    assert!(holes > 0);
    // The second object: pages 0 (the kept object's, resident) and 1 (a
    // hole, since the objects on it are free).
    let straddling = slice + size;
    // SAFETY: a pointer the domain must refuse.
    let refused = unsafe { domain.free_uncached(straddling) }.unwrap_err();
    assert!(matches!(refused.kind, FreeErrorKind::DoubleFree | FreeErrorKind::Freed), "{refused}");
    // SAFETY: as above: it starts on a hole.
    let refused = unsafe { domain.free_uncached(slice + 2 * size) }.unwrap_err();
    assert_eq!(refused.kind, FreeErrorKind::NotAllocated, "{refused}");
    let after = domain.stats();
    assert_eq!(after.hole_pages, holes, "the refused frees changed nothing");
    assert_eq!(after.bytes_live, size, "the kept object alone is live");
    // SAFETY: the live block, freed once.
    unsafe { domain.free_uncached(kept) }.unwrap();
}

/// The delayed purge makes holes of a sparse slice's empty pages once the
/// slice has waited the purge delay on the sparse list, as an explicit
/// purge would at once. The slice then leaves the list, and joins it again
/// only once an eighth of its free room has been freed since, or once its
/// holes were filled. (`ZeroingSource`'s clock reads 0 throughout: the
/// delay alone decides.)
#[test]
fn the_delayed_purge_makes_holes_of_a_sparse_slice_that_waited_the_delay() {
    let domain = zeroing_domain();
    // 1 KiB objects: 64 to a slice, 4 to a page; 56 fill it (seven eighths).
    let layout = Layout::from_size_align(1024, 8).unwrap();
    let (blocks, slice) = fill_one_slice(domain, 1024);
    let pages = blocks.len() * 1024 / 4096;
    // Kept: the first object, and one on each of the next eight pages.
    let kept = blocks[0];
    let extra: std::vec::Vec<usize> = (1..=8).map(|page| slice + page * 4096).collect();
    // SAFETY: a live block of 1 KiB.
    unsafe { (kept as *mut u64).write(0x0b1e_c7ed) };
    domain.set_purge_delay_ms(3_600_000);
    assert!(!domain.purge_if_due(), "nothing waits while the slice is full");
    for &block in blocks.iter().filter(|block| **block != kept && !extra.contains(block)) {
        // SAFETY: live blocks, freed once.
        unsafe { domain.free_uncached(block) }.unwrap();
    }
    // Before the delay: the slice waits, and nothing goes back.
    assert!(domain.purge_if_due(), "the sparse slice waits for the delay");
    assert_eq!(domain.stats().hole_pages, 0);
    // After it: every page with no kept object is a hole.
    domain.set_purge_delay_ms(0);
    assert!(!domain.purge_if_due(), "the slice left the sparse list");
    let stats = domain.stats();
    assert_eq!(stats.hole_pages, pages - 9, "every page but the kept objects': {stats}");
    // Its free list, walked with the lock released.
    assert_eq!(stats.hole_walked_unlocked, (blocks.len() - 9) as u64);
    // SAFETY: the live block.
    assert_eq!(unsafe { (kept as *const u64).read() }, 0x0b1e_c7ed);
    // SAFETY: a pointer the domain must refuse without reading it.
    let refused = unsafe { domain.free_uncached(slice + 9 * 4096) }.unwrap_err();
    assert_eq!(refused.kind, FreeErrorKind::NotAllocated);
    // Six frees of the 55 objects' room are less than an eighth: the slice
    // stays off the list. The seventh puts it back, and the next check
    // makes holes of the seven pages freed.
    for &block in &extra[..6] {
        // SAFETY: live blocks, freed once.
        unsafe { domain.free_uncached(block) }.unwrap();
    }
    assert!(!domain.memory_waiting(), "six frees do not make a walk due");
    // SAFETY: as above.
    unsafe { domain.free_uncached(extra[6]) }.unwrap();
    assert!(domain.memory_waiting(), "the seventh does");
    assert!(!domain.purge_if_due());
    assert_eq!(domain.stats().hole_pages, pages - 2);
    // Taken again, the slice lists the withheld objects, so its pages are
    // resident again: one free puts it back on the list.
    let again = domain.allocate_uncached(layout, false) as usize;
    assert_eq!(again & !(SLICE_SIZE - 1), slice);
    assert_eq!(domain.stats().hole_pages, 0);
    // SAFETY: a live block, freed once.
    unsafe { domain.free_uncached(again) }.unwrap();
    assert!(domain.memory_waiting(), "the free put the slice on the sparse list");
    assert!(!domain.purge_if_due());
    assert_eq!(domain.stats().hole_pages, pages - 2);
    for block in [kept, extra[7]] {
        // SAFETY: the live blocks, freed once.
        unsafe { domain.free_uncached(block) }.unwrap();
    }
    assert_eq!(domain.stats().bytes_live, 0);
}

/// The delayed purge walks a slice's free list with the lock released
/// (`purge_holes_older_than`): the list is taken off the slice first. A
/// free into the slice during the walk goes to the slice's new list: the
/// object's page, live when the list was taken, does not become a hole,
/// and once the walked list is back the object is on the list with every
/// other free one, each handed out once. A second free of an object on the
/// detached list is still refused.
#[test]
fn a_free_during_a_walk_without_the_lock_is_kept_and_its_page_is_no_hole() {
    let domain = zeroing_domain();
    // 1 KiB objects: 64 to a slice, 4 to a page; 56 fill it (14 pages).
    let layout = Layout::from_size_align(1024, 8).unwrap();
    let (blocks, slice) = fill_one_slice(domain, 1024);
    let pages = blocks.len() * 1024 / 4096;
    // Live when the list is taken: the first object of pages 0 to 3.
    let live: std::vec::Vec<usize> = (0..4).map(|page| slice + page * 4096).collect();
    let freed: std::vec::Vec<usize> = blocks.iter().copied().filter(|block| !live.contains(block)).collect();
    for &block in &freed {
        // SAFETY: live blocks, freed once.
        unsafe { domain.free_uncached(block) }.unwrap();
    }
    // SAFETY: a slice of a live page of the domain: objects of it stay
    // live while `meta` is in use.
    let meta = unsafe { slice_of(slice) };
    // As the delayed purge does: taken off the sparse list, `PURGING`, and
    // the list taken off.
    let mut walk = domain.locked(|inner| {
        inner.forget_sparse(meta);
        let walk = domain.detach_for_walk(meta);
        inner.transition(meta, meta.state.get(), meta.flags.get() | SliceFlags::PURGING, 0);
        walk
    });
    assert_eq!(meta.free.get(), meta.end(), "the slice's list starts anew");
    // Meanwhile: the object on page 2 is freed, and a freed one again.
    // SAFETY: a live block, freed once.
    unsafe { domain.free_uncached(live[2]) }.unwrap();
    // SAFETY: a block freed above, on the detached list, freed again.
    let refused = unsafe { domain.free_uncached(freed[5]) }.unwrap_err();
    assert_eq!(refused.kind, FreeErrorKind::DoubleFree);
    // SAFETY: detached above, its slice `PURGING` since.
    unsafe { domain.walk_for_empty_pages(&mut walk) };
    let holes = domain.locked(|inner| {
        domain.reattach_after_walk(meta, &walk);
        inner.transition(meta, meta.state.get(), meta.flags.get() - SliceFlags::PURGING, 0);
        meta.holes.get()
    });
    // Every page but the four with an object live at the detach.
    let expected = ((1u32 << pages) - 1) as u16 & !0b1111;
    assert_eq!(holes, expected, "holes {holes:#018b}");
    // On the list: page 2's four objects (the one freed during the walk
    // too), and the three free ones of pages 0, 1 and 3 each. The slice
    // hands out all fifteen, then the withheld objects, each once.
    let mut handed = std::collections::BTreeSet::new();
    for _ in 0..blocks.len() - 3 {
        let block = domain.allocate_uncached(layout, false) as usize;
        assert_eq!(block & !(SLICE_SIZE - 1), slice, "from the same slice");
        assert!(handed.insert(block), "{block:#x} handed out twice");
    }
    assert!(handed.contains(&live[2]), "the object freed during the walk is handed out again");
    assert!(!handed.iter().any(|block| [live[0], live[1], live[3]].contains(block)));
    for block in handed.iter().copied().chain([live[0], live[1], live[3]]) {
        // SAFETY: live blocks, freed once.
        unsafe { domain.free_uncached(block) }.unwrap();
    }
    assert_eq!(domain.stats().bytes_live, 0);
}

/// A heap that receives a slice with holes fills them itself, with the
/// lock released (`refill`), before it allocates from it: the withheld
/// objects come back, objects that straddle two holes once each, in
/// address order ahead of the rest of the free list; the slice then serves
/// every object but the live one exactly once, and the live one is intact.
#[test]
fn a_heap_fills_the_holes_of_a_slice_it_receives_with_the_lock_released() {
    let domain = zeroing_domain();
    // 3 KiB objects straddle pages: 21 to a slice.
    let size = 3072;
    let class = class_of(size, 8).unwrap();
    let capacity = objects_per_slice(class);
    let (blocks, slice) = fill_one_slice(domain, size);
    let kept = slice;
    // SAFETY: a live block of 3 KiB.
    unsafe { (kept as *mut u64).write(0x0b1e_c7ed) };
    for &block in blocks.iter().filter(|&&block| block != kept) {
        // SAFETY: live blocks, freed once.
        unsafe { domain.free_uncached(block) }.unwrap();
    }
    domain.purge_all();
    // SAFETY: a slice of a live page of the domain: objects of it stay
    // live while `meta` is in use.
    let meta = unsafe { slice_of(slice) };
    let holes = meta.holes.get();
    assert!(holes.count_ones() >= 2, "adjacent holes, for objects that straddle two: {holes:#x}");
    // The withheld objects: every carved one that overlaps a hole.
    let withheld: std::vec::Vec<usize> = (0..meta.carved.get() as usize)
        .map(|index| slice + index * size)
        .filter(|&object| holes & pages_of((object - slice) as u32, size as u32) != 0)
        .collect();
    assert!(withheld.len() > 1 && !withheld.contains(&kept));
    let locked_before = domain.stats().lock_acquisitions;

    let mut heap = crate::cache::Heap::new();
    let served: std::vec::Vec<usize> = (1..capacity).map(|_| heap.alloc_small(domain, class) as usize).collect();
    let stats = domain.stats();
    assert_eq!(stats.hole_fills_unlocked, 1, "{stats}");
    assert_eq!(stats.hole_filled_unlocked, withheld.len() as u64);
    assert_eq!(stats.hole_pages, 0, "the holes are filled");
    // One refill took the slice (and the `stats` call its own lock).
    assert_eq!(stats.lock_acquisitions - locked_before, 2);
    assert_eq!(&served[..withheld.len()], &withheld[..], "the withheld objects first, in address order");
    let mut sorted = served.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), capacity - 1, "no object handed out twice");
    assert!(sorted.iter().all(|&block| block & !(SLICE_SIZE - 1) == slice && block != kept));
    for &block in &served {
        // SAFETY: live blocks of 3 KiB.
        unsafe { ptr::write_bytes(block as *mut u8, 0x3c, size) };
    }
    // SAFETY: the live block.
    assert_eq!(unsafe { (kept as *const u64).read() }, 0x0b1e_c7ed);
    for &block in &served {
        // SAFETY: live blocks of this domain, freed once.
        unsafe { heap.free(domain, block as *mut u8) }.unwrap();
    }
    heap.release(domain, false);
    // SAFETY: the live block, freed once.
    unsafe { domain.free_uncached(kept) }.unwrap();
    assert_eq!(domain.stats().bytes_live, 0);
}

/// `memory_waiting` answers without the lock, as the lists stood when the
/// lock was last released: a sparse slice a heap gives back makes memory
/// wait, and the heap's next refill, which takes the slice back, ends the
/// wait (the shim's frees then go back to their long interval between
/// checks of the clock).
#[test]
fn memory_waiting_follows_the_lists_without_the_lock() {
    let domain = zeroing_domain();
    domain.set_purge_delay_ms(3_600_000);
    let class = class_of(64, 8).unwrap();
    let mut heap = crate::cache::Heap::new();
    let live = heap.alloc_small(domain, class);
    assert!(!live.is_null());
    assert!(!domain.memory_waiting(), "a slice a heap holds waits for nothing");
    // Given back with one object of 1,024 live: at most a quarter full, so
    // it waits on the sparse list for the delay.
    heap.release(domain, false);
    let locked_before = domain.stats().lock_acquisitions;
    assert!(domain.memory_waiting(), "the sparse slice waits");
    assert!(domain.memory_waiting());
    assert_eq!(domain.stats().lock_acquisitions - locked_before, 1, "only the `stats` call took the lock");
    // The heap's next allocation takes the slice back.
    let next = heap.alloc_small(domain, class);
    assert_eq!(next as usize & !(SLICE_SIZE - 1), live as usize & !(SLICE_SIZE - 1), "the same slice");
    assert!(!domain.memory_waiting(), "nothing waits once the heap holds the slice again");
    // SAFETY: live blocks of this heap, freed once each.
    unsafe {
        heap.free(domain, next).unwrap();
        heap.free(domain, live).unwrap();
    }
    heap.release(domain, false);
    assert!(domain.memory_waiting(), "the emptied slice waits to be purged");
    domain.purge_all();
    assert!(!domain.memory_waiting(), "purged: nothing waits");
}
