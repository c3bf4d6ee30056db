//! `defrag_hint`: which blocks a service should move to give memory back,
//! and that moving exactly those packs the survivors of a mass free into
//! few slices.

use std::alloc::{GlobalAlloc, Layout};

use strata::page::SLICE_SIZE;
use strata::size_class::class_of;
use strata::{FreeErrorKind, Strata};

const SIZE: usize = 256;
const PER_SLICE: usize = SLICE_SIZE / SIZE;

/// Fills the block with bytes that tell it apart.
fn fill(block: *mut u8, tag: usize) {
    // SAFETY: a live block of `SIZE` bytes.
    unsafe { std::ptr::write_bytes(block, (tag % 251) as u8, SIZE) };
}

/// Whether the block still holds what `fill` wrote.
fn holds(block: *const u8, tag: usize) -> bool {
    // SAFETY: a live block of `SIZE` bytes.
    unsafe { std::slice::from_raw_parts(block, SIZE) }.iter().all(|&b| b == (tag % 251) as u8)
}

#[test]
fn the_hint_names_the_blocks_of_sparse_slices_no_thread_holds_and_moving_them_packs_them() {
    static STRATA: Strata = Strata::new();
    let layout = Layout::from_size_align(SIZE, 8).unwrap();
    let class = class_of(SIZE, 8).unwrap();
    let slices = 20;
    // SAFETY: non-zero size; every block is freed once below.
    let mut blocks: Vec<*mut u8> = (0..slices * PER_SLICE).map(|_| unsafe { STRATA.alloc(layout) }).collect();
    for (tag, &block) in blocks.iter().enumerate() {
        fill(block, tag);
    }
    let last = *blocks.last().unwrap();
    assert_eq!(STRATA.defrag_hint(last), Ok(false), "the slice the thread allocates from");
    STRATA.release_thread_cache();
    assert_eq!(STRATA.defrag_hint(last), Ok(false), "a full slice");
    assert_eq!(STRATA.stats().classes[class].slices, slices);

    // Free nine blocks in ten of the first half of the slices.
    let sparse = slices / 2 * PER_SLICE;
    for (index, block) in blocks.iter_mut().enumerate().take(sparse) {
        if index % 10 != 0 {
            // SAFETY: a live block, freed once.
            unsafe { STRATA.dealloc(*block, layout) };
            *block = std::ptr::null_mut();
        }
    }
    STRATA.release_thread_cache();
    for (index, &block) in blocks.iter().enumerate() {
        if !block.is_null() {
            assert_eq!(STRATA.defrag_hint(block), Ok(index < sparse), "block {index}");
        }
    }
    let freed = blocks[1];
    assert!(freed.is_null());
    let (live_before, slices_before) = {
        let stats = STRATA.stats();
        (stats.classes[class].objects_live, stats.classes[class].slices)
    };
    assert_eq!(slices_before, slices, "every slice still holds survivors");

    // Move what the hint names; the copies fill the slice this thread
    // takes, and the sparse slices empty.
    let mut moved = 0;
    for (tag, block) in blocks.iter_mut().enumerate() {
        if !block.is_null() && STRATA.defrag_hint(*block) == Ok(true) {
            // SAFETY: non-zero size; the old block is live and freed once.
            unsafe {
                let copy = STRATA.alloc(layout);
                std::ptr::copy_nonoverlapping(*block, copy, SIZE);
                STRATA.dealloc(*block, layout);
                *block = copy;
            }
            moved += 1;
            assert!(holds(*block, tag));
        }
    }
    // The survivors of a sparse slice this thread took to hold the copies
    // stay: from then on the hint says no for them.
    assert!(moved <= sparse / 10 && moved > sparse / 20, "moved {moved} of {}", sparse / 10);
    STRATA.release_thread_cache();
    let after = STRATA.stats();
    assert_eq!(after.classes[class].objects_live, live_before);
    let needed = live_before.div_ceil(PER_SLICE);
    assert!(
        after.classes[class].slices <= needed + 1,
        "{} slices hold {live_before} blocks after the move ({needed} would do)",
        after.classes[class].slices
    );
    for (tag, &block) in blocks.iter().enumerate() {
        if !block.is_null() {
            assert!(holds(block, tag), "block {tag} changed");
            // SAFETY: a live block, freed once.
            unsafe { STRATA.dealloc(block, layout) };
        }
    }
}

#[test]
fn the_hint_refuses_what_is_not_a_live_block_and_leaves_large_blocks_alone() {
    static STRATA: Strata = Strata::new();
    let small = Layout::from_size_align(64, 8).unwrap();
    let large = Layout::from_size_align(1 << 20, 8).unwrap();
    // SAFETY: non-zero sizes; each block is freed once.
    unsafe {
        let block = STRATA.alloc(small);
        let big = STRATA.alloc(large);
        assert_eq!(STRATA.defrag_hint(big), Ok(false), "a span goes back whole when freed");
        STRATA.dealloc(big, large);
        STRATA.dealloc(block, small);
        STRATA.release_thread_cache();
        let error = STRATA.defrag_hint(block).unwrap_err();
        assert_eq!(error.kind, FreeErrorKind::Freed);
        let on_stack = 0u64;
        let error = STRATA.defrag_hint(&on_stack as *const u64 as *const u8).unwrap_err();
        assert_eq!(error.kind, FreeErrorKind::NotAllocated);
        let interior = STRATA.alloc(small);
        assert!(STRATA.defrag_hint(interior.add(8)).is_err(), "not the start of a block");
        STRATA.dealloc(interior, small);
    }
}

#[test]
fn moving_by_the_hint_packs_blocks_that_other_threads_allocated_and_freed() {
    static STRATA: Strata = Strata::new();
    const COUNT: usize = 200_000;
    let layout = Layout::from_size_align(16, 8).unwrap();
    let class = class_of(16, 8).unwrap();
    // One thread allocates, another frees nine in ten at random, a third
    // moves what the hint names, as a service's writers, deleters and
    // compaction thread would.
    let blocks: Vec<usize> = std::thread::spawn(move || {
        // SAFETY: non-zero size.
        (0..COUNT).map(|_| unsafe { STRATA.alloc(layout) } as usize).collect()
    })
    .join()
    .unwrap();
    let mut survivors: Vec<usize> = std::thread::spawn(move || {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut kept = Vec::new();
        for &block in &blocks {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if state.is_multiple_of(10) {
                kept.push(block);
            } else {
                // SAFETY: a live block, freed once.
                unsafe { STRATA.dealloc(block as *mut u8, layout) };
            }
        }
        kept
    })
    .join()
    .unwrap();
    for (tag, &block) in survivors.iter().enumerate() {
        // SAFETY: a live block of 16 bytes.
        unsafe { (block as *mut u64).write(tag as u64) };
    }
    let before = STRATA.stats().classes[class];
    let survivors = std::thread::spawn(move || {
        let (mut owned_or_full, mut moved) = (0, 0);
        for block in survivors.iter_mut() {
            match STRATA.defrag_hint(*block as *const u8) {
                Ok(true) => {
                    // SAFETY: a live block, copied, then freed once.
                    unsafe {
                        let copy = STRATA.alloc(layout);
                        std::ptr::copy_nonoverlapping(*block as *const u8, copy, 16);
                        STRATA.dealloc(*block as *mut u8, layout);
                        *block = copy as usize;
                    }
                    moved += 1;
                }
                Ok(false) => owned_or_full += 1,
                Err(error) => panic!("{error:?}"),
            }
        }
        STRATA.release_thread_cache();
        eprintln!("moved {moved}, left {owned_or_full}");
        survivors
    })
    .join()
    .unwrap();
    let after = STRATA.stats().classes[class];
    let per_slice = SLICE_SIZE / 16;
    let needed = after.objects_live.div_ceil(per_slice);
    eprintln!("before: {before:?}, after: {after:?}, needed {needed}");
    assert_eq!(after.objects_live, survivors.len());
    assert!(after.slices <= needed + 1, "{} slices hold {} blocks ({needed} would do)", after.slices, after.objects_live);
    for (tag, &block) in survivors.iter().enumerate() {
        // SAFETY: a live block of 16 bytes, freed once.
        unsafe {
            assert_eq!((block as *const u64).read(), tag as u64);
            STRATA.dealloc(block as *mut u8, layout);
        }
    }
}

#[test]
fn a_sparse_slice_another_thread_allocates_from_is_named_to_every_thread_but_that_one() {
    static STRATA: Strata = Strata::new();
    let layout = Layout::from_size_align(SIZE, 8).unwrap();
    let (to_main, from_owner) = std::sync::mpsc::channel();
    let (to_owner, from_main) = std::sync::mpsc::channel::<()>();
    let owner = std::thread::spawn(move || {
        // Part of one slice, nine in ten freed again: the slice stays this
        // thread's current one, sparse.
        // SAFETY: non-zero size; each block is freed once.
        let blocks: Vec<*mut u8> = (0..PER_SLICE / 2).map(|_| unsafe { STRATA.alloc(layout) }).collect();
        let mut kept = Vec::new();
        for (index, &block) in blocks.iter().enumerate() {
            if index % 10 == 0 {
                kept.push(block as usize);
            } else {
                // SAFETY: a live block, freed once.
                unsafe { STRATA.dealloc(block, layout) };
            }
        }
        for &block in &kept {
            assert_eq!(STRATA.defrag_hint(block as *const u8), Ok(false), "a copy would land in its own hole");
        }
        to_main.send(kept.clone()).unwrap();
        // Hold the slice until the main thread has asked.
        from_main.recv().unwrap();
        for block in kept {
            // SAFETY: a live block, freed once.
            unsafe { STRATA.dealloc(block as *mut u8, layout) };
        }
    });
    let kept = from_owner.recv().unwrap();
    for &block in &kept {
        assert_eq!(STRATA.defrag_hint(block as *const u8), Ok(true), "another thread's sparse slice");
        assert_eq!(STRATA.domain().defrag_hint(block, None), Ok(false), "a slice some heap holds");
    }
    to_owner.send(()).unwrap();
    owner.join().unwrap();
}
