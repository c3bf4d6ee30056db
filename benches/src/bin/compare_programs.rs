//! Real programs under Strata and its peers, measured in one interleaved run.
//!
//! ```text
//! compare_programs [--rounds N] [--workloads a,b,...] [--allocators x,y,...] [--stats] [--list]
//! ```
//!
//! Each workload (see `--list`) is a scripted session of a real program:
//! python3, sqlite3, git, gcc or redis-server. It runs under
//!
//! - `glibc`: no preload, the program's own malloc;
//! - `strata`: `LD_PRELOAD` of the Strata shim, built on demand;
//! - `jemalloc`, `tcmalloc`, `mimalloc`: `LD_PRELOAD` of Debian's
//!   `libjemalloc2`, `libtcmalloc-minimal4` and `libmimalloc2.0`, installed
//!   with apt-get when missing (as root).
//!
//! One unrecorded glibc run of each workload warms the caches and records the
//! reference output. Then, in each round, each workload runs under every
//! allocator in turn, starting one allocator further each round, so that the
//! noise of a shared machine spreads over all of them alike. Every run's
//! output is compared with the reference.
//!
//! The table reports, per workload and allocator, the medians over rounds of
//! the wall time of the timed processes and of the children's peak RSS
//! (`ru_maxrss` from `wait4`), with ratios against glibc and mimalloc (lower
//! is better). For redis, the server is the preloaded program: the wall time
//! is that of its clients (`redis-cli`, `redis-benchmark`, on plain glibc) and
//! the RSS is the server's. Note that Debian's redis-server links jemalloc,
//! so its `glibc` row is really jemalloc.
//!
//! `--stats` adds one run of each workload under Strata with
//! `STRATA_STATS=1` and prints the shim's statistics table.
//!
//! The exit status is non-zero if any run failed or printed different output.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use strata_tests::real_programs::{require_file, Allocator, Outcome, Workload};

/// Debian's peer allocators: name, library, package.
const PEERS: [(&str, &str, &str); 3] = [
    (
        "jemalloc",
        "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
        "libjemalloc2",
    ),
    (
        "tcmalloc",
        "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
        "libtcmalloc-minimal4",
    ),
    (
        "mimalloc",
        "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2.0",
        "libmimalloc2.0",
    ),
];

/// Every allocator name `--allocators` accepts, in table order.
const ALLOCATORS: [&str; 5] = ["glibc", "strata", "jemalloc", "tcmalloc", "mimalloc"];

/// Command-line options.
struct Options {
    rounds: usize,
    workloads: Vec<Workload>,
    allocators: Vec<String>,
    stats: bool,
}

fn usage() -> String {
    let names: Vec<&str> = Workload::ALL.iter().map(|w| w.name()).collect();
    format!(
        "usage: compare_programs [--rounds N] [--workloads {}] [--allocators {}] [--stats] [--list]",
        names.join(","),
        ALLOCATORS.join(",")
    )
}

/// Parses the command line; `Ok(None)` means "done already" (`--list`, `--help`).
fn parse_options() -> Result<Option<Options>, String> {
    let mut options = Options {
        rounds: 3,
        workloads: Workload::ALL.to_vec(),
        allocators: ALLOCATORS.iter().map(|a| a.to_string()).collect(),
        stats: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--rounds" => {
                options.rounds = value()?
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or("--rounds needs a positive number")?;
            }
            "--workloads" => {
                options.workloads = value()?
                    .split(',')
                    .map(|name| Workload::from_name(name).ok_or(format!("unknown workload {name}")))
                    .collect::<Result<_, _>>()?;
            }
            "--allocators" => {
                options.allocators = value()?.split(',').map(str::to_string).collect();
                if let Some(bad) = options
                    .allocators
                    .iter()
                    .find(|a| !ALLOCATORS.contains(&a.as_str()))
                {
                    return Err(format!("unknown allocator {bad}"));
                }
            }
            "--stats" => options.stats = true,
            "--list" => {
                for workload in Workload::ALL {
                    let tools: Vec<&str> = workload.tools().iter().map(|(tool, _)| *tool).collect();
                    println!("{:<14} runs {}", workload.name(), tools.join(", "));
                }
                return Ok(None);
            }
            "--help" | "-h" => {
                println!("{}", usage());
                return Ok(None);
            }
            _ => return Err(format!("unknown option {flag}\n{}", usage())),
        }
    }
    Ok(Some(options))
}

/// Resolves an allocator name, building the shim or installing a peer package.
fn allocator(name: &str) -> Result<Allocator, String> {
    match name {
        "glibc" => Ok(Allocator::glibc()),
        "strata" => Allocator::strata(),
        _ => {
            let (_, library, package) = PEERS
                .iter()
                .find(|(peer, _, _)| *peer == name)
                .ok_or_else(|| format!("unknown allocator {name}"))?;
            Ok(Allocator::preloaded(
                name,
                require_file(Path::new(library), package)?,
            ))
        }
    }
}

/// The measurements of one workload under one allocator.
#[derive(Default)]
struct Samples {
    walls: Vec<Duration>,
    rss_kib: Vec<u64>,
    failures: Vec<String>,
}

fn median<T: Copy + Ord>(values: &[T]) -> Option<T> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied()
}

/// `value / reference` as `1.23x`, or `-` when either is missing.
fn ratio(value: Option<f64>, reference: Option<f64>) -> String {
    match (value, reference) {
        (Some(v), Some(r)) if r > 0.0 => format!("{:.2}x", v / r),
        _ => "-".into(),
    }
}

/// The first line where two outputs differ, for the failure list.
fn first_difference(expected: &str, actual: &str) -> String {
    let mut lines = expected.lines().zip(actual.lines()).enumerate();
    match lines.find(|(_, (a, b))| a != b) {
        Some((i, (a, b))) => format!("line {}: expected {a:?}, got {b:?}", i + 1),
        None => format!(
            "{} lines expected, {} lines printed",
            expected.lines().count(),
            actual.lines().count()
        ),
    }
}

fn print_table(options: &Options, samples: &BTreeMap<(Workload, String), Samples>) {
    let wall = |w: Workload, a: &str| {
        samples
            .get(&(w, a.to_string()))
            .and_then(|s| median(&s.walls))
            .map(|d| d.as_secs_f64())
    };
    let rss = |w: Workload, a: &str| {
        samples
            .get(&(w, a.to_string()))
            .and_then(|s| median(&s.rss_kib))
            .map(|k| k as f64 / 1024.0)
    };
    // Ratio columns only for the references that were measured.
    let references: Vec<(&str, &str)> = [("glibc", "vs glibc"), ("mimalloc", "vs mi")]
        .into_iter()
        .filter(|(name, _)| options.allocators.iter().any(|a| a == name))
        .collect();
    let mut header = format!("{:<14} {:<9} {:>9}", "workload", "allocator", "wall s");
    for (_, title) in &references {
        header += &format!(" {title:>8}");
    }
    header += &format!(" {:>10}", "peak MiB");
    for (_, title) in &references {
        header += &format!(" {title:>8}");
    }
    header += &format!(" {:>6}", "ok");
    println!("{header}");
    println!("{}", "-".repeat(header.len()));
    for &workload in &options.workloads {
        for name in &options.allocators {
            let entry = &samples[&(workload, name.clone())];
            let (w, r) = (wall(workload, name), rss(workload, name));
            let mut line = format!(
                "{:<14} {:<9} {:>9}",
                workload.name(),
                name,
                w.map_or("-".into(), |w| format!("{w:.3}"))
            );
            for (reference, _) in &references {
                line += &format!(" {:>8}", ratio(w, wall(workload, reference)));
            }
            line += &format!(" {:>10}", r.map_or("-".into(), |r| format!("{r:.1}")));
            for (reference, _) in &references {
                line += &format!(" {:>8}", ratio(r, rss(workload, reference)));
            }
            line += &format!(
                " {:>6}",
                format!("{}/{}", entry.walls.len(), options.rounds)
            );
            println!("{line}");
        }
    }
}

fn run(options: &Options) -> Result<bool, String> {
    for workload in &options.workloads {
        workload.ensure_tools()?;
    }
    let allocators: Vec<Allocator> = options
        .allocators
        .iter()
        .map(|name| allocator(name))
        .collect::<Result<_, _>>()?;

    // Warm-up: one unrecorded glibc run per workload, which also gives the
    // reference output.
    let mut reference = BTreeMap::new();
    for &workload in &options.workloads {
        eprintln!("warm-up: {} under glibc", workload.name());
        let outcome = workload.run(&Allocator::glibc(), false)?;
        reference.insert(workload, outcome.output);
    }

    let mut samples: BTreeMap<(Workload, String), Samples> = BTreeMap::new();
    for &workload in &options.workloads {
        for name in &options.allocators {
            samples.insert((workload, name.clone()), Samples::default());
        }
    }
    for round in 0..options.rounds {
        for &workload in &options.workloads {
            for k in 0..allocators.len() {
                let allocator = &allocators[(k + round) % allocators.len()];
                eprintln!(
                    "round {}/{}: {} under {}",
                    round + 1,
                    options.rounds,
                    workload.name(),
                    allocator.name
                );
                let entry = samples
                    .get_mut(&(workload, allocator.name.clone()))
                    .expect("allocator is listed");
                match workload.run(allocator, false) {
                    Ok(Outcome {
                        output,
                        wall,
                        peak_rss_kib,
                        ..
                    }) if output == reference[&workload] => {
                        entry.walls.push(wall);
                        entry.rss_kib.push(peak_rss_kib);
                    }
                    Ok(outcome) => entry.failures.push(format!(
                        "output differs from glibc's: {}",
                        first_difference(&reference[&workload], &outcome.output)
                    )),
                    Err(error) => entry.failures.push(error),
                }
            }
        }
    }

    println!();
    println!(
        "Real programs, medians of {} interleaved round(s); ratios are allocator / reference (lower is better)",
        options.rounds
    );
    println!();
    print_table(options, &samples);

    let mut all_ok = true;
    for ((workload, name), entry) in &samples {
        for failure in &entry.failures {
            all_ok = false;
            println!("\nFAILED: {} under {name}: {failure}", workload.name());
        }
    }

    if options.stats {
        let strata = allocator("strata")?;
        for &workload in &options.workloads {
            let outcome = workload.run(&strata, true)?;
            println!(
                "\nStrata statistics for {} (STRATA_STATS=1):",
                workload.name()
            );
            match outcome.stats_table() {
                Some(table) => println!("{}", table.trim_end()),
                None => {
                    all_ok = false;
                    println!(
                        "no statistics table was printed; stderr:\n{}",
                        outcome.diagnostics
                    );
                }
            }
        }
    }
    Ok(all_ok)
}

fn main() -> ExitCode {
    let options = match parse_options() {
        Ok(Some(options)) => options,
        Ok(None) => return ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("compare_programs: {message}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("compare_programs: {message}");
            ExitCode::FAILURE
        }
    }
}
