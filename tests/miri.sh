#!/usr/bin/env bash
# Runs the core's unit tests and its arena-based integration tests under
# Miri (nightly), which checks them for undefined behaviour: out-of-bounds
# and use-after-free accesses, reads of uninitialised memory, invalid
# values, data races between threads (and weak-memory effects), and
# violations of the aliasing model (Stacked Borrows).
#
#   bash tests/miri.sh
#
# Page source: the static arena (`ArenaSource`). The mmap source cannot run
# under Miri: it over-maps and trims the ends of each mapping to align it,
# and Miri's `munmap` accepts only whole mappings (a partial unmap is
# "unsupported"); it also calls `madvise`. The unit tests therefore build
# their domains on an arena under `cfg(miri)` (src/domain/tests.rs), and
# every test that needs mmap is left out (below).
#
# Provenance: `-Zmiri-permissive-provenance`. Strict provenance is not
# possible: the allocator turns addresses back into pointers throughout
# (`address as *mut FreeObject`, the page header found by masking an
# address, `page_of_slice`), so Miri stops at the first integer-to-pointer
# cast under `-Zmiri-strict-provenance` (page.rs, `page_of_slice`).
#
# Two passes:
# 1. Stacked Borrows on: the unit tests of the slice state machine that
#    make few pointer look-ups, and two threads swapping objects through
#    their heaps (`ring.rs`, `two_threads_swap_objects`: alloc and free
#    fast paths, remote frees, release).
# 2. Stacked Borrows off (every other check still on): all unit tests of
#    `domain`, the static-arena test (`arena.rs`), three threads passing
#    objects round a ring (`ring.rs`), and the randomized model on the
#    arena (`model.rs`), with smaller counts under `cfg(miri)`. The ring is
#    where Miri's race detector sees owners carve while other threads free
#    into their slices: on the code before the fix it reports the race on
#    `SliceMeta::carved` (carve's write, the free fast path's read).
# Why two: under Stacked Borrows (and Tree Borrows, as slow) each pointer
# look-up costs seconds and grows with the run: every free and look-up
# retags the 16 KiB page header (`&PageHeader`, and
# `header.slices.get(..)`). Before `registry::contains` stopped taking a
# reference to its whole 8 MiB map, 40 look-ups took 250 s.
#
# Not run under Miri, and why:
# - size_class unit tests: safe code only (no unsafe, no memory access
#   Miri would check beyond a native debug run), and exhaustive loops over
#   every size and alignment that take minutes interpreted.
# - model_thread_local_front, model_shared_front_on_mmap, bulk, heap,
#   misuse, source_failure, stress, global_program: the mmap source (see
#   above); misuse also re-executes the test binary, which Miri cannot do.
#   These run natively, and under ThreadSanitizer (tests/tsan.sh).
# - loom: loom's own model checker; nothing for Miri to add.
# - Doc-tests.
#
# `-Zmiri-ignore-leaks` for the unit tests only: they leak their domains and
# arenas on purpose, for the life of the process. The integration tests run
# with the leak check.
#
# About 3.5 minutes here (2 cores) with the Miri sysroot and dependencies
# built; a few more on the first run.
set -euo pipefail
cd "$(dirname "$0")/.."

start=$SECONDS
rustup component add miri rust-src --toolchain nightly >/dev/null
cargo +nightly miri setup >/dev/null 2>&1 || cargo +nightly miri setup

common="-Zmiri-permissive-provenance"
no_sb="-Zmiri-disable-stacked-borrows"

echo "==> miri, Stacked Borrows: state-machine unit tests"
MIRIFLAGS="$common -Zmiri-ignore-leaks" cargo +nightly miri test -p strata-alloc --lib -- --test-threads=1 \
    domain::tests::a_domain_built_in_place_serves \
    domain::tests::a_zeroed_inner_is_empty \
    domain::tests::an_explicit_purge_makes_holes_of_a_sparse_slices_empty_pages \
    domain::tests::a_withheld_object_that_starts_before_a_hole_reads_as_freed \
    domain::tests::the_delayed_purge_makes_holes_of_a_sparse_slice_that_waited_the_delay \
    domain::tests::a_free_during_a_walk_without_the_lock_is_kept_and_its_page_is_no_hole \
    domain::tests::a_heap_fills_the_holes_of_a_slice_it_receives_with_the_lock_released \
    domain::tests::bad_pointers_are_rejected \
    domain::tests::memory_waiting_follows_the_lists_without_the_lock \
    domain::tests::a_dirty_slice_is_carved_again_in_address_order \
    domain::tests::full_threshold_is_seven_eighths \
    domain::tests::fuller_pages_win_ties \
    domain::tests::partial_beats_dirty_beats_clean_beats_full \
    domain::tests::purged_slices_cost_what_clean_slices_cost \
    domain::tests::runs_are_found_lowest_first_and_aligned \
    domain::tests::spans_take_contiguous_slices_and_come_back_dirty \
    domain::tests::transitions_keep_masks_and_occupancy

echo "==> miri, Stacked Borrows: two threads swap objects"
MIRIFLAGS="$common" cargo +nightly miri test -p strata-alloc --test ring -- --test-threads=1 two_threads_swap_objects

echo "==> miri, Stacked Borrows off: every domain unit test"
MIRIFLAGS="$common $no_sb -Zmiri-ignore-leaks" cargo +nightly miri test -p strata-alloc --lib -- --test-threads=1 domain::tests::

echo "==> miri, Stacked Borrows off: arena, ring of threads, model on the arena"
MIRIFLAGS="$common $no_sb" cargo +nightly miri test -p strata-alloc --test arena --test ring --test model -- --test-threads=1 \
    static_arena_serves_until_full_and_recovers \
    objects_freed_round_a_ring_of_threads_come_back \
    model_shared_front_on_arena

echo "miri: passed ($((SECONDS - start)) s)"
