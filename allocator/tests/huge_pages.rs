//! Huge pages on request. A source that asks for them advises every
//! mapping it makes `MADV_HUGEPAGE` (the `hg` flag of `/proc/self/smaps`),
//! slab pages and huge blocks alike, so that each 2 MiB part is on a huge
//! page from its first touch; the first purge in a part of a slab page
//! splits it (`MADV_NOHUGEPAGE`, the `nh` flag) and gives back the slices
//! the huge page made resident unused; a part that fills again is collapsed
//! back onto a huge page. A source that does not ask does none of this.
//!
//! The collapse needs a kernel with `MADV_COLLAPSE` (6.1) and transparent
//! huge pages not set to `never`, as this project's machines have.

use std::alloc::{GlobalAlloc, Layout};
use std::ptr::NonNull;
use std::sync::Mutex;

use strata::source::{MmapSource, PageSource};
use strata::Strata;

const PAGE: usize = 4 << 20;

/// Held by the tests that read `AnonHugePages`: the allocators of the tests
/// running beside them may map pages next to theirs, in the same mapping.
static SMAPS: Mutex<()> = Mutex::new(());

/// A field (`VmFlags`, `AnonHugePages`, ...) of the `/proc/self/smaps` entry
/// of the mapping that holds `address`. Panics if no mapping holds it.
fn smaps_field(address: usize, field: &str) -> String {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("/proc/self/smaps is readable");
    let mut inside = false;
    for line in smaps.lines() {
        let range = line.split_whitespace().next().and_then(|field| field.split_once('-'));
        if let Some((start, end)) = range.and_then(|(s, e)| Some((usize::from_str_radix(s, 16).ok()?, usize::from_str_radix(e, 16).ok()?))) {
            inside = (start..end).contains(&address);
        } else if inside {
            if let Some(value) = line.strip_prefix(field).and_then(|rest| rest.strip_prefix(':')) {
                return value.trim().to_string();
            }
        }
    }
    panic!("no mapping holds {address:#x}, or it has no {field}");
}

/// Whether the mapping that holds `address` carries the huge-page advice.
fn advised(address: usize) -> bool {
    smaps_field(address, "VmFlags").split_whitespace().any(|flag| flag == "hg")
}

/// Kilobytes of the mapping holding `address` that are on huge pages.
fn huge_kilobytes(address: usize) -> usize {
    let value = smaps_field(address, "AnonHugePages");
    value.trim_end_matches("kB").trim().parse().expect("AnonHugePages in kB")
}

/// Maps `size` bytes from `source`, reports whether they are advised, and
/// unmaps them.
fn map_and_look(source: &MmapSource, size: usize) -> bool {
    let memory: NonNull<u8> = source.map(size, PAGE, ()).expect("a mapping");
    // SAFETY: a fresh mapping of ours, writable.
    unsafe { memory.as_ptr().write(1) };
    let advice = advised(memory.as_ptr() as usize);
    // SAFETY: the mapping just made, unused from here on.
    unsafe { source.unmap(memory, size) };
    advice
}

#[test]
fn only_a_source_that_asks_advises_its_mappings() {
    let huge_block = 3 * PAGE;
    let asking = MmapSource::with_huge_pages();
    assert!(asking.collapses());
    assert!(map_and_look(&asking, huge_block));
    assert!(map_and_look(&asking, PAGE), "a slab page is on huge pages from its first touch");
    assert!(!map_and_look(&MmapSource::new(), huge_block));
    assert!(!map_and_look(&MmapSource::new(), PAGE));
    let source = MmapSource::new();
    assert!(!source.collapses());
    source.set_huge_pages(true);
    assert!(source.huge_pages() && source.collapses());
    assert!(map_and_look(&source, huge_block));
    source.set_huge_pages(false);
    assert!(!source.huge_pages() && !source.collapses());
    assert!(!map_and_look(&source, huge_block));
}

/// `count` blocks of `size` bytes from `strata`, block `i` filled with the
/// byte `i as u8`.
fn fill(strata: &Strata, count: usize, size: usize) -> Vec<(usize, Layout)> {
    let layout = Layout::from_size_align(size, 16).expect("a valid layout");
    (0..count)
        .map(|index| {
            // SAFETY: a non-zero size.
            let block = unsafe { strata.alloc(layout) };
            assert!(!block.is_null());
            // SAFETY: `block` holds `size` bytes.
            unsafe { block.write_bytes(index as u8, size) };
            (block as usize, layout)
        })
        .collect()
}

/// Frees the blocks of [`fill`], checking their contents on the way.
fn check_and_free(strata: &Strata, blocks: Vec<(usize, Layout)>) {
    for (index, (block, layout)) in blocks.into_iter().enumerate() {
        // SAFETY: a live block of `layout.size()` bytes, written by `fill`.
        let bytes = unsafe { std::slice::from_raw_parts(block as *const u8, layout.size()) };
        assert!(bytes.iter().all(|&byte| byte == index as u8), "block {index} changed");
        // SAFETY: allocated by `fill` with `layout`.
        unsafe { strata.dealloc(block as *mut u8, layout) };
    }
}

#[test]
fn with_huge_pages_pages_are_on_huge_pages_from_their_first_touch_and_keep_their_contents() {
    static HUGE: Strata = Strata::with_huge_pages();
    let _serial = SMAPS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // 40,000 blocks of 256 bytes: 10 MB, two pages filled and a third begun.
    let blocks = fill(&HUGE, 40_000, 256);
    let stats = HUGE.stats();
    assert!(stats.pages_mapped >= 3, "{stats}");
    assert!(advised(blocks[0].0));
    assert!(huge_kilobytes(blocks[0].0) >= 4096, "the first page is on huge pages");
    // Nothing was collapsed: the parts were on huge pages already.
    assert_eq!(stats.parts_collapsed, 0, "{stats}");
    // A huge block is advised, and so backed by huge pages as it is written.
    let layout = Layout::from_size_align(3 * PAGE, 16).expect("a valid layout");
    // SAFETY: a non-zero size.
    let block = unsafe { HUGE.alloc(layout) };
    assert!(!block.is_null());
    // SAFETY: `block` holds the layout's size.
    unsafe { block.write_bytes(0x5a, layout.size()) };
    assert!(advised(block as usize));
    // SAFETY: allocated above with `layout`.
    unsafe { HUGE.dealloc(block, layout) };
    check_and_free(&HUGE, blocks);
    HUGE.purge();
    assert_eq!(HUGE.stats().bytes_live, 0);
}

/// How a test block reaches its size.
#[derive(Clone, Copy)]
enum Made {
    /// Allocated at its size.
    Allocated,
    /// Allocated at `from` bytes, filled, and grown by `realloc`.
    Grown { from: usize },
}

/// A block of `size` bytes from `strata`, made as `made` says and filled;
/// returns whether its mapping is advised and how many kilobytes of it are
/// on huge pages, then checks and frees it.
fn huge_block_advice(strata: &Strata, size: usize, made: Made) -> (bool, usize) {
    let layout = Layout::from_size_align(size, 16).expect("a valid layout");
    let block = match made {
        // SAFETY: a non-zero size.
        Made::Allocated => unsafe { strata.alloc(layout) },
        Made::Grown { from } => {
            let first = Layout::from_size_align(from, 16).expect("a valid layout");
            // SAFETY: a non-zero size.
            let block = unsafe { strata.alloc(first) };
            assert!(!block.is_null());
            // SAFETY: `block` holds `from` bytes.
            unsafe { block.write_bytes(0xa5, from) };
            // SAFETY: allocated above with `first`; a non-zero new size.
            let grown = unsafe { strata.realloc(block, first, size) };
            assert!(!grown.is_null());
            // SAFETY: the grown block holds the old block's `from` bytes.
            let kept = unsafe { std::slice::from_raw_parts(grown, from) };
            assert!(kept.iter().all(|&byte| byte == 0xa5), "realloc lost the contents");
            grown
        }
    };
    assert!(!block.is_null());
    // SAFETY: `block` holds the layout's size.
    unsafe { block.write_bytes(0xa5, size) };
    let seen = (advised(block as usize), huge_kilobytes(block as usize));
    // SAFETY: `block` holds `size` bytes, written above.
    let bytes = unsafe { std::slice::from_raw_parts(block, size) };
    assert!(bytes.iter().all(|&byte| byte == 0xa5), "the huge block changed");
    // SAFETY: a live block of `layout`'s size and alignment.
    unsafe { strata.dealloc(block, layout) };
    seen
}

#[test]
fn without_huge_pages_only_huge_blocks_that_grow_are_advised() {
    static SMALL: Strata = Strata::new();
    let _serial = SMAPS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let blocks = fill(&SMALL, 40_000, 256);
    let stats = SMALL.stats();
    assert!(stats.pages_mapped >= 3, "{stats}");
    assert_eq!(stats.parts_collapsed, 0, "{stats}");
    assert!(!advised(blocks[0].0));
    assert!(SMALL.domain().source().huge_blocks());
    // 12 MiB from a 4 MiB boundary: its first 2 MiB parts lie wholly in it.
    let (advice, _) = huge_block_advice(&SMALL, 3 * PAGE, Made::Allocated);
    assert!(!advice, "a huge block allocated at its size is advised");
    SMALL.purge();
    // From a span to a huge block: a new mapping, advised before the copy.
    let (advice, kilobytes) = huge_block_advice(&SMALL, 3 * PAGE, Made::Grown { from: 1 << 20 });
    assert!(advice, "a huge block grown from a span is not advised");
    assert!(kilobytes >= 2048, "a filled huge block is on huge pages: {kilobytes} kB");
    SMALL.purge();
    // From a huge block to a longer one: the remapped mapping is advised.
    let (advice, kilobytes) = huge_block_advice(&SMALL, 6 * PAGE, Made::Grown { from: 3 * PAGE });
    assert!(advice, "a huge block grown by a remap is not advised");
    assert!(kilobytes >= 2048, "a filled huge block is on huge pages: {kilobytes} kB");
    check_and_free(&SMALL, blocks);
}

#[test]
fn with_huge_blocks_off_nothing_is_advised() {
    static OFF: Strata = Strata::new();
    OFF.domain().source().set_huge_blocks(false);
    let _serial = SMAPS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let blocks = fill(&OFF, 40_000, 256);
    assert!(!advised(blocks[0].0));
    let (advice, _) = huge_block_advice(&OFF, 3 * PAGE, Made::Grown { from: 1 << 20 });
    assert!(!advice, "huge blocks turned off, yet a grown huge block is advised");
    let (advice, _) = huge_block_advice(&OFF, 6 * PAGE, Made::Grown { from: 3 * PAGE });
    assert!(!advice, "huge blocks turned off, yet a remapped huge block is advised");
    check_and_free(&OFF, blocks);
    OFF.purge();
    OFF.domain().source().set_huge_blocks(true);
    assert!(huge_block_advice(&OFF, 3 * PAGE, Made::Grown { from: 1 << 20 }).0);
}

/// Kilobytes resident in the slab page that holds `address` (`mincore`):
/// the page alone, whatever mapping the kernel has merged it into.
fn resident_kilobytes(address: usize) -> usize {
    let page = address & !(PAGE - 1);
    let mut vector = vec![0u8; PAGE / 4096];
    // SAFETY: a mapped slab page of the test's allocator, and a vector with
    // a byte per 4 KiB page of it.
    let result = unsafe { libc::mincore(page as *mut libc::c_void, PAGE, vector.as_mut_ptr()) };
    assert_eq!(result, 0, "mincore of a live page");
    vector.iter().filter(|&&byte| byte & 1 != 0).count() * 4
}

/// A purge in a part splits its huge page and advises the part to stay on
/// small pages; an explicit purge also gives back the never-used slices of
/// a part a huge page made resident; a part filled again is collapsed back
/// onto a huge page; and every block keeps its contents throughout.
#[test]
fn a_purge_splits_a_part_and_a_refill_collapses_it_again() {
    static AGAIN: Strata = Strata::with_huge_pages();
    let _serial = SMAPS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut blocks = fill(&AGAIN, 36_000, 256);
    let kept = blocks[4096].0;
    let last = blocks[blocks.len() - 1].0;
    let before = AGAIN.stats();
    let huge_before = huge_kilobytes(kept);
    assert!(huge_before >= 4096, "{before}");
    // The third page is begun: 36,000 blocks, 256 to a slice, fill 141
    // slices, 126 of them on the first two pages. The third page's part 0
    // (its header slice and 31 others) is on a huge page, which made the
    // 16 slices it has not used yet resident.
    assert!(advised(last) && huge_kilobytes(last) >= 2048);
    assert!(resident_kilobytes(last) >= 2048);
    // The first 4,096 blocks fill the first 16 slices of 256 objects each
    // (a thread takes a slice's objects before the next slice's), all in
    // the first page's first part: freed and purged, they split it.
    let freed: Vec<_> = blocks.drain(..4096).collect();
    check_and_free(&AGAIN, freed);
    AGAIN.purge();
    let purged = AGAIN.stats();
    assert!(purged.slices_purged >= 16, "{purged}");
    assert!(huge_kilobytes(kept) < huge_before, "the purge split a huge page");
    assert!(!advised(kept), "the split part stays on small pages");
    // The third page was split too, and gave back its clean slices: what
    // stays resident is its header (20 KiB) and its 15 slices in use (960
    // KiB, less the tail of the last).
    assert_eq!(huge_kilobytes(last), 0);
    assert!(resident_kilobytes(last) <= 980, "{} kB resident", resident_kilobytes(last));
    // As many blocks again: the fuller page's purged slices are taken
    // first, no page is mapped, and the part is collapsed again.
    let refill = fill(&AGAIN, 4096, 256);
    let refilled = AGAIN.stats();
    assert_eq!(refilled.pages_mapped, before.pages_mapped, "{refilled}");
    assert!(refilled.parts_collapsed > before.parts_collapsed, "{refilled}");
    assert!(advised(kept), "advised again for its collapse");
    assert!(huge_kilobytes(kept) >= 2048, "the part is on a huge page again");
    check_and_free(&AGAIN, refill);
    // Block `i` of those left was block `i + 4096` of `fill`: the same byte.
    check_and_free(&AGAIN, blocks);
}
