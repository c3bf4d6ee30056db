//! The static-arena page source, as a `no_std` target would use it: a
//! `static mut` region, the lock-protected heaps, no thread-locals and no
//! mmap. Run with `--no-default-features --features arena` to build the core
//! without `std`.

#![cfg(feature = "arena")]

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::addr_of_mut;

use strata::page::PAGE_SIZE;
use strata::source::ArenaSource;
use strata::{SharedStrata, SpinLock};

const ARENA_PAGES: usize = 4;
/// Room for `ARENA_PAGES` pages at any alignment of the region.
static mut REGION: [u8; (ARENA_PAGES + 1) * PAGE_SIZE] = [0; (ARENA_PAGES + 1) * PAGE_SIZE];

static ALLOCATOR: SharedStrata<ArenaSource, SpinLock, 2> = SharedStrata::new(ArenaSource::empty());

#[test]
fn static_arena_serves_until_full_and_recovers() {
    // SAFETY: the region is handed over once, here, and never used directly.
    let region: &'static mut [u8] = unsafe { &mut *addr_of_mut!(REGION) };
    assert!(ALLOCATOR.source().init(region));
    // A second region is refused. (Not `REGION` again: a second `&mut` to
    // it would invalidate the arena's pointers into it, which Miri reports
    // as undefined behaviour.)
    static mut OTHER: [u8; 4096] = [0; 4096];
    // SAFETY: `OTHER` is borrowed once, here.
    assert!(!ALLOCATOR.source().init(unsafe { &mut *addr_of_mut!(OTHER) }));

    // Fill the arena with 150 KiB spans (three slices each, 21 per page,
    // which leaves no slice over) until it refuses.
    let layout = Layout::from_size_align(150 * 1024, 16).unwrap();
    let mut blocks = Vec::new();
    loop {
        // SAFETY: a valid layout.
        let p = unsafe { ALLOCATOR.alloc(layout) };
        if p.is_null() {
            break;
        }
        // SAFETY: a fresh block of this size.
        unsafe { p.write_bytes(blocks.len() as u8, layout.size()) };
        blocks.push(p);
        assert!(blocks.len() < 1000, "the arena never ran out");
    }
    // Every page the arena could give was used, and nothing more.
    let stats = ALLOCATOR.stats();
    assert!(stats.pages_mapped >= ARENA_PAGES, "{stats}");
    assert_eq!(blocks.len(), stats.pages_mapped * (strata::page::USABLE_SLICES / 3));
    // Exhaustion is a null, never a crash; small requests need a slice too.
    let small = Layout::new::<[u64; 2]>();
    // SAFETY: a valid layout.
    assert!(unsafe { ALLOCATOR.alloc(small) }.is_null());

    // Contents survived; free half, and allocation works again from the
    // dirty slices without a new page.
    for (i, &p) in blocks.iter().enumerate() {
        // SAFETY: live blocks of `layout.size()` bytes.
        let bytes = unsafe { core::slice::from_raw_parts(p, layout.size()) };
        // Compared a page at a time (a `memcmp`), not byte by byte: this
        // test also runs under Miri, where 12 MiB of byte loop takes minutes.
        let expected = [i as u8; 4096];
        assert!(bytes.chunks(4096).all(|chunk| chunk == &expected[..chunk.len()]));
    }
    let kept = blocks.split_off(blocks.len() / 2);
    for p in blocks {
        // SAFETY: live block.
        unsafe { ALLOCATOR.dealloc(p, layout) };
    }
    // SAFETY: a valid layout.
    let again = unsafe { ALLOCATOR.alloc(small) };
    assert!(!again.is_null());
    // SAFETY: the arena is mapped memory, and `again` is live.
    unsafe { ALLOCATOR.dealloc(again, small) };
    for p in kept {
        // SAFETY: live block.
        unsafe { ALLOCATOR.dealloc(p, layout) };
    }
    ALLOCATOR.release_caches();
    assert_eq!(ALLOCATOR.stats().bytes_live, 0);

    // Purging returns every page to the arena: the whole region is free.
    let free_before = ALLOCATOR.source().free_bytes();
    ALLOCATOR.purge();
    let stats = ALLOCATOR.stats();
    assert_eq!(stats.pages_mapped, 0, "{stats}");
    assert!(ALLOCATOR.source().free_bytes() >= free_before + ARENA_PAGES * PAGE_SIZE);
}
