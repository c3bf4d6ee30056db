// SPDX-License-Identifier: GPL-2.0

//! The benchmark, run at load with `bench=1`: Strata against `kmalloc`,
//! `kmem_cache_alloc` and `kmem_cache_alloc_bulk` in the same boot, for 16 B
//! to 4 KiB, in pairs (allocate then free), batches of 64 (64 allocations,
//! then 64 frees), bulk batches of 64, and cross-CPU frees (CPU 0
//! allocates, CPU 1 frees, through a ring). It prints TSC cycles per
//! operation and Strata's time as a ratio of each peer's (below 1: Strata is
//! faster). Each case runs twice, interleaved, and the faster run counts.
//! Under qemu's TCG the cycles are emulated time: the ratios are what count.

use core::alloc::Layout;
use core::ffi::{c_int, c_uint, c_void};
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use kernel::prelude::*;

use crate::{ffi, status, Gfp, KernelStrata};

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

/// Who serves the cross-CPU pattern.
#[derive(Clone, Copy)]
enum Peer {
    Strata,
    Kmalloc,
    Cache(*mut c_void),
}

/// Slots of the ring from the allocating CPU to the freeing one.
const RING: usize = 256;

/// The cross-CPU pattern: worker 0 (on CPU 0) allocates `count` blocks and
/// passes them through a ring to worker 1 (on CPU 1), which frees them.
struct Handoff<'a> {
    strata: &'a KernelStrata,
    peer: Peer,
    layout: Layout,
    count: u64,
    ring: [AtomicUsize; RING],
    head: AtomicU64,
    tail: AtomicU64,
    failed: AtomicBool,
    cycles: AtomicU64,
}

impl Handoff<'_> {
    fn alloc(&self) -> *mut u8 {
        match self.peer {
            Peer::Strata => self.strata.alloc(self.layout, Gfp::KERNEL, false).map_or(ptr::null_mut(), |b| b.as_ptr()),
            // SAFETY: plain kmalloc and kmem_cache_alloc of the cache's size.
            Peer::Kmalloc => unsafe { ffi::strata_kmalloc(self.layout.size()) }.cast(),
            // SAFETY: as above.
            Peer::Cache(cache) => unsafe { ffi::strata_cache_alloc(cache) }.cast(),
        }
    }

    /// # Safety
    /// `block` is a live block of this peer, freed once.
    unsafe fn free(&self, block: *mut u8) {
        // SAFETY: the caller's contract.
        unsafe {
            match self.peer {
                Peer::Strata => {
                    let _ = self.strata.free(block);
                }
                Peer::Kmalloc => ffi::strata_kfree(block.cast()),
                Peer::Cache(cache) => ffi::strata_cache_free(cache, block.cast()),
            }
        }
    }

    fn produce(&self) -> bool {
        let start = now();
        for sent in 0..self.count {
            let block = self.alloc();
            if block.is_null() {
                self.failed.store(true, Ordering::Relaxed);
                break;
            }
            // SAFETY: a fresh block.
            unsafe { ptr::write_volatile(block, 1) };
            while sent - self.tail.load(Ordering::Acquire) >= RING as u64 {
                // SAFETY: a pause hint.
                unsafe { ffi::strata_cpu_relax() };
            }
            self.ring[(sent % RING as u64) as usize].store(block as usize, Ordering::Relaxed);
            self.head.store(sent + 1, Ordering::Release);
        }
        while self.tail.load(Ordering::Acquire) < self.head.load(Ordering::Relaxed) {
            // SAFETY: as above.
            unsafe { ffi::strata_cpu_relax() };
        }
        self.cycles.store(now() - start, Ordering::Relaxed);
        !self.failed.load(Ordering::Relaxed)
    }

    fn consume(&self) -> bool {
        let mut taken = 0;
        while taken < self.count {
            if taken == self.head.load(Ordering::Acquire) {
                if self.failed.load(Ordering::Relaxed) {
                    break;
                }
                // SAFETY: a pause hint.
                unsafe { ffi::strata_cpu_relax() };
                continue;
            }
            let block = self.ring[(taken % RING as u64) as usize].load(Ordering::Relaxed) as *mut u8;
            // SAFETY: each block is handed over once and freed here once.
            unsafe { self.free(block) };
            taken += 1;
            self.tail.store(taken, Ordering::Release);
        }
        true
    }
}

extern "C" fn handoff_worker(data: *mut c_void, index: c_uint) -> c_int {
    // SAFETY: `data` is the `Handoff`, alive until both workers are done.
    let handoff = unsafe { &*(data as *const Handoff<'_>) };
    status(if index == 0 { handoff.produce() } else { handoff.consume() })
}

/// Cycles for `count` blocks allocated on CPU 0 and freed on CPU 1; 0 when
/// it could not run.
fn cross_cpu(strata: &KernelStrata, peer: Peer, layout: Layout, count: u32) -> u64 {
    let Ok(handoff) = KBox::new(
        Handoff {
            strata,
            peer,
            layout,
            count: u64::from(count),
            ring: [const { AtomicUsize::new(0) }; RING],
            head: AtomicU64::new(0),
            tail: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            cycles: AtomicU64::new(0),
        },
        GFP_KERNEL,
    ) else {
        return 0;
    };
    // SAFETY: both workers finish before `handoff` is dropped.
    let failed = unsafe { ffi::strata_run_workers(handoff_worker, &*handoff as *const Handoff<'_> as *mut c_void, 2) };
    if failed != 0 {
        return 0;
    }
    handoff.cycles.load(Ordering::Relaxed)
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
        // Cross-CPU frees need a second CPU.
        // SAFETY: reads the online count.
        let two_cpus = unsafe { ffi::strata_online_cpus() } >= 2;
        let mut cross = [0u64; 3];
        if two_cpus {
            for _ in 0..2 {
                cross[0] = best(cross[0], cross_cpu(strata, Peer::Strata, layout, iterations));
                cross[1] = best(cross[1], cross_cpu(strata, Peer::Kmalloc, layout, iterations));
                cross[2] = best(cross[2], cross_cpu(strata, Peer::Cache(cache), layout, iterations));
            }
        }
        // SAFETY: every object went back to the cache.
        unsafe { ffi::strata_bench_cache_destroy(cache) };
        let pair_ops = u64::from(iterations);
        let batch_ops = u64::from(rounds) * BATCH as u64;
        line(size, "pairs", pair_ops, s[0], &[("kmalloc", kmalloc[0]), ("kmem_cache", cache_times[0])]);
        line(size, "batch64", batch_ops, s[1], &[("kmalloc", kmalloc[1]), ("kmem_cache", cache_times[1])]);
        line(size, "bulk64", batch_ops, s[2], &[("kmem_cache_bulk", cache_times[2])]);
        if two_cpus {
            line(size, "xcpu", pair_ops, cross[0], &[("kmalloc", cross[1]), ("kmem_cache", cross[2])]);
        }
    }
}
