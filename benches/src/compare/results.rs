//! The measurements of one comparison, and the figures derived from them.

use std::collections::BTreeMap;

use super::stats::{geometric_mean, median_of, ratio};

/// One run of one subject under one allocator.
#[derive(Clone, Debug)]
pub struct RunRecord {
    /// The round, from 1.
    pub round: usize,
    /// The subject's name.
    pub subject: String,
    /// The allocator's name.
    pub allocator: String,
    /// Wall time in seconds, when the run succeeded.
    pub time_s: Option<f64>,
    /// Peak RSS in KiB (`ru_maxrss`), when the run succeeded.
    pub peak_rss_kib: Option<u64>,
    /// `ok`, or what went wrong.
    pub status: String,
}

/// The runs of one subject under one allocator.
#[derive(Clone, Debug, Default)]
pub struct Cell {
    /// Wall times (seconds) of the runs that succeeded with glibc's output.
    pub times: Vec<f64>,
    /// Peak RSS (KiB) of the same runs.
    pub rss_kib: Vec<u64>,
    /// What went wrong in the other runs.
    pub failures: Vec<String>,
}

/// Everything one comparison measured.
#[derive(Clone, Debug, Default)]
pub struct Results {
    /// Each subject's name and kind (`program` or `own`), in table order.
    pub subjects: Vec<(String, &'static str)>,
    /// The allocators, in table order.
    pub allocators: Vec<String>,
    /// Rounds run.
    pub rounds: usize,
    /// The runs of each (subject, allocator).
    pub cells: BTreeMap<(String, String), Cell>,
    /// Peak live bytes printed by the subjects that print them.
    pub peak_live: BTreeMap<String, u64>,
    /// Every run, in the order run.
    pub runs: Vec<RunRecord>,
}

impl Results {
    /// The cell of `(subject, allocator)`, if measured.
    pub fn cell(&self, subject: &str, allocator: &str) -> Option<&Cell> {
        self.cells
            .get(&(subject.to_string(), allocator.to_string()))
    }

    /// Whether `allocator` was compared.
    pub fn has_allocator(&self, allocator: &str) -> bool {
        self.allocators.iter().any(|a| a == allocator)
    }

    /// Median wall time in seconds.
    pub fn time(&self, subject: &str, allocator: &str) -> Option<f64> {
        median_of(&self.cell(subject, allocator)?.times)
    }

    /// Median peak RSS in MiB.
    pub fn rss_mib(&self, subject: &str, allocator: &str) -> Option<f64> {
        let kib: Vec<f64> = self
            .cell(subject, allocator)?
            .rss_kib
            .iter()
            .map(|&k| k as f64)
            .collect();
        median_of(&kib).map(|k| k / 1024.0)
    }

    /// Median time ÷ the reference's median time.
    pub fn time_ratio(&self, subject: &str, allocator: &str, reference: &str) -> Option<f64> {
        ratio(self.time(subject, allocator), self.time(subject, reference))
    }

    /// The median over the rounds of `allocator`'s time ÷ `reference`'s
    /// time in the same round. Within a round the two ran close together,
    /// so pairing them cancels most of a shared machine's drift; rounds in
    /// which either run failed are left out.
    pub fn paired_time_ratio(&self, subject: &str, allocator: &str, reference: &str) -> Option<f64> {
        let time = |round: usize, name: &str| {
            self.runs
                .iter()
                .find(|r| r.round == round && r.subject == subject && r.allocator == name)
                .and_then(|r| r.time_s)
        };
        let ratios: Vec<f64> = (1..=self.rounds)
            .filter_map(|round| ratio(time(round, allocator), time(round, reference)))
            .collect();
        median_of(&ratios)
    }

    /// Median peak RSS ÷ the reference's median peak RSS.
    pub fn rss_ratio(&self, subject: &str, allocator: &str, reference: &str) -> Option<f64> {
        ratio(
            self.rss_mib(subject, allocator),
            self.rss_mib(subject, reference),
        )
    }

    /// Median peak RSS ÷ the peak live bytes the subject printed.
    pub fn rss_per_live(&self, subject: &str, allocator: &str) -> Option<f64> {
        let live = *self.peak_live.get(subject)? as f64;
        ratio(
            self.rss_mib(subject, allocator)
                .map(|m| m * 1024.0 * 1024.0),
            Some(live),
        )
    }

    /// The geometric mean over the subjects of `kind` (`None`: all) of a
    /// per-subject ratio.
    pub fn mean_ratio(
        &self,
        kind: Option<&str>,
        per_subject: impl Fn(&str) -> Option<f64>,
    ) -> Option<f64> {
        let ratios: Vec<f64> = self
            .subjects
            .iter()
            .filter(|(_, k)| kind.is_none_or(|kind| kind == *k))
            .filter_map(|(name, _)| per_subject(name))
            .collect();
        geometric_mean(&ratios)
    }

    /// Every failure, as `subject under allocator: what`.
    pub fn failures(&self) -> Vec<String> {
        let mut list = Vec::new();
        for (subject, _) in &self.subjects {
            for allocator in &self.allocators {
                if let Some(cell) = self.cell(subject, allocator) {
                    for failure in &cell.failures {
                        list.push(format!("{subject} under {allocator}: {failure}"));
                    }
                }
            }
        }
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Results {
        let mut results = Results {
            subjects: vec![("frag".into(), "own"), ("sqlite".into(), "program")],
            allocators: vec!["glibc".into(), "strata".into()],
            rounds: 3,
            ..Results::default()
        };
        let mut put = |s: &str, a: &str, times: &[f64], rss: &[u64]| {
            results.cells.insert(
                (s.into(), a.into()),
                Cell {
                    times: times.to_vec(),
                    rss_kib: rss.to_vec(),
                    failures: Vec::new(),
                },
            );
        };
        put("frag", "glibc", &[2.0, 1.0, 9.0], &[2048, 1024, 4096]);
        put("frag", "strata", &[1.0, 1.0, 1.0], &[1024, 1024, 1024]);
        put("sqlite", "glibc", &[1.0], &[1024]);
        put("sqlite", "strata", &[4.0], &[512]);
        results.peak_live.insert("frag".into(), 512 * 1024);
        results
    }

    #[test]
    fn medians_and_ratios() {
        let results = sample();
        assert_eq!(results.time("frag", "glibc"), Some(2.0));
        assert_eq!(results.rss_mib("frag", "glibc"), Some(2.0));
        assert_eq!(results.time_ratio("frag", "strata", "glibc"), Some(0.5));
        assert_eq!(results.rss_ratio("frag", "strata", "glibc"), Some(0.5));
        assert_eq!(results.rss_per_live("frag", "strata"), Some(2.0));
        assert_eq!(results.rss_per_live("sqlite", "strata"), None);
        assert_eq!(results.time_ratio("frag", "strata", "mimalloc"), None);
    }

    #[test]
    fn paired_ratios_take_the_median_over_rounds() {
        let mut results = sample();
        let mut run = |round: usize, allocator: &str, time_s: Option<f64>| {
            results.runs.push(RunRecord {
                round,
                subject: "frag".into(),
                allocator: allocator.into(),
                time_s,
                peak_rss_kib: time_s.map(|_| 1024),
                status: if time_s.is_some() { "ok".into() } else { "failed".into() },
            });
        };
        // Rounds 1-3 give ratios 1.1, 1.0 and 1.3; round 4's failure drops it.
        run(1, "strata", Some(2.2));
        run(1, "glibc", Some(2.0));
        run(2, "glibc", Some(5.0));
        run(2, "strata", Some(5.0));
        run(3, "strata", Some(1.3));
        run(3, "glibc", Some(1.0));
        run(4, "strata", None);
        run(4, "glibc", Some(1.0));
        results.rounds = 4;
        let paired = results.paired_time_ratio("frag", "strata", "glibc").expect("three pairs");
        assert!((paired - 1.1).abs() < 1e-12, "{paired}");
        assert_eq!(results.paired_time_ratio("frag", "strata", "mimalloc"), None);
        assert_eq!(results.paired_time_ratio("sqlite", "strata", "glibc"), None);
    }

    #[test]
    fn mean_ratio_by_kind() {
        let results = sample();
        let time = |s: &str| results.time_ratio(s, "strata", "glibc");
        assert_eq!(results.mean_ratio(Some("own"), time), Some(0.5));
        assert_eq!(results.mean_ratio(Some("program"), time), Some(4.0));
        let all = results.mean_ratio(None, time).expect("two ratios");
        assert!((all - 2f64.sqrt()).abs() < 1e-12);
    }
}
