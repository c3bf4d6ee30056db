//! The remote-free list: the one lock-free structure of the core.
//!
//! Every slice has a [`RemoteList`]. A thread that frees objects of a slice owned
//! by another heap pushes them here with a single compare-and-swap, one object
//! or a chain of up to `REMOTE_BATCH` (a heap that batches its remote frees,
//! `Heap::flush_remote`); it never waits for the owner. The owner takes the whole list with one swap when its free list
//! runs dry.
//!
//! The word also records whether the slice has an owner. When no heap owns the
//! slice, the word holds only [`ORPHAN`], pushes are refused, and the freeing
//! thread hands the object to the domain (under the domain lock) instead. This
//! closes the race between a remote free and the owner giving the slice back:
//! after the owner's [`RemoteList::orphan`] swap, nobody can add to a list that
//! nobody will drain.
//!
//! Giving a slice back therefore *closes* its list: the owner swaps in
//! [`ORPHAN`] without any lock, which detaches every object pushed so far in
//! one step, and walks the detached list (checking its links) still without
//! the lock. The detached objects are the owner's alone: no
//! push can reach them any more. Every push after the swap is refused and
//! goes to the domain lock, where it finds the slice orphaned and frees the
//! object into the slice's free list directly. So each object ends up exactly
//! once on one side: on the detached list (pushed before the swap) or on the
//! locked path (refused after it). Only the splice of the walked list onto
//! the slice's free list, O(1), needs the domain lock (`Domain::take_back`).
//!
//! The list is one word: the offset of its first object in the slice, the
//! number of objects on it, and the flag (see [`RemoteList`]). Because the
//! word counts the objects, the owner takes the list without walking it:
//! the chain ends with the slice's end marker, as a free list does, so when
//! the slice's free list is empty the chain becomes the free list as it is,
//! and each link is checked when it becomes the head, like every free
//! list's. Only a list that goes in front of a non-empty free list, or one
//! detached when the slice is given back, is walked, to find its last
//! object.
//!
//! Objects are at least 2-byte aligned (every size class is even), so bit 0 of
//! an object's offset is free to carry the flag.
//!
//! This file is also compiled by the loom model, which supplies its own `sync`.

use crate::sync::{AtomicUsize, Ordering};

/// Tag in the list word: the slice has no owning heap; pushes are refused.
pub(crate) const ORPHAN: usize = 1;

/// The list word's count of objects starts at this bit; below it, the
/// offset of the first object in its slice (and [`ORPHAN`]).
const COUNT_SHIFT: u32 = LINK_REGION.trailing_zeros();

/// The bits of the list word that hold the first object's offset.
const OFFSET_MASK: usize = LINK_REGION - 1;

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
/// which is never followed. A slice's free list checks each decoded link
/// when it becomes the list's head, before anything is read through it
/// (`SliceMeta::head_is_object`); a remote list walked in front of a
/// non-empty free list checks each one as it is walked ([`Walked::walk`]).
/// The ends of a slice's lists are not null but the slice's last byte
/// ([`Link::end_of`]), which lies in the slice, so that a corrupt last link
/// is caught like any other. With
/// `strata_unhardened`, the word holds `next` as is and nothing is checked.
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
    /// The end marker of every list of the slice holding `object`: the
    /// address of the slice's last byte. Never an object (objects are 2-byte
    /// aligned and at least 16 bytes long), inside the slice, so it passes
    /// [`Link::same_region`], and the one offset in the slice that
    /// `SliceMeta::head_is_object` refuses besides those outside it.
    #[inline(always)]
    pub(crate) fn end_of(object: usize) -> usize {
        object | (LINK_REGION - 1)
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

    /// The decoded next link, unchecked.
    ///
    /// # Safety
    /// `this` must point to a readable link word (any alignment).
    #[inline(always)]
    pub(crate) unsafe fn next(this: *mut Link, key: usize) -> usize {
        // SAFETY: the caller guarantees a readable word.
        Self::encode(unsafe { core::ptr::read_unaligned(this.cast::<usize>()) }, key)
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

/// A remote list taken off its slice in one swap ([`RemoteList::take`] or
/// [`RemoteList::orphan`]): its first object and its length, read from the
/// list's word. Once detached, the objects are the taker's alone (no push
/// reaches them any more). The chain ends with the slice's end marker.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Taken {
    /// The first object (the last one pushed); null when the list is empty.
    pub(crate) first: *mut Link,
    /// Objects on the list.
    pub(crate) count: u32,
}

impl Taken {
    /// What an empty list gives.
    pub(crate) const EMPTY: Self = Self { first: core::ptr::null_mut(), count: 0 };
}

/// A taken remote list ([`Taken`]) walked to its last object, made without
/// any lock by whoever took the list, to be put in front of a non-empty
/// free list ([`Walked::prepend_to`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Walked {
    /// The first object (the last one pushed); null when the list is empty.
    pub(crate) first: *mut Link,
    /// The last object (the first one pushed), whose link decodes to the
    /// slice's end marker; null when the list is empty.
    pub(crate) last: *mut Link,
    /// Objects on the list.
    pub(crate) count: u32,
}

impl Walked {
    /// The walk of an empty list.
    pub(crate) const EMPTY: Self = Self { first: core::ptr::null_mut(), last: core::ptr::null_mut(), count: 0 };

    /// Walks the `taken` list (links encoded with `key`) to its last object,
    /// checking every link before it is followed: it must lead into the
    /// same slice ([`Link::same_region`]) and not be a list end, and the
    /// last object's must be the slice's end marker, after exactly as many
    /// objects as the list's word counted. Returns the walk, or `Err` with
    /// the address of the object whose link was overwritten (a
    /// use-after-free write), which is not followed. Nothing is checked
    /// when hardening is off. Bounded by the count, so even a corrupted
    /// chain that loops ends.
    ///
    /// # Safety
    /// The list must have been detached by the caller with one swap of a
    /// [`RemoteList`]: every object on it is a free object of one slice,
    /// readable, and the caller's alone.
    pub(crate) unsafe fn walk(taken: Taken, key: usize) -> Result<Self, usize> {
        if taken.count == 0 {
            return Ok(Self::EMPTY);
        }
        let first = taken.first;
        let mut last = first;
        for _ in 1..taken.count {
            // SAFETY: `last` is an object of the list (the caller's
            // guarantee for the first; each later one passed the checks).
            let next = unsafe { Link::next(last, key) };
            if !cfg!(strata_unhardened) && (!Link::same_region(last as usize, next) || Link::is_end(next)) {
                return Err(last as usize);
            }
            last = next as *mut Link;
        }
        // SAFETY: as above.
        if !cfg!(strata_unhardened) && unsafe { Link::next(last, key) } != Link::end_of(last as usize) {
            return Err(last as usize);
        }
        Ok(Self { first, last, count: taken.count })
    }

    /// Puts the walked objects in front of the free list whose head is
    /// `head` (an object or a list end), linking the last one to it with
    /// `key`; returns the new head: the first walked object, or `head`
    /// itself when the walk was empty. O(1).
    ///
    /// # Safety
    /// The walk's objects must still be the caller's alone (see
    /// [`Walked::walk`]), and the caller must hold the free list (its
    /// slice's owner, or the domain lock for a slice no heap owns).
    pub(crate) unsafe fn prepend_to(self, head: usize, key: usize) -> usize {
        if self.count == 0 {
            return head;
        }
        // SAFETY: the last object is the caller's, writable.
        unsafe { Link::set_next(self.last, head, key) };
        self.first as usize
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
/// Invariant: the word is `count << COUNT_SHIFT | offset`, where `count`
/// is the number of objects on the list and `offset` that of the first one
/// in the slice (bit 0 clear), or 0 when the list is empty; or it is
/// [`ORPHAN`] (no owner, empty). Each object's link leads to the next; the
/// last one's is the slice's end marker ([`Link::end_of`]).
pub(crate) struct RemoteList {
    /// Built directly (`RemoteList { head: AtomicUsize::new(ORPHAN) }`) so
    /// that `SliceMeta::new` stays `const` while loom's atomics are not.
    pub(crate) head: AtomicUsize,
}

impl RemoteList {
    /// Pushes `object` unless the slice is orphaned. Its link is encoded
    /// with `key` (see [`Link`]).
    ///
    /// # Safety
    /// `object` must be valid for writes of one [`Link`], owned by the caller,
    /// and belong to the slice of this list.
    #[inline]
    pub(crate) unsafe fn push(&self, object: *mut Link, key: usize) -> Push {
        // SAFETY: a chain of one object, the caller's.
        unsafe { self.push_chain(object, object, 1, key) }
    }

    /// Pushes a chain of `count` objects, `first` to `last`, with one
    /// compare-and-swap, unless the slice is orphaned (then nothing is
    /// written). The chain's links from `first` up to `last` are the
    /// caller's, encoded with `key`; `last`'s link is set here, to the list's
    /// old first object, or to the end marker if the list was empty.
    /// Release: every write the caller made to the chain's objects (their
    /// links, their free markers) happens before the owner's swap that
    /// takes them (Acquire).
    ///
    /// # Safety
    /// Every object of the chain must be valid for writes of one [`Link`],
    /// owned by the caller (on no other list), and belong to the slice of
    /// this list; `first` must lead to `last` through the chain's links,
    /// `count` objects in all, and the list must stay within its slice's
    /// count of objects.
    #[inline]
    pub(crate) unsafe fn push_chain(&self, first: *mut Link, last: *mut Link, count: u32, key: usize) -> Push {
        let region = first as usize & !OFFSET_MASK;
        let mut old = self.head.load(Ordering::Relaxed);
        loop {
            if old & ORPHAN != 0 {
                return Push::Orphaned;
            }
            let next = if old == 0 { Link::end_of(region) } else { region | (old & OFFSET_MASK) };
            // SAFETY: the caller owns the chain until the CAS publishes it.
            unsafe { Link::set_next(last, next, key) };
            let new = ((old >> COUNT_SHIFT) + count as usize) << COUNT_SHIFT | (first as usize & OFFSET_MASK);
            match self.head.compare_exchange_weak(old, new, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return Push::Pushed,
                Err(now) => old = now,
            }
        }
    }

    /// The list that the word `word` describes, in the slice at `region`.
    fn taken(word: usize, region: usize) -> Taken {
        let count = (word >> COUNT_SHIFT) as u32;
        if count == 0 {
            return Taken::EMPTY;
        }
        Taken { first: (region | (word & OFFSET_MASK & !ORPHAN)) as *mut Link, count }
    }

    /// Takes every pushed object; the slice, at `region`, stays owned.
    /// Owner only.
    #[inline]
    pub(crate) fn take(&self, region: usize) -> Taken {
        // Cheap check first: most refills find the list empty.
        if self.head.load(Ordering::Relaxed) == 0 {
            return Taken::EMPTY;
        }
        let old = self.head.swap(0, Ordering::Acquire);
        debug_assert!(old & ORPHAN == 0, "take() on an orphaned slice");
        Self::taken(old, region)
    }

    /// Marks the slice, at `region`, orphaned and returns what was pushed
    /// before (closes the list). Owner only, when it gives the slice back;
    /// no lock needed.
    ///
    /// Acquire: the pushes of the returned objects (Release) happen before
    /// the owner reads their links. Release: the owner's last writes to the
    /// slice (its free list, its count of objects in use) happen before the
    /// writes of any thread that frees into the slice under the domain lock
    /// after finding it orphaned ([`RemoteList::is_orphaned`], Acquire),
    /// possibly before the owner itself takes the lock.
    pub(crate) fn orphan(&self, region: usize) -> Taken {
        let old = self.head.swap(ORPHAN, Ordering::AcqRel);
        debug_assert!(old & ORPHAN == 0, "orphan() on an orphaned slice");
        Self::taken(old, region)
    }

    /// Gives the slice an owner again: pushes are accepted from now on.
    ///
    /// Called under the domain lock, when the list is [`ORPHAN`].
    pub(crate) fn adopt(&self) {
        debug_assert_eq!(self.head.load(Ordering::Relaxed), ORPHAN);
        self.head.store(0, Ordering::Release);
    }

    /// Whether the slice has no owner. Acquire: pairs with the Release of
    /// [`RemoteList::orphan`], so a thread that sees the slice orphaned also
    /// sees the last owner's writes to its free list and count.
    pub(crate) fn is_orphaned(&self) -> bool {
        self.head.load(Ordering::Acquire) & ORPHAN != 0
    }
}
