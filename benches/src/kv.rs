//! Charts of the storage-service benchmark (`benches/kv.sh`).
//!
//! `kv.sh` saves every run's figures in two CSV files; `strata-bench
//! kv-chart` reads them and draws three SVG charts beside them, each
//! allocator against a reference (mimalloc unless told otherwise):
//!
//! - `kv-throughput.svg`: requests per second ÷ the reference's, per
//!   command and value size (right of 1 is faster);
//! - `kv-p99.svg`: p99 latency ÷ the reference's (left of 1 is better);
//! - `kv-memory.svg`: the anonymous memory the server holds after the
//!   delete-and-compact phase, over its idle start, as a multiple of the
//!   live heap (the bytes Strata counts live then: the same program state
//!   under every allocator), per value size and for every allocator.
//!
//! Each figure is the median of the runs, as in the tables `kv.sh` prints.
//! On the throughput and p99 charts, each bar's value is followed by the
//! rounds it won (see below), as `1.05 (7/9)`.
//!
//! It also writes `kv-rounds.md`, and prints it: for each command, size and
//! allocator, the same two ratios beside the number of rounds in which the
//! allocator did at least as well as the reference *in that round* (the
//! allocators of a round run one after the other, so a round's pair shares
//! the machine's state more than two rounds do). On a noisy machine a ratio
//! of medians near 1 can come out either side; the count of rounds says
//! how often the order held, and a sign test over them how likely so
//! uneven a count would be if neither build were faster.
//!
//! ```text
//! strata-bench kv-chart --runs kv-runs.csv --memory kv-memory.csv --out DIR [--reference NAME]
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::compare::charts::RatioChart;
use crate::report::median;

/// The header of the per-run file (`kv.sh` writes it).
pub const RUNS_HEADER: &str = "round,allocator,size,command,rps,p50_ms,p99_ms";

/// The header of the memory file (`kv.sh` writes it). Sizes are in KiB as
/// `/proc/PID/status` gives them, but `live_bytes`.
pub const MEMORY_HEADER: &str =
    "allocator,size,keys_before,keys_after,peak_kib,rss_kib,live_bytes,disk_kib,idle_kib,anon_kib,anon_idle_kib";

/// The chart files, in the output directory.
pub const THROUGHPUT_SVG: &str = "kv-throughput.svg";
/// See [`THROUGHPUT_SVG`].
pub const P99_SVG: &str = "kv-p99.svg";
/// See [`THROUGHPUT_SVG`].
pub const MEMORY_SVG: &str = "kv-memory.svg";
/// The table of ratios and rounds won, in Markdown.
pub const ROUNDS_MD: &str = "kv-rounds.md";

/// One run of one `redis-benchmark` command.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// The round of the sweep, from 1: the runs of one round are paired.
    pub round: u32,
    /// The allocator's name in `kv.sh` (`strata`, `strata-huge`, `mimalloc`, `system`).
    pub allocator: String,
    /// The value size (`-d`), in bytes.
    pub size: u32,
    /// The command as `redis-benchmark` names it (`SET`, `MSET (10 keys)`).
    pub command: String,
    /// Requests per second.
    pub rps: f64,
    /// p99 latency, in milliseconds.
    pub p99_ms: f64,
}

/// One server's memory after the delete-and-compact phase.
#[derive(Debug, Clone, PartialEq)]
pub struct Memory {
    /// As in [`Run`].
    pub allocator: String,
    /// As in [`Run`].
    pub size: u32,
    /// The bytes Strata counted live after the phase (0 for a server that
    /// does not run on Strata).
    pub live_bytes: f64,
    /// `RssAnon` after the phase, in KiB.
    pub anon_kib: f64,
    /// `RssAnon` of the same server idle, just after it started, in KiB.
    pub anon_idle_kib: f64,
}

/// The fields of a CSV file past its header, a row of strings per line,
/// each row checked to have `width` fields. Errors name the file and line.
fn rows(path: &Path, text: &str, header: &str) -> Result<Vec<Vec<String>>, String> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty());
    match lines.next() {
        Some((_, first)) if first.trim() == header => {}
        Some((_, first)) => {
            return Err(format!(
                "{}: the first line is {first:?}, not the header {header:?}",
                path.display()
            ))
        }
        None => return Err(format!("{}: empty, not even a header", path.display())),
    }
    let width = header.split(',').count();
    lines
        .map(|(index, line)| {
            let fields: Vec<String> = line.split(',').map(|f| f.trim().to_string()).collect();
            if fields.len() == width {
                Ok(fields)
            } else {
                Err(format!(
                    "{}:{}: {} fields, not {width}: {line:?}",
                    path.display(),
                    index + 1,
                    fields.len()
                ))
            }
        })
        .collect()
}

/// `row[column]` as a number, or an error naming the file, the column
/// (`name`) and the row.
fn number<T: std::str::FromStr>(
    path: &Path,
    row: &[String],
    column: usize,
    name: &str,
) -> Result<T, String> {
    row[column].parse().map_err(|_| {
        format!(
            "{}: {name} {:?} is not a number, in row {:?}",
            path.display(),
            row[column],
            row.join(",")
        )
    })
}

/// Reads the per-run file. A round may hold one run per allocator, size
/// and command.
pub fn parse_runs(path: &Path, text: &str) -> Result<Vec<Run>, String> {
    let runs: Vec<Run> = rows(path, text, RUNS_HEADER)?
        .into_iter()
        .map(|row| {
            Ok(Run {
                round: number(path, &row, 0, "round")?,
                allocator: row[1].clone(),
                size: number(path, &row, 2, "size")?,
                command: row[3].clone(),
                rps: number(path, &row, 4, "rps")?,
                p99_ms: number(path, &row, 6, "p99_ms")?,
            })
        })
        .collect::<Result<_, String>>()?;
    let mut seen = std::collections::BTreeSet::new();
    for run in &runs {
        if !seen.insert((run.round, &run.allocator, run.size, &run.command)) {
            return Err(format!(
                "{}: round {} has two runs of {} {} at {} bytes",
                path.display(),
                run.round,
                run.allocator,
                run.command,
                run.size
            ));
        }
    }
    Ok(runs)
}

/// Reads the memory file.
pub fn parse_memory(path: &Path, text: &str) -> Result<Vec<Memory>, String> {
    rows(path, text, MEMORY_HEADER)?
        .into_iter()
        .map(|row| {
            Ok(Memory {
                allocator: row[0].clone(),
                size: number(path, &row, 1, "size")?,
                live_bytes: number(path, &row, 6, "live_bytes")?,
                anon_kib: number(path, &row, 9, "anon_kib")?,
                anon_idle_kib: number(path, &row, 10, "anon_idle_kib")?,
            })
        })
        .collect()
}

/// The names in the order they first appear.
fn first_seen<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for name in names {
        if !seen.iter().any(|s| s == name) {
            seen.push(name.to_string());
        }
    }
    seen
}

/// A command's short name for a chart's group label.
fn short(command: &str) -> String {
    command.replace(" (10 keys)", "×10")
}

/// A cell of one allocator's runs: (allocator, size, command).
type Cell = (String, u32, String);

/// A figure of each run that the charts compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Figure {
    /// Requests per second: higher is better.
    Throughput,
    /// p99 latency: lower is better.
    P99,
}

impl Figure {
    /// This figure of a run's (requests per second, p99).
    fn of(self, (rps, p99): (f64, f64)) -> f64 {
        match self {
            Figure::Throughput => rps,
            Figure::P99 => p99,
        }
    }

    /// Whether `value` is at least as good as `base`.
    fn at_least_as_good(self, value: f64, base: f64) -> bool {
        match self {
            Figure::Throughput => value >= base,
            Figure::P99 => value <= base,
        }
    }
}

/// Medians per (allocator, size, command) of the runs' rates and p99s,
/// and the runs of each round.
struct Medians {
    allocators: Vec<String>,
    /// (size, command), sizes ascending, commands in the order run.
    cells: Vec<(u32, String)>,
    rps: BTreeMap<Cell, f64>,
    p99: BTreeMap<Cell, f64>,
    /// Each cell's (requests per second, p99) by round.
    rounds: BTreeMap<Cell, BTreeMap<u32, (f64, f64)>>,
}

impl Medians {
    /// Groups `runs`, which hold one run per round and cell
    /// ([`parse_runs`] refuses a file with more).
    fn of(runs: &[Run]) -> Self {
        let allocators = first_seen(runs.iter().map(|r| r.allocator.as_str()));
        let commands = first_seen(runs.iter().map(|r| r.command.as_str()));
        let mut sizes: Vec<u32> = runs.iter().map(|r| r.size).collect();
        sizes.sort_unstable();
        sizes.dedup();
        let mut rounds: BTreeMap<Cell, BTreeMap<u32, (f64, f64)>> = BTreeMap::new();
        for run in runs {
            rounds
                .entry((run.allocator.clone(), run.size, run.command.clone()))
                .or_default()
                .insert(run.round, (run.rps, run.p99_ms));
        }
        let cells = sizes
            .iter()
            .flat_map(|&size| commands.iter().map(move |command| (size, command.clone())))
            .filter(|(size, command)| rounds.keys().any(|(_, s, c)| s == size && c == command))
            .collect();
        let median_of = |figure: Figure| -> BTreeMap<Cell, f64> {
            rounds
                .iter()
                .map(|(cell, by_round)| {
                    let values: Vec<f64> = by_round.values().map(|&run| figure.of(run)).collect();
                    (cell.clone(), median(&values))
                })
                .collect()
        };
        Self {
            allocators,
            cells,
            rps: median_of(Figure::Throughput),
            p99: median_of(Figure::P99),
            rounds,
        }
    }

    /// `table[cell][allocator]` of the median of `figure` over the
    /// reference's, for every allocator in `others`.
    fn ratios(&self, figure: Figure, reference: &str, others: &[String]) -> Vec<Vec<Option<f64>>> {
        let table = match figure {
            Figure::Throughput => &self.rps,
            Figure::P99 => &self.p99,
        };
        self.cells
            .iter()
            .map(|(size, command)| {
                let of = |a: &str| table.get(&(a.to_string(), *size, command.clone())).copied();
                others
                    .iter()
                    .map(|a| match (of(a), of(reference)) {
                        (Some(value), Some(base)) if base > 0.0 && value > 0.0 => {
                            Some(value / base)
                        }
                        _ => None,
                    })
                    .collect()
            })
            .collect()
    }

    /// `table[cell][allocator]` of (rounds won, rounds paired): the rounds
    /// in which the allocator's `figure` was at least as good as the
    /// reference's in the same round, of the rounds both ran.
    fn rounds_won(
        &self,
        figure: Figure,
        reference: &str,
        others: &[String],
    ) -> Vec<Vec<(usize, usize)>> {
        self.cells
            .iter()
            .map(|(size, command)| {
                let by_round = |a: &str| self.rounds.get(&(a.to_string(), *size, command.clone()));
                others
                    .iter()
                    .map(|a| {
                        let (Some(own), Some(base)) = (by_round(a), by_round(reference)) else {
                            return (0, 0);
                        };
                        own.iter()
                            .filter_map(|(round, &run)| {
                                Some((figure.of(run), figure.of(*base.get(round)?)))
                            })
                            .fold((0, 0), |(won, paired), (value, base)| {
                                (
                                    won + usize::from(figure.at_least_as_good(value, base)),
                                    paired + 1,
                                )
                            })
                    })
                    .collect()
            })
            .collect()
    }
}

/// Anonymous memory after compaction over the idle start, as a multiple
/// of the live heap, per size (ascending) and allocator (in the order
/// given): the medians of `anon_kib` and `anon_idle_kib` over the runs,
/// and of the live bytes of the `strata` build at that size, or else of
/// the first allocator that reports them (another Strata build), as
/// `kv.sh`'s table does. `None` where no Strata build ran.
fn memory_ratios(memory: &[Memory], allocators: &[String]) -> (Vec<u32>, Vec<Vec<Option<f64>>>) {
    let mut sizes: Vec<u32> = memory.iter().map(|m| m.size).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let column = |allocator: &str, size: u32, field: fn(&Memory) -> f64| {
        let values: Vec<f64> = memory
            .iter()
            .filter(|m| m.allocator == allocator && m.size == size)
            .map(field)
            .collect();
        (!values.is_empty()).then(|| median(&values))
    };
    let values = sizes
        .iter()
        .map(|&size| {
            let live = std::iter::once("strata")
                .chain(allocators.iter().map(String::as_str))
                .filter_map(|a| column(a, size, |m| m.live_bytes))
                .find(|&live| live > 0.0);
            allocators
                .iter()
                .map(|a| {
                    let anon = column(a, size, |m| m.anon_kib)?;
                    let idle = column(a, size, |m| m.anon_idle_kib)?;
                    let ratio = (anon - idle) * 1024.0 / live?;
                    (ratio > 0.0).then_some(ratio)
                })
                .collect()
        })
        .collect();
    (sizes, values)
}

/// The two-sided exact sign test of `won` rounds of `paired`: the chance
/// of a split at least as uneven, were the two builds equally likely to win
/// each round. Small values say the order held beyond the machine's noise;
/// 1 when no round was paired.
fn sign_test(won: usize, paired: usize) -> f64 {
    let fewer = won.min(paired.saturating_sub(won));
    // P(X <= fewer) for X ~ Binomial(paired, 1/2), term by term:
    // C(n, k) = C(n, k - 1) * (n - k + 1) / k.
    let (mut term, mut tail) = (1.0_f64, 1.0_f64);
    for k in 1..=fewer {
        term *= (paired - k + 1) as f64 / k as f64;
        tail += term;
    }
    (2.0 * tail / 2.0_f64.powi(paired as i32)).min(1.0)
}

/// A sign test's result as the tables print it.
fn p_value(p: f64) -> String {
    if p < 0.01 {
        "p < 0.01".to_string()
    } else {
        format!("p {p:.2}")
    }
}

/// One section of `kv-rounds.md`: `figure`'s ratio of medians for each
/// cell and allocator in `others`, with the rounds won and their sign test
/// ([`sign_test`]) in brackets.
fn rounds_section(
    figure: Figure,
    reference: &str,
    cells: &[(u32, String)],
    others: &[String],
    ratios: &[Vec<Option<f64>>],
    won: &[Vec<(usize, usize)>],
) -> String {
    let (title, comparison) = match figure {
        Figure::Throughput => (
            format!("Requests per second ÷ {reference}'s (higher is better)"),
            "at least",
        ),
        Figure::P99 => (
            format!("p99 latency ÷ {reference}'s (lower is better)"),
            "no worse than",
        ),
    };
    let mut out = format!(
        "### {title}\n\nThe median over the rounds ÷ {reference}'s median; in brackets, the \
         rounds in which the build was {comparison} {reference} in the same round, of the \
         rounds both ran, and p, the chance of a split at least that uneven if neither build \
         were faster (a two-sided sign test over those rounds): below 0.05, the order held \
         beyond the noise, though when no build differs, up to one cell in twenty \
         can fall there by chance.\n\n| size | command | {} |\n|---|---|{}\n",
        others.join(" | "),
        "---|".repeat(others.len())
    );
    for (((size, command), row), won) in cells.iter().zip(ratios).zip(won) {
        out += &format!("| {size} | {} |", short(command));
        for (ratio, &(won, paired)) in row.iter().zip(won) {
            match ratio {
                Some(ratio) => {
                    let p = p_value(sign_test(won, paired));
                    out += &format!(" {ratio:.2} ({won} of {paired}, {p}) |");
                }
                None => out += " - |",
            }
        }
        out += "\n";
    }
    out + "\n"
}

/// Draws the charts into `out` and returns the files written: the
/// throughput and p99 charts, the table of rounds won ([`ROUNDS_MD`]), and
/// the memory chart when a Strata build ran (the live heap it reports is
/// what the chart divides by).
pub fn draw(
    runs: &[Run],
    memory: &[Memory],
    reference: &str,
    out: &Path,
) -> Result<Vec<PathBuf>, String> {
    let medians = Medians::of(runs);
    if !medians.allocators.iter().any(|a| a == reference) {
        return Err(format!(
            "no runs of the reference allocator {reference} (the runs have {})",
            medians.allocators.join(", ")
        ));
    }
    let others: Vec<String> = medians
        .allocators
        .iter()
        .filter(|a| *a != reference)
        .cloned()
        .collect();
    if others.is_empty() {
        return Err(format!(
            "only the reference allocator {reference} ran: nothing to compare"
        ));
    }
    fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let groups: Vec<String> = medians
        .cells
        .iter()
        .map(|(size, command)| format!("{} {size} B", short(command)))
        .collect();
    let mut written = Vec::new();
    let mut rounds = String::new();
    for (figure, file, title, axis) in [
        (
            Figure::Throughput,
            THROUGHPUT_SVG,
            format!("strata-kv: requests per second ÷ {reference}'s (median; higher is better)"),
            format!("requests per second ÷ {reference}'s, log scale: right of 1 is faster than {reference}; (won/rounds): rounds at least {reference}'s"),
        ),
        (
            Figure::P99,
            P99_SVG,
            format!("strata-kv: p99 latency ÷ {reference}'s (median; lower is better)"),
            format!("p99 latency ÷ {reference}'s, log scale: left of 1 is better than {reference}; (won/rounds): rounds no worse than {reference}'s"),
        ),
    ] {
        let ratios = medians.ratios(figure, reference, &others);
        let won = medians.rounds_won(figure, reference, &others);
        // Each bar's value is followed by the rounds it won, out of those
        // both builds ran.
        let notes: Vec<Vec<String>> = won
            .iter()
            .map(|row| row.iter().map(|(won, paired)| format!("{won}/{paired}")).collect())
            .collect();
        let path = out.join(file);
        RatioChart {
            title: &title,
            axis: &axis,
            groups: &groups,
            allocators: &others,
            values: &ratios,
            notes: &notes,
        }
        .write_svg(&path)?;
        written.push(path);
        rounds += &rounds_section(figure, reference, &medians.cells, &others, &ratios, &won);
    }
    let path = out.join(ROUNDS_MD);
    fs::write(&path, rounds).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    written.push(path);
    // The memory chart needs a live-heap figure, which only a Strata
    // build reports: without one, the caller says so.
    let (sizes, values) = memory_ratios(memory, &medians.allocators);
    if values.iter().flatten().any(Option::is_some) {
        let path = out.join(MEMORY_SVG);
        let groups: Vec<String> = sizes
            .iter()
            .map(|size| format!("{size} B values"))
            .collect();
        RatioChart {
            title: "strata-kv: memory after deleting 90% of the keys and compacting (median; lower is better)",
            axis: "anonymous RSS over the idle server ÷ live heap, log scale: 1 is the live data alone",
            groups: &groups,
            allocators: &medians.allocators,
            values: &values,
            notes: &[],
        }
        .write_svg(&path)?;
        written.push(path);
    }
    Ok(written)
}

const USAGE: &str =
    "usage: strata-bench kv-chart --runs FILE --memory FILE --out DIR [--reference NAME]

Draws the charts of a benches/kv.sh run from the two files it saves
(kv-runs.csv, kv-memory.csv): kv-throughput.svg, kv-p99.svg and
kv-memory.svg in DIR, and kv-rounds.md, the table of ratios with the
rounds each allocator won, which it also prints. NAME is the allocator the
others are divided by (default mimalloc).";

/// `strata-bench kv-chart`.
pub fn main(args: Vec<String>) -> ExitCode {
    let mut runs = None;
    let mut memory = None;
    let mut out = None;
    let mut reference = "mimalloc".to_string();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let slot = match arg.as_str() {
            "--runs" => &mut runs,
            "--memory" => &mut memory,
            "--out" => &mut out,
            "--reference" => {
                match args.next() {
                    Some(name) => reference = name,
                    None => return usage_error("--reference needs a name"),
                }
                continue;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => return usage_error(&format!("unknown argument {other:?}")),
        };
        match args.next() {
            Some(value) => *slot = Some(PathBuf::from(value)),
            None => return usage_error(&format!("{arg} needs a path")),
        }
    }
    let (Some(runs), Some(memory), Some(out)) = (runs, memory, out) else {
        return usage_error("--runs, --memory and --out are all needed");
    };
    let read = |path: &Path| {
        fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let result = read(&runs)
        .and_then(|text| parse_runs(&runs, &text))
        .and_then(|parsed| Ok((parsed, parse_memory(&memory, &read(&memory)?)?)))
        .and_then(|(parsed_runs, parsed_memory)| {
            draw(&parsed_runs, &parsed_memory, &reference, &out)
        });
    match result {
        Ok(files) => {
            for file in &files {
                println!("kv-chart: wrote {}", file.display());
            }
            if let Some(rounds) = files.iter().find(|file| file.ends_with(ROUNDS_MD)) {
                match fs::read_to_string(rounds) {
                    Ok(text) => print!("\n{text}"),
                    Err(e) => eprintln!("kv-chart: cannot read back {}: {e}", rounds.display()),
                }
            }
            if !files.iter().any(|file| file.ends_with(MEMORY_SVG)) {
                println!("kv-chart: no {MEMORY_SVG}: no Strata build ran, so no live-heap figure to divide by");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("kv-chart: {error}");
            ExitCode::FAILURE
        }
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("kv-chart: {message}\n{USAGE}");
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs_text() -> String {
        let mut text = format!("{RUNS_HEADER}\n");
        for (allocator, rates) in [
            ("strata", [110.0, 90.0, 100.0]),
            ("mimalloc", [80.0, 125.0, 80.0]),
        ] {
            for (round, rate) in (1..).zip(rates) {
                text += &format!("{round},{allocator},16,SET,{rate},0.5,2.0\n");
                text += &format!(
                    "{round},{allocator},16,MSET (10 keys),{},1.0,{}\n",
                    rate / 10.0,
                    rate / 20.0
                );
            }
        }
        text
    }

    #[test]
    fn ratios_are_medians_over_the_reference_median() {
        let runs = parse_runs(Path::new("runs.csv"), &runs_text()).unwrap();
        let medians = Medians::of(&runs);
        assert_eq!(medians.allocators, ["strata", "mimalloc"]);
        assert_eq!(
            medians.cells,
            [(16, "SET".to_string()), (16, "MSET (10 keys)".to_string())]
        );
        let ratios = medians.ratios(Figure::Throughput, "mimalloc", &["strata".to_string()]);
        // strata's median 100 over mimalloc's median 80; MSET the same.
        assert_eq!(ratios, [[Some(1.25)], [Some(1.25)]]);
        let p99 = medians.ratios(Figure::P99, "mimalloc", &["strata".to_string()]);
        // SET: 2.0 ms for both; MSET: median 5 ms over median 4 ms.
        assert_eq!(p99, [[Some(1.0)], [Some(1.25)]]);
    }

    #[test]
    fn rounds_won_pair_the_runs_of_one_round() {
        let runs = parse_runs(Path::new("runs.csv"), &runs_text()).unwrap();
        let medians = Medians::of(&runs);
        let strata = ["strata".to_string()];
        // Cells: SET, then MSET, at 16 bytes.
        let rps = medians.rounds_won(Figure::Throughput, "mimalloc", &strata);
        let p99 = medians.rounds_won(Figure::P99, "mimalloc", &strata);
        // Rates 110, 90, 100 against 80, 125, 80: rounds 1 and 3.
        assert_eq!(rps[0], [(2, 3)]);
        // p99 of MSET, rate / 20: 5.5, 4.5, 5 against 4, 6.25, 4: round 2.
        assert_eq!(p99[1], [(1, 3)]);
        // Equal p99s count as no worse.
        assert_eq!(p99[0], [(3, 3)]);
        // A round the reference did not run is not paired.
        let without_round_3: Vec<Run> = runs
            .iter()
            .filter(|r| !(r.allocator == "mimalloc" && r.round == 3))
            .cloned()
            .collect();
        assert_eq!(
            Medians::of(&without_round_3).rounds_won(Figure::Throughput, "mimalloc", &strata)[0],
            [(1, 2)]
        );
        let section = |figure, won| {
            let ratios = medians.ratios(figure, "mimalloc", &strata);
            rounds_section(figure, "mimalloc", &medians.cells, &strata, &ratios, won)
        };
        let table = section(Figure::Throughput, &rps) + &section(Figure::P99, &p99);
        assert!(table.contains("| 16 | SET | 1.25 (2 of 3, p 1.00) |"), "{table}");
        assert!(
            table.contains("| 16 | MSET×10 | 1.25 (1 of 3, p 1.00) |"),
            "{table}"
        );
        assert!(table.contains("| 16 | SET | 1.00 (3 of 3, p 0.25) |"), "{table}");
    }

    #[test]
    fn the_sign_test_is_the_binomial_tail_on_both_sides() {
        // 0 or 7 of 7: 2 / 2^7.
        assert_eq!(sign_test(0, 7), 2.0 / 128.0);
        assert_eq!(sign_test(7, 7), 2.0 / 128.0);
        // 1 of 7: 2 (1 + 7) / 2^7; 7 of 9, as 2 of 9: 2 (1 + 9 + 36) / 2^9.
        assert_eq!(sign_test(1, 7), 16.0 / 128.0);
        assert_eq!(sign_test(7, 9), 92.0 / 512.0);
        // An even split, or nothing paired, is no evidence either way.
        assert_eq!(sign_test(3, 7), 1.0);
        assert_eq!(sign_test(4, 8), 1.0);
        assert_eq!(sign_test(0, 0), 1.0);
        assert_eq!(p_value(2.0 / 128.0), "p 0.02");
        assert_eq!(p_value(2.0 / 512.0), "p < 0.01");
    }

    #[test]
    fn memory_is_anonymous_growth_over_the_strata_build_live_heap() {
        let text = format!(
            "{MEMORY_HEADER}\nstrata,16,100,10,9000,8000,1048576,40,3000,5000,3000\n\
             mimalloc,16,100,10,9000,8000,0,40,3000,6000,3000\n"
        );
        let memory = parse_memory(Path::new("memory.csv"), &text).unwrap();
        let (sizes, values) =
            memory_ratios(&memory, &["strata".to_string(), "mimalloc".to_string()]);
        assert_eq!(sizes, [16]);
        // (5000 - 3000) KiB over 1 MiB live, and (6000 - 3000) KiB.
        assert_eq!(values, [[Some(2000.0 / 1024.0), Some(3000.0 / 1024.0)]]);
    }

    #[test]
    fn bad_files_are_refused_with_their_line() {
        let path = Path::new("runs.csv");
        let wrong_header = parse_runs(path, "allocator,size\nstrata,16\n").unwrap_err();
        assert!(wrong_header.contains("not the header"), "{wrong_header}");
        let short_row =
            parse_runs(path, &format!("{RUNS_HEADER}\n1,strata,16,SET,1\n")).unwrap_err();
        assert!(
            short_row.contains("runs.csv:2: 5 fields, not 7"),
            "{short_row}"
        );
        let junk = parse_runs(
            path,
            &format!("{RUNS_HEADER}\n1,strata,sixteen,SET,1,1,1\n"),
        )
        .unwrap_err();
        assert!(junk.contains("size \"sixteen\" is not a number"), "{junk}");
        let twice = parse_runs(
            path,
            &format!("{RUNS_HEADER}\n2,strata,16,SET,1,1,1\n2,strata,16,SET,2,1,1\n"),
        )
        .unwrap_err();
        assert!(
            twice.contains("round 2 has two runs of strata SET at 16 bytes"),
            "{twice}"
        );
        assert!(parse_memory(Path::new("memory.csv"), "")
            .unwrap_err()
            .contains("empty"));
    }

    /// The text of every `<text>` element of an SVG file, trimmed.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|element| {
                element
                    .split_once('>')?
                    .1
                    .split_once("</text>")
                    .map(|(text, _)| text.trim().to_string())
            })
            .collect()
    }

    #[test]
    fn draws_the_charts_and_refuses_a_missing_reference() {
        let out = std::env::temp_dir().join(format!("strata-kv-chart-{}", std::process::id()));
        let runs = parse_runs(Path::new("runs.csv"), &runs_text()).unwrap();
        let memory = parse_memory(
            Path::new("memory.csv"),
            &format!("{MEMORY_HEADER}\nstrata,16,100,10,9000,8000,1048576,40,3000,4000,3000\nmimalloc,16,100,10,9000,8000,0,40,3000,5000,3000\n"),
        )
        .unwrap();
        let written = draw(&runs, &memory, "mimalloc", &out).unwrap();
        assert_eq!(
            written,
            [THROUGHPUT_SVG, P99_SVG, ROUNDS_MD, MEMORY_SVG].map(|file| out.join(file))
        );
        let rounds = fs::read_to_string(out.join(ROUNDS_MD)).unwrap();
        assert!(rounds.contains("| 16 | SET | 1.25 (2 of 3, p 1.00) |"), "{rounds}");
        let throughput = texts(&fs::read_to_string(out.join(THROUGHPUT_SVG)).unwrap());
        for expected in ["SET 16 B", "MSET×10 16 B", "strata", "1.25 (2/3)"] {
            assert!(
                throughput.iter().any(|t| t == expected),
                "{expected:?} not in {throughput:?}"
            );
        }
        // The reference has no bars, and so no legend entry.
        assert!(
            !throughput.iter().any(|t| t == "mimalloc"),
            "{throughput:?}"
        );
        let p99 = texts(&fs::read_to_string(out.join(P99_SVG)).unwrap());
        // SET's p99s tie in all three rounds; MSET's is lower in round 2.
        assert!(
            p99.iter().any(|t| t == "1.00 (3/3)") && p99.iter().any(|t| t == "1.25 (1/3)"),
            "{p99:?}"
        );
        let memory_chart = texts(&fs::read_to_string(out.join(MEMORY_SVG)).unwrap());
        // strata: 1000 KiB over 1 MiB live; mimalloc: 2000 KiB.
        for expected in ["16 B values", "strata", "mimalloc", "0.98", "1.95"] {
            assert!(
                memory_chart.iter().any(|t| t == expected),
                "{expected:?} not in {memory_chart:?}"
            );
        }
        let error = draw(&runs, &memory, "jemalloc", &out).unwrap_err();
        assert!(
            error.contains("no runs of the reference allocator jemalloc"),
            "{error}"
        );
        // Without a Strata build's live heap, no memory chart.
        let no_live: Vec<Memory> = memory
            .iter()
            .map(|m| Memory {
                live_bytes: 0.0,
                ..m.clone()
            })
            .collect();
        fs::remove_file(out.join(MEMORY_SVG)).unwrap();
        assert_eq!(draw(&runs, &no_live, "mimalloc", &out).unwrap().len(), 3);
        assert!(!out.join(MEMORY_SVG).exists());
        fs::remove_dir_all(&out).unwrap();
    }
}
