# Sourced by the benchmarks that run a program under LD_PRELOAD beside the
# peers (large.sh, sparse-idle.sh, cold-list.sh). Expects $workspace,
# $target (the cargo target directory) and the array `allocators` (names:
# glibc strata mimalloc jemalloc tcmalloc, or NAME=/path/to/lib.so for a
# library of your own).
#
#   library NAME         the library to preload for NAME (empty for glibc)
#   prepare_libraries    builds the shim unless STRATA_LIB names one, and
#                        fails unless every library asked for is installed
#   build_workload NAME  compiles benches/workloads/NAME.c to $work_dir/NAME,
#                        in a temporary directory $work_dir removed on exit
#                        (also expects $here, the benches directory)

libdir=/usr/lib/x86_64-linux-gnu

library() {
    case $1 in
        glibc) echo "" ;;
        strata) echo "${STRATA_LIB:-$target/release/libstrata.so}" ;;
        mimalloc) echo "$libdir/libmimalloc.so.2.0" ;;
        jemalloc) echo "$libdir/libjemalloc.so.2" ;;
        tcmalloc) echo "$libdir/libtcmalloc_minimal.so.4" ;;
        *=*) echo "${1#*=}" ;;
        *) echo "unknown allocator $1" >&2; exit 2 ;;
    esac
}

prepare_libraries() {
    local allocator lib
    if [ -z "${STRATA_LIB:-}" ]; then
        (cd "$workspace" && CARGO_TARGET_DIR="$target" cargo build --release --quiet -p strata-shim)
    fi
    for allocator in "${allocators[@]}"; do
        lib=$(library "$allocator")
        if [ -n "$lib" ] && [ ! -f "$lib" ]; then
            echo "$lib is missing (tests/install-deps.sh installs the peers)" >&2
            exit 1
        fi
    done
}

build_workload() {
    work_dir=$(mktemp -d)
    trap 'rm -rf "$work_dir"' EXIT
    gcc -O2 -Wall -o "$work_dir/$1" "$here/workloads/$1.c"
}
