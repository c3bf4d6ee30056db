# Guest test steps of `make -C kmod qemu-test`: sourced by /init (busybox sh)
# inside the qemu guest; helpers and markers are in scripts/guest-init.sh.
# Host-side expectations on the serial log are in smoke.expect.

memfree() { awk '/^MemFree:/ { print $2 }' /proc/meminfo; }

# busybox insmod retries a failed load with init_module, so a failed
# self-test can be followed by a passing one: each load is also checked for
# a FAILED line.

# self_test_run LABEL [PARAM...]: loads the module with the self-test and
# the given parameters, checks that the self-test passed, shows the
# statistics, and runs the checks named in $CHECKS (commands, one per line,
# run while the module is loaded) before unloading it with nothing left.
self_test_run() {
    label=$1
    shift
    dmesg -c >/dev/null
    step "load, $label" insmod "$MODULE" "$@"
    expect_dmesg 'strata: selftest: passed'
    reject_dmesg 'selftest: FAILED'
    show /sys/kernel/debug/strata/stats
    # A redirected loop (not a pipeline) runs in this shell, so a failed
    # step's exit ends the test.
    while read -r check; do
        if [ -n "$check" ]; then
            step "$label: $check" sh -c "$check"
        fi
    done <<EOF_CHECKS
$CHECKS
EOF_CHECKS
    step "unload, $label" rmmod strata
    expect_dmesg 'strata: unloaded: 0 bytes live, 0 slab pages mapped, 0 pages outstanding'
}

# The self-test (on by default): kthreads on every CPU, GFP_ATOMIC
# allocations from hrtimers, cross-CPU frees, bulk calls, KVec/KBox on
# Strata. The load fails if the self-test fails.
CHECKS="grep -q '^strata ' /proc/modules
grep -qE '^  bytes live +0\$' /sys/kernel/debug/strata/stats"
self_test_run "self-test"

# Fault injection: every 5th page-source request fails. The source must
# have refused requests, and the self-test must pass all the same: the core
# reclaims and retries a refused map once, so the self-test's callers may
# or may not see a failure.
CHECKS="grep -qE '^  refused \(inject\) +[1-9]' /sys/kernel/debug/strata/stats"
self_test_run "fail_every=5" fail_every=5

# Every buddy request above the costly order fails: pages come from
# vmalloc (order-0 pages), and GFP_ATOMIC requests that need a new page fail
# cleanly.
CHECKS="grep -qE '^  from vmalloc +[1-9]' /sys/kernel/debug/strata/stats
grep -qE '^  from buddy +0\$' /sys/kernel/debug/strata/stats"
self_test_run "no_high_order=1" no_high_order=1

# 20 load/unload cycles: no page outstanding, and MemFree comes back.
dmesg -c >/dev/null
before=$(memfree)
i=0
while [ $i -lt 20 ]; do
    step "cycle $i: load" insmod "$MODULE" selftest_iterations=2000
    step "cycle $i: unload" rmmod strata
    i=$((i + 1))
done
after=$(memfree)
echo "STRATA-MEMFREE: before ${before} kB, after ${after} kB, difference $((before - after)) kB"
reject_dmesg 'selftest: FAILED'
step "20 cycles: no page outstanding" sh -c '[ "$(dmesg | grep -c "strata: unloaded: 0 bytes live, 0 slab pages mapped, 0 pages outstanding")" -eq 20 ]'
# MemFree moves with the kernel's own caches; a leak of one Strata page
# per cycle would be 80 MiB.
step "20 cycles: MemFree within 4 MiB" sh -c "[ $((before - after)) -lt 4096 ]"

# A short benchmark against kmalloc, kmem_cache and the bulk API.
step "benchmark" insmod "$MODULE" selftest=0 bench=1 bench_iterations=20000
step "unload" rmmod strata
expect_dmesg 'strata: bench: +4096 B bulk64'
