//! Purging: dirty slices given back to the page source after the purge
//! delay, unused pages unmapped, cached huge mappings returned, and on an
//! explicit purge the never-carved ends of slices in use. The source calls
//! run with the domain lock released, a batch at a time.

use super::*;

impl<S: PageSource, L: RawLock> Domain<S, L> {
    /// Purges dirty slices and gives back cached huge mappings older than
    /// the purge delay, if a check is due.
    pub(crate) fn maybe_purge(&self) {
        let now = self.source.now_ms();
        let delay = self.purge_delay_ms();
        let due = self.locked(|inner| {
            let oldest_slice = if inner.age_head.is_null() {
                None
            } else {
                // SAFETY: live descriptor at the head of the age list.
                Some(unsafe { (*inner.age_head).dirty_since.get() })
            };
            let oldest = match (oldest_slice, inner.huge_cache.oldest()) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) | (None, Some(a)) => a,
                (None, None) => return false,
            };
            if now < inner.last_purge_check + delay / 4 {
                return false;
            }
            inner.last_purge_check = now;
            now >= oldest + delay
        });
        if due {
            let cutoff = now.saturating_sub(delay);
            self.release_cached_mappings(cutoff);
            self.purge_older_than(cutoff, false);
        }
    }

    /// Runs the delayed purge if it is due, as a cache refill does: for
    /// fronts whose threads may go on working without refilling. Returns
    /// whether memory is still waiting for its delay to pass (dirty slices
    /// or cached huge mappings).
    pub fn purge_if_due(&self) -> bool {
        self.maybe_purge();
        self.memory_waiting()
    }

    /// Whether the domain holds memory waiting for the purge delay: dirty
    /// slices not yet purged, or cached huge mappings.
    pub fn memory_waiting(&self) -> bool {
        self.locked(|inner| !inner.age_head.is_null() || inner.huge_cache.oldest().is_some())
    }

    /// Gives back the cached huge mappings freed at or before `cutoff`.
    pub(super) fn release_cached_mappings(&self, cutoff: u64) -> usize {
        let mut unmaps = large::Unmaps::new();
        self.locked(|inner| inner.huge_cache.expire(cutoff, &mut unmaps));
        unmaps.release(&self.source)
    }

    /// Purges every dirty slice now, returns every empty page and cached
    /// huge mapping to the source, and gives back the memory past the
    /// carved objects of the slices in use that no heap owns
    /// (`purge_tails`).
    pub fn purge_all(&self) {
        self.release_cached_mappings(u64::MAX);
        self.release_unused_pages();
        self.purge_older_than(u64::MAX, true);
        self.purge_tails();
    }

    /// Gives back the memory past the last carved object of every slice in
    /// use that no heap owns (partial or full; spans hold one object, all
    /// in use). No object was ever handed out there since the slice was
    /// formatted, but the memory may still be resident: from the slice's
    /// use for another class before (a dirty slice is formatted anew with
    /// nothing carved), or from a huge page the part was on. Only whole 4
    /// KiB pages past the carved objects go, so the objects' own memory is
    /// untouched.
    ///
    /// The slices go `PURGING` a batch at a time under the lock, which
    /// keeps them from any heap (`list_for` files them nowhere) while the
    /// source call runs without it, and so keeps their carved count, and
    /// the range past it, fixed. Frees into them may still come (they take
    /// the lock and touch carved objects only); a slice whose last object
    /// is freed meanwhile turns dirty, and is filed as such when the batch
    /// is re-filed. A tail in a collapsed part splits its huge page: the
    /// part is marked for collapsing again, which the next refill from its
    /// page does if none of its slices is fresh (memory in use gets its
    /// huge pages back once it is used again).
    pub(super) fn purge_tails(&self) {
        // Where the walk goes on: a page and a slice index in it. The page
        // stays mapped while the lock is released, since the slice before
        // the cursor, the batch's last, is `PURGING` then (a page with a
        // purging slice is never given back); a walk that ends with no page
        // left needs none.
        let mut cursor: (*mut PageHeader, usize) = (ptr::null_mut(), FIRST_SLICE);
        let mut batch: [(*const SliceMeta, usize); PURGE_BATCH] = [(ptr::null(), 0); PURGE_BATCH];
        let mut count = 0;
        let mut started = false;
        loop {
            let now = self.source.now_ms();
            count = self.locked(|inner| {
                for &(slice, _) in batch.iter().take(count) {
                    // SAFETY: a purging slice's descriptor, in a live page.
                    let slice = unsafe { &*slice };
                    let flags = slice.flags.get() - SliceFlags::PURGING;
                    inner.transition(slice, state_for(slice.used(), slice.capacity.get()), flags, now);
                    // The part may be collapsed again at the next refill
                    // from its page, as after a slice's purge.
                    // SAFETY: descriptors live in page headers.
                    let page = unsafe { page_of_slice(slice) };
                    page.part_split(page.index_of(slice));
                }
                if !started {
                    cursor.0 = inner.all_pages;
                    started = true;
                }
                let mut taken = 0;
                while !cursor.0.is_null() {
                    // A full batch ends the walk before any step to the next
                    // page: the cursor's page must be the one that holds the
                    // batch's last slice.
                    let Some(entry) = batch.get_mut(taken) else { break };
                    // SAFETY: live page header (see `cursor`).
                    let header = unsafe { &*cursor.0 };
                    let Some(slice) = header.slices.get(cursor.1) else {
                        cursor = (header.all_next.get(), FIRST_SLICE);
                        continue;
                    };
                    cursor.1 += 1;
                    if let Some(tail) = Self::purgeable_tail(slice) {
                        inner.transition(slice, slice.state.get(), slice.flags.get() | SliceFlags::PURGING, now);
                        *entry = (slice, tail);
                        taken += 1;
                    }
                }
                taken
            });
            if count == 0 {
                break;
            }
            for &(slice, tail) in batch.iter().take(count) {
                // SAFETY: as above.
                let address = unsafe { (*slice).address };
                let memory = ptr::with_exposed_provenance_mut::<u8>(tail);
                // SAFETY: whole 4 KiB pages of a live slice past its carved
                // objects, which nobody touches while it is purging.
                unsafe { self.source.purge(NonNull::new_unchecked(memory), address + SLICE_SIZE - tail) };
            }
        }
    }

    /// The start of the memory to give back past `slice`'s carved objects
    /// (see [`Self::purge_tails`]), if the slice is one to purge and at
    /// least a 4 KiB page lies there. Lock held.
    fn purgeable_tail(slice: &SliceMeta) -> Option<usize> {
        let flags = slice.flags.get();
        let candidate = matches!(slice.state.get(), SliceState::Partial | SliceState::Full)
            && !flags.intersects(
                SliceFlags::CACHED
                    | SliceFlags::PURGING
                    | SliceFlags::PURGED
                    | SliceFlags::SPAN_HEAD
                    | SliceFlags::SPAN_TAIL,
            )
            && slice.object_size.get() != 0;
        if !candidate {
            return None;
        }
        let end_of_carved = slice.address + slice.carved.get() as usize * slice.object_size.get() as usize;
        let tail = end_of_carved.next_multiple_of(4096);
        (tail < slice.address + SLICE_SIZE).then_some(tail)
    }

    /// Gives back every page with no slice in use, dirty slices and all:
    /// its memory goes back whole, so purging its slices one by one first
    /// would be wasted work.
    pub(super) fn release_unused_pages(&self) {
        loop {
            let mut empty: [*mut PageHeader; PURGE_BATCH] = [ptr::null_mut(); PURGE_BATCH];
            let now = self.source.now_ms();
            let released = self.locked(|inner| self.remove_unused_pages(inner, &mut empty, now));
            for &page in empty.iter().take(released) {
                // As in `purge_older_than`: the pointer comes from the
                // address, with the provenance exposed when it was mapped.
                let memory = ptr::with_exposed_provenance_mut::<u8>(page as usize);
                // SAFETY: removed from every list and the registry; a
                // mapping of PAGE_SIZE bytes from `map_page`.
                unsafe { self.source.unmap(NonNull::new_unchecked(memory), PAGE_SIZE) };
            }
            if released < PURGE_BATCH {
                break;
            }
        }
    }

    /// Takes up to `out.len()` pages with no slice in use (and none being
    /// purged) out of the domain, their dirty slices counted as purged;
    /// returns how many. Lock held.
    pub(super) fn remove_unused_pages(&self, inner: &mut Inner, out: &mut [*mut PageHeader], now: u64) -> usize {
        let mut count = 0;
        let mut page = inner.all_pages;
        while !page.is_null() && count < out.len() {
            // SAFETY: live page header.
            let header = unsafe { &*page };
            let next = header.all_next.get();
            let unused = header.occupancy.get() == 0
                && header.slices[FIRST_SLICE..].iter().all(|slice| !slice.has(SliceFlags::PURGING));
            if unused {
                for slice in &header.slices[FIRST_SLICE..] {
                    if slice.state.get() == SliceState::Dirty && !slice.has(SliceFlags::PURGED) {
                        inner.transition(slice, SliceState::Dirty, SliceFlags::PURGED, now);
                        inner.purges += 1;
                    }
                }
                debug_assert_eq!(header.fresh.get(), USABLE_MASK);
                self.remove_page(inner, header);
                out[count] = page;
                count += 1;
            }
            page = next;
        }
        count
    }

    pub(super) fn purge_older_than(&self, cutoff: u64, all: bool) {
        loop {
            let mut batch: [*const SliceMeta; PURGE_BATCH] = [ptr::null(); PURGE_BATCH];
            let now = self.source.now_ms();
            let count = self.locked(|inner| {
                let mut count = 0;
                while count < PURGE_BATCH && !inner.age_head.is_null() {
                    // SAFETY: live descriptor on the age list.
                    let slice = unsafe { &*inner.age_head };
                    if !all && slice.dirty_since.get() > cutoff {
                        break;
                    }
                    inner.transition(slice, SliceState::Dirty, SliceFlags::PURGING, now);
                    batch[count] = slice;
                    count += 1;
                }
                count
            });
            // Whether each slice's memory now reads as zero, as the source
            // says: a span laid over it for a zeroed request skips clearing.
            let mut zeroed = [false; PURGE_BATCH];
            for (&slice, zero) in batch.iter().zip(zeroed.iter_mut()).take(count) {
                // SAFETY: PURGING slices are on no list; nobody touches them.
                let slice = unsafe { &*slice };
                let page = unsafe { page_of_slice(slice) };
                let address = page.slice_address(page.index_of(slice));
                // SAFETY: the slice holds no live object and is ours alone.
                *zero = unsafe { self.source.purge(NonNull::new_unchecked(address as *mut u8), SLICE_SIZE) };
            }
            let mut empty: [*mut PageHeader; PURGE_BATCH] = [ptr::null_mut(); PURGE_BATCH];
            let released = self.locked(|inner| {
                let mut released = 0;
                for (&slice, &zero) in batch.iter().zip(zeroed.iter()).take(count) {
                    // SAFETY: as above.
                    let slice = unsafe { &*slice };
                    slice.object_size.set(0);
                    slice.set_carved(0);
                    slice.free.set(NO_FREE);
                    let flags = if zero { SliceFlags::PURGED | SliceFlags::ZEROED } else { SliceFlags::PURGED };
                    inner.transition(slice, SliceState::Dirty, flags, now);
                    inner.purges += 1;
                    // SAFETY: as above.
                    let page = unsafe { page_of_slice(slice) };
                    let page_pointer = page as *const PageHeader as *mut PageHeader;
                    if page.occupancy.get() == 0
                        && page.fresh.get() == USABLE_MASK
                        && !empty.iter().take(released).any(|&p| p == page_pointer)
                    {
                        if let Some(entry) = empty.get_mut(released) {
                            self.remove_page(inner, page);
                            *entry = page_pointer;
                            released += 1;
                        }
                    }
                }
                if all {
                    if let Some(rest) = empty.get_mut(released..) {
                        released += self.remove_empty_pages(inner, rest);
                    }
                }
                released
            });
            for &page in empty.iter().take(released) {
                // The pointer that gives the page back is made from its
                // address, with the provenance exposed when the page was
                // mapped and registered: the list pointers in `empty` come
                // from `&PageHeader` references, which grant no writes to
                // the header's plain fields, and the source may write there
                // (the arena links a free block over it) or unmap it.
                let memory = ptr::with_exposed_provenance_mut::<u8>(page as usize);
                // SAFETY: removed from every list and the registry; the
                // address is a mapping of PAGE_SIZE bytes from `map_page`.
                unsafe { self.source.unmap(NonNull::new_unchecked(memory), PAGE_SIZE) };
            }
            if count < PURGE_BATCH && (!all || released == 0) {
                break;
            }
        }
    }

    /// Takes a page with no slice in use and nothing dirty out of the domain.
    pub(super) fn remove_page(&self, inner: &mut Inner, page: &PageHeader) {
        debug_assert_eq!(page.partial_classes.get() | page.dirty_classes.get(), 0, "a page leaves with filed slices");
        inner.fresh_unlink(page);
        inner.unfile_runs(page);
        let (prev, next) = (page.all_prev.get(), page.all_next.get());
        // SAFETY: live page headers on the page list.
        unsafe {
            if !next.is_null() {
                (*next).all_prev.set(prev);
            }
            if prev.is_null() {
                inner.all_pages = next;
            } else {
                (*prev).all_next.set(next);
            }
        }
        self.source.unregister(page.base());
        inner.pages_mapped -= 1;
        inner.pages_released += 1;
    }

    /// Removes up to `out.len()` entirely fresh pages; returns how many.
    pub(super) fn remove_empty_pages(&self, inner: &mut Inner, out: &mut [*mut PageHeader]) -> usize {
        let mut count = 0;
        let mut page = inner.all_pages;
        while !page.is_null() && count < out.len() {
            // SAFETY: live page header.
            let header = unsafe { &*page };
            let next = header.all_next.get();
            if header.occupancy.get() == 0 && header.fresh.get() == USABLE_MASK {
                self.remove_page(inner, header);
                out[count] = page;
                count += 1;
            }
            page = next;
        }
        count
    }
}
