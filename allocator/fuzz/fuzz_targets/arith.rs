//! `arith`: size-class and alignment arithmetic, and pointer validation.
//!
//! 1. For any size and power-of-two alignment (where rounding the size up to
//!    the alignment does not overflow), `class_of` agrees with a linear
//!    search of `CLASS_SIZES` for the smallest class holding the rounded
//!    size; the class is a multiple of the alignment, holds the size, wastes
//!    under an eighth of the rounded request (from 16 bytes up), fits twice in
//!    a slice, and `class_of` is monotone in the size and the alignment.
//! 2. With a few live blocks of the std front `Strata` (and a few freed
//!    ones, and some of another allocator), arbitrary addresses (interior
//!    pointers, just past a block or a page, inside the page header, tagged
//!    with high bits, freed blocks, another allocator's blocks, the stack,
//!    null, small integers, anything) are given to `free`, the uncached free,
//!    `usable_size` and `resize`. Addresses that are live block starts are
//!    left out (they would really be freed). Every call must return an
//!    error naming the address and never crash; afterwards every live block
//!    still holds its contents and its usable size, and frees cleanly, and
//!    the allocator is empty again (`bytes_live == 0`, and no page left
//!    after a purge).

#![no_main]

#[path = "common.rs"]
mod common;

use std::alloc::{GlobalAlloc, Layout};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use strata::page::{PAGE_SIZE, SLICE_SIZE};
use strata::size_class::{class_of, class_size, objects_per_slice, CLASS_COUNT, CLASS_SIZES, MAX_SMALL, MIN_SMALL};
use strata::source::MmapSource;
use strata::{FreeError, FreeErrorKind, SharedStrata, SpinLock, Strata};

use common::{check_usable, fill, kind_of, mismatch, Align, Size};

static STRATA: Strata = Strata::new();
static OTHER: SharedStrata<MmapSource, SpinLock, 1> = SharedStrata::new(MmapSource::new());

const MAX_BLOCKS: usize = 24;
const FILL_BUDGET: usize = 48 << 20;

/// A size for the arithmetic: every range, up to the edge of overflow.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum RawSize {
    Small(u16),
    Medium(u32),
    Any(u64),
    NearMax(u16),
}

impl RawSize {
    fn get(self) -> usize {
        match self {
            RawSize::Small(v) => v as usize % 2048,
            RawSize::Medium(v) => v as usize % (1 << 20),
            RawSize::Any(v) => v as usize,
            RawSize::NearMax(v) => (isize::MAX as usize - 16384).wrapping_add(v as usize % 32768),
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Probe {
    Interior { block: u8, offset: u32 },
    PastEnd { block: u8, delta: i16 },
    Before { block: u8, delta: u16 },
    Tagged { block: u8, tag: u16 },
    PageRelative { block: u8, slice: u8, offset: u16 },
    PageEnd { block: u8, delta: i16 },
    Freed { index: u8, delta: i8 },
    Foreign { index: u8, delta: i8 },
    Stack,
    Null,
    SmallInt(u16),
    Raw(u64),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Action {
    Free,
    FreeUncached,
    UsableSize,
    Resize(Size, Align),
}

#[derive(Arbitrary, Debug)]
struct Input {
    classes: Vec<(RawSize, u8)>,
    blocks: Vec<(Size, Align)>,
    other: Vec<Size>,
    free: Vec<u8>,
    probes: Vec<(Probe, Action)>,
}

fn check_class(size: usize, align: usize) {
    // Every caller passes the size and alignment of a `Layout`. Outside
    // that domain `class_of` computes `size + align - 1` unchecked: it
    // panics with overflow checks and gives a small class without them, for
    // sizes within `align` of usize::MAX (see the fuzzing report).
    if Layout::from_size_align(size, align).is_err() {
        return;
    }
    let rounded = size.next_multiple_of(align).max(align);
    let expected = CLASS_SIZES.iter().position(|&c| c as usize >= rounded);
    let class = class_of(size, align);
    assert_eq!(class, expected, "class_of({size}, {align}), rounded {rounded}");
    let Some(class) = class else {
        assert!(rounded > MAX_SMALL, "class_of({size}, {align}) is None");
        return;
    };
    assert!(class < CLASS_COUNT);
    let object = class_size(class);
    assert_eq!(object, CLASS_SIZES[class] as usize);
    assert!(object >= size && object >= align && object >= MIN_SMALL, "class_of({size}, {align}) = {object}");
    assert_eq!(object % align, 0, "class_of({size}, {align}) = {object}: not a multiple of the alignment");
    if rounded >= MIN_SMALL {
        assert!((object - rounded) * 8 < rounded, "class_of({size}, {align}) = {object}: waste over 1/8");
    } else {
        assert_eq!(class, 0);
    }
    let count = objects_per_slice(class);
    assert!(count >= 2 && count * object <= SLICE_SIZE && (count + 1) * object > SLICE_SIZE);
    // Monotone: a larger size or alignment never gets a smaller class.
    if let Some(next) = size.checked_add(1).filter(|&s| Layout::from_size_align(s, align).is_ok()) {
        if let Some(bigger) = class_of(next, align) {
            assert!(bigger >= class, "class_of({next}, {align}) < class_of({size}, {align})");
        }
    }
    if let Some(wider) = align.checked_mul(2).filter(|&a| Layout::from_size_align(size, a).is_ok()) {
        if let Some(c) = class_of(size, wider) {
            assert!(c >= class, "class_of({size}, {wider}) < class_of({size}, {align})");
        }
    }
}

#[derive(Debug, Clone, Copy)]
#[allow(dead_code)] // `size` is for the panic messages
struct Block {
    addr: usize,
    size: usize,
    usable: usize,
    id: u64,
}

fn verify(block: &Block) {
    // SAFETY: a live block of `usable` bytes.
    if let Some(at) = unsafe { mismatch(block.addr as *const u8, block.usable, block.usable, block.id) } {
        panic!("contents of live {block:?} changed at offset {at}");
    }
}

fn refused(what: &str, addr: usize, result: Result<impl Sized, FreeError>) {
    match result {
        Ok(_) => panic!("{what} of {addr:#x}, not a live block, succeeded"),
        Err(error) => {
            assert_eq!(error.address, addr, "{what}: error names another address");
            if what.starts_with("free") {
                assert_ne!(error.kind, FreeErrorKind::Freed, "{what} of {addr:#x}: a free reports a double free");
            }
        }
    }
}

fuzz_target!(|input: Input| {
    if std::env::var_os("STRATA_FUZZ_TRACE").is_some() {
        eprintln!("{input:?}");
    }
    for &(size, shift) in input.classes.iter().take(64) {
        check_class(size.get(), 1 << (shift % usize::BITS as u8));
    }

    let mut filled = 0;
    let mut live: Vec<Block> = Vec::new();
    for (i, &(Size(size), Align(align))) in input.blocks.iter().take(MAX_BLOCKS).enumerate() {
        if filled + size + align > FILL_BUDGET {
            continue;
        }
        let layout = Layout::from_size_align(size, align).unwrap();
        // SAFETY: a valid layout.
        let p = unsafe { STRATA.alloc(layout) };
        assert!(!p.is_null(), "alloc {layout:?}");
        assert_eq!(p as usize % align, 0);
        let usable = STRATA.usable_size(p).unwrap();
        check_usable(kind_of(size, align), size, align, usable);
        let id = i as u64 + 1;
        // SAFETY: the whole usable size may be written.
        unsafe { fill(p, usable, id) };
        filled += usable;
        live.push(Block { addr: p as usize, size, usable, id });
    }
    let mut other: Vec<Block> = Vec::new();
    for (i, &Size(size)) in input.other.iter().take(4).enumerate() {
        let size = size % (1 << 20);
        let layout = Layout::from_size_align(size.max(1), 8).unwrap();
        // SAFETY: a valid layout.
        let p = unsafe { OTHER.alloc(layout) };
        assert!(!p.is_null());
        let usable = OTHER.usable_size(p).unwrap();
        let id = 1000 + i as u64;
        // SAFETY: as above.
        unsafe { fill(p, usable, id) };
        other.push(Block { addr: p as usize, size, usable, id });
    }
    let mut freed: Vec<usize> = Vec::new();
    for &k in input.free.iter().take(MAX_BLOCKS) {
        if live.is_empty() {
            break;
        }
        let block = live.swap_remove(k as usize % live.len());
        verify(&block);
        // SAFETY: a live block, dropped here.
        unsafe { STRATA.free(block.addr as *mut u8) }.unwrap();
        freed.push(block.addr);
    }

    let stack = 0u64;
    let pick = |blocks: &[Block], k: u8| (!blocks.is_empty()).then(|| blocks[k as usize % blocks.len()]);
    for &(probe, action) in input.probes.iter().take(256) {
        let addr = match probe {
            Probe::Interior { block, offset } => pick(&live, block).map(|b| b.addr + 1 + offset as usize % (b.usable - 1)),
            Probe::PastEnd { block, delta } => pick(&live, block).map(|b| (b.addr + b.usable).wrapping_add_signed(delta as isize)),
            Probe::Before { block, delta } => pick(&live, block).map(|b| b.addr.wrapping_sub(delta as usize + 1)),
            Probe::Tagged { block, tag } => pick(&live, block).map(|b| b.addr | ((tag as usize | 1) << 48)),
            Probe::PageRelative { block, slice, offset } => pick(&live, block)
                .map(|b| (b.addr & !(PAGE_SIZE - 1)) + (slice as usize % 65) * SLICE_SIZE + offset as usize),
            Probe::PageEnd { block, delta } => pick(&live, block)
                .map(|b| ((b.addr & !(PAGE_SIZE - 1)) + PAGE_SIZE).wrapping_add_signed(delta as isize)),
            Probe::Freed { index, delta } => {
                (!freed.is_empty()).then(|| freed[index as usize % freed.len()].wrapping_add_signed(delta as isize))
            }
            Probe::Foreign { index, delta } => pick(&other, index).map(|b| b.addr.wrapping_add_signed(delta as isize)),
            Probe::Stack => Some(&stack as *const u64 as usize),
            Probe::Null => Some(0),
            Probe::SmallInt(v) => Some(v as usize),
            Probe::Raw(v) => Some(v as usize),
        };
        let Some(addr) = addr else { continue };
        if live.iter().any(|b| b.addr == addr) {
            continue;
        }
        let p = addr as *mut u8;
        match action {
            // SAFETY (all three): not a live block of STRATA: the checked
            // calls must refuse it without touching any live block.
            Action::Free => refused("free", addr, unsafe { STRATA.free(p) }),
            Action::FreeUncached => refused("free (uncached)", addr, unsafe { STRATA.domain().free_uncached(addr) }),
            Action::UsableSize => refused("usable_size", addr, STRATA.usable_size(p)),
            Action::Resize(Size(size), Align(align)) => {
                let layout = Layout::from_size_align(size, align).unwrap();
                refused("resize", addr, unsafe { STRATA.resize(p, layout) })
            }
        }
    }

    for block in &live {
        verify(block);
        assert_eq!(STRATA.usable_size(block.addr as *const u8), Ok(block.usable));
        // SAFETY: a live block.
        unsafe { STRATA.free(block.addr as *mut u8) }.unwrap_or_else(|e| panic!("free of live {block:?}: {e}"));
    }
    for block in &other {
        verify(block);
        // SAFETY: a live block of OTHER.
        unsafe { OTHER.free(block.addr as *mut u8) }.unwrap();
    }
    let stats = STRATA.stats();
    assert_eq!(stats.bytes_live, 0, "{stats}");
    assert_eq!(OTHER.stats().bytes_live, 0);
    STRATA.release_thread_cache();
    STRATA.purge();
    let stats = STRATA.stats();
    assert_eq!(stats.pages_mapped, 0, "pages left after a purge\n{stats}");
});
