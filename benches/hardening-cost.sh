#!/usr/bin/env bash
# What the default hardening costs in time: the throughput benchmark's
# workloads, for Strata built with its default hardening and without it
# (RUSTFLAGS="--cfg strata_unhardened", for measurement only).
#
# Usage: benches/hardening-cost.sh
#   env: RUNS=10   runs of each build, alternated (H U, U H, H U, ...)
#        MS=200    milliseconds per workload and run
#        CARGO_TARGET_DIR  honoured; the unhardened build goes to
#                  <target>/unhardened/
#
# The two builds cannot share one process (one crate, two feature sets), so
# the script alternates whole runs of `throughput --allocators strata
# --rounds 1`, swapping the order every pair, and reports per workload the
# median rate of each build and the ratio of their times (hardened ÷
# unhardened, above 1 = hardening costs time), then the geometric mean of
# those ratios. The instruction cost per pair comes from
#   SIZES="16 32 256 1024" bash benches/callgrind.sh strata strata-shared
#   UNHARDENED=1 SIZES="16 32 256 1024" bash benches/callgrind.sh strata strata-shared
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
workspace=$(cd "$here/.." && pwd)
target=${CARGO_TARGET_DIR:-$workspace/target}
runs=${RUNS:-10}
ms=${MS:-200}

(cd "$workspace" && CARGO_TARGET_DIR="$target" cargo build --release --quiet -p strata-benches --bin throughput)
(cd "$workspace" && CARGO_TARGET_DIR="$target/unhardened" RUSTFLAGS="${RUSTFLAGS:-} --cfg strata_unhardened" \
    cargo build --release --quiet -p strata-benches --bin throughput)
hardened=$target/release/throughput
unhardened=$target/unhardened/release/throughput

samples=$(mktemp)
trap 'rm -f "$samples"' EXIT

# Appends "<build> <workload> <Mpairs/s>" lines for one run of one build.
run() {
    local build=$1 bin=$2
    "$bin" --allocators strata --rounds 1 --ms "$ms" 2>/dev/null |
        awk -v build="$build" '$2 == "strata" && NF == 7 { print build, $1, $3 }' >>"$samples"
}

for ((i = 0; i < runs; i++)); do
    if ((i % 2 == 0)); then
        run hardened "$hardened"
        run unhardened "$unhardened"
    else
        run unhardened "$unhardened"
        run hardened "$hardened"
    fi
done

printf 'hardening cost: %s alternated runs of each build, %s ms per workload\n\n' "$runs" "$ms"
sort -k2,2 -k1,1 -k3,3g "$samples" | awk '
    { rate[$2, $1, ++n[$2, $1]] = $3; workloads[$2] = 1 }
    function median(w, b,   k) {
        k = n[w, b]
        return (k % 2) ? rate[w, b, (k + 1) / 2] : (rate[w, b, k / 2] + rate[w, b, k / 2 + 1]) / 2
    }
    END {
        printf "%-12s %12s %12s %12s\n", "workload", "hardened", "unhardened", "time ratio"
        printf "%-12s %12s %12s %12s\n", "", "Mpairs/s", "Mpairs/s", "H ÷ U"
        print "-----------------------------------------------------"
        count = 0; logsum = 0
        for (w in workloads) {
            h = median(w, "hardened"); u = median(w, "unhardened")
            ratio = u / h
            printf "%-12s %12.2f %12.2f %12.4f\n", w, h, u, ratio
            logsum += log(ratio); count++
        }
        print "-----------------------------------------------------"
        printf "%-12s %12s %12s %12.4f\n", "geomean", "", "", exp(logsum / count)
    }'
