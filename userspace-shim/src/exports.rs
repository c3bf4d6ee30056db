//! The exported C functions, with glibc 2.36 semantics.
//!
//! Every function here only checks its arguments, builds a [`Layout`] and
//! calls [`crate::front`]; the edge cases are documented on each one.
//!
//! - Every block is aligned to [`MIN_ALIGN`] (16 bytes), like glibc's.
//! - Out of memory (including sizes no layout can describe) returns null and
//!   sets `errno` to `ENOMEM`.
//! - A pointer that is not a live allocation, given to `free`, `realloc` or
//!   `malloc_usable_size`, prints one line naming the function and the
//!   pointer, then aborts with `SIGABRT`.
//!
//! Two extensions, declared in `include/strata.h`, allocate and free sets of
//! blocks in one call: [`strata_alloc_bulk`] and [`strata_free_bulk`].
//!
//! C++ needs nothing extra: libstdc++'s `operator new` and `operator delete`
//! (plain, array, sized, aligned and nothrow forms) call `malloc`, `free` and
//! `aligned_alloc`, which resolve here.

use core::alloc::Layout;
use core::ptr;

use libc::{c_int, c_void, size_t};

use crate::front;
use crate::output::{misuse, set_errno};

/// The alignment of every block: that of `max_align_t` on x86-64, as glibc.
pub const MIN_ALIGN: usize = 16;

/// glibc's `mallopt` parameters, all accepted (and, but for their return
/// value, ignored: Strata has no arenas, top pad or mmap threshold).
const KNOWN_MALLOPT_PARAMS: [c_int; 11] = [
    1,  // M_MXFAST
    -1, // M_TRIM_THRESHOLD
    -2, // M_TOP_PAD
    -3, // M_MMAP_THRESHOLD
    -4, // M_MMAP_MAX
    -5, // M_CHECK_ACTION
    -6, // M_PERTURB
    -7, // M_ARENA_TEST
    -8, // M_ARENA_MAX
    2,  // M_NLBLKS
    3,  // M_GRAIN
];

/// Returns `block`, setting `errno` to `ENOMEM` if it is null.
#[inline(always)]
fn or_enomem(block: *mut u8) -> *mut c_void {
    if block.is_null() {
        set_errno(libc::ENOMEM);
    }
    block.cast()
}

/// The layout of a block of `size` bytes aligned to `align` (a power of
/// two), if one can exist.
///
/// Zero-byte requests ask for one byte: the core rounds the size up to the
/// alignment to pick a class, and a size of zero would pick the smallest
/// class whatever the alignment.
#[inline(always)]
fn layout(size: usize, align: usize) -> Option<Layout> {
    Layout::from_size_align(size.max(1), align).ok()
}

/// Allocates `size` bytes aligned to `align` (a power of two), or returns
/// null with `ENOMEM`.
#[inline(always)]
fn allocate(size: usize, align: usize) -> *mut c_void {
    match layout(size, align) {
        Some(layout) => or_enomem(front::alloc(layout)),
        None => or_enomem(ptr::null_mut()),
    }
}

/// Allocates `size` bytes aligned to [`MIN_ALIGN`] (malloc's request), or
/// returns null with `ENOMEM`. Zero bytes get a unique block of the
/// smallest class.
///
/// The fast path is inlined; everything else, `errno` included, is one
/// tail call, so the fast path needs no stack frame.
#[inline(always)]
fn allocate16(size: usize) -> *mut c_void {
    const _: () = assert!(MIN_ALIGN == 16);
    let block = front::try_alloc16(size);
    if !block.is_null() {
        return block.cast();
    }
    allocate16_slow(size)
}

/// [`allocate16`] past its fast path.
#[cold]
#[inline(never)]
fn allocate16_slow(size: usize) -> *mut c_void {
    or_enomem(front::alloc16(size))
}

/// glibc's `_mid_memalign`: alignments up to [`MIN_ALIGN`] are plain
/// `malloc`, others are rounded up to a power of two; only an alignment that
/// no power of two can cover is `EINVAL`.
fn memalign_glibc(align: usize, size: usize) -> *mut c_void {
    if align <= MIN_ALIGN {
        return allocate16(size);
    }
    match align.checked_next_power_of_two() {
        Some(align) => allocate(size, align),
        None => {
            set_errno(libc::EINVAL);
            ptr::null_mut()
        }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions and does not allocate for this name.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as usize
    } else {
        4096
    }
}

/// `malloc`: `size` bytes, 16-byte aligned. `malloc(0)` returns a unique
/// pointer.
///
/// # Safety
/// None beyond C's: the block must be released with `free` (or `realloc`).
#[no_mangle]
pub unsafe extern "C" fn malloc(size: size_t) -> *mut c_void {
    allocate16(size)
}

/// `free`: releases `ptr`; `free(NULL)` does nothing. A double free or a
/// pointer that is not a live allocation aborts with a message.
///
/// # Safety
/// `ptr` must not be used afterwards.
#[no_mangle]
pub unsafe extern "C" fn free(ptr: *mut c_void) {
    // SAFETY: forwarded.
    unsafe { release(ptr) }
}

// The exported functions and their aliases call each other through these
// private functions, never through the exported names: a call to an
// exported name goes through the GOT to whichever object defines the name
// first, which is not this library when another allocator comes earlier
// in `LD_PRELOAD`. (An allocator that forwards to `__libc_malloc` would
// then be called back by this library's `__libc_malloc`, forever.)

/// [`free`]'s body.
///
/// # Safety
/// As for [`free`].
#[inline(always)]
unsafe fn release(ptr: *mut c_void) {
    // A null pointer fails the fast path's page check (its page unit lies
    // above the address range) and is let go by the slow path.
    // SAFETY: the caller's contract; the fast path takes only pointers it
    // vetted, and the slow path reports bad ones instead of freeing them.
    unsafe {
        if front::free_fast(ptr.cast()) {
            return;
        }
        release_slow(ptr);
    }
}

/// [`release`] past its fast path: one tail call, so the fast path needs
/// no stack frame.
///
/// # Safety
/// As for [`free`].
#[cold]
#[inline(never)]
unsafe fn release_slow(ptr: *mut c_void) {
    if ptr.is_null() {
        return;
    }
    // SAFETY: the caller's contract; bad pointers are reported, not freed.
    if let Err(error) = unsafe { front::free_slow(ptr.cast()) } {
        misuse("free()", error);
    }
}

/// `calloc`: `count * size` zeroed bytes, or null with `ENOMEM` when the
/// product overflows.
///
/// # Safety
/// As for [`malloc`].
#[no_mangle]
pub unsafe extern "C" fn calloc(count: size_t, size: size_t) -> *mut c_void {
    zeroed(count, size)
}

/// [`calloc`]'s body.
#[inline(always)]
fn zeroed(count: size_t, size: size_t) -> *mut c_void {
    let Some(total) = count.checked_mul(size) else {
        return or_enomem(ptr::null_mut());
    };
    match layout(total, MIN_ALIGN) {
        Some(layout) => or_enomem(front::alloc_zeroed(layout)),
        None => or_enomem(ptr::null_mut()),
    }
}

/// `realloc`, as glibc: `realloc(NULL, n)` is `malloc(n)`; `realloc(p, 0)`
/// frees `p` and returns null; on failure `p` is untouched and `errno` is
/// `ENOMEM`.
///
/// # Safety
/// `ptr` is null or a live allocation; after success only the returned
/// pointer may be used.
#[no_mangle]
pub unsafe extern "C" fn realloc(ptr: *mut c_void, size: size_t) -> *mut c_void {
    // SAFETY: forwarded.
    unsafe { reallocate(ptr, size) }
}

/// [`realloc`]'s body.
///
/// # Safety
/// As for [`realloc`].
#[inline(always)]
unsafe fn reallocate(ptr: *mut c_void, size: size_t) -> *mut c_void {
    if ptr.is_null() {
        return allocate16(size);
    }
    if size == 0 {
        // SAFETY: the caller's contract.
        unsafe { release(ptr) };
        return ptr::null_mut();
    }
    let Some(layout) = layout(size, MIN_ALIGN) else {
        return or_enomem(ptr::null_mut());
    };
    // SAFETY: the caller's contract; bad pointers are reported.
    match unsafe { front::realloc(ptr.cast(), layout) } {
        Ok(moved) => or_enomem(moved),
        Err(error) => misuse("realloc()", error),
    }
}

/// `reallocarray`: `realloc(ptr, count * size)`, or null with `ENOMEM` (and
/// `ptr` untouched) when the product overflows.
///
/// # Safety
/// As for [`realloc`].
#[no_mangle]
pub unsafe extern "C" fn reallocarray(ptr: *mut c_void, count: size_t, size: size_t) -> *mut c_void {
    match count.checked_mul(size) {
        // SAFETY: forwarded.
        Some(total) => unsafe { reallocate(ptr, total) },
        None => or_enomem(ptr::null_mut()),
    }
}

/// `posix_memalign`: `EINVAL` unless `align` is a power of two and a
/// multiple of `sizeof(void *)`; `ENOMEM` when out of memory. `*out` is
/// written only on success.
///
/// # Safety
/// `out` must be valid for a pointer write.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: size_t, size: size_t) -> c_int {
    // A power of two is a multiple of the (power-of-two) pointer size exactly
    // when it is at least that size.
    if !align.is_power_of_two() || align < core::mem::size_of::<*mut c_void>() {
        return libc::EINVAL;
    }
    let Some(layout) = layout(size, align.max(MIN_ALIGN)) else {
        return libc::ENOMEM;
    };
    let block = front::alloc(layout);
    if block.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: the caller's contract.
    unsafe { *out = block.cast() };
    0
}

/// `aligned_alloc`, as in glibc 2.36 where it is `memalign`: an alignment
/// that is not a power of two is rounded up to one (glibc 2.38 and later
/// reject it instead); only an alignment above `SIZE_MAX / 2 + 1` gives null
/// with `EINVAL`.
///
/// # Safety
/// As for [`malloc`].
#[no_mangle]
pub unsafe extern "C" fn aligned_alloc(align: size_t, size: size_t) -> *mut c_void {
    memalign_glibc(align, size)
}

/// `memalign`: see [`aligned_alloc`].
///
/// # Safety
/// As for [`malloc`].
#[no_mangle]
pub unsafe extern "C" fn memalign(align: size_t, size: size_t) -> *mut c_void {
    memalign_glibc(align, size)
}

/// `valloc`: `size` bytes aligned to the page size.
///
/// # Safety
/// As for [`malloc`].
#[no_mangle]
pub unsafe extern "C" fn valloc(size: size_t) -> *mut c_void {
    memalign_glibc(page_size(), size)
}

/// [`pvalloc`]'s body.
fn page_rounded(size: size_t) -> *mut c_void {
    let page = page_size();
    match size.checked_next_multiple_of(page) {
        Some(rounded) => memalign_glibc(page, rounded.max(page)),
        None => or_enomem(ptr::null_mut()),
    }
}

/// `pvalloc`: `size` rounded up to whole pages (at least one), page
/// aligned; null with `ENOMEM` when the rounding overflows.
///
/// # Safety
/// As for [`malloc`].
#[no_mangle]
pub unsafe extern "C" fn pvalloc(size: size_t) -> *mut c_void {
    page_rounded(size)
}

/// `malloc_usable_size`: the exact number of bytes usable at `ptr` (0 for
/// null). The whole range may be written, for aligned blocks too.
///
/// # Safety
/// `ptr` is null or a live allocation; anything else aborts with a message.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(ptr: *mut c_void) -> size_t {
    if ptr.is_null() {
        return 0;
    }
    match front::usable_size(ptr.cast()) {
        Ok(size) => size,
        Err(error) => misuse("malloc_usable_size()", error),
    }
}

/// `cfree`: the old name of `free`.
///
/// # Safety
/// As for [`free`].
#[no_mangle]
pub unsafe extern "C" fn cfree(ptr: *mut c_void) {
    // SAFETY: forwarded.
    unsafe { release(ptr) }
}

/// `malloc_trim`: gives the calling thread's cache back and returns every
/// unused slice and empty page to the OS now, whatever `pad` says. Returns 1
/// if memory was released, 0 otherwise.
///
/// # Safety
/// None.
#[no_mangle]
pub unsafe extern "C" fn malloc_trim(_pad: size_t) -> c_int {
    c_int::from(front::trim())
}

/// `mallopt`: returns 1 (success) for glibc's parameters, which Strata
/// accepts and ignores, and 0 for unknown ones.
///
/// # Safety
/// None.
#[no_mangle]
pub unsafe extern "C" fn mallopt(param: c_int, _value: c_int) -> c_int {
    c_int::from(KNOWN_MALLOPT_PARAMS.contains(&param))
}

/// `mallinfo2`, filled from Strata's statistics:
///
/// | field | meaning here |
/// |---|---|
/// | `arena` | bytes mapped for slab pages |
/// | `ordblks` | dirty, clean and purged slices (free to reuse) |
/// | `hblks`, `hblkhd` | huge allocations and the bytes mapped for them |
/// | `uordblks` | bytes in live allocations |
/// | `fordblks` | resident bytes not in live allocations |
/// | `keepcost` | resident bytes a `malloc_trim` could release: dirty slices and freed huge mappings kept for reuse |
///
/// The other fields are zero.
///
/// # Safety
/// None.
#[no_mangle]
pub unsafe extern "C" fn mallinfo2() -> libc::mallinfo2 {
    let stats = front::stats();
    let slab_bytes = stats.pages_mapped * strata_core::page::PAGE_SIZE;
    libc::mallinfo2 {
        arena: slab_bytes,
        ordblks: stats.slices_clean + stats.slices_dirty + stats.slices_purged,
        smblks: 0,
        hblks: stats.huge_allocations,
        hblkhd: stats.bytes_mapped.saturating_sub(slab_bytes).saturating_sub(stats.huge_cached_bytes),
        usmblks: 0,
        fsmblks: 0,
        uordblks: stats.bytes_live,
        fordblks: stats.bytes_resident.saturating_sub(stats.bytes_live),
        keepcost: stats.slices_dirty * strata_core::page::SLICE_SIZE + stats.huge_cached_bytes,
    }
}

/// `mallinfo`: [`mallinfo2`] with each figure clamped to `int`.
///
/// # Safety
/// None.
#[no_mangle]
pub unsafe extern "C" fn mallinfo() -> libc::mallinfo {
    // SAFETY: no preconditions.
    let info = unsafe { mallinfo2() };
    let clamp = |value: usize| value.min(c_int::MAX as usize) as c_int;
    libc::mallinfo {
        arena: clamp(info.arena),
        ordblks: clamp(info.ordblks),
        smblks: clamp(info.smblks),
        hblks: clamp(info.hblks),
        hblkhd: clamp(info.hblkhd),
        usmblks: clamp(info.usmblks),
        fsmblks: clamp(info.fsmblks),
        uordblks: clamp(info.uordblks),
        fordblks: clamp(info.fordblks),
        keepcost: clamp(info.keepcost),
    }
}

/// `malloc_stats`: prints Strata's statistics table to stderr.
///
/// # Safety
/// None.
#[no_mangle]
pub unsafe extern "C" fn malloc_stats() {
    crate::init::print_stats(2);
}

/// `__libc_malloc`: [`malloc`].
///
/// # Safety
/// As for [`malloc`].
#[no_mangle]
pub unsafe extern "C" fn __libc_malloc(size: size_t) -> *mut c_void {
    allocate16(size)
}

/// `__libc_free`: [`free`].
///
/// # Safety
/// As for [`free`].
#[no_mangle]
pub unsafe extern "C" fn __libc_free(ptr: *mut c_void) {
    // SAFETY: forwarded.
    unsafe { release(ptr) }
}

/// `__libc_calloc`: [`calloc`].
///
/// # Safety
/// As for [`calloc`].
#[no_mangle]
pub unsafe extern "C" fn __libc_calloc(count: size_t, size: size_t) -> *mut c_void {
    zeroed(count, size)
}

/// `__libc_realloc`: [`realloc`].
///
/// # Safety
/// As for [`realloc`].
#[no_mangle]
pub unsafe extern "C" fn __libc_realloc(ptr: *mut c_void, size: size_t) -> *mut c_void {
    // SAFETY: forwarded.
    unsafe { reallocate(ptr, size) }
}

/// `__libc_memalign`: [`memalign`].
///
/// # Safety
/// As for [`memalign`].
#[no_mangle]
pub unsafe extern "C" fn __libc_memalign(align: size_t, size: size_t) -> *mut c_void {
    memalign_glibc(align, size)
}

/// `__libc_valloc`: [`valloc`].
///
/// # Safety
/// As for [`valloc`].
#[no_mangle]
pub unsafe extern "C" fn __libc_valloc(size: size_t) -> *mut c_void {
    memalign_glibc(page_size(), size)
}

/// `__libc_pvalloc`: [`pvalloc`].
///
/// # Safety
/// As for [`pvalloc`].
#[no_mangle]
pub unsafe extern "C" fn __libc_pvalloc(size: size_t) -> *mut c_void {
    page_rounded(size)
}

/// `strata_alloc_bulk`, a Strata extension: allocates `count` blocks of
/// `size` bytes, each aligned to [`MIN_ALIGN`] as `malloc`'s, into
/// `out[0..count]`. All or nothing: returns `count`, or 0 with `errno` set
/// to `ENOMEM` (also for sizes `malloc` refuses), no block allocated and
/// every entry of `out` set to null. `count == 0` returns 0 and leaves
/// `errno` alone; a null `out` with `count > 0` returns 0 with `EINVAL`.
/// The blocks are freed with [`strata_free_bulk`], [`free`] or
/// [`realloc`], each separately if need be.
///
/// # Safety
/// `out` is null or valid for writing `count` pointers.
#[no_mangle]
pub unsafe extern "C" fn strata_alloc_bulk(size: size_t, count: size_t, out: *mut *mut c_void) -> size_t {
    if count == 0 {
        return 0;
    }
    if out.is_null() {
        set_errno(libc::EINVAL);
        return 0;
    }
    // SAFETY: the caller's contract: `out` holds `count` pointers, and
    // `*mut c_void` and `*mut u8` have the same layout.
    let out = unsafe { core::slice::from_raw_parts_mut(out.cast::<*mut u8>(), count) };
    let filled = match layout(size, MIN_ALIGN) {
        Some(layout) => front::alloc_bulk(layout, out),
        None => 0,
    };
    if filled == 0 {
        out.fill(ptr::null_mut());
        set_errno(libc::ENOMEM);
    }
    filled
}

/// `strata_free_bulk`, a Strata extension: frees the `count` blocks of
/// `blocks`, skipping null entries as `free(NULL)` does (a null `blocks`
/// frees nothing). A double free or a pointer that is not a live allocation
/// aborts with a message, as [`free`] does, once the other blocks are
/// freed.
///
/// # Safety
/// `blocks` is null or valid for reading `count` pointers; none of the
/// blocks may be used afterwards, and each may appear only once.
#[no_mangle]
pub unsafe extern "C" fn strata_free_bulk(blocks: *const *mut c_void, count: size_t) {
    if blocks.is_null() || count == 0 {
        return;
    }
    // SAFETY: the caller's contract; `*mut c_void` and `*mut u8` have the
    // same layout.
    let blocks = unsafe { core::slice::from_raw_parts(blocks.cast::<*mut u8>(), count) };
    // SAFETY: the caller's contract; bad pointers are reported, not freed.
    if let Err(error) = unsafe { front::free_bulk(blocks) } {
        misuse("strata_free_bulk()", error);
    }
}
