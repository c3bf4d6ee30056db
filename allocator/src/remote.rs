//! The remote-free list: the one lock-free structure of the core.
//!
//! Every slice has a [`RemoteList`]. A thread that frees an object of a slice owned
//! by another heap pushes it here with a single compare-and-swap; it never waits
//! for the owner. The owner takes the whole list with one swap when its free list
//! runs dry.
//!
//! The word also records whether the slice has an owner. When no heap owns the
//! slice, the word holds only [`ORPHAN`], pushes are refused, and the freeing
//! thread hands the object to the domain (under the domain lock) instead. This
//! closes the race between a remote free and the owner giving the slice back:
//! after the owner's [`RemoteList::orphan`] swap, nobody can add to a list that
//! nobody will drain.
//!
//! Objects are at least 2-byte aligned (every size class is even), so bit 0 of
//! an object address is free to carry the flag.
//!
//! This file is also compiled by the loom model, which supplies its own `sync`.

use crate::sync::{AtomicUsize, Ordering};

/// Tag in the list word: the slice has no owning heap; pushes are refused.
pub(crate) const ORPHAN: usize = 1;

/// The link word stored in the first word of a free object.
///
/// Callers guarantee that every object pushed is at least 16 bytes, 2-byte
/// aligned and writable, and that they own it (it is not on any other list).
/// Objects may be only 2-byte aligned, so the word is accessed unaligned.
#[repr(C)]
pub(crate) struct Link {
    /// Next object in the list, or null.
    pub(crate) next: *mut Link,
}

impl Link {
    /// The next object.
    ///
    /// # Safety
    /// `this` must point to a readable link word (any alignment).
    #[inline(always)]
    pub(crate) unsafe fn next(this: *mut Link) -> *mut Link {
        // SAFETY: the caller guarantees a readable word.
        unsafe { core::ptr::read_unaligned(this.cast::<*mut Link>()) }
    }

    /// Sets the next object.
    ///
    /// # Safety
    /// `this` must point to a writable link word (any alignment).
    #[inline(always)]
    pub(crate) unsafe fn set_next(this: *mut Link, next: *mut Link) {
        // SAFETY: the caller guarantees a writable word.
        unsafe { core::ptr::write_unaligned(this.cast::<*mut Link>(), next) }
    }
}

/// Outcome of a remote push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    /// The object is on the owner's remote list.
    Pushed,
    /// The slice has no owner; the object was not pushed.
    Orphaned,
}

/// A lock-free LIFO of objects freed by threads other than the slice's owner.
///
/// Invariant: the word is either [`ORPHAN`] (no owner, empty) or the address of
/// the first pushed object (0 when empty) with bit 0 clear.
pub(crate) struct RemoteList {
    /// Built directly (`RemoteList { head: AtomicUsize::new(ORPHAN) }`) so
    /// that `SliceMeta::new` stays `const` while loom's atomics are not.
    pub(crate) head: AtomicUsize,
}

impl RemoteList {
    /// Pushes `object` unless the slice is orphaned.
    ///
    /// # Safety
    /// `object` must be valid for writes of one [`Link`], owned by the caller,
    /// and belong to the slice of this list.
    pub(crate) unsafe fn push(&self, object: *mut Link) -> Push {
        let mut old = self.head.load(Ordering::Relaxed);
        loop {
            if old & ORPHAN != 0 {
                return Push::Orphaned;
            }
            // SAFETY: the caller owns `object` until the CAS publishes it.
            unsafe { Link::set_next(object, old as *mut Link) };
            match self.head.compare_exchange_weak(
                old,
                object as usize,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Push::Pushed,
                Err(now) => old = now,
            }
        }
    }

    /// Takes every pushed object; the slice stays owned. Owner only.
    pub(crate) fn take(&self) -> *mut Link {
        // Cheap check first: most refills find the list empty.
        if self.head.load(Ordering::Relaxed) == 0 {
            return core::ptr::null_mut();
        }
        let old = self.head.swap(0, Ordering::Acquire);
        debug_assert!(old & ORPHAN == 0, "take() on an orphaned slice");
        old as *mut Link
    }

    /// Marks the slice orphaned and returns what was pushed before. Owner only,
    /// when it gives the slice back.
    pub(crate) fn orphan(&self) -> *mut Link {
        let old = self.head.swap(ORPHAN, Ordering::Acquire);
        debug_assert!(old & ORPHAN == 0, "orphan() on an orphaned slice");
        old as *mut Link
    }

    /// Gives the slice an owner again: pushes are accepted from now on.
    ///
    /// Called under the domain lock, when the list is [`ORPHAN`].
    pub(crate) fn adopt(&self) {
        debug_assert_eq!(self.head.load(Ordering::Relaxed), ORPHAN);
        self.head.store(0, Ordering::Release);
    }

    /// Whether the slice has no owner.
    pub(crate) fn is_orphaned(&self) -> bool {
        self.head.load(Ordering::Acquire) & ORPHAN != 0
    }
}
