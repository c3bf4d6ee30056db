//! Thread-locals of the initial-exec TLS model, for the fast paths of the
//! fronts that live in user space (x86-64 only).
//!
//! Both the std front (`Strata`) and the malloc shim read a thread-local
//! word on every allocation and free. `thread_local!` gives them the model
//! rustc picks: in a `cdylib` (the shim) *general-dynamic*,
//! a call of `__tls_get_addr` on every access, which glibc before 2.39 may
//! answer by calling `malloc` itself; elsewhere a call wherever the accessor
//! is not inlined, after which the caller's registers are not its own. The
//! *initial-exec* model has neither: the variable lies at a fixed offset from
//! the thread pointer, which the dynamic linker writes into a GOT entry when
//! it loads the object, and a read is one load of that entry and one load
//! through `fs`. Stable Rust cannot choose a thread-local's model, so
//! [`initial_exec_slot!`](crate::initial_exec_slot) defines the variable with
//! a few lines of assembly, and [`read_thread_word`] reads it.
//!
//! A variable of this model takes room in the static TLS block, of which
//! glibc keeps a surplus for objects loaded with `dlopen`: the two fronts'
//! variables take 8 and 64 bytes of it.

/// Defines a thread-local variable of the initial-exec model: `$symbol`, a
/// hidden `.tdata` symbol of `$size` bytes aligned to `1 << $align_log2`,
/// whose first word starts out, in every thread, as the address of `$first`
/// (a relocation the dynamic linker applies to the initial image before any
/// thread copies it) and the rest as zeros; and `fn $offset() -> usize`, its
/// offset from the thread pointer, fixed for the life of the process (in an
/// executable the linker turns the load into a constant).
///
/// `$size` is at least 8 (a smaller one fails to compile) and `$symbol` is
/// unique in the program. The variable is read with [`read_thread_word`],
/// and written through `fs:[$offset()]` or the thread pointer plus the
/// offset.
///
/// Not a public API: the crate's std front and the malloc shim use it.
#[doc(hidden)]
#[macro_export]
macro_rules! initial_exec_slot {
    (
        symbol: $symbol:literal,
        size: $size:expr,
        align_log2: $align_log2:literal,
        first: $first:path,
        offset: $vis:vis fn $offset:ident $(,)?
    ) => {
        ::core::arch::global_asm!(
            ::core::concat!(".pushsection .tdata.", $symbol, ",\"awT\",@progbits"),
            ::core::concat!(".p2align ", $align_log2),
            ::core::concat!(".globl ", $symbol),
            ::core::concat!(".hidden ", $symbol),
            ::core::concat!(".type ", $symbol, ", @tls_object"),
            ::core::concat!(".size ", $symbol, ", {size}"),
            ::core::concat!($symbol, ":"),
            ".quad {first}",
            ".zero {rest}",
            ".popsection",
            size = const $size,
            rest = const $size - 8,
            first = sym $first,
        );

        /// The thread-local variable's offset from the thread pointer: the
        /// GOT entry the dynamic linker filled (initial-exec model).
        #[inline(always)]
        $vis fn $offset() -> usize {
            let offset: usize;
            // SAFETY: reads the GOT entry of the variable's TLS offset,
            // written once by the dynamic linker before any code of the
            // object runs.
            unsafe {
                ::core::arch::asm!(
                    ::core::concat!("mov {offset}, qword ptr [rip + ", $symbol, "@GOTTPOFF]"),
                    offset = out(reg) offset,
                    options(pure, nomem, nostack, preserves_flags),
                );
            }
            offset
        }
    };
}

/// Reads the calling thread's word at `offset` from the thread pointer,
/// with one instruction that clobbers nothing.
///
/// `readonly`: the compiler keeps this read after every write to memory it
/// can see before it (an ordinary store, or an assembly block not marked
/// `nomem`), and may merge it with an identical read with no such write in
/// between.
///
/// # Safety
/// `offset` must be the offset of a thread-local variable of the
/// initial-exec model ([`initial_exec_slot!`](crate::initial_exec_slot)) or
/// a word within one, aligned to 8 bytes.
#[doc(hidden)]
#[inline(always)]
pub unsafe fn read_thread_word(offset: usize) -> usize {
    let word: usize;
    // SAFETY: by the caller's contract, `fs:[offset]` is a word of this
    // thread's static TLS block.
    unsafe {
        core::arch::asm!(
            "mov {word}, qword ptr fs:[{offset}]",
            word = lateout(reg) word,
            offset = in(reg) offset,
            options(pure, readonly, nostack, preserves_flags),
        );
    }
    word
}
