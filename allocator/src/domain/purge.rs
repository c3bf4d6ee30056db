//! Purging: dirty slices given back to the page source after the purge
//! delay, and the empty 4 KiB pages of sparse slices in use (holes) once
//! the slices have waited the delay on the sparse list; unused pages
//! unmapped, cached huge mappings returned, and on an explicit purge the
//! never-carved ends of slices in use and every sparse slice's holes at
//! once. The source calls run with the domain lock released, a batch at a
//! time.

use super::*;
use crate::size_class::is_carved_object;
use core::num::NonZeroU32;

/// Slices in a collapse part.
const PART_SLICES: usize = SLICES_PER_PAGE / COLLAPSE_PARTS;

/// Room in a purge batch: fewer than [`PURGE_BATCH`] entries before the
/// last slice the purge chose, and what a split of that slice's part adds
/// (at most [`PART_SLICES`]: its clean slices, with the header slice's
/// unused end in part 0, where slice 0 is the header).
const BATCH_ROOM: usize = PURGE_BATCH + PART_SLICES;

/// A sparse slice's free list, taken off the slice to be walked for empty
/// pages ([`Domain::detach_for_walk`]), with what the walk reads of the
/// slice. While the walk runs, no heap allocates from the slice (it is
/// `PURGING`), and frees into it go to the list it started anew: no one
/// else reaches the detached list's objects, so the walk needs no lock.
pub(super) struct HoleWalk {
    slice: *const SliceMeta,
    /// The slice's address, object size, carved count, boundary test
    /// (`multiplier`, `limit`) and holes when the list was detached: fixed
    /// while the slice is held, since nothing carves it then.
    address: usize,
    size: u32,
    carved: u32,
    multiplier: u64,
    limit: u64,
    holes: u16,
    /// The list's first object, or the slice's end marker if it is empty;
    /// after the walk, that of the list without the objects on the `empty`
    /// pages.
    head: *mut FreeObject,
    /// After the walk: the carved pages it found empty that were not holes
    /// yet.
    empty: u16,
    /// After the walk: the list's last object, or null if it is empty.
    last: *mut FreeObject,
    /// After the walk: the objects it walked (the list's length before any
    /// was taken off).
    walked: u32,
}

/// What a batch entry gives back.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Purge {
    /// A dirty slice, whole.
    Dirty,
    /// The memory past the carved objects of a slice in use, from the
    /// entry's address to the slice's end.
    Tail,
    /// A clean slice of a part that a huge page backed, whole: the huge
    /// page made it resident, never used.
    Clean,
    /// The header slice past the page header, from the entry's address:
    /// never used, and made resident by the huge page of part 0.
    Header,
}

/// One slice of a [`Batch`], and what of it goes back.
#[derive(Clone, Copy)]
struct Entry {
    slice: *const SliceMeta,
    /// Where the memory to give back starts, from the slice's address (0
    /// but for a tail or the header slice); it ends at the slice's end.
    /// For a tail, `SLICE_SIZE` when only holes go back.
    offset: u32,
    kind: Purge,
    /// For a tail: the slice's pages that became holes (see
    /// [`SliceMeta::holes`]) when the batch was taken, to give back too.
    holes: u16,
    /// For a tail: the slice goes on the sparse list when it is filed
    /// again, for an explicit purge to walk it for empty pages.
    relist: bool,
}

/// The slices a purge gives back with the lock released, taken a batch at
/// a time under it, each `PURGING` meanwhile (on no list, so no heap is
/// handed it, and its page is not given back), and the parts they split.
/// About 1.3 KiB, on the stack of the thread that purges (a kernel stack
/// in the kernel module).
struct Batch {
    entries: [Entry; BATCH_ROOM],
    len: usize,
    /// Addresses of the parts split while the batch was taken, to be
    /// advised ([`PageSource::split`]) before their memory goes back.
    splits: [usize; PURGE_BATCH],
    split_count: usize,
}

// Kept small for the kernel module's stacks: 64 entries of 16 bytes.
static_assertions::const_assert!(size_of::<Batch>() <= 1536);

impl Batch {
    const fn new() -> Self {
        Self {
            entries: [Entry { slice: ptr::null(), offset: 0, kind: Purge::Dirty, holes: 0, relist: false }; BATCH_ROOM],
            len: 0,
            splits: [0; PURGE_BATCH],
            split_count: 0,
        }
    }

    fn clear(&mut self) {
        self.len = 0;
        self.split_count = 0;
    }

    /// Whether another chosen slice fits, with the clean slices of a part
    /// it may split.
    fn has_room(&self) -> bool {
        self.len < PURGE_BATCH
    }

    /// Adds `slice`, whose memory from `start` to its end goes back, and
    /// returns `true`; or returns `false`, adding nothing, if the batch is
    /// full. The callers check [`Batch::has_room`] first, and [`BATCH_ROOM`]
    /// leaves room for a split after that, so a full batch is never met;
    /// if it were, the slice would simply not be purged this time. (No
    /// indexing that can panic: the kernel module counts panic sites.)
    fn push(&mut self, slice: &SliceMeta, start: usize, kind: Purge) -> bool {
        self.push_with_holes(slice, start, kind, 0)
    }

    /// [`Batch::push`], with the slice's new `holes` to give back as well.
    fn push_with_holes(&mut self, slice: &SliceMeta, start: usize, kind: Purge, holes: u16) -> bool {
        self.push_entry(Entry { slice, offset: start.wrapping_sub(slice.address) as u32, kind, holes, relist: false })
    }

    /// [`Batch::push`] of a slice's tail, the slice to go on the sparse
    /// list when it is filed again if `relist`.
    fn push_tail(&mut self, slice: &SliceMeta, start: usize, relist: bool) -> bool {
        self.push_entry(Entry { slice, offset: start.wrapping_sub(slice.address) as u32, kind: Purge::Tail, holes: 0, relist })
    }

    fn push_entry(&mut self, new: Entry) -> bool {
        let Some(entry) = self.entries.get_mut(self.len) else { return false };
        *entry = new;
        self.len += 1;
        true
    }

    fn entries(&self) -> &[Entry] {
        self.entries.get(..self.len).unwrap_or_default()
    }

    /// Files every slice of the batch again once its memory went back, by
    /// its state, no longer `PURGING`, and on the sparse list if the entry
    /// says so: for a batch of slices in use (tails and holes) with the
    /// clean slices of the parts they split. Lock held.
    fn file_in_use(&self, inner: &mut Inner, now: u64) {
        for entry in self.entries() {
            // SAFETY: a purging slice's descriptor, in a live page.
            let slice = unsafe { &*entry.slice };
            match entry.kind {
                Purge::Clean => inner.transition(slice, SliceState::Clean, SliceFlags::empty(), now),
                Purge::Header => {}
                Purge::Tail | Purge::Dirty => {
                    file_after_purge(inner, slice, now);
                    if entry.relist {
                        inner.list_sparse(slice, now);
                    }
                }
            }
        }
    }

    /// Splits the part holding `slice` if it may be on a huge page (its
    /// bit in [`PageHeader::collapse`]): clears the bit, so that the part
    /// may be collapsed again once it fills, and takes its clean slices
    /// into the batch, `PURGING` (dirty for the while, so not fresh: no heap
    /// takes one). The purge of `slice`, about to run, splits the huge page
    /// in the kernel; the clean slices it had made resident go back with
    /// it, and the part is advised to stay on small pages. Called after
    /// `slice` was pushed, [`Batch::has_room`] having held before. Lock
    /// held.
    fn split_part_of(&mut self, inner: &mut Inner, slice: &SliceMeta, now: u64) {
        // SAFETY: descriptors live in page headers.
        let page = unsafe { page_of_slice(slice) };
        let index = page.index_of(slice);
        let part = index / PART_SLICES;
        if page.collapse.get() & (1 << part) == 0 {
            return;
        }
        let Some(split) = self.splits.get_mut(self.split_count) else { return };
        *split = page.slice_address(part * PART_SLICES);
        self.split_count += 1;
        page.part_split(index);
        if let (0, Some(header)) = (part, page.slices.first()) {
            self.push(header, page.base() + size_of::<PageHeader>().next_multiple_of(4096), Purge::Header);
        }
        let clean_slices = page.slices.get((part * PART_SLICES).max(FIRST_SLICE)..(part + 1) * PART_SLICES);
        for clean in clean_slices.unwrap_or_default() {
            if clean.state.get() == SliceState::Clean && self.push(clean, clean.address, Purge::Clean) {
                inner.transition(clean, SliceState::Dirty, SliceFlags::PURGING, now);
            }
        }
    }

    /// Advises the batch's split parts, then gives back each entry's
    /// memory; returns, per entry, whether it now reads as zero. Called
    /// without the lock.
    fn give_back<S: PageSource>(&self, source: &S) -> [bool; BATCH_ROOM] {
        for &part in self.splits.get(..self.split_count).unwrap_or_default() {
            // SAFETY: a part of a page that stays live: it holds a PURGING
            // slice of the batch.
            unsafe { source.split(NonNull::new_unchecked(ptr::with_exposed_provenance_mut::<u8>(part))) };
        }
        let mut zeroed = [false; BATCH_ROOM];
        for (entry, zero) in self.entries().iter().zip(zeroed.iter_mut()) {
            // SAFETY: descriptors live in page headers, of live pages here.
            let address = unsafe { (*entry.slice).address };
            // The holes first, a run of adjacent pages per call.
            let mut holes = entry.holes;
            while holes != 0 {
                let first = holes.trailing_zeros();
                let run = (holes >> first).trailing_ones();
                holes &= !((((1u32 << run) - 1) << first) as u16);
                let memory = ptr::with_exposed_provenance_mut::<u8>(address + first as usize * HOLE_SIZE);
                // SAFETY: whole pages of a PURGING slice in use that hold
                // no live object and no listed one (see `SliceMeta::holes`):
                // nobody reads or writes them until their objects are
                // listed again (`Domain::fill_holes`), which only a slice
                // chosen after this batch is re-filed undergoes.
                unsafe { source.purge(NonNull::new_unchecked(memory), run as usize * HOLE_SIZE) };
            }
            if entry.offset as usize >= SLICE_SIZE {
                continue;
            }
            let start = address + entry.offset as usize;
            let memory = ptr::with_exposed_provenance_mut::<u8>(start);
            // SAFETY: memory that holds no object and that nobody touches
            // meanwhile: a PURGING dirty or clean slice, whole 4 KiB pages
            // past the carved objects of a PURGING slice in use, or the
            // header slice's pages past the header, which nothing uses.
            *zero = unsafe { source.purge(NonNull::new_unchecked(memory), address + SLICE_SIZE - start) };
        }
        zeroed
    }
}

/// Files `slice`, a `PURGING` slice whose purge is over, again by
/// its state, no longer `PURGING`. Lock held.
fn file_after_purge(inner: &mut Inner, slice: &SliceMeta, now: u64) {
    let flags = slice.flags.get() - SliceFlags::PURGING;
    inner.transition(slice, state_for(slice.used(), slice.capacity.get()), flags, now);
}

impl<S: PageSource, L: RawLock> Domain<S, L> {
    /// Purges dirty slices, makes holes of the empty pages of sparse slices
    /// ([`Self::purge_holes_older_than`]) and gives back cached huge
    /// mappings, those older than the purge delay, if a check is due: one
    /// per quarter of the delay at the most, so memory goes back up to a
    /// quarter of the delay after it is due. Memory is due a whole delay
    /// after it turns dirty (or its slice joins the sparse list), so the
    /// checks skipped while none waited delay no purge further. Every
    /// refill calls this, and a skipped check takes no lock.
    pub(crate) fn maybe_purge(&self) {
        let now = self.source.now_ms();
        let delay = self.purge_delay_ms();
        let next_check = |checked: u64| checked.saturating_add(delay / 4);
        if now < next_check(self.purge_checked_ms.load(Ordering::Relaxed)) {
            return;
        }
        let due = self.locked(|inner| {
            if now < next_check(self.purge_checked_ms.load(Ordering::Relaxed)) {
                return false;
            }
            self.purge_checked_ms.store(now, Ordering::Relaxed);
            let since = |head: *mut SliceMeta| {
                // SAFETY: a live descriptor at the head of an age list.
                (!head.is_null()).then(|| unsafe { (*head).age_since.get() })
            };
            [since(inner.age_head), since(inner.sparse_head), inner.huge_cache.oldest()]
                .into_iter()
                .flatten()
                .min()
                .is_some_and(|oldest| now >= oldest.saturating_add(delay))
        });
        if due {
            let cutoff = now.saturating_sub(delay);
            self.release_cached_mappings(cutoff);
            self.purge_older_than(cutoff, false);
            self.purge_holes_older_than(cutoff);
        }
    }

    /// Runs the delayed purge if it is due, as a cache refill does: for
    /// fronts whose threads may go on working without refilling. Returns
    /// whether memory is still waiting for its delay to pass (dirty slices,
    /// sparse slices whose empty pages may become holes, or cached huge
    /// mappings).
    pub fn purge_if_due(&self) -> bool {
        self.maybe_purge();
        self.memory_waiting()
    }

    /// Whether the domain holds memory waiting for the purge delay: dirty
    /// slices not yet purged, sparse slices on the sparse list, or cached
    /// huge mappings. Read without the lock, as the lists stood at the end
    /// of the last critical section: a front can ask after every few frees
    /// without contending for the lock.
    pub fn memory_waiting(&self) -> bool {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Gives back the cached huge mappings freed at or before `cutoff`.
    pub(super) fn release_cached_mappings(&self, cutoff: u64) -> usize {
        let mut unmaps = large::Unmaps::new();
        self.locked(|inner| inner.huge_cache.expire(cutoff, &mut unmaps));
        unmaps.release(&self.source)
    }

    /// Purges every dirty slice now, returns every empty page and cached
    /// huge mapping to the source, and gives back the memory past the
    /// carved objects of the slices in use that no heap owns, and, where
    /// the source gives memory back page by page ([`PageSource::purges`]),
    /// the empty 4 KiB pages inside such slices that are at most a quarter
    /// full ([`HOLE_MAX_USED`]; see `purge_tails`).
    pub fn purge_all(&self) {
        self.release_cached_mappings(u64::MAX);
        self.release_unused_pages();
        self.purge_older_than(u64::MAX, true);
        self.purge_tails();
    }

    /// Gives back the memory past the last carved object of every slice in
    /// use that no heap owns (partial or full; spans hold one object, all
    /// in use), and the clean slices of every part a huge page may back.
    /// No object was ever handed out there since the slice was formatted,
    /// but the memory may still be resident: from the slice's use for
    /// another class before (a dirty slice is formatted anew with nothing
    /// carved), or from a huge page the part was on. Only whole 4 KiB pages
    /// past the carved objects go, so the objects' own memory is untouched.
    ///
    /// Where the source gives memory back ([`PageSource::purges`]), the
    /// empty pages among a sparse slice's carved objects go too, as holes:
    /// a few long-lived objects then keep a page each resident, not their
    /// whole slice. The walk sees every slice no heap owns: each sparse one
    /// goes on the sparse list (once its tail, if any, went back), and
    /// [`Self::purge_holes_older_than`] then walks them all, each free list
    /// with the lock released, as the delayed purge does.
    ///
    /// The slices go `PURGING` a batch at a time under the lock, which
    /// keeps them from any heap (`list_for` files them nowhere) while the
    /// source call runs without it, and so keeps their carved count, and
    /// the range past it, fixed. Frees into them may still come (they take
    /// the lock and touch carved objects only); a slice whose last object
    /// is freed meanwhile turns dirty, and is filed as such when the batch
    /// is re-filed. A part that a huge page may back is split (see
    /// [`Batch::split_part_of`]) by the first tail or clean slice found in
    /// it: the part may be collapsed again at the next refill from its
    /// page that finds none of its slices fresh (memory in use gets its
    /// huge pages back once it is used again).
    pub(super) fn purge_tails(&self) {
        // Where the walk goes on: a page and a slice index in it. The page
        // stays mapped while the lock is released, since a slice of the
        // batch in it, or a clean slice of one of its parts, is `PURGING`
        // then (a page with a purging slice is never given
        // back); a walk that ends with no page left needs none.
        let mut cursor: (*mut PageHeader, usize) = (ptr::null_mut(), FIRST_SLICE);
        let mut batch = Batch::new();
        let mut started = false;
        loop {
            let now = self.source.now_ms();
            self.locked(|inner| {
                batch.file_in_use(inner, now);
                if !started {
                    cursor.0 = inner.all_pages;
                    started = true;
                }
                batch.clear();
                while !cursor.0.is_null() {
                    // A full batch ends the walk before any step to the next
                    // page: the cursor's page must be the one that holds the
                    // batch's last slice.
                    if !batch.has_room() {
                        break;
                    }
                    // SAFETY: live page header (see `cursor`).
                    let header = unsafe { &*cursor.0 };
                    let Some(slice) = header.slices.get(cursor.1) else {
                        cursor = (header.all_next.get(), FIRST_SLICE);
                        continue;
                    };
                    cursor.1 += 1;
                    if Inner::purgeable_in_use(slice) {
                        // Sparse: walked for holes after this pass, once
                        // on the sparse list (after its tail went back).
                        let holes = self.may_have_holes(slice);
                        match Self::purgeable_tail(slice) {
                            Some(start) if batch.push_tail(slice, start, holes) => {
                                inner.transition(slice, slice.state.get(), slice.flags.get() | SliceFlags::PURGING, now);
                                batch.split_part_of(inner, slice, now);
                            }
                            _ if holes => inner.list_sparse(slice, now),
                            _ => {}
                        }
                    } else if slice.state.get() == SliceState::Clean {
                        // Takes this slice with the rest of its part's clean
                        // ones, if a huge page may back the part.
                        batch.split_part_of(inner, slice, now);
                    }
                }
            });
            if batch.len == 0 {
                break;
            }
            batch.give_back(&self.source);
        }
        // Every sparse slice seen is on the sparse list now: walk them all
        // (and those that joined before), whatever their age.
        self.purge_holes_older_than(self.source.now_ms());
    }

    /// The start of the memory to give back past the carved objects of
    /// `slice`, one that [`Inner::purgeable_in_use`] accepts, if at least a
    /// 4 KiB page lies there. Lock held.
    fn purgeable_tail(slice: &SliceMeta) -> Option<usize> {
        let end_of_carved = slice.address + slice.carved.get() as usize * slice.object_size.get() as usize;
        let tail = end_of_carved.next_multiple_of(HOLE_SIZE);
        (tail < slice.address + SLICE_SIZE).then_some(tail)
    }

    /// Whether [`Self::walk_for_empty_pages`] is to look for empty pages in
    /// `slice`, one that [`Inner::purgeable_in_use`] accepts: the source
    /// gives memory back ([`PageSource::purges`]) and the slice is partial
    /// and at most [`HOLE_MAX_USED`] full. Lock held.
    fn may_have_holes(&self, slice: &SliceMeta) -> bool {
        self.source.purges() && Inner::hole_candidate(slice)
    }

    /// Takes the free list off `slice`, one that [`Self::may_have_holes`]
    /// accepts, for [`Self::walk_for_empty_pages`]: the slice's list starts
    /// anew, empty, and takes the frees that come meanwhile. The caller
    /// keeps every heap from the slice until [`Self::reattach_after_walk`]:
    /// it makes the slice `PURGING` before it releases the lock. Lock held.
    pub(super) fn detach_for_walk(&self, slice: &SliceMeta) -> HoleWalk {
        slice.used_when_walked.set(slice.used());
        let walk = HoleWalk {
            slice,
            address: slice.address,
            size: slice.object_size.get(),
            carved: slice.carved.get(),
            multiplier: slice.multiplier.get(),
            limit: slice.carved_limit.get(),
            holes: slice.holes.get(),
            head: slice.free.get(),
            empty: 0,
            last: ptr::null_mut(),
            walked: 0,
        };
        slice.free.set(slice.end());
        walk
    }

    /// Walks the list that [`Self::detach_for_walk`] took off a slice and
    /// counts, per carved page, the objects on it: a page whose carved
    /// objects are all on the list holds no live object, and is found empty
    /// unless it is a hole already. If any is, the objects on the empty
    /// pages are taken off the list. Sets `walk.empty`, `walk.last` and
    /// `walk.walked`, and `walk.head` to the list's new first object.
    ///
    /// The walk is at most the slice's carved count long (4,096 objects at
    /// the most), and checks every object as a carved one with the free
    /// marker: a corrupt list is reported ([`Domain::corrupted_list`]),
    /// never followed out of the slice.
    ///
    /// # Safety
    ///
    /// `walk` comes from [`Self::detach_for_walk`] of this domain and was
    /// not walked yet, and its slice is still held as that function
    /// requires: no one but the caller reaches the list's objects (but a
    /// program that writes to memory it freed, which the checks report).
    pub(super) unsafe fn walk_for_empty_pages(&self, walk: &mut HoleWalk) {
        let HoleWalk { slice, address, size, carved, multiplier, limit, .. } = *walk;
        let end = Link::end_of(address) as *mut FreeObject;
        let (link_key, marker) = (self.link_key(), FreeObject::marker_of(self.key()));
        // Per page: carved objects that overlap it, and listed free ones.
        let mut carved_on = [0u16; HOLES_PER_SLICE];
        let mut free_on = [0u16; HOLES_PER_SLICE];
        let count = |counts: &mut [u16; HOLES_PER_SLICE], mut pages: u16| {
            while pages != 0 {
                if let Some(count) = counts.get_mut(pages.trailing_zeros() as usize) {
                    *count += 1;
                }
                pages &= pages - 1;
            }
        };
        // (A slice with no object size has no carved object: nothing to
        // count.)
        if let Some(size) = NonZeroU32::new(size) {
            for (page, on) in (0u32..).zip(carved_on.iter_mut()) {
                *on = objects_on_page(page, size, carved).len() as u16;
            }
        }
        let mut object = walk.head;
        let mut listed = 0;
        while object != end {
            let offset = (object as usize).wrapping_sub(address);
            // A listed object is a carved one with the free marker: a link
            // to anything else (a live object among them) is corruption,
            // and would make a page with a live object look empty.
            // SAFETY: read only once the object is known to be carved; the
            // caller keeps everyone else from the listed objects.
            let listed_object = offset < SLICE_SIZE
                && is_carved_object(offset as u32, multiplier, limit)
                && unsafe { FreeObject::marker(object) } == marker;
            if !listed_object || listed >= carved {
                // SAFETY: a held slice's descriptor, in a page that stays.
                self.corrupted_list(unsafe { &*slice });
            }
            count(&mut free_on, pages_of(offset as u32, size));
            listed += 1;
            walk.last = object;
            // SAFETY: a carved object of the slice on the detached list.
            object = unsafe { FreeObject::next(object, link_key) };
        }
        walk.walked = listed;
        walk.empty = (0..HOLES_PER_SLICE)
            .filter(|&page| carved_on[page] != 0 && free_on[page] == carved_on[page] && walk.holes & (1 << page) == 0)
            .fold(0u16, |pages, page| pages | 1 << page);
        if walk.empty == 0 {
            return;
        }
        // The list again, without the objects on the empty pages. Its first
        // link goes to a stand-in word, as in `SliceMeta::carve`.
        let mut first_link = 0usize;
        let mut previous = ptr::addr_of_mut!(first_link).cast::<Link>();
        let mut object = walk.head;
        walk.last = ptr::null_mut();
        while object != end {
            // SAFETY: as above; the walk above checked every link.
            let next = unsafe { FreeObject::next(object, link_key) };
            let offset = (object as usize - address) as u32;
            if walk.empty & pages_of(offset, size) == 0 {
                // SAFETY: `previous` is a listed object or `first_link`.
                unsafe { Link::set_next(previous, object as usize, link_key) };
                previous = object.cast::<Link>();
                walk.last = object;
            }
            object = next;
        }
        // SAFETY: as above.
        unsafe { Link::set_next(previous, end as usize, link_key) };
        // SAFETY: `first_link` holds the new first link, encoded.
        walk.head = unsafe { Link::next(ptr::addr_of_mut!(first_link).cast::<Link>(), link_key) } as *mut FreeObject;
    }

    /// Gives `slice` back the list [`Self::walk_for_empty_pages`] walked,
    /// before the objects freed into it since the detach, and makes holes
    /// of the pages the walk found empty. The slice is still held as
    /// [`Self::detach_for_walk`] requires. Lock held.
    pub(super) fn reattach_after_walk(&self, slice: &SliceMeta, walk: &HoleWalk) {
        debug_assert!(ptr::eq(slice, walk.slice));
        if !walk.last.is_null() {
            // SAFETY: the last object of the walked list, which the slice's
            // holder alone reaches; the lock guards the slice's own list.
            unsafe { FreeObject::set_next(walk.last, slice.free.get(), self.link_key()) };
            slice.free.set(walk.head);
        }
        slice.holes.set(walk.holes | walk.empty);
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

    /// Gives back, as holes, the empty pages of the sparse slices that
    /// joined the sparse list at or before `cutoff`: for the delayed purge,
    /// those whose free list grew a purge delay ago or more, so that memory
    /// freed in a slice that keeps a few live objects goes back without a
    /// call; for an explicit purge, every sparse slice (which
    /// [`Self::purge_tails`] lists first). Each slice leaves the list when
    /// looked at, and joins it again only when more of its objects are
    /// freed (or at the next explicit purge).
    ///
    /// One slice at a time, and its walk with the lock released: the
    /// delayed purge runs in some thread's refill, an explicit one in any
    /// thread, while others may need the lock, and a walk is up to 4,096
    /// steps through memory that is seldom cached. Under the lock, the
    /// slice goes `PURGING` (no heap is handed it, frees into it still
    /// come) and its free list is taken off it; the list is walked without
    /// the lock; under the lock again, the list goes back and the pages
    /// found empty become holes, given back with the lock released. A slice with no empty page is filed again at
    /// once; one with holes, when the next slice is taken.
    pub(super) fn purge_holes_older_than(&self, cutoff: u64) {
        let mut batch = Batch::new();
        loop {
            let now = self.source.now_ms();
            let walk = self.locked(|inner| {
                batch.file_in_use(inner, now);
                batch.clear();
                if inner.sparse_head.is_null() {
                    return None;
                }
                // SAFETY: a live descriptor on the sparse list.
                let slice = unsafe { &*inner.sparse_head };
                if slice.age_since.get() > cutoff {
                    return None;
                }
                inner.forget_sparse(slice);
                let walk = self.detach_for_walk(slice);
                inner.transition(slice, slice.state.get(), slice.flags.get() | SliceFlags::PURGING, now);
                Some(walk)
            });
            let Some(mut walk) = walk else { break };
            // SAFETY: just detached; the slice stays `PURGING` until the
            // list is back, so no heap reaches its objects meanwhile.
            unsafe { self.walk_for_empty_pages(&mut walk) };
            let now = self.source.now_ms();
            let holes = self.locked(|inner| {
                // SAFETY: a `PURGING` slice's descriptor: its page stays.
                let slice = unsafe { &*walk.slice };
                self.reattach_after_walk(slice, &walk);
                inner.hole_walked_unlocked += u64::from(walk.walked);
                // The batch was cleared above, so the push succeeds; the
                // holes would simply stay resident if it did not.
                if walk.empty != 0 && batch.push_with_holes(slice, slice.address + SLICE_SIZE, Purge::Tail, walk.empty) {
                    batch.split_part_of(inner, slice, now);
                    return true;
                }
                file_after_purge(inner, slice, now);
                false
            });
            if holes {
                // The slice is filed again at the top of the next round.
                batch.give_back(&self.source);
            }
        }
    }

    /// Purges the dirty slices made dirty at or before `cutoff` (all of
    /// them if `all`), oldest first, with the clean slices of each part a
    /// huge page may back that one of them splits ([`Batch::split_part_of`]),
    /// and gives back the pages this leaves unused (with `all`, every
    /// entirely fresh page).
    pub(super) fn purge_older_than(&self, cutoff: u64, all: bool) {
        let mut batch = Batch::new();
        loop {
            let now = self.source.now_ms();
            batch.clear();
            self.locked(|inner| {
                while batch.has_room() && !inner.age_head.is_null() {
                    // SAFETY: live descriptor on the age list.
                    let slice = unsafe { &*inner.age_head };
                    if !all && slice.age_since.get() > cutoff {
                        break;
                    }
                    if !batch.push(slice, slice.address, Purge::Dirty) {
                        break;
                    }
                    inner.transition(slice, SliceState::Dirty, SliceFlags::PURGING, now);
                    batch.split_part_of(inner, slice, now);
                }
            });
            // Whether each slice's memory now reads as zero, as the source
            // says: a span laid over it for a zeroed request skips clearing.
            let zeroed = batch.give_back(&self.source);
            let mut empty: [*mut PageHeader; PURGE_BATCH] = [ptr::null_mut(); PURGE_BATCH];
            let released = self.locked(|inner| {
                let mut released = 0;
                for (entry, &zero) in batch.entries().iter().zip(zeroed.iter()) {
                    // SAFETY: as above.
                    let slice = unsafe { &*entry.slice };
                    match entry.kind {
                        Purge::Clean => inner.transition(slice, SliceState::Clean, SliceFlags::empty(), now),
                        Purge::Header => continue,
                        // (No tails here: only `purge_tails` takes them.)
                        Purge::Tail | Purge::Dirty => {
                            slice.object_size.set(0);
                            slice.set_carved(0);
                            slice.holes.set(0);
                            slice.free.set(NO_FREE);
                            let flags = if zero { SliceFlags::PURGED | SliceFlags::ZEROED } else { SliceFlags::PURGED };
                            inner.transition(slice, SliceState::Dirty, flags, now);
                            inner.purges += 1;
                        }
                    }
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
            if batch.len < PURGE_BATCH && (!all || released == 0) {
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
