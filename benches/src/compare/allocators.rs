//! The allocators compared: glibc's own malloc, the Strata shim, and
//! Debian's jemalloc, tcmalloc and mimalloc, all put in front of glibc with
//! `LD_PRELOAD`; and, for measuring what Strata's default hardening costs,
//! the shim built without it.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use strata_tests::real_programs::{cargo_build_shim, require_file, target_dir, Allocator};

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

/// The allocators compared by default, in table order.
pub const ALLOCATORS: [&str; 5] = ["glibc", "strata", "jemalloc", "tcmalloc", "mimalloc"];

/// The shim built with `--cfg strata_unhardened` (no encoded free-list
/// links, no shuffled carving), which `--allocators` also accepts: run
/// beside `strata`, the report gives what the default hardening costs.
/// For measurement only; it is never shipped.
pub const UNHARDENED: &str = "strata-unhardened";

/// Whether `--allocators` accepts `name`.
pub fn is_known(name: &str) -> bool {
    ALLOCATORS.contains(&name) || name == UNHARDENED
}

/// Resolves an allocator name: builds the shim for `strata` (or takes
/// `STRATA_SHIM`), installs a peer's Debian package when missing (as root).
pub fn resolve(name: &str) -> Result<Allocator, String> {
    match name {
        "glibc" => Ok(Allocator::glibc()),
        "strata" => Allocator::strata(),
        UNHARDENED => Ok(Allocator::preloaded(UNHARDENED, build_unhardened_shim()?)),
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

/// Builds the shim with `--cfg strata_unhardened` into
/// `<target>/unhardened/` (its own target directory, as the flag changes
/// every crate of the build), once per process, and returns its path.
fn build_unhardened_shim() -> Result<PathBuf, String> {
    static SHIM: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    SHIM.get_or_init(|| {
        let target = target_dir().join("unhardened");
        let flags = match std::env::var("RUSTFLAGS") {
            Ok(flags) if !flags.trim().is_empty() => format!("{flags} --cfg strata_unhardened"),
            _ => "--cfg strata_unhardened".to_string(),
        };
        cargo_build_shim(
            &target,
            &[("CARGO_TARGET_DIR", target.as_os_str()), ("RUSTFLAGS", OsStr::new(&flags))],
        )
    })
    .clone()
}
