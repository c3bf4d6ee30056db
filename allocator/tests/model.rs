//! Randomized model test: random allocate, reallocate and free sequences,
//! checked against a simple model for overlap, alignment and contents.

use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;

use strata::source::{ArenaSource, MmapSource};
use strata::{SharedStrata, SpinLock, Strata};

/// A small deterministic generator (xorshift*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Mostly small sizes, some spans, a few huge.
    fn size(&mut self) -> usize {
        match self.below(100) {
            0..=69 => self.below(256) as usize,
            70..=89 => self.below(32 * 1024) as usize + 1,
            90..=98 => self.below(1 << 20) as usize + 1,
            _ => self.below(6 << 20) as usize + 1,
        }
    }

    fn align(&mut self) -> usize {
        match self.below(20) {
            0 => 1 << self.below(23), // up to 4 MiB
            1..=3 => 1 << self.below(7),
            _ => 8,
        }
    }
}

struct Block {
    layout: Layout,
    fill: u8,
}

fn check(ptr: *mut u8, block: &Block) {
    // SAFETY: the model says the block is live with this layout.
    let bytes = unsafe { std::slice::from_raw_parts(ptr, block.layout.size()) };
    // Slice equality is one `memcmp` per chunk: fast natively, and checked
    // as one range by ThreadSanitizer and Miri, where a byte-by-byte loop
    // over megabyte blocks takes minutes.
    const CHUNK: usize = 4096;
    let expected = [block.fill; CHUNK];
    for (i, chunk) in bytes.chunks(CHUNK).enumerate() {
        if chunk != &expected[..chunk.len()] {
            let at = i * CHUNK + chunk.iter().position(|&b| b != block.fill).unwrap_or(0);
            panic!("contents lost at {ptr:p}+{at}: {:#x} instead of {:#x}", bytes[at], block.fill);
        }
    }
}

fn run(allocator: &dyn GlobalAlloc, usable: &dyn Fn(*mut u8) -> usize, seed: u64, steps: usize) {
    let mut rng = Rng(seed);
    let mut live: BTreeMap<usize, Block> = BTreeMap::new();
    let mut fill = 0u8;
    for step in 0..steps {
        fill = fill.wrapping_add(1);
        let action = rng.below(10);
        if action < 5 || live.is_empty() {
            let layout = Layout::from_size_align(rng.size(), rng.align()).unwrap();
            let zeroed = rng.below(4) == 0;
            // SAFETY: a valid layout.
            let ptr = unsafe { if zeroed { allocator.alloc_zeroed(layout) } else { allocator.alloc(layout) } };
            assert!(!ptr.is_null(), "step {step}: out of memory for {layout:?}");
            assert_eq!(ptr as usize % layout.align(), 0, "step {step}: misaligned {layout:?}");
            assert!(usable(ptr) >= layout.size());
            if zeroed {
                check(ptr, &Block { layout, fill: 0 });
            }
            // No overlap with the neighbours in address order.
            let start = ptr as usize;
            let end = start + layout.size().max(1);
            if let Some((&before, block)) = live.range(..=start).next_back() {
                assert!(before + block.layout.size().max(1) <= start, "step {step}: overlap");
            }
            if let Some((&after, _)) = live.range(start..).next() {
                assert!(end <= after, "step {step}: overlap");
            }
            // SAFETY: fresh block of this size.
            unsafe { ptr.write_bytes(fill, layout.size()) };
            live.insert(start, Block { layout, fill });
        } else {
            let index = rng.below(live.len() as u64) as usize;
            let (&address, _) = live.iter().nth(index).unwrap();
            let block = live.remove(&address).unwrap();
            let ptr = address as *mut u8;
            check(ptr, &block);
            if action < 8 {
                // SAFETY: live block with its layout.
                unsafe { allocator.dealloc(ptr, block.layout) };
            } else {
                let new_size = rng.size();
                // SAFETY: live block; a valid new size.
                let moved = unsafe { allocator.realloc(ptr, block.layout, new_size) };
                assert!(!moved.is_null());
                let kept = Layout::from_size_align(block.layout.size().min(new_size), block.layout.align()).unwrap();
                check(moved, &Block { layout: kept, fill: block.fill });
                assert_eq!(moved as usize % block.layout.align(), 0);
                let layout = Layout::from_size_align(new_size, block.layout.align()).unwrap();
                // SAFETY: the block now has `new_size` bytes.
                unsafe { moved.write_bytes(fill, new_size) };
                let start = moved as usize;
                if let Some((&before, b)) = live.range(..=start).next_back() {
                    assert!(before + b.layout.size().max(1) <= start, "step {step}: realloc overlap");
                }
                if let Some((&after, _)) = live.range(start..).next() {
                    assert!(start + new_size.max(1) <= after, "step {step}: realloc overlap");
                }
                live.insert(start, Block { layout, fill });
            }
        }
    }
    for (address, block) in live {
        check(address as *mut u8, &block);
        // SAFETY: live block.
        unsafe { allocator.dealloc(address as *mut u8, block.layout) };
    }
}

#[test]
fn model_thread_local_front() {
    static STRATA: Strata = Strata::new();
    for seed in 1..=4 {
        run(&STRATA, &|p| STRATA.usable_size(p).unwrap(), seed * 7919, 20_000);
    }
    assert_eq!(STRATA.stats().bytes_live, 0);
    STRATA.purge();
    let stats = STRATA.stats();
    assert_eq!(stats.bytes_live, 0);
    assert_eq!(stats.slices_dirty, 0, "purge leaves nothing dirty");
}

#[test]
fn model_shared_front_on_mmap() {
    static SHARED: SharedStrata<MmapSource, SpinLock, 2> = SharedStrata::new(MmapSource::new());
    run(&SHARED, &|p| SHARED.usable_size(p).unwrap(), 42, 20_000);
    assert_eq!(SHARED.stats().bytes_live, 0);
}

#[test]
fn model_shared_front_on_arena() {
    static SHARED: SharedStrata<ArenaSource, SpinLock, 2> = SharedStrata::new(ArenaSource::empty());
    // Miri interprets every step: fewer steps, and a region to match.
    let (region, steps) = if cfg!(miri) { (192 << 20, 400) } else { (1 << 30, 6_000) };
    let region: &'static mut [u8] = Box::leak(vec![0u8; region].into_boxed_slice());
    assert!(SHARED.source().init(region));
    run(&SHARED, &|p| SHARED.usable_size(p).unwrap(), 4242, steps);
    SHARED.release_caches();
    assert_eq!(SHARED.stats().bytes_live, 0);
}
