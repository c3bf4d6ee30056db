//! Benchmark support for Strata: the allocators under test and small helpers
//! shared by the harness binaries (`fastpath`, `throughput`) and the
//! Criterion benches.
//!
//! A process has a single `#[global_allocator]`, so every allocator here is a
//! plain `static` called through [`GlobalAlloc`](std::alloc::GlobalAlloc)
//! directly. The binaries keep the process allocator (glibc), so their own
//! bookkeeping (threads, channels, vectors) never goes through the allocator
//! being measured.
#![warn(missing_docs)]

pub mod contenders;
pub mod report;
pub mod rng;

pub use contenders::Contender;
pub mod compare;
pub mod kv;
pub mod soak;
