//! `strata-workloads` itself: the memory trace of the `fragmentation`
//! workload, asked for with `STRATA_WORKLOAD_MEMORY`, goes to stderr only,
//! one line per phase, and leaves the compared output unchanged.

use std::process::{Command, Output};

/// Runs the tiny `fragmentation` workload with `STRATA_WORKLOAD_MEMORY` set
/// to `memory` (or unset), under the process's own malloc.
fn fragmentation(memory: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_strata-workloads"));
    command.args(["fragmentation", "--size", "tiny"]).env_remove("LD_PRELOAD");
    match memory {
        Some(value) => command.env("STRATA_WORKLOAD_MEMORY", value),
        None => command.env_remove("STRATA_WORKLOAD_MEMORY"),
    };
    let output = command.output().expect("run strata-workloads");
    assert!(output.status.success(), "the workload failed: {output:?}");
    output
}

/// The kilobytes of a `/proc/self/status` value such as `1234 kB`.
fn kilobytes(value: &str) -> u64 {
    let number = value.strip_suffix(" kB").unwrap_or_else(|| panic!("not in kB: {value:?}"));
    number.parse().unwrap_or_else(|_| panic!("not a number: {value:?}"))
}

#[test]
fn the_memory_trace_gives_each_phase_on_stderr_and_leaves_the_output_alone() {
    let plain = fragmentation(None);
    let traced = fragmentation(Some("1"));
    assert_eq!(traced.stdout, plain.stdout, "the trace changed the compared output");
    assert!(plain.stderr.is_empty(), "stderr without the trace: {:?}", String::from_utf8_lossy(&plain.stderr));
    assert!(fragmentation(Some("0")).stderr.is_empty(), "STRATA_WORKLOAD_MEMORY=0 still traced");

    let stderr = String::from_utf8_lossy(&traced.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let phases = ["the first mix", "freeing 90%", "the second mix"];
    assert_eq!(lines.len(), phases.len(), "one line per phase: {stderr}");
    let mut last_peak = 0;
    for (line, phase) in lines.iter().zip(phases) {
        let rest = line
            .strip_prefix(&format!("memory after {phase}: rss "))
            .unwrap_or_else(|| panic!("unexpected line {line:?}"));
        let (rss, peak) = rest.split_once(", peak rss ").unwrap_or_else(|| panic!("no peak in {line:?}"));
        let (rss, peak) = (kilobytes(rss), kilobytes(peak));
        assert!(rss > 0 && rss <= peak, "{line}");
        assert!(peak >= last_peak, "the peak went down: {line}");
        last_peak = peak;
    }
}
