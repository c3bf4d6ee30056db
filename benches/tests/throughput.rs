//! `throughput`'s options: a short run with a chosen queue depth and way of
//! waiting reports both and its workload, and a depth of 0 or an unknown way
//! of waiting is refused. No timing is asserted.

use std::process::{Command, Output};

mod support;

fn throughput(args: &[&str]) -> (Output, String) {
    support::run(Command::new(env!("CARGO_BIN_EXE_throughput")).args(args))
}

#[test]
fn a_chosen_queue_depth_is_used_and_reported() {
    let (output, text) = throughput(&[
        "--depth",
        "3",
        "--rounds",
        "1",
        "--ms",
        "20",
        "--workloads",
        "xthread-1",
        "--allocators",
        "strata",
    ]);
    assert!(output.status.success(), "{text}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout
            .lines()
            .next()
            .unwrap_or("")
            .ends_with("cross-thread queues 3 batches deep, waits poll before blocking"),
        "{text}"
    );
    let row = stdout
        .lines()
        .find(|line| line.split_whitespace().take(2).eq(["xthread-1", "strata"]));
    let rate: f64 = row
        .and_then(|line| line.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(rate > 0.0, "a positive rate for xthread-1\n{text}");
}

#[test]
fn a_depth_of_zero_is_refused() {
    let (output, text) = throughput(&["--depth", "0"]);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--depth: at least 1"),
        "{text}"
    );
}

#[test]
fn waits_that_block_at_once_are_used_and_reported() {
    let (output, text) = throughput(&[
        "--wait",
        "block",
        "--rounds",
        "1",
        "--ms",
        "20",
        "--workloads",
        "xthread-sym",
        "--allocators",
        "strata",
    ]);
    assert!(output.status.success(), "{text}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout
            .lines()
            .next()
            .unwrap_or("")
            .ends_with("cross-thread queues 8 batches deep, waits block at once"),
        "{text}"
    );
    assert!(
        stdout
            .lines()
            .any(|line| line.split_whitespace().take(2).eq(["xthread-sym", "strata"])),
        "a row for xthread-sym\n{text}"
    );
}

#[test]
fn an_unknown_way_of_waiting_is_refused() {
    let (output, text) = throughput(&["--wait", "sometimes"]);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--wait: `poll` or `block`, not `sometimes`"),
        "{text}"
    );
}
