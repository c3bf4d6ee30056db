//! `strata-bench soak`, short: the load runs on Strata through the C API
//! and ends with no corruption, no failed allocation or fork child, and no
//! live bytes left. No timing is asserted: the duration only sets how long
//! the load runs.

use std::process::{Command, Output};

mod support;

fn soak(args: &[&str]) -> (Output, String) {
    support::run(
        Command::new(env!("CARGO_BIN_EXE_strata-bench"))
            .arg("soak")
            .args(args)
            .env_remove("LD_PRELOAD")
            .env_remove("STRATA_SOAK_PRELOADED"),
    )
}

/// The value of the `name: value` line of the summary.
fn field(output: &Output, name: &str, text: &str) -> String {
    let prefix = format!("{name}: ");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix(&prefix).map(str::to_string))
        .unwrap_or_else(|| panic!("no `{name}:` line\n{text}"))
}

fn number(output: &Output, name: &str, text: &str) -> i64 {
    field(output, name, text)
        .parse()
        .unwrap_or_else(|_| panic!("`{name}` is not a number\n{text}"))
}

#[test]
fn a_short_soak_passes_every_check() {
    let (output, text) = soak(&["--seconds", "5", "--threads", "4"]);
    assert!(output.status.success(), "the soak failed\n{text}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.starts_with("soak: ")
            && stdout.contains("malloc served by ")
            && stdout.contains("libstrata.so"),
        "{text}"
    );
    assert_eq!(field(&output, "result", &text), "ok", "{text}");
    assert_eq!(number(&output, "corruptions", &text), 0, "{text}");
    assert_eq!(number(&output, "failed allocations", &text), 0, "{text}");
    assert_eq!(number(&output, "failed forks", &text), 0, "{text}");
    assert_eq!(
        number(&output, "live bytes left by the load", &text),
        0,
        "{text}"
    );
    assert_eq!(
        number(&output, "strata live bytes before", &text),
        number(&output, "strata live bytes after", &text),
        "{text}"
    );
    // The load did what it is for: every kind of work happened.
    assert!(number(&output, "operations", &text) > 0, "{text}");
    assert!(number(&output, "cross-thread frees", &text) > 0, "{text}");
    assert!(number(&output, "reallocs", &text) > 0, "{text}");
    assert!(
        number(&output, "threads started", &text) > 4,
        "no thread churn\n{text}"
    );
    assert!(number(&output, "forks", &text) > 0, "{text}");
    assert!(number(&output, "malloc_trim calls", &text) > 0, "{text}");
    let peak = number(&output, "peak rss KiB", &text);
    let end = number(&output, "end rss KiB", &text);
    assert!(
        end <= number(&output, "end rss bound KiB", &text) && end < peak,
        "{text}"
    );
    assert!(
        !stdout.contains("problem: ") && !stdout.contains("failed check: "),
        "{text}"
    );
}

/// The checks are live: one byte flipped in one object is found, reported
/// and fails the run.
#[test]
fn a_planted_corruption_is_found_and_fails_the_run() {
    let (output, text) = soak(&["--seconds", "2", "--threads", "2", "--plant-corruption"]);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert_eq!(number(&output, "corruptions", &text), 1, "{text}");
    assert_eq!(field(&output, "result", &text), "FAILED", "{text}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("CORRUPTION: "),
        "{text}"
    );
}

/// A library that is not Strata does not pass for it.
#[test]
fn the_soak_refuses_to_run_when_strata_does_not_serve_malloc() {
    let (output, text) = soak(&[
        "--seconds",
        "1",
        "--library",
        "/lib/x86_64-linux-gnu/libm.so.6",
    ]);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("Strata is not serving malloc"),
        "expected the refusal\n{text}"
    );
    assert!(output.stdout.is_empty(), "{text}");
}

#[test]
fn bad_arguments_are_refused_with_the_usage() {
    for args in [&["--threads", "0"][..], &["--minutes"], &["--fast"]] {
        let (output, text) = soak(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}\n{text}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("usage: strata-bench soak"),
            "{args:?}\n{text}"
        );
    }
}
