//! `strata-bench compare` end to end, on a tiny configuration: one own
//! workload and one real program, under glibc and Strata, one round. The
//! report's files must exist and hold the expected rows, and every output
//! must have matched glibc's. A workload binary whose output changes from
//! run to run must make the command fail and the report say so.
//!
//! The shim is built on demand (`cargo build --release -p strata-shim`);
//! sqlite3 is installed with apt-get when missing and running as root.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use strata_benches::compare::{CSV, CSV_HEADER, MARKDOWN, RSS_SVG, RUNS_CSV, TIME_SVG};

/// A fresh directory under the system's temporary directory.
fn scratch(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "strata-compare-test-{label}-{}",
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create the scratch directory");
    dir
}

/// Runs `strata-bench compare ARGS` with `workloads` as the workload binary.
fn compare(args: &[&str], workloads: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata-bench"))
        .arg("compare")
        .args(args)
        .env("STRATA_WORKLOADS", workloads)
        .env("CI", "true")
        .output()
        .expect("run strata-bench")
}

/// Runs `strata-bench compare ARGS` with our own workload binary, asserts
/// that it succeeded, and returns its stdout and stderr.
fn compare_succeeds(args: &[&str]) -> (String, String) {
    let output = compare(args, Path::new(env!("CARGO_BIN_EXE_strata-workloads")));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "compare failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    (stdout, stderr)
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[test]
fn tiny_comparison_writes_the_whole_report() {
    let out = scratch("tiny");
    let (stdout, stderr) = compare_succeeds(
        &[
            "--rounds",
            "1",
            "--size",
            "tiny",
            "--workloads",
            "fragmentation,sqlite",
            "--allocators",
            "glibc,strata",
            "--out",
            out.to_str().expect("a UTF-8 path"),
        ],
    );
    // Plain progress lines in CI: one per run, 2 warm-ups and 4 measured.
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("[")).count(),
        6,
        "{stderr}"
    );

    // The CSV: the header, then one row per workload and allocator.
    let csv = read(&out.join(CSV));
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some(CSV_HEADER));
    let columns: Vec<&str> = CSV_HEADER.split(',').collect();
    let column = |name: &str| columns.iter().position(|c| *c == name).expect(name);
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let keys: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r[column("workload")],
                r[column("kind")],
                r[column("allocator")],
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            ("fragmentation", "own", "glibc"),
            ("fragmentation", "own", "strata"),
            ("sqlite", "program", "glibc"),
            ("sqlite", "program", "strata"),
        ]
    );
    for row in &rows {
        assert_eq!(row.len(), columns.len(), "{row:?}");
        assert_eq!(row[column("runs")], "1", "{row:?}");
        assert_eq!(row[column("ok_runs")], "1", "{row:?}");
        let time: f64 = row[column("median_time_s")].parse().expect("a time");
        let rss: f64 = row[column("median_peak_rss_kib")].parse().expect("an RSS");
        assert!(time > 0.0 && rss > 0.0, "{row:?}");
        let vs_glibc: f64 = row[column("time_vs_glibc")].parse().expect("a ratio");
        assert!(vs_glibc > 0.0, "{row:?}");
        // No mimalloc in this run: no ratio to it.
        assert_eq!(row[column("time_vs_mimalloc")], "", "{row:?}");
        if row[column("allocator")] == "glibc" {
            assert_eq!(row[column("time_vs_glibc")], "1.0000", "{row:?}");
        }
        if row[column("workload")] == "fragmentation" {
            let live: f64 = row[column("peak_live_bytes")].parse().expect("live bytes");
            let per_live: f64 = row[column("rss_per_live_byte")].parse().expect("a ratio");
            assert!(live >= 6.0 * 1024.0 * 1024.0, "{row:?}");
            // Every live byte was written, so it was resident at the peak.
            assert!(per_live >= 1.0, "{row:?}");
            assert!((per_live - rss * 1024.0 / live).abs() < 1e-3, "{row:?}");
        } else {
            assert_eq!(row[column("peak_live_bytes")], "", "{row:?}");
        }
    }

    let runs = read(&out.join(RUNS_CSV));
    assert_eq!(runs.lines().count(), 5, "{runs}");
    assert!(runs.lines().skip(1).all(|l| l.ends_with(",ok")), "{runs}");

    // The Markdown report: the table, the fragmentation ratio, the charts,
    // and the output check.
    let markdown = read(&out.join(MARKDOWN));
    for expected in [
        "## Time and peak RSS",
        "| fragmentation | glibc |",
        "| fragmentation | **strata** |",
        "| sqlite | glibc |",
        "| sqlite | **strata** |",
        "peak RSS ÷ peak live",
        "| fragmentation | strata |",
        "](time-ratio.svg)",
        "](rss-ratio.svg)",
        "All 4 runs printed the same output as glibc.",
    ] {
        assert!(
            markdown.contains(expected),
            "no {expected:?} in:\n{markdown}"
        );
    }
    assert!(stdout.contains("| sqlite | **strata** |"), "{stdout}");

    // The charts: SVG with the workloads and the compared allocator.
    for chart in [TIME_SVG, RSS_SVG] {
        let svg = read(&out.join(chart));
        assert!(svg.trim_start().starts_with("<svg"), "{chart}");
        for text in ["fragmentation", "sqlite", "strata", "glibc"] {
            assert!(svg.contains(text), "{chart} does not mention {text}");
        }
    }
    fs::remove_dir_all(&out).expect("remove the scratch directory");
}

#[test]
fn changing_output_fails_the_comparison() {
    let out = scratch("differs");
    // A stand-in workload binary whose output is its process id: never the
    // same twice, so no run can match the glibc reference.
    let fake = out.join("fake-workloads");
    fs::write(
        &fake,
        "#!/bin/sh\nif [ \"$1\" = --list ]; then printf 'wobbly\\tprints its pid\\n'; \
         else echo \"pid $$\"; fi\n",
    )
    .expect("write the fake binary");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).expect("chmod");
    let report = out.join("report");
    let output = compare(
        &[
            "--rounds",
            "1",
            "--workloads",
            "wobbly",
            "--allocators",
            "glibc,strata",
            "--out",
            report.to_str().expect("a UTF-8 path"),
        ],
        &fake,
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAILED: wobbly under strata: output differs from glibc's"),
        "{stdout}"
    );
    let markdown = read(&report.join(MARKDOWN));
    assert!(markdown.contains("2 run(s) failed"), "{markdown}");
    let csv = read(&report.join(CSV));
    assert!(csv.contains("wobbly,own,glibc,1,0,"), "{csv}");
    fs::remove_dir_all(&out).expect("remove the scratch directory");
}

#[test]
fn bad_options_are_rejected() {
    let workloads = Path::new(env!("CARGO_BIN_EXE_strata-workloads"));
    for args in [
        &["--allocators", "ptmalloc"][..],
        &["--workloads", "no-such-workload"],
        &["--rounds", "0"],
        &["--size", "huge"],
        &["--frobnicate"],
    ] {
        let output = compare(args, workloads);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(!output.stderr.is_empty(), "{args:?}");
    }
}

/// `--allocators strata,strata-unhardened` measures the default hardening:
/// the second is the shim built with `--cfg strata_unhardened` (its banner
/// says so), and the report gives the paired time ratio per workload and
/// its geometric means.
#[test]
fn hardening_cost_is_measured_beside_the_unhardened_shim() {
    let out = scratch("hardening");
    let (stdout, _) = compare_succeeds(
        &[
            "--rounds",
            "2",
            "--size",
            "tiny",
            "--workloads",
            "fragmentation,xmalloc",
            "--allocators",
            "strata,strata-unhardened",
            "--out",
            out.to_str().expect("a UTF-8 path"),
        ],
    );

    // The two libraries are the two builds: ask each for its banner.
    let unhardened = strata_tests::real_programs::target_dir()
        .join("unhardened")
        .join("release")
        .join("libstrata.so");
    for (library, hardening) in [
        (strata_tests::real_programs::build_shim().expect("the shim"), "hardening: on;"),
        (unhardened, "hardening: off (built with --cfg strata_unhardened"),
    ] {
        let run = Command::new("/bin/true")
            .env("LD_PRELOAD", &library)
            .env("STRATA_VERBOSE", "1")
            .output()
            .expect("run /bin/true");
        let banner = String::from_utf8_lossy(&run.stderr);
        assert!(run.status.success() && banner.contains(hardening), "{}: {banner}", library.display());
    }

    // Per workload a ratio of two measured times, then the means.
    let markdown = read(&out.join(MARKDOWN));
    let (_, section) = markdown
        .split_once("## Cost of Strata's default hardening")
        .unwrap_or_else(|| panic!("no hardening section in:\n{markdown}"));
    let section = section.split("\n## ").next().unwrap_or_default();
    let ratio_of = |label: &str| -> f64 {
        let row = section
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no row {label:?} in:\n{section}"));
        let last = row.trim_end_matches(" |").rsplit("| ").next().expect("a last cell");
        last.trim_matches('*').parse().unwrap_or_else(|_| panic!("no ratio in {row:?}"))
    };
    let mut ratios = Vec::new();
    for workload in ["fragmentation", "xmalloc"] {
        let ratio = ratio_of(&format!("| {workload} | "));
        assert!(ratio > 0.0 && ratio.is_finite(), "{workload}: {ratio}");
        ratios.push(ratio);
    }
    let mean = ratio_of("| **geometric mean, all**");
    let expected = (ratios[0] * ratios[1]).sqrt();
    // The table prints three decimals.
    assert!((mean - expected).abs() < 0.002, "mean {mean} of {ratios:?}");
    assert!(stdout.contains("Cost of Strata's default hardening"), "{stdout}");
    fs::remove_dir_all(&out).expect("remove the scratch directory");
}
