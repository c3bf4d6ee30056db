//! The test command's step runner (`tests/steps.sh`, sourced by
//! `tests/run-all.sh`): every step runs, the summary counts the real passes
//! and failures and names the failed steps, and the status is non-zero on a
//! failure.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `body` in bash after sourcing the step runner.
fn run_steps(body: &str) -> Output {
    let steps = Path::new(env!("CARGO_MANIFEST_DIR")).join("steps.sh");
    Command::new("bash")
        .arg("-c")
        .arg(format!("set -uo pipefail; source '{}'; {body}", steps.display()))
        .output()
        .expect("bash runs")
}

#[test]
fn an_induced_failure_is_counted_named_and_fails_the_run() {
    let output = run_steps("step first true; step broken false; step last true; finish");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    assert!(stdout.contains("==> broken: FAILED"), "{stdout}");
    // The step after the failure still ran.
    assert!(stdout.contains("==> last: ok"), "{stdout}");
    assert!(stdout.contains("failed step: broken\n"), "{stdout}");
    assert!(stdout.trim_end().ends_with("run-all: 2 passed, 1 failed"), "{stdout}");
}

#[test]
fn a_clean_run_passes_and_says_so() {
    let output = run_steps("step first true; step second true; finish");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(!stdout.contains("failed step"), "{stdout}");
    assert!(stdout.trim_end().ends_with("run-all: 2 passed, 0 failed"), "{stdout}");
}
