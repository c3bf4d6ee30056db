//! `strata-bench compare`: real programs and workloads of our own under
//! glibc, Strata, jemalloc, tcmalloc and mimalloc, measured in one
//! interleaved run, written up as a CSV, a Markdown report and SVG charts.
//!
//! ```text
//! strata-bench compare [--full] [--rounds N] [--size tiny|quick|full]
//!                      [--workloads a,b,...] [--allocators x,y,...]
//!                      [--out DIR] [--stats] [--list]
//! ```
//!
//! # What runs
//!
//! - **Real programs** ([`strata_tests::real_programs::Workload`]): scripted
//!   sessions of python3, sqlite3, git, gcc and redis-server.
//! - **Workloads of our own**: the `strata-workloads` binary (larson,
//!   xmalloc, active and passive false sharing, thread churn, large blocks,
//!   the fragmentation phase change). It allocates through the process's
//!   malloc, so `LD_PRELOAD` applies, checks every block it wrote before
//!   freeing it and prints a checksum.
//!
//! `--workloads` takes names from `--list`, and `programs` or `own` for a
//! whole kind.
//!
//! # How
//!
//! Each subject runs under `glibc` (no preload), `strata` (the shim, built
//! on demand), and Debian's `jemalloc`, `tcmalloc` and `mimalloc` (installed
//! with apt-get when missing, as root). One unrecorded glibc run per subject
//! warms the caches and gives the reference output. Then in each round each
//! subject runs under every allocator in turn, starting one allocator
//! further each round, so the noise of a shared machine spreads over all of
//! them alike. Every run's output is compared with glibc's; a run that fails
//! or prints something else is listed and left out of the figures, and the
//! exit status is non-zero.
//!
//! The report gives per subject and allocator the median wall time and peak
//! RSS (`ru_maxrss` from `wait4`), their ratios to glibc and mimalloc, their
//! geometric means, and, for the fragmentation phase change, peak RSS ÷ peak
//! live bytes. It goes to `--out`, by default `target/strata-report/`
//! (`$CARGO_TARGET_DIR/strata-report` when set): `report.md`, `report.csv`,
//! `runs.csv`, `time-ratio.svg`, `rss-ratio.svg`.
//!
//! `--allocators strata,strata-unhardened` measures what Strata's default
//! hardening costs: `strata-unhardened` is the shim built with `--cfg
//! strata_unhardened` (into `<target>/unhardened/`, for measurement only),
//! and the report adds, per subject, the median over the rounds of the
//! hardened ÷ unhardened time ratio within a round, and its geometric means.
//!
//! The default is the quick mode: 3 rounds, own workloads at size `quick`,
//! a few minutes in all. `--full` runs 7 rounds at size `full`.

mod allocators;
pub(crate) mod charts;
mod output;
mod progress;
mod results;
pub mod stats;
mod subjects;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use strata_tests::real_programs::{target_dir, Outcome, Workload};

pub use allocators::ALLOCATORS;
pub use output::{CSV, CSV_HEADER, MARKDOWN, RSS_SVG, RUNS_CSV, TIME_SVG};
use progress::Progress;
use results::{Cell, Results, RunRecord};
use subjects::{peak_live_bytes, OwnWorkloads, Size, Subject};

/// Rounds in the quick mode (the default).
const QUICK_ROUNDS: usize = 3;
/// Rounds with `--full`.
const FULL_ROUNDS: usize = 7;

/// Command-line options.
struct Options {
    rounds: usize,
    size: Size,
    subjects: Vec<Subject>,
    allocators: Vec<String>,
    out: PathBuf,
    stats: bool,
    /// The `strata-workloads` binary and its workloads.
    own: OwnWorkloads,
}

fn usage() -> String {
    format!(
        "usage: strata-bench compare [--full] [--rounds N] [--size tiny|quick|full] \
         [--workloads NAME,...] [--allocators {}] [--out DIR] [--stats] [--list]\n\
         Workload names: see --list; `programs` and `own` select a whole kind.\n\
         `--allocators` also takes {}: the shim without its default hardening, \
         to measure what the hardening costs beside `strata`.",
        ALLOCATORS.join(","),
        allocators::UNHARDENED
    )
}

/// Every subject: the real programs, then our own workloads.
fn all_subjects(own: &OwnWorkloads) -> Vec<Subject> {
    Workload::ALL
        .into_iter()
        .map(Subject::Program)
        .chain(own.list.iter().map(|(name, _)| Subject::Own(name.clone())))
        .collect()
}

/// Descriptions of every subject, for `--list` and the report.
fn descriptions(own: &OwnWorkloads) -> Vec<(String, String)> {
    Workload::ALL
        .into_iter()
        .map(|w| {
            let tools: Vec<&str> = w.tools().iter().map(|(tool, _)| *tool).collect();
            (w.name().to_string(), format!("runs {}", tools.join(", ")))
        })
        .chain(own.list.iter().cloned())
        .collect()
}

/// Parses the command line; `Ok(None)` means done already (`--list`, `--help`).
fn parse_options(args: &[String]) -> Result<Option<Options>, String> {
    let mut rounds = None;
    let mut size = None;
    let mut full = false;
    let mut workloads: Option<String> = None;
    let mut allocators: Vec<String> = ALLOCATORS.iter().map(|a| a.to_string()).collect();
    let mut out = target_dir().join("strata-report");
    let mut stats = false;
    let mut list = false;
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--rounds" => {
                rounds = Some(
                    value()?
                        .parse()
                        .ok()
                        .filter(|&n: &usize| n > 0)
                        .ok_or("--rounds needs a positive number")?,
                );
            }
            "--size" => {
                let name = value()?;
                size = Some(
                    Size::from_name(&name)
                        .ok_or(format!("unknown size {name}: tiny, quick or full"))?,
                );
            }
            "--full" => full = true,
            "--workloads" => workloads = Some(value()?),
            "--allocators" => {
                allocators = value()?.split(',').map(str::to_string).collect();
                if let Some(bad) = allocators
                    .iter()
                    .find(|a| !allocators::is_known(a))
                {
                    return Err(format!("unknown allocator {bad}"));
                }
                if allocators.is_empty() {
                    return Err("--allocators needs at least one allocator".into());
                }
            }
            "--out" => out = PathBuf::from(value()?),
            "--stats" => stats = true,
            "--list" => list = true,
            "--help" | "-h" => {
                println!("{}", usage());
                return Ok(None);
            }
            _ => return Err(format!("unknown option {flag}\n{}", usage())),
        }
    }
    let own = OwnWorkloads::locate()?;
    if list {
        for (name, about) in descriptions(&own) {
            println!("{name:<14} {about}");
        }
        return Ok(None);
    }
    let every = all_subjects(&own);
    let subjects = match workloads {
        None => every,
        Some(names) => {
            let mut chosen: Vec<Subject> = Vec::new();
            for name in names.split(',') {
                let matching: Vec<Subject> = match name {
                    "programs" => every
                        .iter()
                        .filter(|s| s.kind() == "program")
                        .cloned()
                        .collect(),
                    "own" => every
                        .iter()
                        .filter(|s| s.kind() == "own")
                        .cloned()
                        .collect(),
                    _ => every.iter().filter(|s| s.name() == name).cloned().collect(),
                };
                if matching.is_empty() {
                    return Err(format!("unknown workload {name} (see --list)"));
                }
                for subject in matching {
                    if !chosen.contains(&subject) {
                        chosen.push(subject);
                    }
                }
            }
            chosen
        }
    };
    Ok(Some(Options {
        rounds: rounds.unwrap_or(if full { FULL_ROUNDS } else { QUICK_ROUNDS }),
        size: size.unwrap_or(if full { Size::Full } else { Size::Quick }),
        subjects,
        allocators,
        out,
        stats,
        own,
    }))
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

/// `YYYY-MM-DD HH:MM UTC` for a Unix time in seconds.
fn utc_date(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let (hour, minute) = ((seconds % 86_400) / 3600, (seconds % 3600) / 60);
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02} UTC")
}

/// The operating system, architecture, core count and CPU model.
fn machine() -> String {
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| std::env::consts::OS.to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    format!("{os} {}, {cores} cores, {cpu}", std::env::consts::ARCH)
}

/// Runs one subject under one allocator and checks its output.
fn measure(
    subject: &Subject,
    allocator: &strata_tests::real_programs::Allocator,
    own: &OwnWorkloads,
    size: Size,
    reference: &str,
) -> Result<Outcome, String> {
    let outcome = subject.run(allocator, own, size, false)?;
    if outcome.output == reference {
        Ok(outcome)
    } else {
        Err(format!(
            "output differs from glibc's: {}",
            first_difference(reference, &outcome.output)
        ))
    }
}

fn run(options: &Options, command: &str) -> Result<bool, String> {
    let own = &options.own;
    for subject in &options.subjects {
        subject.ensure_tools()?;
    }
    let allocators: Vec<_> = options
        .allocators
        .iter()
        .map(|name| allocators::resolve(name))
        .collect::<Result<_, _>>()?;
    let glibc = strata_tests::real_programs::Allocator::glibc();

    let mut results = Results {
        subjects: options
            .subjects
            .iter()
            .map(|s| (s.name().to_string(), s.kind()))
            .collect(),
        allocators: options.allocators.clone(),
        rounds: options.rounds,
        ..Results::default()
    };
    for subject in &options.subjects {
        for name in &options.allocators {
            results
                .cells
                .insert((subject.name().to_string(), name.clone()), Cell::default());
        }
    }

    let total = options.subjects.len() * (1 + options.rounds * allocators.len());
    let mut progress = Progress::new(total as u64);

    // Warm-up: one unrecorded glibc run per subject, giving the reference output.
    let mut references = BTreeMap::new();
    for subject in &options.subjects {
        progress.start(&format!("warm-up: {} under glibc", subject.name()));
        match subject.run(&glibc, own, options.size, false) {
            Ok(outcome) => {
                if let Some(live) = peak_live_bytes(&outcome.output) {
                    results.peak_live.insert(subject.name().to_string(), live);
                }
                references.insert(subject.name().to_string(), outcome.output);
                progress.end(None);
            }
            Err(error) => {
                progress.end(Some(&format!("{} under glibc: {error}", subject.name())));
                progress.finish();
                return Err(format!(
                    "the reference run of {} under glibc failed: {error}",
                    subject.name()
                ));
            }
        }
    }

    for round in 0..options.rounds {
        for subject in &options.subjects {
            let reference = &references[subject.name()];
            for k in 0..allocators.len() {
                let allocator = &allocators[(k + round) % allocators.len()];
                progress.start(&format!(
                    "round {}/{}: {} under {}",
                    round + 1,
                    options.rounds,
                    subject.name(),
                    allocator.name
                ));
                let cell = results
                    .cells
                    .get_mut(&(subject.name().to_string(), allocator.name.clone()))
                    .expect("every cell was created");
                let mut record = RunRecord {
                    round: round + 1,
                    subject: subject.name().to_string(),
                    allocator: allocator.name.clone(),
                    time_s: None,
                    peak_rss_kib: None,
                    status: "ok".into(),
                };
                match measure(subject, allocator, own, options.size, reference) {
                    Ok(outcome) => {
                        cell.times.push(outcome.wall.as_secs_f64());
                        cell.rss_kib.push(outcome.peak_rss_kib);
                        record.time_s = Some(outcome.wall.as_secs_f64());
                        record.peak_rss_kib = Some(outcome.peak_rss_kib);
                        progress.end(None);
                    }
                    Err(error) => {
                        progress.end(Some(&format!(
                            "{} under {}: {}",
                            subject.name(),
                            allocator.name,
                            error.lines().next().unwrap_or_default()
                        )));
                        record.status = error.clone();
                        cell.failures.push(error);
                    }
                }
                results.runs.push(record);
            }
        }
    }
    progress.finish();

    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let context = output::Context {
        date: utc_date(seconds),
        machine: machine(),
        command: command.to_string(),
        size: options.size.name(),
    };
    output::write_all(&options.out, &results, &context, &descriptions(own))?;

    println!(
        "\n{} interleaved round(s); medians; ratios are allocator ÷ reference (lower is better)\n",
        options.rounds
    );
    print!("{}", output::markdown_table(&results));
    if let Some(table) = output::fragmentation_table(&results) {
        println!("\nFragmentation phase change: peak RSS ÷ peak live bytes\n");
        print!("{table}");
    }
    if let Some(table) = output::hardening_table(&results) {
        println!("\nCost of Strata's default hardening: time ÷ {}'s, paired by round\n", allocators::UNHARDENED);
        print!("{table}");
    }
    println!("\nReport: {}", options.out.join(MARKDOWN).display());

    let failures = results.failures();
    for failure in &failures {
        println!("\nFAILED: {failure}");
    }
    let mut all_ok = failures.is_empty();

    if options.stats {
        let strata = allocators::resolve("strata")?;
        for subject in &options.subjects {
            let outcome = subject.run(&strata, own, options.size, true)?;
            println!(
                "\nStrata statistics for {} (STRATA_STATS=1):",
                subject.name()
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

/// Runs `strata-bench compare` with the arguments after the command name.
pub fn main(args: Vec<String>) -> ExitCode {
    let options = match parse_options(&args) {
        Ok(Some(options)) => options,
        Ok(None) => return ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("strata-bench compare: {message}");
            return ExitCode::from(2);
        }
    };
    let command = if args.is_empty() {
        "strata-bench compare".to_string()
    } else {
        format!("strata-bench compare {}", args.join(" "))
    };
    match run(&options, &command) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("strata-bench compare: {message}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(utc_date(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_date(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc_date(1_700_000_000), "2023-11-14 22:13 UTC");
    }

    #[test]
    fn first_difference_names_the_line() {
        assert_eq!(
            first_difference("a\nb\n", "a\nc\n"),
            "line 2: expected \"b\", got \"c\""
        );
        assert_eq!(
            first_difference("a\n", "a\nb\n"),
            "1 lines expected, 2 lines printed"
        );
    }
}
