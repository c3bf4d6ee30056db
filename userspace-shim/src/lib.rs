//! `libstrata.so`: Strata as a drop-in `malloc` for any C, C++ or Rust
//! program on Linux with glibc.
//!
//! ```text
//! LD_PRELOAD=/path/to/libstrata.so program args...
//! strata run -- program args...          # the launcher does the same
//! ```
//!
//! The library exports the glibc allocation functions (see [`exports`]) and
//! serves them from one Strata [`Domain`](strata_core::Domain) with a heap per
//! thread (see [`front`]). It re-implements nothing of the algorithm: slices,
//! caches, purging and the checks on every free are the core's.
//!
//! # Layers
//!
//! - [`exports`]: the C ABI, glibc's corner cases (`malloc(0)`, overflow,
//!   alignment rules, `realloc(p, 0)`), and aborting on misuse.
//! - [`front`]: the process's domain, the thread heaps and their life cycle,
//!   the `fork` handlers.
//! - [`tls`]: the per-thread slot, in initial-exec TLS so that no lookup can
//!   call back into `malloc`.
//! - [`init`]: the constructor (environment, banner) and the destructor
//!   (statistics at exit).
//! - [`interpose`]: whose `malloc` the program uses, for the banner.
//! - [`output`]: writing to stderr without allocating.
//! - [`debug`]: `STRATA_DEBUG=1`, canaries and guard pages checked at free.
//!
//! # Rules for code in this crate
//!
//! Nothing here may allocate through Rust's global allocator (which is the
//! system `malloc`, that is, this library): no `Vec`, `String`, `format!` or
//! `std::env`. Nothing may call into libc while holding the domain lock.
//! Every libc call made while a thread sets up its heap may allocate, and is
//! served without a cache (see [`front`]).
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod debug;
pub mod exports;
pub mod front;
pub mod init;
pub mod interpose;
pub mod output;
pub mod tls;
