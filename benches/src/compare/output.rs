//! The report's files: CSV, Markdown, and the charts.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use super::allocators::UNHARDENED;
use super::charts::RatioChart;
use super::results::Results;
use super::stats::format_ratio;

/// File names inside the report directory.
pub const CSV: &str = "report.csv";
/// Every run, one line each.
pub const RUNS_CSV: &str = "runs.csv";
/// The Markdown report.
pub const MARKDOWN: &str = "report.md";
/// The chart of time ratios.
pub const TIME_SVG: &str = "time-ratio.svg";
/// The chart of peak-RSS ratios.
pub const RSS_SVG: &str = "rss-ratio.svg";

/// The header of [`CSV`].
pub const CSV_HEADER: &str = "workload,kind,allocator,runs,ok_runs,median_time_s,\
median_peak_rss_kib,time_vs_glibc,time_vs_mimalloc,rss_vs_glibc,rss_vs_mimalloc,\
peak_live_bytes,rss_per_live_byte";

/// Where and when the comparison ran, for the Markdown report.
pub struct Context {
    /// The date and time, `YYYY-MM-DD HH:MM UTC`.
    pub date: String,
    /// The machine, e.g. `Debian GNU/Linux 12 (bookworm) x86_64, 2 cores, <cpu>`.
    pub machine: String,
    /// The command that reproduces the run.
    pub command: String,
    /// The workload size of the own workloads.
    pub size: &'static str,
}

fn option_cell(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(String::new, |v| format!("{v:.decimals$}"))
}

/// Writes the CSV of medians and ratios, one line per workload and allocator.
pub fn csv(results: &Results) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    for (subject, kind) in &results.subjects {
        for allocator in &results.allocators {
            let cell = results
                .cell(subject, allocator)
                .cloned()
                .unwrap_or_default();
            let rss_kib = results.rss_mib(subject, allocator).map(|m| m * 1024.0);
            let _ = writeln!(
                out,
                "{subject},{kind},{allocator},{},{},{},{},{},{},{},{},{},{}",
                cell.times.len() + cell.failures.len(),
                cell.times.len(),
                option_cell(results.time(subject, allocator), 4),
                option_cell(rss_kib, 0),
                option_cell(results.time_ratio(subject, allocator, "glibc"), 4),
                option_cell(results.time_ratio(subject, allocator, "mimalloc"), 4),
                option_cell(results.rss_ratio(subject, allocator, "glibc"), 4),
                option_cell(results.rss_ratio(subject, allocator, "mimalloc"), 4),
                results
                    .peak_live
                    .get(subject)
                    .map_or_else(String::new, u64::to_string),
                option_cell(results.rss_per_live(subject, allocator), 4),
            );
        }
    }
    out
}

/// Writes the CSV of every run.
pub fn runs_csv(results: &Results) -> String {
    let mut out = String::from("round,workload,allocator,time_s,peak_rss_kib,status\n");
    for run in &results.runs {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{}",
            run.round,
            run.subject,
            run.allocator,
            option_cell(run.time_s, 4),
            run.peak_rss_kib.map_or_else(String::new, |k| k.to_string()),
            // Failures are free text: keep them to one CSV field.
            run.status.replace([',', '\n', '\r', '"'], " ")
        );
    }
    out
}

/// The Markdown table of medians and ratios, as in the README.
pub fn markdown_table(results: &Results) -> String {
    let references: Vec<&str> = ["glibc", "mimalloc"]
        .into_iter()
        .filter(|r| results.has_allocator(r))
        .collect();
    let mut header = vec![
        "workload".to_string(),
        "allocator".into(),
        "time (s)".into(),
    ];
    header.extend(references.iter().map(|r| format!("time ÷ {r}")));
    header.push("peak RSS (MiB)".into());
    header.extend(references.iter().map(|r| format!("RSS ÷ {r}")));
    header.push("ok runs".into());
    let mut out = format!("| {} |\n", header.join(" | "));
    let align: Vec<&str> = header
        .iter()
        .enumerate()
        .map(|(i, _)| if i < 2 { "---" } else { "---:" })
        .collect();
    let _ = writeln!(out, "| {} |", align.join(" | "));
    for (subject, _) in &results.subjects {
        for allocator in &results.allocators {
            let cell = results
                .cell(subject, allocator)
                .cloned()
                .unwrap_or_default();
            let name = if allocator == "strata" {
                format!("**{allocator}**")
            } else {
                allocator.clone()
            };
            let mut row = vec![
                subject.clone(),
                name,
                option_cell(results.time(subject, allocator), 3),
            ];
            row.extend(
                references
                    .iter()
                    .map(|r| format_ratio(results.time_ratio(subject, allocator, r))),
            );
            row.push(option_cell(results.rss_mib(subject, allocator), 1));
            row.extend(
                references
                    .iter()
                    .map(|r| format_ratio(results.rss_ratio(subject, allocator, r))),
            );
            row.push(format!(
                "{}/{}",
                cell.times.len(),
                cell.times.len() + cell.failures.len()
            ));
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
    }
    out
}

/// The table of peak RSS ÷ peak live bytes, for the workloads that print
/// their peak live bytes (the fragmentation phase change).
pub fn fragmentation_table(results: &Results) -> Option<String> {
    if results.peak_live.is_empty() {
        return None;
    }
    let mut out = String::from(
        "| workload | allocator | peak RSS (MiB) | peak live (MiB) | peak RSS ÷ peak live |\n\
         | --- | --- | ---: | ---: | ---: |\n",
    );
    for (subject, live) in &results.peak_live {
        for allocator in &results.allocators {
            let _ = writeln!(
                out,
                "| {subject} | {allocator} | {} | {:.1} | {} |",
                option_cell(results.rss_mib(subject, allocator), 1),
                *live as f64 / (1024.0 * 1024.0),
                format_ratio(results.rss_per_live(subject, allocator)),
            );
        }
    }
    Some(out)
}

/// What Strata's default hardening costs, when the run had both `strata`
/// and the shim built without the hardening: per subject, the median time
/// of each and the median over the rounds of their time ratio within a
/// round (hardened ÷ unhardened, above 1 is a cost), then the geometric
/// means of those ratios over the own workloads, the real programs, and
/// all subjects.
pub fn hardening_table(results: &Results) -> Option<String> {
    if !results.has_allocator("strata") || !results.has_allocator(UNHARDENED) {
        return None;
    }
    let paired = |s: &str| results.paired_time_ratio(s, "strata", UNHARDENED);
    let mut out = format!(
        "| workload | strata (s) | {UNHARDENED} (s) | time ratio, hardened ÷ unhardened |\n\
         | --- | ---: | ---: | ---: |\n"
    );
    for (subject, _) in &results.subjects {
        let _ = writeln!(
            out,
            "| {subject} | {} | {} | {} |",
            option_cell(results.time(subject, "strata"), 3),
            option_cell(results.time(subject, UNHARDENED), 3),
            option_cell(paired(subject), 3),
        );
    }
    for (label, kind) in [
        ("own workloads", Some("own")),
        ("real programs", Some("program")),
        ("all", None),
    ] {
        let _ = writeln!(
            out,
            "| **geometric mean, {label}** | | | **{}** |",
            option_cell(results.mean_ratio(kind, paired), 3),
        );
    }
    Some(out)
}

/// Geometric means of the ratios to glibc, per allocator and kind.
fn means_table(results: &Results) -> Option<String> {
    if !results.has_allocator("glibc") {
        return None;
    }
    let mut out = String::from(
        "| allocator | time, own workloads | time, real programs | time, all | \
         peak RSS, own workloads | peak RSS, real programs | peak RSS, all |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for allocator in &results.allocators {
        let time = |s: &str| results.time_ratio(s, allocator, "glibc");
        let rss = |s: &str| results.rss_ratio(s, allocator, "glibc");
        let cells: Vec<String> = [
            results.mean_ratio(Some("own"), time),
            results.mean_ratio(Some("program"), time),
            results.mean_ratio(None, time),
            results.mean_ratio(Some("own"), rss),
            results.mean_ratio(Some("program"), rss),
            results.mean_ratio(None, rss),
        ]
        .into_iter()
        .map(format_ratio)
        .collect();
        let _ = writeln!(out, "| {allocator} | {} |", cells.join(" | "));
    }
    Some(out)
}

/// The whole Markdown report.
pub fn markdown(results: &Results, context: &Context, descriptions: &[(String, String)]) -> String {
    let mut out = String::from("# Strata comparison report\n\n");
    let _ = writeln!(
        out,
        "- Date: {}\n- Machine: {}\n- Command: `{}`\n- {} interleaved round(s); own workloads at size `{}`\n",
        context.date, context.machine, context.command, results.rounds, context.size
    );
    out.push_str(
        "Each figure is the median over the rounds of one workload under one allocator: \
         the wall time of the measured processes and their peak RSS (`ru_maxrss` from \
         `wait4`). Ratios are allocator ÷ reference: below 1 is faster or smaller. \
         Every run's output was compared with glibc's; only runs with the same output count.\n\n",
    );
    out.push_str("## Time and peak RSS\n\n");
    out.push_str(&markdown_table(results));
    if let Some(table) = means_table(results) {
        out.push_str("\n## Geometric means of the ratios to glibc\n\n");
        out.push_str(&table);
    }
    if let Some(table) = fragmentation_table(results) {
        out.push_str("\n## Fragmentation: peak RSS ÷ peak live bytes\n\n");
        out.push_str(
            "The `fragmentation` workload fills memory with 16-128 B blocks, frees a random \
             90%, then allocates 160-1024 B blocks up to the same live size. Peak live bytes \
             are the payload the workload holds at its peak; peak RSS also holds the \
             process's fixed costs (binary, libc, 8 bytes of bookkeeping per block), the \
             same under every allocator. Lower is better.\n\n",
        );
        out.push_str(&table);
    }
    if let Some(table) = hardening_table(results) {
        out.push_str("\n## Cost of Strata's default hardening\n\n");
        let _ = write!(
            out,
            "`{UNHARDENED}` is the shim built with `--cfg strata_unhardened`: no encoded \
             free-list links, no shuffled carving (for this measurement only). Each ratio is \
             the median over the rounds of Strata's time ÷ {UNHARDENED}'s in the same round; \
             above 1 is what the hardening costs.\n\n"
        );
        out.push_str(&table);
    }
    let _ = write!(
        out,
        "\n## Charts\n\n![time ratios]({TIME_SVG})\n\n![peak RSS ratios]({RSS_SVG})\n"
    );
    out.push_str("\n## Output check\n\n");
    let failures = results.failures();
    if failures.is_empty() {
        let _ = writeln!(
            out,
            "All {} runs printed the same output as glibc.",
            results.runs.len()
        );
    } else {
        let _ = writeln!(out, "{} run(s) failed:\n", failures.len());
        for failure in &failures {
            let first_line = failure.lines().next().unwrap_or_default();
            let _ = writeln!(out, "- {first_line}");
        }
    }
    out.push_str("\n## Workloads\n\n");
    for (subject, kind) in &results.subjects {
        let about = descriptions
            .iter()
            .find(|(name, _)| name == subject)
            .map_or("", |(_, about)| about.as_str());
        let _ = writeln!(out, "- `{subject}` ({kind}): {about}");
    }
    if results.subjects.iter().any(|(s, _)| s == "redis") {
        out.push_str(
            "\nNote: Debian's redis-server links jemalloc, so its `glibc` row is jemalloc; \
             for redis the time is that of its clients and the RSS is the server's.\n",
        );
    }
    out
}

/// `text` with its first letter in upper case.
fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Writes every file of the report into `dir`.
pub fn write_all(
    dir: &Path,
    results: &Results,
    context: &Context,
    descriptions: &[(String, String)],
) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    write(CSV, csv(results))?;
    write(RUNS_CSV, runs_csv(results))?;
    write(MARKDOWN, markdown(results, context, descriptions))?;

    let reference = if results.has_allocator("glibc") {
        "glibc"
    } else {
        results.allocators.first().map_or("glibc", String::as_str)
    };
    let others: Vec<String> = results
        .allocators
        .iter()
        .filter(|a| *a != reference)
        .cloned()
        .collect();
    let groups: Vec<String> = results.subjects.iter().map(|(s, _)| s.clone()).collect();
    let rounds = results.rounds;
    for (file, what, ratio) in [
        (
            TIME_SVG,
            "time",
            &(|s: &str, a: &str| results.time_ratio(s, a, reference))
                as &dyn Fn(&str, &str) -> Option<f64>,
        ),
        (RSS_SVG, "peak RSS", &|s: &str, a: &str| {
            results.rss_ratio(s, a, reference)
        }),
    ] {
        let values: Vec<Vec<Option<f64>>> = groups
            .iter()
            .map(|s| others.iter().map(|a| ratio(s, a)).collect())
            .collect();
        let title = format!(
            "{} ÷ {reference} per workload (median of {rounds} round(s); lower is better)",
            capitalised(what)
        );
        let axis = format!("{what} ÷ {reference}, log scale: left of 1 is better than {reference}");
        RatioChart {
            title: &title,
            axis: &axis,
            groups: &groups,
            allocators: &others,
            values: &values,
            notes: &[],
        }
        .write_svg(&dir.join(file))?;
    }
    Ok(())
}
