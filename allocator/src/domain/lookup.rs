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
        if let Some(slice) = self.live_small(address, key) {
            return Ok(Lookup::Small { slice });
        }
        let not_ours = FreeError::new(FreeErrorKind::NotAllocated, address);
        let page = page_of(address);
        if address == 0 || !self.source.owns(page) {
            return Err(not_ours);
        }
        // SAFETY: registered pages are live and start with a header.
        let common = unsafe { &*(page as *const PageCommon) };
        match common.kind_in(self.id()) {
            None => Err(not_ours),
            Some(PageKind::Huge) => {
                if address != common.object() || common.object_size() == 0 {
                    return Err(not_ours);
                }
                Ok(Lookup::Huge { common })
            }
            Some(PageKind::Slab) => {
                // SAFETY: as above; slab pages carry a full header.
                let header = unsafe { &*(page as *const PageHeader) };
                let index = (address - page) >> SLICE_SHIFT;
                let Some(slice) = header.slices.get(index) else { return Err(not_ours) };
                let size = slice.object_size.get() as usize;
                let offset = address & (SLICE_SIZE - 1);
                if size != 0 {
                    // `live_small` refused the address: either a carved
                    // object carrying the free marker, or not an object.
                    let carved = is_carved_object(offset as u32, slice.multiplier.get(), slice.carved_limit.get());
                    // SAFETY: a carved object boundary: at least 16 bytes
                    // of the slice, readable.
                    if carved && unsafe { FreeObject::marker(address as *mut FreeObject) } == FreeObject::marker_of(key) {
                        return Err(FreeError::new(FreeErrorKind::Freed, address));
                    }
                    return Err(not_ours);
                }
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

    /// The slice of `address` if it is a live small object of this domain:
    /// a carved object boundary of a slab page's slice (an unformatted
    /// slice has a carved limit of 0 and refuses every offset) that does
    /// not carry the free marker of `key`, the domain's marker key. `None`
    /// for every other address, which [`Domain::lookup_with_key`] then
    /// classifies. These are all the tests of `lookup`'s small case and no
    /// more, so that the remote free, their main user, stays short.
    #[inline(always)]
    pub(crate) fn live_small(&self, address: usize, key: usize) -> Option<&SliceMeta> {
        let page = page_of(address);
        if address == 0 || !self.source.owns(page) {
            return None;
        }
        // SAFETY: registered pages are live and start with a header.
        let common = unsafe { &*(page as *const PageCommon) };
        if common.kind_in(self.id()) != Some(PageKind::Slab) {
            return None;
        }
        // SAFETY: as above; slab pages carry a full header.
        let header = unsafe { &*(page as *const PageHeader) };
        let slice = header.slices.get((address - page) >> SLICE_SHIFT)?;
        let offset = (address & (SLICE_SIZE - 1)) as u32;
        if !is_carved_object(offset, slice.multiplier.get(), slice.carved_limit.get()) {
            return None;
        }
        // SAFETY: a carved object boundary: at least 16 bytes of the slice,
        // readable.
        let marker = unsafe { FreeObject::marker(address as *mut FreeObject) };
        (marker != FreeObject::marker_of(key)).then_some(slice)
    }

    /// The usable size of the allocation at `address`.
    pub fn usable_size(&self, address: usize) -> Result<usize, FreeError> {
        Ok(match self.lookup(address)? {
            Lookup::Small { slice } => slice.object_size.get() as usize,
            Lookup::Span { slice } => slice.span.get() as usize * SLICE_SIZE,
            Lookup::Huge { common } => common.object_size(),
        })
    }
}
