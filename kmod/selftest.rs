// SPDX-License-Identifier: GPL-2.0

//! The self-test, run at load: one kthread per CPU plus two unbound ones do
//! random allocations, frees, bulk calls, cross-CPU frees and `KVec`/`KBox`
//! work on Strata, checking every block's contents before it is freed, while
//! an hrtimer on every CPU allocates and frees with `GFP_ATOMIC` in hardirq
//! context, and a timer_list on every CPU does the same in softirq context.
//! At the end every block is freed, and the statistics must show zero bytes
//! live and agree with the test's own counts.

use core::alloc::Layout;
use core::ffi::{c_int, c_uint, c_void};
use core::fmt;
use core::ptr;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use kernel::prelude::*;

use strata::FreeErrorKind;

use crate::{ffi, status, Gfp, KernelStrata, SBox, SVec};

/// Cross-CPU exchange slots: a block put here is freed by whichever thread
/// takes it, usually on another CPU.
const EXCHANGE: usize = 64;
/// Blocks a timer keeps per CPU.
const TIMER_SLOTS: usize = 8;
/// CPUs the timers cover.
const MAX_CPUS: usize = 64;
/// Blocks a worker holds at once.
const HELD: usize = 128;
/// Unbound threads beside the per-CPU ones.
const EXTRA_THREADS: u32 = 2;
/// The timer period: 200 µs.
const TIMER_PERIOD_NS: u64 = 200_000;

/// Why the self-test failed.
pub(crate) struct Failure(&'static str, u64);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.0, self.1)
    }
}

#[derive(Default)]
struct Counts {
    allocations: AtomicU64,
    frees: AtomicU64,
    bulk_calls: AtomicU64,
    bulk_objects: AtomicU64,
    exchanged: AtomicU64,
    collection_calls: AtomicU64,
    atomic_allocations: AtomicU64,
    atomic_failures: AtomicU64,
    softirq_allocations: AtomicU64,
    failures: AtomicU64,
    corruptions: AtomicU64,
}

struct Test<'a> {
    strata: &'a KernelStrata,
    iterations: u32,
    exchange: [AtomicUsize; EXCHANGE],
    /// Blocks the hrtimer (hardirq) of each CPU holds, and its ticks.
    timer_slots: [[AtomicUsize; TIMER_SLOTS]; MAX_CPUS],
    timer_ticks: [AtomicU64; MAX_CPUS],
    /// The same for the timer_list (softirq) of each CPU: separate slots,
    /// since the hrtimer can interrupt the softirq on the same CPU.
    soft_slots: [[AtomicUsize; TIMER_SLOTS]; MAX_CPUS],
    soft_ticks: [AtomicU64; MAX_CPUS],
    counts: Counts,
}

/// A small xorshift generator per thread.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// A block's size is kept in its first word, a check word in its second,
/// and every later byte holds a pattern of its address and size.
const CHECK: usize = 0x5354_5241_5441_4b21;
const HEADER: usize = 2 * core::mem::size_of::<usize>();

fn pattern(block: usize, size: usize) -> u8 {
    ((block >> 4) ^ size ^ (size >> 8)) as u8
}

/// Writes the size, check word and pattern.
///
/// # Safety
/// `block` holds `size` writable bytes, `size >= HEADER`.
unsafe fn fill(block: *mut u8, size: usize) {
    let value = pattern(block as usize, size);
    // SAFETY: the caller's contract.
    unsafe {
        block.cast::<usize>().write_unaligned(size);
        block.cast::<usize>().add(1).write_unaligned(CHECK ^ block as usize);
        ptr::write_bytes(block.add(HEADER), value, size - HEADER);
    }
}

/// Checks what `fill` wrote; returns the size, or `None` if it changed.
/// Large blocks are checked at both ends and every 4 KiB.
///
/// # Safety
/// `block` is a live block written by `fill`.
unsafe fn verify(block: *mut u8) -> Option<usize> {
    // SAFETY: the caller's contract: the header is intact unless corrupted,
    // and the size is only trusted after the check word matches.
    unsafe {
        let size = block.cast::<usize>().read_unaligned();
        if block.cast::<usize>().add(1).read_unaligned() != CHECK ^ block as usize || size < HEADER {
            return None;
        }
        let value = pattern(block as usize, size);
        let bytes = core::slice::from_raw_parts(block.add(HEADER), size - HEADER);
        let whole = bytes.len() <= 8192;
        for (i, &byte) in bytes.iter().enumerate() {
            if (whole || i < 256 || i + 256 >= bytes.len() || i % 4096 == 0) && byte != value {
                return None;
            }
        }
        Some(size)
    }
}

impl Test<'_> {
    fn layout(size: usize) -> Layout {
        // Sizes are at least HEADER, alignment 8: always a valid layout.
        Layout::from_size_align(size, 8).unwrap_or(Layout::new::<[usize; 2]>())
    }

    fn pick_size(random: u64) -> usize {
        match random % 100 {
            0 => 64 * 1024 + (random >> 8) as usize % (3 << 20), // spans and own mappings
            1..=9 => 4096 + (random >> 8) as usize % 28_000,
            _ => HEADER + (random >> 8) as usize % 1024,
        }
    }

    fn allocate(&self, size: usize, gfp: Gfp) -> *mut u8 {
        match self.strata.alloc(Self::layout(size), gfp, false) {
            Some(block) => {
                // SAFETY: a fresh block of `size` bytes.
                unsafe { fill(block.as_ptr(), size) };
                self.counts.allocations.fetch_add(1, Ordering::Relaxed);
                block.as_ptr()
            }
            None => ptr::null_mut(),
        }
    }

    /// Checks and frees a block written by `fill`.
    fn release(&self, block: *mut u8) {
        // SAFETY: blocks reach here once, live, written by `fill`.
        if unsafe { verify(block) }.is_none() {
            self.counts.corruptions.fetch_add(1, Ordering::Relaxed);
            // Leave a corrupted block allocated: freeing it could spread it.
            return;
        }
        // SAFETY: a live block, freed once.
        if unsafe { self.strata.free(block) }.is_err() {
            self.counts.corruptions.fetch_add(1, Ordering::Relaxed);
        }
        self.counts.frees.fetch_add(1, Ordering::Relaxed);
    }

    fn bulk(&self, random: u64) {
        let count = 1 + (random >> 8) as usize % 64;
        let size = HEADER + (random >> 16) as usize % 512;
        let mut blocks = [ptr::null_mut(); 64];
        let out = &mut blocks[..count];
        if self.strata.alloc_bulk(Self::layout(size), out, Gfp::KERNEL) != count {
            self.counts.failures.fetch_add(1, Ordering::Relaxed);
            if out.iter().any(|b| !b.is_null()) {
                self.counts.corruptions.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        for &block in out.iter() {
            // SAFETY: fresh blocks of `size` bytes.
            unsafe { fill(block, size) };
        }
        for &block in out.iter() {
            // SAFETY: live blocks written just above.
            if unsafe { verify(block) } != Some(size) {
                self.counts.corruptions.fetch_add(1, Ordering::Relaxed);
            }
        }
        // SAFETY: live blocks, freed once.
        if unsafe { self.strata.free_bulk(out) }.is_err() {
            self.counts.corruptions.fetch_add(1, Ordering::Relaxed);
        }
        self.counts.bulk_calls.fetch_add(1, Ordering::Relaxed);
        self.counts.bulk_objects.fetch_add(count as u64, Ordering::Relaxed);
    }

    fn exchange(&self, random: u64) {
        let block = self.allocate(Self::pick_size(random >> 3), Gfp::KERNEL);
        if block.is_null() {
            self.counts.failures.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let slot = &self.exchange[(random >> 24) as usize % EXCHANGE];
        let old = slot.swap(block as usize, Ordering::AcqRel) as *mut u8;
        if !old.is_null() {
            self.release(old);
            self.counts.exchanged.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `KVec` and `KBox` on Strata: growth by reallocation, and contents.
    fn collections(&self, random: u64) -> bool {
        let count = 1 + (random >> 8) as usize % 700;
        let mut values: SVec<u64> = SVec::new();
        for i in 0..count {
            if values.push(i as u64 ^ random, GFP_KERNEL).is_err() {
                self.counts.failures.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        }
        let intact = values.iter().enumerate().all(|(i, &v)| v == i as u64 ^ random);
        let boxed = match SBox::new([random; 24], GFP_KERNEL) {
            Ok(boxed) => boxed.iter().all(|&v| v == random),
            Err(_) => {
                self.counts.failures.fetch_add(1, Ordering::Relaxed);
                true
            }
        };
        self.counts.collection_calls.fetch_add(1, Ordering::Relaxed);
        intact && boxed
    }

    fn work(&self, index: u32) -> bool {
        let mut random = Random(0x9e37_79b9_7f4a_7c15 ^ (u64::from(index) + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9));
        // SAFETY: kthreads below the online count are bound to their CPU.
        let cpu = unsafe { ffi::strata_cpu() } as usize;
        let pinned = index < unsafe { ffi::strata_cpu_ids() } && cpu == index as usize && cpu < MAX_CPUS;
        let me = self as *const Self as *mut c_void;
        let (timer, soft_timer) = if pinned {
            // SAFETY: the test outlives both timers, which are stopped below.
            unsafe { (ffi::strata_timer_start(timer_tick, me, TIMER_PERIOD_NS), ffi::strata_soft_timer_start(soft_tick, me)) }
        } else {
            (ptr::null_mut(), ptr::null_mut())
        };
        let mut held = [ptr::null_mut::<u8>(); HELD];
        let mut ok = true;
        for step in 0..self.iterations {
            let r = random.next();
            match r % 16 {
                0..=9 => {
                    let slot = &mut held[(r >> 40) as usize % HELD];
                    if slot.is_null() {
                        *slot = self.allocate(Self::pick_size(r >> 4), Gfp::KERNEL);
                        if slot.is_null() {
                            self.counts.failures.fetch_add(1, Ordering::Relaxed);
                        }
                    } else {
                        self.release(*slot);
                        *slot = ptr::null_mut();
                    }
                }
                10 | 11 => self.bulk(r),
                12 | 13 => self.exchange(r),
                _ => ok &= self.collections(r),
            }
            if step % 64 == 0 {
                // SAFETY: a kthread may reschedule.
                unsafe { ffi::strata_cond_resched() };
            }
        }
        for block in held {
            if !block.is_null() {
                self.release(block);
            }
        }
        // SAFETY: started above, or null.
        unsafe {
            ffi::strata_timer_stop(timer);
            ffi::strata_soft_timer_stop(soft_timer);
        }
        ok
    }

    /// One timer tick on this CPU, in hardirq (`hard`) or softirq context:
    /// a `GFP_ATOMIC` allocation into an empty slot, or a checked free of a
    /// full one.
    fn tick(&self, hard: bool) {
        // SAFETY: a timer callback does not migrate.
        let cpu = unsafe { ffi::strata_cpu() } as usize;
        let (slots, ticks) = if hard { (&self.timer_slots, &self.timer_ticks) } else { (&self.soft_slots, &self.soft_ticks) };
        let (Some(slots), Some(ticks)) = (slots.get(cpu), ticks.get(cpu)) else { return };
        let tick = ticks.fetch_add(1, Ordering::Relaxed);
        let slot = &slots[tick as usize % TIMER_SLOTS];
        let block = slot.load(Ordering::Relaxed) as *mut u8;
        if block.is_null() {
            let size = HEADER + (tick as usize * 37) % 600;
            let fresh = self.allocate(size, Gfp::ATOMIC);
            if fresh.is_null() {
                self.counts.atomic_failures.fetch_add(1, Ordering::Relaxed);
            } else {
                self.counts.atomic_allocations.fetch_add(1, Ordering::Relaxed);
                if !hard {
                    self.counts.softirq_allocations.fetch_add(1, Ordering::Relaxed);
                }
                slot.store(fresh as usize, Ordering::Relaxed);
            }
        } else {
            slot.store(0, Ordering::Relaxed);
            self.release(block);
        }
    }

    /// Misuse is refused with the right reason, and nothing is freed.
    fn misuse(&self) -> Result<(), Failure> {
        let layout = Self::layout(48);
        let block = self.strata.alloc(layout, Gfp::KERNEL, false).ok_or(Failure("misuse: allocation", 0))?;
        let p = block.as_ptr();
        // SAFETY: the pointers below are refused without being used.
        unsafe {
            let interior = self.strata.free(p.add(8));
            let tagged = self.strata.free((p as usize & !(0xff << 56) | 0x5a << 56) as *mut u8);
            let mut local = 0u64;
            let foreign = self.strata.free(&mut local as *mut u64 as *mut u8);
            let first = self.strata.free(p);
            let second = self.strata.free(p);
            let kinds = [interior, tagged, foreign, first, second].map(|r| r.err().map(|e| e.kind));
            let expected = [
                Some(FreeErrorKind::NotAllocated),
                Some(FreeErrorKind::NotAllocated),
                Some(FreeErrorKind::NotAllocated),
                None,
                Some(FreeErrorKind::DoubleFree),
            ];
            if kinds != expected {
                pr_err!("selftest: misuse outcomes {:?}, expected {:?}\n", format_args!("{kinds:?}"), format_args!("{expected:?}"));
                return Err(Failure("misuse: wrong outcome", 0));
            }
        }
        Ok(())
    }
}

extern "C" fn worker(data: *mut c_void, index: c_uint) -> c_int {
    // SAFETY: `data` is the test, alive until every worker finished.
    let test = unsafe { &*(data as *const Test<'_>) };
    status(test.work(index))
}

extern "C" fn timer_tick(data: *mut c_void) {
    // SAFETY: `data` is the test; timers are stopped before it ends.
    let test = unsafe { &*(data as *const Test<'_>) };
    test.tick(true);
}

extern "C" fn soft_tick(data: *mut c_void) {
    // SAFETY: as for `timer_tick`.
    let test = unsafe { &*(data as *const Test<'_>) };
    test.tick(false);
}

/// Runs the self-test and prints its summary line.
pub(crate) fn run(strata: &KernelStrata, iterations: u32, faults_expected: bool) -> Result<(), Failure> {
    let before = strata.stats();
    // Built in place, zeroed (empty slots, zero counts): the state is too
    // large for the kernel stack.
    let mut place = KBox::<Test<'_>>::new_uninit(GFP_KERNEL | __GFP_ZERO)
        .map_err(|_| Failure("no memory for the test", 0))?;
    let state = place.as_mut_ptr();
    // SAFETY: every field but these two is atomics, valid as zero bytes.
    let test = unsafe {
        ptr::addr_of_mut!((*state).strata).write(strata);
        ptr::addr_of_mut!((*state).iterations).write(iterations);
        place.assume_init()
    };
    test.misuse()?;
    // SAFETY: reads nr_cpu_ids.
    let threads = unsafe { ffi::strata_cpu_ids() } + EXTRA_THREADS;
    // SAFETY: `test` outlives the workers, which are all waited for.
    let failed = unsafe { ffi::strata_run_workers(worker, &*test as *const Test<'_> as *mut c_void, threads) };
    // Timers are stopped; free what they and the exchange still hold.
    let held = Iterator::chain(test.timer_slots.iter().flatten(), test.soft_slots.iter().flatten());
    for slot in Iterator::chain(held, test.exchange.iter()) {
        let block = slot.swap(0, Ordering::Relaxed) as *mut u8;
        if !block.is_null() {
            test.release(block);
        }
    }
    let after = strata.stats();
    let c = &test.counts;
    let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let ticks: u64 = test.timer_ticks.iter().map(|t| t.load(Ordering::Relaxed)).sum();
    let soft_ticks: u64 = test.soft_ticks.iter().map(|t| t.load(Ordering::Relaxed)).sum();
    pr_info!(
        "strata: selftest: {} threads x {} steps: {} allocations, {} frees, {} bulk calls ({} objects), \
         {} cross-CPU hand-offs, {} KVec/KBox rounds, {} hardirq and {} softirq timer ticks, \
         {} GFP_ATOMIC allocations ({} in softirq, {} failed), \
         {} failures seen, {} corruptions; remote frees {}, refills {}, bytes live {}\n",
        threads,
        iterations,
        get(&c.allocations),
        get(&c.frees),
        get(&c.bulk_calls),
        get(&c.bulk_objects),
        get(&c.exchanged),
        get(&c.collection_calls),
        ticks,
        soft_ticks,
        get(&c.atomic_allocations),
        get(&c.softirq_allocations),
        get(&c.atomic_failures),
        get(&c.failures),
        get(&c.corruptions),
        after.remote_frees - before.remote_frees,
        after.refills - before.refills,
        after.bytes_live
    );
    if failed != 0 {
        return Err(Failure("worker threads failed", failed as u64));
    }
    if get(&c.corruptions) != 0 {
        return Err(Failure("corrupted blocks", get(&c.corruptions)));
    }
    if get(&c.allocations) != get(&c.frees) {
        return Err(Failure("allocations and frees differ", get(&c.allocations).abs_diff(get(&c.frees))));
    }
    if after.bytes_live != before.bytes_live {
        return Err(Failure("bytes live after the test", after.bytes_live as u64));
    }
    if !faults_expected && (get(&c.failures) != 0 || get(&c.atomic_failures) != 0) {
        return Err(Failure("allocations failed without fault injection", get(&c.failures)));
    }
    if after.remote_frees == before.remote_frees {
        return Err(Failure("no remote frees: the cross-CPU path was not exercised", 0));
    }
    if get(&c.atomic_allocations) == 0 || ticks == 0 {
        return Err(Failure("the timers allocated nothing", ticks));
    }
    if get(&c.softirq_allocations) == 0 || soft_ticks == 0 {
        return Err(Failure("the softirq timers allocated nothing", soft_ticks));
    }
    pr_info!("selftest: passed\n");
    Ok(())
}
