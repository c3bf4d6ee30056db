//! Statistics: a plain snapshot of the allocator's state.

use core::fmt;

use crate::size_class::{class_size, CLASS_COUNT};

/// Per-class figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Slices formatted for the class (partial, full, or owned by a cache).
    pub slices: usize,
    /// Of those, slices owned by a thread or CPU cache.
    pub cached_slices: usize,
    /// Objects handed out (objects waiting on remote lists still count).
    pub objects_live: usize,
}

/// A snapshot of the allocator, taken by `stats()` on each front.
///
/// Figures about slices owned by other threads' caches are read without
/// stopping those threads, so they are exact only when the program is quiet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Bytes in live objects, spans and huge allocations, counted at their
    /// usable size. Objects freed by a thread other than their slice's
    /// owner count until the owner takes them back: while they wait on the
    /// slice's remote list, and, in the std front and the malloc shim,
    /// while the freeing thread's heap holds them in a batch (up to 32 per
    /// slice, 16 slices; see `Heap::set_remote_batching`), until that heap
    /// is flushed (the statistics calls flush the calling thread's heap),
    /// released, or its thread exits.
    pub bytes_live: usize,
    /// Bytes that are (or may be) backed by physical memory: page headers,
    /// slices that are neither clean nor purged, and huge mappings.
    pub bytes_resident: usize,
    /// Bytes currently mapped from the page source.
    pub bytes_mapped: usize,
    /// Slab pages currently mapped.
    pub pages_mapped: usize,
    /// Slab pages given back to the source so far.
    pub pages_released: u64,
    /// Huge allocations live, with their own mapping each.
    pub huge_allocations: usize,
    /// Bytes of freed huge mappings kept for reuse (counted in
    /// `bytes_mapped` and `bytes_resident`), given back after the purge
    /// delay.
    pub huge_cached_bytes: usize,
    /// Slices in each state. A purged slice is counted in `slices_purged`,
    /// not in `slices_dirty`.
    pub slices_clean: usize,
    /// Partial slices, including those owned by caches.
    pub slices_partial: usize,
    /// Full slices, including span slices and those owned by caches.
    pub slices_full: usize,
    /// Dirty slices not yet purged.
    pub slices_dirty: usize,
    /// Dirty slices whose memory went back to the source.
    pub slices_purged: usize,
    /// Slice purges performed so far.
    pub purges: u64,
    /// 4 KiB pages given back from inside slices still in use: the empty
    /// pages of sparse slices, which an explicit purge gives back where the
    /// page source can (see `Domain::purge_all`), until the slice is handed
    /// out again. Not counted in `bytes_resident`.
    pub hole_pages: usize,
    /// Parts of slab pages ([`COLLAPSE_SIZE`](crate::page::COLLAPSE_SIZE),
    /// 2 MiB) moved onto huge pages so far, each once none of its slices
    /// was fresh any more (with huge pages on; see `source::MmapSource`).
    /// A part is counted again if a purge split it and it filled up again.
    pub parts_collapsed: u64,
    /// Batches of objects handed to caches (a cache taking a slice).
    pub refills: u64,
    /// Times a cache gave objects or slices back to the domain.
    pub flushes: u64,
    /// Objects freed by a thread other than the owner of their slice.
    pub remote_frees: u64,
    /// Times the domain lock was taken (taking a snapshot counts too).
    pub lock_acquisitions: u64,
    /// Of `lock_acquisitions`, the times the lock was held by another thread
    /// when asked for, so that the caller waited.
    pub lock_contended: u64,
    /// Remote-free objects still pending on slices that went back to the
    /// domain, walked (counted and checked) by the heap giving them back
    /// *before* it took the domain lock; under the lock each list is only
    /// spliced onto its slice's free list, in constant time. No list whose
    /// length the workload decides is walked with the lock held.
    pub remote_walked_unlocked: u64,
    /// The walks counted in `remote_walked_unlocked`: slices that went back
    /// to the domain with remote frees pending.
    pub remote_lists_walked: u64,
    /// Free objects walked (counted and checked) looking for the empty
    /// pages of sparse slices, by the delayed purge and by explicit ones:
    /// each list is walked with the domain lock released; under the lock
    /// it is only taken off its slice and put back, in constant time.
    pub hole_walked_unlocked: u64,
    /// Slices with holes that a heap received and filled itself, with the
    /// domain lock released: it lists the withheld objects again before it
    /// allocates from the slice, and their pages fault back in then.
    pub hole_fills_unlocked: u64,
    /// The withheld objects those fills listed again.
    pub hole_filled_unlocked: u64,
    /// Figures per size class.
    pub classes: [ClassStats; CLASS_COUNT],
}

impl Stats {
    pub(crate) const fn zero() -> Self {
        Self {
            bytes_live: 0,
            bytes_resident: 0,
            bytes_mapped: 0,
            pages_mapped: 0,
            pages_released: 0,
            huge_allocations: 0,
            huge_cached_bytes: 0,
            slices_clean: 0,
            slices_partial: 0,
            slices_full: 0,
            slices_dirty: 0,
            slices_purged: 0,
            purges: 0,
            hole_pages: 0,
            parts_collapsed: 0,
            refills: 0,
            flushes: 0,
            remote_frees: 0,
            lock_acquisitions: 0,
            lock_contended: 0,
            remote_walked_unlocked: 0,
            remote_lists_walked: 0,
            hole_walked_unlocked: 0,
            hole_fills_unlocked: 0,
            hole_filled_unlocked: 0,
            classes: [ClassStats { slices: 0, cached_slices: 0, objects_live: 0 }; CLASS_COUNT],
        }
    }
}

impl fmt::Display for Stats {
    /// The statistics table printed by the fronts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "strata statistics")?;
        writeln!(f, "  bytes live       {:>14}", self.bytes_live)?;
        writeln!(f, "  bytes resident   {:>14}", self.bytes_resident)?;
        writeln!(f, "  bytes mapped     {:>14}", self.bytes_mapped)?;
        writeln!(f, "  pages mapped     {:>14}", self.pages_mapped)?;
        writeln!(f, "  pages released   {:>14}", self.pages_released)?;
        writeln!(f, "  huge allocations {:>14}", self.huge_allocations)?;
        writeln!(f, "  huge cached      {:>14}", self.huge_cached_bytes)?;
        writeln!(
            f,
            "  slices           clean {} partial {} full {} dirty {} purged {}",
            self.slices_clean, self.slices_partial, self.slices_full, self.slices_dirty, self.slices_purged
        )?;
        writeln!(f, "  purges           {:>14}", self.purges)?;
        writeln!(f, "  hole pages       {:>14}", self.hole_pages)?;
        writeln!(f, "  parts collapsed  {:>14}", self.parts_collapsed)?;
        writeln!(f, "  cache refills    {:>14}", self.refills)?;
        writeln!(f, "  cache flushes    {:>14}", self.flushes)?;
        writeln!(f, "  remote frees     {:>14}", self.remote_frees)?;
        writeln!(
            f,
            "  domain lock      {:>14} taken, {} contended",
            self.lock_acquisitions, self.lock_contended
        )?;
        writeln!(
            f,
            "  remote walked    {:>14} objects in {} lists given back, outside the lock",
            self.remote_walked_unlocked, self.remote_lists_walked
        )?;
        writeln!(f, "  holes walked     {:>14} objects, outside the lock", self.hole_walked_unlocked)?;
        writeln!(
            f,
            "  holes filled     {:>14} objects in {} slices, outside the lock",
            self.hole_filled_unlocked, self.hole_fills_unlocked
        )?;
        writeln!(f, "  {:>8} {:>8} {:>8} {:>12}", "class", "slices", "cached", "objects")?;
        for (class, c) in self.classes.iter().enumerate() {
            if c.slices != 0 || c.objects_live != 0 {
                writeln!(
                    f,
                    "  {:>8} {:>8} {:>8} {:>12}",
                    class_size(class),
                    c.slices,
                    c.cached_slices,
                    c.objects_live
                )?;
            }
        }
        Ok(())
    }
}
