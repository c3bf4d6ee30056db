//! Cross-thread frees on the static-arena source: three threads, each with a
//! heap of its own, allocate objects, pass them round a ring and free what
//! they receive through their own heap. Frees land on slices another heap
//! owns (remote frees, collected by the owner) and, once a thread has given
//! its heap back, on slices no heap owns (pending frees, handed to the
//! domain). Every object's contents are checked by the thread that frees it.
//!
//! Small enough for Miri (`tests/miri.sh`), whose data-race detector and
//! aliasing model then cover the cross-thread paths on a page source it can
//! run; also runs natively and under ThreadSanitizer (`tests/tsan.sh`).

#![cfg(feature = "arena")]

use std::alloc::Layout;
use std::sync::mpsc;
use std::thread;

use strata::page::PAGE_SIZE;
use strata::source::ArenaSource;
use strata::{Domain, Heap, SpinLock};

static DOMAIN: Domain<ArenaSource, SpinLock> = Domain::new(ArenaSource::empty());

const THREADS: usize = 3;
/// At least 3, so that every thread frees objects of the previous one while
/// their heap still owns them (see the ring argument in the test).
const ROUNDS: usize = if cfg!(miri) { 3 } else { 300 };
const BATCH: usize = if cfg!(miri) { 24 } else { 300 };

/// An object in flight: address, layout and the byte it is filled with.
type Parcel = (usize, Layout, u8);

fn check(parcel: &Parcel) {
    let (address, layout, fill) = *parcel;
    // SAFETY: a live object of `layout.size()` bytes.
    let bytes = unsafe { std::slice::from_raw_parts(address as *const u8, layout.size()) };
    assert!(bytes.iter().all(|&b| b == fill), "object {address:#x} corrupted");
}

#[test]
fn objects_freed_round_a_ring_of_threads_come_back() {
    let region: &'static mut [u8] = Box::leak(vec![0u8; 6 * PAGE_SIZE].into_boxed_slice());
    assert!(DOMAIN.source().init(region));

    let (senders, receivers): (Vec<_>, Vec<_>) = (0..THREADS).map(|_| mpsc::channel::<Vec<Parcel>>()).unzip();
    let threads: Vec<_> = receivers
        .into_iter()
        .enumerate()
        .map(|(me, inbox)| {
            let next = senders[(me + 1) % THREADS].clone();
            thread::spawn(move || {
                let mut heap = Heap::new();
                for round in 0..ROUNDS {
                    let mut outgoing = Vec::with_capacity(BATCH);
                    let mut kept = Vec::new();
                    for i in 0..BATCH {
                        let seed = (me * ROUNDS + round) * BATCH + i;
                        // Eight classes of 256 B to 2 KiB: a carve (4 KiB of
                        // objects) lasts a few allocations, so owners carve
                        // while other threads free into the same slices.
                        let layout = Layout::from_size_align(256 + seed % 8 * 256, 8).unwrap();
                        let p = heap.alloc(&DOMAIN, layout);
                        assert!(!p.is_null());
                        let fill = seed as u8;
                        // SAFETY: a fresh object of this size.
                        unsafe { p.write_bytes(fill, layout.size()) };
                        // Two thirds travel, a third is freed here.
                        if seed.is_multiple_of(3) {
                            kept.push((p as usize, layout, fill));
                        } else {
                            outgoing.push((p as usize, layout, fill));
                        }
                    }
                    next.send(outgoing).unwrap();
                    // Round `round` of the previous thread: it sent it before
                    // waiting for its own round `round`, so this cannot
                    // deadlock, and a thread finishes only after the one it
                    // sends to has freed its first batches.
                    let arrived = inbox.recv().unwrap();
                    for parcel in arrived.iter().chain(&kept) {
                        check(parcel);
                        // SAFETY: a live object, freed once, here.
                        unsafe { heap.free(&DOMAIN, parcel.0 as *mut u8) }.unwrap();
                    }
                }
                // Objects still in flight to the next thread are freed into
                // slices this heap gave back.
                heap.release(&DOMAIN, true);
            })
        })
        .collect();
    drop(senders);
    for thread in threads {
        thread.join().unwrap();
    }
    let stats = DOMAIN.stats();
    assert_eq!(stats.bytes_live, 0, "{stats}");
    assert!(stats.remote_frees > 0, "frees of another heap's objects took the remote list: {stats}");
    assert_eq!(stats.classes.iter().map(|c| c.cached_slices).sum::<usize>(), 0, "every heap gave its slices back");
}

/// The smallest exchange, for Miri with its aliasing model on (see
/// `tests/miri.sh`): two threads with a heap each swap two objects, each
/// frees the other's through its own heap (remote frees onto slices the
/// other heap owns), and the owners collect them.
#[test]
fn two_threads_swap_objects() {
    static SWAP: Domain<ArenaSource, SpinLock> = Domain::new(ArenaSource::empty());
    let region: &'static mut [u8] = Box::leak(vec![0u8; 3 * PAGE_SIZE].into_boxed_slice());
    assert!(SWAP.source().init(region));
    let layout = Layout::from_size_align(48, 8).unwrap();
    let (to_b, from_a) = mpsc::channel::<Vec<Parcel>>();
    let (to_a, from_b) = mpsc::channel::<Vec<Parcel>>();
    let side = move |fill: u8, send: mpsc::Sender<Vec<Parcel>>, receive: mpsc::Receiver<Vec<Parcel>>| {
        move || {
            let mut heap = Heap::new();
            let mine: Vec<Parcel> = (0..2)
                .map(|_| {
                    let p = heap.alloc(&SWAP, layout);
                    assert!(!p.is_null());
                    // SAFETY: a fresh object of this size.
                    unsafe { p.write_bytes(fill, layout.size()) };
                    (p as usize, layout, fill)
                })
                .collect();
            send.send(mine).unwrap();
            for parcel in receive.recv().unwrap() {
                check(&parcel);
                // SAFETY: a live object, freed once, here.
                unsafe { heap.free(&SWAP, parcel.0 as *mut u8) }.unwrap();
            }
            // Push the remote frees this heap holds back (a heap batches
            // them by slice), then wait until the other side has pushed
            // ours too, so that every free went onto the remote list of a
            // slice its owner still held.
            heap.flush(&SWAP);
            send.send(Vec::new()).unwrap();
            assert!(receive.recv().unwrap().is_empty());
            heap.flush(&SWAP);
            heap.release(&SWAP, true);
        }
    };
    let a = thread::spawn(side(0xa1, to_b, from_b));
    let b = thread::spawn(side(0xb2, to_a, from_a));
    a.join().unwrap();
    b.join().unwrap();
    let stats = SWAP.stats();
    assert_eq!(stats.bytes_live, 0, "{stats}");
    assert_eq!(stats.remote_frees, 4, "{stats}");
}
