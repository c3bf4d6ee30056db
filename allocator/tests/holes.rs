//! An explicit purge, or the delayed purge once the slices have waited the
//! purge delay, gives back the empty 4 KiB pages inside sparse slices
//! still in use (their *holes*): a few long-lived objects no longer keep a
//! whole slice resident. The objects kept are untouched, the freed objects
//! on the holes are refused as frees, and the slice serves every one of
//! its objects again once it is handed out.

use std::alloc::{GlobalAlloc, Layout};
use std::collections::{BTreeMap, HashSet};

use strata::page::SLICE_SIZE;
use strata::size_class::{class_of, objects_per_slice};
use strata::{FreeErrorKind, Strata};

const PAGE: usize = 4096;
const SIZE: usize = 64;
/// Many slices, each walked for holes in a round of its own, with the
/// domain lock released.
const SLICES: usize = 20;

fn layout() -> Layout {
    Layout::from_size_align(SIZE, 8).unwrap()
}

/// The OS pages of `[start, start + len)` that are resident.
fn resident_pages(start: usize, len: usize) -> usize {
    let mut vector = vec![0u8; len.div_ceil(PAGE)];
    // SAFETY: a mapped range of the allocator's, and a byte per page.
    let result = unsafe { libc::mincore(start as *mut libc::c_void, len, vector.as_mut_ptr().cast()) };
    assert_eq!(result, 0, "mincore");
    vector.iter().filter(|&&byte| byte & 1 != 0).count()
}

/// Fills `SLICES` slices with written 64-byte blocks, keeps the block at
/// the lowest address of each slice (in its first page) and frees the rest,
/// gives the thread's cache back and purges with `purge`. Returns the
/// blocks kept, one per slice by slice address, and the ones freed. The
/// purge delay is set beyond reach first, so that no delayed purge runs
/// before `purge`, however slow the run.
fn sparse_slices_purged(strata: &'static Strata, purge: impl FnOnce(&Strata)) -> (BTreeMap<usize, usize>, Vec<usize>) {
    strata.set_purge_delay_ms(u64::MAX);
    let per_slice = objects_per_slice(class_of(SIZE, 8).unwrap());
    // SAFETY: fresh blocks, each written within its 64 bytes.
    let blocks: Vec<usize> = (0..per_slice * SLICES)
        .map(|index| unsafe {
            let block = strata.alloc(layout());
            assert!(!block.is_null());
            block.cast::<u64>().write(index as u64 ^ 0xa5a5);
            block as usize
        })
        .collect();
    let mut kept = BTreeMap::new();
    for &block in &blocks {
        let lowest = kept.entry(block & !(SLICE_SIZE - 1)).or_insert(block);
        *lowest = (*lowest).min(block);
    }
    assert_eq!(kept.len(), SLICES, "the blocks fill {SLICES} slices");
    let keep: HashSet<usize> = kept.values().copied().collect();
    let freed: Vec<usize> = blocks.iter().copied().filter(|block| !keep.contains(block)).collect();
    for &block in &freed {
        // SAFETY: a live block, freed once.
        unsafe { strata.dealloc(block as *mut u8, layout()) };
    }
    strata.release_thread_cache();
    let before = strata.stats();
    purge(strata);
    let after = strata.stats();
    // Pages 1 to 15 of each slice hold no live block: they went back.
    assert!(
        before.bytes_resident - after.bytes_resident >= SLICES * (SLICE_SIZE - PAGE),
        "resident before {} after {}",
        before.bytes_resident,
        after.bytes_resident
    );
    for (&slice, &block) in &kept {
        assert_eq!(resident_pages(slice + PAGE, SLICE_SIZE - PAGE), 0, "the empty pages went back");
        let index = blocks.iter().position(|&b| b == block).unwrap();
        // SAFETY: a live block.
        assert_eq!(unsafe { (block as *const u64).read() }, index as u64 ^ 0xa5a5, "a kept block kept its contents");
    }
    assert_eq!(after.hole_pages, SLICES * (SLICE_SIZE / PAGE - 1), "{after}");
    let class = class_of(SIZE, 8).unwrap();
    assert_eq!(after.classes[class].slices, SLICES, "the slices stay in use: {after}");
    assert_eq!(after.classes[class].objects_live, SLICES);
    (kept, freed)
}

#[test]
fn a_purge_gives_back_the_empty_pages_of_sparse_slices_which_then_serve_again() {
    static STRATA: Strata = Strata::new();
    let (kept, freed) = sparse_slices_purged(&STRATA, Strata::purge);
    // A block freed earlier whose page went back is no block at all now:
    // its memory is not read, and a free of it is refused.
    let on_a_hole = *freed.iter().find(|&&block| block & (SLICE_SIZE - 1) >= PAGE).unwrap();
    // SAFETY: a pointer the allocator must refuse, freeing nothing.
    let refused = unsafe { STRATA.free(on_a_hole as *mut u8) }.unwrap_err();
    assert_eq!(refused.kind, FreeErrorKind::NotAllocated);
    // Allocation takes the sparse slices again and hands out every one of
    // their objects, the withheld ones included, each once.
    let per_slice = objects_per_slice(class_of(SIZE, 8).unwrap());
    let again: Vec<usize> = (0..SLICES * (per_slice - 1))
        .map(|index| {
            // SAFETY: a fresh block, written within its 64 bytes.
            unsafe {
                let block = STRATA.alloc(layout());
                assert!(!block.is_null());
                block.cast::<u64>().write(!(index as u64));
                block as usize
            }
        })
        .collect();
    let distinct: HashSet<usize> = again.iter().copied().collect();
    assert_eq!(distinct.len(), again.len(), "no block handed out twice");
    assert!(again.iter().all(|block| kept.contains_key(&(block & !(SLICE_SIZE - 1)))), "the sparse slices filled up");
    assert!(again.iter().all(|block| !kept.values().any(|kept| kept == block)));
    assert!(again.contains(&on_a_hole), "the withheld objects serve again");
    for (index, &block) in again.iter().enumerate() {
        // SAFETY: a live block.
        assert_eq!(unsafe { (block as *const u64).read() }, !(index as u64));
    }
    let class = class_of(SIZE, 8).unwrap();
    let full = STRATA.stats();
    assert_eq!(full.classes[class].objects_live, SLICES * per_slice, "{full}");
    assert_eq!(full.classes[class].slices, SLICES);
    assert_eq!(full.hole_pages, 0, "{full}");
    for block in again.into_iter().chain(kept.into_values()) {
        // SAFETY: live blocks, freed once.
        unsafe { STRATA.free(block as *mut u8) }.unwrap();
    }
}

/// With no call to `purge`, the delayed purge gives the same pages back
/// once the slices have waited the purge delay (here 0): a service that
/// frees most of what it held gets its memory back by itself.
#[test]
fn the_delayed_purge_gives_back_the_empty_pages_of_sparse_slices_by_itself() {
    static STRATA: Strata = Strata::new();
    let (kept, _) = sparse_slices_purged(&STRATA, |strata| {
        // Before the delay: the slices wait, and nothing goes back.
        assert!(strata.purge_if_due(), "the sparse slices wait for the delay");
        assert_eq!(strata.stats().hole_pages, 0);
        strata.set_purge_delay_ms(0);
        assert!(!strata.purge_if_due(), "nothing waits once the check ran");
    });
    for block in kept.into_values() {
        // SAFETY: live blocks, freed once.
        unsafe { STRATA.free(block as *mut u8) }.unwrap();
    }
}

#[test]
fn a_thread_without_a_cache_takes_a_sparse_slice_whole_again() {
    static STRATA: Strata = Strata::new();
    let (kept, _) = sparse_slices_purged(&STRATA, Strata::purge);
    let resident = STRATA.stats().bytes_resident;
    // The uncached path (a thread whose cache is gone) allocates from the
    // slices under the domain lock: the first one it takes comes back whole.
    let block = STRATA.domain().allocate_uncached(layout(), false) as usize;
    assert!(block != 0 && kept.contains_key(&(block & !(SLICE_SIZE - 1))));
    let whole = STRATA.stats();
    assert!(whole.bytes_resident >= resident + SLICE_SIZE - PAGE, "the slice is whole again: {whole}");
    assert_eq!(whole.hole_pages, (SLICES - 1) * (SLICE_SIZE / PAGE - 1), "the other slices keep their holes");
    // SAFETY: live blocks, freed once.
    for block in kept.into_values().chain([block]) {
        unsafe { STRATA.free(block as *mut u8) }.unwrap();
    }
}
