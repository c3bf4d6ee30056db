//! Blocks from the process's malloc, filled with a pattern and checked
//! before they are freed.
//!
//! Every block belongs to a `tag` (a number the workload derives from its
//! seed). The pattern at byte offset `o` is a 64-bit word computed from the
//! tag and `o`, written every [`stride`] bytes, plus a marker in the last
//! byte. The pattern does not depend on the block's size, so a prefix
//! survives `realloc` and can be checked there too.

use std::process;

/// The bytes between two pattern words: every word of small blocks, one word
/// per cache line of larger ones (which still touches every page).
pub fn stride(size: usize) -> usize {
    if size <= 4096 {
        8
    } else {
        64
    }
}

/// The pattern word at byte offset `offset` of a block tagged `tag`.
fn word(tag: u64, offset: usize) -> u64 {
    (tag ^ (offset as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)).rotate_left(17)
        ^ 0xA5A5_5A5A_0F0F_F0F0
}

/// The marker in the last byte of a block of `size` bytes tagged `tag`.
fn marker(tag: u64, size: usize) -> u8 {
    (tag as u8) ^ (size as u8) ^ 0x5A
}

/// A live block of the process's malloc (`libc::malloc`, so whatever
/// `LD_PRELOAD` put in front of glibc serves it).
///
/// Invariant: `ptr` came from `libc::malloc` or `libc::realloc` for at
/// least `size` bytes (`size > 0`), has not been freed, and holds the
/// pattern of `tag` (see [`Block::fill`]).
pub struct Block {
    ptr: *mut u8,
    size: usize,
    tag: u64,
}

// SAFETY: a block is plain memory owned by whoever holds the `Block`; malloc
// memory may be freed by any thread.
unsafe impl Send for Block {}

/// Ends the process with a message: the workload found memory it did not
/// write, or malloc failed. Both make the run fail.
pub fn fail(message: &str) -> ! {
    eprintln!("strata-workloads: {message}");
    process::exit(3)
}

impl Block {
    /// Allocates `size` bytes (`size > 0`) with `malloc` and fills them with
    /// the pattern of `tag`. A null result ends the process.
    pub fn new(size: usize, tag: u64) -> Block {
        assert!(size > 0, "blocks are at least one byte");
        // SAFETY: malloc accepts any size.
        let ptr = unsafe { libc::malloc(size) }.cast::<u8>();
        if ptr.is_null() {
            fail(&format!("malloc({size}) returned null"));
        }
        let block = Block { ptr, size, tag };
        block.fill();
        block
    }

    /// Gives up the block without freeing it, returning its pointer; the
    /// caller keeps its size and tag.
    pub fn into_raw(self) -> *mut u8 {
        self.ptr
    }

    /// Takes back a block given up with [`Block::into_raw`].
    ///
    /// # Safety
    ///
    /// `ptr` must come from `into_raw` of a block of exactly `size` bytes
    /// and tag `tag`, and must be taken back only once.
    pub unsafe fn from_raw(ptr: *mut u8, size: usize, tag: u64) -> Block {
        Block { ptr, size, tag }
    }

    /// The block's size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Writes the pattern words (those ending before the last byte) and the
    /// marker in the last byte.
    fn fill(&self) {
        let step = stride(self.size);
        let mut offset = 0;
        while offset + 8 < self.size {
            // SAFETY: `offset + 8 <= size`, and malloc's 8-byte alignment
            // with offsets in multiples of 8 keeps the write aligned.
            unsafe {
                self.ptr
                    .add(offset)
                    .cast::<u64>()
                    .write(word(self.tag, offset))
            };
            offset += step;
        }
        // SAFETY: `size > 0`, so the last byte is inside the block.
        unsafe {
            self.ptr
                .add(self.size - 1)
                .write(marker(self.tag, self.size))
        };
    }

    /// Checks the pattern words that lie wholly in the first `len` bytes.
    fn verify_words(&self, len: usize, step: usize) -> Result<(), String> {
        let mut offset = 0;
        while offset + 8 <= len {
            // SAFETY: as in `fill`.
            let found = unsafe { self.ptr.add(offset).cast::<u64>().read() };
            if found != word(self.tag, offset) {
                return Err(format!(
                    "block of {} bytes (tag {}) holds {found:#018x} at offset {offset}, \
                     not what was written",
                    self.size, self.tag
                ));
            }
            offset += step;
        }
        Ok(())
    }

    /// Checks the whole pattern and the marker.
    pub fn verify(&self) -> Result<(), String> {
        self.verify_words(self.size - 1, stride(self.size))?;
        // SAFETY: the last byte is inside the block.
        let last = unsafe { self.ptr.add(self.size - 1).read() };
        if last != marker(self.tag, self.size) {
            return Err(format!(
                "block of {} bytes (tag {}) lost its end marker",
                self.size, self.tag
            ));
        }
        Ok(())
    }

    /// Checks the whole pattern and the marker; a mismatch ends the process.
    pub fn check(&self) {
        if let Err(message) = self.verify() {
            fail(&format!("check: {message}"));
        }
    }

    /// Resizes the block with `realloc`, checks that the common prefix kept
    /// its pattern, and fills the rest. A null result ends the process.
    pub fn realloc(&mut self, new_size: usize) {
        assert!(new_size > 0, "blocks are at least one byte");
        // SAFETY: `ptr` is a live malloc block (the invariant).
        let ptr = unsafe { libc::realloc(self.ptr.cast(), new_size) }.cast::<u8>();
        if ptr.is_null() {
            fail(&format!("realloc to {new_size} bytes returned null"));
        }
        // The words of the old pattern end before its marker byte; those
        // inside the new size must have survived. Offsets that are
        // multiples of the larger stride were written under either.
        let kept = (self.size - 1).min(new_size);
        let step = stride(self.size).max(stride(new_size));
        self.ptr = ptr;
        self.size = new_size;
        if let Err(message) = self.verify_words(kept, step) {
            fail(&format!("realloc: {message}"));
        }
        self.fill();
    }

    /// Checks the block and frees it, returning its contribution to the
    /// workload's checksum.
    pub fn free(self) -> u64 {
        self.check();
        // SAFETY: `ptr` is a live malloc block (the invariant), freed once:
        // `self` is consumed.
        unsafe { libc::free(self.ptr.cast()) };
        digest(self.tag, self.size)
    }
}

/// A block's contribution to a checksum: its tag and size, mixed.
pub fn digest(tag: u64, size: usize) -> u64 {
    let mut x = tag.wrapping_mul(0xD6E8_FEB8_6659_FD93) ^ (size as u64);
    x ^= x >> 32;
    x.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_byte_is_found() {
        for size in [1, 7, 8, 9, 64, 4096, 4097, 300_000] {
            let block = Block::new(size, 42);
            assert_eq!(block.verify(), Ok(()), "size {size}");
            // Overwrite one byte of a pattern word (or the marker of a
            // block too small for a word), then put it back.
            let offset = if size > 8 { 0 } else { size - 1 };
            // SAFETY: `offset` is inside the block.
            let byte = unsafe { block.ptr.add(offset) };
            // SAFETY: as above.
            let old = unsafe { byte.read() };
            // SAFETY: as above.
            unsafe { byte.write(!old) };
            assert!(block.verify().is_err(), "size {size}");
            // SAFETY: as above.
            unsafe { byte.write(old) };
            assert_eq!(block.verify(), Ok(()), "size {size}");
            block.free();
        }
    }

    #[test]
    fn realloc_keeps_the_prefix_and_refills() {
        let mut block = Block::new(1000, 7);
        for size in [5000, 300_000, 40, 1] {
            block.realloc(size);
            assert_eq!(block.size(), size);
            assert_eq!(block.verify(), Ok(()), "size {size}");
        }
        block.free();
    }

    #[test]
    fn raw_round_trip_keeps_the_block() {
        let block = Block::new(100, 9);
        let ptr = block.into_raw();
        // SAFETY: `ptr` came from `into_raw` of a 100-byte block tagged 9.
        let block = unsafe { Block::from_raw(ptr, 100, 9) };
        assert_eq!(block.free(), digest(9, 100));
    }
}
