#!/usr/bin/env bash
# Instructions per malloc+free pair for allocators preloaded into a C
# program, counted by callgrind: Strata's shim beside Debian's mimalloc,
# jemalloc and tcmalloc, and glibc's own malloc.
#
# Usage: benches/callgrind-preload.sh [allocator ...]
#   allocators: glibc strata mimalloc jemalloc tcmalloc (default: all)
#   env: SIZES="16 32 256 1024"   object sizes in bytes
#        PAIRS=200000             measured pairs per run
#        OUT=dir                  where callgrind output goes (default: a temp dir)
#        CARGO_TARGET_DIR         honoured; defaults to the workspace's target/
#        UNHARDENED=1             builds the shim without the core's default
#                                 hardening (for measuring its cost only)
#
# Builds libstrata.so (release) and benches/workloads/pairs.c, runs the loop
# under `valgrind --tool=callgrind --toggle-collect=measured_loop` once per
# allocator and size, and prints malloc, free and pair: the inclusive cost of
# the calls the loop made to measured_malloc and measured_free, less the
# same for the baseline run (empty functions in their place), per call. One
# object of the size stays live, so frees never empty a slice or page.
# Instruction counts are deterministic: runs repeat exactly.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
workspace=$(cd "$here/.." && pwd)
target=${CARGO_TARGET_DIR:-$workspace/target}
if [ "${UNHARDENED:-0}" = 1 ]; then
    target=$target/unhardened
    export RUSTFLAGS="${RUSTFLAGS:-} --cfg strata_unhardened"
fi
sizes=${SIZES:-"16 32 256 1024"}
pairs=${PAIRS:-200000}
if [ $# -gt 0 ]; then
    allocators=("$@")
else
    allocators=(glibc strata mimalloc jemalloc tcmalloc)
fi

declare -A library=(
    [glibc]=""
    [strata]="$target/release/libstrata.so"
    [mimalloc]=/usr/lib/x86_64-linux-gnu/libmimalloc.so.2.0
    [jemalloc]=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2
    [tcmalloc]=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4
)
declare -A package=(
    [mimalloc]=libmimalloc2.0
    [jemalloc]=libjemalloc2
    [tcmalloc]=libtcmalloc-minimal4
)

missing=()
command -v valgrind >/dev/null || missing+=(valgrind)
command -v gcc >/dev/null || missing+=(gcc)
for allocator in "${allocators[@]}"; do
    if [ -z "${library[$allocator]+set}" ]; then
        echo "unknown allocator: $allocator (known: ${!library[*]})" >&2
        exit 2
    fi
    if [ -n "${package[$allocator]:-}" ] && [ ! -e "${library[$allocator]}" ]; then
        missing+=("${package[$allocator]}")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} with apt-get" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

(cd "$workspace" && CARGO_TARGET_DIR="$target" cargo build --release --quiet -p strata-shim)
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
bin=$out/pairs
gcc -O2 -g -o "$bin" "$here/workloads/pairs.c"

# Prints "<malloc> <free>": the inclusive cost of the calls measured_loop
# made to its malloc and free functions (measured_* or baseline_*).
measure() {
    local name=$1 size=$2 file="$out/callgrind.$1.$2.out"
    local preload=${library[$name]:-}
    local baseline=()
    if [ "$name" = baseline ]; then
        baseline=(PAIRS_BASELINE=1)
        preload=""
    fi
    env "${baseline[@]}" ${preload:+LD_PRELOAD=$preload} \
        valgrind --tool=callgrind --toggle-collect='measured_loop' \
        --callgrind-out-file="$file" "$bin" "$size" "$pairs" >/dev/null 2>&1
    awk '
        # Names are compressed: "(id) name" the first time, "(id)" after.
        function name(spec,   id) {
            id = spec; sub(/\).*/, ")", id)
            if (spec ~ /\) /) { sub(/^\([0-9]+\) /, "", spec); names[id] = spec }
            return names[id]
        }
        /^fn=/ { f = substr($0, 4); in_loop = (name(f) ~ /^measured_loop/); next }
        /^cfn=/ { c = substr($0, 5); callee = name(c); next }
        /^calls=/ { take = in_loop; next }
        take { cost[callee] += $NF; take = 0 }
        END {
            for (k in cost) {
                if (k ~ /_malloc$/) m += cost[k]
                if (k ~ /_free$/) f += cost[k]
            }
            printf "%d %d\n", m, f
        }' "$file"
}

printf 'callgrind, preloaded into a C loop: %s pairs per run; output in %s\n\n' "$pairs" "$out"
header=$(printf '%-5s %-9s %8s %8s %8s %14s' size allocator malloc free pair "pair÷mimalloc")
echo "$header"
printf '%s\n' "$(printf '%*s' ${#header} '' | tr ' ' -)"
for size in $sizes; do
    read -r base_malloc base_free < <(measure baseline "$size")
    declare -A pair=()
    declare -A row=()
    for allocator in "${allocators[@]}"; do
        read -r m f < <(measure "$allocator" "$size")
        row[$allocator]=$(awk -v m="$m" -v f="$f" -v bm="$base_malloc" -v bf="$base_free" -v n="$pairs" \
            'BEGIN { printf "%8.1f %8.1f %8.1f", (m - bm) / n, (f - bf) / n, (m - bm + f - bf) / n }')
        pair[$allocator]=$(awk -v m="$m" -v f="$f" -v bm="$base_malloc" -v bf="$base_free" -v n="$pairs" \
            'BEGIN { printf "%.2f", (m - bm + f - bf) / n }')
    done
    for allocator in "${allocators[@]}"; do
        ratio=-
        if [ -n "${pair[mimalloc]:-}" ]; then
            ratio=$(awk -v x="${pair[$allocator]}" -v y="${pair[mimalloc]}" 'BEGIN { printf "%.2f", x / y }')
        fi
        printf '%-5s %-9s %s %14s\n' "$size" "$allocator" "${row[$allocator]}" "$ratio"
    done
    unset pair row
done
cat <<'NOTE'

malloc, free: instructions per call inside malloc and free (the PLT jump and
everything the allocator runs), less the same for empty functions called the
same way. pair: their sum.
NOTE
