# Guest steps on the release kernel (no lockdep): the self-test once more,
# then the benchmark against kmalloc, kmem_cache and kmem_cache_alloc_bulk.
step "load with the self-test" insmod "$MODULE"
expect_dmesg 'strata: selftest: passed'
reject_dmesg 'selftest: FAILED'
step "unload" rmmod strata
step "benchmark" insmod "$MODULE" selftest=0 bench=1 bench_iterations=50000
step "unload" rmmod strata
expect_dmesg 'strata: unloaded: 0 bytes live, 0 slab pages mapped, 0 pages outstanding'
expect_dmesg 'strata: bench: +4096 B xcpu'
