#!/usr/bin/env bash
# Everything `make -C kmod qemu-test` does, from a fresh machine (as root):
# the kernel (scripts/kernel.sh builds or reuses it), the vendored crates,
# strata.ko, the panic-site report, the initramfs, the qemu boot and its
# checks. Prints the time of each step; the last line is
# "qemu-test: PASS" or "qemu-test: FAIL (<step>)".
#
# Environment (all optional): KDIR, OUT (default kmod/out), TEST (default
# kmod/tests/smoke.sh; expectations in the same path with .expect),
# QEMU_TIMEOUT (600), MAX_PANIC_SITES (fail when the module has more).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
kmod=$(dirname "$here")
out=${OUT:-$kmod/out}
test=${TEST:-$kmod/tests/smoke.sh}
expect=${test%.sh}.expect
kdir=${KDIR:-}

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
    times+=("$(printf '%-12s %4ds' "$current" $((SECONDS - t0)))")
}

kernel() { kdir=$(bash "$here/kernel.sh" | tail -n1); echo "kernel build: $kdir" >&2; }
[[ -n $kdir ]] || run kernel kernel
run deps bash "$here/deps.sh"
run module make -C "$kmod" --no-print-directory module KDIR="$kdir"
panic_sites() { # the list goes to $out/panic-sites.txt, the summary to the output
    mkdir -p "$out"
    local rc=0
    bash "$here/panic-sites.sh" ${MAX_PANIC_SITES:+--max "$MAX_PANIC_SITES"} "$kmod/strata.ko" \
        >"$out/panic-sites.txt" || rc=$?
    sed -n '/^--- by panic function/,$p' "$out/panic-sites.txt"
    echo "(sites listed in $out/panic-sites.txt)"
    return $rc
}
run panic-sites panic_sites
run initramfs bash "$here/initramfs.sh" --module "$kmod/strata.ko" --test "$test" -o "$out/initramfs.cpio.gz"
expect_args=()
[[ -f $expect ]] && expect_args=(--expect-file "$expect")
run boot bash "$here/boot.sh" --kernel "$kdir/arch/x86/boot/bzImage" --initrd "$out/initramfs.cpio.gz" \
    --log "$out/serial.log" --timeout "${QEMU_TIMEOUT:-600}" "${expect_args[@]}"
current=
