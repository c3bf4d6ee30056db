//! The set of objects: `alloc_bulk` and `free_bulk` on both fronts, their
//! all-or-nothing failure and their handling of bad pointers.

use std::alloc::Layout;
use std::collections::HashSet;

use strata::source::{FailingSource, MmapSource};
use strata::{FreeErrorKind, SharedStrata, SpinLock, Strata};

fn check_blocks(blocks: &[*mut u8], layout: Layout, seed: u8) {
    let distinct: HashSet<usize> = blocks.iter().map(|&b| b as usize).collect();
    assert_eq!(distinct.len(), blocks.len(), "every block is distinct");
    for (i, &block) in blocks.iter().enumerate() {
        assert!(!block.is_null());
        assert_eq!(block as usize % layout.align(), 0, "block {i} aligned");
        // SAFETY: each block holds `layout.size()` bytes.
        unsafe { std::ptr::write_bytes(block, seed.wrapping_add(i as u8), layout.size()) };
    }
    for (i, &block) in blocks.iter().enumerate() {
        // SAFETY: as above.
        let bytes = unsafe { std::slice::from_raw_parts(block, layout.size()) };
        assert!(bytes.iter().all(|&b| b == seed.wrapping_add(i as u8)), "block {i} kept its contents");
    }
}

#[test]
fn bulk_small_and_large_blocks_on_the_std_front() {
    static ALLOCATOR: Strata = Strata::new();
    let before = ALLOCATOR.stats().bytes_live;
    for (size, align, count) in [(16, 8, 5000), (48, 16, 3000), (1000, 64, 500), (200_000, 8, 12)] {
        let layout = Layout::from_size_align(size, align).unwrap();
        let mut blocks = vec![std::ptr::null_mut(); count];
        assert_eq!(ALLOCATOR.alloc_bulk(layout, &mut blocks), count);
        check_blocks(&blocks, layout, size as u8);
        assert!(ALLOCATOR.stats().bytes_live >= before + size * count);
        unsafe { ALLOCATOR.free_bulk(&blocks) }.unwrap();
        assert_eq!(ALLOCATOR.stats().bytes_live, before, "size {size}: every block came back");
    }
}

#[test]
fn bulk_free_reports_a_bad_pointer_and_frees_the_rest() {
    static ALLOCATOR: Strata = Strata::new();
    let layout = Layout::from_size_align(64, 8).unwrap();
    let mut blocks = vec![std::ptr::null_mut(); 100];
    assert_eq!(ALLOCATOR.alloc_bulk(layout, &mut blocks), 100);
    let before = ALLOCATOR.stats().bytes_live;
    let mut stack_word = 0u64;
    blocks[50] = &mut stack_word as *mut u64 as *mut u8;
    let error = unsafe { ALLOCATOR.free_bulk(&blocks) }.unwrap_err();
    assert_eq!(error.kind, FreeErrorKind::NotAllocated);
    assert_eq!(error.address, blocks[50] as usize);
    assert_eq!(ALLOCATOR.stats().bytes_live, before - 99 * 64);
    // The block that took the stack word's place was never freed.
    let again = unsafe { ALLOCATOR.free_bulk(&blocks[..1]) }.unwrap_err();
    assert_eq!(again.kind, FreeErrorKind::DoubleFree);
}

#[test]
fn bulk_allocation_is_all_or_nothing_when_the_source_fails() {
    type Failing = SharedStrata<FailingSource<MmapSource>, SpinLock, 1>;
    static ALLOCATOR: Failing = SharedStrata::new(FailingSource::new(MmapSource::new()));
    let layout = Layout::from_size_align(4096, 8).unwrap();
    // Four pages' worth: the first page is mapped, then the source fails.
    let mut first = vec![std::ptr::null_mut(); 10];
    assert_eq!(ALLOCATOR.alloc_bulk(layout, &mut first), 10);
    ALLOCATOR.source().set_failing(true);
    let live = ALLOCATOR.stats().bytes_live;
    let mut blocks = vec![std::ptr::null_mut(); 4 * 1024];
    assert_eq!(ALLOCATOR.alloc_bulk(layout, &mut blocks), 0);
    assert!(blocks.iter().all(|b| b.is_null()), "a failed bulk call leaves no block behind");
    assert_eq!(ALLOCATOR.stats().bytes_live, live);
    assert!(ALLOCATOR.source().refused() > 0);
    // The source recovers, and so does the allocator.
    ALLOCATOR.source().set_failing(false);
    assert_eq!(ALLOCATOR.alloc_bulk(layout, &mut blocks), blocks.len());
    check_blocks(&blocks, layout, 7);
    unsafe { ALLOCATOR.free_bulk(&blocks) }.unwrap();
    unsafe { ALLOCATOR.free_bulk(&first) }.unwrap();
    assert_eq!(ALLOCATOR.stats().bytes_live, 0);
}
