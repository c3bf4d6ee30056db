//! Statistics: a snapshot of the domain's pages, slices and counters.

use super::*;

impl<S: PageSource, L: RawLock> Domain<S, L> {
    /// A snapshot of the domain.
    pub fn stats(&self) -> Stats {
        let mut stats = Stats::zero();
        self.locked(|inner| {
            let mut page = inner.all_pages;
            while !page.is_null() {
                // SAFETY: live page header.
                let header = unsafe { &*page };
                stats.pages_mapped += 1;
                // The header's descriptors, written when the page was mapped.
                stats.bytes_resident += core::mem::size_of::<PageHeader>().next_multiple_of(4096);
                for slice in &header.slices[FIRST_SLICE..] {
                    let state = slice.state.get();
                    let flags = slice.flags.get();
                    match state {
                        SliceState::Clean => stats.slices_clean += 1,
                        SliceState::Partial => stats.slices_partial += 1,
                        SliceState::Full => stats.slices_full += 1,
                        SliceState::Dirty if flags.contains(SliceFlags::PURGED) => stats.slices_purged += 1,
                        SliceState::Dirty => stats.slices_dirty += 1,
                    }
                    if !(state == SliceState::Clean || flags.contains(SliceFlags::PURGED)) {
                        let holes = slice.holes.get().count_ones() as usize;
                        stats.hole_pages += holes;
                        stats.bytes_resident += SLICE_SIZE - holes * HOLE_SIZE;
                    }
                    if flags.contains(SliceFlags::SPAN_HEAD) {
                        stats.bytes_live += slice.span.get() as usize * SLICE_SIZE;
                    } else if slice.in_use() && !flags.contains(SliceFlags::SPAN_TAIL) {
                        let class = slice.class.get() as usize;
                        let used = slice.used() as usize;
                        let c = &mut stats.classes[class_index(class)];
                        c.slices += 1;
                        c.objects_live += used;
                        if flags.contains(SliceFlags::CACHED) {
                            c.cached_slices += 1;
                        }
                        stats.bytes_live += used * class_size(class);
                    }
                }
                page = header.all_next.get();
            }
            let cached = inner.huge_cache.bytes();
            stats.bytes_mapped = inner.pages_mapped * PAGE_SIZE + inner.huge_bytes_mapped + cached;
            stats.bytes_live += inner.huge_bytes_live;
            stats.bytes_resident += inner.huge_bytes_mapped + cached;
            stats.huge_cached_bytes = cached;
            stats.huge_allocations = inner.huge_allocations;
            stats.pages_released = inner.pages_released;
            stats.purges = inner.purges;
            stats.refills = inner.refills;
            stats.flushes = inner.flushes;
            stats.remote_frees = inner.remote_frees;
            stats.lock_acquisitions = inner.lock_acquisitions;
            stats.lock_contended = inner.lock_contended;
            stats.remote_walked_unlocked = inner.remote_walked_unlocked;
            stats.remote_lists_walked = inner.remote_lists_walked;
            stats.hole_walked_unlocked = inner.hole_walked_unlocked;
        });
        stats.parts_collapsed = self.collapses.load(Ordering::Relaxed);
        stats.hole_fills_unlocked = self.hole_fills.load(Ordering::Relaxed);
        stats.hole_filled_unlocked = self.hole_fill_objects.load(Ordering::Relaxed);
        stats
    }

    /// For the unit tests: the state, flags and class of the slice holding
    /// `address`, if the source owns its page.
    #[cfg(test)]
    pub(crate) fn slice_info(&self, address: usize) -> Option<(SliceState, SliceFlags, usize)> {
        let page = page_of(address);
        if !self.source.owns(page) {
            return None;
        }
        // SAFETY: a page the source owns is registered: a live page with a
        // header (the tests pass addresses of slab pages, past the header,
        // and keep their domains for the life of the process).
        let slice = unsafe { slice_of(address) };
        self.locked(|_| Some((slice.state.get(), slice.flags.get(), slice.class.get() as usize)))
    }
}
