//! The process-wide page map of the user-space page sources: which
//! page-aligned address units hold a Strata page header.
//!
//! Before any pointer given to `free` is dereferenced, its page unit is looked
//! up here, so a pointer Strata never handed out is reported rather than
//! followed into unmapped memory. The map is one bit per
//! [`PAGE_SIZE`](crate::page::PAGE_SIZE) unit of a 48-bit address space:
//! 2^26 bits, 8 MiB of zero-initialised static memory of which only the words
//! covering mapped pages are ever touched. An address with any bit above the
//! 48th set (a tagged pointer, or garbage) is rejected before the lookup, so
//! it never aliases a page below.
//!
//! The kernel module does not use this map: its page source finds pages
//! through its own index.
//!
//! Bits are set (with release ordering) once a page's header is written, and
//! cleared before the page is unmapped. Readers load them relaxed: a valid
//! pointer reached its holder through some synchronisation that already
//! orders the header before it, and a guessed or stale pointer that races
//! with a page's publication reads only the header's atomic fields (the
//! page's tag first), so at worst it sees an old tag and is refused. An
//! acquire load here costs the free path 5 instructions (callgrind, 32-byte
//! pairs), by the orderings it forbids the compiler.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::page::PAGE_SHIFT;

const ADDRESS_BITS: u32 = 48;
const UNITS: usize = 1 << (ADDRESS_BITS - PAGE_SHIFT);
const WORDS: usize = UNITS / 64;

static MAP: [AtomicU64; WORDS] = [const { AtomicU64::new(0) }; WORDS];

/// The word and bit of `page`, or `None` outside the 48-bit range.
#[inline(always)]
fn slot(page: usize) -> Option<(usize, u64)> {
    let unit = page >> PAGE_SHIFT;
    if unit >= UNITS {
        return None;
    }
    Some((unit / 64, 1u64 << (unit % 64)))
}

/// Whether `page` (a page-aligned address) is a Strata page.
#[inline(always)]
pub fn contains(page: usize) -> bool {
    // The word index is in range exactly when the address is: one
    // comparison rejects tagged and out-of-range addresses. Indexing the
    // array after that explicit check (rather than `MAP.get`, which takes a
    // reference to the whole 8 MiB map) touches only the one word.
    let word = page >> (PAGE_SHIFT + 6);
    word < WORDS && MAP[word].load(Ordering::Relaxed) & (1u64 << ((page >> PAGE_SHIFT) % 64)) != 0
}

/// Records `page` as a Strata page; `false` if it lies outside the map.
pub fn insert(page: usize) -> bool {
    match slot(page) {
        Some((word, bit)) => {
            MAP[word].fetch_or(bit, Ordering::Release);
            true
        }
        None => false,
    }
}

/// Forgets `page`; called before the page goes back to its source.
pub fn remove(page: usize) {
    if let Some((word, bit)) = slot(page) {
        MAP[word].fetch_and(!bit, Ordering::Release);
    }
}
