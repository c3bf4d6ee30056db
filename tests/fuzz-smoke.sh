#!/usr/bin/env bash
# Fuzzing smoke test: runs each cargo-fuzz target of the core for a bounded
# time over its committed corpus, and fails on any crash.
#
# A real fuzzing run, from allocator/ (nightly; cargo-fuzz as installed below):
#
#     cargo +nightly fuzz run ops      # or arith; add -- -max_total_time=300
#
# Targets (allocator/fuzz/fuzz_targets/):
#   ops    operation sequences (alloc, realloc, free, bulk, stale/interior/
#          cross-allocator frees, failing page source) against a model;
#   arith  size-class arithmetic and pointer validation with arbitrary
#          addresses.
#
# Environment:
#   FUZZ_SECONDS   time per target (default 60)
#   FUZZ_TARGETS   targets to run (default "ops arith")
#
# New inputs found during the run go to a temporary directory; the committed
# corpus (allocator/fuzz/corpus/<target>/) is only read. A crash leaves its
# input in allocator/fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-60}
targets=${FUZZ_TARGETS:-ops arith}
root="$HOME/.cache/strata/cargo-fuzz"
export PATH="$root/bin:$PATH"

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz-smoke: needs a nightly toolchain (rustup toolchain install nightly)" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz into $root"
    cargo install --root "$root" cargo-fuzz --locked
fi

start=$SECONDS
cd allocator
echo "==> building the fuzz targets"
cargo +nightly fuzz build

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=0
summary=()
for target in $targets; do
    echo "==> fuzzing $target for ${seconds}s"
    mkdir -p "$scratch/$target"
    log="$scratch/$target.log"
    # The first corpus directory receives new inputs; the committed one is
    # read only.
    if cargo +nightly fuzz run "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
        status=ok
    else
        status=FAILED
        failed=1
        grep -E "panicked|ERROR|SUMMARY|Failing input|artifacts/" "$log" | head -20 >&2 || true
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    line="$target: $status, ${execs:-?} executions (${rate:-?}/s)"
    echo "$line"
    summary+=("$line")
done

echo
printf 'fuzz-smoke: %s\n' "${summary[@]}"
echo "fuzz-smoke: $((SECONDS - start)) s"
exit "$failed"
