//! The page map: which page-aligned address units belong to Strata.
//!
//! Before any pointer given to `free` is dereferenced, its page unit is looked
//! up here, so a pointer Strata never handed out is reported rather than
//! followed into unmapped memory. The map is one bit per [`PAGE_SIZE`] unit of a
//! 48-bit address space: 2^26 bits, 8 MiB of zero-initialised static memory of
//! which only the words covering mapped pages are ever touched.
//!
//! Bits are set before a page is published and cleared before it is unmapped;
//! readers use relaxed loads because a valid pointer's page cannot be unmapped
//! while the pointer is live.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::page::PAGE_SHIFT;

const ADDRESS_BITS: u32 = 48;
const UNITS: usize = 1 << (ADDRESS_BITS - PAGE_SHIFT);
const WORDS: usize = UNITS / 64;

static MAP: [AtomicU64; WORDS] = [const { AtomicU64::new(0) }; WORDS];

#[inline(always)]
fn slot(page: usize) -> (usize, u64) {
    let unit = (page >> PAGE_SHIFT) & (UNITS - 1);
    (unit / 64, 1u64 << (unit % 64))
}

/// Whether `page` (a page-aligned address) is a Strata page.
#[inline(always)]
pub(crate) fn contains(page: usize) -> bool {
    let (word, bit) = slot(page);
    MAP[word].load(Ordering::Relaxed) & bit != 0
}

/// Records `page` as a Strata page.
pub(crate) fn insert(page: usize) {
    let (word, bit) = slot(page);
    MAP[word].fetch_or(bit, Ordering::Release);
}

/// Forgets `page`; called before the page goes back to its source.
pub(crate) fn remove(page: usize) {
    let (word, bit) = slot(page);
    MAP[word].fetch_and(!bit, Ordering::Release);
}
