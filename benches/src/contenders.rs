//! The allocators under test, as `'static` instances.
//!
//! | name            | allocator                                                       |
//! |-----------------|-----------------------------------------------------------------|
//! | `strata`        | [`strata::Strata`]: thread-local heaps, mmap pages               |
//! | `strata-shared` | [`strata::SharedStrata`], the `no_std` front: 4 `try_lock` heaps over an arena |
//! | `mimalloc`      | mimalloc (the C library `libmimalloc-sys` bundles), through [`Mimalloc`]: `mi_malloc`/`mi_free` when the alignment allows |
//! | `talc`          | `talc` 5 behind a `spin::Mutex`, over an arena                  |
//! | `linked-list`   | `linked_list_allocator::LockedHeap` (spinlock), over an arena    |
//! | `system`        | `std::alloc::System`, i.e. glibc malloc                          |
//!
//! The arena-backed allocators get their region from [`init`], which every
//! binary calls first. Arenas are large zero-filled allocations of the
//! process allocator, so only the pages an allocator touches become
//! resident.
//!
//! Generic code reaches the concrete type of each allocator through
//! [`with_contender!`](crate::with_contender), so every allocator is called
//! statically (and inlined where its crate allows), as it would be when
//! installed as `#[global_allocator]`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt;
use std::str::FromStr;
use std::sync::Once;

use linked_list_allocator::LockedHeap;
use strata::source::ArenaSource;
use strata::{SharedStrata, SpinLock, Strata};
use talc::source::Manual;
use talc::TalcLock;

/// `talc` behind a spin lock, as one would install it in a `no_std` program.
pub type TalcLocked = TalcLock<spin::Mutex<()>, Manual>;

/// Strata's `no_std` front over a static-style arena.
pub type StrataShared = SharedStrata<ArenaSource, SpinLock, 4>;

/// Bytes of address space reserved for each arena-backed allocator.
pub const ARENA_BYTES: usize = 1 << 30;

/// Strata, the `std` front.
pub static STRATA: Strata = Strata::new();
/// Strata, the `no_std` front.
pub static STRATA_SHARED: StrataShared = SharedStrata::new(ArenaSource::empty());
/// mimalloc.
pub static MIMALLOC: Mimalloc = Mimalloc;

/// mimalloc through its own fast entry points.
///
/// The `mimalloc` crate's `GlobalAlloc` calls `mi_malloc_aligned` for every
/// request, which costs more than mimalloc's fast path. A C program calls
/// `mi_malloc`; so does this type whenever the alignment is one `mi_malloc`
/// guarantees (8 bytes: mimalloc's 24- and 40-byte blocks, for example, are
/// only 8-aligned), so that the comparison is with mimalloc at its best.
pub struct Mimalloc;

/// The alignment every `mi_malloc` block has.
const MIMALLOC_PLAIN_ALIGN: usize = 8;

// SAFETY: forwards to mimalloc, which returns blocks of at least `size`
// bytes aligned as asked (`mi_malloc` when its own alignment suffices).
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: plain C calls.
        unsafe {
            if layout.align() <= MIMALLOC_PLAIN_ALIGN {
                libmimalloc_sys::mi_malloc(layout.size()).cast()
            } else {
                libmimalloc_sys::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: plain C calls.
        unsafe {
            if layout.align() <= MIMALLOC_PLAIN_ALIGN {
                libmimalloc_sys::mi_zalloc(layout.size()).cast()
            } else {
                libmimalloc_sys::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from mimalloc.
        unsafe { libmimalloc_sys::mi_free(ptr.cast()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from mimalloc with `layout`.
        unsafe {
            if layout.align() <= MIMALLOC_PLAIN_ALIGN {
                libmimalloc_sys::mi_realloc(ptr.cast(), new_size).cast()
            } else {
                libmimalloc_sys::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
            }
        }
    }
}
/// talc behind `spin::Mutex`.
pub static TALC: TalcLocked = TalcLock::new(Manual);
/// linked_list_allocator behind its spinlock.
pub static LINKED_LIST: LockedHeap = LockedHeap::empty();
/// glibc malloc.
pub static SYSTEM: System = System;

static INIT: Once = Once::new();

/// Hands the arena-backed allocators their regions. Idempotent; call it
/// before using any contender.
pub fn init() {
    INIT.call_once(|| {
        assert!(
            STRATA_SHARED.source().init(leak_arena()),
            "strata-shared arena already set"
        );
        let talc_arena = leak_arena();
        // SAFETY: the region is leaked, so it is 'static and used by nothing else.
        let claimed = unsafe { TALC.lock().claim(talc_arena.as_mut_ptr(), talc_arena.len()) };
        assert!(claimed.is_some(), "talc could not claim its arena");
        let list_arena = leak_arena();
        // SAFETY: as above.
        unsafe {
            LINKED_LIST
                .lock()
                .init(list_arena.as_mut_ptr(), list_arena.len())
        };
    });
}

/// A zero-filled region of [`ARENA_BYTES`] that is never freed. glibc serves
/// it with a fresh anonymous mapping, so untouched pages cost nothing.
fn leak_arena() -> &'static mut [u8] {
    Box::leak(vec![0u8; ARENA_BYTES].into_boxed_slice())
}

/// One of the allocators under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Contender {
    /// [`STRATA`].
    Strata,
    /// [`STRATA_SHARED`].
    StrataShared,
    /// [`MIMALLOC`].
    Mimalloc,
    /// [`TALC`].
    Talc,
    /// [`LINKED_LIST`].
    LinkedList,
    /// [`SYSTEM`].
    System,
}

impl Contender {
    /// Every contender, in the order tables list them.
    pub const ALL: [Contender; 6] = [
        Contender::Strata,
        Contender::StrataShared,
        Contender::Mimalloc,
        Contender::Talc,
        Contender::LinkedList,
        Contender::System,
    ];

    /// The short name used on command lines and in tables.
    pub fn name(self) -> &'static str {
        match self {
            Contender::Strata => "strata",
            Contender::StrataShared => "strata-shared",
            Contender::Mimalloc => "mimalloc",
            Contender::Talc => "talc",
            Contender::LinkedList => "linked-list",
            Contender::System => "system",
        }
    }
}

impl fmt::Display for Contender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Contender {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Contender::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Contender::ALL.iter().map(|c| c.name()).collect();
                format!(
                    "unknown allocator `{s}` (expected one of: {})",
                    names.join(", ")
                )
            })
    }
}

/// Evaluates `$body` with `$a` bound to the `&'static` instance of the
/// contender `$contender`, with its concrete type, so `$body` is compiled
/// once per allocator.
///
/// ```
/// use std::alloc::{GlobalAlloc, Layout};
/// use strata_benches::{with_contender, Contender};
///
/// strata_benches::contenders::init();
/// let layout = Layout::new::<u64>();
/// for contender in Contender::ALL {
///     with_contender!(contender, |a| unsafe {
///         let p = a.alloc(layout);
///         assert!(!p.is_null());
///         a.dealloc(p, layout);
///     });
/// }
/// ```
#[macro_export]
macro_rules! with_contender {
    ($contender:expr, |$a:ident| $body:expr) => {
        match $contender {
            $crate::Contender::Strata => {
                let $a = &$crate::contenders::STRATA;
                $body
            }
            $crate::Contender::StrataShared => {
                let $a = &$crate::contenders::STRATA_SHARED;
                $body
            }
            $crate::Contender::Mimalloc => {
                let $a = &$crate::contenders::MIMALLOC;
                $body
            }
            $crate::Contender::Talc => {
                let $a = &$crate::contenders::TALC;
                $body
            }
            $crate::Contender::LinkedList => {
                let $a = &$crate::contenders::LINKED_LIST;
                $body
            }
            $crate::Contender::System => {
                let $a = &$crate::contenders::SYSTEM;
                $body
            }
        }
    };
}
