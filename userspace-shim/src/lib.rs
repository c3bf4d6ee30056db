//! The LD_PRELOAD shim (in progress).
