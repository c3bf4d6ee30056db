# Guest test steps of `make -C kmod qemu-test`: sourced by /init (busybox sh)
# inside the qemu guest; helpers and markers are in scripts/guest-init.sh.
# Host-side expectations on the serial log are in smoke.expect.

memfree() { awk '/^MemFree:/ { print $2 }' /proc/meminfo; }

# busybox insmod retries a failed load with init_module, so a failed
# self-test can be followed by a passing one: each load is also checked for
# a FAILED line.

# The self-test (on by default): kthreads on every CPU, GFP_ATOMIC
# allocations from hrtimers, cross-CPU frees, bulk calls, KVec/KBox on
# Strata. The load fails if the self-test fails.
step "load with the self-test" insmod "$MODULE"
expect_dmesg 'strata: selftest: passed'
reject_dmesg 'selftest: FAILED'
step "listed" grep '^strata ' /proc/modules
show /sys/kernel/debug/strata/stats
step "stats: no bytes live" grep -qE '^  bytes live +0$' /sys/kernel/debug/strata/stats
step "unload" rmmod strata
expect_dmesg 'strata: unloaded: 0 bytes live, 0 slab pages mapped, 0 pages outstanding'

# Fault injection: every 5th page-source request fails. Failures must be
# seen, counted and survived.
dmesg -c >/dev/null
step "load, fail_every=5" insmod "$MODULE" fail_every=5
expect_dmesg 'strata: selftest: passed'
reject_dmesg 'selftest: FAILED'
step "failures were seen" sh -c 'dmesg | grep -E "strata: selftest: .* [1-9][0-9]* failures seen"'
step "unload" rmmod strata
expect_dmesg 'strata: unloaded: 0 bytes live, 0 slab pages mapped, 0 pages outstanding'

# Every buddy request above the costly order fails: pages come from
# vmalloc (order-0 pages), and GFP_ATOMIC requests that need a new page fail
# cleanly.
dmesg -c >/dev/null
step "load, no_high_order=1" insmod "$MODULE" no_high_order=1
expect_dmesg 'strata: selftest: passed'
reject_dmesg 'selftest: FAILED'
step "pages came from vmalloc" sh -c 'grep -E "^  from vmalloc +[1-9]" /sys/kernel/debug/strata/stats && grep -E "^  from buddy +0$" /sys/kernel/debug/strata/stats'
step "unload" rmmod strata
expect_dmesg 'strata: unloaded: 0 bytes live, 0 slab pages mapped, 0 pages outstanding'

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
