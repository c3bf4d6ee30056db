//! Huge pages on request: the mappings of an `MmapSource` that asks for
//! them carry the `MADV_HUGEPAGE` advice (the `hg` flag of
//! `/proc/self/smaps`), those of one that does not never do, and
//! `Strata::with_huge_pages` allocates from advised mappings.

use std::alloc::{GlobalAlloc, Layout};
use std::ptr::NonNull;

use strata::source::{MmapSource, PageSource};
use strata::Strata;

const PAGE: usize = 4 << 20;

/// Whether the mapping that holds `address` carries the huge-page advice.
/// Panics if no mapping holds it.
fn advised(address: usize) -> bool {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("/proc/self/smaps is readable");
    let mut inside = false;
    for line in smaps.lines() {
        let range = line.split_whitespace().next().and_then(|field| field.split_once('-'));
        if let Some((start, end)) = range.and_then(|(s, e)| Some((usize::from_str_radix(s, 16).ok()?, usize::from_str_radix(e, 16).ok()?))) {
            inside = (start..end).contains(&address);
        } else if inside {
            if let Some(flags) = line.strip_prefix("VmFlags:") {
                return flags.split_whitespace().any(|flag| flag == "hg");
            }
        }
    }
    panic!("no mapping holds {address:#x}");
}

/// Maps one page from `source`, reports whether it is advised, and unmaps it.
fn map_and_look(source: &MmapSource) -> bool {
    let page: NonNull<u8> = source.map(PAGE, PAGE, ()).expect("a 4 MiB mapping");
    // SAFETY: a fresh mapping of ours, writable.
    unsafe { page.as_ptr().write(1) };
    let advice = advised(page.as_ptr() as usize);
    // SAFETY: the mapping just made, unused from here on.
    unsafe { source.unmap(page, PAGE) };
    advice
}

#[test]
fn only_a_source_that_asks_advises_its_mappings() {
    assert!(map_and_look(&MmapSource::with_huge_pages()));
    assert!(!map_and_look(&MmapSource::new()));
    let source = MmapSource::new();
    source.set_huge_pages(true);
    assert!(source.huge_pages());
    assert!(map_and_look(&source));
    source.set_huge_pages(false);
    assert!(!source.huge_pages());
    assert!(!map_and_look(&source));
}

#[test]
fn strata_with_huge_pages_allocates_from_advised_mappings() {
    static HUGE: Strata = Strata::with_huge_pages();
    for size in [16, 4096, 3 << 20] {
        let layout = Layout::from_size_align(size, 16).expect("a valid layout");
        // SAFETY: a non-zero size.
        let block = unsafe { HUGE.alloc(layout) };
        assert!(!block.is_null(), "{size} bytes");
        // SAFETY: `block` holds `size` bytes.
        unsafe { block.write_bytes(0x5a, size) };
        assert!(advised(block as usize), "the block of {size} bytes lies in an advised mapping");
        // SAFETY: allocated above with `layout`.
        unsafe { HUGE.dealloc(block, layout) };
    }
}
