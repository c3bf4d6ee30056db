#!/usr/bin/env bash
# The large-block cases of issue 8 under LD_PRELOAD, Strata beside glibc and
# the peers, in one interleaved run: every round runs every case with every
# allocator, in a rotated order, and the table gives the median time, the
# ratio to the best allocator of the case, and the peak RSS (the largest
# seen over the rounds).
#
# Usage: benches/large.sh [allocator ...]   (default: glibc strata mimalloc
#        jemalloc tcmalloc)
#   env: ROUNDS=3           runs per case and allocator
#        CASES="grow1 grow2 churn rlimit"
#        STRATA_LIB=path    libstrata.so to measure (default: built here)
#        CARGO_TARGET_DIR   honoured
#
# The cases (benches/workloads/large.c): grow1, one buffer grown by realloc
# in 64 KiB steps to 64 MiB; grow2, two buffers grown in turn; churn,
# 2000 x (malloc 3 MiB, fill, free); rlimit, under RLIMIT_AS of 512 MiB more
# than in use, fill with 1.5 MiB blocks, free all, malloc 3 MiB ("FAIL" when
# that malloc returns NULL).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
workspace=$(cd "$here/.." && pwd)
target=${CARGO_TARGET_DIR:-$workspace/target}
rounds=${ROUNDS:-3}
cases=(${CASES:-grow1 grow2 churn rlimit})
if [ $# -gt 0 ]; then allocators=("$@"); else allocators=(glibc strata mimalloc jemalloc tcmalloc); fi
# shellcheck source=benches/preload-peers.sh
source "$here/preload-peers.sh"
prepare_libraries
build_workload large

for ((round = 0; round < rounds; round++)); do
    for case in "${cases[@]}"; do
        count=${#allocators[@]}
        for ((i = 0; i < count; i++)); do
            allocator=${allocators[$(((i + round) % count))]}
            lib=$(library "$allocator")
            line=$(env ${lib:+LD_PRELOAD=$lib} "$work_dir/large" "$case")
            echo "$case $allocator $line" >>"$work_dir/results"
        done
    done
done

awk -v allocators="${allocators[*]}" -v cases="${cases[*]}" '
function median(list,   n, values, i, j, t) {
    n = split(list, values, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (values[j] + 0 < values[i] + 0) { t = values[i]; values[i] = values[j]; values[j] = t }
    return n % 2 ? values[(n + 1) / 2] : (values[n / 2] + values[n / 2 + 1]) / 2
}
{
    c = $1; a = $2
    for (f = 3; f <= NF; f++) { split($f, kv, "="); v[kv[1]] = kv[2] }
    times[c, a] = times[c, a] " " v["seconds"]
    if (v["peak_rss_kib"] + 0 > rss[c, a] + 0) rss[c, a] = v["peak_rss_kib"]
    if (v["ok"] == 0) failed[c, a] = 1
}
END {
    na = split(allocators, al, " "); nc = split(cases, cl, " ")
    printf "%-7s %-9s %10s %8s %14s %s\n", "case", "allocator", "median s", "x best", "peak RSS MiB", "result"
    for (i = 1; i <= nc; i++) {
        c = cl[i]; best = -1
        for (j = 1; j <= na; j++) { m[j] = median(times[c, al[j]]); if (!failed[c, al[j]] && (best < 0 || m[j] < best)) best = m[j] }
        for (j = 1; j <= na; j++) {
            a = al[j]
            printf "%-7s %-9s %10.4f %8.2f %14.1f %s\n", c, a, m[j], (best > 0 ? m[j] / best : 0), rss[c, a] / 1024, failed[c, a] ? "FAIL (NULL)" : "ok"
        }
    }
}' "$work_dir/results"
