//! Multi-threaded stress: 8 threads on a 2-core machine allocate, fill,
//! exchange and free objects; every object's contents are verified by the
//! thread that frees it.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::mpsc;
use std::thread;

use strata::Strata;

static STRATA: Strata = Strata::new();

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

fn make(seed: u64) -> Parcel {
    let size = match seed % 10 {
        0 => 40_000 + (seed % 100_000) as usize, // spans
        _ => 1 + (seed % 2_000) as usize,
    };
    let layout = Layout::from_size_align(size, 1 << (seed % 6)).unwrap();
    // SAFETY: a valid layout.
    let ptr = unsafe { STRATA.alloc(layout) };
    assert!(!ptr.is_null());
    assert_eq!(ptr as usize % layout.align(), 0);
    for i in 0..size {
        // SAFETY: within the allocation.
        unsafe { *ptr.add(i) = pattern(seed, i) };
    }
    Parcel { address: ptr as usize, layout, seed }
}

fn verify_and_free(parcel: Parcel) {
    let ptr = parcel.address as *mut u8;
    for i in 0..parcel.layout.size() {
        // SAFETY: within the allocation, which is live.
        let byte = unsafe { *ptr.add(i) };
        assert_eq!(byte, pattern(parcel.seed, i), "object {ptr:p} byte {i} corrupted");
    }
    // SAFETY: live allocation with its layout.
    unsafe { STRATA.dealloc(ptr, parcel.layout) };
}

#[test]
fn eight_threads_cross_thread_frees_keep_contents() {
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..THREADS).map(|_| mpsc::channel::<Vec<Parcel>>()).unzip();
    let handles: Vec<_> = receivers
        .into_iter()
        .enumerate()
        .map(|(me, inbox)| {
            let senders = senders.clone();
            thread::spawn(move || {
                let mut kept = Vec::new();
                for round in 0..ROUNDS {
                    let mut outgoing: Vec<Vec<Parcel>> = (0..THREADS).map(|_| Vec::new()).collect();
                    for i in 0..BATCH {
                        let seed = ((me * ROUNDS + round) * BATCH + i) as u64 * 2654435761 + 1;
                        let parcel = make(seed);
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
                        parcels.into_iter().for_each(verify_and_free);
                    }
                    let half = kept.len() / 2;
                    kept.drain(..half).for_each(verify_and_free);
                }
                drop(senders);
                kept.into_iter().for_each(verify_and_free);
                inbox
            })
        })
        .collect();
    drop(senders);
    // Drain the rest after every thread stopped sending.
    let inboxes: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for inbox in inboxes {
        for parcels in inbox.iter() {
            parcels.into_iter().for_each(verify_and_free);
        }
    }
    let stats = STRATA.stats();
    assert_eq!(stats.bytes_live, 0, "{stats}");
    assert!(stats.remote_frees > 0, "cross-thread frees took the remote path");
    assert_eq!(stats.classes.iter().map(|c| c.cached_slices).sum::<usize>(), 0, "exited threads gave their slices back");
}
