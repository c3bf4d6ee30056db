#!/usr/bin/env bash
# Runs every test of the project: the core's unit, model, loom and stress
# tests, the GlobalAlloc program, the no_std arena build, the shim's C and C++
# tests, real programs under the shim, clippy, rustdoc, the core under
# AddressSanitizer, ThreadSanitizer and Miri, the fuzzing smoke run, and the
# kernel module booted in qemu. Installs what it needs on Debian (as root).
#
#   bash tests/run-all.sh            # everything
#   bash tests/run-all.sh --quick    # workspace tests and clippy only
#
# Every step runs even when an earlier one failed (except that nothing runs
# without the dependencies); the last line counts the steps that passed and
# failed, and the exit status is non-zero if any failed (tests/steps.sh).
set -uo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=tests/steps.sh
source tests/steps.sh

quick=0
case "${1:-}" in
    --quick) quick=1 ;;
    "") ;;
    *)
        echo "usage: bash tests/run-all.sh [--quick]" >&2
        exit 2
        ;;
esac

step "install dependencies" bash tests/install-deps.sh
if ((failed)); then
    summary
    exit 1
fi
if ((quick)); then
    # The quick subset for local iteration: the release build, every
    # workspace test (core, shim, real programs) and clippy.
    step "workspace tests (release)" cargo test --workspace --release --all-features
    step "clippy" cargo clippy --workspace --all-targets --all-features -- -D warnings
    finish
    exit
fi
step "build (release)" cargo build --release --workspace
step "workspace tests (release)" cargo test --workspace --release --all-features
# The workspace tests build strata-kv with Strata (its default); the same
# tests run against its other two builds, which differ only in the allocator.
step "strata-kv tests, mimalloc build" \
    cargo test -p strata-kv --release --no-default-features --features alloc-mimalloc
step "strata-kv tests, system-allocator build" \
    cargo test -p strata-kv --release --no-default-features --features alloc-system
step "core without std: arena source" \
    cargo test -p strata-alloc --release --no-default-features --features arena --test arena
step "core builds with no features" cargo build -p strata-alloc --no-default-features
step "clippy" cargo clippy --workspace --all-targets --all-features -- -D warnings
step "rustdoc" env RUSTDOCFLAGS="-D warnings" cargo doc -p strata-alloc --no-deps --all-features
# AddressSanitizer over the core's unsafe code. Doc-tests are left out: they
# do not take the sanitizer runtime. Leak detection is off: the arena tests
# leak their `'static` regions on purpose, and the core's own memory comes
# from mmap, which LeakSanitizer does not track. The loom models are left
# out too: they touch no memory of the core's pages (their slices are plain
# heap arrays) and run exhaustively in the workspace tests above, where an
# optimised build explores them in seconds; unoptimised under ASan, the
# largest (closing a remote list against two freeing threads) takes many
# minutes.
asan_tests=()
for file in allocator/tests/*.rs; do
    name=$(basename "$file" .rs)
    [ "$name" = loom ] || asan_tests+=(--test "$name")
done
step "core under AddressSanitizer (nightly)" \
    env RUSTFLAGS=-Zsanitizer=address ASAN_OPTIONS=detect_leaks=0 \
    cargo +nightly test -p strata-alloc --all-features --target x86_64-unknown-linux-gnu --lib "${asan_tests[@]}"
# ThreadSanitizer over the core's tests, the 8-thread stress test among them
# (nightly, with an instrumented standard library; see the script).
step "core under ThreadSanitizer (nightly)" bash tests/tsan.sh
# Miri over the core's unit tests and its arena-based tests (nightly; see
# the script for what runs with which checks, and what cannot run).
step "core under Miri (nightly)" bash tests/miri.sh
# The soak: threads, random sizes, cross-thread frees, thread churn, fork
# under load and malloc_trim through the C API under the shim, every object
# checked before its free; zero live bytes and bounded RSS at the end.
step "soak (short)" cargo run --release -p strata-benches --bin strata-bench -- soak --seconds 60
# Fuzzing smoke run: each cargo-fuzz target over its committed corpus.
step "fuzz smoke (nightly)" env FUZZ_SECONDS=30 bash tests/fuzz-smoke.sh
# The kernel module: builds (or reuses, from ~/.cache/strata) a Rust-enabled
# kernel, builds strata.ko, and boots it in qemu: self-test, fault
# injection, load/unload cycles, benchmark.
step "kernel module in qemu" make -C kmod --no-print-directory qemu-test

finish
