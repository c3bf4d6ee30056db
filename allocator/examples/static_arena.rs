//! Strata the way a `no_std` target uses it: `SharedStrata` over
//! `ArenaSource`, a static region, lock-protected heaps and no OS.
//!
//! The example itself runs on a host with `std`, to print; the allocator
//! part needs only the `arena` feature (`default-features = false,
//! features = ["arena"]`). On a `no_std` target, put `#[global_allocator]`
//! on `ALLOCATOR` and hand it its region first thing at start-up.
//!
//! ```sh
//! cargo run --release -p strata-alloc --example static_arena
//! ```

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::addr_of_mut;

use strata::page::PAGE_SIZE;
use strata::source::ArenaSource;
use strata::{SharedStrata, SpinLock};

/// The memory the allocator may use: on a real target, often a region the
/// linker script sets aside. Aligned to a page (4 MiB), all four pages are
/// usable; an unaligned region loses up to one.
#[repr(C, align(4194304))]
struct Region([u8; 4 * PAGE_SIZE]);

static mut REGION: Region = Region([0; 4 * PAGE_SIZE]);

/// Two heaps, picked with `try_lock`: two CPUs (or an interrupt handler and
/// the main loop) rarely wait for each other.
static ALLOCATOR: SharedStrata<ArenaSource, SpinLock, 2> = SharedStrata::new(ArenaSource::empty());

fn main() {
    // SAFETY: the region is handed over here, once, and never used directly.
    let region: &'static mut [u8] = unsafe { &mut (*addr_of_mut!(REGION)).0 };

    // A region must hold one page aligned to 4 MiB: 1 MiB is refused, with
    // the reason, and the arena stays free to take another region.
    let (small, rest) = region.split_at_mut(1 << 20);
    match ALLOCATOR.source().try_init(small) {
        Ok(()) => unreachable!("a 1 MiB region holds no page"),
        Err(error) => println!("refused: {error}"),
    }
    // The rest (15 MiB starting 1 MiB past a boundary) holds three pages.
    ALLOCATOR.source().try_init(rest).expect("15 MiB holds an aligned page");

    // Allocate through `GlobalAlloc`, as `Box` and `Vec` would on the target.
    let layout = Layout::from_size_align(48 * 1024, 64).unwrap();
    let mut blocks = Vec::new();
    loop {
        // SAFETY: a valid layout with a non-zero size.
        let block = unsafe { ALLOCATOR.alloc(layout) };
        if block.is_null() {
            break; // Out of memory is a null, never a crash.
        }
        // SAFETY: a fresh block of `layout.size()` bytes.
        unsafe { block.write_bytes(0xa5, layout.size()) };
        blocks.push(block);
    }
    let stats = ALLOCATOR.stats();
    println!(
        "the arena ran out after {} blocks of {} KiB: {} pages mapped, {} bytes live",
        blocks.len(),
        layout.size() / 1024,
        stats.pages_mapped,
        stats.bytes_live
    );

    for block in blocks {
        // SAFETY: each block is live and was allocated with `layout`.
        unsafe { ALLOCATOR.dealloc(block, layout) };
    }
    // Give the heaps' cached slices back and every empty page to the arena.
    ALLOCATOR.release_caches();
    ALLOCATOR.purge();
    let stats = ALLOCATOR.stats();
    println!(
        "after freeing: {} bytes live, {} pages mapped, {} bytes of the region free",
        stats.bytes_live,
        stats.pages_mapped,
        ALLOCATOR.source().free_bytes()
    );
}
