//! Size classes: the object sizes a slice can be formatted for.
//!
//! Classes step by an eighth of each power of two: 16, 18, 20, … 30, 32, 36, …
//! 60, 64, 72, … up to [`MAX_SMALL`] (32 KiB, two objects per slice). A request
//! of `n` bytes therefore gets a class below `n + n/8`: the worst-case internal
//! waste is under 12.5% for every `n` from 16 bytes up. Requests under 16 bytes
//! take the 16-byte class, the smallest object that can hold the free-list link
//! and the free marker.
//!
//! Alignment comes from the layout: the size is first rounded up to the
//! alignment. Objects sit at multiples of their class size from a
//! slice-aligned base, and every class in `[2^k, 2^(k+1))` is a multiple of
//! `2^(k-3)`, so a rounded size lands on a class that is itself a multiple of
//! the alignment (see the unit tests). The malloc front asks for 16-byte
//! alignment, as glibc does, so there `malloc(17)` takes 32 bytes.

use static_assertions::const_assert;

use crate::page::SLICE_SIZE;

/// Number of small size classes.
pub const CLASS_COUNT: usize = 89;
/// The smallest object size.
pub const MIN_SMALL: usize = 16;
/// The largest object size served from a single slice.
pub const MAX_SMALL: usize = 32 * 1024;

/// Object size of each class.
pub static CLASS_SIZES: [u32; CLASS_COUNT] = class_sizes();

/// `ceil(2^32 / size)` for each class: `(offset * r) >> 32` divides exactly by
/// the class size for every offset inside a slice.
pub(crate) static RECIPROCALS: [u32; CLASS_COUNT] = reciprocals();

/// Class index for sizes up to [`TABLE_LIMIT`], indexed by `(size + 1) / 2`.
static SMALL_TABLE: [u8; TABLE_LIMIT / 2 + 1] = small_table();
const TABLE_LIMIT: usize = 1024;

const fn class_sizes() -> [u32; CLASS_COUNT] {
    let mut sizes = [0u32; CLASS_COUNT];
    let mut i = 0;
    while i < CLASS_COUNT {
        // Group g covers [2^(g+4), 2^(g+5)) in steps of 2^(g+1).
        let group = i / 8;
        let step = 1u32 << (group + 1);
        sizes[i] = (1u32 << (group + 4)) + step * (i % 8) as u32;
        i += 1;
    }
    sizes
}

const fn reciprocals() -> [u32; CLASS_COUNT] {
    let sizes = class_sizes();
    let mut r = [0u32; CLASS_COUNT];
    let mut i = 0;
    while i < CLASS_COUNT {
        r[i] = ((1u64 << 32) / sizes[i] as u64 + 1) as u32;
        i += 1;
    }
    r
}

const fn small_table() -> [u8; TABLE_LIMIT / 2 + 1] {
    let mut t = [0u8; TABLE_LIMIT / 2 + 1];
    let mut half = 0;
    while half <= TABLE_LIMIT / 2 {
        t[half] = compute_class(half * 2) as u8;
        half += 1;
    }
    t
}

/// The class of `size` bytes, computed; `size` must be at most [`MAX_SMALL`].
const fn compute_class(size: usize) -> usize {
    if size <= MIN_SMALL {
        return 0;
    }
    let k = (usize::BITS - 1 - (size - 1).leading_zeros()) as usize;
    (k - 4) * 8 + ((size - 1 - (1 << k)) >> (k - 3)) + 1
}

/// The class for a request of `size` bytes aligned to `align`, or `None` when
/// it is not a small request.
///
/// `align` must be a power of two. Any size is accepted: one that would
/// overflow when rounded up to `align` is not small.
#[inline(always)]
pub fn class_of(size: usize, align: usize) -> Option<usize> {
    // A zero-size request still gets an object aligned as asked. The
    // saturating add keeps sizes near `usize::MAX` large.
    let rounded = (size.saturating_add(align - 1) & !(align - 1)).max(align);
    if rounded <= TABLE_LIMIT {
        // Always in the table: `rounded <= TABLE_LIMIT`.
        match SMALL_TABLE.get(rounded.div_ceil(2)) {
            Some(&class) => Some(class as usize),
            None => Some(compute_class(rounded)),
        }
    } else if rounded <= MAX_SMALL {
        Some(compute_class(rounded))
    } else {
        None
    }
}

/// `class` as an index into per-class tables, in a form the compiler can
/// see is in range, so indexing needs no bounds check (a panic site in the
/// kernel). Class numbers come from [`class_of`] or from a descriptor and are
/// always in range; a bad one is taken as the largest class, which holds any
/// small object, so even a caller's mistake cannot make an object too small.
#[inline(always)]
pub fn class_index(class: usize) -> usize {
    class.min(CLASS_COUNT - 1)
}

/// Object size of class `class`.
#[inline(always)]
pub fn class_size(class: usize) -> usize {
    CLASS_SIZES[class_index(class)] as usize
}

/// How many objects of class `class` fit in one slice.
#[inline]
pub fn objects_per_slice(class: usize) -> usize {
    // Class sizes are never zero; `max` lets the compiler see it.
    SLICE_SIZE / class_size(class).max(1)
}

/// `RECIPROCALS[class]`.
#[inline(always)]
pub(crate) fn reciprocal(class: usize) -> u32 {
    RECIPROCALS[class_index(class)]
}

// The table must end exactly at MAX_SMALL, every class must be even (bit 0 of
// an object address tags remote lists) and hold a link and the free marker,
// and the reciprocal trick needs class sizes below 2^16.
const_assert!(class_sizes()[CLASS_COUNT - 1] as usize == MAX_SMALL);
const_assert!(class_sizes()[0] as usize == MIN_SMALL);
const_assert!(MIN_SMALL >= 2 * core::mem::size_of::<usize>());
const_assert!(MAX_SMALL < (1 << 16));
const_assert!(MAX_SMALL * 2 <= SLICE_SIZE);
const_assert!(CLASS_COUNT < u8::MAX as usize);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_increasing_and_even() {
        for pair in CLASS_SIZES.windows(2) {
            assert!(pair[0] < pair[1]);
        }
        assert!(CLASS_SIZES.iter().all(|s| s % 2 == 0));
    }

    #[test]
    fn lookup_is_smallest_fitting_class() {
        for size in 1..=MAX_SMALL {
            let class = class_of(size, 1).unwrap();
            assert!(class_size(class) >= size, "size {size}");
            if class > 0 {
                assert!(class_size(class - 1) < size, "size {size} not tight");
            }
        }
        assert_eq!(class_of(MAX_SMALL + 1, 1), None);
    }

    #[test]
    fn waste_is_at_most_one_eighth() {
        for size in MIN_SMALL..=MAX_SMALL {
            let class = class_size(class_of(size, 1).unwrap());
            assert!((class - size) * 8 <= size, "size {size} -> {class}");
        }
    }

    #[test]
    fn aligned_requests_get_aligned_classes() {
        let mut align = 1;
        while align <= MAX_SMALL {
            for size in 0..=MAX_SMALL {
                if let Some(class) = class_of(size, align) {
                    assert!(class_size(class) >= align, "size {size} align {align}");
                    let object = class_size(class);
                    assert_eq!(object % align, 0, "size {size} align {align}");
                    assert!(object >= size);
                }
            }
            align *= 2;
        }
    }

    #[test]
    fn sizes_near_the_top_of_the_address_space_are_not_small() {
        for align in [1, 2, 16, 4096, 1 << 20] {
            for size in [usize::MAX, usize::MAX - 1, usize::MAX - align, isize::MAX as usize + 1] {
                assert_eq!(class_of(size, align), None, "size {size:#x} align {align}");
            }
        }
    }

    #[test]
    fn reciprocal_division_is_exact() {
        for (class, &reciprocal) in RECIPROCALS.iter().enumerate() {
            let size = class_size(class) as u64;
            for offset in (0..SLICE_SIZE as u64).step_by(7).chain([SLICE_SIZE as u64 - 1]) {
                let quotient = (offset * reciprocal as u64) >> 32;
                assert_eq!(quotient, offset / size, "class {class} offset {offset}");
            }
        }
    }
}
