#!/usr/bin/env bash
# Everything `make -C kmod qemu-test` (and `make -C kmod bench`) does, from
# a fresh machine (as root): the kernel (scripts/kernel.sh builds or reuses
# it), the vendored crates, strata.ko, the panic-site report, the initramfs,
# the qemu boot and its checks. Prints the time of each step; the last line
# is "qemu-test: PASS" or "qemu-test: FAIL (<step>)".
#
#   test (default): the debug kernel (lockdep, sleep-in-atomic checks) with
#       tests/smoke.sh: the self-test, fault injection, 20 load/unload
#       cycles and a short benchmark, with every lock-order or context
#       mistake reported;
#   bench (MODE=bench): the release kernel with tests/bench.sh: the
#       self-test again and the benchmark against kmalloc, kmem_cache and
#       kmem_cache_alloc_bulk, whose lines are copied to out/bench.txt.
#
# Environment (all optional): MODE (test or bench), OUT (default kmod/out),
# TEST (a test file to run on the debug kernel instead of tests/smoke.sh;
# expectations in the same path with .expect), QEMU_TIMEOUT (600),
# MAX_PANIC_SITES (default 3, see kmod/README.md: fail when the module has more).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
kmod=$(dirname "$here")
out=${OUT:-$kmod/out}
max_panic_sites=${MAX_PANIC_SITES:-3}

times=()
current=
finish() {
    local rc=$?
    echo "===== qemu-test timings"
    printf '  %s\n' "${times[@]}"
    if ((rc == 0)); then
        echo "qemu-test: PASS"
    else
        echo "qemu-test: FAIL (${current:-setup}, exit $rc)"
    fi
}
trap finish EXIT

run() { # run NAME CMD...: a timed step
    current=$1
    shift
    echo "===== qemu-test: $current" >&2
    local t0=$SECONDS
    "$@"
    times+=("$(printf '%-22s %4ds' "$current" $((SECONDS - t0)))")
}

# boot_with VARIANT TEST: the module for that kernel, then one boot.
boot_with() {
    local variant=$1 test=$2 kdir
    local flag=()
    [[ $variant == debug ]] && flag=(--debug)
    kdir=$(bash "$here/kernel.sh" "${flag[@]}" | tail -n1)
    echo "kernel build ($variant): $kdir" >&2
    make -C "$kmod" --no-print-directory module KDIR="$kdir"
    mkdir -p "$out/$variant"
    local rc=0
    bash "$here/panic-sites.sh" --max "$max_panic_sites" "$kmod/strata.ko" >"$out/$variant/panic-sites.txt" || rc=$?
    sed -n '/^--- by panic function/,$p' "$out/$variant/panic-sites.txt"
    echo "(sites listed in $out/$variant/panic-sites.txt)"
    ((rc == 0)) || return $rc
    bash "$here/initramfs.sh" --module "$kmod/strata.ko" --test "$test" -o "$out/$variant/initramfs.cpio.gz"
    local expect=${test%.sh}.expect expect_args=()
    [[ -f $expect ]] && expect_args=(--expect-file "$expect")
    bash "$here/boot.sh" --kernel "$kdir/arch/x86/boot/bzImage" --initrd "$out/$variant/initramfs.cpio.gz" \
        --log "$out/$variant/serial.log" --timeout "${QEMU_TIMEOUT:-600}" "${expect_args[@]}"
}

if [[ ${MODE:-test} == bench ]]; then
    run "release kernel" bash "$here/kernel.sh"
    run "deps" bash "$here/deps.sh"
    run "release kernel: bench" boot_with release "$kmod/tests/bench.sh"
    grep -E 'strata: (bench|selftest):' "$out/release/serial.log" | sed 's/^strata: //' >"$out/bench.txt"
    echo "benchmark on the release kernel (also in $out/bench.txt):"
    grep 'bench:' "$out/bench.txt"
else
    test=${TEST:-$kmod/tests/smoke.sh}
    run "debug kernel" bash "$here/kernel.sh" --debug
    run "deps" bash "$here/deps.sh"
    run "debug kernel: $(basename "$test")" boot_with debug "$test"
fi
current=
