//! `throughput`'s options: a short run with a chosen queue depth and way of
//! waiting reports both and its workload, and a depth of 0 or an unknown way
//! of waiting is refused. No timing is asserted.

use std::process::{Command, Output};

mod support;

fn throughput(args: &[&str]) -> (Output, String) {
    support::run(Command::new(env!("CARGO_BIN_EXE_throughput")).args(args))
}

/// Runs one short round of `workload` for Strata with `options` added, and
/// checks that it succeeds, that its header line ends with `header_end`,
/// and that it reports a positive rate for the workload.
fn short_run(options: &[&str], workload: &str, header_end: &str) {
    let mut args = options.to_vec();
    args.extend(["--rounds", "1", "--ms", "20", "--workloads", workload, "--allocators", "strata"]);
    let (output, text) = throughput(&args);
    assert!(output.status.success(), "{text}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let header = stdout.lines().next().unwrap_or("");
    assert!(header.ends_with(header_end), "{text}");
    let rate: f64 = stdout
        .lines()
        .find(|line| line.split_whitespace().take(2).eq([workload, "strata"]))
        .and_then(|line| line.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(rate > 0.0, "a positive rate for {workload}\n{text}");
}

/// Checks that `args` are refused with exit status 2 and `message`.
fn refused(args: &[&str], message: &str) {
    let (output, text) = throughput(args);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(String::from_utf8_lossy(&output.stderr).contains(message), "{text}");
}

#[test]
fn a_chosen_queue_depth_is_used_and_reported() {
    short_run(
        &["--depth", "3"],
        "xthread-1",
        "cross-thread queues 3 batches deep, waits poll before blocking",
    );
}

#[test]
fn waits_that_block_at_once_are_used_and_reported() {
    short_run(
        &["--wait", "block"],
        "xthread-sym",
        "cross-thread queues 8 batches deep, waits block at once",
    );
}

#[test]
fn a_depth_of_zero_is_refused() {
    refused(&["--depth", "0"], "--depth: at least 1");
}

#[test]
fn an_unknown_way_of_waiting_is_refused() {
    refused(&["--wait", "sometimes"], "--wait: `poll` or `block`, not `sometimes`");
}
