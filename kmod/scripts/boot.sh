#!/usr/bin/env bash
# Boots the Strata test initramfs in qemu (TCG, no terminal) and checks the
# serial log.
#
#   bash kmod/scripts/boot.sh --kernel BZIMAGE --initrd IMG --log LOG \
#       [--expect-file FILE] [--expect EREGEX]... [--timeout SECONDS] [--smp N] [--mem SIZE] [--append ARGS]
#
# Fails (exit 1) on: qemu timing out or failing; any of BUG:, Oops,
# WARNING:, lockdep reports, Kernel panic, Call Trace, a Rust panic in the
# log; a missing END or RESULT PASS marker (guest-init.sh); a failed step;
# the guest running fewer CPUs than --smp; an --expect regex (or a line of
# --expect-file) that matches no line. The harness's own STRATA- lines
# (which quote test regexes) are left out of the last and the first checks.
# The last line is "boot.sh: PASS" or "boot.sh: FAIL: <reasons>".
set -uo pipefail

kernel= initrd= log= timeout=600 smp=2 mem=512M append= expects=()
while (($#)); do
    case $1 in
    --kernel) kernel=$2; shift 2 ;;
    --initrd) initrd=$2; shift 2 ;;
    --log) log=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    --smp) smp=$2; shift 2 ;;
    --mem) mem=$2; shift 2 ;;
    --append) append=$2; shift 2 ;;
    --expect) expects+=("$2"); shift 2 ;;
    --expect-file)
        while IFS= read -r line; do
            [[ -z $line || $line == \#* ]] || expects+=("$line")
        done <"$2"
        shift 2
        ;;
    *) echo "usage: see the head of $0" >&2; exit 2 ;;
    esac
done
[[ -f $kernel && -f $initrd && -n $log ]] || { echo "boot.sh: need --kernel, --initrd and --log (existing files)" >&2; exit 2; }
mkdir -p "$(dirname "$log")"
rm -f "$log"

# tinyconfig has no ACPI: 'reboot -f' resets, and -no-reboot turns the reset
# into qemu's exit. Without ACPI the kernel finds CPUs in the BIOS MP table,
# which lists one CPU per socket: so one socket per CPU (a plain -smp 2 makes
# 2 cores of one socket, and the guest boots with 1 CPU). /dev/kvm cannot
# run this kernel: TCG.
cmd=(qemu-system-x86_64 -accel tcg -smp "$smp,sockets=$smp,cores=1,threads=1" -m "$mem"
    -kernel "$kernel" -initrd "$initrd"
    -append "console=ttyS0 panic=-1 loglevel=7 $append"
    -display none -vga none -monitor none -serial "file:$log" -no-reboot)
echo "boot.sh: ${cmd[*]}" >&2
start=$SECONDS
timeout --kill-after=10 "$timeout" "${cmd[@]}" </dev/null >"$log.qemu" 2>&1
rc=$?
elapsed=$((SECONDS - start))
touch "$log"

fail=()
if ((rc == 124 || rc == 137)); then
    fail+=("timed out after ${timeout}s")
elif ((rc != 0)); then
    fail+=("qemu exited $rc: $(head -c 300 "$log.qemu")")
fi

# Kernel problems. Lockdep's boot banner (its "Lock dependency validator"
# lines, the table sizes) is not a report.
problems='BUG:|Oops|WARNING:|Kernel panic|Call Trace|lockdep|possible circular locking|inconsistent lock state|possible recursive locking|DEBUG_LOCKS_WARN_ON|turning off the locking correctness validator|panicked at|general protection fault'
benign='Lock dependency validator|RCU lockdep checking is enabled|lockdep: fixing up|^.{0,20}\.\.\. MAX_LOCK|^.{0,20}\.\.\. (CLASSHASH|CHAINHASH|memory used by lock)|lock dependency|STRATA-TEST: kernel log problems'
# The harness's own STRATA- lines quote test regexes: they are not looked at.
hits=$(grep -nE "$problems" "$log" | grep -vE "^[0-9]+:STRATA-" | grep -vE "$benign" || true)
if [[ -n $hits ]]; then
    fail+=("kernel problems in the log ($(wc -l <<<"$hits") lines)")
fi

steps_ok=$(grep -c '^STRATA-STEP-OK:' "$log")
steps_failed=$(grep '^STRATA-STEP-FAIL:' "$log" || true)
[[ -n $steps_failed ]] && fail+=("a test step failed")
grep -q '^STRATA-TEST: END' "$log" || fail+=("no END marker")
cpus=$(grep -m1 -oE '^STRATA-TEST: kernel .*, [0-9]+ CPUs' "$log" | grep -oE '[0-9]+ CPUs' | cut -d' ' -f1)
[[ -z $cpus || $cpus == "$smp" ]] || fail+=("the guest runs $cpus CPUs, not $smp")
grep -q '^STRATA-TEST: RESULT PASS' "$log" || fail+=("no RESULT PASS marker")
missing=()
kernel_lines=$(grep -v '^STRATA-' "$log")
for e in "${expects[@]}"; do
    grep -qE -- "$e" <<<"$kernel_lines" || missing+=("$e")
done
((${#missing[@]})) && fail+=("${#missing[@]} expected line(s) missing")

echo "===== boot.sh summary"
echo "log:      $log ($(wc -l <"$log") lines)"
echo "qemu:     exit $rc after ${elapsed}s (smp $smp, mem $mem, timeout ${timeout}s)"
echo "guest:    $(grep -m1 '^STRATA-TEST: kernel' "$log" | cut -d' ' -f3-)"
echo "test:     $(grep -m1 '^STRATA-TEST: BEGIN' "$log" | cut -d' ' -f3-)"
echo "steps:    $steps_ok ok${steps_failed:+, failed:}"
[[ -n $steps_failed ]] && sed 's/^/          /' <<<"$steps_failed"
echo "result:   $(grep -m1 '^STRATA-TEST: RESULT' "$log" | cut -d' ' -f3- || true)"
echo "expected: $((${#expects[@]} - ${#missing[@]}))/${#expects[@]} lines found"
for e in "${missing[@]}"; do echo "          missing: /$e/"; done
if [[ -n $hits ]]; then
    echo "problems:"
    head -40 <<<"$hits" | sed 's/^/          /'
fi
if ((${#fail[@]})); then
    echo "----- last 40 lines of $log"
    tail -n 40 "$log"
    echo "-----"
    reasons=$(printf '%s; ' "${fail[@]}")
    echo "boot.sh: FAIL: ${reasons%; }"
    exit 1
fi
echo "boot.sh: PASS"
