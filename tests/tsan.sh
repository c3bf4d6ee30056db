#!/usr/bin/env bash
# Runs the core's tests under ThreadSanitizer (nightly, with the standard
# library rebuilt instrumented, so that its channels, mutexes and thread
# joins are seen as synchronisation and raise no false reports).
#
#   bash tests/tsan.sh [extra cargo test arguments]
#
# Runs: the unit tests (`--lib`) and every integration test in
# allocator/tests/ but the ones listed below, among them the 8-thread
# `stress` test, the two-thread `heap` test and the `global_program` test
# (Strata as the `#[global_allocator]`, threads and channels). Any report
# fails the run (TSan's exit code 66).
#
# Skipped, and why:
# - `loom`: loom runs its model threads as coroutines on stacks of its own
#   and switches between them behind TSan's back; TSan cannot follow that
#   (it reports nonsense or crashes), and loom checks that model exhaustively
#   anyway (`cargo test --test loom`, in run-all).
# - Doc-tests: rustdoc does not link the sanitizer runtime into them.
#
# `misuse` runs: its aborting cases re-execute the test binary (fork + exec)
# and check that the child died of SIGABRT; TSan follows the exec and the
# child's abort is the expected outcome, not a report.
#
# Suppressions: tests/tsan.supp, passed to TSan below; it holds none today
# (no false positive was found), and is where a narrow one would go, with
# its reason.
#
# The workspace builds release with `panic = "abort"`, which does not mix
# with `-Zbuild-std` (the std it rebuilds then defines the `owned_box` lang
# item twice); this step builds with unwinding in both profiles. It uses a
# target directory of its own (target/tsan), so it neither rebuilds nor is
# rebuilt by the ordinary and AddressSanitizer builds.
#
# About 40 s here (2 cores) once built; the first run also rebuilds the
# standard library instrumented, about 8 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
workspace=$(pwd)

start=$SECONDS
rustup component add rust-src --toolchain nightly >/dev/null

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$workspace/target}/tsan"
export CARGO_PROFILE_DEV_PANIC=unwind
export CARGO_PROFILE_RELEASE_PANIC=unwind
export RUSTFLAGS="-Zsanitizer=thread"
export TSAN_OPTIONS="suppressions=$workspace/tests/tsan.supp second_deadlock_stack=1 ${TSAN_OPTIONS:-}"
# Debug assertions stay on; optimise a little so that the byte-by-byte
# checks of the stress and model tests do not take minutes under TSan.
export CARGO_PROFILE_DEV_OPT_LEVEL=1

tests=()
for file in allocator/tests/*.rs; do
    name=$(basename "$file" .rs)
    case $name in
        loom) continue ;; # see above
    esac
    tests+=(--test "$name")
done

cargo +nightly test -Zbuild-std --target x86_64-unknown-linux-gnu \
    -p strata-alloc --all-features --lib "${tests[@]}" "$@"

echo "tsan: passed, no report ($((SECONDS - start)) s)"
