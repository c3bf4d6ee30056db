//! Multi-allocator throughput, measured in one process with interleaved
//! rounds.
//!
//! ```text
//! throughput [--rounds N] [--ms MS] [--workloads a,b,...] [--allocators x,y,...]
//! ```
//!
//! Each round of a workload runs every allocator in turn for about `MS`
//! milliseconds (A B C D E F, A B C D E F, ...), after one unrecorded
//! warm-up round, and the table reports the median over rounds of
//! millions of *pairs* per second, a pair being one object allocated and
//! freed. Interleaving spreads the noise of a shared machine over all
//! allocators alike.
//!
//! Workloads (objects of mixed small sizes, each written on allocation and
//! checked before its free):
//!
//! - `xthread`: a producer thread allocates batches of 64 objects (16–256 B)
//!   and sends them through a channel to a consumer thread, which checks and
//!   frees them: every free is a cross-thread free.
//! - `xthread-sym`: two threads each allocate batches and send them to the
//!   other, and free what they receive: both allocate, both free remotely.
//! - `churn-1`: one thread keeps 1024 live objects (16 B–1 KiB) and replaces
//!   a random one at each step.
//! - `churn-2`, `churn-4`: the same in 2 or 4 threads at once, each with its
//!   own objects (no sharing; measures contention on the allocator itself).
//!
//! The allocators are the statics of `strata_benches::contenders`, called
//! through `GlobalAlloc` directly; threads, channels and vectors use the
//! process allocator (glibc), so they cost every contender the same.

use std::alloc::{GlobalAlloc, Layout};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use strata_benches::report::{median, Table};
use strata_benches::rng::Rng;
use strata_benches::{contenders, with_contender, Contender};

/// Objects per batch sent between threads.
const BATCH: usize = 64;
/// Batches each sender may have in flight.
const DEPTH: usize = 8;
/// Sizes of objects sent between threads.
const CROSS_SIZES: [usize; 8] = [16, 24, 32, 48, 64, 96, 128, 256];
/// Live objects per thread in the churn workloads.
const SLOTS: usize = 1024;
/// Sizes of objects in the churn workloads.
const CHURN_SIZES: [usize; 10] = [16, 24, 32, 48, 64, 128, 256, 384, 512, 1024];
/// Steps between two looks at the stop flag.
const CHECK_EVERY: usize = 64;

/// A benchmark scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    /// Producer allocates, consumer frees.
    CrossThread,
    /// Two threads exchange batches both ways.
    CrossThreadSymmetric,
    /// `n` threads, each churning its own objects.
    Churn(usize),
}

impl Workload {
    const ALL: [Workload; 5] = [
        Workload::CrossThread,
        Workload::CrossThreadSymmetric,
        Workload::Churn(1),
        Workload::Churn(2),
        Workload::Churn(4),
    ];

    fn name(self) -> String {
        match self {
            Workload::CrossThread => "xthread".into(),
            Workload::CrossThreadSymmetric => "xthread-sym".into(),
            Workload::Churn(n) => format!("churn-{n}"),
        }
    }
}

/// One allocated object: its address and size.
struct Object {
    ptr: *mut u8,
    size: usize,
}

// SAFETY: an `Object` is a uniquely owned allocation; moving it to another
// thread moves that ownership (freeing from another thread is what the
// cross-thread workloads measure).
unsafe impl Send for Object {}

/// A batch of objects in flight between two threads.
type Batch = Vec<Object>;

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).expect("valid layout")
}

/// Allocates `size` bytes and writes `tag` to its first word and the low
/// byte of `tag` to its last byte.
#[inline]
fn allocate<A: GlobalAlloc>(allocator: &A, size: usize, tag: u64) -> Object {
    let layout = layout(size);
    // SAFETY: `layout` has a non-zero size.
    let ptr = unsafe { allocator.alloc(layout) };
    if ptr.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    // SAFETY: the object holds `size >= 16` bytes, 8-aligned.
    unsafe {
        (ptr as *mut u64).write(tag);
        ptr.add(size - 1).write(tag as u8);
    }
    Object { ptr, size }
}

/// Checks the marks written by [`allocate`] and frees the object.
#[inline]
fn check_and_free<A: GlobalAlloc>(allocator: &A, object: Object, tag: Option<u64>) {
    // SAFETY: the object is live, ours, and was written by `allocate`.
    unsafe {
        let first = (object.ptr as *const u64).read();
        let last = object.ptr.add(object.size - 1).read();
        assert_eq!(last, first as u8, "object corrupted: its two marks differ");
        if let Some(tag) = tag {
            assert_eq!(first, tag, "object corrupted: wrong tag");
        }
        allocator.dealloc(object.ptr, layout(object.size));
    }
}

/// Fills `batch` with [`BATCH`] fresh objects tagged with their sizes.
fn fill<A: GlobalAlloc>(allocator: &A, rng: &mut Rng, batch: &mut Batch) {
    for _ in 0..BATCH {
        let size = rng.pick(&CROSS_SIZES);
        batch.push(allocate(allocator, size, size as u64));
    }
}

/// Frees every object of `batch`, leaving it empty. Returns how many.
fn drain<A: GlobalAlloc>(allocator: &A, batch: &mut Batch) -> u64 {
    let count = batch.len() as u64;
    for object in batch.drain(..) {
        let size = object.size as u64;
        check_and_free(allocator, object, Some(size));
    }
    count
}

/// A worker thread's body: given the stop flag, returns the pairs it did.
type Worker = Box<dyn FnOnce(&AtomicBool) -> u64 + Send>;

/// Runs `workers` threads made by `make` (each given the stop flag and
/// returning its pair count) for `duration`, and returns pairs per second.
/// The clock starts when every worker is ready and stops when the last one
/// has finished (cleaning up included).
fn timed(workers: Vec<Worker>, duration: Duration) -> f64 {
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(workers.len() + 1);
    let (pairs, elapsed) = thread::scope(|scope| {
        let handles: Vec<_> = workers
            .into_iter()
            .map(|work| {
                let (stop, barrier) = (&stop, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    work(stop)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
        let pairs: u64 = handles
            .into_iter()
            .map(|h| h.join().expect("worker panicked"))
            .sum();
        (pairs, start.elapsed())
    });
    pairs as f64 / elapsed.as_secs_f64()
}

/// Producer → consumer: every free is remote.
fn cross_thread<A: GlobalAlloc + Sync>(allocator: &'static A, duration: Duration) -> f64 {
    let (to_consumer, from_producer) = sync_channel::<Batch>(DEPTH);
    let (to_producer, empties) = sync_channel::<Batch>(DEPTH);
    for _ in 0..DEPTH {
        to_producer
            .send(Vec::with_capacity(BATCH))
            .expect("receiver alive");
    }
    let producer = move |stop: &AtomicBool| {
        let mut rng = Rng::new(1);
        while !stop.load(Ordering::Relaxed) {
            let Ok(mut batch) = empties.recv() else { break };
            fill(allocator, &mut rng, &mut batch);
            if to_consumer.send(batch).is_err() {
                break;
            }
        }
        0
    };
    let consumer = move |_: &AtomicBool| {
        let mut pairs = 0;
        // Ends when the producer has stopped and dropped its sender.
        for mut batch in from_producer {
            pairs += drain(allocator, &mut batch);
            // The producer may be gone; then the batch is simply dropped.
            let _ = to_producer.send(batch);
        }
        pairs
    };
    timed(vec![Box::new(producer), Box::new(consumer)], duration)
}

/// One side of the symmetric exchange: send own batches to the peer, free
/// the peer's.
fn exchange<A: GlobalAlloc>(
    allocator: &A,
    seed: u64,
    to_peer: SyncSender<Batch>,
    from_peer: Receiver<Batch>,
    stop: &AtomicBool,
) -> u64 {
    let mut rng = Rng::new(seed);
    let mut pairs = 0;
    let mut sent = 0;
    while !stop.load(Ordering::Relaxed) {
        let mut batch = if sent < DEPTH {
            Vec::with_capacity(BATCH)
        } else {
            match from_peer.recv() {
                Ok(mut batch) => {
                    pairs += drain(allocator, &mut batch);
                    batch
                }
                Err(_) => break, // The peer has stopped.
            }
        };
        fill(allocator, &mut rng, &mut batch);
        if to_peer.send(batch).is_err() {
            break;
        }
        sent += 1;
    }
    // Stop sending, then free whatever the peer still sends until it stops.
    drop(to_peer);
    for mut batch in from_peer {
        pairs += drain(allocator, &mut batch);
    }
    pairs
}

/// Two threads, each allocating for and freeing for the other.
fn cross_thread_symmetric<A: GlobalAlloc + Sync>(allocator: &'static A, duration: Duration) -> f64 {
    // Each side is at most DEPTH batches ahead of what it has received, so a
    // queue of 2 * DEPTH never blocks a sender.
    let (to_b, from_a) = sync_channel::<Batch>(2 * DEPTH);
    let (to_a, from_b) = sync_channel::<Batch>(2 * DEPTH);
    let a = move |stop: &AtomicBool| exchange(allocator, 1, to_b, from_b, stop);
    let b = move |stop: &AtomicBool| exchange(allocator, 2, to_a, from_a, stop);
    timed(vec![Box::new(a), Box::new(b)], duration)
}

/// `threads` threads, each replacing random objects among its own
/// [`SLOTS`] live ones.
fn churn<A: GlobalAlloc + Sync>(allocator: &'static A, threads: usize, duration: Duration) -> f64 {
    let workers = (0..threads)
        .map(|t| -> Worker {
            Box::new(move |stop: &AtomicBool| {
                let mut rng = Rng::new(t as u64 + 10);
                let mut slots: Vec<Object> = (0..SLOTS)
                    .map(|i| allocate(allocator, rng.pick(&CHURN_SIZES), i as u64))
                    .collect();
                let mut pairs = 0;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..CHECK_EVERY {
                        let slot = rng.below(SLOTS);
                        let size = rng.pick(&CHURN_SIZES);
                        let fresh = allocate(allocator, size, pairs);
                        let old = std::mem::replace(&mut slots[slot], fresh);
                        check_and_free(allocator, old, None);
                        pairs += 1;
                    }
                }
                for object in slots.drain(..) {
                    check_and_free(allocator, object, None);
                    pairs += 1;
                }
                pairs
            })
        })
        .collect();
    timed(workers, duration)
}

/// One round of `workload` on `contender`: pairs per second.
fn run(workload: Workload, contender: Contender, duration: Duration) -> f64 {
    with_contender!(contender, |a| match workload {
        Workload::CrossThread => cross_thread(a, duration),
        Workload::CrossThreadSymmetric => cross_thread_symmetric(a, duration),
        Workload::Churn(threads) => churn(a, threads, duration),
    })
}

/// Command-line options.
struct Options {
    rounds: usize,
    duration: Duration,
    workloads: Vec<Workload>,
    contenders: Vec<Contender>,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        rounds: 7,
        duration: Duration::from_millis(200),
        workloads: Workload::ALL.to_vec(),
        contenders: Contender::ALL.to_vec(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--rounds" => {
                options.rounds = value()?.parse().map_err(|e| format!("--rounds: {e}"))?
            }
            "--ms" => {
                options.duration =
                    Duration::from_millis(value()?.parse().map_err(|e| format!("--ms: {e}"))?)
            }
            "--workloads" => {
                options.workloads = value()?
                    .split(',')
                    .map(|name| {
                        Workload::ALL
                            .into_iter()
                            .find(|w| w.name() == name)
                            .ok_or_else(|| format!("unknown workload `{name}`"))
                    })
                    .collect::<Result<_, _>>()?
            }
            "--allocators" => {
                options.contenders = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?;
            }
            "-h" | "--help" => {
                return Err(
                    "usage: throughput [--rounds N] [--ms MS] [--workloads a,b] [--allocators x,y]"
                        .into(),
                )
            }
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    if options.rounds == 0 || options.workloads.is_empty() || options.contenders.is_empty() {
        return Err("need at least one round, workload and allocator".into());
    }
    Ok(options)
}

fn main() -> ExitCode {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    contenders::init();
    println!(
        "throughput: {} rounds of {} ms per allocator and workload, interleaved; {} CPUs",
        options.rounds,
        options.duration.as_millis(),
        thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!("figures: millions of pairs (allocation + free) per second; median, min and max over rounds\n");

    let mut table = Table::new(&[
        "workload",
        "allocator",
        "median",
        "min",
        "max",
        "÷ strata",
        "strata ×",
    ]);
    let mut summary_header = vec!["workload".to_owned()];
    summary_header.extend(options.contenders.iter().map(|c| c.name().to_owned()));
    let mut summary = Table::new(&summary_header);

    for &workload in &options.workloads {
        let mut samples = vec![Vec::with_capacity(options.rounds); options.contenders.len()];
        for round in 0..=options.rounds {
            for (i, &contender) in options.contenders.iter().enumerate() {
                let rate = run(workload, contender, options.duration);
                // Round 0 warms every allocator up (first-touch faults,
                // thread caches) and is not recorded.
                if round > 0 {
                    samples[i].push(rate / 1e6);
                }
            }
        }
        let medians: Vec<f64> = samples.iter().map(|s| median(s)).collect();
        let strata = options
            .contenders
            .iter()
            .position(|&c| c == Contender::Strata)
            .map(|i| medians[i]);
        let mut summary_row = vec![workload.name()];
        for (i, &contender) in options.contenders.iter().enumerate() {
            let min = samples[i].iter().copied().fold(f64::INFINITY, f64::min);
            let max = samples[i].iter().copied().fold(0.0, f64::max);
            let (ratio, speedup) = match strata {
                Some(s) => (
                    format!("{:.2}", medians[i] / s),
                    format!("{:.2}", s / medians[i]),
                ),
                None => ("-".into(), "-".into()),
            };
            table.row(&[
                workload.name(),
                contender.name().to_owned(),
                format!("{:.2}", medians[i]),
                format!("{min:.2}"),
                format!("{max:.2}"),
                ratio,
                speedup,
            ]);
            summary_row.push(format!("{:.2}", medians[i]));
        }
        summary.row(&summary_row);
        eprintln!("done: {}", workload.name());
    }
    print!("{}", table.render());
    println!("\nmedians side by side (Mpairs/s):\n");
    print!("{}", summary.render());
    println!(
        "\n÷ strata: this allocator's median over Strata's; strata ×: Strata's over this one's."
    );
    ExitCode::SUCCESS
}
