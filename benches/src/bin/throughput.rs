//! Multi-allocator throughput, measured in one process with interleaved
//! rounds.
//!
//! ```text
//! throughput [--rounds N] [--ms MS] [--workloads a,b,...] [--allocators x,y,...]
//!            [--depth N] [--wait poll|block]
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
//! - `xthread-N` (default `xthread-8`): `N` producer → consumer pairs at
//!   once, `2N` threads.
//! - `churn-1`: one thread keeps 1024 live objects (16 B–1 KiB) and replaces
//!   a random one at each step.
//! - `churn-N` (default 2, 4, 8 and 16): the same in `N` threads at once,
//!   each with its own objects (no sharing; measures contention on the
//!   allocator itself).
//!
//! Any `churn-N` or `xthread-N` can be named with `--workloads`.
//!
//! A cross-thread worker that finds its queue empty (or full) polls it for
//! a while, first spinning and then yielding to the scheduler, before it
//! blocks (`--wait poll`, the default); `--wait block` blocks at once, as
//! the benchmark did before. Blocking at once measures the kernel's
//! wake-ups more than the allocator (see [`receive`]).
//!
//! For Strata (the `strata` contender) a second table gives the domain
//! lock's counts per million pairs, summed over the recorded rounds:
//! acquisitions, contended acquisitions (the lock was held when asked for),
//! and the remote-free objects of slices given back to the domain, which the
//! heap giving them back walks before it takes the lock (none is walked
//! under it). Unlike times, these counts barely move from run to run, so
//! they show contention even on a machine with fewer cores than threads.
//!
//! The allocators are the statics of `strata_benches::contenders`, called
//! through `GlobalAlloc` directly; threads, channels and vectors use the
//! process allocator (glibc), so they cost every contender the same.

use std::alloc::{GlobalAlloc, Layout};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvError, SendError, SyncSender, TryRecvError, TrySendError};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use strata_benches::report::{median, Table};
use strata_benches::rng::Rng;
use strata_benches::{contenders, with_contender, Contender};

/// Objects per batch sent between threads.
const BATCH: usize = 64;
/// Batches each sender of the cross-thread workloads may have in flight
/// (`--depth`, default 8). With blocking waits (`--wait block`) and few
/// threads on few cores, a shallow queue makes the two sides of a pair
/// sleep and wake each other at nearly every batch, and the run then
/// measures the kernel's wake-ups as much as the allocator (see
/// `benches/RESULTS.md`).
static DEPTH: AtomicUsize = AtomicUsize::new(8);

/// The queue depth in force ([`DEPTH`]).
fn depth() -> usize {
    DEPTH.load(Ordering::Relaxed)
}

/// Whether a cross-thread worker that finds its queue empty (or full)
/// blocks on it at once (`--wait block`) rather than polling it for a
/// while first (`--wait poll`, the default; see [`receive`]).
static BLOCK_AT_ONCE: AtomicBool = AtomicBool::new(false);
/// Polls of an empty or full queue before the worker blocks on it: the
/// first [`SPINS`] with a spin-loop hint, the rest with a yield to the
/// scheduler, so that an oversubscribed machine runs the other threads.
const POLLS: u32 = 4096;
/// Polls that spin rather than yield.
const SPINS: u32 = 64;

/// Waits between two polls of a queue.
fn pause(poll: u32) {
    if poll < SPINS {
        std::hint::spin_loop();
    } else {
        thread::yield_now();
    }
}

/// Receives the next batch, or `Err` once every sender is gone.
///
/// A worker that blocked on an empty queue at once would sleep and be
/// woken at nearly every batch, and the run would then measure the
/// kernel's wake-ups rather than the allocator: with blocking waits,
/// making the consumer of `xthread-1` *slower* (a busy loop after each
/// batch) made the whole run faster, and with more threads than CPUs the
/// rounds of one run split into a fast and a slow mode several times
/// apart (`benches/RESULTS.md`). So a worker polls the queue for a while
/// first ([`POLLS`]) and blocks only after that.
fn receive(from: &Receiver<Batch>) -> Result<Batch, RecvError> {
    if !BLOCK_AT_ONCE.load(Ordering::Relaxed) {
        for poll in 0..POLLS {
            match from.try_recv() {
                Ok(batch) => return Ok(batch),
                Err(TryRecvError::Disconnected) => return Err(RecvError),
                Err(TryRecvError::Empty) => pause(poll),
            }
        }
    }
    from.recv()
}

/// Sends `batch`, or gives it back in `Err` if the receiver is gone. Polls
/// a full queue before blocking, as [`receive`] polls an empty one.
fn send(to: &SyncSender<Batch>, mut batch: Batch) -> Result<(), SendError<Batch>> {
    if !BLOCK_AT_ONCE.load(Ordering::Relaxed) {
        for poll in 0..POLLS {
            match to.try_send(batch) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Disconnected(back)) => return Err(SendError(back)),
                Err(TrySendError::Full(back)) => {
                    batch = back;
                    pause(poll);
                }
            }
        }
    }
    to.send(batch)
}

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
    /// `n` producer → consumer pairs.
    Pairs(usize),
}

impl Workload {
    const ALL: [Workload; 8] = [
        Workload::CrossThread,
        Workload::CrossThreadSymmetric,
        Workload::Pairs(8),
        Workload::Churn(1),
        Workload::Churn(2),
        Workload::Churn(4),
        Workload::Churn(8),
        Workload::Churn(16),
    ];

    /// The workload called `name`: one of [`Workload::ALL`], or any
    /// `churn-N` or `xthread-N` with `N` from 1 to 64.
    fn parse(name: &str) -> Option<Workload> {
        if let Some(known) = Workload::ALL.into_iter().find(|w| w.name() == name) {
            return Some(known);
        }
        let (kind, count) = name.rsplit_once('-')?;
        let count: usize = count.parse().ok().filter(|n| (1..=64).contains(n))?;
        match kind {
            "churn" => Some(Workload::Churn(count)),
            "xthread" => Some(Workload::Pairs(count)),
            _ => None,
        }
    }

    /// Threads the workload runs.
    fn threads(self) -> usize {
        match self {
            Workload::CrossThread | Workload::CrossThreadSymmetric => 2,
            Workload::Churn(n) => n,
            Workload::Pairs(n) => 2 * n,
        }
    }

    fn name(self) -> String {
        match self {
            Workload::CrossThread => "xthread".into(),
            Workload::CrossThreadSymmetric => "xthread-sym".into(),
            Workload::Churn(n) => format!("churn-{n}"),
            Workload::Pairs(n) => format!("xthread-{n}"),
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
/// byte of `tag` to its last byte. Always inlined, so that every allocator
/// (and every build of one) is measured in the same loop code: left to
/// itself, the compiler inlined this helper for some builds and not others.
#[inline(always)]
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

/// Checks the marks written by [`allocate`] and frees the object. Always
/// inlined, as [`allocate`] is.
#[inline(always)]
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

/// What one timed run did: pairs, and the seconds they took.
#[derive(Clone, Copy)]
struct Run {
    pairs: u64,
    seconds: f64,
}

impl Run {
    fn rate(self) -> f64 {
        self.pairs as f64 / self.seconds
    }
}

/// Runs `workers` threads (each given the stop flag and returning its pair
/// count) for `duration`. The clock starts when every worker is ready and
/// stops when the last one has finished (cleaning up included).
fn timed(workers: Vec<Worker>, duration: Duration) -> Run {
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
    Run { pairs, seconds: elapsed.as_secs_f64() }
}

/// Producer → consumer pairs: every free is remote.
fn cross_thread<A: GlobalAlloc + Sync>(allocator: &'static A, pairs: usize, duration: Duration) -> Run {
    let workers = (0..pairs)
        .flat_map(|pair| producer_and_consumer(allocator, pair as u64 + 1))
        .collect();
    timed(workers, duration)
}

/// A producer that allocates batches and a consumer that frees them.
fn producer_and_consumer<A: GlobalAlloc + Sync>(allocator: &'static A, seed: u64) -> [Worker; 2] {
    let (to_consumer, from_producer) = sync_channel::<Batch>(depth());
    let (to_producer, empties) = sync_channel::<Batch>(depth());
    for _ in 0..depth() {
        to_producer
            .send(Vec::with_capacity(BATCH))
            .expect("receiver alive");
    }
    let producer = move |stop: &AtomicBool| {
        let mut rng = Rng::new(seed);
        while !stop.load(Ordering::Relaxed) {
            let Ok(mut batch) = receive(&empties) else { break };
            fill(allocator, &mut rng, &mut batch);
            if send(&to_consumer, batch).is_err() {
                break;
            }
        }
        0
    };
    let consumer = move |_: &AtomicBool| {
        let mut pairs = 0;
        // Ends when the producer has stopped and dropped its sender.
        while let Ok(mut batch) = receive(&from_producer) {
            pairs += drain(allocator, &mut batch);
            // The producer may be gone; then the batch is simply dropped.
            let _ = send(&to_producer, batch);
        }
        pairs
    };
    [Box::new(producer), Box::new(consumer)]
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
    let depth = depth();
    while !stop.load(Ordering::Relaxed) {
        let mut batch = if sent < depth {
            Vec::with_capacity(BATCH)
        } else {
            match receive(&from_peer) {
                Ok(mut batch) => {
                    pairs += drain(allocator, &mut batch);
                    batch
                }
                Err(_) => break, // The peer has stopped.
            }
        };
        fill(allocator, &mut rng, &mut batch);
        if send(&to_peer, batch).is_err() {
            break;
        }
        sent += 1;
    }
    // Stop sending, then free whatever the peer still sends until it stops.
    drop(to_peer);
    while let Ok(mut batch) = receive(&from_peer) {
        pairs += drain(allocator, &mut batch);
    }
    pairs
}

/// Two threads, each allocating for and freeing for the other.
fn cross_thread_symmetric<A: GlobalAlloc + Sync>(allocator: &'static A, duration: Duration) -> Run {
    // Each side is at most `depth()` batches ahead of what it has received,
    // so a queue of twice that never blocks a sender.
    let (to_b, from_a) = sync_channel::<Batch>(2 * depth());
    let (to_a, from_b) = sync_channel::<Batch>(2 * depth());
    let a = move |stop: &AtomicBool| exchange(allocator, 1, to_b, from_b, stop);
    let b = move |stop: &AtomicBool| exchange(allocator, 2, to_a, from_a, stop);
    timed(vec![Box::new(a), Box::new(b)], duration)
}

/// `threads` threads, each replacing random objects among its own
/// [`SLOTS`] live ones.
fn churn<A: GlobalAlloc + Sync>(allocator: &'static A, threads: usize, duration: Duration) -> Run {
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

/// One round of `workload` on `contender`.
fn run(workload: Workload, contender: Contender, duration: Duration) -> Run {
    with_contender!(contender, |a| match workload {
        Workload::CrossThread => cross_thread(a, 1, duration),
        Workload::Pairs(pairs) => cross_thread(a, pairs, duration),
        Workload::CrossThreadSymmetric => cross_thread_symmetric(a, duration),
        Workload::Churn(threads) => churn(a, threads, duration),
    })
}

/// Counts of Strata's domain lock (the `strata` contender), from its
/// statistics.
#[derive(Clone, Copy, Default)]
struct LockCounts {
    acquisitions: u64,
    contended: u64,
    /// Remote-free objects walked outside the lock (`remote_walked_unlocked`).
    walked: u64,
    /// Pairs done while the counts were taken (in sums of runs).
    pairs: u64,
}

impl LockCounts {
    /// The counts so far. Taking them costs one acquisition, which
    /// [`LockCounts::since`] leaves out.
    fn now() -> Self {
        let stats = contenders::STRATA.stats();
        LockCounts {
            acquisitions: stats.lock_acquisitions,
            contended: stats.lock_contended,
            walked: stats.remote_walked_unlocked,
            pairs: 0,
        }
    }

    /// The counts between `before` and `self`, less the snapshot's own
    /// acquisition.
    fn since(self, before: LockCounts) -> Self {
        LockCounts {
            acquisitions: self.acquisitions - before.acquisitions - 1,
            contended: self.contended - before.contended,
            walked: self.walked - before.walked,
            pairs: 0,
        }
    }

    fn add(&mut self, run: LockCounts, pairs: u64) {
        self.acquisitions += run.acquisitions;
        self.contended += run.contended;
        self.walked += run.walked;
        self.pairs += pairs;
    }
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
                    .map(|name| Workload::parse(name).ok_or_else(|| format!("unknown workload `{name}`")))
                    .collect::<Result<_, _>>()?
            }
            "--allocators" => {
                options.contenders = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?;
            }
            "--depth" => {
                let depth: usize = value()?.parse().map_err(|e| format!("--depth: {e}"))?;
                if depth == 0 {
                    return Err("--depth: at least 1".into());
                }
                DEPTH.store(depth, Ordering::Relaxed);
            }
            "--wait" => match value()?.as_str() {
                "poll" => BLOCK_AT_ONCE.store(false, Ordering::Relaxed),
                "block" => BLOCK_AT_ONCE.store(true, Ordering::Relaxed),
                other => return Err(format!("--wait: `poll` or `block`, not `{other}`")),
            },
            "-h" | "--help" => {
                return Err(
                    "usage: throughput [--rounds N] [--ms MS] [--workloads a,b] [--allocators x,y] [--depth N] [--wait poll|block]"
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
        "throughput: {} rounds of {} ms per allocator and workload, interleaved; {} CPUs; cross-thread queues {} batches deep, {}",
        options.rounds,
        options.duration.as_millis(),
        thread::available_parallelism().map_or(0, |n| n.get()),
        depth(),
        if BLOCK_AT_ONCE.load(Ordering::Relaxed) {
            "waits block at once"
        } else {
            "waits poll before blocking"
        },
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

    let mut locks = Table::new(&[
        "workload",
        "threads",
        "Mpairs",
        "lock / Mpair",
        "contended / Mpair",
        "contended %",
        "walked unlocked / Mpair",
    ]);

    for &workload in &options.workloads {
        let mut samples = vec![Vec::with_capacity(options.rounds); options.contenders.len()];
        let mut counted = LockCounts::default();
        for round in 0..=options.rounds {
            for (i, &contender) in options.contenders.iter().enumerate() {
                let before = (contender == Contender::Strata).then(LockCounts::now);
                let outcome = run(workload, contender, options.duration);
                // Round 0 warms every allocator up (first-touch faults,
                // thread caches) and is not recorded.
                if round > 0 {
                    samples[i].push(outcome.rate() / 1e6);
                    if let Some(before) = before {
                        counted.add(LockCounts::now().since(before), outcome.pairs);
                    }
                }
            }
        }
        if options.contenders.contains(&Contender::Strata) {
            let per_million = |count: u64| format!("{:.1}", count as f64 * 1e6 / counted.pairs as f64);
            locks.row(&[
                workload.name(),
                workload.threads().to_string(),
                format!("{:.1}", counted.pairs as f64 / 1e6),
                per_million(counted.acquisitions),
                per_million(counted.contended),
                format!("{:.1}", 100.0 * counted.contended as f64 / counted.acquisitions.max(1) as f64),
                per_million(counted.walked),
            ]);
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
    if options.contenders.contains(&Contender::Strata) {
        println!("\nstrata's domain lock, per million pairs (all recorded rounds):\n");
        print!("{}", locks.render());
    }
    ExitCode::SUCCESS
}
