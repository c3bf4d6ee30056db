//! Helpers for the cross-crate integration tests.
pub mod real_programs;
pub mod shim_support;
