//! Blocks above the size classes through the public fronts: growth by
//! `realloc` keeps contents and mostly stays in place, freed huge mappings
//! are reused and zeroed for `alloc_zeroed`, and a source that runs out of
//! memory gets back what the domain holds before a request fails.

use std::alloc::{GlobalAlloc, Layout};
use std::ptr::addr_of_mut;

use strata::page::PAGE_SIZE;
use strata::source::ArenaSource;
use strata::{SharedStrata, SpinLock, Strata};

const STEP: usize = 64 << 10;

fn byte_at(tag: usize, i: usize) -> u8 {
    (tag * 13 + i * 7 + (i >> 12)) as u8
}

#[test]
fn realloc_growth_keeps_contents_and_rarely_moves() {
    static STRATA: Strata = Strata::new();
    let top = 16 << 20;
    let mut size = STEP;
    let mut layout = Layout::from_size_align(size, 16).unwrap();
    // SAFETY: a valid layout; every block is used within its size and
    // freed once at the end.
    unsafe {
        let mut block = STRATA.alloc(layout);
        assert!(!block.is_null());
        for i in 0..size {
            *block.add(i) = byte_at(1, i);
        }
        let mut moves = 0;
        while size < top {
            let next = size + STEP;
            let grown = STRATA.realloc(block, layout, next);
            assert!(!grown.is_null(), "realloc to {next}");
            if grown != block {
                moves += 1;
            }
            for i in (0..size).step_by(997).chain([size - 1]) {
                assert_eq!(
                    *grown.add(i),
                    byte_at(1, i),
                    "byte {i} lost growing {size} -> {next}"
                );
            }
            for i in size..next {
                *grown.add(i) = byte_at(1, i);
            }
            block = grown;
            size = next;
            layout = Layout::from_size_align(size, 16).unwrap();
        }
        // 255 reallocs: spans grow into the slices after them, huge blocks
        // by remap with headroom.
        assert!(moves <= 16, "{moves} of 255 reallocs moved the block");
        // Shrinking keeps the front.
        let small = STRATA.realloc(block, layout, 3 << 20);
        for i in (0..3 << 20).step_by(4099) {
            assert_eq!(*small.add(i), byte_at(1, i));
        }
        STRATA.dealloc(small, Layout::from_size_align(3 << 20, 16).unwrap());
    }
}

#[test]
fn a_reused_huge_mapping_is_zeroed_for_alloc_zeroed() {
    static STRATA: Strata = Strata::new();
    let layout = Layout::from_size_align(5 << 20, 64).unwrap();
    // SAFETY: valid layouts, blocks used within their size and freed once.
    unsafe {
        let dirty = STRATA.alloc(layout);
        assert!(!dirty.is_null());
        dirty.write_bytes(0xc3, layout.size());
        STRATA.dealloc(dirty, layout);
        assert!(STRATA.stats().huge_cached_bytes >= layout.size());
        let zeroed = STRATA.alloc_zeroed(layout);
        assert_eq!(zeroed, dirty, "the freed mapping is reused");
        assert!(std::slice::from_raw_parts(zeroed, layout.size())
            .iter()
            .all(|&b| b == 0));
        STRATA.dealloc(zeroed, layout);
    }
}

#[test]
fn an_exhausted_arena_gets_freed_pages_back_before_failing() {
    const PAGES: usize = 4;
    static mut REGION: [u8; (PAGES + 1) * PAGE_SIZE] = [0; (PAGES + 1) * PAGE_SIZE];
    static ALLOCATOR: SharedStrata<ArenaSource, SpinLock, 2> =
        SharedStrata::new(ArenaSource::empty());
    // SAFETY: the region is handed over once, here.
    assert!(ALLOCATOR
        .source()
        .init(unsafe { &mut *addr_of_mut!(REGION) }));
    // Fill the arena with 1.5 MiB spans, then free them all: the pages
    // stay mapped (dirty) in the domain.
    let span = Layout::from_size_align(3 << 19, 16).unwrap();
    let mut blocks = Vec::new();
    loop {
        // SAFETY: a valid layout.
        let block = unsafe { ALLOCATOR.alloc(span) };
        if block.is_null() {
            break;
        }
        // SAFETY: a fresh block of this size.
        unsafe { block.write_bytes(7, span.size()) };
        blocks.push(block);
        assert!(blocks.len() < 100, "the arena never ran out");
    }
    assert!(blocks.len() >= PAGES * 2);
    for &block in &blocks {
        // SAFETY: live blocks, freed once.
        unsafe { ALLOCATOR.dealloc(block, span) };
    }
    assert!(ALLOCATOR.stats().pages_mapped >= PAGES);
    // A huge block needs the arena's memory back: the domain gives its
    // empty pages back and the request is retried.
    let huge = Layout::from_size_align(2 * PAGE_SIZE + 4096, 16).unwrap();
    // SAFETY: a valid layout; the block is freed once.
    unsafe {
        let block = ALLOCATOR.alloc(huge);
        assert!(
            !block.is_null(),
            "the retry after reclaim failed: {}",
            ALLOCATOR.stats()
        );
        block.write_bytes(9, huge.size());
        ALLOCATOR.dealloc(block, huge);
    }
    // And the other way: cached huge mappings go back for slab pages.
    let mut again = 0;
    loop {
        // SAFETY: a valid layout; blocks are leaked with the static arena.
        let block = unsafe { ALLOCATOR.alloc(span) };
        if block.is_null() {
            break;
        }
        again += 1;
        assert!(again < 100);
    }
    assert_eq!(
        again,
        blocks.len(),
        "as many spans as before: {}",
        ALLOCATOR.stats()
    );
}

#[test]
fn a_refused_mapping_is_retried_once_after_reclaim() {
    use strata::source::{FailingSource, MmapSource};
    use strata::Domain;
    static DOMAIN: Domain<FailingSource<MmapSource>, SpinLock> =
        Domain::new(FailingSource::new(MmapSource::new()));
    // Two pages of freed spans, and a freed huge mapping in the cache.
    let spans: Vec<*mut u8> = (0..4)
        .map(|_| DOMAIN.alloc_large(2 << 20, 16, false, ()))
        .collect();
    let huge = DOMAIN.alloc_large(3 << 20, 16, false, ());
    assert!(!huge.is_null() && spans.iter().all(|p| !p.is_null()));
    // SAFETY: live blocks, freed once.
    unsafe {
        for &block in spans.iter().chain([&huge]) {
            DOMAIN.free_large(block as usize).unwrap();
        }
    }
    let held = DOMAIN.stats();
    assert!(
        held.pages_mapped >= 2 && held.huge_cached_bytes > 0,
        "{held}"
    );
    // The source refuses: the request is tried, everything held goes
    // back, the request is tried once more, and fails cleanly.
    DOMAIN.source().set_failing(true);
    let refused = DOMAIN.source().refused();
    assert!(DOMAIN.alloc_large(8 << 20, 16, false, ()).is_null());
    assert_eq!(
        DOMAIN.source().refused() - refused,
        2,
        "one try and one retry"
    );
    let after = DOMAIN.stats();
    assert_eq!(after.pages_mapped, 0, "{after}");
    assert_eq!(after.bytes_mapped, 0, "{after}");
    // Nothing left to give back: one try, no retry.
    assert!(DOMAIN.alloc_large(8 << 20, 16, false, ()).is_null());
    assert_eq!(DOMAIN.source().refused() - refused, 3);
    DOMAIN.source().set_failing(false);
    assert!(!DOMAIN.alloc_large(8 << 20, 16, false, ()).is_null());
}
