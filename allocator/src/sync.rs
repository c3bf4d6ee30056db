//! Atomics used by the lock-free parts of the core, and the futex calls of
//! the user-space lock.
//!
//! The loom model (`tests/loom.rs`) compiles `remote.rs` and `futex.rs`
//! against loom's atomics by providing its own `sync` module; the core
//! itself uses `core`'s.

#[allow(unused_imports)]
pub(crate) use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// Times a contended lock is polled before its waiter sleeps.
#[cfg(all(feature = "std", target_os = "linux"))]
pub(crate) const LOCK_SPINS: u32 = 100;

#[cfg(all(feature = "std", target_os = "linux"))]
pub(crate) use core::hint::spin_loop;

/// Sleeps while `word` holds `expected` (or until a wake-up; spurious
/// returns are allowed, so callers loop).
#[cfg(all(feature = "std", target_os = "linux"))]
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: FUTEX_WAIT reads the word at a valid, aligned address; the
    // other arguments are unused by this operation or null (no timeout).
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            core::ptr::null::<libc::timespec>(),
        );
    }
}

/// Wakes one thread sleeping in [`futex_wait`] on `word`.
#[cfg(all(feature = "std", target_os = "linux"))]
pub(crate) fn futex_wake_one(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE only uses the address as a key.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, 1);
    }
}
