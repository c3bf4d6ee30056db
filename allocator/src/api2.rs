//! `allocator_api2::alloc::Allocator` for the fronts, so collections can use
//! a Strata instance without making it the global allocator.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

use allocator_api2::alloc::{AllocError, Allocator};

fn block(ptr: *mut u8, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
    NonNull::new(ptr).map(|p| NonNull::slice_from_raw_parts(p, layout.size())).ok_or(AllocError)
}

/// Implements `Allocator` for a front through its `GlobalAlloc`.
macro_rules! allocator_through_global_alloc {
    ([$($generics:tt)*] $front:ty) => {
        // SAFETY: blocks come from `GlobalAlloc`, which honours size and
        // alignment and keeps them valid until deallocated.
        unsafe impl<$($generics)*> Allocator for $front {
            fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
                // SAFETY: any layout is accepted; zero sizes get a unique block.
                block(unsafe { self.alloc(layout) }, layout)
            }

            fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
                // SAFETY: as above.
                block(unsafe { self.alloc_zeroed(layout) }, layout)
            }

            unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
                // SAFETY: the caller passes a block of this allocator.
                unsafe { self.dealloc(ptr.as_ptr(), layout) }
            }
        }
    };
}

#[cfg(all(feature = "std", feature = "mmap"))]
allocator_through_global_alloc!([] crate::Strata);

#[cfg(feature = "spin")]
allocator_through_global_alloc!(
    [S: crate::PageSource + Sync, L: crate::RawLock + Sync, const HEAPS: usize] crate::SharedStrata<S, L, HEAPS>
);
