//! Thread caches: a heap keeps the slices it ran dry (parked) so that its
//! own frees stay local, reuses them before asking the domain, and gives
//! everything back when asked or when its thread exits.

use std::alloc::{GlobalAlloc, Layout};

use strata::cache::MAX_PARKED;
use strata::page::SLICE_SIZE;
use strata::size_class::class_of;
use strata::Strata;

#[test]
fn parked_slices_serve_the_owner_before_the_domain() {
    static STRATA: Strata = Strata::new();
    let layout = Layout::from_size_align(1000, 8).unwrap();
    let class = class_of(1000, 8).unwrap();
    let per_slice = SLICE_SIZE / 1024;
    let slices = MAX_PARKED + 1;
    let count = per_slice * slices;
    // SAFETY: each block is freed once.
    let blocks: Vec<_> = (0..count).map(|_| unsafe { STRATA.alloc(layout) }).collect();
    let full = STRATA.stats();
    assert_eq!(full.classes[class].cached_slices, slices, "current plus parked: {full}");
    assert_eq!(full.classes[class].objects_live, count);
    for &p in &blocks {
        // SAFETY: live blocks.
        unsafe { STRATA.dealloc(p, layout) };
    }
    let freed = STRATA.stats();
    assert_eq!(freed.classes[class].objects_live, 0);
    assert_eq!(freed.classes[class].cached_slices, slices, "the owner kept its slices");
    assert_eq!(freed.remote_frees, 0, "the owner's frees stayed local");
    let refills = freed.refills;
    // Allocating the same again reuses the parked slices: no refill.
    // SAFETY: each block is freed once.
    let again: Vec<_> = (0..count).map(|_| unsafe { STRATA.alloc(layout) }).collect();
    assert_eq!(STRATA.stats().refills, refills);
    for p in again {
        // SAFETY: live blocks.
        unsafe { STRATA.dealloc(p, layout) };
    }
    STRATA.release_thread_cache();
    let released = STRATA.stats();
    assert_eq!(released.classes[class].cached_slices, 0);
    assert_eq!(released.slices_dirty, slices, "{released}");
}

#[test]
fn a_thread_that_exits_returns_its_slices() {
    static STRATA: Strata = Strata::new();
    let kept = std::thread::spawn(|| {
        let layout = Layout::from_size_align(64, 8).unwrap();
        // SAFETY: fresh blocks; half are freed here, half by the parent.
        let blocks: Vec<usize> = (0..10_000).map(|_| unsafe { STRATA.alloc(layout) } as usize).collect();
        for &p in &blocks[..5_000] {
            // SAFETY: live blocks.
            unsafe { STRATA.dealloc(p as *mut u8, layout) };
        }
        blocks[5_000..].to_vec()
    })
    .join()
    .unwrap();
    let stats = STRATA.stats();
    assert_eq!(stats.classes.iter().map(|c| c.cached_slices).sum::<usize>(), 0, "{stats}");
    assert_eq!(stats.bytes_live, 5_000 * 64);
    let layout = Layout::from_size_align(64, 8).unwrap();
    for p in kept {
        // SAFETY: live blocks from the exited thread.
        unsafe { STRATA.dealloc(p as *mut u8, layout) };
    }
    let stats = STRATA.stats();
    assert_eq!(stats.bytes_live, 0, "{stats}");
}
