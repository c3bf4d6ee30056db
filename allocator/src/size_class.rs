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

/// The boundary multiplier `m` of each class: `ceil(2^64 / size)`, plus one
/// when the size is a power of two. For an offset `n = q * size + r` inside
/// a slice, `n * m` (wrapping, in 64 bits) is `q * e` when `r == 0` and at
/// least `m` (above 2^48) otherwise, where `e = size * m mod 2^64` is
/// between 1 and `size` (the plus one keeps `e` from being 0 for powers of
/// two). So `n * m < carved * e` holds exactly when `n` is the boundary of
/// one of the first `carved` objects: one multiplication and one
/// comparison, the free fast path's whole object test (see
/// [`is_carved_object`]).
pub(crate) static BOUNDARY_MULTIPLIERS: [u64; CLASS_COUNT] = boundary_multipliers();

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

const fn boundary_multipliers() -> [u64; CLASS_COUNT] {
    let sizes = class_sizes();
    let mut m = [0u64; CLASS_COUNT];
    let mut i = 0;
    while i < CLASS_COUNT {
        let size = sizes[i] as u64;
        m[i] = u64::MAX / size + 1;
        if size.is_power_of_two() {
            m[i] += 1;
        }
        i += 1;
    }
    m
}

/// The limit for [`is_carved_object`] of a slice of the class whose
/// [`BOUNDARY_MULTIPLIERS`] entry is `multiplier`, with objects of `size`
/// bytes, `carved` of them carved: `carved * (size * multiplier mod 2^64)`.
#[inline]
pub(crate) fn carved_limit(carved: u32, size: u32, multiplier: u64) -> u64 {
    (carved as u64).wrapping_mul((size as u64).wrapping_mul(multiplier))
}

/// Whether `offset` (the address's offset in its slice, below 2^16) is the
/// boundary of one of the carved objects of a slice whose multiplier and
/// [`carved_limit`] are given: see [`BOUNDARY_MULTIPLIERS`].
#[inline(always)]
pub(crate) fn is_carved_object(offset: u32, multiplier: u64, limit: u64) -> bool {
    (offset as u64).wrapping_mul(multiplier) < limit
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

/// Largest request served through a heap's direct table
/// ([`crate::cache::Heap::alloc_aligned16`], the malloc front's fast path).
pub const DIRECT_MAX: usize = 1024;
/// Request sizes per entry of a heap's direct table: 1 with the `byte-table`
/// feature (the malloc shim's), so that the fast path indexes the table
/// with the size as it comes, with no arithmetic (1025 words per heap, two
/// instructions fewer per allocation); else 16 (65 words per heap).
pub const DIRECT_STEP: usize = if cfg!(feature = "byte-table") { 1 } else { 16 };

/// Entries of a heap's direct table: entry `i` serves 16-byte-aligned
/// requests of `DIRECT_STEP * (i - 1) + 1 ..= DIRECT_STEP * i` bytes, entry
/// 0 the zero-size request.
pub const DIRECT_ENTRIES: usize = DIRECT_MAX / DIRECT_STEP + 1;

/// Entries of a heap's second direct table, for requests aligned to 8 bytes
/// or less (most Rust layouts): entry `i` serves `8 * (i - 1) + 1 ..= 8 * i`
/// bytes, entry 0 the zero-size request.
pub const DIRECT8_ENTRIES: usize = DIRECT_MAX / 8 + 1;

/// The class of each direct-table entry.
pub(crate) static DIRECT_CLASS: [u8; DIRECT_ENTRIES] = direct_classes(DIRECT_STEP, 16);

/// The class of each entry of the 8-byte direct table (the heap needs only
/// [`DIRECT8_ENTRIES_OF`]; the tests check the two agree).
#[cfg(test)]
pub(crate) static DIRECT8_CLASS: [u8; DIRECT8_ENTRIES] = direct_classes(8, 8);

/// For each class, the entries of the 8-byte direct table that map to it,
/// as `first..end` (see [`DIRECT_ENTRIES_OF`]).
pub(crate) static DIRECT8_ENTRIES_OF: [(u16, u16); CLASS_COUNT] = direct_entries_of(8, 8);

/// For each class, the direct-table entries that map to it, as `first..end`
/// (empty for classes that are not a multiple of 16 or lie above
/// [`DIRECT_MAX`]). The entries of one class are contiguous, because
/// classes increase with the size.
pub(crate) static DIRECT_ENTRIES_OF: [(u16, u16); CLASS_COUNT] = direct_entries_of(DIRECT_STEP, 16);

/// The direct-table entry of a 16-byte-aligned request of `size` bytes, for
/// `size <= DIRECT_MAX` (with the `byte-table` feature, the size itself).
#[inline(always)]
pub(crate) const fn direct_entry(size: usize) -> usize {
    size.div_ceil(DIRECT_STEP)
}

/// The 8-byte direct-table entry of a request of `size` bytes aligned to 8
/// or less, for `size <= DIRECT_MAX`.
#[inline(always)]
pub(crate) const fn direct8_entry(size: usize) -> usize {
    (size + 7) >> 3
}

/// The class of entry `entry` of a direct table of `step`-byte entries
/// (1, 8 or 16) for requests aligned to `align` (16 or 8): the class of
/// `step * entry` bytes rounded up to `align` (the smallest class for
/// entry 0).
const fn direct_class(entry: usize, step: usize, align: usize) -> usize {
    if entry == 0 {
        0
    } else {
        compute_class((entry * step).next_multiple_of(align))
    }
}

/// The classes of a direct table's entries (see [`direct_class`]).
const fn direct_classes<const N: usize>(step: usize, align: usize) -> [u8; N] {
    let mut classes = [0u8; N];
    let mut entry = 0;
    while entry < N {
        classes[entry] = direct_class(entry, step, align) as u8;
        entry += 1;
    }
    classes
}

const fn direct_entries_of(step: usize, align: usize) -> [(u16, u16); CLASS_COUNT] {
    let entries = DIRECT_MAX / step + 1;
    let mut ranges = [(0u16, 0u16); CLASS_COUNT];
    let mut entry = 0;
    while entry < entries {
        let class = direct_class(entry, step, align);
        if ranges[class].0 == ranges[class].1 {
            ranges[class] = (entry as u16, entry as u16 + 1);
        } else {
            ranges[class].1 = entry as u16 + 1;
        }
        entry += 1;
    }
    ranges
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

/// `BOUNDARY_MULTIPLIERS[class]`.
#[inline(always)]
pub(crate) fn boundary_multiplier(class: usize) -> u64 {
    BOUNDARY_MULTIPLIERS[class_index(class)]
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
const_assert!(DIRECT_ENTRIES < u16::MAX as usize);
const_assert!(DIRECT8_ENTRIES < u16::MAX as usize);
const_assert!(DIRECT_MAX <= TABLE_LIMIT);

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
    fn direct8_entries_agree_with_class_of() {
        for align in [1, 2, 4, 8] {
            for size in 0..=DIRECT_MAX {
                let entry = direct8_entry(size);
                let class = DIRECT8_CLASS[entry] as usize;
                // The table rounds to 8: the class of the rounded size,
                // which is the class `class_of` gives at alignment 8.
                assert_eq!(Some(class), class_of(size, 8), "size {size}");
                assert!(class_size(class) >= size && class_size(class).is_multiple_of(align));
                let (first, end) = DIRECT8_ENTRIES_OF[class];
                assert!((first as usize..end as usize).contains(&entry), "size {size}");
            }
        }
        for (class, &(first, end)) in DIRECT8_ENTRIES_OF.iter().enumerate() {
            for entry in first..end {
                assert_eq!(DIRECT8_CLASS[entry as usize] as usize, class);
            }
        }
    }

    #[test]
    fn direct_entries_agree_with_class_of() {
        for size in 0..=DIRECT_MAX {
            let entry = direct_entry(size);
            let class = DIRECT_CLASS[entry] as usize;
            assert_eq!(Some(class), class_of(size, 16), "size {size}");
            let (first, end) = DIRECT_ENTRIES_OF[class];
            assert!((first as usize..end as usize).contains(&entry), "size {size}");
        }
        // Every entry of a class's range maps back to the class.
        for (class, &(first, end)) in DIRECT_ENTRIES_OF.iter().enumerate() {
            for entry in first..end {
                assert_eq!(DIRECT_CLASS[entry as usize] as usize, class);
            }
        }
    }

    #[test]
    fn carved_object_test_is_exact() {
        // Every offset a slice can hold, for carved counts from none to all.
        for (class, &multiplier) in BOUNDARY_MULTIPLIERS.iter().enumerate() {
            let size = class_size(class) as u32;
            let capacity = objects_per_slice(class) as u32;
            let e = (size as u64).wrapping_mul(multiplier);
            assert!((1..=size as u64).contains(&e), "class {class}");
            for carved in [0, 1, 2, capacity / 3, capacity - 1, capacity] {
                let limit = carved_limit(carved, size, multiplier);
                for offset in 0..SLICE_SIZE as u32 {
                    let expected = offset % size == 0 && offset / size < carved;
                    assert_eq!(
                        is_carved_object(offset, multiplier, limit),
                        expected,
                        "class {class} carved {carved} offset {offset}"
                    );
                }
            }
        }
    }
}
