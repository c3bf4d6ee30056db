//! Page sources: where pages come from and where they go back.
//!
//! The core never asks the environment for memory except through
//! [`PageSource`]. Userspace uses [`MmapSource`]; `no_std` targets hand a
//! static region to [`ArenaSource`]. The kernel module implements the trait
//! with the kernel page allocator. For tests only, the hidden feature
//! `testing` adds `FailingSource`, which wraps a source and makes mapping
//! fail on demand; it is not part of the public API.

use core::ptr::NonNull;
#[cfg(any(feature = "arena", feature = "testing"))]
use core::sync::atomic::{AtomicBool, Ordering};
#[cfg(feature = "testing")]
use core::sync::atomic::AtomicUsize;

/// The supply of page memory, and the map from addresses back to pages.
///
/// # Safety
/// Implementations must uphold, for every successful `map(size, align, _)`:
/// - the returned range `[ptr, ptr + size)` is readable and writable, aligned
///   to `align`, and overlaps no other live mapping of this source;
/// - if [`PageSource::ZEROED`] is true, it reads as zero;
/// - it stays valid until passed to `unmap` with the same `size`.
///
/// `purge` must leave the range mapped and usable; its contents afterwards are
/// zero if it returns `true` and unspecified otherwise.
///
/// `owns(page)` must return `true` only for an address passed to a
/// successful `register` and not yet to `unregister`; it must return `false`,
/// without touching memory at `page`, for every other address, including
/// tagged and out-of-range ones. The core dereferences a page's header only
/// after `owns` said yes.
///
/// A successful `remap(ptr, old, new, align, _)` ends the mapping at `ptr`
/// and returns one of `new` bytes aligned to `align`, holding the first
/// `min(old, new)` bytes of the old one (the rest zero if `ZEROED`); it may
/// return `ptr` itself. It must accept `register` for any
/// `PAGE_SIZE`-aligned address inside the mapping it returns. A failed
/// `remap` leaves the old mapping as it was.
///
/// All methods may be called from any thread, with or without the domain
/// lock held, except that `map`, `remap` and `unmap` are never called with it
/// held. `purge`, `unregister` and `unmap` must be safe in every context in
/// which `map` is called (the core gives memory back before it reports a
/// failure, within the failing call's context).
pub unsafe trait PageSource {
    /// The caller's allocation context, carried from the front down to every
    /// call that may map memory: `()` in user space, the GFP flags in the
    /// kernel, where a caller that cannot sleep must never wait for memory.
    /// `Default` is the context of an ordinary caller that may wait.
    type Context: Copy + Default;

    /// Whether fresh mappings read as zero.
    const ZEROED: bool;

    /// Whether [`PageSource::remap`] can succeed. The core asks it only of
    /// sources that say so (and takes no other step towards a remap
    /// otherwise).
    const REMAPS: bool = false;

    /// Maps `size` bytes aligned to `align`, within what `context` allows.
    /// `size` is a multiple of 4096 and `align` a power of two of at least
    /// 4096. Returns `None` when out of memory; never panics.
    fn map(&self, size: usize, align: usize, context: Self::Context) -> Option<NonNull<u8>>;

    /// Gives a mapping back.
    ///
    /// # Safety
    /// `ptr` and `size` must be exactly those of one live mapping from
    /// [`PageSource::map`], and nothing may use the range afterwards.
    unsafe fn unmap(&self, ptr: NonNull<u8>, size: usize);

    /// Resizes the mapping at `ptr` from `old_size` to `new_size` bytes
    /// (multiples of 4096), in place or by moving it to an address aligned
    /// to `align`, without copying the contents through the caller. Returns
    /// the mapping's address, or `None` when the source cannot (the default:
    /// the caller then maps anew and copies), in which case the old mapping
    /// is untouched.
    ///
    /// # Safety
    /// `ptr` and `old_size` must be exactly those of one live mapping of
    /// this source. On success the old range may no longer be used, except
    /// as part of the returned mapping.
    unsafe fn remap(
        &self,
        ptr: NonNull<u8>,
        old_size: usize,
        new_size: usize,
        align: usize,
        context: Self::Context,
    ) -> Option<NonNull<u8>> {
        let _ = (ptr, old_size, new_size, align, context);
        None
    }

    /// Releases the physical memory behind `[ptr, ptr + size)` but keeps the
    /// range usable. Returns whether the range now reads as zero.
    ///
    /// # Safety
    /// The range must lie inside a live mapping of this source, and its
    /// contents must no longer be needed.
    unsafe fn purge(&self, ptr: NonNull<u8>, size: usize) -> bool;

    /// Asks for `[part, part + COLLAPSE_SIZE)`, a
    /// [`COLLAPSE_SIZE`](crate::page::COLLAPSE_SIZE) (2 MiB) aligned part of
    /// a slab page none of whose slices is fresh (clean or purged) any
    /// more, to be backed by one huge page (a transparent huge page for
    /// [`MmapSource`] with huge pages on): fewer TLB misses on memory in
    /// use. The contents do not change. Returns whether the part is on a
    /// huge page now. Either way the domain does not ask again for the part
    /// until a purge in it has split it. The default refuses.
    ///
    /// Called without the domain lock, since it may take a while (the mmap
    /// source copies the part into a huge page: about half a millisecond
    /// here).
    ///
    /// # Safety
    /// `part` must be the address of a collapse part of a live slab page of
    /// this source, which stays live until the call returns.
    unsafe fn collapse(&self, part: NonNull<u8>) -> bool {
        let _ = part;
        false
    }

    /// Stops backing `[part, part + COLLAPSE_SIZE)`, a collapse part of a
    /// slab page, with a huge page: the page a purge there is about to
    /// split, and whose never-used slices the domain purges too, since a
    /// huge page made them resident. From then on the part takes small
    /// pages as it is touched, and nothing fills it back behind the
    /// domain's back (for [`MmapSource`], `MADV_NOHUGEPAGE`, which also
    /// keeps `khugepaged` away), until [`PageSource::collapse`] asks for a
    /// huge page again. The default does nothing.
    ///
    /// # Safety
    /// `part` must be the address of a collapse part of a live slab page of
    /// this source, which stays live until the call returns.
    unsafe fn split(&self, part: NonNull<u8>) {
        let _ = part;
    }

    /// Asks for the mapping `[block, block + size)` of a huge block (an
    /// object larger than [`MAX_SPAN`](crate::page::MAX_SPAN), with a
    /// mapping of its own) that is growing by reallocation to be backed by
    /// huge pages as it is touched: for [`MmapSource`], unless turned off
    /// ([`MmapSource::set_huge_blocks`]), `MADV_HUGEPAGE`, so that the
    /// first touch of each 2 MiB-aligned part that lies wholly in the
    /// mapping faults in one huge page rather than 512 small ones, and the
    /// block costs fewer TLB misses. A part touched at all is then resident
    /// whole; a block that grows was filled to its old size, and its owner
    /// is filling it further. The default does nothing.
    ///
    /// Called without the domain lock: on the new mapping of a block that
    /// outgrew its old one, before the old contents are copied in, and on a
    /// mapping that [`PageSource::remap`] made longer.
    ///
    /// # Safety
    /// `[block, block + size)` must be one live mapping of this source that
    /// no other thread uses yet.
    unsafe fn advise_huge_block(&self, block: NonNull<u8>, size: usize) {
        let _ = (block, size);
    }

    /// Whether huge pages are asked for now: a slab page mapped now is
    /// backed by huge pages from its first touch (the domain then counts
    /// its parts as on huge pages, to split them at their first purge), and
    /// [`PageSource::collapse`] may act. While it is `false` the domain
    /// asks for no part, so that a part that fills while it is `false` is
    /// still asked for at a later refill once it turns `true`. The default
    /// is `false`.
    fn collapses(&self) -> bool {
        false
    }

    /// Whether [`PageSource::purge`] gives memory back, page by page: the
    /// domain then also gives back, on an explicit purge, the empty 4 KiB
    /// pages inside sparse slices still in use (see
    /// [`Domain::purge_all`](crate::Domain::purge_all)), which costs it a walk of
    /// each such slice's free list. The default is `false`, for sources
    /// whose `purge` keeps the memory.
    fn purges(&self) -> bool {
        false
    }

    /// Records `page`, the [`PAGE_SIZE`](crate::page::PAGE_SIZE)-aligned
    /// address of a page header the core has just written inside a mapping
    /// of this source, so that [`PageSource::owns`] finds it. Returns `false`
    /// when the record cannot be made (the page is then unmapped unused).
    fn register(&self, page: usize, context: Self::Context) -> bool;

    /// Forgets `page` before its mapping goes back.
    fn unregister(&self, page: usize);

    /// Whether `page` is a registered page. Called on every free, on any
    /// address a caller passes in: it must be cheap, and must reject
    /// addresses it never registered without dereferencing them.
    fn owns(&self, page: usize) -> bool;

    /// A monotonic clock in milliseconds, for the purge delay. Sources with
    /// no clock return 0, and dirty slices are then purged only on request.
    fn now_ms(&self) -> u64 {
        0
    }

    /// Entropy for the free-marker key. The default mixes addresses, which
    /// differ from run to run where the environment randomises layout.
    fn entropy(&self) -> u64 {
        let local = 0u8;
        (&local as *const u8 as u64).rotate_left(17) ^ (self as *const Self as *const u8 as u64)
    }

    /// Reports heap corruption found by the core (an overwritten free-list
    /// link, [`FreeErrorKind::Corrupted`](crate::FreeErrorKind) or
    /// [`FreeErrorKind::CorruptedList`](crate::FreeErrorKind)) and never
    /// returns: the heap cannot be trusted any more. The default panics with
    /// the error's message; [`MmapSource`] prints one line to stderr and
    /// aborts without allocating. A kernel source can override it to `BUG()`
    /// with its own message.
    fn corrupted(&self, error: crate::FreeError) -> ! {
        panic!("strata: {error}")
    }
}

/// Prints `strata: <error>; aborting` to stderr as one line, formatted on
/// the stack (nothing is allocated: the heap is not to be trusted), and
/// aborts the process.
#[cfg(feature = "mmap")]
pub fn abort_with(error: crate::FreeError) -> ! {
    struct Line {
        bytes: [u8; 256],
        len: usize,
    }
    impl core::fmt::Write for Line {
        fn write_str(&mut self, text: &str) -> core::fmt::Result {
            let room = self.bytes.len() - self.len;
            let take = text.len().min(room);
            self.bytes[self.len..self.len + take].copy_from_slice(&text.as_bytes()[..take]);
            self.len += take;
            Ok(())
        }
    }
    let mut line = Line { bytes: [0; 256], len: 0 };
    let _ = core::fmt::Write::write_fmt(&mut line, format_args!("strata: {error}; aborting\n"));
    // SAFETY: writes initialised bytes of `line`; abort has no preconditions.
    unsafe {
        libc::write(2, line.bytes.as_ptr().cast(), line.len);
        libc::abort()
    }
}

/// Implements the registry methods of [`PageSource`] with the process-wide
/// [`registry`](crate::registry).
#[cfg(feature = "registry")]
macro_rules! registry_methods {
    () => {
        fn register(&self, page: usize, _context: ()) -> bool {
            crate::registry::insert(page)
        }

        fn unregister(&self, page: usize) {
            crate::registry::remove(page)
        }

        #[inline(always)]
        fn owns(&self, page: usize) -> bool {
            crate::registry::contains(page)
        }
    };
}

/// Page source backed by anonymous `mmap`, for Linux and Unix userspace.
///
/// With huge pages asked for ([`MmapSource::with_huge_pages`] or
/// [`MmapSource::set_huge_pages`]), the source backs memory in use with
/// transparent huge pages, for fewer page faults and TLB misses:
///
/// - every mapping made from then on, slab pages and huge blocks alike, is
///   advised `MADV_HUGEPAGE`: the kernel backs each 2 MiB part with one
///   huge page when it is first touched, the never-used slices of a slab
///   page's part included;
/// - a purge in a slab page's part splits its huge page. The domain then
///   purges the part's never-used slices with it, since the huge page made
///   them resident, and the source advises the part `MADV_NOHUGEPAGE`
///   ([`PageSource::split`]), so that neither a fault nor `khugepaged`
///   fills it back;
/// - once none of a split part's slices is fresh (clean or purged) any
///   more, the part is advised `MADV_HUGEPAGE` again and collapsed onto a
///   huge page ([`PageSource::collapse`], `MADV_COLLAPSE`, Linux 6.1 or
///   later).
///
/// Without huge pages asked for, slab pages keep small pages, and only
/// huge blocks (objects larger than [`MAX_SPAN`](crate::page::MAX_SPAN),
/// 2 MiB, each in a mapping of its own) that grow by reallocation are
/// advised `MADV_HUGEPAGE` ([`PageSource::advise_huge_block`]), unless
/// [`MmapSource::set_huge_blocks`] turned that off: their owner fills
/// them, and their 2 MiB parts then cost one fault each rather than 512. A
/// block allocated at its size is not advised, since a reservation may
/// stay mostly untouched. On the `strata-kv` benchmark's 4096-byte `MSET`,
/// whose compaction encodes each shard into a `Vec` that grows to several
/// MiB, this cut the server's minor faults (`benches/RESULTS.md`, "A
/// storage service").
///
/// A kernel without transparent huge pages, or with them set to `never`,
/// refuses all of this, and the memory keeps small pages.
#[cfg(feature = "mmap")]
#[derive(Debug)]
pub struct MmapSource {
    /// Whether memory in use is backed by huge pages (see above). Relaxed:
    /// each mapping and collapse reads it once, and no other memory
    /// depends on it. The domain reads it just before it maps a page, the
    /// mapping just after: a change in between leaves one page counted as
    /// on huge pages when it is not, which costs a needless split, or the
    /// other way round, which leaves `khugepaged` free to fill back a part
    /// of it that a purge gave back.
    huge_pages: core::sync::atomic::AtomicBool,
    /// Whether a huge block that grows by reallocation is advised
    /// `MADV_HUGEPAGE` when huge pages are not asked for (with them, every
    /// mapping is). Relaxed, read once per growth.
    huge_blocks: core::sync::atomic::AtomicBool,
}

#[cfg(feature = "mmap")]
impl Default for MmapSource {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "mmap")]
impl MmapSource {
    /// The source, with small pages for slab pages and huge pages advised
    /// for huge blocks that grow by reallocation.
    pub const fn new() -> Self {
        Self {
            huge_pages: core::sync::atomic::AtomicBool::new(false),
            huge_blocks: core::sync::atomic::AtomicBool::new(true),
        }
    }

    /// The source, backing memory in use with transparent huge pages.
    pub const fn with_huge_pages() -> Self {
        Self {
            huge_pages: core::sync::atomic::AtomicBool::new(true),
            huge_blocks: core::sync::atomic::AtomicBool::new(true),
        }
    }

    /// Advises the huge blocks that grow by reallocation from now on
    /// `MADV_HUGEPAGE` (`true`, the default), or not (`false`); see the
    /// type's documentation. With huge pages asked for
    /// ([`MmapSource::set_huge_pages`]) every mapping is advised whatever
    /// this says.
    pub fn set_huge_blocks(&self, on: bool) {
        self.huge_blocks.store(on, core::sync::atomic::Ordering::Relaxed);
    }

    /// Whether huge blocks that grow by reallocation are advised
    /// `MADV_HUGEPAGE` when huge pages are not asked for.
    pub fn huge_blocks(&self) -> bool {
        self.huge_blocks.load(core::sync::atomic::Ordering::Relaxed)
    }

    /// Backs memory in use with transparent huge pages from now on (`true`),
    /// or stops (`false`); see the type's documentation. Mappings made
    /// before keep their advice, and parts on huge pages before stay so
    /// until a purge splits them.
    pub fn set_huge_pages(&self, on: bool) {
        self.huge_pages.store(on, core::sync::atomic::Ordering::Relaxed);
    }

    /// Whether memory in use is backed by transparent huge pages.
    pub fn huge_pages(&self) -> bool {
        self.huge_pages.load(core::sync::atomic::Ordering::Relaxed)
    }
}

// SAFETY: anonymous private mappings are zeroed, private to this mapping and
// valid until munmap; MADV_DONTNEED leaves them mapped and zero-filled.
#[cfg(feature = "mmap")]
unsafe impl PageSource for MmapSource {
    type Context = ();
    const ZEROED: bool = true;
    const REMAPS: bool = true;

    registry_methods!();

    fn map(&self, size: usize, align: usize, _context: ()) -> Option<NonNull<u8>> {
        // Over-map by the alignment, then trim both ends.
        let total = size.checked_add(align.saturating_sub(4096))?;
        // SAFETY: an anonymous mapping at a kernel-chosen address touches no
        // existing memory.
        let raw = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                total,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return None;
        }
        let start = raw as usize;
        let aligned = (start + align - 1) & !(align - 1);
        let head = aligned - start;
        let tail = total - head - size;
        // SAFETY: both trimmed ranges lie inside the mapping just made.
        unsafe {
            if head != 0 {
                libc::munmap(raw, head);
            }
            if tail != 0 {
                libc::munmap((aligned + size) as *mut libc::c_void, tail);
            }
            if self.huge_pages() {
                // Advice only: a kernel without transparent huge pages
                // refuses it, and the mapping keeps small pages.
                libc::madvise(aligned as *mut libc::c_void, size, libc::MADV_HUGEPAGE);
            }
        }
        NonNull::new(aligned as *mut u8)
    }

    unsafe fn unmap(&self, ptr: NonNull<u8>, size: usize) {
        // SAFETY: the caller passes a live mapping of ours.
        unsafe { libc::munmap(ptr.as_ptr().cast(), size) };
    }

    unsafe fn remap(
        &self,
        ptr: NonNull<u8>,
        old_size: usize,
        new_size: usize,
        align: usize,
        _context: (),
    ) -> Option<NonNull<u8>> {
        let old = ptr.as_ptr().cast::<libc::c_void>();
        // In place first: the pages after the mapping may be free (and a
        // shrink always stays).
        // SAFETY: the caller passes a live mapping of ours; without
        // MREMAP_MAYMOVE the kernel only extends or trims it.
        let same = unsafe { libc::mremap(old, old_size, new_size, 0) };
        if same != libc::MAP_FAILED {
            return Some(ptr);
        }
        // Else reserve an aligned range and have the kernel move the page
        // tables there: no byte is copied.
        let target = self.map(new_size, align, ())?;
        // SAFETY: `target` is a mapping of ours of `new_size` bytes, which
        // MREMAP_FIXED replaces; the old mapping is live.
        let moved = unsafe {
            libc::mremap(
                old,
                old_size,
                new_size,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                target.as_ptr().cast::<libc::c_void>(),
            )
        };
        if moved == libc::MAP_FAILED {
            // SAFETY: the reserve is still ours and unused.
            unsafe { self.unmap(target, new_size) };
            return None;
        }
        Some(target)
    }

    unsafe fn purge(&self, ptr: NonNull<u8>, size: usize) -> bool {
        // SAFETY: the range is inside a live private anonymous mapping.
        unsafe { libc::madvise(ptr.as_ptr().cast(), size, libc::MADV_DONTNEED) == 0 }
    }

    unsafe fn collapse(&self, part: NonNull<u8>) -> bool {
        /// `MADV_COLLAPSE` (Linux 6.1), spelled out: the `libc` crate has it
        /// for glibc targets only.
        const MADV_COLLAPSE: libc::c_int = 25;
        if !self.collapses() {
            return false;
        }
        // SAFETY: the caller passes a part of a live page of ours; the
        // advice and the collapse keep its contents. The advice undoes a
        // split's MADV_NOHUGEPAGE, which MADV_COLLAPSE would refuse. A
        // kernel without MADV_COLLAPSE, or with transparent huge pages off,
        // refuses (EINVAL), as does one with no huge page to spare now
        // (EAGAIN, ENOMEM).
        unsafe {
            let start = part.as_ptr().cast();
            libc::madvise(start, crate::page::COLLAPSE_SIZE, libc::MADV_HUGEPAGE);
            libc::madvise(start, crate::page::COLLAPSE_SIZE, MADV_COLLAPSE) == 0
        }
    }

    unsafe fn split(&self, part: NonNull<u8>) {
        // SAFETY: the caller passes a part of a live page of ours; advice
        // changes no contents. Refused where huge pages do not exist, and
        // then there is nothing to split.
        unsafe { libc::madvise(part.as_ptr().cast(), crate::page::COLLAPSE_SIZE, libc::MADV_NOHUGEPAGE) };
    }

    unsafe fn advise_huge_block(&self, block: NonNull<u8>, size: usize) {
        // With huge pages asked for, `map` advised the mapping already.
        if self.huge_blocks() && !self.huge_pages() {
            // SAFETY: the caller passes a live mapping of ours; advice
            // changes no contents. Refused where transparent huge pages do
            // not exist or are `never`, and the block keeps small pages.
            unsafe { libc::madvise(block.as_ptr().cast(), size, libc::MADV_HUGEPAGE) };
        }
    }

    fn collapses(&self) -> bool {
        cfg!(target_os = "linux") && self.huge_pages()
    }

    fn purges(&self) -> bool {
        true
    }

    fn now_ms(&self) -> u64 {
        let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `now` is a valid timespec to write.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut now) };
        now.tv_sec as u64 * 1000 + now.tv_nsec as u64 / 1_000_000
    }

    fn corrupted(&self, error: crate::FreeError) -> ! {
        abort_with(error)
    }

    fn entropy(&self) -> u64 {
        let mut value = 0u64;
        // SAFETY: writes at most 8 bytes into `value`; getrandom does not allocate.
        let read = unsafe {
            libc::getrandom((&mut value as *mut u64).cast(), 8, libc::GRND_NONBLOCK)
        };
        if read != 8 {
            let local = 0u8;
            value = (&local as *const u8 as u64) ^ self.now_ms().rotate_left(32);
        }
        value
    }
}

/// Page source carving pages out of one static region, for `no_std` targets.
///
/// The region is managed by `linked_list_allocator`; pages go back to it when
/// the domain releases them. Purging does nothing (there is no OS to return
/// memory to) and reports the memory as not zeroed.
///
/// The region must hold at least one Strata page
/// ([`PAGE_SIZE`](crate::page::PAGE_SIZE), 4 MiB) aligned to `PAGE_SIZE`:
/// see [`ArenaSource::try_init`].
#[cfg(feature = "arena")]
pub struct ArenaSource {
    heap: spin::Mutex<linked_list_allocator::Heap>,
    initialised: AtomicBool,
    region: spin::Mutex<Option<(usize, usize)>>,
}

/// Why [`ArenaSource::try_init`] refused a region.
#[cfg(feature = "arena")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArenaError {
    /// The arena already has a region.
    AlreadyInitialised,
    /// The region holds no [`PAGE_SIZE`](crate::page::PAGE_SIZE)-aligned
    /// page, so every allocation would fail.
    NoAlignedPage {
        /// The region's start address.
        start: usize,
        /// Its length in bytes.
        len: usize,
    },
}

#[cfg(feature = "arena")]
impl core::fmt::Display for ArenaError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        use crate::page::PAGE_SIZE;
        match *self {
            Self::AlreadyInitialised => f.write_str("the arena already has a region"),
            Self::NoAlignedPage { start, len } => write!(
                f,
                "the region of {len} bytes at {start:#x} holds no {mib} MiB page aligned to {mib} MiB; \
                 an arena needs at least {PAGE_SIZE} bytes starting on a {PAGE_SIZE}-byte boundary, \
                 or {any} bytes at any address",
                mib = PAGE_SIZE >> 20,
                any = ArenaSource::MIN_UNALIGNED_REGION,
            ),
        }
    }
}

#[cfg(feature = "arena")]
impl core::error::Error for ArenaError {}

#[cfg(feature = "arena")]
impl ArenaSource {
    /// Bytes of the region the arena's bookkeeping needs in front of a page
    /// that does not start the region (`linked_list_allocator`'s hole
    /// header).
    const FRONT_HEADER: usize = 16;

    /// The smallest region that holds an aligned page wherever it starts:
    /// two pages and the bookkeeping's slack (`2 * PAGE_SIZE + 16`).
    pub const MIN_UNALIGNED_REGION: usize = 2 * crate::page::PAGE_SIZE + 16;

    /// An empty arena; give it memory with [`ArenaSource::try_init`] or
    /// [`ArenaSource::init`].
    pub const fn empty() -> Self {
        Self {
            heap: spin::Mutex::new(linked_list_allocator::Heap::empty()),
            initialised: AtomicBool::new(false),
            region: spin::Mutex::new(None),
        }
    }

    /// Hands the arena its region, as [`ArenaSource::try_init`] does.
    /// Returns `false` (and keeps nothing) if it already has one or if the
    /// region holds no aligned page.
    pub fn init(&self, region: &'static mut [u8]) -> bool {
        self.try_init(region).is_ok()
    }

    /// Hands the arena its region.
    ///
    /// Pages are [`PAGE_SIZE`](crate::page::PAGE_SIZE) (4 MiB) and aligned
    /// to `PAGE_SIZE`, so the region must hold at least one such aligned
    /// page: `PAGE_SIZE` bytes starting on a `PAGE_SIZE` boundary, or
    /// [`MIN_UNALIGNED_REGION`](Self::MIN_UNALIGNED_REGION)
    /// (`2 * PAGE_SIZE + 16`) bytes at any address. (A page that does not
    /// start the region needs 16 bytes of bookkeeping in front of it.)
    /// Anything smaller would serve no allocation at all, and is refused
    /// with [`ArenaError::NoAlignedPage`]; the arena keeps nothing and can
    /// still take another region. A second region is refused with
    /// [`ArenaError::AlreadyInitialised`].
    ///
    /// The arena serves as many pages as fit; bytes of the region outside
    /// them stay unused.
    pub fn try_init(&self, region: &'static mut [u8]) -> Result<(), ArenaError> {
        let start = region.as_mut_ptr() as usize;
        let len = region.len();
        // The heap gets the region less the tail past a 16-byte boundary, so
        // that what is left behind a page is 0 or a whole hole header (16
        // bytes): `linked_list_allocator` refuses an allocation that would
        // leave 8 bytes.
        let end = start.saturating_add(len) & !15;
        if Self::first_page(start, end).is_none() {
            return Err(ArenaError::NoAlignedPage { start, len });
        }
        if self.initialised.swap(true, Ordering::AcqRel) {
            return Err(ArenaError::AlreadyInitialised);
        }
        // SAFETY: the region is 'static, exclusively ours, handed over once,
        // and holds more than a hole header (`first_page` checked).
        unsafe { self.heap.lock().init(region.as_mut_ptr(), end - start) };
        *self.region.lock() = Some((start, len));
        Ok(())
    }

    /// Where `linked_list_allocator` would place the first
    /// `PAGE_SIZE`-aligned page in a heap over `[start, end)`, if one fits.
    fn first_page(start: usize, end: usize) -> Option<usize> {
        use crate::page::PAGE_SIZE;
        // The heap starts at the first 8-byte boundary (its hole alignment).
        let hole = start.checked_next_multiple_of(8)?;
        // A page that does not start the hole leaves a front hole, whose
        // header needs `FRONT_HEADER` bytes.
        let page = if hole % PAGE_SIZE == 0 {
            hole
        } else {
            hole.checked_add(Self::FRONT_HEADER)?.checked_next_multiple_of(PAGE_SIZE)?
        };
        (page.checked_add(PAGE_SIZE)? <= end).then_some(page)
    }

    /// Bytes of the region not currently mapped out.
    pub fn free_bytes(&self) -> usize {
        self.heap.lock().free()
    }
}

// SAFETY: linked_list_allocator hands out disjoint, aligned blocks of the
// static region and takes them back by the same layout; nothing is unmapped.
#[cfg(feature = "arena")]
unsafe impl PageSource for ArenaSource {
    type Context = ();
    const ZEROED: bool = false;

    registry_methods!();

    fn map(&self, size: usize, align: usize, _context: ()) -> Option<NonNull<u8>> {
        let layout = core::alloc::Layout::from_size_align(size, align).ok()?;
        self.heap.lock().allocate_first_fit(layout).ok()
    }

    unsafe fn unmap(&self, ptr: NonNull<u8>, size: usize) {
        // Every mapping is `size`-sized and aligned to at least 4096; the
        // allocator only needs the size to rebuild its hole, and the alignment
        // recorded in the layout does not affect deallocation.
        let layout = core::alloc::Layout::from_size_align(size, 4096)
            .expect("arena mapping sizes are valid layouts");
        // SAFETY: the caller returns a block we handed out, with its size.
        unsafe { self.heap.lock().deallocate(ptr, layout) };
    }

    unsafe fn purge(&self, _ptr: NonNull<u8>, _size: usize) -> bool {
        false
    }
}

/// A page source that fails on demand, wrapping another one. For tests
/// only (this crate's and the fuzz targets'): behind the hidden feature
/// `testing`, and not part of the public API.
#[cfg(feature = "testing")]
#[doc(hidden)]
pub struct FailingSource<S> {
    inner: S,
    failing: AtomicBool,
    /// Number of mappings refused so far.
    refused: AtomicUsize,
}

#[cfg(feature = "testing")]
impl<S> FailingSource<S> {
    /// Wraps `inner`; mapping works until [`FailingSource::set_failing`].
    pub const fn new(inner: S) -> Self {
        Self { inner, failing: AtomicBool::new(false), refused: AtomicUsize::new(0) }
    }

    /// Makes every `map` fail (`true`) or pass through again (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// How many mappings were refused.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }

    /// The wrapped source.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

// SAFETY: every call is forwarded unchanged to a valid source, or refused.
#[cfg(feature = "testing")]
unsafe impl<S: PageSource> PageSource for FailingSource<S> {
    type Context = S::Context;
    const ZEROED: bool = S::ZEROED;
    const REMAPS: bool = S::REMAPS;

    fn map(&self, size: usize, align: usize, context: S::Context) -> Option<NonNull<u8>> {
        if self.failing.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return None;
        }
        self.inner.map(size, align, context)
    }

    fn register(&self, page: usize, context: S::Context) -> bool {
        self.inner.register(page, context)
    }

    fn unregister(&self, page: usize) {
        self.inner.unregister(page)
    }

    #[inline(always)]
    fn owns(&self, page: usize) -> bool {
        self.inner.owns(page)
    }

    unsafe fn unmap(&self, ptr: NonNull<u8>, size: usize) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.inner.unmap(ptr, size) }
    }

    unsafe fn purge(&self, ptr: NonNull<u8>, size: usize) -> bool {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.inner.purge(ptr, size) }
    }

    unsafe fn collapse(&self, part: NonNull<u8>) -> bool {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.inner.collapse(part) }
    }

    unsafe fn split(&self, part: NonNull<u8>) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.inner.split(part) }
    }

    unsafe fn advise_huge_block(&self, block: NonNull<u8>, size: usize) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.inner.advise_huge_block(block, size) }
    }

    fn collapses(&self) -> bool {
        self.inner.collapses()
    }

    fn purges(&self) -> bool {
        self.inner.purges()
    }

    unsafe fn remap(
        &self,
        ptr: NonNull<u8>,
        old_size: usize,
        new_size: usize,
        align: usize,
        context: S::Context,
    ) -> Option<NonNull<u8>> {
        if self.failing.load(Ordering::SeqCst) && new_size > old_size {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return None;
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.inner.remap(ptr, old_size, new_size, align, context) }
    }

    fn now_ms(&self) -> u64 {
        self.inner.now_ms()
    }

    fn entropy(&self) -> u64 {
        self.inner.entropy()
    }

    fn corrupted(&self, error: crate::FreeError) -> ! {
        self.inner.corrupted(error)
    }
}
