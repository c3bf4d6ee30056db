// SPDX-License-Identifier: GPL-2.0

//! The benchmark, run at load with `bench=1`: Strata against `kmalloc`,
//! `kmem_cache_alloc` and `kmem_cache_alloc_bulk` in the same boot, for 16 B
//! to 4 KiB, in pairs (allocate then free), batches of 64 (64 allocations,
//! then 64 frees) and bulk batches of 64. It prints TSC cycles per
//! operation and Strata's time as a ratio of each peer's (below 1: Strata is
//! faster). Each case runs twice, interleaved, and the faster run counts.
//! Under qemu's TCG the cycles are emulated time: the ratios are what count.

use core::alloc::Layout;
use core::ptr;

use kernel::prelude::*;

use crate::{ffi, Gfp, KernelStrata};

const SIZES: [usize; 5] = [16, 64, 256, 1024, 4096];
const BATCH: usize = 64;

fn now() -> u64 {
    // SAFETY: reads the time stamp counter.
    unsafe { ffi::strata_cycles() }
}

fn strata_pairs(strata: &KernelStrata, layout: Layout, count: u32) -> u64 {
    let start = now();
    for _ in 0..count {
        let Some(block) = strata.alloc(layout, Gfp::KERNEL, false) else { return 0 };
        // SAFETY: a fresh block of at least one byte, freed once.
        unsafe {
            ptr::write_volatile(block.as_ptr(), 1);
            let _ = strata.free(block.as_ptr());
        }
    }
    now() - start
}

fn strata_batches(strata: &KernelStrata, layout: Layout, rounds: u32) -> u64 {
    let mut blocks = [ptr::null_mut::<u8>(); BATCH];
    let start = now();
    for _ in 0..rounds {
        for slot in blocks.iter_mut() {
            let Some(block) = strata.alloc(layout, Gfp::KERNEL, false) else { return 0 };
            // SAFETY: a fresh block.
            unsafe { ptr::write_volatile(block.as_ptr(), 1) };
            *slot = block.as_ptr();
        }
        for &block in blocks.iter() {
            // SAFETY: live blocks, freed once.
            let _ = unsafe { strata.free(block) };
        }
    }
    now() - start
}

fn strata_bulk(strata: &KernelStrata, layout: Layout, rounds: u32) -> u64 {
    let mut blocks = [ptr::null_mut::<u8>(); BATCH];
    let start = now();
    for _ in 0..rounds {
        if strata.alloc_bulk(layout, &mut blocks, Gfp::KERNEL) != BATCH {
            return 0;
        }
        for &block in blocks.iter() {
            // SAFETY: fresh blocks.
            unsafe { ptr::write_volatile(block, 1) };
        }
        // SAFETY: live blocks, freed once.
        let _ = unsafe { strata.free_bulk(&blocks) };
    }
    now() - start
}

/// Cycles per operation, in tenths, for printing with one decimal.
fn per_op_tenths(total: u64, operations: u64) -> u64 {
    if operations == 0 {
        0
    } else {
        total * 10 / operations
    }
}

/// `a / b` in hundredths.
fn ratio_hundredths(a: u64, b: u64) -> u64 {
    if b == 0 {
        0
    } else {
        a * 100 / b
    }
}

fn best(a: u64, b: u64) -> u64 {
    match (a, b) {
        (0, x) | (x, 0) => x,
        (x, y) => x.min(y),
    }
}

fn line(size: usize, pattern: &str, operations: u64, strata: u64, peers: &[(&str, u64)]) {
    let mut text = [0u8; 256];
    let mut out = crate::Buffer::new(&mut text);
    let s = per_op_tenths(strata, operations);
    let _ = core::fmt::write(
        &mut out,
        format_args!("bench: {size:>5} B {pattern:<8} strata {}.{} cycles", s / 10, s % 10),
    );
    for &(name, time) in peers {
        let p = per_op_tenths(time, operations);
        let r = ratio_hundredths(strata, time);
        let _ = core::fmt::write(
            &mut out,
            format_args!(", {name} {}.{} (ratio {}.{:02})", p / 10, p % 10, r / 100, r % 100),
        );
    }
    let len = out.len;
    let text = core::str::from_utf8(text.get(..len).unwrap_or(&[])).unwrap_or("bench: (unprintable)");
    pr_info!("{}\n", text);
}

/// Runs every case and prints one line per size and pattern.
pub(crate) fn run(strata: &KernelStrata, iterations: u32) {
    let rounds = (iterations / BATCH as u32).max(1);
    pr_info!("bench: {} operations per case; TSC cycles per operation; ratio = Strata's time / the peer's\n", iterations);
    for size in SIZES {
        let Ok(layout) = Layout::from_size_align(size, 8) else { continue };
        // SAFETY: creates a cache of `size`-byte objects, destroyed below.
        let cache = unsafe { ffi::strata_bench_cache_create(size) };
        if cache.is_null() {
            pr_err!("bench: no kmem_cache for {} B\n", size);
            continue;
        }
        let mut s = [0u64; 3];
        let mut kmalloc = [0u64; 2];
        let mut cache_times = [0u64; 3];
        for _ in 0..2 {
            s[0] = best(s[0], strata_pairs(strata, layout, iterations));
            // SAFETY: plain kmalloc/kfree loops.
            kmalloc[0] = best(kmalloc[0], unsafe { ffi::strata_bench_kmalloc_pairs(size, iterations) });
            // SAFETY: the cache is live.
            cache_times[0] = best(cache_times[0], unsafe { ffi::strata_bench_cache_pairs(cache, iterations) });
            s[1] = best(s[1], strata_batches(strata, layout, rounds));
            // SAFETY: as above.
            kmalloc[1] = best(kmalloc[1], unsafe { ffi::strata_bench_kmalloc_batches(size, BATCH as u32, rounds) });
            // SAFETY: as above.
            cache_times[1] = best(cache_times[1], unsafe { ffi::strata_bench_cache_batches(cache, BATCH as u32, rounds) });
            s[2] = best(s[2], strata_bulk(strata, layout, rounds));
            // SAFETY: as above.
            cache_times[2] = best(cache_times[2], unsafe { ffi::strata_bench_cache_bulk(cache, BATCH as u32, rounds) });
        }
        // SAFETY: every object went back to the cache.
        unsafe { ffi::strata_bench_cache_destroy(cache) };
        let pair_ops = u64::from(iterations);
        let batch_ops = u64::from(rounds) * BATCH as u64;
        line(size, "pairs", pair_ops, s[0], &[("kmalloc", kmalloc[0]), ("kmem_cache", cache_times[0])]);
        line(size, "batch64", batch_ops, s[1], &[("kmalloc", kmalloc[1]), ("kmem_cache", cache_times[1])]);
        line(size, "bulk64", batch_ops, s[2], &[("kmem_cache_bulk", cache_times[2])]);
    }
}
