//! A program that runs on Strata as its `#[global_allocator]`: maps,
//! strings, vectors and threads doing real work, then checks that every byte
//! it allocated came back.
//!
//! It runs without the test harness, so nothing but this program allocates.
//! The Rust runtime keeps a few allocations for the life of the process (made
//! before `main`, and lazily for the main thread's handle and channel wait
//! context); the program
//! creates those first, then requires the live-byte count to come back
//! exactly to that baseline.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

#[global_allocator]
static GLOBAL: strata::Strata = strata::Strata::new();

fn word(n: u64) -> String {
    let mut s = String::new();
    let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for _ in 0..(3 + n % 12) {
        s.push((b'a' + (x % 26) as u8) as char);
        x = x.rotate_left(7).wrapping_mul(31);
    }
    s
}

/// Word frequencies over a generated text, across four threads that share
/// the results through a mutex and send their strings to the main thread.
fn work() -> (usize, u64) {
    let counts: Arc<Mutex<HashMap<String, u64>>> = Arc::new(Mutex::new(HashMap::new()));
    let (sender, receiver) = mpsc::channel::<Vec<String>>();
    let workers: Vec<_> = (0..4u64)
        .map(|t| {
            let counts = Arc::clone(&counts);
            let sender = sender.clone();
            thread::spawn(move || {
                let mut local: BTreeMap<String, u64> = BTreeMap::new();
                let mut batch = Vec::new();
                for i in 0..50_000u64 {
                    let w = word(i % 5_000 + t);
                    *local.entry(w.clone()).or_default() += 1;
                    batch.push(w);
                    if batch.len() == 1_000 {
                        sender.send(std::mem::take(&mut batch)).unwrap();
                    }
                }
                let mut shared = counts.lock().unwrap();
                for (w, n) in local {
                    *shared.entry(w).or_default() += n;
                }
            })
        })
        .collect();
    drop(sender);
    // Strings allocated on the workers are freed here: remote frees.
    let mut received = 0usize;
    let mut longest = String::new();
    for batch in receiver {
        received += batch.len();
        for w in batch {
            if w.len() > longest.len() {
                longest = w;
            }
        }
    }
    for w in workers {
        w.join().unwrap();
    }
    let total: u64 = counts.lock().unwrap().values().sum();
    let mut v: Vec<Vec<u8>> = (0..2_000).map(|i| vec![i as u8; i * 37 % 70_000]).collect();
    v.retain(|b| b.len() % 3 != 0);
    let mut joined = String::new();
    for b in &v {
        joined.push_str(&b.len().to_string());
        joined.push(',');
    }
    assert!(joined.len() > 1_000);
    assert_eq!(received, 200_000);
    (received, total)
}

fn main() {
    // The runtime's lifetime allocations: the main thread's handle and the
    // wait context a blocking channel receive caches in the thread. The
    // context is made only when a receive really blocks, which a message
    // that is already waiting would skip; a receive on a channel that stays
    // empty always blocks, so the baseline does not depend on scheduling.
    let (sender, receiver) = mpsc::channel::<u8>();
    assert_eq!(receiver.recv_timeout(Duration::from_millis(1)), Err(RecvTimeoutError::Timeout));
    let warm = thread::spawn(move || sender.send(1).unwrap());
    assert_eq!(receiver.recv(), Ok(1));
    warm.join().unwrap();
    let baseline = GLOBAL.stats().bytes_live;
    assert!(baseline < 4096, "the runtime holds {baseline} bytes before main's work");
    let (received, total) = work();
    assert_eq!(total, received as u64);
    let after = GLOBAL.stats();
    if after.bytes_live != baseline {
        eprintln!("{after}");
        panic!("{} bytes live after the work, {baseline} before", after.bytes_live);
    }
    assert!(after.remote_frees > 0, "strings freed across threads took the remote path");
    assert!(after.refills > 0);
    let slices = after.slices_clean + after.slices_partial + after.slices_full + after.slices_dirty + after.slices_purged;
    assert_eq!(slices, after.pages_mapped * strata::page::USABLE_SLICES);
    GLOBAL.purge();
    let purged = GLOBAL.stats();
    assert_eq!(purged.bytes_live, baseline);
    assert_eq!(purged.slices_dirty, 0);
    assert!(purged.bytes_resident < after.bytes_resident || after.slices_dirty == 0);
    println!("global_program: {baseline} bytes live before and after the work (runtime)");
    println!("1 passed, 0 failed");
}
