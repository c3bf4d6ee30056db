//! The domain lock of Linux user space: a mutex that spins briefly and then
//! sleeps on a futex, so that a thread waiting for a lock whose holder has
//! been preempted gives its CPU to that holder instead of spinning or
//! yielding round the run queue.
//!
//! The lock word has three values. Every waiter that goes to sleep first
//! marks the word [`CONTENDED`], so the holder knows on release whether it
//! must wake anyone; an uncontended lock and unlock are one atomic
//! instruction each and make no system call.
//!
//! The loom model (`tests/loom.rs`) compiles this file against loom's
//! atomics and a futex made of a loom mutex and condition variable, and
//! checks mutual exclusion and that no waiter sleeps forever.

use crate::sync::{futex_wait, futex_wake_one, spin_loop, AtomicU32, Ordering, LOCK_SPINS};

/// Nobody holds the lock.
pub(crate) const UNLOCKED: u32 = 0;
/// Held, and no thread is asleep waiting for it.
pub(crate) const LOCKED: u32 = 1;
/// Held, and threads may be asleep waiting for it: the holder wakes one on
/// release.
pub(crate) const CONTENDED: u32 = 2;

/// Takes the lock if it is free.
#[inline]
pub(crate) fn try_lock(word: &AtomicU32) -> bool {
    word.compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed).is_ok()
}

/// Takes the lock, sleeping while it is held by another thread.
#[inline]
pub(crate) fn lock(word: &AtomicU32) {
    if !try_lock(word) {
        lock_contended(word);
    }
}

#[cold]
fn lock_contended(word: &AtomicU32) {
    // A short spin first: domain critical sections are short, and a holder
    // that is running will be done sooner than a sleep and a wake-up.
    for _ in 0..LOCK_SPINS {
        if word.load(Ordering::Relaxed) == UNLOCKED && try_lock(word) {
            return;
        }
        spin_loop();
    }
    // Mark the lock contended and sleep until it is released. The swap
    // takes the lock if it was free; it then stays marked contended, which
    // costs the next release one wake-up call at most.
    while word.swap(CONTENDED, Ordering::Acquire) != UNLOCKED {
        futex_wait(word, CONTENDED);
    }
}

/// Releases the lock, waking one sleeping waiter if there may be one.
///
/// # Safety
/// The caller holds the lock (or, after `fork`, is the child's only thread
/// and its parent's forking thread held it).
#[inline]
pub(crate) unsafe fn unlock(word: &AtomicU32) {
    if word.swap(UNLOCKED, Ordering::Release) == CONTENDED {
        futex_wake_one(word);
    }
}
