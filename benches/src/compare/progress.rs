//! Progress of a comparison: an `indicatif` bar on a terminal, plain lines
//! on stderr otherwise (a pipe, a log file, or `CI=true`).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Reports runs as they start and end.
pub struct Progress {
    /// The bar, when stderr is a terminal outside CI.
    bar: Option<ProgressBar>,
    /// Runs planned.
    total: u64,
    /// Runs started so far.
    started: u64,
}

/// Whether to draw a bar: stderr is a terminal and `CI` is not `true`.
fn interactive() -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    std::io::stderr().is_terminal() && !ci
}

impl Progress {
    /// Progress over `total` runs.
    pub fn new(total: u64) -> Progress {
        let bar = interactive().then(|| {
            let bar = ProgressBar::new(total);
            let style = ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30.cyan/blue}] {pos}/{len} {msg}",
            )
            .expect("the template is valid")
            .progress_chars("=> ");
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            bar,
            total,
            started: 0,
        }
    }

    /// A run starts.
    pub fn start(&mut self, what: &str) {
        self.started += 1;
        match &self.bar {
            Some(bar) => bar.set_message(what.to_string()),
            None => eprintln!(
                "[{:>width$}/{}] {what}",
                self.started,
                self.total,
                width = self.total.to_string().len()
            ),
        }
    }

    /// The run started last ended; `failure` says how it failed.
    pub fn end(&mut self, failure: Option<&str>) {
        if let Some(failure) = failure {
            self.note(&format!("FAILED: {failure}"));
        }
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    /// A line that stays, above the bar if there is one.
    pub fn note(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Removes the bar.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
