//! Statistics and purging: what Strata holds, and giving memory back to the
//! OS on demand or after a delay.
//!
//! ```sh
//! cargo run --release -p strata-alloc --example stats_and_purge
//! ```

use std::time::Duration;

#[global_allocator]
static GLOBAL: strata::Strata = strata::Strata::new();

const MIB: usize = 1 << 20;

fn report(when: &str) {
    let stats = GLOBAL.stats();
    println!(
        "{when:<28} live {:>4} MiB, resident {:>4} MiB, mapped {:>4} MiB; slices: {} partial, {} full, {} dirty, {} purged",
        stats.bytes_live / MIB,
        stats.bytes_resident / MIB,
        stats.bytes_mapped / MIB,
        stats.slices_partial,
        stats.slices_full,
        stats.slices_dirty,
        stats.slices_purged,
    );
}

fn main() {
    report("at start");

    // 256 MiB in 1 KiB strings.
    let mut strings: Vec<String> = (0..256 * 1024).map(|i| format!("{i:>1024}")).collect();
    report("after allocating 256 MiB");

    // Free the last seven eighths. The emptied slices become dirty: still
    // resident, and reusable by any size class.
    strings.truncate(strings.len() / 8);
    strings.shrink_to_fit();
    report("after freeing 7/8");

    // Dirty slices go back to the OS once they have been dirty for the purge
    // delay (250 ms by default), the next time a thread refills its cache,
    // frees a large block (here, a 1 MiB one) or exits.
    GLOBAL.set_purge_delay_ms(50);
    std::thread::sleep(Duration::from_millis(100));
    drop(vec![0u8; MIB]);
    report("after the purge delay");

    // `purge` returns everything now: caches, dirty slices, empty pages.
    drop(strings);
    GLOBAL.purge();
    report("after purge()");

    // The usable size of a block, and a bad pointer reported, not a crash.
    let block = Box::new([0u8; 100]);
    let pointer = Box::into_raw(block).cast::<u8>();
    println!("a 100-byte request is served by a {}-byte block", GLOBAL.usable_size(pointer).unwrap());
    // SAFETY: `pointer` is live; the second free is reported as an error.
    unsafe {
        GLOBAL.free(pointer).unwrap();
        println!("freeing it again: {}", GLOBAL.free(pointer).unwrap_err());
    }

    // The full table, as the shim's STRATA_STATS=1 prints it.
    println!("\n{}", GLOBAL.stats());
}
