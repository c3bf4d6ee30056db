//! `strata-workloads`: allocation workloads of our own, run by
//! `strata-bench compare` under each allocator with `LD_PRELOAD`.
//!
//! ```text
//! strata-workloads NAME [--size tiny|quick|full]
//! strata-workloads --list
//! ```
//!
//! Every block comes from the process's malloc (`libc::malloc`, `realloc`,
//! `free`), so whichever allocator `LD_PRELOAD` puts in front of glibc
//! serves it; the program does not link Strata or any other allocator.
//! Each workload fills what it allocates with a pattern and checks it before
//! freeing (a mismatch ends the process with status 3), and prints only
//! deterministic lines: its parameters, the number of blocks checked and a
//! checksum. Seeds are fixed and every thread's work depends only on its
//! own seed, so the output is the same under every allocator and every
//! thread schedule.
//!
//! `--size` scales the work: `tiny` for tests, `quick` (the default) for
//! the default comparison, `full` for `strata-bench compare --full`.
//!
//! With `STRATA_WORKLOAD_MEMORY=1`, the `fragmentation` workload also prints
//! the process's resident and peak resident memory after each phase, on
//! stderr (they differ between allocators, so they stay out of the compared
//! output).

mod block;
// The shared generator; this binary uses only part of it.
#[allow(dead_code)]
#[path = "../../rng.rs"]
mod rng;

use std::process::ExitCode;
use std::sync::mpsc;
use std::thread;

use block::{fail, Block};
use rng::Rng;

/// How much work a run does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Size {
    Tiny,
    Quick,
    Full,
}

impl Size {
    /// `tiny`, `quick` and `full` scale as 1 : 8 : 32.
    fn scale(self) -> usize {
        match self {
            Size::Tiny => 1,
            Size::Quick => 8,
            Size::Full => 32,
        }
    }
}

/// A workload: name, one-line description, body.
struct Workload {
    name: &'static str,
    about: &'static str,
    run: fn(Size, &mut Report),
}

/// Every workload, in table order.
const WORKLOADS: [Workload; 7] = [
    Workload {
        name: "larson",
        about: "server simulation: threads replace random blocks of 16-512 B, \
                each epoch's threads take over the previous ones' blocks",
        run: larson,
    },
    Workload {
        name: "xmalloc",
        about: "producer/consumer: producers allocate 8-256 B blocks, consumers on \
                other threads check and free them",
        run: xmalloc,
    },
    Workload {
        name: "false-active",
        about: "active false sharing: threads allocate small objects at once and \
                write them repeatedly",
        run: false_sharing_active,
    },
    Workload {
        name: "false-passive",
        about: "passive false sharing: objects allocated together by one thread are \
                freed by others, which then allocate and write repeatedly",
        run: false_sharing_passive,
    },
    Workload {
        name: "thread-churn",
        about: "short-lived threads allocate, free half, and leave the rest to be \
                freed by the main thread",
        run: thread_churn,
    },
    Workload {
        name: "large",
        about: "blocks of 256 KiB to 32 MiB, allocated, grown and shrunk with \
                realloc, touched and freed",
        run: large,
    },
    Workload {
        name: "fragmentation",
        about: "phase change: fill with 16-128 B blocks, free a random 90%, then \
                allocate 160-1024 B blocks; prints the peak live bytes",
        run: fragmentation,
    },
];

/// What a workload prints: deterministic `key: value` lines.
#[derive(Default)]
struct Report {
    lines: Vec<String>,
}

impl Report {
    fn line(&mut self, key: &str, value: impl std::fmt::Display) {
        self.lines.push(format!("{key}: {value}"));
    }

    /// The usual closing lines: blocks checked and the checksum.
    fn totals(&mut self, blocks: u64, checksum: u64) {
        self.line("blocks checked", blocks);
        self.line("checksum", format!("{checksum:016x}"));
    }
}

/// A seed for `(workload, a, b)`, e.g. a thread and an epoch.
fn seed(workload: u64, a: u64, b: u64) -> u64 {
    workload
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(a.wrapping_mul(0xBF58_476D_1CE4_E5B9))
        .wrapping_add(b.wrapping_mul(0x94D0_49BB_1331_11EB))
        ^ 0x5354_5241_5441
}

/// With `STRATA_WORKLOAD_MEMORY` set (and not `0`), prints on stderr the
/// process's resident memory and its peak so far (`VmRSS` and `VmHWM` of
/// `/proc/self/status`) after `phase`.
fn print_memory(phase: &str) {
    if std::env::var_os("STRATA_WORKLOAD_MEMORY").is_none_or(|value| value == "0") {
        return;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map_or_else(|| "?".to_string(), |rest| rest.trim().to_string())
    };
    eprintln!("memory after {phase}: rss {}, peak rss {}", field("VmRSS:"), field("VmHWM:"));
}

/// A tag unique to `(seed, n)`.
fn tag(seed: u64, n: u64) -> u64 {
    seed.rotate_left(29) ^ n
}

/// Larson-style server simulation. Each of `threads` threads owns an array
/// of slots; it replaces random slots (free the old block, allocate a new
/// one of 16-512 bytes). After each epoch the arrays rotate: thread `i` of
/// the next epoch takes the array of thread `i + 1`, so blocks are freed by
/// a thread other than the one that allocated them, as in Larson and
/// Krishnan's benchmark where each new thread inherits its predecessor's
/// blocks.
fn larson(size: Size, report: &mut Report) {
    let threads = 4;
    let slots = 1000;
    let epochs = 4 * size.scale();
    let operations = 5_000 * size.scale().min(8);
    report.line("threads", threads);
    report.line("slots per thread", slots);
    report.line("epochs", epochs);
    report.line("replacements per thread and epoch", operations);

    let mut blocks = 0u64;
    let mut checksum = 0u64;
    let mut arrays: Vec<Vec<Block>> = (0..threads as u64)
        .map(|t| {
            let mut rng = Rng::new(seed(1, t, 0));
            (0..slots as u64)
                .map(|n| Block::new(16 + rng.below(497), tag(seed(1, t, 0), n)))
                .collect()
        })
        .collect();
    for epoch in 1..=epochs as u64 {
        arrays.rotate_left(1);
        let handles: Vec<_> = arrays
            .drain(..)
            .enumerate()
            .map(|(t, mut array)| {
                thread::spawn(move || {
                    let thread_seed = seed(1, t as u64, epoch);
                    let mut rng = Rng::new(thread_seed);
                    let (mut count, mut sum) = (0u64, 0u64);
                    for n in 0..operations as u64 {
                        let slot = rng.below(array.len());
                        let fresh = Block::new(16 + rng.below(497), tag(thread_seed, n));
                        sum = sum.wrapping_add(std::mem::replace(&mut array[slot], fresh).free());
                        count += 1;
                    }
                    (array, count, sum)
                })
            })
            .collect();
        for handle in handles {
            let (array, count, sum) = handle.join().expect("a larson thread panicked");
            arrays.push(array);
            blocks += count;
            checksum = checksum.wrapping_add(sum);
        }
    }
    for block in arrays.into_iter().flatten() {
        blocks += 1;
        checksum = checksum.wrapping_add(block.free());
    }
    report.totals(blocks, checksum);
}

/// xmalloc-style producer/consumer: each producer allocates and fills
/// blocks of 8-256 bytes and sends them in batches over a bounded channel to
/// its consumer thread, which checks and frees them: every block is freed
/// by a thread other than its allocator's.
fn xmalloc(size: Size, report: &mut Report) {
    let pairs = 2;
    let per_producer = 200_000 * size.scale();
    let batch = 64;
    report.line("producer/consumer pairs", pairs);
    report.line("blocks per producer", per_producer);
    report.line("batch", batch);
    let mut consumers = Vec::new();
    let mut producers = Vec::new();
    for p in 0..pairs as u64 {
        let (send, receive) = mpsc::sync_channel::<Vec<Block>>(16);
        consumers.push(thread::spawn(move || {
            let (mut count, mut sum) = (0u64, 0u64);
            for blocks in receive {
                for block in blocks {
                    sum = sum.wrapping_add(block.free());
                    count += 1;
                }
            }
            (count, sum)
        }));
        producers.push(thread::spawn(move || {
            let producer_seed = seed(2, p, 0);
            let mut rng = Rng::new(producer_seed);
            let mut pending = Vec::with_capacity(batch);
            for n in 0..per_producer as u64 {
                pending.push(Block::new(8 + rng.below(249), tag(producer_seed, n)));
                if pending.len() == batch {
                    let full = std::mem::replace(&mut pending, Vec::with_capacity(batch));
                    send.send(full).expect("the consumer hung up");
                }
            }
            if !pending.is_empty() {
                send.send(pending).expect("the consumer hung up");
            }
        }));
    }
    for producer in producers {
        producer.join().expect("a producer panicked");
    }
    let (mut blocks, mut checksum) = (0u64, 0u64);
    for consumer in consumers {
        let (count, sum) = consumer.join().expect("a consumer panicked");
        blocks += count;
        checksum = checksum.wrapping_add(sum);
    }
    report.totals(blocks, checksum);
}

/// Writes `writes` increments to the 8-byte counter at `ptr` and checks the
/// result. Volatile accesses keep every write in memory, where a shared
/// cache line makes threads contend.
///
/// # Safety
///
/// `ptr` must point to a live, 8-byte aligned, 8-byte block that no other
/// thread accesses.
unsafe fn hammer(ptr: *mut u64, start: u64, writes: u64) -> u64 {
    // SAFETY: the caller's contract.
    unsafe { ptr.write_volatile(start) };
    for _ in 0..writes {
        // SAFETY: the caller's contract.
        unsafe { ptr.write_volatile(ptr.read_volatile().wrapping_add(1)) };
    }
    // SAFETY: the caller's contract.
    let end = unsafe { ptr.read_volatile() };
    if end != start.wrapping_add(writes) {
        fail(&format!(
            "false sharing: a counter ended at {end}, not {}",
            start.wrapping_add(writes)
        ));
    }
    end
}

/// One thread's rounds of the false-sharing workloads: allocate an 8-byte
/// object, write it `writes` times, free it.
fn write_rounds(thread_seed: u64, rounds: usize, writes: u64) -> u64 {
    let mut sum = 0u64;
    for round in 0..rounds as u64 {
        // SAFETY: malloc accepts any size.
        let ptr = unsafe { libc::malloc(8) }.cast::<u64>();
        if ptr.is_null() {
            fail("malloc(8) returned null");
        }
        // SAFETY: a fresh 8-byte malloc block, aligned to 8, only ours.
        sum = sum.wrapping_add(unsafe { hammer(ptr, tag(thread_seed, round), writes) });
        // SAFETY: `ptr` is live and freed once.
        unsafe { libc::free(ptr.cast()) };
    }
    sum
}

/// Parameters shared by both false-sharing workloads.
fn false_sharing_parameters(size: Size, report: &mut Report) -> (usize, usize, u64) {
    let (threads, rounds, writes) = (4, 1_000 * size.scale(), 20_000);
    report.line("threads", threads);
    report.line("objects per thread", rounds);
    report.line("writes per object", writes);
    (threads, rounds, writes)
}

/// Active false sharing (Hoard's cache-thrash): threads allocate 8-byte
/// objects at the same time and write each many times. An allocator that
/// hands neighbouring objects to different threads makes them share cache
/// lines.
fn false_sharing_active(size: Size, report: &mut Report) {
    let (threads, rounds, writes) = false_sharing_parameters(size, report);
    let handles: Vec<_> = (0..threads as u64)
        .map(|t| thread::spawn(move || write_rounds(seed(3, t, 0), rounds, writes)))
        .collect();
    let checksum = handles.into_iter().fold(0u64, |sum, handle| {
        sum.wrapping_add(handle.join().expect("a writer panicked"))
    });
    report.totals((threads * rounds) as u64, checksum);
}

/// A malloc block handed to another thread.
struct Handed(*mut u64);

// SAFETY: the block is plain malloc memory, used by one thread at a time.
unsafe impl Send for Handed {}

/// Passive false sharing (Hoard's cache-scratch): the main thread allocates
/// one 8-byte object per thread, back to back, so they likely share a cache
/// line; each thread writes its object, frees it, then allocates, writes and
/// frees objects of its own. An allocator that gives a thread back the
/// object it just freed keeps the threads on one cache line.
fn false_sharing_passive(size: Size, report: &mut Report) {
    let (threads, rounds, writes) = false_sharing_parameters(size, report);
    let handed: Vec<Handed> = (0..threads)
        .map(|_| {
            // SAFETY: malloc accepts any size.
            let ptr = unsafe { libc::malloc(8) }.cast::<u64>();
            if ptr.is_null() {
                fail("malloc(8) returned null");
            }
            Handed(ptr)
        })
        .collect();
    let handles: Vec<_> = handed
        .into_iter()
        .enumerate()
        .map(|(t, object)| {
            thread::spawn(move || {
                let thread_seed = seed(4, t as u64, 0);
                let object = object;
                // SAFETY: the object is a live 8-byte malloc block handed to
                // this thread alone.
                let first = unsafe { hammer(object.0, thread_seed, writes) };
                // SAFETY: live, freed once.
                unsafe { libc::free(object.0.cast()) };
                first.wrapping_add(write_rounds(thread_seed, rounds, writes))
            })
        })
        .collect();
    let checksum = handles.into_iter().fold(0u64, |sum, handle| {
        sum.wrapping_add(handle.join().expect("a writer panicked"))
    });
    report.totals((threads * (rounds + 1)) as u64, checksum);
}

/// Thread churn: generations of short-lived threads each allocate blocks of
/// 16-2048 bytes, free half of them, and return the rest, which the main
/// thread frees after the thread has exited.
fn thread_churn(size: Size, report: &mut Report) {
    let generations = 25 * size.scale();
    let (threads, per_thread) = (4, 2_000);
    report.line("generations", generations);
    report.line("threads per generation", threads);
    report.line("blocks per thread", per_thread);
    let (mut blocks, mut checksum) = (0u64, 0u64);
    let mut survivors: Vec<Block> = Vec::new();
    for generation in 0..generations as u64 {
        let handles: Vec<_> = (0..threads as u64)
            .map(|t| {
                thread::spawn(move || {
                    let thread_seed = seed(5, t, generation);
                    let mut rng = Rng::new(thread_seed);
                    let mut mine: Vec<Block> = (0..per_thread as u64)
                        .map(|n| Block::new(16 + rng.below(2033), tag(thread_seed, n)))
                        .collect();
                    let (mut count, mut sum) = (0u64, 0u64);
                    let mut kept = Vec::with_capacity(per_thread / 2);
                    for (n, block) in mine.drain(..).enumerate() {
                        if n % 2 == 0 {
                            sum = sum.wrapping_add(block.free());
                            count += 1;
                        } else {
                            kept.push(block);
                        }
                    }
                    (kept, count, sum)
                })
            })
            .collect();
        // The previous generation's survivors go now, their threads long gone.
        for block in survivors.drain(..) {
            blocks += 1;
            checksum = checksum.wrapping_add(block.free());
        }
        for handle in handles {
            let (kept, count, sum) = handle.join().expect("a churn thread panicked");
            survivors.extend(kept);
            blocks += count;
            checksum = checksum.wrapping_add(sum);
        }
    }
    for block in survivors {
        blocks += 1;
        checksum = checksum.wrapping_add(block.free());
    }
    report.totals(blocks, checksum);
}

/// A size from 256 KiB to 32 MiB, uniform in its logarithm.
fn large_size(rng: &mut Rng) -> usize {
    let shift = 18 + rng.below(7); // 256 KiB .. 16 MiB
    let base = 1usize << shift;
    base + rng.below(base + 1)
}

/// Large blocks: two threads each keep a window of 4 blocks of 256 KiB to
/// 32 MiB; every new block is filled (touching every page) and every fourth
/// is resized with realloc; the oldest is checked and freed.
fn large(size: Size, report: &mut Report) {
    let threads = 2;
    let per_thread = 6 * size.scale();
    let window = 4;
    report.line("threads", threads);
    report.line("blocks per thread", per_thread);
    report.line("window", window);
    let handles: Vec<_> = (0..threads as u64)
        .map(|t| {
            thread::spawn(move || {
                let thread_seed = seed(6, t, 0);
                let mut rng = Rng::new(thread_seed);
                let mut live: std::collections::VecDeque<Block> = Default::default();
                let (mut count, mut sum, mut bytes) = (0u64, 0u64, 0u64);
                for n in 0..per_thread as u64 {
                    let mut block = Block::new(large_size(&mut rng), tag(thread_seed, n));
                    if n % 4 == 3 {
                        block.realloc(large_size(&mut rng));
                    }
                    bytes += block.size() as u64;
                    live.push_back(block);
                    if live.len() > window {
                        let oldest = live.pop_front().expect("the window is full");
                        sum = sum.wrapping_add(oldest.free());
                        count += 1;
                    }
                }
                for block in live {
                    sum = sum.wrapping_add(block.free());
                    count += 1;
                }
                (count, sum, bytes)
            })
        })
        .collect();
    let (mut blocks, mut checksum, mut bytes) = (0u64, 0u64, 0u64);
    for handle in handles {
        let (count, sum, total) = handle.join().expect("a large-block thread panicked");
        blocks += count;
        checksum = checksum.wrapping_add(sum);
        bytes += total;
    }
    report.line("bytes allocated", bytes);
    report.totals(blocks, checksum);
}

/// Fragmentation phase change, on one thread: allocate blocks of 16-128
/// bytes until `target` bytes are live, free a random 90% of them (exactly
/// 90%, chosen by selection sampling), then allocate blocks of 160-1024 bytes until `target` bytes are
/// live again. The peak live bytes (payload only, deterministic) are printed
/// for the report's peak RSS ÷ peak live bytes.
fn fragmentation(size: Size, report: &mut Report) {
    const FIRST_MIX: [usize; 8] = [16, 24, 32, 48, 64, 80, 96, 128];
    const SECOND_MIX: [usize; 7] = [160, 192, 256, 384, 512, 768, 1024];
    let target = (6usize << 20) * size.scale();
    report.line("live bytes per phase", target);
    // Bookkeeping is one pointer per block (8 bytes, the same under every
    // allocator): a block's size and tag follow from its number.
    let first_size = |n: u64| FIRST_MIX[(seed(7, n, 1) >> 40) as usize % FIRST_MIX.len()];
    let second_size = |n: u64| SECOND_MIX[(seed(8, n, 1) >> 40) as usize % SECOND_MIX.len()];
    let (mut live, mut peak) = (0usize, 0usize);
    // Room for the most blocks a phase can need, reserved once: only the
    // entries written become resident, and no doubling copies them.
    let mut first: Vec<*mut u8> = Vec::with_capacity(target / FIRST_MIX[0] + 1);
    while live < target {
        let n = first.len() as u64;
        let block = Block::new(first_size(n), tag(7, n));
        live += block.size();
        first.push(block.into_raw());
    }
    peak = peak.max(live);
    let first_count = first.len();
    print_memory("the first mix");

    // Free exactly 90%, a uniformly random subset chosen by selection
    // sampling (Knuth's algorithm S), which needs no memory of its own.
    let mut rng = Rng::new(seed(7, 0, 0));
    let (mut blocks, mut checksum) = (0u64, 0u64);
    let mut to_free = first.len() - first.len() / 10;
    for (index, slot) in first.iter_mut().enumerate() {
        let remaining = first_count - index;
        if rng.below(remaining) >= to_free {
            continue;
        }
        to_free -= 1;
        let n = index as u64;
        let ptr = std::mem::replace(slot, std::ptr::null_mut());
        // SAFETY: `ptr` came from `into_raw` of block `n`, which had this
        // size and tag, and each slot is visited once.
        let block = unsafe { Block::from_raw(ptr, first_size(n), tag(7, n)) };
        live -= block.size();
        blocks += 1;
        checksum = checksum.wrapping_add(block.free());
    }
    let after_free = live;
    print_memory("freeing 90%");

    let mut second: Vec<*mut u8> = Vec::with_capacity(target / SECOND_MIX[0] + 1);
    while live < target {
        let n = second.len() as u64;
        let block = Block::new(second_size(n), tag(8, n));
        live += block.size();
        second.push(block.into_raw());
    }
    peak = peak.max(live);
    print_memory("the second mix");
    report.line("first-phase blocks", first_count);
    report.line("live bytes after freeing 90%", after_free);
    report.line("second-phase blocks", second.len());
    report.line("peak live bytes", peak);
    for (n, &ptr) in first.iter().enumerate() {
        if !ptr.is_null() {
            let n = n as u64;
            // SAFETY: a block of the first phase that was not freed.
            let block = unsafe { Block::from_raw(ptr, first_size(n), tag(7, n)) };
            blocks += 1;
            checksum = checksum.wrapping_add(block.free());
        }
    }
    for (n, &ptr) in second.iter().enumerate() {
        let n = n as u64;
        // SAFETY: a block of the second phase, freed once here.
        let block = unsafe { Block::from_raw(ptr, second_size(n), tag(8, n)) };
        blocks += 1;
        checksum = checksum.wrapping_add(block.free());
    }
    report.totals(blocks, checksum);
}

fn usage() -> String {
    let names: Vec<&str> = WORKLOADS.iter().map(|w| w.name).collect();
    format!(
        "usage: strata-workloads {{{}}} [--size tiny|quick|full] | --list",
        names.join("|")
    )
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--list") {
        for workload in &WORKLOADS {
            println!("{}\t{}", workload.name, workload.about);
        }
        return ExitCode::SUCCESS;
    }
    let Some(workload) = args
        .first()
        .and_then(|name| WORKLOADS.iter().find(|w| w.name == name))
    else {
        eprintln!("{}", usage());
        return ExitCode::from(2);
    };
    let size = match args.get(1..).unwrap_or_default() {
        [] => Size::Quick,
        [flag, value] if flag == "--size" => match value.as_str() {
            "tiny" => Size::Tiny,
            "quick" => Size::Quick,
            "full" => Size::Full,
            _ => {
                eprintln!("{}", usage());
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("{}", usage());
            return ExitCode::from(2);
        }
    };
    let mut report = Report::default();
    report.line("workload", workload.name);
    (workload.run)(size, &mut report);
    for line in &report.lines {
        println!("{line}");
    }
    ExitCode::SUCCESS
}
