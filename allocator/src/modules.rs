// The module tree of the core, shared with the kernel module's crate, which
// pulls this file in with `include!` beside its own fronts.

pub mod cache;
pub mod domain;
#[cfg(all(feature = "std", target_os = "linux"))]
mod futex;
pub mod lock;
pub mod page;
#[cfg(feature = "registry")]
pub mod registry;
mod remote;
pub mod size_class;
pub mod slice;
pub mod source;
pub mod stats;
mod sync;
