//! Whose `malloc` the process uses, for the `STRATA_VERBOSE` banner.
//!
//! `dlsym(RTLD_DEFAULT, "malloc")` cannot answer that: a non-PIE executable
//! that calls `malloc` has an undefined `malloc` symbol whose value is its
//! own PLT stub (the function's canonical address), and `dlsym` returns that
//! stub, which belongs to neither this library nor libc.
//!
//! So this module does what the dynamic linker does when it binds the main
//! program's references: it walks the loaded objects in link-map order (for
//! the objects loaded at start-up that is the global lookup order: the
//! executable, the `LD_PRELOAD` entries, then the needed libraries
//! breadth-first) and looks `malloc` up in each object's own dynamic symbol
//! table, skipping undefined entries. The first object that *defines* it
//! serves the program. Objects loaded later with `dlopen` come after libc,
//! which defines `malloc`, so they never win.
//!
//! Everything here reads the loader's mapped tables: no allocation.

use core::ffi::{c_char, c_int, c_void, CStr};
use core::fmt;

/// Who serves the program's `malloc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interposition {
    /// This library: it was preloaded (or linked) ahead of libc.
    Ours,
    /// This library was loaded after libc, with `dlopen` (or as a dependency
    /// of a `dlopen`ed object): only callers that look symbols up in it use
    /// it.
    Dlopened,
    /// The executable defines `malloc` itself.
    Program,
    /// Another object ahead of this one in the lookup order (an earlier
    /// `LD_PRELOAD` entry) defines `malloc`; its path, as the loader has it.
    Earlier(&'static CStr),
    /// The loaded objects could not be read.
    Unknown,
}

impl fmt::Display for Interposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ours => f.write_str("yes"),
            Self::Dlopened => {
                f.write_str("no (loaded with dlopen: only callers that look symbols up here use Strata)")
            }
            Self::Program => f.write_str("no (the program defines its own malloc)"),
            Self::Earlier(path) => {
                f.write_str("no (another allocator earlier in LD_PRELOAD: ")?;
                f.write_str(path.to_str().unwrap_or("(a path that is not UTF-8)"))?;
                f.write_str(")")
            }
            Self::Unknown => f.write_str("unknown (the loaded objects could not be read)"),
        }
    }
}

/// Finds who serves `malloc` for the main program. `here` is any address
/// inside this library.
pub fn interposition(here: usize) -> Interposition {
    let mut scan = Scan { here, index: 0, ours: None, libc: None, first: None, first_path: c"" };
    // SAFETY: the callback only reads the loader's tables and `scan`, which
    // outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(visit), (&mut scan as *mut Scan).cast()) };
    let Some(ours) = scan.ours else {
        return Interposition::Unknown;
    };
    match scan.first {
        Some(first) if first == ours => Interposition::Ours,
        _ if scan.libc.is_some_and(|libc| libc < ours) => Interposition::Dlopened,
        Some(0) => Interposition::Program,
        Some(_) => Interposition::Earlier(scan.first_path),
        None => Interposition::Unknown,
    }
}

/// What the walk over the loaded objects found: positions in link-map
/// order.
struct Scan {
    here: usize,
    index: usize,
    /// This library.
    ours: Option<usize>,
    /// libc: the first object defining `__libc_start_main`.
    libc: Option<usize>,
    /// The first object defining `malloc`, and its path.
    first: Option<usize>,
    first_path: &'static CStr,
}

unsafe extern "C" fn visit(info: *mut libc::dl_phdr_info, _size: libc::size_t, data: *mut c_void) -> c_int {
    // SAFETY: `data` is the `Scan` passed to `dl_iterate_phdr`, and `info`
    // describes a loaded object for the duration of the call.
    let (scan, info) = unsafe { (&mut *data.cast::<Scan>(), &*info) };
    let index = scan.index;
    scan.index += 1;
    // SAFETY: the loader's description of a loaded object.
    let object = unsafe { Object::new(info) };
    if scan.ours.is_none() && object.contains(scan.here) {
        scan.ours = Some(index);
    }
    // SAFETY: the object is loaded, so its dynamic tables are mapped.
    unsafe {
        if scan.first.is_none() && object.defines(b"malloc") {
            scan.first = Some(index);
            // The name lives as long as the object, and an object ahead of
            // libc in the lookup order was loaded at start-up: it is never
            // unloaded.
            if !info.dlpi_name.is_null() {
                scan.first_path = CStr::from_ptr(info.dlpi_name);
            }
        }
        if scan.libc.is_none() && object.defines(b"__libc_start_main") {
            scan.libc = Some(index);
        }
    }
    0
}

#[cfg(target_pointer_width = "64")]
type Sym = libc::Elf64_Sym;
#[cfg(target_pointer_width = "32")]
type Sym = libc::Elf32_Sym;
#[cfg(target_pointer_width = "64")]
type Phdr = libc::Elf64_Phdr;
#[cfg(target_pointer_width = "32")]
type Phdr = libc::Elf32_Phdr;

/// An `ElfW(Dyn)` entry.
#[repr(C)]
struct Dyn {
    tag: isize,
    value: usize,
}

const DT_NULL: isize = 0;
const DT_HASH: isize = 4;
const DT_STRTAB: isize = 5;
const DT_SYMTAB: isize = 6;
const DT_GNU_HASH: isize = 0x6fff_fef5;
const SHN_UNDEF: u16 = 0;

/// One loaded object, as `dl_iterate_phdr` describes it.
struct Object<'a> {
    base: usize,
    segments: &'a [Phdr],
}

impl<'a> Object<'a> {
    /// # Safety
    /// `info` describes a loaded object.
    unsafe fn new(info: &'a libc::dl_phdr_info) -> Self {
        let segments = if info.dlpi_phdr.is_null() {
            &[][..]
        } else {
            // SAFETY: the loader's program headers for this object.
            unsafe { core::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) }
        };
        Self { base: info.dlpi_addr as usize, segments }
    }

    /// Whether `address` lies in one of the object's loaded segments.
    fn contains(&self, address: usize) -> bool {
        self.segments.iter().any(|segment| {
            let start = self.base.wrapping_add(segment.p_vaddr as usize);
            segment.p_type == libc::PT_LOAD && (start..start.wrapping_add(segment.p_memsz as usize)).contains(&address)
        })
    }

    /// A dynamic-section address: glibc relocates most objects' entries in
    /// place, but not all (the vDSO's, read-only dynamic sections), and an
    /// unrelocated one is an offset below the load address.
    fn address(&self, value: usize) -> usize {
        if value < self.base {
            value.wrapping_add(self.base)
        } else {
            value
        }
    }

    /// Whether the object's dynamic symbol table defines `name`.
    ///
    /// # Safety
    /// The object is loaded.
    unsafe fn defines(&self, name: &[u8]) -> bool {
        let Some(dynamic) = self.segments.iter().find(|segment| segment.p_type == libc::PT_DYNAMIC) else {
            return false;
        };
        let (mut symtab, mut strtab, mut gnu_hash, mut hash) = (0, 0, 0, 0);
        let mut entry = self.base.wrapping_add(dynamic.p_vaddr as usize) as *const Dyn;
        // SAFETY: the dynamic section is mapped and ends with DT_NULL.
        unsafe {
            while (*entry).tag != DT_NULL {
                let value = (*entry).value;
                match (*entry).tag {
                    DT_SYMTAB => symtab = self.address(value),
                    DT_STRTAB => strtab = self.address(value),
                    DT_GNU_HASH => gnu_hash = self.address(value),
                    DT_HASH => hash = self.address(value),
                    _ => {}
                }
                entry = entry.add(1);
            }
        }
        if symtab == 0 || strtab == 0 {
            return false;
        }
        let tables = Tables { symtab: symtab as *const Sym, strtab: strtab as *const c_char };
        // SAFETY: the tables the object's dynamic section points to.
        unsafe {
            if gnu_hash != 0 {
                tables.gnu_lookup(gnu_hash as *const u32, name)
            } else if hash != 0 {
                tables.sysv_lookup(hash as *const u32, name)
            } else {
                false
            }
        }
    }
}

/// An object's dynamic symbol and string tables.
struct Tables {
    symtab: *const Sym,
    strtab: *const c_char,
}

impl Tables {
    /// Whether symbol `index` is `name`, defined.
    ///
    /// # Safety
    /// `index` is within the symbol table.
    unsafe fn is_definition(&self, index: usize, name: &[u8]) -> bool {
        // SAFETY: the caller's contract; names are C strings in the string
        // table.
        let (symbol, symbol_name) = unsafe {
            let symbol = &*self.symtab.add(index);
            (symbol, CStr::from_ptr(self.strtab.add(symbol.st_name as usize)))
        };
        let kind = symbol.st_info & 0xf;
        let binding = symbol.st_info >> 4;
        // Types NOTYPE, OBJECT, FUNC and GNU_IFUNC; bindings GLOBAL, WEAK
        // and GNU_UNIQUE; hidden and internal symbols are not exported.
        symbol.st_shndx != SHN_UNDEF
            && symbol.st_value != 0
            && matches!(kind, 0 | 1 | 2 | 10)
            && matches!(binding, 1 | 2 | 10)
            && !matches!(symbol.st_other & 3, 1 | 2)
            && symbol_name.to_bytes() == name
    }

    /// Looks `name` up through a `DT_GNU_HASH` table.
    ///
    /// # Safety
    /// `table` is the object's GNU hash table, for these symbol tables.
    unsafe fn gnu_lookup(&self, table: *const u32, name: &[u8]) -> bool {
        let hash = name.iter().fold(5381u32, |h, &c| h.wrapping_mul(33).wrapping_add(u32::from(c)));
        // SAFETY: the table's layout: four header words, the Bloom filter
        // (`bloom_size` native words), the buckets, then the hash chains.
        unsafe {
            let buckets_count = *table;
            let symoffset = *table.add(1);
            let bloom_size = *table.add(2) as usize;
            if buckets_count == 0 {
                return false;
            }
            let bloom = table.add(4).cast::<usize>();
            let buckets = bloom.add(bloom_size).cast::<u32>();
            let chains = buckets.add(buckets_count as usize);
            let mut index = *buckets.add((hash % buckets_count) as usize);
            if index < symoffset {
                return false;
            }
            loop {
                let chain = *chains.add((index - symoffset) as usize);
                if chain | 1 == hash | 1 && self.is_definition(index as usize, name) {
                    return true;
                }
                if chain & 1 != 0 {
                    return false;
                }
                index += 1;
            }
        }
    }

    /// Looks `name` up through a SysV `DT_HASH` table.
    ///
    /// # Safety
    /// `table` is the object's hash table, for these symbol tables.
    unsafe fn sysv_lookup(&self, table: *const u32, name: &[u8]) -> bool {
        let hash = name.iter().fold(0u32, |h, &c| {
            let h = (h << 4).wrapping_add(u32::from(c));
            let high = h & 0xf000_0000;
            (h ^ (high >> 24)) & !high
        });
        // SAFETY: the table's layout: bucket and chain counts, the buckets,
        // then the chains, indexed by symbol.
        unsafe {
            let buckets_count = *table;
            let chains_count = *table.add(1);
            if buckets_count == 0 {
                return false;
            }
            let buckets = table.add(2);
            let chains = buckets.add(buckets_count as usize);
            let mut index = *buckets.add((hash % buckets_count) as usize);
            let mut steps = 0;
            while index != 0 && index < chains_count && steps < chains_count {
                if self.is_definition(index as usize, name) {
                    return true;
                }
                index = *chains.add(index as usize);
                steps += 1;
            }
            false
        }
    }
}
