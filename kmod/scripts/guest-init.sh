#!/bin/busybox sh
# /init of the Strata test initramfs (see initramfs.sh). Mounts proc, sys,
# devtmpfs and debugfs, runs /test.sh (a shell fragment sourced in a
# subshell, with the helpers below), prints markers that boot.sh checks, and
# reboots (qemu -no-reboot then exits).
#
# Markers, one a line on the console:
#   STRATA-TEST: BEGIN <test>
#   STRATA-STEP: <desc>: <command>     then STRATA-STEP-OK: <desc>
#                                      or   STRATA-STEP-FAIL: <desc> (exit N)
#   STRATA-TEST: RESULT PASS|FAIL
#   STRATA-TEST: END
#
# Helpers for /test.sh (busybox sh; the first failing step ends the test):
#   step DESC CMD [ARG...]    run CMD, fail the test if it fails
#   expect_dmesg EREGEX       the kernel log has a line matching EREGEX
#   reject_dmesg EREGEX       the kernel log has no line matching EREGEX
#   show FILE...              print files (debugfs, /proc/meminfo, ...)
#   $MODULE                   path of strata.ko in the guest

/bin/busybox mkdir -p /proc /sys /dev /tmp /bin /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t debugfs debugfs /sys/kernel/debug
mount -t tmpfs tmpfs /tmp

MODULE=/lib/modules/strata.ko
export MODULE

step() {
    _desc=$1
    shift
    echo "STRATA-STEP: $_desc: $*"
    "$@"
    _rc=$?
    if [ "$_rc" -eq 0 ]; then
        echo "STRATA-STEP-OK: $_desc"
    else
        echo "STRATA-STEP-FAIL: $_desc (exit $_rc)"
        exit 1
    fi
}

expect_dmesg() {
    step "dmesg has /$1/" sh -c 'dmesg | grep -qE -- "$1"' sh "$1"
}

reject_dmesg() {
    step "dmesg has no /$1/" sh -c '! dmesg | grep -E -- "$1"' sh "$1"
}

show() {
    for _f in "$@"; do
        echo "----- $_f"
        cat "$_f"
    done
    echo "-----"
}

# Problems the kernel reported, whether or not the console printed them yet.
kernel_problems='BUG:|Oops|WARNING:|Kernel panic|Call Trace|possible circular locking|inconsistent lock state|possible recursive locking|DEBUG_LOCKS_WARN_ON|turning off the locking correctness validator|panicked at|general protection fault|sleeping function called from invalid context'

echo "STRATA-TEST: BEGIN $(cat /test.name 2>/dev/null)"
echo "STRATA-TEST: kernel $(uname -r), $(nproc) CPUs"
(
    . /test.sh
)
rc=$?
why="test exit $rc"
if dmesg | grep -E "$kernel_problems" >/tmp/problems; then
    echo "STRATA-TEST: kernel log problems:"
    cat /tmp/problems
    [ "$rc" -eq 0 ] && rc=1
    why="$why, kernel log problems"
fi
if [ "$rc" -eq 0 ]; then
    echo "STRATA-TEST: RESULT PASS"
else
    echo "STRATA-TEST: RESULT FAIL ($why)"
fi
echo "STRATA-TEST: END"
sync
reboot -f
# Not reached; if reboot fails, init exits and the kernel panics (panic=-1).
sleep 5
