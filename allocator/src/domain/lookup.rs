//! Pointer lookup: whether an address is an allocation of this domain, and
//! which. The one place that validates a pointer in full; the heap's free
//! fast path takes only pointers of slices it owns and sends every other
//! here.

use super::*;

impl<S: PageSource, L: RawLock> Domain<S, L> {
    /// Validates `address` as an allocation of this domain.
    #[inline]
    pub(crate) fn lookup(&self, address: usize) -> Result<Lookup<'_>, FreeError> {
        self.lookup_with_key(address, self.key())
    }

    /// [`Domain::lookup`] for a caller that holds the domain's marker key
    /// already (a bound heap's copy), so that the key is not read again.
    #[inline]
    pub(crate) fn lookup_with_key(&self, address: usize, key: usize) -> Result<Lookup<'_>, FreeError> {
        let not_ours = FreeError::new(FreeErrorKind::NotAllocated, address);
        match self.place(address) {
            Place::Foreign => Err(not_ours),
            Place::Huge { common } => {
                if address != common.object() || common.object_size() == 0 {
                    return Err(not_ours);
                }
                Ok(Lookup::Huge { common })
            }
            Place::Slice { slice } => {
                if slice.object_size.get() != 0 {
                    // SAFETY: `address` lies in `slice`, a slice of a live
                    // page of this domain.
                    return match unsafe { slice.small_object(address, key) } {
                        SmallObject::Live => Ok(Lookup::Small { slice }),
                        SmallObject::Freed => Err(FreeError::new(FreeErrorKind::Freed, address)),
                        SmallObject::NotAnObject => Err(not_ours),
                    };
                }
                let offset = address & (SLICE_SIZE - 1);
                if offset == 0 && slice.has(SliceFlags::SPAN_HEAD) {
                    return Ok(Lookup::Span { slice });
                }
                if offset == 0 && slice.state.get() == SliceState::Dirty && slice.class.get() == SPAN_CLASS {
                    return Err(FreeError::new(FreeErrorKind::Freed, address));
                }
                Err(not_ours)
            }
        }
    }

    /// The slice of `address` if it is a live small object of this domain
    /// ([`SmallObject::Live`]), else `None`: [`Domain::lookup`]'s small
    /// case and no more, so that the remote free, its main user, stays
    /// short.
    #[inline(always)]
    pub(crate) fn live_small(&self, address: usize, key: usize) -> Option<&SliceMeta> {
        let Place::Slice { slice } = self.place(address) else { return None };
        // SAFETY: as in `lookup_with_key`.
        (unsafe { slice.small_object(address, key) } == SmallObject::Live).then_some(slice)
    }

    /// Where `address` lies: in a slice of one of this domain's slab pages,
    /// in one of its huge pages, or in neither. The registry answers
    /// whether the page is the page source's, then the page's own header
    /// whether it is this domain's and of which kind.
    #[inline(always)]
    fn place(&self, address: usize) -> Place<'_> {
        let page = page_of(address);
        if address == 0 || !self.source.owns(page) {
            return Place::Foreign;
        }
        // SAFETY: registered pages are live and start with a header.
        let common = unsafe { &*(page as *const PageCommon) };
        match common.kind_in(self.id()) {
            None => Place::Foreign,
            Some(PageKind::Huge) => Place::Huge { common },
            Some(PageKind::Slab) => {
                // SAFETY: as above; slab pages carry a full header.
                let header = unsafe { &*(page as *const PageHeader) };
                match header.slices.get((address - page) >> SLICE_SHIFT) {
                    Some(slice) => Place::Slice { slice },
                    None => Place::Foreign,
                }
            }
        }
    }

    /// The usable size of the allocation at `address`.
    pub fn usable_size(&self, address: usize) -> Result<usize, FreeError> {
        Ok(match self.lookup(address)? {
            Lookup::Small { slice } => slice.object_size.get() as usize,
            Lookup::Span { slice } => slice.span.get() as usize * SLICE_SIZE,
            Lookup::Huge { common } => common.object_size(),
        })
    }

    /// Whether moving the allocation at `address` into a fresh one (allocate,
    /// copy, free the old) would help memory go back: `true` for a small
    /// object on a slice at most [`DEFRAG_MAX_USED`] full that the copy
    /// cannot land in. `mover` is the heap the copy will come from: its own
    /// slices are refused, since a copy would fill the hole it leaves; with
    /// no heap named, any slice a heap holds is refused. Moving the objects
    /// out of a sparse slice lets it empty (when no heap holds it) or
    /// leaves room for its holder's next allocations, while the copies fill
    /// the slice the mover allocates from.
    ///
    /// `false` for a fuller slice, and for spans and huge blocks, whose
    /// memory goes back whole when they are freed. An address that is not a
    /// live allocation of this domain is an error, as for
    /// [`Domain::usable_size`].
    ///
    /// A hint, read without the lock: by the time the caller acts, another
    /// thread may have taken the slice or freed into it. Frees that heaps
    /// still hold back in batches count as objects in use.
    pub fn defrag_hint(&self, address: usize, mover: Option<&Heap>) -> Result<bool, FreeError> {
        let Lookup::Small { slice } = self.lookup(address)? else {
            return Ok(false);
        };
        let owner = slice.owner.load(Ordering::Relaxed);
        let refused = match mover {
            Some(heap) => owner == heap as *const Heap as usize,
            None => owner != 0,
        };
        if refused {
            return Ok(false);
        }
        let capacity = objects_per_slice(slice.class.get() as usize) as u64;
        let (numerator, denominator) = DEFRAG_MAX_USED;
        Ok(u64::from(slice.used()) * denominator <= capacity * numerator)
    }
}

/// Where an address lies, as [`Domain::place`] finds it.
enum Place<'a> {
    /// In this slice of one of the domain's slab pages (formatted or not).
    Slice { slice: &'a SliceMeta },
    /// In one of the domain's huge pages.
    Huge { common: &'a PageCommon },
    /// In no page of the domain.
    Foreign,
}
