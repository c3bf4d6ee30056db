//! Multi-threaded stress: 8 threads on a 2-core machine allocate, fill,
//! exchange and free objects; every object's contents are verified by the
//! thread that frees it. A second run adds a thread that purges all the
//! while (never-carved ends of slices in use included), on an allocator
//! that collapses its filled pages onto huge pages. A third runs with no
//! purge delay, so that the delayed purge makes holes of sparse slices at
//! every refill while the threads free into them.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;

use strata::Strata;

static STRATA: Strata = Strata::new();
static HUGE: Strata = Strata::with_huge_pages();

const THREADS: usize = 8;
const ROUNDS: usize = 30;
const BATCH: usize = 500;

/// An object in flight: its address, layout and the pattern written in it.
struct Parcel {
    address: usize,
    layout: Layout,
    seed: u64,
}

fn pattern(seed: u64, index: usize) -> u8 {
    (seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8 ^ index as u8
}

fn make(strata: &Strata, seed: u64) -> Parcel {
    let size = match seed % 10 {
        0 => 40_000 + (seed % 100_000) as usize, // spans
        _ => 1 + (seed % 2_000) as usize,
    };
    let layout = Layout::from_size_align(size, 1 << (seed % 6)).unwrap();
    // SAFETY: a valid layout.
    let ptr = unsafe { strata.alloc(layout) };
    assert!(!ptr.is_null());
    assert_eq!(ptr as usize % layout.align(), 0);
    for i in 0..size {
        // SAFETY: within the allocation.
        unsafe { *ptr.add(i) = pattern(seed, i) };
    }
    Parcel { address: ptr as usize, layout, seed }
}

fn verify_and_free(strata: &Strata, parcel: Parcel) {
    let ptr = parcel.address as *mut u8;
    for i in 0..parcel.layout.size() {
        // SAFETY: within the allocation, which is live.
        let byte = unsafe { *ptr.add(i) };
        assert_eq!(byte, pattern(parcel.seed, i), "object {ptr:p} byte {i} corrupted");
    }
    // SAFETY: live allocation with its layout.
    unsafe { strata.dealloc(ptr, parcel.layout) };
}

#[test]
fn eight_threads_cross_thread_frees_keep_contents() {
    exchange(&STRATA, false);
}

#[test]
fn eight_threads_keep_contents_beside_a_thread_that_purges() {
    exchange(&HUGE, true);
}

/// With no purge delay, every refill runs the delayed purge, which makes
/// holes of the empty pages of sparse slices while other threads free into
/// them and take them again. Each thread also keeps one object in ten to
/// the end, so that slices stay sparse; once the threads are gone, the
/// delayed purge has made holes of their slices, and every long-lived
/// object is still intact.
#[test]
fn eight_threads_keep_contents_while_the_delayed_purge_makes_holes() {
    static DELAYED: Strata = Strata::new();
    DELAYED.set_purge_delay_ms(0);
    let long_lived = run_threads(&DELAYED, 10);
    assert!(!long_lived.is_empty());
    // The exited threads' slices went back to the domain: the next check
    // walks the sparse ones.
    assert!(!DELAYED.purge_if_due(), "nothing waits with no delay once the check ran");
    let stats = DELAYED.stats();
    assert!(stats.hole_pages > 0, "the long-lived objects' slices have holes: {stats}");
    long_lived.into_iter().for_each(|parcel| verify_and_free(&DELAYED, parcel));
    let stats = DELAYED.stats();
    assert_eq!(stats.bytes_live, 0, "{stats}");
    assert!(stats.remote_frees > 0, "cross-thread frees took the remote path");
}

/// Runs the eight threads on `strata`, with a ninth calling `purge` in a
/// loop until they are done if `purging`.
fn exchange(strata: &'static Strata, purging: bool) {
    let done = AtomicBool::new(false);
    let purges = thread::scope(|scope| {
        let purger = scope.spawn(|| {
            let mut purges = 0u64;
            while purging && !done.load(Ordering::Relaxed) {
                strata.purge();
                purges += 1;
                thread::yield_now();
            }
            purges
        });
        assert!(run_threads(strata, 0).is_empty());
        done.store(true, Ordering::Relaxed);
        purger.join().unwrap()
    });
    let stats = strata.stats();
    if purging {
        assert!(purges > 0, "the purging thread ran");
        // Parts filled and were collapsed (then split by the purges, and
        // collapsed again): transparent huge pages must not be `never`.
        assert!(stats.parts_collapsed > 0, "{stats}");
    }
    assert_eq!(stats.bytes_live, 0, "{stats}");
    assert!(stats.remote_frees > 0, "cross-thread frees took the remote path");
    assert_eq!(stats.classes.iter().map(|c| c.cached_slices).sum::<usize>(), 0, "exited threads gave their slices back");
}

/// Runs the eight threads; with `keep_every` above 0, each keeps one object
/// of that many it makes to the end, and those are returned, live.
fn run_threads(strata: &'static Strata, keep_every: usize) -> Vec<Parcel> {
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..THREADS).map(|_| mpsc::channel::<Vec<Parcel>>()).unzip();
    let handles: Vec<_> = receivers
        .into_iter()
        .enumerate()
        .map(|(me, inbox)| {
            let senders = senders.clone();
            thread::spawn(move || {
                let mut kept = Vec::new();
                let mut long_lived = Vec::new();
                for round in 0..ROUNDS {
                    let mut outgoing: Vec<Vec<Parcel>> = (0..THREADS).map(|_| Vec::new()).collect();
                    for i in 0..BATCH {
                        let seed = ((me * ROUNDS + round) * BATCH + i) as u64 * 2654435761 + 1;
                        let parcel = make(strata, seed);
                        if keep_every != 0 && i % keep_every == keep_every - 1 {
                            long_lived.push(parcel);
                            continue;
                        }
                        // Two thirds travel to another thread, a third stays.
                        match seed % 3 {
                            0 => kept.push(parcel),
                            _ => outgoing[(me + 1 + (seed as usize % (THREADS - 1))) % THREADS].push(parcel),
                        }
                    }
                    for (to, parcels) in outgoing.into_iter().enumerate() {
                        senders[to].send(parcels).unwrap();
                    }
                    // Free what arrived so far, and half of what we kept.
                    while let Ok(parcels) = inbox.try_recv() {
                        parcels.into_iter().for_each(|parcel| verify_and_free(strata, parcel));
                    }
                    let half = kept.len() / 2;
                    kept.drain(..half).for_each(|parcel| verify_and_free(strata, parcel));
                }
                drop(senders);
                kept.into_iter().for_each(|parcel| verify_and_free(strata, parcel));
                (inbox, long_lived)
            })
        })
        .collect();
    drop(senders);
    // Drain the rest after every thread stopped sending.
    let ends: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut long_lived = Vec::new();
    for (inbox, kept) in ends {
        for parcels in inbox.iter() {
            parcels.into_iter().for_each(|parcel| verify_and_free(strata, parcel));
        }
        long_lived.extend(kept);
    }
    long_lived
}
