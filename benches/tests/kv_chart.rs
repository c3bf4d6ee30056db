//! `strata-bench kv-chart`: the charts of a `benches/kv.sh` run, drawn from
//! the files the script saves, and its refusals of bad files and
//! arguments.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod support;

fn kv_chart(args: &[&str]) -> (Output, String) {
    support::run(
        Command::new(env!("CARGO_BIN_EXE_strata-bench"))
            .arg("kv-chart")
            .args(args),
    )
}

/// A fresh directory for one test.
fn directory(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strata-kv-chart-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Two rounds of two commands at one size, for three builds, as `kv.sh`
/// writes them; Strata runs at 1.2 times mimalloc's rate.
fn write_inputs(dir: &Path) -> (String, String) {
    let runs = dir.join("kv-runs.csv");
    let memory = dir.join("kv-memory.csv");
    let mut text = String::from("round,allocator,size,command,rps,p50_ms,p99_ms\n");
    for round in 1..=2 {
        for (allocator, rate) in [
            ("strata", 120_000.0),
            ("mimalloc", 100_000.0),
            ("system", 90_000.0),
        ] {
            let rate = rate + f64::from(round);
            text += &format!(
                "{round},{allocator},16,SET,{rate},0.5,3.0\n{round},{allocator},16,MSET (10 keys),{},4.0,30.0\n",
                rate / 10.0
            );
        }
    }
    fs::write(&runs, text).unwrap();
    fs::write(
        &memory,
        "allocator,size,keys_before,keys_after,peak_kib,rss_kib,live_bytes,disk_kib,idle_kib,anon_kib,anon_idle_kib\n\
         strata,16,100000,10000,70000,5000,2097152,400,2700,4300,2200\n\
         mimalloc,16,100000,10000,180000,16000,0,400,8500,12600,4400\n\
         system,16,100000,10000,160000,12000,0,400,3000,9000,2600\n",
    )
    .unwrap();
    (runs.display().to_string(), memory.display().to_string())
}

#[test]
fn draws_the_three_charts_from_the_saved_runs() {
    let dir = directory("draws");
    let (runs, memory) = write_inputs(&dir);
    let out = dir.join("charts");
    let (output, text) = kv_chart(&[
        "--runs",
        &runs,
        "--memory",
        &memory,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{text}");
    for file in ["kv-throughput.svg", "kv-p99.svg", "kv-memory.svg"] {
        let svg =
            fs::read_to_string(out.join(file)).unwrap_or_else(|e| panic!("{file}: {e}\n{text}"));
        assert!(svg.starts_with("<svg"), "{file} is not an SVG");
        assert!(
            text.contains(&format!("wrote {}", out.join(file).display())),
            "{text}"
        );
    }
    let throughput = fs::read_to_string(out.join("kv-throughput.svg")).unwrap();
    // Strata's median rate over mimalloc's: 120001.5 / 100001.5, and it
    // ran faster in both rounds; the system allocator in neither.
    for row in [
        "| size | command | strata | system |",
        "| 16 | SET | 1.20 (2 of 2, p 0.50) | 0.90 (0 of 2, p 0.50) |",
    ] {
        assert!(text.contains(row), "{row:?} not printed:\n{text}");
    }
    let rounds = fs::read_to_string(out.join("kv-rounds.md")).unwrap();
    assert!(
        rounds.contains("| 16 | SET | 1.20 (2 of 2, p 0.50) | 0.90 (0 of 2, p 0.50) |"),
        "{rounds}"
    );
    assert!(
        throughput.contains("1.20") && throughput.contains("SET 16 B"),
        "{throughput}"
    );
    // (4300 - 2200) KiB over 2 MiB live: 1.03; mimalloc (12600 - 4400) KiB: 4.00.
    let memory_chart = fs::read_to_string(out.join("kv-memory.svg")).unwrap();
    assert!(
        memory_chart.contains("1.03") && memory_chart.contains("4.00"),
        "{memory_chart}"
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_files_and_arguments_are_refused() {
    let dir = directory("refused");
    let (runs, memory) = write_inputs(&dir);
    let out = dir.join("charts");
    let out = out.to_str().unwrap();

    let (output, text) = kv_chart(&[
        "--runs",
        &runs,
        "--memory",
        &memory,
        "--out",
        out,
        "--reference",
        "jemalloc",
    ]);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("no runs of the reference allocator jemalloc"),
        "{text}"
    );

    let truncated = dir.join("truncated.csv");
    fs::write(
        &truncated,
        "round,allocator,size,command,rps,p50_ms,p99_ms\n1,strata,16,SET,12\n",
    )
    .unwrap();
    let (output, text) = kv_chart(&[
        "--runs",
        truncated.to_str().unwrap(),
        "--memory",
        &memory,
        "--out",
        out,
    ]);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("truncated.csv:2: 5 fields, not 7"), "{text}");

    let missing = dir.join("missing.csv");
    let (output, text) = kv_chart(&[
        "--runs",
        &runs,
        "--memory",
        missing.to_str().unwrap(),
        "--out",
        out,
    ]);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("cannot read") && text.contains("missing.csv"),
        "{text}"
    );

    for args in [
        &["--runs", runs.as_str()][..],
        &["--out"],
        &["--colour", "red"],
    ] {
        let (output, text) = kv_chart(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}\n{text}");
        assert!(
            text.contains("usage: strata-bench kv-chart"),
            "{args:?}\n{text}"
        );
    }
    assert!(!Path::new(out).exists(), "a refused run wrote charts");
    fs::remove_dir_all(&dir).unwrap();
}
