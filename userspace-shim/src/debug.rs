//! `STRATA_DEBUG=1`: canaries after small objects, guard pages after large
//! ones, checked at every free.
//!
//! Off by default. When on, the shim keeps no thread caches: every call goes
//! to the domain (under its lock) through the functions here, which wrap each
//! block as follows, `n` being the size the program asked for.
//!
//! - **Small objects** (`n + 17` fits a size class): the block is taken for
//!   `n + 17` bytes. Its last two words (the *trailer*, at `usable - 16`)
//!   hold `n`, and `n` encoded with the block's address, so that a trailer
//!   that was overwritten does not pass for a size; the bytes from `n` up to
//!   the trailer (at least one) hold the canary byte [`CANARY`], so a write
//!   running on from the object's end meets a canary first.
//! - **Large objects** (spans and huge mappings): the block is taken for
//!   `n + 17` bytes and 2 OS pages more; its last whole OS page becomes a guard page
//!   (`PROT_NONE`), so a write that runs past the canaries into it faults
//!   (`SIGSEGV`) at once. The trailer sits just before the guard page, and
//!   the canaries from `n` up to it.
//!
//! At `free` (and `realloc`) the trailer and every canary byte are checked;
//! the first corrupted object is reported as one line naming its address,
//! its size class, the size asked for and what was found, and the process
//! aborts. `malloc_usable_size` answers `n`, so a program that writes up to
//! the usable size stays inside the block. `realloc` keeps the block when
//! the new size fits before the trailer (rewriting canaries and trailer),
//! and moves it otherwise.
//!
//! The switch is read once, at the process's first allocation (before any
//! thread cache exists), from `environ`, or from `/proc/self/environ` if the
//! C library has not set `environ` up yet, so every block is wrapped or none.

use core::alloc::Layout;
use core::fmt::Write as _;
use core::ptr;
use core::sync::atomic::{AtomicU8, Ordering};

use strata_core::size_class::{class_of, class_size, MAX_SMALL};
use strata_core::{FreeError, FreeErrorKind};

use crate::front::DOMAIN;
use crate::output::Output;

/// The byte written after each object, up to its trailer.
pub const CANARY: u8 = 0xcb;

/// Mixed into the trailer with the block's address, so that a trailer
/// that holds plain data does not read as a valid size.
const TRAILER_KEY: usize = 0x5bd1_e995_a3c4_f00d;

/// The OS page size the guard pages are made of.
const OS_PAGE: usize = 4096;

/// Bytes of the trailer: the size, then the size encoded.
const TRAILER: usize = 2 * core::mem::size_of::<usize>();

/// Padding asked for beyond the object: the trailer and one canary byte.
const PADDING: usize = TRAILER + 1;

/// Whether debug mode is on: [`UNKNOWN`], [`OFF`] or [`ON`].
static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);
const UNKNOWN: u8 = 0;
const OFF: u8 = 1;
const ON: u8 = 2;

/// Whether `STRATA_DEBUG` turned debug mode on. Decided at the first call.
#[inline]
pub fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        OFF => false,
        ON => true,
        _ => decide(),
    }
}

#[cold]
#[inline(never)]
fn decide() -> bool {
    let mut value = [0u8; 32];
    let found = read_variable(b"STRATA_DEBUG=", &mut value);
    let (on, bad) = match found {
        None => (false, None),
        Some(len) => match crate::init::parse_flag(&value[..len]) {
            Some(on) => (on, None),
            None => (false, Some(len)),
        },
    };
    match STATE.compare_exchange(
        UNKNOWN,
        if on { ON } else { OFF },
        Ordering::Relaxed,
        Ordering::Relaxed,
    ) {
        Ok(_) => {
            if let Some(len) = bad {
                crate::init::warn_flag("STRATA_DEBUG", &value[..len]);
            }
            on
        }
        Err(decided) => decided == ON,
    }
}

/// Copies the value of the environment variable whose entry starts with
/// `prefix` (`NAME=`) into `value` (truncated to its length); returns the
/// length copied, or `None` if the variable is not set.
fn read_variable(prefix: &[u8], value: &mut [u8]) -> Option<usize> {
    extern "C" {
        static environ: *const *const core::ffi::c_char;
    }
    // SAFETY: libc's `environ` is always defined; it may be null.
    let mut entry = unsafe { environ };
    if entry.is_null() {
        return read_proc_environ(prefix, value);
    }
    // SAFETY: a non-null `environ` is a null-terminated array of C strings.
    unsafe {
        while !(*entry).is_null() {
            let bytes = core::ffi::CStr::from_ptr(*entry).to_bytes();
            if let Some(rest) = bytes.strip_prefix(prefix) {
                let len = rest.len().min(value.len());
                value[..len].copy_from_slice(&rest[..len]);
                return Some(len);
            }
            entry = entry.add(1);
        }
    }
    None
}

/// [`read_variable`] from `/proc/self/environ` (entries separated by NUL
/// bytes), read in pieces on the stack.
fn read_proc_environ(prefix: &[u8], value: &mut [u8]) -> Option<usize> {
    // SAFETY: a NUL-terminated path; the descriptor is closed below.
    let fd = unsafe {
        libc::open(
            c"/proc/self/environ".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    let mut buffer = [0u8; 512];
    // Where the current entry stands: matching the prefix (how many bytes
    // matched), copying the value (how many copied), or skipping.
    let mut matched = 0;
    let mut copied: Option<usize> = None;
    let mut skipping = false;
    let result = 'read: loop {
        // SAFETY: reads into a buffer of the length given.
        let read = unsafe { libc::read(fd, buffer.as_mut_ptr().cast(), buffer.len()) };
        if read <= 0 {
            break copied;
        }
        for &byte in &buffer[..read as usize] {
            if byte == 0 {
                if copied.is_some() {
                    break 'read copied;
                }
                (matched, skipping) = (0, false);
            } else if let Some(len) = copied.as_mut() {
                if *len < value.len() {
                    value[*len] = byte;
                    *len += 1;
                }
            } else if !skipping {
                if prefix.get(matched) == Some(&byte) {
                    matched += 1;
                    if matched == prefix.len() {
                        copied = Some(0);
                    }
                } else {
                    skipping = true;
                }
            }
        }
    };
    // SAFETY: closes the descriptor opened above.
    unsafe { libc::close(fd) };
    result
}

/// Where a block's trailer is, and whether it has a guard page after it.
struct Frame {
    /// Address of the trailer word.
    trailer: usize,
    /// The guard page, for large blocks.
    guard: Option<usize>,
    /// The block's usable size, as the core gives it.
    usable: usize,
}

/// The frame of the block at `address`, whose usable size is `usable`.
fn frame(address: usize, usable: usize) -> Frame {
    if usable <= MAX_SMALL {
        Frame {
            trailer: address + usable - TRAILER,
            guard: None,
            usable,
        }
    } else {
        let guard = ((address + usable) & !(OS_PAGE - 1)) - OS_PAGE;
        Frame {
            trailer: guard - TRAILER,
            guard: Some(guard),
            usable,
        }
    }
}

/// Allocates `layout` in debug mode (zeroed if asked); null when out of
/// memory.
pub fn alloc(layout: Layout, zeroed: bool) -> *mut u8 {
    let size = layout.size();
    let small = size
        .checked_add(PADDING)
        .and_then(|padded| class_of(padded, layout.align()))
        .is_some();
    let extra = if small {
        PADDING
    } else {
        PADDING + 2 * OS_PAGE
    };
    let Some(inner) = size
        .checked_add(extra)
        .and_then(|padded| Layout::from_size_align(padded, layout.align()).ok())
    else {
        return ptr::null_mut();
    };
    let block = DOMAIN.allocate_uncached(inner, zeroed);
    if block.is_null() {
        return block;
    }
    let address = block as usize;
    let Ok(usable) = DOMAIN.usable_size(address) else {
        return ptr::null_mut();
    };
    let frame = frame(address, usable);
    // SAFETY: the padding asked for above keeps a canary byte, the trailer
    // (and, for large blocks, a whole OS page after it) past the object,
    // inside the block.
    unsafe {
        seal(address, size, &frame);
        if let Some(guard) = frame.guard {
            // A failure leaves the page writable: the canaries still check.
            libc::mprotect(guard as *mut libc::c_void, OS_PAGE, libc::PROT_NONE);
        }
    }
    block
}

/// Writes the canaries and the trailer of the block at `address` holding
/// `size` bytes.
///
/// # Safety
/// `frame` is the block's, and `size` leaves at least one byte before its
/// trailer.
unsafe fn seal(address: usize, size: usize, frame: &Frame) {
    // SAFETY: the caller's contract: `[address + size, trailer + 16)` lies
    // inside the block.
    unsafe {
        ptr::write_bytes(
            (address + size) as *mut u8,
            CANARY,
            frame.trailer - (address + size),
        );
        ptr::write_unaligned(
            frame.trailer as *mut [usize; 2],
            [size, size ^ address ^ TRAILER_KEY],
        );
    }
}

/// Checks the block at `address` (a live allocation per the core, of usable
/// size `usable`) and returns the size it was asked for; reports the first
/// corruption found and aborts. `operation` names the call, for the report.
fn check(operation: &str, address: usize, usable: usize) -> usize {
    let frame = frame(address, usable);
    // SAFETY: the trailer and the bytes before it lie inside the live block,
    // before its guard page.
    let [size, encoded] = unsafe { ptr::read_unaligned(frame.trailer as *const [usize; 2]) };
    if encoded != size ^ address ^ TRAILER_KEY || size >= frame.trailer - address {
        overrun(operation, address, &frame, None, |out| {
            write!(out, "the size words after the object were overwritten (they read {size:#x}, {encoded:#x})")
        });
    }
    for offset in size..frame.trailer - address {
        // SAFETY: as above.
        let byte = unsafe { *((address + offset) as *const u8) };
        if byte != CANARY {
            overrun(operation, address, &frame, Some(size), |out| {
                write!(out, "byte {offset} (the first past the object) reads {byte:#04x}, not the canary {CANARY:#04x}")
            });
        }
    }
    size
}

/// Reports an overrun of the block at `address` as one line, and aborts.
#[cold]
fn overrun(
    operation: &str,
    address: usize,
    frame: &Frame,
    size: Option<usize>,
    found: impl FnOnce(&mut Output) -> core::fmt::Result,
) -> ! {
    let mut out = Output::stderr();
    let _ = write!(
        out,
        "strata: {operation}: heap overrun past the end of {address:#x} ("
    );
    match class_of(frame.usable, 1) {
        Some(class) if frame.guard.is_none() => {
            let _ = write!(
                out,
                "size class {class}, {}-byte objects",
                class_size(class)
            );
        }
        _ => {
            let _ = write!(
                out,
                "large object of {} bytes with a guard page",
                frame.usable
            );
        }
    }
    if let Some(size) = size {
        let _ = write!(out, ", {size} bytes asked for");
    }
    let _ = out.write_str("): ");
    let _ = found(&mut out);
    let _ = out.write_str("; aborting\n");
    out.flush();
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}

/// The usable size of `address` from the core, with a freed block given to
/// `free` reported as a double free.
fn usable_in_free(address: usize) -> Result<usize, FreeError> {
    DOMAIN
        .usable_size(address)
        .map_err(|error| match error.kind {
            FreeErrorKind::Freed => FreeError {
                kind: FreeErrorKind::DoubleFree,
                ..error
            },
            _ => error,
        })
}

/// Frees `block` in debug mode after checking it.
///
/// # Safety
/// As for [`crate::front::free`].
pub unsafe fn free(block: *mut u8) -> Result<(), FreeError> {
    let address = block as usize;
    let usable = usable_in_free(address)?;
    check("free", address, usable);
    if let Some(guard) = frame(address, usable).guard {
        // SAFETY: the guard page lies inside the block; it goes back to the
        // core writable, as the core handed it out.
        unsafe {
            libc::mprotect(
                guard as *mut libc::c_void,
                OS_PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        };
    }
    // SAFETY: the caller's contract; the block is live.
    unsafe { DOMAIN.free_uncached(address) }
}

/// Resizes `block` in debug mode: always to a new block.
///
/// # Safety
/// As for [`crate::front::realloc`].
pub unsafe fn realloc(block: *mut u8, layout: Layout) -> Result<*mut u8, FreeError> {
    let address = block as usize;
    let usable = DOMAIN.usable_size(address)?;
    let old = check("realloc", address, usable);
    let frame = frame(address, usable);
    if layout.size() < frame.trailer - address && address.is_multiple_of(layout.align()) {
        // SAFETY: the new size leaves a canary byte before the trailer.
        unsafe { seal(address, layout.size(), &frame) };
        return Ok(block);
    }
    let moved = alloc(layout, false);
    if moved.is_null() {
        return Ok(moved);
    }
    // SAFETY: both blocks hold the copied length and are distinct; the old
    // block is live (checked above) and freed once.
    unsafe {
        ptr::copy_nonoverlapping(block, moved, old.min(layout.size()));
        free(block)?;
    }
    Ok(moved)
}

/// The size asked for when `block` was allocated (its usable size in debug
/// mode), after checking the block.
pub fn usable_size(block: *const u8) -> Result<usize, FreeError> {
    let address = block as usize;
    Ok(check(
        "malloc_usable_size",
        address,
        DOMAIN.usable_size(address)?,
    ))
}
