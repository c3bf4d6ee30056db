//! Criterion micro-benchmarks: Strata against mimalloc and glibc (and
//! Strata's `no_std` front), single-threaded, through `GlobalAlloc`.
//!
//! - `pair/<size>`: one allocation immediately freed (the fast path).
//! - `realloc_growth`: a buffer grown from 16 bytes to 64 KiB by doubling,
//!   as a `Vec` grows, then freed.
//! - `batch/<size>`: 1000 allocations, then 1000 frees in allocation order.
//!
//! Short measurement times keep a full run around a minute; these are for
//! spotting regressions by eye, not for CI.

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_main, BenchmarkId, Criterion, Throughput};
use strata_benches::{contenders, with_contender, Contender};

/// The allocators compared here.
const CONTENDERS: [Contender; 4] = [
    Contender::Strata,
    Contender::StrataShared,
    Contender::Mimalloc,
    Contender::System,
];

fn pair(c: &mut Criterion) {
    contenders::init();
    for size in [16usize, 64, 256, 1024, 4096] {
        let layout = Layout::from_size_align(size, 8).expect("valid layout");
        let mut group = c.benchmark_group(format!("pair/{size}"));
        group.throughput(Throughput::Elements(1));
        for contender in CONTENDERS {
            with_contender!(contender, |a| {
                group.bench_function(contender.name(), |b| {
                    b.iter(|| unsafe {
                        let p = a.alloc(layout);
                        a.dealloc(black_box(p), layout);
                    })
                });
            });
        }
        group.finish();
    }
}

fn realloc_growth(c: &mut Criterion) {
    contenders::init();
    let mut group = c.benchmark_group("realloc_growth");
    for contender in CONTENDERS {
        with_contender!(contender, |a| {
            group.bench_function(BenchmarkId::from_parameter(contender.name()), |b| {
                b.iter(|| unsafe {
                    let mut layout = Layout::from_size_align(16, 8).expect("valid layout");
                    let mut p = a.alloc(layout);
                    p.write(1);
                    while layout.size() < 64 * 1024 {
                        let new_size = layout.size() * 2;
                        p = a.realloc(p, layout, new_size);
                        layout = Layout::from_size_align(new_size, 8).expect("valid layout");
                        p.add(new_size - 1).write(1);
                    }
                    a.dealloc(black_box(p), layout);
                })
            });
        });
    }
    group.finish();
}

fn batch(c: &mut Criterion) {
    contenders::init();
    const COUNT: usize = 1000;
    let mut pointers: Vec<*mut u8> = Vec::with_capacity(COUNT);
    for size in [32usize, 256] {
        let layout = Layout::from_size_align(size, 8).expect("valid layout");
        let mut group = c.benchmark_group(format!("batch/{size}"));
        group.throughput(Throughput::Elements(COUNT as u64));
        for contender in CONTENDERS {
            with_contender!(contender, |a| {
                group.bench_function(contender.name(), |b| {
                    b.iter(|| unsafe {
                        for _ in 0..COUNT {
                            pointers.push(a.alloc(layout));
                        }
                        for p in pointers.drain(..) {
                            a.dealloc(black_box(p), layout);
                        }
                    })
                });
            });
        }
        group.finish();
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20)
}

/// Runs every group (what `criterion_group!` would generate, documented).
fn benches() {
    let mut criterion = config().configure_from_args();
    pair(&mut criterion);
    realloc_growth(&mut criterion);
    batch(&mut criterion);
}

criterion_main!(benches);
