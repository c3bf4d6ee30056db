//! Heap misuse through the `GlobalAlloc` front: a double free or a free of a
//! pointer Strata never handed out prints one line and aborts the process.
//! Each case runs in a child process (this test binary, re-executed).

use std::alloc::{GlobalAlloc, Layout};
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use strata::{FreeErrorKind, Strata};

static STRATA: Strata = Strata::new();

const CHILD: &str = "STRATA_MISUSE_CHILD";

/// Runs `case` in a child and returns its stderr, asserting it was aborted.
fn aborts(case: &str) -> String {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env(CHILD, case)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.signal(), Some(libc_sigabrt()), "{case}: not aborted; stderr: {stderr}");
    stderr
}

fn libc_sigabrt() -> i32 {
    6
}

/// The child side: does the misuse named by the environment.
#[test]
fn child() {
    let Ok(case) = std::env::var(CHILD) else { return };
    let layout = Layout::from_size_align(48, 8).unwrap();
    // SAFETY: deliberate misuse, which the allocator must catch.
    unsafe {
        match case.as_str() {
            "double" => {
                let p = STRATA.alloc(layout);
                STRATA.dealloc(p, layout);
                STRATA.dealloc(p, layout);
            }
            "foreign" => {
                let mut local = [0u64; 8];
                STRATA.dealloc(local.as_mut_ptr().cast(), layout);
            }
            "interior" => {
                let p = STRATA.alloc(layout);
                STRATA.dealloc(p.add(8), layout);
            }
            "realloc" => {
                let p = STRATA.alloc(layout);
                STRATA.dealloc(p, layout);
                STRATA.realloc(p, layout, 100);
            }
            "forged_link" => {
                // A use-after-free write puts the address of a live object
                // in a freed object's link: the next allocations would hand
                // `live` out twice if the link were followed.
                let live = STRATA.alloc(layout);
                let freed = STRATA.alloc(layout);
                STRATA.dealloc(freed, layout);
                freed.cast::<usize>().write_unaligned(live as usize);
                let first = STRATA.alloc(layout);
                let second = STRATA.alloc(layout);
                eprintln!("followed: {first:p} {second:p} (live {live:p})");
            }
            "forged_remote_link" => {
                // The same through another thread's frees: two objects of
                // one slice go onto its remote list together, the second
                // linked to the first, and the owner finds the second's
                // forged link when the list it takes back (as its free
                // list) reaches it.
                let mut local = [0u64; 8];
                let older = STRATA.alloc(layout) as usize;
                let freed = STRATA.alloc(layout) as usize;
                let forged = local.as_mut_ptr() as usize;
                std::thread::spawn(move || {
                    STRATA.dealloc(older as *mut u8, layout);
                    STRATA.dealloc(freed as *mut u8, layout);
                    (freed as *mut usize).write_unaligned(forged);
                })
                .join()
                .unwrap();
                // Run the slice dry, so the owner collects its remote frees.
                for _ in 0..2 * strata::page::SLICE_SIZE / 48 {
                    let _ = STRATA.alloc(layout);
                }
                eprintln!("followed: {:?}", local);
            }
            other => panic!("unknown case {other}"),
        }
    }
    panic!("misuse {case} was not caught");
}

#[cfg(not(strata_unhardened))]
#[test]
fn a_forged_free_list_link_is_reported_not_followed() {
    for case in ["forged_link", "forged_remote_link"] {
        let stderr = aborts(case);
        assert!(
            stderr.contains("strata: heap corruption: the free-list link of ")
                && stderr.contains("was overwritten (use after free); aborting"),
            "{case}: {stderr}"
        );
        assert!(!stderr.contains("followed"), "{case}: {stderr}");
    }
}

#[test]
fn double_free_aborts_with_one_line() {
    let stderr = aborts("double");
    let line = stderr.lines().find(|l| l.starts_with("strata:")).expect("a strata line");
    assert!(line.starts_with("strata: dealloc: double free of 0x"), "{line}");
    assert!(line.ends_with("; aborting"), "{line}");
}

#[test]
fn foreign_pointer_aborts() {
    let stderr = aborts("foreign");
    assert!(stderr.contains("strata: dealloc: free of 0x"), "{stderr}");
    assert!(stderr.contains("not an allocation of this allocator"), "{stderr}");
}

#[test]
fn interior_pointer_aborts() {
    let stderr = aborts("interior");
    assert!(stderr.contains("strata: dealloc: free of 0x"), "{stderr}");
}

#[test]
fn realloc_of_freed_pointer_aborts() {
    let stderr = aborts("realloc");
    assert!(stderr.contains("strata: realloc:"), "{stderr}");
}

#[test]
fn checked_free_reports_instead_of_aborting() {
    let layout = Layout::from_size_align(200, 8).unwrap();
    // SAFETY: the checked API rejects the second free without touching it.
    unsafe {
        let p = STRATA.alloc(layout);
        STRATA.free(p).unwrap();
        let error = STRATA.free(p).unwrap_err();
        assert_eq!(error.kind, FreeErrorKind::DoubleFree);
        assert_eq!(error.address, p as usize);
        // Still usable afterwards, and the object is reused.
        let q = STRATA.alloc(layout);
        assert_eq!(q, p);
        STRATA.free(q).unwrap();
        // A large allocation too.
        let big = Layout::from_size_align(1 << 20, 8).unwrap();
        let b = STRATA.alloc(big);
        STRATA.free(b).unwrap();
        assert!(STRATA.free(b).is_err());
    }
}

#[test]
fn a_freed_block_is_refused_by_resize_and_usable_size() {
    // An allocator of its own: the other tests run on other threads, and one
    // of them could take the freed span back before it is checked.
    static STRATA: Strata = Strata::new();
    // The block kept its class after the free: a resize within it would
    // once have handed it back in place while it sat on the free list.
    let layout = Layout::from_size_align(32, 8).unwrap();
    // SAFETY: the checked API refuses the freed pointer without using it.
    unsafe {
        let p = STRATA.alloc(layout);
        STRATA.free(p).unwrap();
        let shrink = Layout::from_size_align(30, 8).unwrap();
        let error = STRATA.resize(p, shrink).unwrap_err();
        assert_eq!(error.kind, FreeErrorKind::Freed);
        assert_eq!(error.to_string(), format!("{:#x} was already freed", p as usize));
        assert_eq!(STRATA.usable_size(p).unwrap_err().kind, FreeErrorKind::Freed);
        // The block is still free, once: the next allocation takes it, and
        // the one after takes another.
        let q = STRATA.alloc(layout);
        let r = STRATA.alloc(layout);
        assert_ne!(q, r);
        assert_eq!(STRATA.usable_size(q), Ok(32));
        STRATA.free(q).unwrap();
        STRATA.free(r).unwrap();
        // A freed span too.
        let big = Layout::from_size_align(200_000, 8).unwrap();
        let b = STRATA.alloc(big);
        STRATA.free(b).unwrap();
        assert_eq!(STRATA.usable_size(b).unwrap_err().kind, FreeErrorKind::Freed);
    }
}

#[test]
fn tagged_and_out_of_range_pointers_are_refused() {
    let layout = Layout::from_size_align(64, 8).unwrap();
    // SAFETY: the checked API refuses the pointers without dereferencing them.
    unsafe {
        let p = STRATA.alloc(layout);
        for tag in [1usize << 48, 1 << 56, 0x3f << 57, 1 << 63, usize::MAX << 48] {
            let tagged = (p as usize | tag) as *mut u8;
            let error = STRATA.free(tagged).unwrap_err();
            assert_eq!(error.kind, FreeErrorKind::NotAllocated, "tag {tag:#x}");
            assert!(STRATA.usable_size(tagged).is_err());
        }
        STRATA.free(p).unwrap();
    }
}

#[test]
fn dirty_slices_are_purged_after_the_delay() {
    static QUICK: Strata = Strata::new();
    QUICK.set_purge_delay_ms(0);
    let layout = Layout::from_size_align(4000, 8).unwrap();
    // SAFETY: blocks are freed once.
    unsafe {
        let blocks: Vec<_> = (0..5000).map(|_| QUICK.alloc(layout)).collect();
        for p in blocks {
            QUICK.dealloc(p, layout);
        }
    }
    // Giving the cache back is a slow path: it runs the purge check.
    QUICK.release_thread_cache();
    let stats = QUICK.stats();
    assert_eq!(stats.bytes_live, 0);
    assert!(stats.purges > 0, "{stats}");
    assert_eq!(stats.slices_dirty, 0, "{stats}");
    assert!(stats.pages_released > 0, "empty pages go back to the source: {stats}");
}

/// `purge` returns memory the calling thread has just freed, including the
/// slices still in its own cache, with the default purge delay (which
/// would otherwise keep them).
#[test]
fn purge_returns_what_this_thread_just_freed() {
    static PURGED: Strata = Strata::new();
    let layout = Layout::from_size_align(64, 8).unwrap();
    // 16 MiB of 64-byte objects, in several classes' worth of slices.
    let count = (16 << 20) / 64;
    // SAFETY: each block is freed once, with its layout.
    unsafe {
        let blocks: Vec<_> = (0..count).map(|_| PURGED.alloc(layout)).collect();
        assert!(blocks.iter().all(|p| !p.is_null()));
        let before = PURGED.stats();
        assert!(before.bytes_resident >= 16 << 20, "{before}");
        for p in blocks {
            PURGED.dealloc(p, layout);
        }
    }
    PURGED.purge();
    let after = PURGED.stats();
    assert_eq!(after.bytes_live, 0, "{after}");
    // Every slice goes back: none stays resident in the thread's cache.
    // (Before `purge` gave the cache back, 5 partial slices, 360 KiB, stayed.)
    assert!(
        after.bytes_resident < 64 << 10,
        "purge left {} bytes resident: {after}",
        after.bytes_resident
    );
}
