//! `strata-bench soak`: Strata under long, mixed, multi-threaded load, as
//! programs run it: through the C `malloc` API with `libstrata.so`
//! preloaded.
//!
//! ```text
//! strata-bench soak --minutes 5              # five minutes, 8 worker threads
//! strata-bench soak --seconds 60 --threads 4 # the short run of the test command
//! strata-bench soak --help
//! ```
//!
//! # Running on Strata
//!
//! The command re-executes itself with `LD_PRELOAD` naming `libstrata.so`,
//! which it builds first (`cargo build --release -p strata-shim`, into the
//! target directory it was itself built in) unless `--library PATH` or
//! `STRATA_LIBRARY` names one. Before any load it checks that Strata serves
//! `malloc`: `strata_alloc_bulk`, a symbol only Strata exports, must be
//! found, and `malloc` must resolve into the same library. Otherwise it
//! stops with a message and exit status 2.
//!
//! # The load
//!
//! - `--threads` worker slots. Each runs a worker thread that lives for a
//!   random number of operations (at most 1.5 s) and ends; the main thread
//!   then starts another in its slot (thread churn).
//! - Workers allocate with `malloc`, `calloc`, `posix_memalign` and
//!   `aligned_alloc`, resize with `realloc` and free with `free`, at random
//!   sizes: small classes (most), spans (up to 2 MiB) and huge mappings (up
//!   to 12 MiB).
//! - Objects are handed between threads through mailboxes, so most threads
//!   free objects that another thread allocated, often one that has exited
//!   since.
//! - A fork thread forks every 50 to 250 ms while the workers run. The child
//!   checks the objects it inherited from the forking thread, frees them,
//!   allocates, checks and frees objects of every kind, and exits with a
//!   status the parent checks.
//! - The main thread calls `malloc_trim(0)` every half second; workers call
//!   it now and then too.
//!
//! Every object carries a pattern derived from its id and offset. It is
//! checked in full before the object is freed or handed over, and after a
//! `realloc` in the part the resize kept; `malloc_usable_size` is checked
//! against the requested size, `calloc` memory for zeroes and aligned
//! blocks for their alignment. Any mismatch counts as a corruption.
//!
//! # The end
//!
//! Every object is freed, `malloc_trim(0)` runs, and the run checks:
//! - corruptions, failed allocations and failed fork children: 0;
//! - Strata's live bytes (`mallinfo2().uordblks`, its `bytes_live`) are
//!   exactly those before the load: the load left 0 live bytes;
//! - resident memory (`VmRSS`) fell back to within [`RSS_KEEP_DIVISOR`]⁻¹ of
//!   the growth to the peak (`VmHWM`) above the resident memory before the
//!   load.
//!
//! It prints one `name: value` line per figure and exits 0 only if every
//! check passed. `--plant-corruption` flips one byte of one object after it
//! is filled, to show the checks at work: that run must report the
//! corruption and fail.

use std::ffi::{CStr, OsString};
use std::fmt::Write as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::rng::Rng;

/// The variable marking the re-executed process, so that a preload that did
/// not take is reported instead of re-executed forever.
const REEXEC_MARK: &str = "STRATA_SOAK_PRELOADED";

/// End resident memory may keep at most `1 / RSS_KEEP_DIVISOR` of the growth
/// from the resident memory before the load to the peak.
pub const RSS_KEEP_DIVISOR: u64 = 4;

/// Largest small size class (`strata::size_class::MAX_SMALL`).
const MAX_SMALL: usize = strata::size_class::MAX_SMALL;
/// Largest span (`strata::page::MAX_SPAN`): anything above is a huge mapping.
const MAX_SPAN: usize = strata::page::MAX_SPAN;
/// Largest huge object the load allocates.
const MAX_HUGE: usize = 12 << 20;

/// Mailbox length beyond which a worker frees an object instead of handing
/// it over.
const MAILBOX_LIMIT: usize = 2048;

/// Objects the fork thread keeps for its children to check.
const FORK_KEEP: usize = 48;

const USAGE: &str =
    "usage: strata-bench soak [--minutes N | --seconds N] [--threads N] [--seed N] \
                     [--max-live-mib N] [--library PATH] [--plant-corruption]";

/// The settings of one soak run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// How long the load runs.
    pub duration: Duration,
    /// Worker slots (threads running at once, not counting the fork thread).
    pub threads: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Upper bound on the bytes the load keeps live at once.
    pub max_live: usize,
    /// `libstrata.so` to preload, instead of building it.
    pub library: Option<PathBuf>,
    /// Flip one byte of one object after filling it, to show that the
    /// checks catch it (the run must then fail).
    pub plant_corruption: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(60),
            threads: 8,
            seed: 1,
            max_live: 256 << 20,
            library: None,
            plant_corruption: false,
        }
    }
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// Run the soak.
    Run(Options),
    /// Print the usage.
    Help,
}

/// Parses the arguments after `soak`.
pub fn parse(args: &[String]) -> Result<Request, String> {
    let mut options = Options::default();
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            return Ok(Request::Help);
        }
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |text: &String| -> Result<u64, String> {
            text.parse::<u64>()
                .map_err(|_| format!("{flag}: `{text}` is not a whole number"))
        };
        match flag.as_str() {
            "--minutes" => {
                options.duration = Duration::from_secs(number(value()?)?.saturating_mul(60))
            }
            "--seconds" => options.duration = Duration::from_secs(number(value()?)?),
            "--threads" => {
                let threads = number(value()?)?;
                if !(1..=256).contains(&threads) {
                    return Err(format!("--threads: {threads} is not between 1 and 256"));
                }
                options.threads = threads as usize;
            }
            "--seed" => options.seed = number(value()?)?,
            "--max-live-mib" => {
                let mib = number(value()?)?;
                if !(16..=1 << 20).contains(&mib) {
                    return Err(format!(
                        "--max-live-mib: {mib} is not between 16 and 1048576"
                    ));
                }
                options.max_live = (mib as usize) << 20;
            }
            "--library" => options.library = Some(PathBuf::from(value()?)),
            "--plant-corruption" => options.plant_corruption = true,
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    if options.duration.is_zero() {
        return Err("the duration must be at least one second".into());
    }
    Ok(Request::Run(options))
}

/// Runs `strata-bench soak` with the arguments after the command name.
pub fn main(args: Vec<String>) -> ExitCode {
    let options = match parse(&args) {
        Ok(Request::Run(options)) => options,
        Ok(Request::Help) => {
            println!("{USAGE}");
            println!("Runs the soak load under libstrata.so (see benches/README.md); exit status 0 when every check passed.");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("strata-bench soak: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match strata_library_serving_malloc() {
        Ok(library) => {
            let report = run(&options, &library);
            print!("{}", report.text);
            if report.passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(why) if std::env::var_os(REEXEC_MARK).is_some() => {
            eprintln!(
                "strata-bench soak: Strata is not serving malloc in this process although LD_PRELOAD={}: {why}",
                std::env::var("LD_PRELOAD").unwrap_or_default()
            );
            ExitCode::from(2)
        }
        Err(_) => match reexec_preloaded(&options, &args) {
            // `exec` returns only on failure.
            Err(message) => {
                eprintln!("strata-bench soak: {message}");
                ExitCode::from(2)
            }
        },
    }
}

// ----- running on Strata -----------------------------------------------------

/// The path of the library serving `malloc` if it is Strata, or why not.
fn strata_library_serving_malloc() -> Result<String, String> {
    // SAFETY: dlsym and dladdr only read the loader's tables; the names are
    // C strings, the out-parameters valid.
    unsafe {
        let strata = libc::dlsym(libc::RTLD_DEFAULT, c"strata_alloc_bulk".as_ptr());
        if strata.is_null() {
            return Err("no library in the process exports strata_alloc_bulk".into());
        }
        let malloc = libc::dlsym(libc::RTLD_DEFAULT, c"malloc".as_ptr());
        let (mut strata_info, mut malloc_info): (libc::Dl_info, libc::Dl_info) =
            (std::mem::zeroed(), std::mem::zeroed());
        if malloc.is_null()
            || libc::dladdr(strata, &mut strata_info) == 0
            || libc::dladdr(malloc, &mut malloc_info) == 0
        {
            return Err("cannot locate malloc".into());
        }
        let name = |info: &libc::Dl_info| {
            if info.dli_fname.is_null() {
                "?".to_string()
            } else {
                CStr::from_ptr(info.dli_fname)
                    .to_string_lossy()
                    .into_owned()
            }
        };
        if strata_info.dli_fbase != malloc_info.dli_fbase {
            return Err(format!(
                "malloc comes from {}, not from {}",
                name(&malloc_info),
                name(&strata_info)
            ));
        }
        Ok(name(&strata_info))
    }
}

/// Re-executes this program with `libstrata.so` first in `LD_PRELOAD`.
/// Returns only on failure.
fn reexec_preloaded(
    options: &Options,
    args: &[String],
) -> Result<std::convert::Infallible, String> {
    let library = match (&options.library, std::env::var_os("STRATA_LIBRARY")) {
        (Some(path), _) => path.clone(),
        (None, Some(path)) => PathBuf::from(path),
        (None, None) => build_library()?,
    };
    let library = library
        .canonicalize()
        .map_err(|e| format!("cannot use {}: {e}", library.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut preload = OsString::from(library.as_os_str());
    if let Some(existing) = std::env::var_os("LD_PRELOAD").filter(|value| !value.is_empty()) {
        preload.push(":");
        preload.push(existing);
    }
    let error = Command::new(&exe)
        .arg("soak")
        .args(args)
        .env("LD_PRELOAD", &preload)
        .env(REEXEC_MARK, "1")
        .exec();
    Err(format!(
        "cannot re-execute {} with LD_PRELOAD={}: {error}",
        exe.display(),
        preload.to_string_lossy()
    ))
}

/// Builds `libstrata.so` (release) into the target directory this program
/// was built in, and returns its path.
fn build_library() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    // <target>/<profile>/strata-bench
    let target = exe
        .ancestors()
        .nth(2)
        .ok_or_else(|| format!("{} is not inside a cargo target directory", exe.display()))?;
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("benches/ sits in the workspace");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(&cargo)
        .args(["build", "--release", "-p", "strata-shim"])
        .current_dir(workspace)
        .env("CARGO_TARGET_DIR", target)
        .output()
        .map_err(|e| {
            format!(
                "cannot run {} to build libstrata.so ({e}); build it and pass --library PATH",
                Path::new(&cargo).display()
            )
        })?;
    if !output.status.success() {
        return Err(format!(
            "cargo build --release -p strata-shim failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let library = target.join("release/libstrata.so");
    if !library.is_file() {
        return Err(format!("the build did not produce {}", library.display()));
    }
    Ok(library)
}

// ----- patterns ----------------------------------------------------------------

/// The per-object key every pattern word is derived from (SplitMix64).
fn key(id: u64) -> u64 {
    let mut z = id.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The 8 pattern bytes at word `index` (offsets `8 * index ..`).
#[inline(always)]
fn pattern_word(key: u64, index: usize) -> u64 {
    key ^ (index as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93)
}

/// The pattern byte at `offset`.
#[inline(always)]
fn pattern_byte(key: u64, offset: usize) -> u8 {
    pattern_word(key, offset / 8).to_le_bytes()[offset % 8]
}

/// Writes object `id`'s pattern over `[from, to)` of the block at `base`.
///
/// # Safety
/// `base` is valid for writes of `to` bytes and 8-byte aligned.
unsafe fn fill(base: *mut u8, id: u64, from: usize, to: usize) {
    let key = key(id);
    let mut offset = from;
    // SAFETY: every write is inside `[from, to)`; word writes are aligned.
    unsafe {
        while offset < to && !offset.is_multiple_of(8) {
            base.add(offset).write(pattern_byte(key, offset));
            offset += 1;
        }
        while offset + 8 <= to {
            base.add(offset)
                .cast::<u64>()
                .write(pattern_word(key, offset / 8).to_le());
            offset += 8;
        }
        while offset < to {
            base.add(offset).write(pattern_byte(key, offset));
            offset += 1;
        }
    }
}

/// The first offset in `[from, to)` of the block at `base` that does not
/// hold object `id`'s pattern.
///
/// # Safety
/// `base` is valid for reads of `to` bytes and 8-byte aligned.
unsafe fn first_mismatch(base: *const u8, id: u64, from: usize, to: usize) -> Option<usize> {
    let key = key(id);
    let mut offset = from;
    // SAFETY: every read is inside `[from, to)`; word reads are aligned.
    unsafe {
        while offset < to && !offset.is_multiple_of(8) {
            if base.add(offset).read() != pattern_byte(key, offset) {
                return Some(offset);
            }
            offset += 1;
        }
        while offset + 8 <= to {
            let expected = pattern_word(key, offset / 8).to_le();
            if base.add(offset).cast::<u64>().read() != expected {
                let got = base.add(offset).cast::<[u8; 8]>().read();
                let want = expected.to_ne_bytes();
                return Some(offset + (0..8).find(|&i| got[i] != want[i]).unwrap_or(0));
            }
            offset += 8;
        }
        while offset < to {
            if base.add(offset).read() != pattern_byte(key, offset) {
                return Some(offset);
            }
            offset += 1;
        }
    }
    None
}

// ----- objects and shared state -------------------------------------------------

/// One live block of the load: `size` bytes at `ptr` holding object `id`'s
/// pattern.
#[derive(Debug)]
struct Object {
    ptr: *mut u8,
    size: usize,
    id: u64,
}

// SAFETY: an object is a plain heap block owned by whoever holds the
// `Object`; moving it to another thread moves that ownership.
unsafe impl Send for Object {}

/// Counters shared by every thread.
#[derive(Default)]
struct Counters {
    allocations: AtomicU64,
    frees: AtomicU64,
    reallocs: AtomicU64,
    checks: AtomicU64,
    bytes_allocated: AtomicU64,
    handoffs: AtomicU64,
    foreign_frees: AtomicU64,
    threads_started: AtomicU64,
    forks: AtomicU64,
    fork_failures: AtomicU64,
    trims: AtomicU64,
    corruptions: AtomicU64,
    failed_allocations: AtomicU64,
}

/// State shared by the threads of one run.
struct Shared {
    stop: AtomicBool,
    next_id: AtomicU64,
    /// Bytes (at their requested size) in live objects of the load.
    live_bytes: AtomicUsize,
    max_live: usize,
    mailboxes: Vec<Mutex<Vec<Object>>>,
    counters: Counters,
    /// The first corruption reports, for the summary.
    reports: Mutex<Vec<String>>,
    /// Set by `--plant-corruption` until one object has been corrupted.
    plant_corruption: AtomicBool,
}

/// Corruption reports kept in full.
const MAX_REPORTS: usize = 20;

impl Shared {
    fn new(options: &Options) -> Self {
        Self {
            stop: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            live_bytes: AtomicUsize::new(0),
            max_live: options.max_live,
            mailboxes: (0..options.threads)
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
            counters: Counters::default(),
            reports: Mutex::new(Vec::new()),
            plant_corruption: AtomicBool::new(options.plant_corruption),
        }
    }

    fn corruption(&self, what: String) {
        self.counters.corruptions.fetch_add(1, Ordering::Relaxed);
        let mut reports = self.reports.lock().unwrap();
        if reports.len() < MAX_REPORTS {
            eprintln!("strata-bench soak: CORRUPTION: {what}");
            reports.push(what);
        }
    }

    fn failed(&self, what: String) {
        self.counters
            .failed_allocations
            .fetch_add(1, Ordering::Relaxed);
        let mut reports = self.reports.lock().unwrap();
        if reports.len() < MAX_REPORTS {
            eprintln!("strata-bench soak: FAILED ALLOCATION: {what}");
            reports.push(what);
        }
    }

    /// Whether `size` more live bytes stay within the budget; reserves them
    /// if so.
    fn reserve(&self, size: usize) -> bool {
        let before = self.live_bytes.fetch_add(size, Ordering::Relaxed);
        if before + size > self.max_live {
            self.live_bytes.fetch_sub(size, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn unreserve(&self, size: usize) {
        self.live_bytes.fetch_sub(size, Ordering::Relaxed);
    }

    fn new_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// A size for a new object: mostly small classes, some spans, a few huge.
fn random_size(rng: &mut Rng) -> usize {
    match rng.below(1000) {
        0..=549 => 1 + rng.below(256),
        550..=849 => 257 + rng.below(4096 - 257),
        850..=979 => 4097 + rng.below(MAX_SMALL - 4096),
        980..=997 => MAX_SMALL + 1 + rng.below(MAX_SPAN - MAX_SMALL),
        _ => MAX_SPAN + 1 + rng.below(MAX_HUGE - MAX_SPAN),
    }
}

/// Checks `object`'s pattern over `[0, size)` and its usable size; counts
/// and reports a corruption. Returns whether it was intact.
fn verify(shared: &Shared, object: &Object, what: &str) -> bool {
    shared.counters.checks.fetch_add(1, Ordering::Relaxed);
    // SAFETY: a live block of at least `size` bytes, 16-byte aligned.
    let bad = unsafe { first_mismatch(object.ptr, object.id, 0, object.size) };
    if let Some(offset) = bad {
        // SAFETY: as above; `offset < size`.
        let got = unsafe { object.ptr.add(offset).read() };
        shared.corruption(format!(
            "{what}: object {} of {} bytes at {:p}: byte {offset} is {got:#04x}, expected {:#04x}",
            object.id,
            object.size,
            object.ptr,
            pattern_byte(key(object.id), offset)
        ));
        return false;
    }
    // SAFETY: a live block from malloc.
    let usable = unsafe { libc::malloc_usable_size(object.ptr.cast()) };
    if usable < object.size {
        shared.corruption(format!(
            "{what}: object {} at {:p}: malloc_usable_size {usable} < {} requested",
            object.id, object.ptr, object.size
        ));
        return false;
    }
    true
}

/// Checks and frees `object`. A corrupted object is not freed (it may be
/// owned twice); it is counted and stays allocated.
fn release(shared: &Shared, object: Object, foreign: bool) {
    if verify(shared, &object, "before free") {
        // SAFETY: a live block from malloc, freed once.
        unsafe { libc::free(object.ptr.cast()) };
        shared.unreserve(object.size);
        shared.counters.frees.fetch_add(1, Ordering::Relaxed);
        if foreign {
            shared
                .counters
                .foreign_frees
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Allocates a new object of a random size and kind, fills and returns it;
/// `None` over the budget (or on a failed allocation, which is counted).
fn allocate(shared: &Shared, rng: &mut Rng) -> Option<Object> {
    let size = random_size(rng);
    if !shared.reserve(size) {
        return None;
    }
    let kind = rng.below(100);
    let mut align = 16;
    // SAFETY: plain C allocation calls; the results are checked.
    let ptr: *mut u8 = unsafe {
        match kind {
            0..=79 => libc::malloc(size).cast(),
            80..=91 => libc::calloc(1, size).cast(),
            92..=95 => {
                align = 1 << (4 + rng.below(9)); // 16 to 4096
                let mut out = std::ptr::null_mut();
                if libc::posix_memalign(&mut out, align, size) == 0 {
                    out.cast()
                } else {
                    std::ptr::null_mut()
                }
            }
            _ => {
                align = 1 << (5 + rng.below(8)); // 32 to 4096
                libc::aligned_alloc(align, size).cast()
            }
        }
    };
    if ptr.is_null() {
        shared.unreserve(size);
        shared.failed(format!(
            "allocation of {size} bytes (kind {kind}, alignment {align}) returned NULL"
        ));
        return None;
    }
    let id = shared.new_id();
    shared.counters.allocations.fetch_add(1, Ordering::Relaxed);
    shared
        .counters
        .bytes_allocated
        .fetch_add(size as u64, Ordering::Relaxed);
    if !(ptr as usize).is_multiple_of(align) {
        shared.corruption(format!("object {id}: {ptr:p} is not aligned to {align}"));
    }
    if (80..=91).contains(&kind) {
        // SAFETY: `size` bytes just allocated.
        let bytes = unsafe { std::slice::from_raw_parts(ptr, size) };
        if let Some(offset) = bytes.iter().position(|&b| b != 0) {
            shared.corruption(format!(
                "calloc({size}) at {ptr:p}: byte {offset} is {:#04x}",
                bytes[offset]
            ));
        }
    }
    // SAFETY: `size` bytes just allocated, 16-byte aligned at least.
    unsafe { fill(ptr, id, 0, size) };
    if shared.plant_corruption.load(Ordering::Relaxed)
        && shared.plant_corruption.swap(false, Ordering::Relaxed)
    {
        // SAFETY: inside the block just filled.
        unsafe { *ptr.add(size / 2) ^= 0x40 };
    }
    Some(Object { ptr, size, id })
}

/// Resizes `object` to a random size, checking the kept part; on failure
/// the object is unchanged. Returns `false` if the object was found
/// corrupted: the caller then drops it without freeing it (it may be owned
/// twice), so that it is counted once.
fn resize(shared: &Shared, rng: &mut Rng, object: &mut Object) -> bool {
    let new_size = random_size(rng);
    let growth = new_size.saturating_sub(object.size);
    if growth > 0 && !shared.reserve(growth) {
        return true;
    }
    if !verify(shared, object, "before realloc") {
        shared.unreserve(growth);
        return false;
    }
    // SAFETY: a live block from malloc; on success only the result is used.
    let moved: *mut u8 = unsafe { libc::realloc(object.ptr.cast(), new_size).cast() };
    if moved.is_null() {
        shared.unreserve(growth);
        shared.failed(format!(
            "realloc of object {} from {} to {new_size} bytes returned NULL",
            object.id, object.size
        ));
        return true;
    }
    shared.counters.reallocs.fetch_add(1, Ordering::Relaxed);
    let (old, old_size) = (object.ptr, object.size);
    object.ptr = moved;
    object.size = new_size;
    let kept = old_size.min(new_size);
    // SAFETY: `new_size >= kept` bytes at `moved`.
    if let Some(offset) = unsafe { first_mismatch(moved, object.id, 0, kept) } {
        shared.corruption(format!(
            "realloc of object {} from {old_size} to {new_size} bytes ({old:p} to {moved:p}): byte {offset} of the kept {kept} changed",
            object.id
        ));
        return false;
    }
    if growth > 0 {
        shared
            .counters
            .bytes_allocated
            .fetch_add(growth as u64, Ordering::Relaxed);
        // SAFETY: `new_size` bytes at `moved`.
        unsafe { fill(moved, object.id, old_size, new_size) };
    } else {
        shared.unreserve(old_size - new_size);
    }
    true
}

// ----- the threads -------------------------------------------------------------------

/// One worker's life: `lifetime` operations on its own objects and those
/// handed to its slot, then it frees or hands over what it holds and ends.
fn worker(shared: &Shared, slot: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    // A worker ends after a number of operations or a time, whichever
    // comes first, so threads come and go however fast the machine is.
    let lifetime = 500 + rng.below(8_000);
    let deadline = Instant::now() + Duration::from_millis(100 + rng.below(1_400) as u64);
    let keep = 50 + rng.below(1500);
    let mut objects: Vec<Object> = Vec::with_capacity(keep + 64);
    let slots = shared.mailboxes.len();
    for step in 0..lifetime {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        if step % 32 == 0 {
            if Instant::now() >= deadline {
                break;
            }
            let arrived = std::mem::take(&mut *shared.mailboxes[slot].lock().unwrap());
            for object in arrived {
                if objects.len() < keep + 64 && rng.below(2) == 0 {
                    if verify(shared, &object, "on arrival") {
                        objects.push(object);
                    }
                } else {
                    release(shared, object, true);
                }
            }
        }
        let choice = rng.below(100);
        if (choice < 50 && objects.len() < keep) || objects.is_empty() {
            if let Some(object) = allocate(shared, &mut rng) {
                objects.push(object);
            } else if let Some(object) = take_random(&mut objects, &mut rng) {
                release(shared, object, false);
            }
        } else if choice < 75 {
            let object = take_random(&mut objects, &mut rng).expect("not empty");
            release(shared, object, false);
        } else if choice < 87 {
            let index = rng.below(objects.len());
            if !resize(shared, &mut rng, &mut objects[index]) {
                // Corrupted: out of circulation, never freed.
                let _corrupted = objects.swap_remove(index);
            }
        } else if choice < 99 {
            let object = take_random(&mut objects, &mut rng).expect("not empty");
            hand_over(shared, &mut rng, slot, slots, object);
        } else if rng.below(500) == 0 {
            // SAFETY: no preconditions.
            unsafe { libc::malloc_trim(0) };
            shared.counters.trims.fetch_add(1, Ordering::Relaxed);
        }
    }
    let stopping = shared.stop.load(Ordering::Relaxed);
    for object in objects {
        if !stopping && rng.below(2) == 0 {
            hand_over(shared, &mut rng, slot, slots, object);
        } else {
            release(shared, object, false);
        }
    }
}

/// Removes a random object of `objects`.
fn take_random(objects: &mut Vec<Object>, rng: &mut Rng) -> Option<Object> {
    if objects.is_empty() {
        None
    } else {
        Some(objects.swap_remove(rng.below(objects.len())))
    }
}

/// Checks `object` and puts it in another slot's mailbox, or frees it when
/// that mailbox is full.
fn hand_over(shared: &Shared, rng: &mut Rng, slot: usize, slots: usize, object: Object) {
    if !verify(shared, &object, "before hand-over") {
        return;
    }
    let target = if slots > 1 {
        (slot + 1 + rng.below(slots - 1)) % slots
    } else {
        slot
    };
    let mut mailbox = shared.mailboxes[target].lock().unwrap();
    if mailbox.len() < MAILBOX_LIMIT {
        mailbox.push(object);
        shared.counters.handoffs.fetch_add(1, Ordering::Relaxed);
    } else {
        drop(mailbox);
        release(shared, object, false);
    }
}

/// Exit statuses of a fork child.
const CHILD_OK: i32 = 0;
const CHILD_CORRUPT_INHERITED: i32 = 3;
const CHILD_CORRUPT_OWN: i32 = 4;
const CHILD_NO_MEMORY: i32 = 5;

/// The fork thread: keeps [`FORK_KEEP`] objects, replaces some of them and
/// forks, every 50 to 250 ms, until the run stops.
fn forker(shared: &Shared, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut kept: Vec<Object> = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        for _ in 0..8 {
            if kept.len() >= FORK_KEEP {
                let object = take_random(&mut kept, &mut rng).expect("not empty");
                release(shared, object, false);
            }
            if let Some(object) = allocate(shared, &mut rng) {
                kept.push(object);
            }
        }
        let child_seed = rng.next_u64();
        // SAFETY: the child only allocates, reads and writes memory and
        // calls `_exit` (see `fork_child`), all safe after `fork` with
        // Strata's fork handlers.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            fork_child(&kept, child_seed);
        }
        if pid < 0 {
            shared
                .counters
                .fork_failures
                .fetch_add(1, Ordering::Relaxed);
            let error = std::io::Error::last_os_error();
            shared
                .reports
                .lock()
                .unwrap()
                .push(format!("fork failed: {error}"));
            continue;
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        shared.counters.forks.fetch_add(1, Ordering::Relaxed);
        let fine =
            waited == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == CHILD_OK;
        if !fine {
            shared
                .counters
                .fork_failures
                .fetch_add(1, Ordering::Relaxed);
            let what = if waited != pid {
                "waitpid failed".to_string()
            } else if libc::WIFSIGNALED(status) {
                format!("killed by signal {}", libc::WTERMSIG(status))
            } else {
                match libc::WEXITSTATUS(status) {
                    CHILD_CORRUPT_INHERITED => "found an inherited object corrupted".into(),
                    CHILD_CORRUPT_OWN => "found one of its own objects corrupted".into(),
                    CHILD_NO_MEMORY => "got NULL from malloc".into(),
                    code => format!("exited with status {code}"),
                }
            };
            let message = format!("fork child {pid}: {what}");
            eprintln!("strata-bench soak: FORK CHILD FAILED: {message}");
            shared.reports.lock().unwrap().push(message);
        }
        thread::sleep(Duration::from_millis(50 + rng.below(200) as u64));
    }
    for object in kept {
        release(shared, object, false);
    }
}

/// The fork child: checks and frees the inherited objects, then allocates,
/// checks and frees objects of every kind; exits with a `CHILD_*` status.
/// Uses nothing but `malloc`, `free`, `realloc`, memory and `_exit`: other
/// threads of the parent may have held any other lock at the fork.
fn fork_child(inherited: &[Object], seed: u64) -> ! {
    let exit = |code: i32| -> ! {
        // SAFETY: ends the child without running the parent's exit handlers.
        unsafe { libc::_exit(code) }
    };
    for object in inherited {
        // SAFETY: the child's copy of a live block of the forking thread.
        if unsafe { first_mismatch(object.ptr, object.id, 0, object.size) }.is_some() {
            exit(CHILD_CORRUPT_INHERITED);
        }
        // SAFETY: the child's copy, freed once here.
        unsafe { libc::free(object.ptr.cast()) };
    }
    let mut rng = Rng::new(seed);
    let mut own = [(std::ptr::null_mut::<u8>(), 0usize, 0u64); 64];
    for (index, entry) in own.iter_mut().enumerate() {
        let size = match index {
            0 => MAX_SMALL + 1 + rng.below(MAX_SPAN - MAX_SMALL),
            1 => MAX_SPAN + 1 + rng.below(4 << 20),
            _ => 1 + rng.below(8192),
        };
        // SAFETY: a plain allocation, checked.
        let ptr: *mut u8 = unsafe { libc::malloc(size).cast() };
        if ptr.is_null() {
            exit(CHILD_NO_MEMORY);
        }
        let id = u64::MAX - index as u64 - (seed << 8);
        // SAFETY: `size` bytes just allocated.
        unsafe { fill(ptr, id, 0, size) };
        *entry = (ptr, size, id);
    }
    for &(ptr, size, id) in &own {
        // SAFETY: a live block of `size` bytes, freed once.
        unsafe {
            if first_mismatch(ptr, id, 0, size).is_some() {
                exit(CHILD_CORRUPT_OWN);
            }
            libc::free(ptr.cast());
        }
    }
    exit(CHILD_OK)
}

// ----- the run -----------------------------------------------------------------------

/// A field of `/proc/self/status`, in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Strata's live bytes (`bytes_live`), through `mallinfo2`.
fn strata_live_bytes() -> usize {
    // SAFETY: no preconditions.
    unsafe { libc::mallinfo2() }.uordblks
}

/// The outcome of a run: the summary text, and whether every check passed.
#[derive(Debug)]
pub struct Report {
    /// The `name: value` lines.
    pub text: String,
    /// Whether every check passed.
    pub passed: bool,
}

/// Runs the load with `options` in this process, on Strata at `library`.
fn run(options: &Options, library: &str) -> Report {
    println!(
        "soak: {} s, {} worker threads, seed {}, at most {} MiB live; malloc served by {library}",
        options.duration.as_secs(),
        options.threads,
        options.seed,
        options.max_live >> 20
    );
    warm_up(options.threads + 2);
    // SAFETY: no preconditions.
    unsafe { libc::malloc_trim(0) };
    let live_before = strata_live_bytes();
    let rss_before = status_kib("VmRSS:");

    let shared = Arc::new(Shared::new(options));
    let mut seeds = Rng::new(options.seed);
    let started = Instant::now();
    let spawn_worker = |slot: usize, seed: u64| {
        let shared = Arc::clone(&shared);
        shared
            .counters
            .threads_started
            .fetch_add(1, Ordering::Relaxed);
        thread::spawn(move || worker(&shared, slot, seed))
    };
    let mut workers: Vec<_> = (0..options.threads)
        .map(|slot| Some(spawn_worker(slot, seeds.next_u64())))
        .collect();
    let fork_thread = {
        let shared = Arc::clone(&shared);
        let seed = seeds.next_u64();
        thread::spawn(move || forker(&shared, seed))
    };
    let mut next_trim = Duration::from_millis(500);
    let mut next_progress = Duration::from_secs(60);
    while started.elapsed() < options.duration {
        thread::sleep(Duration::from_millis(5));
        for (slot, handle) in workers.iter_mut().enumerate() {
            if handle.as_ref().is_some_and(|h| h.is_finished()) {
                handle
                    .take()
                    .expect("checked")
                    .join()
                    .expect("a worker panicked");
                *handle = Some(spawn_worker(slot, seeds.next_u64()));
            }
        }
        let elapsed = started.elapsed();
        if elapsed >= next_trim {
            // SAFETY: no preconditions.
            unsafe { libc::malloc_trim(0) };
            shared.counters.trims.fetch_add(1, Ordering::Relaxed);
            next_trim += Duration::from_millis(500);
        }
        if elapsed >= next_progress {
            let c = &shared.counters;
            println!(
                "progress: {} s, {} operations, {} threads started, {} forks, {} corruptions, RSS {} KiB",
                elapsed.as_secs(),
                c.allocations.load(Ordering::Relaxed) + c.frees.load(Ordering::Relaxed) + c.reallocs.load(Ordering::Relaxed),
                c.threads_started.load(Ordering::Relaxed),
                c.forks.load(Ordering::Relaxed),
                c.corruptions.load(Ordering::Relaxed),
                status_kib("VmRSS:")
            );
            next_progress += Duration::from_secs(60);
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    for handle in workers.into_iter().flatten() {
        handle.join().expect("a worker panicked");
    }
    fork_thread.join().expect("the fork thread panicked");
    let elapsed = started.elapsed();
    // Objects still in mailboxes: their senders have ended.
    for mailbox in &shared.mailboxes {
        for object in std::mem::take(&mut *mailbox.lock().unwrap()) {
            release(&shared, object, true);
        }
    }
    let peak_rss = status_kib("VmHWM:");
    let shared = Arc::into_inner(shared).expect("every thread has ended");
    let counters = shared.counters;
    let reports = shared.reports.into_inner().unwrap();
    let load_live = shared.live_bytes.load(Ordering::Relaxed);
    drop(shared.mailboxes);

    // SAFETY: no preconditions.
    unsafe { libc::malloc_trim(0) };
    let live_after = strata_live_bytes();
    let rss_after = status_kib("VmRSS:");

    let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let operations = get(&counters.allocations) + get(&counters.frees) + get(&counters.reallocs);
    let corruptions = get(&counters.corruptions);
    let failed = get(&counters.failed_allocations);
    let fork_failures = get(&counters.fork_failures);
    let leaked = live_after as i64 - live_before as i64;
    let rss_bound = rss_before + peak_rss.saturating_sub(rss_before) / RSS_KEEP_DIVISOR;

    let mut failures = Vec::new();
    if corruptions != 0 {
        failures.push(format!("{corruptions} corruptions"));
    }
    if failed != 0 {
        failures.push(format!("{failed} failed allocations"));
    }
    if fork_failures != 0 {
        failures.push(format!("{fork_failures} failed forks or fork children"));
    }
    if get(&counters.forks) == 0 {
        failures.push("no fork ran".into());
    }
    if load_live != 0 {
        failures.push(format!("{load_live} bytes of the load never freed"));
    }
    if leaked != 0 {
        failures.push(format!(
            "Strata counts {leaked} live bytes more after the load than before ({live_before} before, {live_after} after)"
        ));
    }
    if rss_after > rss_bound {
        failures.push(format!(
            "resident memory {rss_after} KiB after malloc_trim is above the bound of {rss_bound} KiB \
             ({rss_before} KiB before the load + 1/{RSS_KEEP_DIVISOR} of the growth to the {peak_rss} KiB peak)"
        ));
    }
    let mut text = String::new();
    let mut line = |name: &str, value: String| {
        let _ = writeln!(text, "{name}: {value}");
    };
    line("seconds", format!("{:.1}", elapsed.as_secs_f64()));
    line("threads", options.threads.to_string());
    line("operations", operations.to_string());
    line("allocations", get(&counters.allocations).to_string());
    line("reallocs", get(&counters.reallocs).to_string());
    line("frees", get(&counters.frees).to_string());
    line(
        "cross-thread frees",
        get(&counters.foreign_frees).to_string(),
    );
    line("hand-overs", get(&counters.handoffs).to_string());
    line("objects checked", get(&counters.checks).to_string());
    line(
        "bytes allocated",
        get(&counters.bytes_allocated).to_string(),
    );
    line(
        "threads started",
        get(&counters.threads_started).to_string(),
    );
    line("forks", get(&counters.forks).to_string());
    line("failed forks", fork_failures.to_string());
    line("malloc_trim calls", get(&counters.trims).to_string());
    line("failed allocations", failed.to_string());
    line("corruptions", corruptions.to_string());
    line("strata live bytes before", live_before.to_string());
    line("strata live bytes after", live_after.to_string());
    line("live bytes left by the load", leaked.to_string());
    line("rss before KiB", rss_before.to_string());
    line("peak rss KiB", peak_rss.to_string());
    line("end rss KiB", rss_after.to_string());
    line("end rss bound KiB", rss_bound.to_string());
    for report in &reports {
        line("problem", report.clone());
    }
    for failure in &failures {
        line("failed check", failure.clone());
    }
    line(
        "result",
        if failures.is_empty() {
            "ok".into()
        } else {
            "FAILED".into()
        },
    );
    Report {
        text,
        passed: failures.is_empty(),
    }
}

/// Brings the process to the state it keeps through the load, so that the
/// live bytes before and after compare like with like: `threads` threads
/// at once (glibc keeps the stacks of exited threads, each with its TLS
/// vector allocated through `malloc`, in a cache), a fork, and the status
/// file read once.
fn warm_up(threads: usize) {
    let handles: Vec<_> = (0..threads * 2)
        .map(|_| {
            thread::spawn(|| {
                // SAFETY: a plain allocation, freed at once.
                unsafe { libc::free(libc::malloc(64)) };
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("a warm-up thread panicked");
    }
    // SAFETY: the child exits at once.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: ends the child.
        unsafe { libc::_exit(0) };
    }
    if pid > 0 {
        let mut status = 0;
        // SAFETY: our child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
    }
    status_kib("VmRSS:");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn options_parse() {
        let Ok(Request::Run(options)) =
            parse(&args("--minutes 5 --threads 3 --seed 9 --max-live-mib 64"))
        else {
            panic!("not parsed")
        };
        assert_eq!(options.duration, Duration::from_secs(300));
        assert_eq!(
            (options.threads, options.seed, options.max_live),
            (3, 9, 64 << 20)
        );
        let Ok(Request::Run(options)) = parse(&args("--seconds 7 --library /x/libstrata.so"))
        else {
            panic!("not parsed")
        };
        assert_eq!(options.duration, Duration::from_secs(7));
        assert_eq!(options.library, Some(PathBuf::from("/x/libstrata.so")));
        assert_eq!(parse(&args("--help")), Ok(Request::Help));
        assert!(parse(&args("--threads 0"))
            .unwrap_err()
            .contains("between 1 and 256"));
        assert!(parse(&args("--seconds"))
            .unwrap_err()
            .contains("needs a value"));
        assert!(parse(&args("--seconds x"))
            .unwrap_err()
            .contains("not a whole number"));
        assert!(parse(&args("--seconds 0"))
            .unwrap_err()
            .contains("at least one second"));
        assert!(parse(&args("--fast"))
            .unwrap_err()
            .contains("unknown option"));
    }

    #[test]
    fn patterns_detect_every_changed_byte() {
        let size = 100;
        let mut block = vec![0u64; size / 8 + 1];
        let base = block.as_mut_ptr().cast::<u8>();
        // SAFETY: the vector holds more than `size` bytes, 8-byte aligned.
        unsafe {
            fill(base, 42, 0, 37);
            fill(base, 42, 37, size);
            assert_eq!(first_mismatch(base, 42, 0, size), None);
            assert_eq!(first_mismatch(base, 43, 0, size), Some(0));
            for offset in [0, 7, 8, 36, 37, 99] {
                *base.add(offset) ^= 1;
                assert_eq!(first_mismatch(base, 42, 0, size), Some(offset));
                assert_eq!(first_mismatch(base, 42, offset + 1, size), None);
                *base.add(offset) ^= 1;
            }
        }
    }

    #[test]
    fn sizes_cover_every_kind() {
        let mut rng = Rng::new(5);
        let sizes: Vec<usize> = (0..100_000).map(|_| random_size(&mut rng)).collect();
        assert!(sizes.iter().all(|&s| (1..=MAX_HUGE).contains(&s)));
        assert!(sizes.iter().any(|&s| s <= 16));
        assert!(sizes.iter().any(|&s| s > 4096 && s <= MAX_SMALL));
        assert!(sizes.iter().any(|&s| s > MAX_SMALL && s <= MAX_SPAN));
        assert!(sizes.iter().any(|&s| s > MAX_SPAN));
    }
}
