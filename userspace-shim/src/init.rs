//! Load and exit: the environment variables, the start-up banner and the
//! statistics printed at exit.
//!
//! The constructor runs from `.init_array`, whether the library was
//! preloaded or `dlopen`ed. `malloc` may be called before it (by ld.so, libc
//! or other libraries' constructors); such calls work with the defaults.
//! glibc passes `envp` to `.init_array` functions, so the environment is
//! read from it directly: no `getenv`, no allocation.
//!
//! See `ENVIRONMENT.md` for the variables.

use core::ffi::{c_char, c_int, CStr};
use core::fmt::Write as _;
use core::sync::atomic::{AtomicI32, Ordering};

use strata_core::page::{PAGE_SIZE, SLICE_SIZE};
use strata_core::size_class::CLASS_COUNT;

use crate::front::{self, DOMAIN};
use crate::output::Output;

/// Where to print the statistics at exit (`STRATA_STATS`), or -1.
///
/// A duplicate of stderr taken at start-up: many programs close stderr
/// before they exit (GNU tools do, to catch write errors).
static STATS_FD: AtomicI32 = AtomicI32::new(-1);

/// Lowest descriptor number for [`STATS_FD`], out of the way of programs
/// that expect the low numbers to be the ones they open next.
const STATS_FD_MIN: i32 = 100;

/// Settings read from the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Config {
    stats: bool,
    verbose: bool,
    purge_delay_ms: Option<u64>,
}

/// The constructor's signature under glibc.
type Constructor = extern "C" fn(c_int, *const *const c_char, *const *const c_char);

#[used]
#[link_section = ".init_array"]
static CONSTRUCTOR: Constructor = on_load;

#[used]
#[link_section = ".fini_array"]
static DESTRUCTOR: extern "C" fn() = on_exit;

extern "C" fn on_load(_argc: c_int, _argv: *const *const c_char, envp: *const *const c_char) {
    // Set up the loading thread's heap, and with it the fork handlers and the
    // thread-exit key, if no allocation did so already.
    front::ensure_thread_heap();
    // SAFETY: glibc passes the process environment, a null-terminated array
    // of C strings; fall back to `environ` if it did not.
    let config = unsafe { read_config(if envp.is_null() { environ() } else { envp }) };
    if let Some(delay) = config.purge_delay_ms {
        DOMAIN.set_purge_delay_ms(delay);
    }
    if config.stats {
        // SAFETY: duplicating a descriptor has no memory-safety preconditions.
        let fd = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, STATS_FD_MIN) };
        STATS_FD.store(fd, Ordering::Relaxed);
    }
    if config.verbose {
        banner(&config);
    }
}

extern "C" fn on_exit() {
    let fd = STATS_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        print_stats(fd);
    }
}

/// Prints the statistics table to `fd`.
pub fn print_stats(fd: i32) {
    let stats = front::stats();
    let mut out = Output::to_fd(fd);
    let _ = write!(out, "{stats}");
}

fn environ() -> *const *const c_char {
    extern "C" {
        static environ: *const *const c_char;
    }
    // SAFETY: libc's `environ` is always defined; it may be null.
    unsafe { environ }
}

/// Reads the `STRATA_*` variables.
///
/// # Safety
/// `envp` is null or a null-terminated array of pointers to C strings.
unsafe fn read_config(envp: *const *const c_char) -> Config {
    let mut config = Config { stats: false, verbose: false, purge_delay_ms: None };
    if envp.is_null() {
        return config;
    }
    let mut entry = envp;
    // SAFETY: the caller's contract.
    while let Some(&pointer) = unsafe { entry.as_ref() } {
        if pointer.is_null() {
            break;
        }
        // SAFETY: environment entries are C strings.
        let bytes = unsafe { CStr::from_ptr(pointer) }.to_bytes();
        if let Some(value) = bytes.strip_prefix(b"STRATA_STATS=") {
            config.stats = flag(value);
        } else if let Some(value) = bytes.strip_prefix(b"STRATA_VERBOSE=") {
            config.verbose = flag(value);
        } else if let Some(value) = bytes.strip_prefix(b"STRATA_PURGE_DELAY_MS=") {
            config.purge_delay_ms = milliseconds(value);
        }
        // SAFETY: still inside the null-terminated array.
        entry = unsafe { entry.add(1) };
    }
    config
}

/// A boolean variable: on for `1`, `yes`, `true` or `on` (any case).
fn flag(value: &[u8]) -> bool {
    [&b"1"[..], b"yes", b"true", b"on"].iter().any(|word| value.eq_ignore_ascii_case(word))
}

/// A delay in milliseconds; anything else is reported and ignored.
fn milliseconds(value: &[u8]) -> Option<u64> {
    let parsed = (!value.is_empty() && value.len() <= 19 && value.iter().all(u8::is_ascii_digit))
        .then(|| value.iter().fold(0u64, |n, &digit| n * 10 + u64::from(digit - b'0')));
    if parsed.is_none() {
        let mut out = Output::stderr();
        let _ = out.write_str("strata: ignoring STRATA_PURGE_DELAY_MS=");
        let _ = out.write_str(core::str::from_utf8(value).unwrap_or("(not UTF-8)"));
        let _ = out.write_str(": expected a whole number of milliseconds\n");
    }
    parsed
}

/// The start-up line printed with `STRATA_VERBOSE=1`.
fn banner(config: &Config) {
    let (path, interposed) = whereabouts();
    let mut out = Output::stderr();
    let _ = writeln!(
        out,
        "strata: {} {} loaded in pid {}; malloc interposed: {}; purge delay {} ms; stats at exit: {}; \
         pages {} KiB, slices {} KiB, {} size classes; thread slots in {} TLS",
        path,
        env!("CARGO_PKG_VERSION"),
        // SAFETY: getpid has no preconditions.
        unsafe { libc::getpid() },
        if interposed { "yes" } else { "no (loaded with dlopen: only callers that look symbols up here use Strata)" },
        DOMAIN.purge_delay_ms(),
        if config.stats { "on" } else { "off" },
        PAGE_SIZE / 1024,
        SLICE_SIZE / 1024,
        CLASS_COUNT,
        if cfg!(target_arch = "x86_64") { "initial-exec" } else { "general-dynamic" },
    );
}

/// The path of this library, and whether the process's `malloc` is ours.
fn whereabouts() -> (&'static str, bool) {
    // SAFETY: `dladdr` and `dlsym` only read the loader's tables; `info` is a
    // valid out-parameter and the names are C strings.
    unsafe {
        let mut ours: libc::Dl_info = core::mem::zeroed();
        let mut theirs: libc::Dl_info = core::mem::zeroed();
        let here = whereabouts as *const libc::c_void;
        if libc::dladdr(here, &mut ours) == 0 {
            return ("libstrata.so", false);
        }
        let malloc = libc::dlsym(libc::RTLD_DEFAULT, c"malloc".as_ptr());
        let interposed =
            !malloc.is_null() && libc::dladdr(malloc, &mut theirs) != 0 && theirs.dli_fbase == ours.dli_fbase;
        let path = if ours.dli_fname.is_null() {
            "libstrata.so"
        } else {
            CStr::from_ptr(ours.dli_fname).to_str().unwrap_or("libstrata.so")
        };
        (path, interposed)
    }
}
