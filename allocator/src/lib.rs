//! Strata: a slab memory allocator built on one `no_std` core.
//!
//! # Glossary
//!
//! - **Domain**: an independent pool of pages with one lock ([`Domain`]). In
//!   userspace there is one; the kernel module may keep one per NUMA node.
//! - **Page**: a [`PAGE_SIZE`](page::PAGE_SIZE) (4 MiB) block from the page
//!   source, aligned to its size, with a header holding every slice
//!   descriptor. Not the 4 KiB MMU page.
//! - **Slice**: a [`SLICE_SIZE`](page::SLICE_SIZE) (64 KiB) aligned part of a
//!   page. It carries a state and a size class.
//! - **Object**: one cell of a slice; all objects of a slice have its class's
//!   size.
//! - **Size class**: one of the object sizes in [`size_class`], from 16 bytes
//!   to 32 KiB, an eighth of a power of two apart.
//! - **Span**: a run of whole slices holding one object larger than a class.
//! - **Huge allocation**: an object with a mapping of its own.
//! - **Heap**: a per-thread (or per-CPU) cache ([`Heap`]), owning a current
//!   slice per class and a few parked ones it ran dry recently.
//! - **Carving**: writing the free-list links of a slice's never-used
//!   objects, a page at a time, as they are needed.
//! - **Remote free**: a free by a thread whose heap does not own the slice.
//! - **Purge**: giving a dirty slice's memory back to the page source, and
//!   the holes of sparse slices in use (and, on an explicit purge, the
//!   memory past the last carved object of the slices in use).
//! - **Hole**: an empty 4 KiB page of a sparse slice in use, given back by
//!   an explicit purge, or by the delayed purge once the slice has waited
//!   the purge delay on the *sparse list*; the objects on it are *withheld*
//!   (neither in use nor free) until the slice is handed out again, when
//!   they are listed again ([`PageSource::purges`]).
//! - **Part**: a 2 MiB aligned half of a page, the size of an x86-64 huge
//!   page. Only when huge pages are asked for: the source backs each part
//!   of a page it maps with a huge page from its first touch.
//! - **Split**: what the first purge in a part on a huge page does to it:
//!   the part goes back to small pages ([`PageSource::split`]), and its
//!   never-used slices, which the huge page made resident, are purged too.
//! - **Collapse**: moving a split part, once none of its slices is fresh
//!   again, back onto one huge page ([`PageSource::collapse`]).
//! - **Page source**: where pages come from ([`PageSource`]): mmap, a static
//!   arena, or the kernel page allocator.
//!
//! # Design
//!
//! Memory is divided **domain ⊃ page ⊃ slice ⊃ object**. The header of any
//! object's page is found by masking its address, and its slice descriptor by
//! shifting the offset, so a free needs no search. Descriptors live in the
//! page header, away from the objects; a free object holds only its
//! free-list link and a free marker.
//!
//! A slice is formatted for a class when it is handed out and keeps that
//! class while it holds live objects. When its last object is freed it
//! becomes dirty, and a dirty slice can be formatted for *any* class, so
//! memory freed by one size serves every other. Heaps take slices by cost:
//! **partial → dirty (same class first) → clean → full**, ties broken by the
//! occupancy of the page so that sparse pages drain (see [`domain`]).
//!
//! ## Slice states
//!
//! | state   | live objects                 | on which list                         | can become |
//! |---------|------------------------------|---------------------------------------|------------|
//! | clean   | none, never used             | page's fresh mask                     | partial, full (span) |
//! | partial | below the full threshold     | its page's partial file of its class (the page on `partial[class][bucket]`) and, while sparse and waiting for holes, the sparse list; or a heap | full, dirty |
//! | full    | at least the threshold (7/8) | `full[class]` if a free object is left, or a heap | partial, dirty |
//! | dirty   | none, was used; keeps class  | its page's dirty file of its class (the page on `dirty[class][bucket]`) and the age list | partial, full, dirty+purged |
//!
//! The domain lists pages, not slices, by class and occupancy bucket, so a
//! page whose bucket changes moves once per class it holds, never slice by
//! slice (see [`domain`]).
//!
//! Flags combine with the state: *purged* (a dirty slice whose memory went
//! back to the source; it costs what a clean slice costs but is never called
//! clean; *zeroed* beside it when the source said the purge left it reading
//! as zero, so a zeroed span over it is not cleared again), *cached* (owned
//! by a heap, on no list), *span head*/*span tail*,
//! and *purging* (a purge in flight, on no list: of a dirty slice, of
//! the never-carved end or the holes of a partial or full one, whose frees
//! still come in under the lock, or of a clean slice of a part a huge page
//! backed, held dirty for the while so that it is not fresh). A page whose
//! slices are all clean or purged goes back to the source; one with a
//! purging slice stays. A partial slice no heap owns may have holes
//! (`SliceMeta::holes`); it is listed as partial like any other, and the
//! heap that receives it fills the holes (lists their objects again, and
//! the pages fault back in) right after the refill, with the lock released.
//!
//! ## Locks, in order
//!
//! 1. **Heap lock**. Protects the heap: the free lists, used and carved
//!    counts of the slices it owns (current and parked), its pending frees
//!    and counters. In [`SharedStrata`] it is a real lock; thread-local
//!    heaps need none; in the kernel module a CPU's heap is used only on
//!    that CPU with interrupts disabled, which keeps out both other tasks
//!    (no migration, no preemption) and interrupt handlers that allocate on
//!    the same CPU.
//! 2. **Domain lock** ([`RawLock`]). Protects the state lists, the age and
//!    sparse lists, the page list, every page-header field, the
//!    descriptors of slices no heap owns, and the domain counters. Never held across a page-source
//!    call that maps or unmaps. In Linux user space it is `FutexLock`,
//!    which spins briefly and then sleeps on a futex (so a waiter never
//!    burns the time slice of a preempted holder); `no_std` fronts use
//!    `SpinLock`. In the kernel it is a spinlock taken with interrupts
//!    saved, since hardirq handlers may allocate; a kernel lock is
//!    initialised at its final address ([`RawLock::init`]). Its
//!    acquisitions and contended acquisitions are counted in [`Stats`].
//! 3. **Page-source locks**: the arena's free ranges
//!    ([`source::ArenaSource`]); in the kernel, the page index's lock, taken
//!    under the domain lock when a page is forgotten.
//!
//! Lock-free: each slice's remote list (one CAS per push of a batch of
//! remote frees, one swap per drain;
//! see the loom model in `tests/loom.rs`), the slice owner word, the time
//! of the last check for the delayed purge (written under the domain lock,
//! read before it so that a refill takes the lock once), and the page
//! source's page map that vets pointers before they are dereferenced
//! ([`PageSource::owns`]: the [`registry`] in user space; in the kernel, a
//! mark in the `struct page` of buddy pages and an xarray of vmalloc'ed
//! ones).
//!
//! No lock is held while walking a list whose length the workload decides.
//! The one such list on the way to the domain lock is the remote list of a
//! slice a heap gives back (a refill retiring the heap's oldest parked
//! slice, or the release of a heap), and it is walked before the lock:
//!
//! 1. Without any lock, the owning heap clears the slice's owner word and
//!    *closes* the remote list: one swap (acquire-release) detaches every
//!    object pushed so far and marks the slice orphaned. The detached
//!    objects are the heap's alone from then on.
//! 2. Still without the lock, the heap walks the detached list (as long as
//!    the list's word counts: the word holds the count with the first
//!    object's offset), finds its last object, and checks every link
//!    (`remote::Walked`). An overwritten link is reported as corruption,
//!    never followed.
//! 3. Under the domain lock, O(1): the last object is linked to the slice's
//!    free list, the first becomes its head, the count comes off the
//!    slice's objects in use, and the slice is filed by its new state
//!    (`Domain::take_back`).
//!
//! A remote free that reaches the slice after the swap is refused (the
//! slice is orphaned) and takes the domain lock, where it frees the object
//! straight into the slice's free list: between steps 1 and 3 the slice is
//! orphaned but still `CACHED` (on no list, so no heap is handed it), and
//! the free changes only its list and count. The lock orders that free and
//! the splice either way, and the swap's release makes the heap's own last
//! writes to the list visible to it. So every object freed into the slice
//! ends up exactly once on it: on the detached list if its push came before
//! the swap, through the lock if after (the loom model checks this). A heap
//! that batches its remote frees keeps a refused batch whole, as a chain,
//! and hands up to eight such chains to the domain in one critical section,
//! each spliced onto its slice's free list in O(1) like a walked list
//! (pushed again instead, if the slice has been handed to a heap since;
//! `Domain::free_chain_pending`). A heap
//! released whole gives its slices back in batches of a few (closed and
//! walked before each batch's critical section), and the domain's lists are
//! kept so that a slice's change of state costs a bounded amount of work
//! under the lock (see [`domain`]).
//!
//! The delayed purge's walks for holes follow the same pattern. A sparse
//! slice's free list, up to 4,096 objects long, is taken off the slice
//! under the domain lock while the slice goes `PURGING` (no heap is handed
//! it; a free into it goes to the list it starts anew); the detached list
//! is walked and its objects on empty pages taken off without the lock;
//! under the lock again it is linked before the new list in O(1), and the
//! empty pages become holes. An explicit purge (`purge`, `malloc_trim`)
//! puts every sparse slice on the sparse list and walks them the same way.
//! [`Stats::hole_walked_unlocked`] counts the objects walked. The heap that
//! later receives such a slice fills its holes itself, with the lock
//! released ([`Stats::hole_filled_unlocked`]).
//!
//! ## Allocation context
//!
//! Every path that can reach the page source carries the caller's context
//! ([`PageSource::Context`]): `()` in user space, the GFP flags in the
//! kernel. Work done under the domain lock or with interrupts disabled never
//! maps with a context that may sleep; a kernel caller that may sleep grows
//! the domain outside those sections ([`Domain::grow`]) and tries again.
//!
//! ## Hardening
//!
//! Every free is checked, on the fast path too. The fast path
//! ([`Heap::free_owned`]) takes a pointer only if its page is one in which
//! the freeing heap owns slices (a small table in the heap, so a pointer
//! Strata never handed out is refused without reading through it), the heap
//! owns its slice, it is a carved object boundary (one multiplication), and
//! the object does not carry the free marker (a random key, the same word
//! in every free object) that every free object has. Everything else goes to the slow path,
//! the one place that validates a pointer in full (`Domain::lookup`: the
//! page source must own the page, the page must belong to this domain, and
//! the same boundary and marker tests), then frees remotely or reports
//! misuse. Failures come back as [`FreeError`]; the std front prints one
//! line and aborts.
//!
//! On by default (building with `RUSTFLAGS="--cfg strata_unhardened"` turns
//! it off, for measuring its cost only; see `benches/hardening-cost.sh`):
//!
//! - **Encoded free-list links.** The first word of a free object holds its
//!   link as `next ^ link_key`, with a per-domain random key drawn apart
//!   from the marker key (from [`PageSource::entropy`]: `getrandom` in user
//!   space; the kernel source gives its own). One type, `remote::Link`, owns
//!   the encoding for both the slices' free lists and the remote lists. A
//!   slice's free list ends not at null but at the slice's last byte, inside
//!   the slice, and an allocation takes the list's head only if its offset
//!   in the slice is below that end's (`(head ^ slice_address) <
//!   SLICE_SIZE - 1`): one test says both that the list holds an object and
//!   that the link the head was decoded from stayed in its 64 KiB slice.
//!   An allocation takes the head and makes the object's decoded link the
//!   new head without looking at it; the next allocation tests it before
//!   reading through it, so a bad link is never followed, only found one
//!   allocation later (the object it belonged to was free, and is handed
//!   out as it should be). The remote lists end at the same marker: one
//!   taken back into an empty free list becomes that list as it is, and is
//!   checked the same way; one put in front of a non-empty free list, or
//!   detached when its slice is given back, is checked link by link as it
//!   is walked, for exactly as many links as its word counts. A use-after-free write of
//!   a plain pointer decodes to an address outside the slice (but for a
//!   chance of 2^-48 for a value chosen without the key), and is reported
//!   through [`PageSource::corrupted`] ([`FreeErrorKind::CorruptedList`],
//!   naming the slice, or [`FreeErrorKind::Corrupted`] on a remote list,
//!   naming the object; the mmap source prints one line and aborts, the
//!   default panics, a kernel source may override it) instead of being
//!   followed. What it does not stop: a write that keeps the link inside its
//!   slice (it needs the key), or reads that leak the key (a freed object
//!   shows `next ^ link_key`, and `next` is a neighbour). Cost on the fast
//!   path: the key's load on free, and on allocation an `xor` to decode and
//!   two more instructions for the head test than a plain end test needs
//!   (figures in `benches/RESULTS.md`).
//! - **Shuffled carving.** Each run of a fresh slice that is carved (about
//!   an OS page, at least 8 objects) is linked window by window (32
//!   objects, windows in address order), each window from a random start
//!   with a random stride coprime to its length, neither 1 nor its length
//!   less 1, and never from the neighbour of the object before it, so
//!   consecutive allocations from a run are not neighbours in memory (bar
//!   windows of 3, 4 or 6 objects, the tail of some runs, which have no
//!   such stride), while a thread that reads them in allocation order
//!   still moves forward. The
//!   heap's own xorshift generator, seeded from the domain, picks them; it
//!   costs nothing on the fast path (carving is the slow path).
//!
//! The shim adds an opt-in debug mode (`STRATA_DEBUG=1`: canaries after
//! small objects, guard pages after large ones); see its `ENVIRONMENT.md`.
//!
//! # Use
//!
//! ```
//! use std::alloc::{GlobalAlloc, Layout};
//!
//! static ALLOCATOR: strata::Strata = strata::Strata::new();
//! // In a program: #[global_allocator] static GLOBAL: strata::Strata = strata::Strata::new();
//!
//! let layout = Layout::from_size_align(100, 8).unwrap();
//! let p = unsafe { ALLOCATOR.alloc(layout) };
//! assert!(!p.is_null());
//! unsafe { ALLOCATOR.dealloc(p, layout) };
//! assert_eq!(ALLOCATOR.stats().bytes_live, 0);
//! ```
#![no_std]
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(feature = "std")]
extern crate std;

include!("modules.rs");

#[cfg(feature = "spin")]
mod shared;
#[cfg(all(feature = "std", feature = "mmap"))]
mod global;
#[cfg(all(feature = "std", target_arch = "x86_64"))]
#[doc(hidden)]
pub mod tls;
#[cfg(feature = "allocator-api2")]
mod api2;

pub use cache::{Heap, OwnedFree};
#[cfg(feature = "std")]
pub use cache::{EmptyHeap, EMPTY_HEAP};
pub use slice::MAX_COUNTDOWN;
pub use domain::{Domain, FreeError, FreeErrorKind};
#[cfg(all(feature = "std", feature = "mmap"))]
pub use global::Strata;
pub use lock::{ConstLock, RawLock};
#[cfg(feature = "spin")]
pub use lock::SpinLock;
#[cfg(all(feature = "std", target_os = "linux"))]
pub use lock::FutexLock;
#[cfg(feature = "spin")]
pub use shared::SharedStrata;
pub use source::PageSource;
pub use stats::Stats;

/// Whether this build has the default hardening (encoded free-list links and
/// shuffled carving; see "Hardening" above): `false` only in a build made
/// with `RUSTFLAGS="--cfg strata_unhardened"`, which exists to measure what
/// the hardening costs and is never shipped. Fronts report it (the shim's
/// `STRATA_VERBOSE=1` line) so that a measurement can tell its builds apart.
///
/// ```
/// // A benchmark names the build its figures come from.
/// let build = if strata::HARDENED { "hardened" } else { "unhardened" };
/// println!("strata build: {build}");
/// ```
pub const HARDENED: bool = !cfg!(strata_unhardened);
