#!/usr/bin/env bash
# Allocation after frees in a random order: benches/workloads/cold_list.c
# under LD_PRELOAD, Strata beside glibc and the peers, interleaved round by
# round. Each run frees COUNT blocks in a shuffled order, all of them or
# all but KEEP percent, evicts them from the caches, and times allocating
# as many blocks again with WORK units of other work between two
# allocations (the median of the program's own 7 repetitions); every
# block's contents are checked. The table gives the median over ROUNDS
# runs of the nanoseconds per allocation, and its ratio to mimalloc's
# (read the ratios: the machine's speed moves between runs).
#
# Usage: benches/cold-list.sh [allocator ...]   (default: glibc strata
#        mimalloc jemalloc tcmalloc; NAME=/path/to/lib.so adds a library
#        of your own, e.g. an older libstrata.so)
#   env: WORKS="0 128"   work between two allocations
#        KEEPS="0 10"    percent of the blocks kept live
#        COUNT=200000 SIZE=64 ROUNDS=5
#        STRATA_LIB=path  libstrata.so to measure (default: built here)
#        CARGO_TARGET_DIR honoured
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
workspace=$(cd "$here/.." && pwd)
target=${CARGO_TARGET_DIR:-$workspace/target}
works=(${WORKS:-0 128})
keeps=(${KEEPS:-0 10})
count=${COUNT:-200000}
size=${SIZE:-64}
rounds=${ROUNDS:-5}
if [ $# -gt 0 ]; then allocators=("$@"); else allocators=(glibc strata mimalloc jemalloc tcmalloc); fi
# shellcheck source=benches/preload-peers.sh
source "$here/preload-peers.sh"
prepare_libraries
build_workload cold_list

for round in $(seq "$rounds"); do
  for keep in "${keeps[@]}"; do
    for work in "${works[@]}"; do
        # The order rotates from round to round.
        n=${#allocators[@]}
        for ((i = 0; i < n; i++)); do
            allocator=${allocators[(i + round - 1) % n]}
            lib=$(library "$allocator")
            line=$(env ${lib:+LD_PRELOAD=$lib} "$work_dir/cold_list" "$count" "$size" "$work" "$keep") || {
                echo "cold_list failed under $allocator: $line" >&2
                exit 1
            }
            echo "$allocator $keep/$work $line"
        done
    done
  done
done >"$work_dir/runs"

echo "cold_list $count blocks of $size bytes, $rounds rounds: ns per allocation (median), and ÷ mimalloc's"
echo
names=$(printf ' %s |' "${allocators[@]%%=*}")
echo "| kept | work |$names"
echo "|---:|---:|$(printf -- '---:|%.0s' "${allocators[@]}")"
for keep in "${keeps[@]}"; do
  for work in "${works[@]}"; do
    awk -v keep="$keep" -v work="$work" -v names="${allocators[*]}" '
        $2 == keep "/" work {
            for (f = 3; f <= NF; f++) { split($f, kv, "="); v[kv[1]] = kv[2] }
            if (v["ok"] != 1) { print "cold_list: a block changed under " $1 > "/dev/stderr"; exit 1 }
            runs[$1, ++n[$1]] = v["ns_per_alloc"]
        }
        function median(name,   k, i, j, t, a) {
            k = n[name]
            for (i = 1; i <= k; i++) a[i] = runs[name, i]
            for (i = 2; i <= k; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
            return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
        }
        END {
            count = split(names, list, " ")
            base = 0
            for (i = 1; i <= count; i++) if (list[i] == "mimalloc") base = median(list[i])
            line = "| " keep "% | " work " |"
            for (i = 1; i <= count; i++) {
                m = median(list[i])
                line = line sprintf(" %.1f", m) (base > 0 ? sprintf(" (%.2f)", m / base) : "") " |"
            }
            print line
        }' "$work_dir/runs"
  done
done
