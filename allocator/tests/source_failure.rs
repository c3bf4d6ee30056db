//! A page source that fails: allocation returns null (or `AllocError`),
//! never crashes, and works again once the source recovers.

use core::alloc::{GlobalAlloc, Layout};

use strata::source::{FailingSource, MmapSource};
use strata::{SharedStrata, SpinLock};

type Failing = SharedStrata<FailingSource<MmapSource>, SpinLock, 2>;

fn layouts() -> [Layout; 4] {
    [
        Layout::from_size_align(24, 8).unwrap(),           // small
        Layout::from_size_align(300 * 1024, 8).unwrap(),   // span
        Layout::from_size_align(9 << 20, 4096).unwrap(),   // huge
        Layout::from_size_align(64, 8 << 20).unwrap(),     // huge by alignment
    ]
}

#[test]
fn nothing_mapped_yet_gives_null_then_recovers() {
    static ALLOCATOR: Failing = SharedStrata::new(FailingSource::new(MmapSource::new()));
    ALLOCATOR.source().set_failing(true);
    for layout in layouts() {
        // SAFETY: valid layouts.
        unsafe {
            assert!(ALLOCATOR.alloc(layout).is_null(), "{layout:?}");
            assert!(ALLOCATOR.alloc_zeroed(layout).is_null(), "{layout:?}");
        }
    }
    assert!(ALLOCATOR.source().refused() >= 8);
    ALLOCATOR.source().set_failing(false);
    for layout in layouts() {
        // SAFETY: valid layouts; blocks freed once.
        unsafe {
            let p = ALLOCATOR.alloc_zeroed(layout);
            assert!(!p.is_null(), "{layout:?}");
            assert_eq!(p as usize % layout.align(), 0);
            assert!(core::slice::from_raw_parts(p, layout.size()).iter().all(|&b| b == 0));
            ALLOCATOR.dealloc(p, layout);
        }
    }
    assert_eq!(ALLOCATOR.stats().bytes_live, 0);
}

#[test]
fn exhausted_pages_give_null_and_freed_memory_is_reused() {
    static ALLOCATOR: Failing = SharedStrata::new(FailingSource::new(MmapSource::new()));
    let layout = Layout::from_size_align(1000, 8).unwrap();
    let mut blocks = Vec::new();
    // SAFETY: valid layout.
    blocks.push(unsafe { ALLOCATOR.alloc(layout) });
    // One page is mapped; forbid more and allocate until it is exhausted.
    ALLOCATOR.source().set_failing(true);
    loop {
        // SAFETY: valid layout.
        let p = unsafe { ALLOCATOR.alloc(layout) };
        if p.is_null() {
            break;
        }
        // SAFETY: a fresh block.
        unsafe { p.write_bytes(0x5a, layout.size()) };
        blocks.push(p);
    }
    let stats = ALLOCATOR.stats();
    assert_eq!(stats.pages_mapped, 1);
    // 63 slices of 64 KiB hold 65 objects of the 1024-byte class each.
    assert_eq!(blocks.len(), strata::page::USABLE_SLICES * 64);
    // Still failing: freed objects serve new requests without a new page.
    for p in blocks.drain(..100) {
        // SAFETY: live block.
        unsafe { ALLOCATOR.dealloc(p, layout) };
    }
    for _ in 0..100 {
        // SAFETY: valid layout.
        let p = unsafe { ALLOCATOR.alloc(layout) };
        assert!(!p.is_null());
        blocks.push(p);
    }
    // SAFETY: valid layout.
    assert!(unsafe { ALLOCATOR.alloc(layout) }.is_null());
    ALLOCATOR.source().set_failing(false);
    // SAFETY: valid layout.
    let p = unsafe { ALLOCATOR.alloc(layout) };
    assert!(!p.is_null());
    blocks.push(p);
    assert_eq!(ALLOCATOR.stats().pages_mapped, 2);
    for p in blocks {
        // SAFETY: live blocks.
        unsafe { ALLOCATOR.dealloc(p, layout) };
    }
    assert_eq!(ALLOCATOR.stats().bytes_live, 0);
}

#[cfg(feature = "allocator-api2")]
#[test]
fn allocator_api_reports_alloc_error() {
    use allocator_api2::alloc::Allocator;
    static ALLOCATOR: Failing = SharedStrata::new(FailingSource::new(MmapSource::new()));
    ALLOCATOR.source().set_failing(true);
    assert!(Allocator::allocate(&ALLOCATOR, Layout::new::<u64>()).is_err());
    ALLOCATOR.source().set_failing(false);
    let mut v = allocator_api2::vec::Vec::new_in(&ALLOCATOR);
    v.extend(0..10_000u32);
    assert_eq!(v.iter().map(|&x| x as u64).sum::<u64>(), 49_995_000);
}
