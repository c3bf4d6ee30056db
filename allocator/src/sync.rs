//! Atomics used by the lock-free parts of the core.
//!
//! The loom model (`tests/loom.rs`) compiles `remote.rs` against loom's atomics by
//! providing its own `sync` module; the core itself uses `core`'s.

pub(crate) use core::sync::atomic::{AtomicUsize, Ordering};
