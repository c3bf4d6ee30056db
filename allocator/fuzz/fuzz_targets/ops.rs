//! `ops`: operation sequences against a model.
//!
//! Two allocators, each over a `FailingSource<MmapSource>` whose failing
//! switch the input toggles:
//!
//! - `DOMAIN` with four `Heap`s used directly, standing for four threads
//!   (the input picks the heap of every call, so frees into another heap's
//!   slices are remote frees, deterministically), plus the heap-less
//!   `*_uncached` paths the std front uses for threads without a cache;
//! - `SHARED`, a `SharedStrata<_, SpinLock, 4>`, through its public API
//!   (`GlobalAlloc`, checked `free`, `alloc_bulk`/`free_bulk`).
//!
//! The model checks: no overlap between the usable ranges of live blocks,
//! alignment, contents (each block is filled over its whole usable size with
//! a pattern derived from its id and verified before every free and realloc),
//! `usable_size` (exact for small blocks and spans), zeroed allocations,
//! exact statistics (`bytes_live` is the sum of the usable sizes of the live
//! blocks: class size, whole slices for a span, the mapping after its header
//! for a huge block; per-class live objects; huge allocations), failures only
//! while the source is failing (and each one refused a mapping), the
//! all-or-nothing of `alloc_bulk`, and that bad pointers (freed, interior,
//! other allocator's) are refused and leave live blocks alone.
//!
//! The allocators are statics shared by every input of the process; each
//! input must leave them empty: every block freed, every heap released,
//! `bytes_live == 0`, no partial or full slice, and after a purge no page
//! mapped. That is checked at the end of every input, so inputs stay
//! independent (reproducible alone) and nothing leaks from one to the next.

#![no_main]

#[path = "common.rs"]
mod common;

use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;
use std::sync::Mutex;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use strata::size_class::CLASS_COUNT;
use strata::source::{FailingSource, MmapSource};
use strata::{Domain, FreeError, FreeErrorKind, Heap, SharedStrata, SpinLock, Stats};

use common::{check_usable, fill, is_zero, kind_of, mismatch, Align, Kind, Size};

type Source = FailingSource<MmapSource>;

const HEAPS: usize = 4;
/// Bytes written by fills per input, and bytes live at once: keep an input
/// fast and the process small.
const FILL_BUDGET: usize = 96 << 20;
const LIVE_BUDGET: usize = 256 << 20;
const MAX_BLOCKS: usize = 4096;
const MAX_OPS: usize = 1024;
/// Recently freed addresses kept for stale frees.
const FREED_RING: usize = 64;

static DOMAIN: Domain<Source, SpinLock> = Domain::new(FailingSource::new(MmapSource::new()));
static THREADS: Mutex<[Heap; HEAPS]> = Mutex::new([const { Heap::new() }; HEAPS]);
static SHARED: SharedStrata<Source, SpinLock, 4> = SharedStrata::new(FailingSource::new(MmapSource::new()));

/// Who makes a call: one of the simulated threads' heaps, a thread without
/// a heap, or the shared front.
#[derive(Debug, Clone, Copy)]
enum Front {
    Heap(u8),
    Uncached,
    Shared,
}

// Inputs are decoded compactly (one byte per tag, not the four of a derived
// enum) so that short inputs hold many operations.
impl<'a> Arbitrary<'a> for Front {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match u.arbitrary::<u8>()? % (HEAPS as u8 + 2) {
            h if (h as usize) < HEAPS => Front::Heap(h),
            h if h as usize == HEAPS => Front::Uncached,
            _ => Front::Shared,
        })
    }
}

/// A pointer that is not a live block, for `free_bulk`.
#[derive(Debug, Clone, Copy)]
enum Bad {
    Stale(u8),
    Interior(u16, u32),
    Position(u8),
}

impl<'a> Arbitrary<'a> for Bad {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match u.arbitrary::<u8>()? % 3 {
            0 => Bad::Stale(u.arbitrary()?),
            1 => Bad::Interior(u.arbitrary()?, u.arbitrary()?),
            _ => Bad::Position(u.arbitrary()?),
        })
    }
}

#[derive(Debug)]
enum Op {
    Alloc { front: Front, size: Size, align: Align, zeroed: bool },
    Realloc { index: u16, front: Front, size: Size, align: Option<Align> },
    Free { index: u16, front: Front },
    AllocBulk { front: Front, size: Size, align: Align, count: u8 },
    FreeBulk { index: u16, count: u8, front: Front, bad: Option<(Bad, u8)> },
    SetFailing(bool),
    CheckStats,
    VerifyAll,
    Release(u8),
    Flush(u8),
    Purge,
    PurgeDelayZero(bool),
    Grow,
    StaleFree { index: u8, front: Front },
    CrossFree { index: u16, front: Front },
    InteriorFree { index: u16, offset: u32, front: Front },
}

impl<'a> Arbitrary<'a> for Op {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        // Weighted: allocations and frees are most of a sequence.
        Ok(match u.arbitrary::<u8>()? % 24 {
            0..=4 => Op::Alloc { front: u.arbitrary()?, size: u.arbitrary()?, align: u.arbitrary()?, zeroed: u.arbitrary()? },
            5..=7 => Op::Free { index: u.arbitrary()?, front: u.arbitrary()? },
            8 | 9 => Op::Realloc { index: u.arbitrary()?, front: u.arbitrary()?, size: u.arbitrary()?, align: u.arbitrary()? },
            10 => Op::AllocBulk { front: u.arbitrary()?, size: u.arbitrary()?, align: u.arbitrary()?, count: u.arbitrary()? },
            11 => Op::FreeBulk { index: u.arbitrary()?, count: u.arbitrary()?, front: u.arbitrary()?, bad: u.arbitrary()? },
            12 | 13 => Op::SetFailing(u.arbitrary()?),
            14 => Op::CheckStats,
            15 => Op::VerifyAll,
            16 => Op::Release(u.arbitrary()?),
            17 => Op::Flush(u.arbitrary()?),
            18 => Op::Purge,
            19 => Op::PurgeDelayZero(u.arbitrary()?),
            20 => Op::Grow,
            21 => Op::StaleFree { index: u.arbitrary()?, front: u.arbitrary()? },
            22 => Op::CrossFree { index: u.arbitrary()?, front: u.arbitrary()? },
            _ => Op::InteriorFree { index: u.arbitrary()?, offset: u.arbitrary()?, front: u.arbitrary()? },
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Domain,
    Shared,
}

/// The API a call goes through.
#[derive(Debug, Clone, Copy)]
enum Api {
    Heap(usize),
    Uncached,
    Shared,
}

fn api_for(owner: Owner, front: Front) -> Api {
    match (owner, front) {
        (Owner::Shared, _) => Api::Shared,
        (Owner::Domain, Front::Heap(h)) => Api::Heap(h as usize % HEAPS),
        (Owner::Domain, _) => Api::Uncached,
    }
}

/// An API of the other allocator than `owner`.
fn other_api(owner: Owner, front: Front) -> Api {
    match (owner, front) {
        (Owner::Domain, _) => Api::Shared,
        (Owner::Shared, Front::Heap(h)) => Api::Heap(h as usize % HEAPS),
        (Owner::Shared, _) => Api::Uncached,
    }
}

fn owner_of(api: Api) -> Owner {
    match api {
        Api::Shared => Owner::Shared,
        _ => Owner::Domain,
    }
}

fn source(owner: Owner) -> &'static Source {
    match owner {
        Owner::Domain => DOMAIN.source(),
        Owner::Shared => SHARED.source(),
    }
}

fn usable_via(api: Api, p: *mut u8) -> Result<usize, FreeError> {
    match owner_of(api) {
        Owner::Domain => DOMAIN.usable_size(p as usize),
        Owner::Shared => SHARED.usable_size(p),
    }
}

#[derive(Debug, Clone, Copy)]
struct Block {
    addr: usize,
    size: usize,
    align: usize,
    usable: usize,
    id: u64,
    owner: Owner,
    kind: Kind,
}

struct Model<'h> {
    heaps: &'h mut [Heap; HEAPS],
    blocks: Vec<Block>,
    /// Usable ranges of live blocks: start -> end.
    ranges: BTreeMap<usize, usize>,
    freed: Vec<(usize, Owner)>,
    failing: bool,
    next_id: u64,
    filled: usize,
    live: usize,
    step: usize,
}

impl Model<'_> {
    fn alloc_via(&mut self, api: Api, layout: Layout, zeroed: bool) -> *mut u8 {
        match api {
            Api::Heap(h) if zeroed => self.heaps[h].alloc_zeroed(&DOMAIN, layout),
            Api::Heap(h) => self.heaps[h].alloc(&DOMAIN, layout),
            Api::Uncached => DOMAIN.allocate_uncached(layout, zeroed),
            // SAFETY: a valid layout; zero sizes are allowed by the front.
            Api::Shared if zeroed => unsafe { SHARED.alloc_zeroed(layout) },
            Api::Shared => unsafe { SHARED.alloc(layout) },
        }
    }

    /// # Safety
    /// A deliberate free of anything: the allocator must check it.
    unsafe fn free_via(&mut self, api: Api, p: *mut u8) -> Result<(), FreeError> {
        // SAFETY: the checked APIs refuse what is not a live block.
        unsafe {
            match api {
                Api::Heap(h) => self.heaps[h].free(&DOMAIN, p),
                Api::Uncached => DOMAIN.free_uncached(p as usize),
                Api::Shared => SHARED.free(p),
            }
        }
    }

    /// Whether `failing` allows a failed allocation, given the refusal count
    /// before the call.
    fn expect_failure(&self, what: &str, owner: Owner, refused_before: usize) {
        assert!(self.failing, "step {}: {what} failed while the source is not failing", self.step);
        assert!(
            source(owner).refused() > refused_before,
            "step {}: {what} failed without the source refusing a mapping",
            self.step
        );
    }

    fn index(&self, index: u16) -> Option<usize> {
        (!self.blocks.is_empty()).then(|| index as usize % self.blocks.len())
    }

    /// Rough upper bound of the usable size of a request.
    fn cost(size: usize, align: usize) -> usize {
        size.max(1) + align + 65536
    }

    fn affordable(&self, cost: usize) -> bool {
        self.filled + cost <= FILL_BUDGET && self.live + cost <= LIVE_BUDGET && self.blocks.len() < MAX_BLOCKS
    }

    fn check_no_overlap(&self, start: usize, end: usize) {
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back() {
            assert!(e <= start, "step {}: [{start:#x}, {end:#x}) overlaps live [{s:#x}, {e:#x})", self.step);
        }
        if let Some((&s, &e)) = self.ranges.range(start..).next() {
            assert!(end <= s, "step {}: [{start:#x}, {end:#x}) overlaps live [{s:#x}, {e:#x})", self.step);
        }
    }

    /// Takes a fresh block into the model: checks it and fills it.
    fn adopt(&mut self, p: *mut u8, size: usize, align: usize, owner: Owner, zeroed: bool, kind: Kind) {
        let addr = p as usize;
        assert_eq!(addr % align, 0, "step {}: {p:p} not aligned to {align} (size {size})", self.step);
        let api = if owner == Owner::Shared { Api::Shared } else { Api::Uncached };
        let usable = usable_via(api, p)
            .unwrap_or_else(|e| panic!("step {}: usable_size of fresh block {p:p}: {e}", self.step));
        check_usable(kind, size, align, usable);
        if zeroed {
            // SAFETY: a fresh block of at least `size` bytes.
            assert!(unsafe { is_zero(p, size) }, "step {}: zeroed block {p:p} is not zero", self.step);
        }
        self.check_no_overlap(addr, addr + usable);
        let id = self.next_id;
        self.next_id += 1;
        // SAFETY: every byte up to the usable size may be written.
        unsafe { fill(p, usable, id) };
        self.filled += usable;
        self.live += usable;
        self.ranges.insert(addr, addr + usable);
        self.blocks.push(Block { addr, size, align, usable, id, owner, kind });
    }

    fn verify(&self, block: &Block) {
        // SAFETY: a live block of `usable` bytes.
        if let Some(at) = unsafe { mismatch(block.addr as *const u8, block.usable, block.usable, block.id) } {
            panic!("step {}: contents of {block:?} changed at offset {at}", self.step);
        }
    }

    /// Drops block `i` from the model after it was freed (or moved).
    fn forget(&mut self, i: usize) -> Block {
        let block = self.blocks.swap_remove(i);
        self.ranges.remove(&block.addr);
        self.live -= block.usable;
        if self.freed.len() == FREED_RING {
            self.freed.remove(0);
        }
        self.freed.push((block.addr, block.owner));
        block
    }

    fn is_live_start(&self, addr: usize) -> bool {
        self.ranges.contains_key(&addr)
    }

    fn assert_refused(&self, what: &str, addr: usize, result: Result<(), FreeError>) -> FreeError {
        match result {
            Ok(()) => panic!("step {}: {what} of {addr:#x} (not a live block) succeeded", self.step),
            Err(error) => {
                assert_eq!(error.address, addr, "step {}: {what}: error names the wrong address", self.step);
                error
            }
        }
    }

    fn alloc(&mut self, front: Front, size: usize, align: usize, zeroed: bool) {
        if !self.affordable(Self::cost(size, align)) {
            return;
        }
        let layout = Layout::from_size_align(size, align).unwrap();
        let api = match front {
            Front::Heap(h) => Api::Heap(h as usize % HEAPS),
            Front::Uncached => Api::Uncached,
            Front::Shared => Api::Shared,
        };
        let owner = owner_of(api);
        let refused = source(owner).refused();
        let p = self.alloc_via(api, layout, zeroed);
        if p.is_null() {
            self.expect_failure("alloc", owner, refused);
            return;
        }
        self.adopt(p, size, align, owner, zeroed, kind_of(size, align));
    }

    fn free(&mut self, index: u16, front: Front) {
        let Some(i) = self.index(index) else { return };
        let block = self.blocks[i];
        self.verify(&block);
        let api = api_for(block.owner, front);
        let p = block.addr as *mut u8;
        // SAFETY: a live block, not used afterwards.
        if let Err(error) = unsafe { self.free_via(api, p) } {
            panic!("step {}: free of live {block:?} through {api:?}: {error}", self.step);
        }
        self.forget(i);
        assert!(usable_via(api, p).is_err(), "step {}: usable_size of freed {p:p} succeeded", self.step);
    }

    fn realloc(&mut self, index: u16, front: Front, size: usize, align: Option<usize>) {
        let Some(i) = self.index(index) else { return };
        let old = self.blocks[i];
        let api = api_for(old.owner, front);
        // GlobalAlloc::realloc keeps the alignment and needs a non-zero size.
        let (size, align) = match api {
            Api::Shared => (size.max(1), old.align),
            _ => (size, align.unwrap_or(old.align)),
        };
        if !self.affordable(Self::cost(size, align)) {
            return;
        }
        self.verify(&old);
        let p = old.addr as *mut u8;
        let layout = Layout::from_size_align(size, align).unwrap();
        let refused = source(old.owner).refused();
        // SAFETY: a live block; on success the old pointer is dropped.
        let result = unsafe {
            match api {
                Api::Heap(h) => self.heaps[h].realloc(&DOMAIN, p, layout),
                Api::Uncached => DOMAIN.reallocate_uncached(old.addr, layout),
                Api::Shared => {
                    let old_layout = Layout::from_size_align(old.size.max(1), old.align).unwrap();
                    Ok(GlobalAlloc::realloc(&SHARED, p, old_layout, size))
                }
            }
        };
        let q = result.unwrap_or_else(|e| panic!("step {}: realloc of live {old:?} via {api:?}: {e}", self.step));
        if q.is_null() {
            self.expect_failure("realloc", old.owner, refused);
            self.verify(&old);
            return;
        }
        assert_eq!(q as usize % align, 0, "step {}: realloc to {layout:?} gave misaligned {q:p}", self.step);
        let resized = q == p && usable_via(api, q).unwrap() != old.usable;
        if resized {
            // A span or huge block resized in place (a span grown into the
            // slices after it or shrunk, a mapping remapped where it is):
            // its first bytes are kept, and it is checked as a new block.
            assert!(!matches!(old.kind, Kind::Small(_)), "step {}: a small object changed its usable size in place", self.step);
            let kept = old.size.min(size);
            // SAFETY: the block holds at least `size` bytes.
            if let Some(at) = unsafe { mismatch(q, old.usable, kept, old.id) } {
                panic!("step {}: in-place resize of {old:?} to {layout:?} lost byte {at}", self.step);
            }
            self.blocks.swap_remove(i);
            self.ranges.remove(&old.addr);
            self.live -= old.usable;
            self.adopt(q, size, align, old.owner, false, kind_of(size, align));
            return;
        }
        if q == p {
            // Kept in place: the whole block is untouched.
            let usable = usable_via(api, q).unwrap();
            assert_eq!(usable, old.usable, "step {}: in-place realloc changed the usable size", self.step);
            assert!(usable >= size, "step {}: in-place realloc to {size} in {usable} bytes", self.step);
            self.verify(&old);
            let block = &mut self.blocks[i];
            block.size = size;
            block.align = align;
            let id = self.next_id;
            self.next_id += 1;
            block.id = id;
            // SAFETY: the whole usable size may be written.
            unsafe { fill(q, usable, id) };
            self.filled += usable;
            return;
        }
        // Moved: the first bytes came along, the old block is gone.
        let kept = old.size.min(size);
        // SAFETY: the new block holds at least `size` bytes.
        if let Some(at) = unsafe { mismatch(q, old.usable, kept, old.id) } {
            panic!("step {}: realloc of {old:?} to {layout:?} at {q:p} lost byte {at}", self.step);
        }
        self.forget(i);
        assert!(usable_via(api, p).is_err(), "step {}: usable_size of moved-from {p:p} succeeded", self.step);
        self.adopt(q, size, align, old.owner, false, kind_of(size, align));
    }

    fn alloc_bulk(&mut self, front: Front, size: usize, align: usize, count: u8) {
        let cost = Self::cost(size, align);
        let mut count = 1 + count as usize % 64;
        while count > 0 && !self.affordable(cost * count) {
            count /= 2;
        }
        if count == 0 || self.blocks.len() + count > MAX_BLOCKS {
            return;
        }
        let layout = Layout::from_size_align(size, align).unwrap();
        let (api, owner) = match front {
            Front::Heap(h) => (Api::Heap(h as usize % HEAPS), Owner::Domain),
            Front::Uncached => (Api::Heap(0), Owner::Domain),
            Front::Shared => (Api::Shared, Owner::Shared),
        };
        let mut out = vec![std::ptr::null_mut(); count];
        let refused = source(owner).refused();
        let got = match api {
            Api::Heap(h) => self.heaps[h].alloc_bulk(&DOMAIN, layout, &mut out),
            _ => SHARED.alloc_bulk(layout, &mut out),
        };
        if got == 0 {
            self.expect_failure("alloc_bulk", owner, refused);
            assert!(out.iter().all(|p| p.is_null()), "step {}: failed alloc_bulk left blocks", self.step);
            return;
        }
        assert_eq!(got, count, "step {}: alloc_bulk is all or nothing", self.step);
        for p in out {
            assert!(!p.is_null(), "step {}: alloc_bulk returned a null block", self.step);
            self.adopt(p, size, align, owner, false, kind_of(size, align));
        }
    }

    /// An address that is not a live block start, for a bad free.
    fn bad_address(&self, bad: Bad) -> Option<usize> {
        let addr = match bad {
            Bad::Stale(k) => {
                let &(addr, _) = self.freed.get(k as usize % self.freed.len().max(1))?;
                addr
            }
            Bad::Interior(index, offset) => {
                let block = self.blocks[self.index(index)?];
                block.addr + 1 + offset as usize % (block.usable - 1)
            }
            Bad::Position(k) => match k % 4 {
                0 => 0,
                1 => usize::MAX << 48 | 0x1000,
                2 => {
                    let block = self.blocks.first()?;
                    (block.addr & !((4 << 20) - 1)) + (4 << 20)
                }
                _ => &self.freed as *const _ as usize,
            },
        };
        (!self.is_live_start(addr)).then_some(addr)
    }

    fn free_bulk(&mut self, index: u16, count: u8, front: Front, bad: Option<(Bad, u8)>) {
        let Some(start) = self.index(index) else { return };
        let owner = self.blocks[start].owner;
        let api = match api_for(owner, front) {
            Api::Uncached => Api::Heap(0),
            api => api,
        };
        let want = 1 + count as usize % 32;
        // Blocks of the same allocator from `start` on, in model order.
        let mut chosen: Vec<usize> = (0..self.blocks.len())
            .map(|k| (start + k) % self.blocks.len())
            .filter(|&k| self.blocks[k].owner == owner)
            .take(want)
            .collect();
        for &k in &chosen {
            self.verify(&self.blocks[k]);
        }
        let mut pointers: Vec<*mut u8> = chosen.iter().map(|&k| self.blocks[k].addr as *mut u8).collect();
        let bad = bad.and_then(|(bad, at)| Some((self.bad_address(bad)?, at as usize % (pointers.len() + 1))));
        if let Some((addr, at)) = bad {
            pointers.insert(at, addr as *mut u8);
        }
        // SAFETY: live blocks, and possibly one bad pointer that must be refused.
        let result = unsafe {
            match api {
                Api::Heap(h) => self.heaps[h].free_bulk(&DOMAIN, &pointers),
                _ => SHARED.free_bulk(&pointers),
            }
        };
        match bad {
            Some((addr, _)) => {
                let error = self.assert_refused("free_bulk", addr, result);
                assert_ne!(error.kind, FreeErrorKind::Freed, "step {}: free reports a double free", self.step);
            }
            None => result.unwrap_or_else(|e| panic!("step {}: free_bulk of live blocks: {e}", self.step)),
        }
        // Every good block was freed, even past the bad one.
        chosen.sort_unstable_by(|a, b| b.cmp(a));
        for k in chosen {
            let block = self.forget(k);
            assert!(
                usable_via(api, block.addr as *mut u8).is_err(),
                "step {}: block {block:?} survived free_bulk",
                self.step
            );
        }
    }

    fn stale_free(&mut self, index: u8, front: Front) {
        let Some(&(addr, owner)) = self.freed.get(index as usize % self.freed.len().max(1)) else { return };
        if self.is_live_start(addr) {
            return;
        }
        for api in [api_for(owner, front), other_api(owner, front)] {
            // SAFETY: not a live block: the checked free must refuse it.
            let result = unsafe { self.free_via(api, addr as *mut u8) };
            let error = self.assert_refused("stale free", addr, result);
            assert_ne!(error.kind, FreeErrorKind::Freed, "step {}: free reports a double free", self.step);
            assert!(usable_via(api, addr as *mut u8).is_err(), "step {}: usable_size of freed {addr:#x}", self.step);
            if let Api::Heap(h) = api {
                let layout = Layout::from_size_align(8, 8).unwrap();
                // SAFETY: as above.
                let result = unsafe { self.heaps[h].realloc(&DOMAIN, addr as *mut u8, layout) };
                assert!(result.is_err(), "step {}: realloc of freed {addr:#x} succeeded", self.step);
            }
        }
    }

    fn cross_free(&mut self, index: u16, front: Front) {
        let Some(i) = self.index(index) else { return };
        let block = self.blocks[i];
        let api = other_api(block.owner, front);
        let p = block.addr as *mut u8;
        // SAFETY: a block of the other allocator: this one must refuse it.
        let result = unsafe { self.free_via(api, p) };
        let error = self.assert_refused("cross-allocator free", block.addr, result);
        assert_eq!(error.kind, FreeErrorKind::NotAllocated, "step {}", self.step);
        assert!(usable_via(api, p).is_err(), "step {}: usable_size across allocators", self.step);
        if let Api::Heap(h) = api {
            let layout = Layout::from_size_align(block.size, block.align).unwrap();
            // SAFETY: as above.
            let result = unsafe { self.heaps[h].realloc(&DOMAIN, p, layout) };
            assert!(result.is_err(), "step {}: realloc across allocators succeeded", self.step);
        }
        self.verify(&block);
    }

    fn interior_free(&mut self, index: u16, offset: u32, front: Front) {
        let Some(i) = self.index(index) else { return };
        let block = self.blocks[i];
        let addr = block.addr + 1 + offset as usize % (block.usable - 1);
        let api = api_for(block.owner, front);
        // SAFETY: inside a live block, not its start: must be refused.
        let result = unsafe { self.free_via(api, addr as *mut u8) };
        self.assert_refused("interior free", addr, result);
        assert!(usable_via(api, addr as *mut u8).is_err(), "step {}: usable_size of interior {addr:#x}", self.step);
        if let Api::Heap(h) = api {
            let layout = Layout::from_size_align(16, 8).unwrap();
            // SAFETY: as above.
            let result = unsafe { self.heaps[h].realloc(&DOMAIN, addr as *mut u8, layout) };
            assert!(result.is_err(), "step {}: realloc of interior {addr:#x} succeeded", self.step);
        }
        self.verify(&block);
    }

    /// Statistics in which every freed block is counted as freed.
    ///
    /// `bytes_live` counts objects waiting on a slice's remote list as live
    /// (see `ClassStats::objects_live`); flushing a heap collects the remote
    /// lists of its own slices, but also pushes its pending frees (and its
    /// batched remote frees, for the heaps that batch) onto the remote
    /// lists of slices other heaps own. So one pass over the heaps can leave freed objects counted; a
    /// second pass collects them (as `SharedStrata::stats` does), and then
    /// `bytes_live` is exactly the sum of the usable sizes of the live
    /// blocks.
    fn domain_stats(&mut self) -> Stats {
        for _pass in 0..2 {
            for heap in self.heaps.iter_mut() {
                heap.flush(&DOMAIN);
            }
        }
        DOMAIN.stats()
    }

    fn shared_stats() -> Stats {
        // `SharedStrata::stats` makes both passes itself.
        SHARED.stats()
    }

    fn check_stats(&mut self) {
        let domain = self.domain_stats();
        let shared = Self::shared_stats();
        for (owner, stats) in [(Owner::Domain, &domain), (Owner::Shared, &shared)] {
            let blocks = self.blocks.iter().filter(|b| b.owner == owner);
            let bytes: usize = blocks.clone().map(|b| b.usable).sum();
            assert_eq!(stats.bytes_live, bytes, "step {}: {owner:?} bytes_live\n{stats}", self.step);
            let huge = blocks.clone().filter(|b| b.kind == Kind::Huge).count();
            assert_eq!(stats.huge_allocations, huge, "step {}: {owner:?} huge allocations", self.step);
            let mut objects = [0usize; CLASS_COUNT];
            for block in blocks {
                if let Kind::Small(class) = block.kind {
                    objects[class] += 1;
                }
            }
            for (class, (&want, got)) in objects.iter().zip(stats.classes.iter()).enumerate() {
                assert_eq!(got.objects_live, want, "step {}: {owner:?} class {class} objects", self.step);
            }
            assert!(stats.bytes_live <= stats.bytes_mapped, "step {}: {owner:?}\n{stats}", self.step);
        }
    }

    fn set_failing(&mut self, failing: bool) {
        self.failing = failing;
        DOMAIN.source().set_failing(failing);
        SHARED.source().set_failing(failing);
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Alloc { front, size, align, zeroed } => self.alloc(front, size.0, align.0, zeroed),
            Op::Realloc { index, front, size, align } => self.realloc(index, front, size.0, align.map(|a| a.0)),
            Op::Free { index, front } => self.free(index, front),
            Op::AllocBulk { front, size, align, count } => self.alloc_bulk(front, size.0, align.0, count),
            Op::FreeBulk { index, count, front, bad } => self.free_bulk(index, count, front, bad),
            Op::SetFailing(failing) => self.set_failing(failing),
            Op::CheckStats => self.check_stats(),
            Op::VerifyAll => self.blocks.iter().for_each(|b| self.verify(b)),
            Op::Release(h) => match h as usize % (HEAPS + 1) {
                HEAPS => SHARED.release_caches(),
                h => self.heaps[h].release(&DOMAIN, false),
            },
            Op::Flush(h) => self.heaps[h as usize % HEAPS].flush(&DOMAIN),
            Op::Purge => {
                DOMAIN.purge_all();
                SHARED.purge();
            }
            Op::PurgeDelayZero(zero) => {
                let delay = if zero { 0 } else { u64::MAX };
                DOMAIN.set_purge_delay_ms(delay);
                SHARED.domain().set_purge_delay_ms(delay);
            }
            Op::Grow => {
                let grown = DOMAIN.grow(());
                assert_eq!(grown, !self.failing, "step {}: grow", self.step);
            }
            Op::StaleFree { index, front } => self.stale_free(index, front),
            Op::CrossFree { index, front } => self.cross_free(index, front),
            Op::InteriorFree { index, offset, front } => self.interior_free(index, offset, front),
        }
    }

    /// Frees everything and checks that the allocators are empty again.
    fn finish(&mut self) {
        self.set_failing(false);
        self.step = usize::MAX;
        self.check_stats();
        while let Some(block) = self.blocks.last().copied() {
            self.verify(&block);
            let front = Front::Heap(block.id as u8);
            // SAFETY: a live block.
            if let Err(error) = unsafe { self.free_via(api_for(block.owner, front), block.addr as *mut u8) } {
                panic!("final free of {block:?}: {error}");
            }
            self.forget(self.blocks.len() - 1);
        }
        for heap in self.heaps.iter_mut() {
            heap.release(&DOMAIN, false);
        }
        SHARED.release_caches();
        for (owner, stats) in [(Owner::Domain, DOMAIN.stats()), (Owner::Shared, SHARED.stats())] {
            assert_eq!(stats.bytes_live, 0, "{owner:?}: bytes live after freeing everything\n{stats}");
            assert_eq!(stats.huge_allocations, 0, "{owner:?}\n{stats}");
            assert_eq!(stats.slices_partial + stats.slices_full, 0, "{owner:?}: slices in use\n{stats}");
            assert!(stats.classes.iter().all(|c| c.slices == 0 && c.objects_live == 0), "{owner:?}\n{stats}");
        }
        DOMAIN.purge_all();
        SHARED.purge();
        for (owner, stats) in [(Owner::Domain, DOMAIN.stats()), (Owner::Shared, SHARED.stats())] {
            assert_eq!(stats.pages_mapped, 0, "{owner:?}: pages left after a purge\n{stats}");
            assert_eq!(stats.bytes_mapped, 0, "{owner:?}: bytes left after a purge\n{stats}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut threads = THREADS.lock().unwrap_or_else(|e| e.into_inner());
    // Half the simulated threads batch their remote frees, as the std
    // front's and the shim's heaps do; the others push each one at once.
    for (index, heap) in threads.iter_mut().enumerate() {
        heap.set_remote_batching(&DOMAIN, index % 2 == 0);
    }
    let mut model = Model {
        heaps: &mut threads,
        blocks: Vec::new(),
        ranges: BTreeMap::new(),
        freed: Vec::new(),
        failing: false,
        next_id: 1,
        filled: 0,
        live: 0,
        step: 0,
    };
    model.set_failing(false);
    DOMAIN.set_purge_delay_ms(u64::MAX);
    SHARED.domain().set_purge_delay_ms(u64::MAX);
    let trace = std::env::var_os("STRATA_FUZZ_TRACE").is_some();
    let mut input = Unstructured::new(data);
    while model.step < MAX_OPS && !input.is_empty() {
        let Ok(op) = input.arbitrary::<Op>() else { break };
        if trace {
            eprintln!("step {}: {op:?}", model.step);
        }
        model.apply(op);
        model.step += 1;
    }
    model.finish();
});
