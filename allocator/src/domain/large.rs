//! Spans and huge allocations: objects larger than a size class.
//!
//! A **span** is a run of whole slices of a slab page (up to
//! [`MAX_SPAN`]); a **huge** allocation is a mapping of its own, with a
//! short header in front of the object.
//!
//! # Finding a span
//!
//! Each slab page is filed by the longest run of slices it has free for a
//! span (fresh or dirty), and by its longest run of dirty slices, both
//! capped at [`MAX_SPAN_SLICES`] (`PageHeader::runs`, kept by every state
//! transition). A request for `n` slices looks at the dirty lists first
//! (resident memory, no page faults), then at the others, from the
//! shortest run length of at least `n` up, each a list head and a bitmap
//! lookup: the first page there has a fitting run unless the span must be
//! aligned to more than a slice.
//!
//! A zeroed request (`calloc`, `alloc_zeroed`) clears its span unless every
//! slice of it is known to read as zero: clean slices of a source that maps
//! zeroed memory, and purged slices whose purge the source said zeroed
//! them (`SliceFlags::ZEROED`). A thread's first zeroed buffer then costs
//! no page faults for the parts it never touches.
//!
//! A huge block that grows by `realloc` is offered to the source for huge
//! pages ([`PageSource::advise_huge_block`]), before the old contents are
//! copied in or once the mapping has grown in place: its owner filled it
//! to its old size and is filling it further, so each 2 MiB part may as
//! well cost one fault and one TLB entry. A block allocated at its size
//! is not: a reservation (`Vec::with_capacity`) may stay mostly untouched,
//! and a huge page would make its touched parts resident whole.
//!
//! # Growth
//!
//! A span that must grow takes the free slices right after it when there
//! are enough, and gives its tail back when it shrinks. A huge block grows
//! through [`PageSource::remap`] (in user space, `mremap`: in place when the
//! address space after it is free, else by moving the page tables, never by
//! copying bytes), with half its size again as headroom, so a run of
//! reallocs in small steps costs amortised O(1) per byte.
//!
//! # The mapping cache
//!
//! A freed huge mapping is not unmapped at once: up to
//! [`HUGE_CACHE_ENTRIES`] of them, [`HUGE_CACHE_BYTES`] in all, wait for
//! reuse, and go back to the source after the purge delay, as dirty slices
//! do, or at once on [`Domain::purge_all`] and when the source fails. A
//! reused mapping is not known to be zero, so a zeroed request clears it.
//!
//! # Reclaim before failing
//!
//! When the source refuses a mapping, [`Domain::reclaim`] purges every dirty
//! slice, unmaps every empty page and cached mapping, and the request is
//! tried once more. Reclaim calls only `purge`, `unregister` and `unmap`,
//! which every source must allow wherever `map` may be called (the kernel
//! source frees buddy pages at once and defers `vfree` out of atomic
//! context), and the retry maps with the failing call's own context: a
//! caller that may not sleep still never sleeps.

use super::*;

/// Most freed huge mappings kept for reuse.
pub const HUGE_CACHE_ENTRIES: usize = 8;

/// Most bytes of freed huge mappings kept for reuse; larger mappings go
/// back at once.
pub const HUGE_CACHE_BYTES: usize = 64 << 20;

/// Headroom a growing huge block gets: this fraction of its new size
/// (1/2), address space only until it is written.
const GROWTH_HEADROOM_SHIFT: u32 = 1;

/// One freed huge mapping waiting for reuse.
#[derive(Clone, Copy)]
pub(super) struct CachedMapping {
    base: usize,
    len: usize,
    /// When it was freed, by the source's clock.
    since: u64,
}

impl CachedMapping {
    const EMPTY: Self = Self { base: 0, len: 0, since: 0 };
}

/// Freed huge mappings waiting for reuse. Domain lock. All zero is empty.
pub(super) struct HugeCache {
    /// Invariant: `entries[..count]` are live mappings of the source, not
    /// registered, of `bytes` bytes in all.
    entries: [CachedMapping; HUGE_CACHE_ENTRIES],
    count: usize,
    bytes: usize,
}

/// Mappings to give back once the lock is released.
pub(super) struct Unmaps {
    entries: [CachedMapping; HUGE_CACHE_ENTRIES + 1],
    count: usize,
}

impl Unmaps {
    pub(super) const fn new() -> Self {
        Self { entries: [CachedMapping::EMPTY; HUGE_CACHE_ENTRIES + 1], count: 0 }
    }

    fn push(&mut self, mapping: CachedMapping) {
        if let Some(slot) = self.entries.get_mut(self.count) {
            *slot = mapping;
            self.count += 1;
        }
    }

    /// Unmaps every entry. Call without the domain lock.
    pub(super) fn release<S: PageSource>(&self, source: &S) -> usize {
        for mapping in self.entries.iter().take(self.count) {
            // SAFETY: entries are whole live mappings of `source`, taken
            // out of every list and unregistered.
            unsafe { source.unmap(NonNull::new_unchecked(mapping.base as *mut u8), mapping.len) };
        }
        self.count
    }
}

impl HugeCache {
    pub(super) const fn new() -> Self {
        Self { entries: [CachedMapping::EMPTY; HUGE_CACHE_ENTRIES], count: 0, bytes: 0 }
    }

    /// Bytes held.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether no mapping is cached.
    pub(super) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// When the oldest entry was freed, if any.
    pub(super) fn oldest(&self) -> Option<u64> {
        self.entries.iter().take(self.count).map(|entry| entry.since).min()
    }

    /// Takes entry `index` out, moving the last entry into its place.
    /// (Written with checked accesses only: the kernel module counts every
    /// panic path left in the core.)
    fn remove(&mut self, index: usize) -> Option<CachedMapping> {
        let last = self.count.checked_sub(1)?;
        if index > last {
            return None;
        }
        let moved = *self.entries.get(last)?;
        let entry = core::mem::replace(self.entries.get_mut(index)?, moved);
        self.count = last;
        self.bytes -= entry.len;
        Some(entry)
    }

    /// Takes the smallest mapping of at least `len` bytes (and at most
    /// twice that) whose base is aligned to `align` (a power of two).
    fn take(&mut self, len: usize, align: usize) -> Option<CachedMapping> {
        let mask = align.max(1) - 1;
        let mut best: Option<(usize, usize)> = None;
        for (index, entry) in self.entries.iter().enumerate().take(self.count) {
            let fits = entry.len >= len && entry.len / 2 <= len && entry.base & mask == 0;
            if fits && best.is_none_or(|(_, best_len)| entry.len < best_len) {
                best = Some((index, entry.len));
            }
        }
        self.remove(best?.0)
    }

    /// Keeps `mapping`, evicting the oldest entries into `out` to stay
    /// within bounds; a mapping over [`HUGE_CACHE_BYTES`] goes to `out`.
    fn put(&mut self, mapping: CachedMapping, out: &mut Unmaps) {
        if mapping.len > HUGE_CACHE_BYTES {
            out.push(mapping);
            return;
        }
        while self.count == HUGE_CACHE_ENTRIES || self.bytes + mapping.len > HUGE_CACHE_BYTES {
            let oldest = self.entries.iter().take(self.count).enumerate().min_by_key(|(_, entry)| entry.since);
            let Some(evicted) = oldest.map(|(index, _)| index).and_then(|index| self.remove(index)) else { break };
            out.push(evicted);
        }
        match self.entries.get_mut(self.count) {
            Some(slot) => {
                *slot = mapping;
                self.count += 1;
                self.bytes += mapping.len;
            }
            None => out.push(mapping),
        }
    }

    /// Moves the entries freed at or before `cutoff` into `out`.
    pub(super) fn expire(&mut self, cutoff: u64, out: &mut Unmaps) {
        let mut index = 0;
        while index < self.count {
            let due = self.entries.get(index).is_some_and(|entry| entry.since <= cutoff);
            match due.then(|| self.remove(index)).flatten() {
                Some(entry) => out.push(entry),
                None => index += 1,
            }
        }
    }
}

/// Span lists of pages by their longest run of fresh or dirty slices.
///
/// A kind indexes arrays of two as `[kind & 1]`: the mask lets the compiler
/// drop the bounds check (the kernel module counts every panic path).
const RUN_FREE: usize = 0;
/// Span lists of pages by their longest run of dirty slices.
const RUN_DIRTY: usize = 1;

/// The length of the longest run of set bits in `mask`, capped at
/// [`MAX_SPAN_SLICES`].
pub(super) fn longest_run(mask: u64) -> u8 {
    let mut rest = mask;
    let mut length = 0;
    // Each step shortens every run by one.
    while rest != 0 && length < MAX_SPAN_SLICES {
        rest &= rest >> 1;
        length += 1;
    }
    length as u8
}

impl Inner {
    /// Files `page` in the span lists by its current masks. Lock held.
    pub(super) fn refile_runs(&mut self, page: &PageHeader) {
        let free = longest_run((page.fresh.get() | page.dirty.get()) & USABLE_MASK);
        let dirty = longest_run(page.dirty.get() & USABLE_MASK);
        for (kind, length) in [(RUN_FREE, free), (RUN_DIRTY, dirty)] {
            if page.runs[kind & 1].get() != length {
                self.run_unlink(kind, page);
                self.run_link(kind, page, length);
            }
        }
    }

    /// Takes `page` off the span lists, before it leaves the domain.
    pub(super) fn unfile_runs(&mut self, page: &PageHeader) {
        self.run_unlink(RUN_FREE, page);
        self.run_unlink(RUN_DIRTY, page);
    }

    fn run_link(&mut self, kind: usize, page: &PageHeader, length: u8) {
        page.runs[kind & 1].set(length);
        if length == 0 {
            return;
        }
        let length = (length as usize).min(MAX_SPAN_SLICES);
        let me = page as *const PageHeader as *mut PageHeader;
        let first = self.run_pages[kind & 1][length];
        page.run_prev[kind & 1].set(ptr::null_mut());
        page.run_next[kind & 1].set(first);
        if !first.is_null() {
            // SAFETY: list members are live page headers.
            unsafe { (*first).run_prev[kind & 1].set(me) };
        }
        self.run_pages[kind & 1][length] = me;
        self.run_lengths[kind & 1] |= 1 << length;
    }

    fn run_unlink(&mut self, kind: usize, page: &PageHeader) {
        let length = (page.runs[kind & 1].get() as usize).min(MAX_SPAN_SLICES);
        if length == 0 {
            return;
        }
        let (prev, next) = (page.run_prev[kind & 1].get(), page.run_next[kind & 1].get());
        // SAFETY: list members are live page headers.
        unsafe {
            if !next.is_null() {
                (*next).run_prev[kind & 1].set(prev);
            }
            if prev.is_null() {
                self.run_pages[kind & 1][length] = next;
            } else {
                (*prev).run_next[kind & 1].set(next);
            }
        }
        if self.run_pages[kind & 1][length].is_null() {
            self.run_lengths[kind & 1] &= !(1 << length);
        }
        page.runs[kind & 1].set(0);
        page.run_next[kind & 1].set(ptr::null_mut());
        page.run_prev[kind & 1].set(ptr::null_mut());
    }
}

/// `size` rounded up to 4096, if that fits in an `isize`.
fn round_to_4k(size: usize) -> Option<usize> {
    let rounded = size.checked_add(4095)? & !4095;
    (rounded <= isize::MAX as usize).then_some(rounded)
}

impl<S: PageSource, L: RawLock> Domain<S, L> {
    /// Allocates a request too large for a size class: a span of whole
    /// slices, or a mapping of its own.
    ///
    /// Spans serve alignments up to half a page: a span aligned to
    /// `2^k` slices starts at a slice index that is a multiple of `2^k`, and
    /// index 0 is the header. Page alignment and beyond take a mapping.
    pub fn alloc_large(&self, size: usize, align: usize, zeroed: bool, context: S::Context) -> *mut u8 {
        self.alloc_large_for(size, align, zeroed, false, context)
    }

    /// Allocates the new block of a reallocation from a block of `usable`
    /// bytes to `size` bytes, if the block grows and no size class holds
    /// the new size: as [`Domain::alloc_large`], but a huge block is
    /// offered huge pages ([`PageSource::advise_huge_block`]) before the
    /// caller copies the old contents in (see the module documentation).
    /// `None` for any other reallocation, which the caller allocates as
    /// usual.
    pub fn alloc_large_to_grow(&self, usable: usize, size: usize, align: usize, context: S::Context) -> Option<*mut u8> {
        (size > usable && class_of(size, align).is_none()).then(|| self.alloc_large_for(size, align, false, true, context))
    }

    /// [`Domain::alloc_large`], with `grow` passed to [`Self::alloc_huge`].
    fn alloc_large_for(&self, size: usize, align: usize, zeroed: bool, grow: bool, context: S::Context) -> *mut u8 {
        // A zero-size request still gets a unique, live block.
        let size = size.max(1);
        if size <= MAX_SPAN && align <= PAGE_SIZE / 2 {
            self.alloc_span(size, align, zeroed, context)
        } else {
            self.alloc_huge(size, align, zeroed, grow, context)
        }
    }

    fn alloc_span(&self, size: usize, align: usize, zeroed: bool, context: S::Context) -> *mut u8 {
        let count = size.div_ceil(SLICE_SIZE).max(1);
        let stride = (align / SLICE_SIZE).max(1);
        let now = self.source.now_ms();
        let mut found = self.locked(|inner| self.take_span(inner, count, stride, now));
        if found.is_none() {
            let Some(page) = self.map_page_or_reclaim(context) else { return ptr::null_mut() };
            found = self.locked(|inner| {
                self.add_page(inner, page);
                self.take_span(inner, count, stride, now)
            });
        }
        let Some((address, is_zero, parts)) = found else { return ptr::null_mut() };
        if parts != 0 {
            // SAFETY: the span is ours until returned, so its page is live.
            unsafe { self.collapse_parts(address, parts) };
        }
        if zeroed && !is_zero {
            // SAFETY: the span is ours and `count` slices long.
            unsafe { ptr::write_bytes(address as *mut u8, 0, count * SLICE_SIZE) };
        }
        address as *mut u8
    }

    /// Finds `count` consecutive fresh or dirty slices, starting at a
    /// multiple of `stride`, and makes them a span. Returns its address,
    /// whether its memory is known to be zero, and the parts of its page the
    /// caller is to ask the source to collapse (`claim_collapse`).
    ///
    /// Dirty runs come first (resident already), then runs of any free
    /// slices; among pages, the shortest longest-run that fits, through the
    /// span lists: O(1) in the number of pages when `stride` is 1, since
    /// every page filed at a length of at least `count` has a fitting run.
    /// An aligned span may have to look at more pages of those lists.
    fn take_span(&self, inner: &mut Inner, count: usize, stride: usize, now: u64) -> Option<(usize, bool, u8)> {
        for kind in [RUN_DIRTY, RUN_FREE] {
            let mut lengths = inner.run_lengths[kind & 1] & (!0u64 << count.min(63));
            while lengths != 0 {
                let length = lengths.trailing_zeros() as usize;
                let mut page = inner.run_pages[kind & 1][length.min(MAX_SPAN_SLICES)];
                while !page.is_null() {
                    // SAFETY: live page header on a span list.
                    let header = unsafe { &*page };
                    let available = match kind {
                        RUN_DIRTY => header.dirty.get(),
                        _ => header.fresh.get() | header.dirty.get(),
                    } & USABLE_MASK;
                    if let Some(first) = find_run(available, count, stride) {
                        let mut zero = true;
                        for (i, slice) in header.slices.iter().enumerate().skip(first).take(count) {
                            // Never used since mapped, from a source that
                            // maps zeroed memory; or purged to zero.
                            zero &= match slice.state.get() {
                                SliceState::Clean => S::ZEROED,
                                _ => slice.flags.get().contains(SliceFlags::PURGED | SliceFlags::ZEROED),
                            };
                            let flag = if i == first { SliceFlags::SPAN_HEAD } else { SliceFlags::SPAN_TAIL };
                            Self::make_span_member(inner, slice, flag, if i == first { count } else { 0 }, now);
                        }
                        let parts = self.claim_collapse(header);
                        return Some((header.slice_address(first), zero, parts));
                    }
                    page = header.run_next[kind & 1].get();
                }
                lengths &= lengths - 1;
            }
        }
        None
    }

    /// Makes a fresh or dirty slice the head (`span` slices long) or a tail
    /// slice of a span. Lock held.
    fn make_span_member(inner: &mut Inner, slice: &SliceMeta, flag: SliceFlags, span: usize, now: u64) {
        slice.object_size.set(0);
        slice.set_carved(0);
        slice.holes.set(0);
        slice.free.set(NO_FREE);
        slice.class.set(SPAN_CLASS);
        slice.capacity.set(1);
        slice.set_used(1);
        slice.span.set(span as u32);
        inner.transition(slice, SliceState::Full, flag, now);
    }

    /// Maps a huge block; `grow` says it is the new block of a
    /// reallocation that outgrew its old one, and is offered huge pages.
    fn alloc_huge(&self, size: usize, align: usize, zeroed: bool, grow: bool, context: S::Context) -> *mut u8 {
        let offset = align.max(HUGE_HEADER);
        let Some(len) = size.checked_add(offset).and_then(round_to_4k) else { return ptr::null_mut() };
        let map_align = align.max(PAGE_SIZE);
        let (base, map_len, clear) = if let Some(cached) = self.locked(|inner| inner.huge_cache.take(len, map_align)) {
            // Reused memory holds what its last owner wrote.
            (cached.base, cached.len, if zeroed { size } else { 0 })
        } else {
            let memory = match self.source.map(len, map_align, context) {
                Some(memory) => memory,
                None => {
                    if !self.reclaim() {
                        return ptr::null_mut();
                    }
                    let Some(memory) = self.source.map(len, map_align, context) else { return ptr::null_mut() };
                    memory
                }
            };
            (memory.as_ptr() as usize, len, if zeroed && !S::ZEROED { size } else { 0 })
        };
        if grow {
            // SAFETY: a mapping of ours of `map_len` bytes, fresh or out of
            // the cache, seen by no one else.
            unsafe { self.source.advise_huge_block(NonNull::new_unchecked(base as *mut u8), map_len) };
        }
        self.publish_huge(base, map_len, offset, clear, context)
    }

    /// Writes the header of a huge mapping of `len` bytes at `base` whose
    /// object starts `offset` bytes in, registers it, zeroes the first
    /// `clear` bytes of the object and counts it. Null if the source refuses
    /// the registration (the mapping then goes back).
    fn publish_huge(&self, base: usize, len: usize, offset: usize, clear: usize, context: S::Context) -> *mut u8 {
        let object = base + offset;
        let header = page_of(object);
        let common = PageCommon::new(PageKind::Huge, self.id(), base, len, object, len - offset);
        // SAFETY: the header lies inside the mapping, before the object, and
        // nobody else sees the mapping.
        unsafe { (header as *mut PageCommon).write(common) };
        if !self.source.register(header, context) {
            // SAFETY: the mapping was never published.
            unsafe { self.source.unmap(NonNull::new_unchecked(base as *mut u8), len) };
            return ptr::null_mut();
        }
        if clear != 0 {
            // SAFETY: the object is inside the mapping.
            unsafe { ptr::write_bytes(object as *mut u8, 0, clear) };
        }
        self.locked(|inner| {
            inner.huge_allocations += 1;
            inner.huge_bytes_live += len - offset;
            inner.huge_bytes_mapped += len;
        });
        object as *mut u8
    }

    /// Frees a span or huge allocation.
    ///
    /// # Safety
    /// `address` must not be used after a successful free.
    pub unsafe fn free_large(&self, address: usize) -> Result<(), FreeError> {
        let now = self.source.now_ms();
        let mut unmaps = Unmaps::new();
        // Validate under the lock: it serialises racing frees of one span.
        let huge = self.locked(|inner| -> Result<bool, FreeError> {
            match self.lookup(address).map_err(FreeError::in_free)? {
                Lookup::Span { slice } => {
                    // SAFETY: descriptors live in page headers.
                    let page = unsafe { page_of_slice(slice) };
                    let first = page.index_of(slice);
                    let count = slice.span.get() as usize;
                    for member in page.slices.iter().skip(first).take(count) {
                        member.set_used(0);
                        inner.transition(member, SliceState::Dirty, SliceFlags::empty(), now);
                    }
                    Ok(false)
                }
                Lookup::Huge { common } => {
                    let live = common.object_size();
                    common.object_size.store(0, Ordering::Relaxed);
                    self.source.unregister(page_of(address));
                    inner.huge_allocations -= 1;
                    inner.huge_bytes_live -= live;
                    inner.huge_bytes_mapped -= common.map_len;
                    let mapping = CachedMapping { base: common.map_base, len: common.map_len, since: now };
                    inner.huge_cache.put(mapping, &mut unmaps);
                    Ok(true)
                }
                Lookup::Small { .. } => Err(FreeError::new(FreeErrorKind::NotAllocated, address)),
            }
        })?;
        unmaps.release(&self.source);
        if !huge {
            self.maybe_purge();
        }
        Ok(())
    }

    /// Resizes the span or huge allocation at `address` to `size` bytes
    /// aligned to `align` without copying its contents through the CPU: a
    /// span grows into the free slices after it or gives back its tail; a
    /// huge block is remapped. Returns the (possibly moved) address, or
    /// `None` when that cannot be done (a small object, a change between
    /// span and huge, an alignment the block does not have, or no room):
    /// the block is then untouched, and the caller moves it by copying.
    ///
    /// # Safety
    /// `address` must be a live allocation the caller owns; on `Some`, the
    /// old address must not be used unless it is the one returned.
    pub unsafe fn resize_large(&self, address: usize, size: usize, align: usize, context: S::Context) -> Option<*mut u8> {
        if !address.is_multiple_of(align) {
            return None;
        }
        match self.lookup(address).ok()? {
            Lookup::Small { .. } => None,
            Lookup::Span { slice } => {
                // A size a class serves moves to a small object.
                if size > MAX_SPAN || class_of(size, align).is_some() || align > PAGE_SIZE / 2 {
                    return None;
                }
                // A zero-size request still keeps a live block, as in
                // `alloc_large`.
                let count = size.div_ceil(SLICE_SIZE).max(1);
                let now = self.source.now_ms();
                let done = self.locked(|inner| Self::resize_span(inner, slice, count, now));
                done.then_some(address as *mut u8)
            }
            Lookup::Huge { .. } => {
                if size <= MAX_SPAN || !S::REMAPS {
                    return None;
                }
                // SAFETY: the caller's contract.
                unsafe { self.resize_huge(address, size, align, context) }
            }
        }
    }

    /// Makes the span headed by `slice` `count` slices long, taking the
    /// free slices after it or giving back its tail. Lock held.
    fn resize_span(inner: &mut Inner, slice: &SliceMeta, count: usize, now: u64) -> bool {
        if count == 0 {
            return false;
        }
        // SAFETY: descriptors live in page headers.
        let page = unsafe { page_of_slice(slice) };
        let first = page.index_of(slice);
        let old = slice.span.get() as usize;
        if count == old {
            return true;
        }
        if first + count > SLICES_PER_PAGE {
            return false;
        }
        if count > old {
            let wanted = ((1u64 << (count - old)) - 1) << (first + old);
            let available = (page.fresh.get() | page.dirty.get()) & USABLE_MASK;
            if available & wanted != wanted {
                return false;
            }
            for tail in page.slices.iter().skip(first + old).take(count - old) {
                Self::make_span_member(inner, tail, SliceFlags::SPAN_TAIL, 0, now);
            }
        } else {
            for tail in page.slices.iter().skip(first + count).take(old - count) {
                tail.set_used(0);
                inner.transition(tail, SliceState::Dirty, SliceFlags::empty(), now);
            }
        }
        slice.span.set(count as u32);
        true
    }

    /// Remaps a huge block to hold `size` bytes, with headroom when it
    /// grows; see [`Domain::resize_large`].
    ///
    /// # Safety
    /// As for [`Domain::resize_large`], on a huge block.
    unsafe fn resize_huge(&self, address: usize, size: usize, align: usize, context: S::Context) -> Option<*mut u8> {
        let header = page_of(address);
        let common = header as *mut PageCommon;
        // The caller owns the block: its header does not change under us.
        // SAFETY: a live huge block's header.
        let (base, old_len) = self.locked(|_| unsafe { ((*common).map_base, (*common).map_len) });
        let offset = address - base;
        let map_align = PAGE_SIZE.max(offset.next_power_of_two());
        if !offset.is_multiple_of(align) {
            return None;
        }
        let need = round_to_4k(size.checked_add(offset)?)?;
        let mut lengths = [need, need, need];
        let mut tries = 1;
        if need > old_len {
            // Half the object again, not half of the object and its offset:
            // a block placed far into its mapping for an alignment would
            // otherwise get its dead prefix's worth of headroom as well.
            if let Some(roomy) = need.checked_add(size >> GROWTH_HEADROOM_SHIFT).and_then(round_to_4k) {
                lengths[0] = roomy;
                tries = 2;
            }
        }
        // The block's header may move: take it out of the page map first,
        // so a look-up never follows the old address into a hole.
        self.source.unregister(header);
        let old = NonNull::new(base as *mut u8)?;
        let mut moved = None;
        let mut attempt = 0;
        while moved.is_none() && attempt < tries {
            // SAFETY: the block's whole mapping, live; no lock held.
            moved = unsafe { self.source.remap(old, old_len, lengths[attempt], map_align, context) }
                .map(|memory| (memory, lengths[attempt]));
            attempt += 1;
        }
        if moved.is_none() && need > old_len && self.reclaim() {
            // SAFETY: as above.
            moved = unsafe { self.source.remap(old, old_len, need, map_align, context) }.map(|memory| (memory, need));
        }
        let Some((memory, new_len)) = moved else {
            let again = self.source.register(header, context);
            debug_assert!(again, "a page registered before registers again");
            return None;
        };
        if new_len > old_len {
            // SAFETY: the block's whole mapping, live, and ours until it is
            // registered again.
            unsafe { self.source.advise_huge_block(memory, new_len) };
        }
        let new_base = memory.as_ptr() as usize;
        let object = new_base + offset;
        let new_header = page_of(object) as *mut PageCommon;
        // SAFETY: the header moved with the mapping; we own it until it is
        // registered again.
        unsafe {
            ptr::addr_of_mut!((*new_header).map_base).write(new_base);
            ptr::addr_of_mut!((*new_header).map_len).write(new_len);
            (*new_header).object.store(object, Ordering::Relaxed);
            (*new_header).object_size.store(new_len - offset, Ordering::Relaxed);
        }
        let registered = self.source.register(new_header as usize, context);
        // A source that remaps must accept its pages (the trait's contract).
        debug_assert!(registered, "the source refused a page it remapped");
        self.locked(|inner| {
            inner.huge_bytes_live = inner.huge_bytes_live + new_len - old_len;
            inner.huge_bytes_mapped = inner.huge_bytes_mapped + new_len - old_len;
        });
        Some(object as *mut u8)
    }

    /// Gives back every dirty slice, empty page and cached mapping, for a
    /// request the source just refused. Returns whether anything went back
    /// (and a retry may succeed). Calls only `purge`, `unregister` and
    /// `unmap` (see the module docs).
    pub fn reclaim(&self) -> bool {
        let before = self.locked(|inner| (inner.purges, inner.pages_released, inner.huge_cache.count));
        self.purge_all();
        let after = self.locked(|inner| (inner.purges, inner.pages_released, inner.huge_cache.count));
        after.0 != before.0 || after.1 != before.1 || after.2 != before.2
    }

    /// [`Domain::map_page`], retried once after [`Domain::reclaim`] when
    /// the source refuses.
    pub(super) fn map_page_or_reclaim(&self, context: S::Context) -> Option<NonNull<PageHeader>> {
        match self.map_page(context) {
            Some(page) => Some(page),
            None if self.reclaim() => self.map_page(context),
            None => None,
        }
    }
}

/// Index of the lowest run of `count` set bits in `mask` that starts at a
/// multiple of `stride` (a power of two).
pub(super) fn find_run(mask: u64, count: usize, stride: usize) -> Option<usize> {
    // After the loop, bit i of `run` is set iff bits i..i+count are all set.
    let mut run = mask;
    let mut have = 1;
    while have < count {
        let step = have.min(count - have);
        run &= run >> step;
        have += step;
    }
    let mut starts = 0u64;
    let mut start = 0;
    while start < 64 {
        starts |= 1 << start;
        start += stride.max(1);
    }
    run &= starts;
    (run != 0).then(|| run.trailing_zeros() as usize)
}
