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
# median rate of each build and the median, over pairs of adjacent runs, of
# the ratio of their times (hardened ÷ unhardened, above 1 = hardening costs
# time), then the geometric mean of those ratios over the workloads. The instruction cost per pair comes from
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

# Appends "<build> <workload> <Mpairs/s> <pair>" lines for one run of one
# build; `pair` numbers the adjacent hardened/unhardened runs.
run() {
    local build=$1 bin=$2 pair=$3
    "$bin" --allocators strata --rounds 1 --ms "$ms" 2>/dev/null |
        awk -v build="$build" -v pair="$pair" '$2 == "strata" && NF == 7 { print build, $1, $3, pair }' >>"$samples"
}

for ((i = 0; i < runs; i++)); do
    if ((i % 2 == 0)); then
        run hardened "$hardened" "$i"
        run unhardened "$unhardened" "$i"
    else
        run unhardened "$unhardened" "$i"
        run hardened "$hardened" "$i"
    fi
done

printf 'hardening cost: %s alternated runs of each build, %s ms per workload\n\n' "$runs" "$ms"
# Per workload: the median rate of each build, and the median over pairs of
# adjacent runs of the time ratio (hardened ÷ unhardened): pairing cancels
# most of the drift of a shared machine's load.
awk '
    { rate[$1, $2, $4] = $3; workloads[$2] = 1; pairs[$4] = 1 }
    function median(values, k,   i, j, t) {
        for (i = 2; i <= k; i++)
            for (j = i; j > 1 && values[j - 1] > values[j]; j--) {
                t = values[j]; values[j] = values[j - 1]; values[j - 1] = t
            }
        return (k % 2) ? values[(k + 1) / 2] : (values[k / 2] + values[k / 2 + 1]) / 2
    }
    END {
        printf "%-12s %12s %12s %12s\n", "workload", "hardened", "unhardened", "time ratio"
        printf "%-12s %12s %12s %12s\n", "", "Mpairs/s", "Mpairs/s", "H ÷ U"
        print "-----------------------------------------------------"
        count = 0; logsum = 0
        for (w in workloads) {
            k = 0
            for (p in pairs) {
                if (((("hardened", w, p) in rate)) && ((("unhardened", w, p) in rate))) {
                    k++
                    h[k] = rate["hardened", w, p]; u[k] = rate["unhardened", w, p]
                    r[k] = u[k] / h[k]
                }
            }
            ratio = median(r, k); hm = median(h, k); um = median(u, k)
            printf "%-12s %12.2f %12.2f %12.4f\n", w, hm, um, ratio
            logsum += log(ratio); count++
            delete h; delete u; delete r
        }
        print "-----------------------------------------------------"
        printf "%-12s %12s %12s %12.4f\n", "geomean", "", "", exp(logsum / count)
    }' "$samples"
