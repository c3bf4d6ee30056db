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
use crate::interpose;
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
    /// `STRATA_HUGE_PAGES`: on, every mapping is advised for huge pages;
    /// off, none is; unset (`None`), huge blocks that grow by `realloc`.
    huge_pages: Option<bool>,
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
    // SAFETY: glibc passes the process environment, a null-terminated array
    // of C strings; fall back to `environ` if it did not.
    let config = unsafe { read_config(if envp.is_null() { environ() } else { envp }) };
    // Before the loading thread's first page, if no allocation mapped one
    // already: the advice applies to the pages mapped from now on.
    match config.huge_pages {
        Some(true) => DOMAIN.source().set_huge_pages(true),
        Some(false) => DOMAIN.source().set_huge_blocks(false),
        None => {}
    }
    // Set up the loading thread's heap, and with it the fork handlers and the
    // thread-exit key, if no allocation did so already.
    front::ensure_thread_heap();
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
    let mut config = Config { stats: false, verbose: false, purge_delay_ms: None, huge_pages: None };
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
            config.stats = flag("STRATA_STATS", value);
        } else if let Some(value) = bytes.strip_prefix(b"STRATA_VERBOSE=") {
            config.verbose = flag("STRATA_VERBOSE", value);
        } else if let Some(value) = bytes.strip_prefix(b"STRATA_PURGE_DELAY_MS=") {
            config.purge_delay_ms = milliseconds(value);
        } else if let Some(value) = bytes.strip_prefix(b"STRATA_HUGE_PAGES=") {
            config.huge_pages = Some(flag("STRATA_HUGE_PAGES", value));
        }
        // SAFETY: still inside the null-terminated array.
        entry = unsafe { entry.add(1) };
    }
    config
}

/// The largest `STRATA_PURGE_DELAY_MS` accepted: 10^12 ms, about 31.7
/// years, which is "never" in practice while leaving the clock arithmetic
/// far from overflow.
pub const MAX_PURGE_DELAY_MS: u64 = 1_000_000_000_000;

/// A boolean variable: on for `1`, `yes`, `true` or `on`, off for `0`, `no`,
/// `false`, `off` or an empty value (any case). Anything else is reported
/// and taken as off.
fn flag(name: &str, value: &[u8]) -> bool {
    parse_flag(value).unwrap_or_else(|| {
        warn_flag(name, value);
        false
    })
}

/// The value of a boolean variable (see [`flag`]), or `None` if it is none
/// of the accepted words.
pub(crate) fn parse_flag(value: &[u8]) -> Option<bool> {
    let is = |words: &[&[u8]]| words.iter().any(|word| value.eq_ignore_ascii_case(word));
    if is(&[b"1", b"yes", b"true", b"on"]) {
        Some(true)
    } else if value.is_empty() || is(&[b"0", b"no", b"false", b"off"]) {
        Some(false)
    } else {
        None
    }
}

/// Reports a boolean variable with a value [`parse_flag`] does not accept.
pub(crate) fn warn_flag(name: &str, value: &[u8]) {
    warn(name, value, "expected 1, yes, true or on to turn it on, or 0, no, false or off; taken as off");
}

/// A delay in milliseconds, at most [`MAX_PURGE_DELAY_MS`]; anything else
/// is reported and ignored.
fn milliseconds(value: &[u8]) -> Option<u64> {
    const NAME: &str = "STRATA_PURGE_DELAY_MS";
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        warn(NAME, value, "expected a whole number of milliseconds");
        return None;
    }
    let parsed = value.iter().try_fold(0u64, |n, &digit| n.checked_mul(10)?.checked_add(u64::from(digit - b'0')));
    match parsed {
        Some(delay) if delay <= MAX_PURGE_DELAY_MS => Some(delay),
        _ => {
            warn_with(NAME, value, |out| {
                write!(out, "too large: the maximum is {MAX_PURGE_DELAY_MS} ms (about 31 years)")
            });
            None
        }
    }
}

/// Prints `strata: ignoring NAME=VALUE: REASON` as one line on stderr.
fn warn(name: &str, value: &[u8], reason: &str) {
    warn_with(name, value, |out| out.write_str(reason));
}

fn warn_with(name: &str, value: &[u8], reason: impl FnOnce(&mut Output) -> core::fmt::Result) {
    let mut out = Output::stderr();
    let _ = write!(out, "strata: ignoring {name}=");
    match core::str::from_utf8(value) {
        // Control characters would break the one line.
        Ok(text) => text.chars().for_each(|c| {
            let _ = out.write_char(if c.is_control() { '?' } else { c });
        }),
        Err(_) => {
            let _ = out.write_str("(not UTF-8)");
        }
    }
    let _ = out.write_str(": ");
    let _ = reason(&mut out);
    let _ = out.write_str("\n");
}

/// The start-up line printed with `STRATA_VERBOSE=1`.
fn banner(config: &Config) {
    let here = banner as *const () as usize;
    let interposition = interpose::interposition(here);
    let mut out = Output::stderr();
    let _ = writeln!(
        out,
        "strata: {} {} loaded in pid {}; malloc interposed: {}; purge delay {} ms; stats at exit: {}; debug: {}; \
         huge pages: {}; hardening: {}; pages {} KiB, slices {} KiB, {} size classes; thread slots in {} TLS",
        path(here),
        env!("CARGO_PKG_VERSION"),
        // SAFETY: getpid has no preconditions.
        unsafe { libc::getpid() },
        interposition,
        DOMAIN.purge_delay_ms(),
        if config.stats { "on" } else { "off" },
        if crate::debug::enabled() { "on" } else { "off" },
        match (DOMAIN.source().huge_pages(), DOMAIN.source().huge_blocks()) {
            (true, _) => "asked for",
            (false, true) => "for huge blocks grown by realloc",
            (false, false) => "off",
        },
        if strata_core::HARDENED { "on" } else { "off (built with --cfg strata_unhardened, for measurement only)" },
        PAGE_SIZE / 1024,
        SLICE_SIZE / 1024,
        CLASS_COUNT,
        if cfg!(target_arch = "x86_64") { "initial-exec" } else { "general-dynamic" },
    );
}

/// The path this library was loaded by; `here` is an address inside it.
fn path(here: usize) -> &'static str {
    // SAFETY: `dladdr` only reads the loader's tables; `info` is a valid
    // out-parameter, and the name it returns is a C string that lives as
    // long as the library, which is never unloaded (NODELETE).
    unsafe {
        let mut info: libc::Dl_info = core::mem::zeroed();
        if libc::dladdr(here as *const libc::c_void, &mut info) == 0 || info.dli_fname.is_null() {
            return "libstrata.so";
        }
        CStr::from_ptr(info.dli_fname).to_str().unwrap_or("libstrata.so")
    }
}
