#!/usr/bin/env bash
# Instructions per malloc+free pair, per allocator, counted by callgrind.
#
# Usage: benches/callgrind.sh [allocator ...]
#   env: SIZES="32 64"   object sizes in bytes
#        PAIRS=200000    measured pairs per run
#        BATCH=1         live objects per batch: 1 is the steady-state fast
#                        path (allocate, free, repeat); e.g. 1000 allocates
#                        1000 objects then frees them, over and over
#        OUT=dir         where callgrind output files go (default: a temp dir)
#        CARGO_TARGET_DIR  honoured; defaults to the workspace's target/
#        UNHARDENED=1    builds the core without its default hardening
#                        (RUSTFLAGS="--cfg strata_unhardened"), to measure
#                        what that costs; measurement only. The build goes to
#                        <target>/unhardened/, so the hardened one is kept.
#
# Builds the `fastpath` harness in release mode, runs it once per allocator
# and size under `valgrind --tool=callgrind --toggle-collect='*measured_loop*'`
# (so only the measured loop and what it calls are counted, never start-up or
# warm-up), and prints a table: instructions per pair, the part spent in the
# allocation and the free calls, the same less the `baseline` run (loop and
# call overhead, no allocator work), and the ratio of that net figure to
# mimalloc's. Instruction counts are deterministic: runs repeat exactly.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
workspace=$(cd "$here/.." && pwd)
target=${CARGO_TARGET_DIR:-$workspace/target}
sizes=${SIZES:-"32 64"}
pairs=${PAIRS:-200000}
batch=${BATCH:-1}
pairs=$(( pairs / batch * batch ))
if [ $# -gt 0 ]; then
    allocators=("$@")
else
    allocators=(strata mimalloc system strata-shared talc linked-list)
fi

if ! command -v valgrind >/dev/null; then
    echo "valgrind not found; installing it with apt-get" >&2
    apt-get update -qq && apt-get install -y -qq valgrind >/dev/null
fi

hardening=on
if [ "${UNHARDENED:-0}" = 1 ]; then
    hardening=off
    target=$target/unhardened
    export RUSTFLAGS="${RUSTFLAGS:-} --cfg strata_unhardened"
fi
(cd "$workspace" && CARGO_TARGET_DIR="$target" cargo build --release --quiet -p strata-benches --bin fastpath)
bin=$target/release/fastpath
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"

# Prints "<total> <alloc> <free>": the collected instructions, and the
# inclusive cost of the calls measured_loop made to shim_alloc and shim_dealloc.
measure() {
    local allocator=$1 size=$2 file="$out/callgrind.$1.$2.$batch.out"
    valgrind --tool=callgrind --toggle-collect='*measured_loop*' \
        --callgrind-out-file="$file" "$bin" "$allocator" "$size" "$pairs" "$batch" >/dev/null 2>&1
    awk '
        # Names are compressed: "(id) name" the first time, "(id)" after.
        function name(spec,   id) {
            id = spec; sub(/\).*/, ")", id)
            if (spec ~ /\) /) { sub(/^\([0-9]+\) /, "", spec); names[id] = spec }
            return names[id]
        }
        /^totals:/ { total = $2 }
        /^fn=/ { f = substr($0, 4); in_loop = (name(f) ~ /measured_loop/); next }
        /^cfn=/ { c = substr($0, 5); callee = name(c); next }
        /^calls=/ { take = in_loop; next }
        take { cost[callee] += $NF; take = 0 }
        END {
            for (k in cost) {
                if (k ~ /shim_alloc/) a += cost[k]
                if (k ~ /shim_dealloc/) d += cost[k]
            }
            printf "%d %d %d\n", total, a, d
        }' "$file"
}

printf 'callgrind: %s pairs per run, batch %s, hardening %s; output files in %s\n\n' "$pairs" "$batch" "$hardening" "$out"
header=$(printf '%-5s %-14s %14s %9s %9s %9s %9s %12s' size allocator "Ir total" Ir/pair alloc free net/pair "net÷mimalloc")
echo "$header"
printf '%s\n' "$(printf '%*s' ${#header} '' | tr ' ' -)"
for size in $sizes; do
    read -r base_total _ _ < <(measure baseline "$size")
    base=$(awk -v t="$base_total" -v n="$pairs" 'BEGIN { printf "%.2f", t / n }')
    declare -A net=()
    declare -A rows=()
    for allocator in mimalloc "${allocators[@]}"; do
        [ -n "${rows[$allocator]:-}" ] && continue
        read -r total alloc free < <(measure "$allocator" "$size")
        net[$allocator]=$(awk -v t="$total" -v n="$pairs" -v b="$base" 'BEGIN { printf "%.2f", t / n - b }')
        rows[$allocator]=$(awk -v t="$total" -v a="$alloc" -v f="$free" -v n="$pairs" \
            'BEGIN { printf "%14d %9.2f %9.2f %9.2f", t, t / n, a / n, f / n }')
    done
    printf '%-5s %-14s %14d %9s %9s %9s %9s %12s\n' "$size" baseline "$base_total" "$base" - - 0 -
    for allocator in "${allocators[@]}"; do
        ratio=$(awk -v x="${net[$allocator]}" -v m="${net[mimalloc]}" 'BEGIN { printf "%.2f", x / m }')
        printf '%-5s %-14s %s %9s %12s\n' "$size" "$allocator" "${rows[$allocator]}" "${net[$allocator]}" "$ratio"
    done
    unset net rows
done
cat <<'NOTE'

Ir/pair: instructions per malloc+free pair, loop included. alloc, free: the
part spent in the allocation and the free call (call and shim included).
net/pair: Ir/pair less the baseline (the loop and shim calls with no
allocator behind them). net÷mimalloc: net/pair relative to mimalloc's.
NOTE
