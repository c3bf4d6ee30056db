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

/// Bytes of the slice that holds every object of one free list; a link whose
/// decoded target lies outside its own object's slice is corrupt.
/// Must equal `page::SLICE_SIZE` (checked there); spelled out here because
/// the loom model compiles this file alone.
pub(crate) const LINK_REGION: usize = 64 * 1024;

/// The link word at the start of every free object, the one home of the
/// free-list encoding: the local free lists of slices and the remote lists
/// both store their links through it.
///
/// Unless built with `--cfg strata_unhardened` (for measurement only), the word holds
/// `next ^ key`, where `key` is the domain's random link key
/// (`Domain::link_key`), so a use-after-free write
/// of a plain pointer decodes to an address that is outside the object's
/// slice (but for a chance of 2^-48 for a value chosen without the key),
/// and [`Link::next_checked`]
/// refuses it. The list ends are not null inside a slice's free list but the
/// slice's own address with bit 0 set ([`Link::end_of`]), which lies in the
/// slice, so one range test checks every link, the last included. With
/// `strata_unhardened`, the word holds `next` as is and
/// nothing is checked.
///
/// Callers guarantee that every object is at least 16 bytes, 2-byte aligned
/// and writable, and that they own it (it is on no other list). Objects may
/// be only 2-byte aligned, so the word is accessed unaligned.
#[repr(C)]
pub(crate) struct Link {
    /// The encoded next object.
    pub(crate) word: usize,
}

impl Link {
    /// The end marker of the free list of the slice holding `object`: the
    /// slice's address with bit 0 set. Never an object (objects are 2-byte
    /// aligned), and inside the slice, so it passes [`Link::same_region`].
    #[inline(always)]
    pub(crate) fn end_of(object: usize) -> usize {
        (object & !(LINK_REGION - 1)) | 1
    }

    /// Whether `next` is a list end rather than an object.
    #[inline(always)]
    pub(crate) fn is_end(next: usize) -> bool {
        next & 1 != 0
    }

    /// Whether `next` lies in the slice of `object`.
    #[inline(always)]
    pub(crate) fn same_region(object: usize, next: usize) -> bool {
        (object ^ next) < LINK_REGION
    }

    #[inline(always)]
    fn encode(next: usize, key: usize) -> usize {
        if cfg!(strata_unhardened) {
            next
        } else {
            next ^ key
        }
    }

    /// The decoded next link, unchecked: the raw value for remote lists,
    /// whose end is 0.
    ///
    /// # Safety
    /// `this` must point to a readable link word (any alignment).
    #[inline(always)]
    pub(crate) unsafe fn next(this: *mut Link, key: usize) -> usize {
        // SAFETY: the caller guarantees a readable word.
        Self::encode(unsafe { core::ptr::read_unaligned(this.cast::<usize>()) }, key)
    }

    /// The decoded next object of a slice's free list, or `None` when the
    /// link does not lead into the object's own slice: the word was
    /// overwritten (a use-after-free write). Always `Some` when hardening is
    /// off.
    ///
    /// # Safety
    /// As for [`Link::next`].
    #[inline(always)]
    pub(crate) unsafe fn next_checked(this: *mut Link, key: usize) -> Option<usize> {
        // SAFETY: forwarded.
        let next = unsafe { Self::next(this, key) };
        if cfg!(strata_unhardened) || Self::same_region(this as usize, next) {
            Some(next)
        } else {
            None
        }
    }

    /// Sets the next link, encoded.
    ///
    /// # Safety
    /// `this` must point to a writable link word (any alignment).
    #[inline(always)]
    pub(crate) unsafe fn set_next(this: *mut Link, next: usize, key: usize) {
        // SAFETY: the caller guarantees a writable word.
        unsafe { core::ptr::write_unaligned(this.cast::<usize>(), Self::encode(next, key)) }
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
    /// Pushes `object` unless the slice is orphaned. Its link is encoded
    /// with `key` (see [`Link`]); the list's last link decodes to 0.
    ///
    /// # Safety
    /// `object` must be valid for writes of one [`Link`], owned by the caller,
    /// and belong to the slice of this list.
    pub(crate) unsafe fn push(&self, object: *mut Link, key: usize) -> Push {
        let mut old = self.head.load(Ordering::Relaxed);
        loop {
            if old & ORPHAN != 0 {
                return Push::Orphaned;
            }
            // SAFETY: the caller owns `object` until the CAS publishes it.
            unsafe { Link::set_next(object, old, key) };
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
