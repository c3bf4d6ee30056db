//! Real programs give the same output under the Strata shim as without it.
//!
//! Each test runs one real program's scripted workload twice: once on glibc's
//! malloc, once with `LD_PRELOAD=<target>/release/libstrata.so` and
//! `STRATA_STATS=1`. It then checks that
//!
//! 1. the outputs are identical (query results, commit hashes, object files,
//!    replies; not just exit codes), and
//! 2. the preload really took effect: the shim printed its statistics table
//!    on the stderr of the preloaded program.
//!
//! The shim is built on demand (`cargo build --release -p strata-shim`,
//! honouring `CARGO_TARGET_DIR`). Missing programs are installed with
//! `apt-get` when running as root; otherwise the test fails and names the
//! package. Nothing is skipped, and nothing is timed.
//!
//! The workloads themselves live in `strata_tests::real_programs`, shared
//! with `strata-bench compare`.

use strata_tests::real_programs::{assert_same_output, tail, Allocator, Workload};

/// Runs `workload` on glibc and under the shim, and compares the two runs.
fn same_output_under_shim(workload: Workload) {
    let name = workload.name();
    if let Err(message) = workload.ensure_tools() {
        panic!("{name}: a required program is missing: {message}");
    }
    let strata = Allocator::strata().unwrap_or_else(|e| panic!("cannot build the shim: {e}"));
    let baseline = workload
        .run(&Allocator::glibc(), false)
        .unwrap_or_else(|e| panic!("{name} failed without preload: {e}"));
    let preloaded = workload
        .run(&strata, true)
        .unwrap_or_else(|e| panic!("{name} failed under the shim: {e}"));
    assert!(
        !baseline.output.trim().is_empty(),
        "{name} produced no output to compare"
    );
    assert_same_output(name, &baseline, &preloaded, "strata");
    assert!(
        preloaded.printed_stats(),
        "{name}: no statistics table on stderr with STRATA_STATS=1, so the \
         preload did not take effect (or the shim does not print it yet); \
         stderr of the preloaded processes:\n{}",
        tail(&preloaded.diagnostics, 3000)
    );
}

#[test]
fn python3_workload_script() {
    same_output_under_shim(Workload::Python);
}

#[test]
fn python3_workload_script_with_pythonmalloc_malloc() {
    same_output_under_shim(Workload::PythonMalloc);
}

#[test]
fn sqlite3_generated_database() {
    same_output_under_shim(Workload::Sqlite);
}

#[test]
fn git_init_add_commit() {
    same_output_under_shim(Workload::Git);
}

#[test]
fn gcc_compiles_and_links() {
    same_output_under_shim(Workload::Gcc);
}

#[test]
fn redis_server_with_cli_and_benchmark() {
    same_output_under_shim(Workload::Redis);
}
