//! The allocators compared: glibc's own malloc, the Strata shim, and
//! Debian's jemalloc, tcmalloc and mimalloc, all put in front of glibc with
//! `LD_PRELOAD`.

use std::path::Path;

use strata_tests::real_programs::{require_file, Allocator};

/// Debian's peer allocators: name, library, package.
pub const PEERS: [(&str, &str, &str); 3] = [
    (
        "jemalloc",
        "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
        "libjemalloc2",
    ),
    (
        "tcmalloc",
        "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
        "libtcmalloc-minimal4",
    ),
    (
        "mimalloc",
        "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2.0",
        "libmimalloc2.0",
    ),
];

/// Every allocator name `--allocators` accepts, in table order.
pub const ALLOCATORS: [&str; 5] = ["glibc", "strata", "jemalloc", "tcmalloc", "mimalloc"];

/// Resolves an allocator name: builds the shim for `strata` (or takes
/// `STRATA_SHIM`), installs a peer's Debian package when missing (as root).
pub fn resolve(name: &str) -> Result<Allocator, String> {
    match name {
        "glibc" => Ok(Allocator::glibc()),
        "strata" => Allocator::strata(),
        _ => {
            let (_, library, package) = PEERS
                .iter()
                .find(|(peer, _, _)| *peer == name)
                .ok_or_else(|| format!("unknown allocator {name}"))?;
            Ok(Allocator::preloaded(
                name,
                require_file(Path::new(library), package)?,
            ))
        }
    }
}
