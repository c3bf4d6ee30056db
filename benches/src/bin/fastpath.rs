//! The malloc+free fast path, in instructions (under callgrind) or
//! nanoseconds (without).
//!
//! ```text
//! fastpath <allocator> [size] [pairs] [batch]
//! ```
//!
//! Warms the allocator up, then runs `pairs` (default 1,000,000) steady-state
//! pairs of "allocate `size` bytes (default 32), free it" in
//! [`measured_loop`], and prints the wall-clock time per pair. Under
//! `valgrind --tool=callgrind --toggle-collect='*measured_loop*'` only that
//! function (and what it calls) is counted, so the instruction total divided
//! by `pairs` is the cost of one pair; `benches/callgrind.sh` does this for
//! every allocator.
//!
//! With `batch` (default 1) above one, [`measured_loop_batch`] instead
//! allocates `batch` objects, then frees them in allocation order, over and
//! over: the cost once the live objects exceed what a local cache holds.
//! (The `*measured_loop*` pattern matches both functions; a run calls one.)
//!
//! Each call goes through an `#[inline(never)]` shim, [`shim_alloc`] or
//! [`shim_dealloc`], which stands for `__rust_alloc`/`__rust_dealloc`: in a
//! program with `#[global_allocator]` every allocation is a call to such a
//! shim, into which the allocator's `GlobalAlloc` methods are inlined. The
//! `baseline` allocator (a fixed buffer, no work) measures the loop and shim
//! overhead, so that it can be subtracted.
//!
//! Allocators: `baseline`, and the contenders of
//! `strata_benches::contenders` (`strata`, `strata-shared`, `mimalloc`,
//! `talc`, `linked-list`, `system`).

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;
use std::hint::black_box;
use std::process::ExitCode;
use std::time::Instant;

use strata_benches::{contenders, with_contender, Contender};

/// Pairs run before measuring, after the warm-up batch.
const WARM_UP_PAIRS: u64 = 10_000;
/// Objects allocated and freed together during warm-up, so that the
/// allocator's local cache for the class is populated.
const WARM_UP_BATCH: usize = 1_000;

/// An "allocator" that hands out one fixed buffer and never frees: the cost
/// of the measurement loop itself. (In batch mode every slot holds the same
/// buffer; nothing reads or frees it, so that is harmless.)
struct Baseline(UnsafeCell<[u64; 512]>);

// SAFETY: the buffer is only handed out, never read or written here.
unsafe impl Sync for Baseline {}

// SAFETY: every allocation is the same 4 KiB, 8-aligned buffer; the harness
// never holds two at once and never asks for more than 4 KiB or alignment
// above 8.
unsafe impl GlobalAlloc for Baseline {
    unsafe fn alloc(&self, _layout: Layout) -> *mut u8 {
        self.0.get() as *mut u8
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}
}

static BASELINE: Baseline = Baseline(UnsafeCell::new([0; 512]));

/// Stands for `__rust_alloc`: a real call, with the allocator inlined in it.
#[inline(never)]
fn shim_alloc<A: GlobalAlloc>(allocator: &A, layout: Layout) -> *mut u8 {
    // `black_box` keeps the call (and the baseline's) from being folded
    // away; it costs every allocator the same and the baseline measures it.
    // SAFETY: `layout` has a non-zero size (checked in `main`).
    black_box(unsafe { allocator.alloc(layout) })
}

/// Stands for `__rust_dealloc`.
///
/// # Safety
/// `ptr` must come from `shim_alloc` with the same allocator and layout.
#[inline(never)]
unsafe fn shim_dealloc<A: GlobalAlloc>(allocator: &A, ptr: *mut u8, layout: Layout) {
    // SAFETY: the caller's contract.
    unsafe { allocator.dealloc(black_box(ptr), layout) }
}

/// The measured code: `pairs` allocations, each written to and freed at once.
/// Returns a value derived from the pointers so nothing is optimised away.
#[inline(never)]
fn measured_loop<A: GlobalAlloc>(allocator: &A, layout: Layout, pairs: u64) -> usize {
    let mut mix = 0usize;
    for _ in 0..pairs {
        let p = shim_alloc(allocator, layout);
        if p.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        mix = mix.wrapping_add(p as usize);
        // SAFETY: `p` is a live allocation of `layout` from `allocator`.
        unsafe { shim_dealloc(allocator, p, layout) };
    }
    mix
}

/// The measured code in batch mode: `rounds` times, `slots.len()`
/// allocations, then their frees in allocation order. Past one slab's worth
/// of objects this leaves the allocator's fastest path.
#[inline(never)]
fn measured_loop_batch<A: GlobalAlloc>(
    allocator: &A,
    layout: Layout,
    rounds: u64,
    slots: &mut [*mut u8],
) {
    for _ in 0..rounds {
        for slot in slots.iter_mut() {
            let p = shim_alloc(allocator, layout);
            if p.is_null() {
                std::alloc::handle_alloc_error(layout);
            }
            *slot = p;
        }
        for &p in slots.iter() {
            // SAFETY: allocated just above with this layout.
            unsafe { shim_dealloc(allocator, p, layout) };
        }
    }
}

/// Fills the allocator's cache for `layout`'s class (a batch allocated then
/// freed), then runs pairs, none of it counted.
#[inline(never)]
fn warm_up<A: GlobalAlloc>(allocator: &A, layout: Layout) {
    let mut batch = Vec::with_capacity(WARM_UP_BATCH);
    for _ in 0..WARM_UP_BATCH {
        let p = shim_alloc(allocator, layout);
        assert!(!p.is_null(), "allocation failed during warm-up");
        batch.push(p);
    }
    for p in batch.into_iter().rev() {
        // SAFETY: allocated above with this layout.
        unsafe { shim_dealloc(allocator, p, layout) };
    }
    for _ in 0..WARM_UP_PAIRS {
        let p = shim_alloc(allocator, layout);
        // SAFETY: as above.
        unsafe { shim_dealloc(allocator, black_box(p), layout) };
    }
}

/// Warms up, measures, and prints one line: allocator, size, pairs, batch,
/// ns/pair. With `batch > 1`, `pairs` is rounded down to whole batches.
fn run<A: GlobalAlloc>(name: &str, allocator: &A, size: usize, pairs: u64, batch: usize) {
    let layout = Layout::from_size_align(size, 8).expect("valid layout");
    warm_up(allocator, layout);
    let (pairs, elapsed) = if batch == 1 {
        let start = Instant::now();
        black_box(measured_loop(allocator, layout, pairs));
        (pairs, start.elapsed())
    } else {
        let mut slots = vec![std::ptr::null_mut(); batch];
        let rounds = pairs / batch as u64;
        let start = Instant::now();
        measured_loop_batch(allocator, layout, rounds, &mut slots);
        (rounds * batch as u64, start.elapsed())
    };
    let ns = elapsed.as_nanos() as f64 / pairs as f64;
    println!("{name:<14} size {size:>5}  pairs {pairs:>10}  batch {batch:>6}  {ns:>7.2} ns/pair");
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage =
        "usage: fastpath <baseline|strata|strata-shared|mimalloc|talc|linked-list|system> [size] [pairs] [batch]";
    let Some(name) = args.first() else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    let size: usize = match args.get(1).map(|s| s.parse()) {
        None => 32,
        Some(Ok(size)) if (1..=4096).contains(&size) => size,
        _ => {
            eprintln!("size must be 1..=4096\n{usage}");
            return ExitCode::from(2);
        }
    };
    let pairs: u64 = match args.get(2).map(|s| s.parse()) {
        None => 1_000_000,
        Some(Ok(pairs)) => pairs,
        Some(Err(_)) => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    let batch: usize = match args.get(3).map(|s| s.parse()) {
        None => 1,
        Some(Ok(batch)) if batch >= 1 => batch,
        _ => {
            eprintln!("batch must be at least 1\n{usage}");
            return ExitCode::from(2);
        }
    };
    if name == "baseline" {
        run(name, &BASELINE, size, pairs, batch);
        return ExitCode::SUCCESS;
    }
    let contender: Contender = match name.parse() {
        Ok(contender) => contender,
        Err(message) => {
            eprintln!("{message}\n{usage}");
            return ExitCode::from(2);
        }
    };
    contenders::init();
    with_contender!(contender, |a| run(name, a, size, pairs, batch));
    ExitCode::SUCCESS
}
