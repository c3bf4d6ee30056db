//! Helpers shared by the fuzz targets: input decoding for sizes and
//! alignments, and the per-block fill pattern.

#![allow(dead_code)]

use arbitrary::{Arbitrary, Result, Unstructured};
use strata::page::{MAX_SPAN, PAGE_SIZE, SLICE_SIZE};
use strata::size_class::{class_of, class_size, MAX_SMALL};

/// A request size: mostly small, some up to a slice, some spans
/// (64 KiB–2 MiB), a few huge ones, and the boundaries between them.
#[derive(Debug, Clone, Copy)]
pub struct Size(pub usize);

const BOUNDARIES: [usize; 14] = [
    0,
    16,
    1024,
    MAX_SMALL,
    SLICE_SIZE,
    2 * SLICE_SIZE,
    MAX_SPAN / 2,
    MAX_SPAN,
    PAGE_SIZE - SLICE_SIZE,
    PAGE_SIZE - 64,
    PAGE_SIZE,
    PAGE_SIZE + 4096,
    3 << 20,
    8 << 20,
];

impl<'a> Arbitrary<'a> for Size {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let select: u8 = u.arbitrary()?;
        let value = u.arbitrary::<u32>()? as usize;
        Ok(Size(match select {
            0..=159 => value % 1025,
            160..=209 => value % (SLICE_SIZE + 1),
            210..=239 => SLICE_SIZE + value % (MAX_SPAN - SLICE_SIZE + 1),
            240..=247 => MAX_SPAN + value % (PAGE_SIZE * 3),
            _ => {
                let base = BOUNDARIES[value % BOUNDARIES.len()];
                // -2 ..= +2 around the boundary.
                (base + (value >> 8) % 5).saturating_sub(2)
            }
        }))
    }

    fn size_hint(_depth: usize) -> (usize, Option<usize>) {
        (5, Some(5))
    }
}

/// A power-of-two alignment: mostly up to 16, some up to 64 KiB, a few up to
/// 4 MiB (the page size).
#[derive(Debug, Clone, Copy)]
pub struct Align(pub usize);

impl<'a> Arbitrary<'a> for Align {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let select: u8 = u.arbitrary()?;
        let value: u8 = u.arbitrary()?;
        Ok(Align(match select {
            0..=199 => 1 << (value % 5),
            200..=239 => 1 << (value % 17),
            _ => 1 << (value % 23),
        }))
    }

    fn size_hint(_depth: usize) -> (usize, Option<usize>) {
        (2, Some(2))
    }
}

/// What kind of block a request of `size` aligned to `align` becomes (see
/// `Heap::alloc_in` and `Domain::alloc_large`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Small(usize),
    Span,
    Huge,
}

pub fn kind_of(size: usize, align: usize) -> Kind {
    match class_of(size, align) {
        Some(class) => Kind::Small(class),
        None if size.max(1) <= MAX_SPAN && align <= PAGE_SIZE / 2 => Kind::Span,
        None => Kind::Huge,
    }
}

/// Checks the usable size the allocator reports for a fresh block of
/// `size`/`align` of kind `kind`.
pub fn check_usable(kind: Kind, size: usize, align: usize, usable: usize) {
    assert!(usable >= size, "usable {usable} < size {size} (align {align})");
    match kind {
        Kind::Small(class) => assert_eq!(usable, class_size(class), "small size {size} align {align}"),
        Kind::Span => assert_eq!(
            usable,
            size.max(1).div_ceil(SLICE_SIZE) * SLICE_SIZE,
            "span size {size} align {align}"
        ),
        // A mapping of its own, rounded to 4 KiB after the header; a
        // reused mapping may be up to twice the length asked, and one that
        // grew by realloc has half its length again as headroom.
        Kind::Huge => assert!(
            usable < 2 * (size.max(1) + align.max(64) + 4096),
            "huge size {size} align {align}: usable {usable}"
        ),
    }
}

/// The fill pattern of block `id`: byte `i` of the block is
/// `pattern(id)[i % 8]`, so a byte moved to another offset or another block
/// is noticed.
pub fn pattern(id: u64) -> u64 {
    let mut x = id.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Blocks up to this size are filled and checked whole; larger ones (spans
/// and huge blocks, up to megabytes) in their first and last
/// [`FULL_LIMIT`]`/4` bytes and 64 bytes of every [`STRIDE`] in between.
/// Every input starts with nothing mapped, so filling is mostly first-touch
/// page faults: sampling keeps an input fast.
pub const FULL_LIMIT: usize = 64 << 10;
/// Distance between the samples in the middle of a large block.
pub const STRIDE: usize = 16 << 10;

/// The ranges of a block of `len` bytes that carry the pattern. Each starts
/// at a multiple of 8.
pub fn regions(len: usize) -> impl Iterator<Item = (usize, usize)> {
    let sparse = len > FULL_LIMIT;
    let edge = FULL_LIMIT / 4;
    let middle = if sparse { (edge..len - edge).step_by(STRIDE) } else { (0..0).step_by(1) };
    let head = if sparse { (0, edge) } else { (0, len) };
    let tail = if sparse { Some(((len - edge) & !7, len)) } else { None };
    core::iter::once(head).chain(middle.map(|at| (at, at + 64))).chain(tail)
}

// The loops below are few and short: the bulk of the work is `memcpy` and
// `memcmp`, which the coverage instrumentation leaves alone (instrumented
// byte loops made filling the largest part of an execution).

/// Fills the pattern regions of the `len` bytes at `ptr` with the pattern
/// of `id`.
///
/// # Safety
/// `[ptr, ptr + len)` must be writable.
pub unsafe fn fill(ptr: *mut u8, len: usize, id: u64) {
    let bytes = pattern(id).to_le_bytes();
    for (start, end) in regions(len) {
        let n = end - start;
        // SAFETY: inside the range; the copies double the written prefix,
        // whose length stays a multiple of 8 until the last one.
        unsafe {
            let region = ptr.add(start);
            core::ptr::copy_nonoverlapping(bytes.as_ptr(), region, n.min(8));
            let mut done = n.min(8);
            while done < n {
                let more = done.min(n - done);
                core::ptr::copy_nonoverlapping(region, region.add(done), more);
                done += more;
            }
        }
    }
}

/// Returns the first offset below `limit` of the pattern regions of a block
/// of `len` bytes at `ptr` that does not hold the pattern of `id`.
///
/// # Safety
/// `[ptr, ptr + limit.min(len))` must be readable.
pub unsafe fn mismatch(ptr: *const u8, len: usize, limit: usize, id: u64) -> Option<usize> {
    let bytes = pattern(id).to_le_bytes();
    for (start, end) in regions(len) {
        let end = end.min(limit);
        if end <= start {
            continue;
        }
        // SAFETY: inside the range.
        let region = unsafe { core::slice::from_raw_parts(ptr.add(start), end - start) };
        let head = region.len().min(8);
        // The first word holds the pattern and the region repeats with
        // period 8: then every byte holds it.
        if region[..head] != bytes[..head] || region[8.min(region.len())..] != region[..region.len().saturating_sub(8)] {
            let at = (0..region.len()).find(|&i| region[i] != bytes[i % 8]).unwrap_or(0);
            return Some(start + at);
        }
    }
    None
}

/// Whether `len` bytes at `ptr` are zero.
///
/// # Safety
/// `[ptr, ptr + len)` must be readable.
pub unsafe fn is_zero(ptr: *const u8, len: usize) -> bool {
    static ZERO: [u8; 4096] = [0; 4096];
    // SAFETY: the caller's contract.
    let bytes = unsafe { core::slice::from_raw_parts(ptr, len) };
    bytes.chunks(ZERO.len()).all(|chunk| chunk == &ZERO[..chunk.len()])
}
