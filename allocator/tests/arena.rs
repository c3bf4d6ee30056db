//! The static-arena page source, as a `no_std` target would use it: a
//! `static mut` region, the lock-protected heaps, no thread-locals and no
//! mmap. Run with `--no-default-features --features arena` to build the core
//! without `std`.

#![cfg(feature = "arena")]

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::addr_of_mut;

use strata::page::PAGE_SIZE;
use strata::source::{ArenaError, ArenaSource, PageSource};
use strata::{SharedStrata, SpinLock};

const ARENA_PAGES: usize = 4;
/// Room for `ARENA_PAGES` pages at any alignment of the region.
static mut REGION: [u8; (ARENA_PAGES + 1) * PAGE_SIZE] = [0; (ARENA_PAGES + 1) * PAGE_SIZE];

static ALLOCATOR: SharedStrata<ArenaSource, SpinLock, 2> = SharedStrata::new(ArenaSource::empty());

#[test]
fn static_arena_serves_until_full_and_recovers() {
    // SAFETY: the region is handed over once, here, and never used directly.
    let region: &'static mut [u8] = unsafe { &mut *addr_of_mut!(REGION) };
    assert!(ALLOCATOR.source().init(region));
    // A second region is refused. (Not `REGION` again: a second `&mut` to
    // it would invalidate the arena's pointers into it, which Miri reports
    // as undefined behaviour.)
    static mut OTHER: [u8; 4096] = [0; 4096];
    // SAFETY: `OTHER` is borrowed once, here.
    assert!(!ALLOCATOR.source().init(unsafe { &mut *addr_of_mut!(OTHER) }));

    // Fill the arena with 150 KiB spans (three slices each, 21 per page,
    // which leaves no slice over) until it refuses.
    let layout = Layout::from_size_align(150 * 1024, 16).unwrap();
    let mut blocks = Vec::new();
    loop {
        // SAFETY: a valid layout.
        let p = unsafe { ALLOCATOR.alloc(layout) };
        if p.is_null() {
            break;
        }
        // SAFETY: a fresh block of this size.
        unsafe { p.write_bytes(blocks.len() as u8, layout.size()) };
        blocks.push(p);
        assert!(blocks.len() < 1000, "the arena never ran out");
    }
    // Every page the arena could give was used, and nothing more.
    let stats = ALLOCATOR.stats();
    assert!(stats.pages_mapped >= ARENA_PAGES, "{stats}");
    assert_eq!(blocks.len(), stats.pages_mapped * (strata::page::USABLE_SLICES / 3));
    // Exhaustion is a null, never a crash; small requests need a slice too.
    let small = Layout::new::<[u64; 2]>();
    // SAFETY: a valid layout.
    assert!(unsafe { ALLOCATOR.alloc(small) }.is_null());

    // Contents survived; free half, and allocation works again from the
    // dirty slices without a new page.
    for (i, &p) in blocks.iter().enumerate() {
        // SAFETY: live blocks of `layout.size()` bytes.
        let bytes = unsafe { core::slice::from_raw_parts(p, layout.size()) };
        // Compared a page at a time (a `memcmp`), not byte by byte: this
        // test also runs under Miri, where 12 MiB of byte loop takes minutes.
        let expected = [i as u8; 4096];
        assert!(bytes.chunks(4096).all(|chunk| chunk == &expected[..chunk.len()]));
    }
    let kept = blocks.split_off(blocks.len() / 2);
    for p in blocks {
        // SAFETY: live block.
        unsafe { ALLOCATOR.dealloc(p, layout) };
    }
    // SAFETY: a valid layout.
    let again = unsafe { ALLOCATOR.alloc(small) };
    assert!(!again.is_null());
    // SAFETY: the arena is mapped memory, and `again` is live.
    unsafe { ALLOCATOR.dealloc(again, small) };
    for p in kept {
        // SAFETY: live block.
        unsafe { ALLOCATOR.dealloc(p, layout) };
    }
    ALLOCATOR.release_caches();
    assert_eq!(ALLOCATOR.stats().bytes_live, 0);

    // Purging returns every page to the arena: the whole region is free.
    let free_before = ALLOCATOR.source().free_bytes();
    ALLOCATOR.purge();
    let stats = ALLOCATOR.stats();
    assert_eq!(stats.pages_mapped, 0, "{stats}");
    assert!(ALLOCATOR.source().free_bytes() >= free_before + ARENA_PAGES * PAGE_SIZE);
}

/// A leaked, zero-filled buffer (untouched memory costs nothing) and a
/// `len`-byte region in it starting `offset` bytes past a `PAGE_SIZE`
/// boundary.
fn region_at(offset: usize, len: usize) -> &'static mut [u8] {
    let buffer: &'static mut [u8] = Box::leak(vec![0u8; len + offset + PAGE_SIZE].into_boxed_slice());
    let skip = (buffer.as_ptr() as usize).next_multiple_of(PAGE_SIZE) - buffer.as_ptr() as usize + offset;
    &mut buffer[skip..skip + len]
}

/// Whether a `PAGE_SIZE`-aligned page fits in the region at all.
fn aligned_page_fits(region: &[u8]) -> bool {
    let start = region.as_ptr() as usize;
    start.next_multiple_of(PAGE_SIZE) + PAGE_SIZE <= start + region.len()
}

const MIB: usize = 1 << 20;

#[test]
fn regions_without_an_aligned_page_are_refused_with_the_minimum() {
    for mib in [1, 2, 4, 6] {
        // Starting 1 MiB past a boundary, none of these holds an aligned page.
        let region = region_at(MIB, mib * MIB);
        let start = region.as_ptr() as usize;
        let arena = ArenaSource::empty();
        let error = arena.try_init(region).unwrap_err();
        assert_eq!(error, ArenaError::NoAlignedPage { start, len: mib * MIB });
        let message = error.to_string();
        assert!(
            message.contains(&format!("the region of {} bytes at {start:#x} holds no 4 MiB page aligned to 4 MiB", mib * MIB))
                && message.contains(&format!("at least {PAGE_SIZE} bytes starting on a {PAGE_SIZE}-byte boundary"))
                && message.contains(&format!("or {} bytes at any address", 2 * PAGE_SIZE + 16)),
            "{message}"
        );
        // The bool form refuses them too.
        assert!(!ArenaSource::empty().init(region_at(MIB, mib * MIB)));
        // Refused, the arena keeps nothing and takes a good region.
        arena.try_init(region_at(0, PAGE_SIZE)).unwrap();
        assert_eq!(arena.try_init(region_at(0, PAGE_SIZE)), Err(ArenaError::AlreadyInitialised));
        assert_eq!(ArenaError::AlreadyInitialised.to_string(), "the arena already has a region");
    }
}

#[test]
fn the_smallest_accepted_regions_serve_allocations() {
    for region in [region_at(0, PAGE_SIZE), region_at(MIB + 8, ArenaSource::MIN_UNALIGNED_REGION)] {
        let allocator: &'static SharedStrata<ArenaSource, SpinLock, 1> =
            Box::leak(Box::new(SharedStrata::new(ArenaSource::empty())));
        allocator.source().try_init(region).unwrap();
        let layout = Layout::from_size_align(1000, 8).unwrap();
        // SAFETY: a valid layout.
        let p = unsafe { allocator.alloc(layout) };
        assert!(!p.is_null());
        // SAFETY: a live block of this layout.
        unsafe { allocator.dealloc(p, layout) };
    }
}

/// `try_init` accepts exactly the regions the arena can take a page from:
/// accepted regions give a page, and a refused one gives none to
/// `linked_list_allocator` either, at offsets from a page boundary and
/// lengths around the limits.
#[test]
fn try_init_agrees_with_the_arena_at_every_edge() {
    let offsets = [0, 1, 8, 16, 24, 4096, PAGE_SIZE / 2, PAGE_SIZE - 24, PAGE_SIZE - 16, PAGE_SIZE - 9, PAGE_SIZE - 8];
    let lengths = [
        PAGE_SIZE - 8,
        PAGE_SIZE,
        PAGE_SIZE + 8,
        PAGE_SIZE + 16,
        2 * PAGE_SIZE - 8,
        2 * PAGE_SIZE,
        2 * PAGE_SIZE + 8,
        2 * PAGE_SIZE + 15,
        2 * PAGE_SIZE + 16,
        2 * PAGE_SIZE + 100,
    ];
    let page = Layout::from_size_align(PAGE_SIZE, PAGE_SIZE).unwrap();
    for offset in offsets {
        for len in lengths {
            let region = region_at(offset, len);
            let (start, fits) = (region.as_ptr() as usize, aligned_page_fits(region));
            let arena = ArenaSource::empty();
            match arena.try_init(region) {
                Ok(()) => {
                    let mapped = arena.map(PAGE_SIZE, PAGE_SIZE, ());
                    let mapped = mapped.unwrap_or_else(|| panic!("offset {offset}, len {len}: accepted, no page"));
                    assert_eq!(mapped.as_ptr() as usize % PAGE_SIZE, 0);
                    // SAFETY: the page just mapped, with its size.
                    unsafe { arena.unmap(mapped, PAGE_SIZE) };
                }
                Err(error) => {
                    assert_eq!(error, ArenaError::NoAlignedPage { start, len });
                    // The documented minimums are always accepted.
                    assert!(offset != 0 || len < PAGE_SIZE, "offset 0, len {len}: {error}");
                    assert!(len < ArenaSource::MIN_UNALIGNED_REGION, "offset {offset}, len {len}: {error}");
                    // Refused for want of room, or for the bookkeeping in
                    // front of the page: `linked_list_allocator` itself
                    // finds no page there.
                    let region = region_at(offset, len);
                    let mut heap = linked_list_allocator::Heap::empty();
                    // SAFETY: a leaked region used by nothing else.
                    unsafe { heap.init(region.as_mut_ptr(), region.len()) };
                    assert!(
                        heap.allocate_first_fit(page).is_err(),
                        "offset {offset}, len {len}: refused, but the arena has a page (fits: {fits})"
                    );
                }
            }
        }
    }
}
