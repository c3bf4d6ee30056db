# Guest test steps of `make -C kmod qemu-test`: sourced by /init (busybox sh)
# inside the qemu guest; helpers and markers are in scripts/guest-init.sh.
# Host-side expectations on the serial log are in smoke.expect.

step "load" insmod "$MODULE" size=100
expect_dmesg 'strata: class_of\(100, 8\) = Some\('
step "listed" grep '^strata ' /proc/modules
step "unload" rmmod strata
expect_dmesg 'strata: unloaded'

step "load, size=40000" insmod "$MODULE" size=40000
expect_dmesg 'strata: class_of\(40000, 8\) = None'
step "unload" rmmod strata

step "debugfs" ls /sys/kernel/debug
show /proc/meminfo
