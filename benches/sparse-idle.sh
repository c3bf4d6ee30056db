#!/usr/bin/env bash
# Memory a service gets back by itself: benches/workloads/sparse_idle.c
# under LD_PRELOAD, Strata beside glibc and the peers. Each run fills 400
# MiB with blocks of one size, frees a random 90%, then serves light
# traffic (no purge or trim call) for two seconds; the table gives the
# anonymous memory after the frees and after the idle time, and the latter
# over the live bytes. Every run checks its surviving blocks' contents.
#
# Usage: benches/sparse-idle.sh [allocator ...]   (default: glibc strata
#        mimalloc jemalloc tcmalloc)
#   env: SIZES="4096 1024 256 64"   block sizes in bytes
#        STRATA_LIB=path            libstrata.so to measure (default: built here)
#        CARGO_TARGET_DIR           honoured
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
workspace=$(cd "$here/.." && pwd)
target=${CARGO_TARGET_DIR:-$workspace/target}
sizes=(${SIZES:-4096 1024 256 64})
if [ $# -gt 0 ]; then allocators=("$@"); else allocators=(glibc strata mimalloc jemalloc tcmalloc); fi
# shellcheck source=benches/preload-peers.sh
source "$here/preload-peers.sh"
prepare_libraries
build_workload sparse_idle

echo "| block size | allocator | after the frees (MiB) | after the idle time (MiB) | idle ÷ live |"
echo "|---:|---|---:|---:|---:|"
for size in "${sizes[@]}"; do
    for allocator in "${allocators[@]}"; do
        lib=$(library "$allocator")
        line=$(env ${lib:+LD_PRELOAD=$lib} "$work_dir/sparse_idle" "$size")
        echo "$line" | awk -v allocator="$allocator" '{
            for (f = 1; f <= NF; f++) { split($f, kv, "="); v[kv[1]] = kv[2] }
            if (v["ok"] != 1) { print "sparse_idle: a surviving block changed under " allocator > "/dev/stderr"; exit 1 }
            printf "| %d | %s | %.1f | %.1f | %.2f |\n", v["size"], allocator, v["freed_kib"] / 1024, v["idle_kib"] / 1024, v["idle_kib"] / v["live_kib"]
        }'
    done
done
