//! Writing to stderr without allocating, and the misuse abort.
//!
//! Everything the shim prints goes through [`Output`]: text is formatted
//! into a buffer on the stack and handed to `write(2)` when the buffer fills
//! and when the writer is dropped. No call here can reach `malloc`.

use core::fmt;

use strata_core::FreeError;

/// A `fmt::Write` sink for a file descriptor, with a fixed stack buffer.
pub struct Output {
    fd: i32,
    buffer: [u8; 512],
    len: usize,
}

impl Output {
    /// A writer to stderr.
    pub const fn stderr() -> Self {
        Self::to_fd(2)
    }

    /// A writer to `fd`.
    pub const fn to_fd(fd: i32) -> Self {
        Self { fd, buffer: [0; 512], len: 0 }
    }

    /// Writes out what is buffered.
    pub fn flush(&mut self) {
        let mut done = 0;
        while done < self.len {
            let rest = &self.buffer[done..self.len];
            // SAFETY: writes initialised bytes from a live buffer.
            let written = unsafe { libc::write(self.fd, rest.as_ptr().cast(), rest.len()) };
            if written > 0 {
                done += written as usize;
            } else if written < 0 && errno() == libc::EINTR {
                continue;
            } else {
                break;
            }
        }
        self.len = 0;
    }
}

impl fmt::Write for Output {
    fn write_str(&mut self, mut s: &str) -> fmt::Result {
        while !s.is_empty() {
            if self.len == self.buffer.len() {
                self.flush();
            }
            let take = s.len().min(self.buffer.len() - self.len);
            self.buffer[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
            self.len += take;
            s = &s[take..];
        }
        Ok(())
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Prints `strata: <operation>: <what went wrong>; aborting` as one line and
/// aborts the process with `SIGABRT`.
#[cold]
#[inline(never)]
pub fn misuse(operation: &str, error: FreeError) -> ! {
    {
        let mut out = Output::stderr();
        let _ = fmt::Write::write_fmt(&mut out, format_args!("strata: {operation}: {error}; aborting\n"));
    }
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}

/// The calling thread's `errno`.
pub fn errno() -> i32 {
    // SAFETY: `__errno_location` returns the thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// Sets the calling thread's `errno`.
pub fn set_errno(value: i32) {
    // SAFETY: as in `errno`.
    unsafe { *libc::__errno_location() = value };
}
