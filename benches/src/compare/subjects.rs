//! What the comparison runs: the real programs of
//! [`strata_tests::real_programs`] and the workloads of our own in the
//! `strata-workloads` binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use strata_tests::real_programs::{run_program, Allocator, Outcome, Workload};

/// The line of the `fragmentation` workload's output that gives its peak
/// live bytes (deterministic, so it compares equal under every allocator).
pub const PEAK_LIVE_PREFIX: &str = "peak live bytes: ";

/// How much work the workloads of our own do (`--size` of `strata-workloads`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    /// A fraction of a second each, for tests.
    Tiny,
    /// The default: a few tenths of a second each.
    Quick,
    /// `--full`: four times `quick`.
    Full,
}

impl Size {
    /// The name `strata-workloads --size` takes.
    pub fn name(self) -> &'static str {
        match self {
            Size::Tiny => "tiny",
            Size::Quick => "quick",
            Size::Full => "full",
        }
    }

    /// The size called `name`, if any.
    pub fn from_name(name: &str) -> Option<Size> {
        [Size::Tiny, Size::Quick, Size::Full]
            .into_iter()
            .find(|size| size.name() == name)
    }
}

/// The `strata-workloads` binary and the workloads it offers.
#[derive(Clone, Debug)]
pub struct OwnWorkloads {
    /// The binary's path.
    pub binary: PathBuf,
    /// Each workload's name and one-line description, in table order.
    pub list: Vec<(String, String)>,
}

impl OwnWorkloads {
    /// Finds (building it if need be) the `strata-workloads` binary and
    /// asks it for its workloads.
    ///
    /// `STRATA_WORKLOADS=/path/to/strata-workloads` names the binary.
    /// Otherwise it is the sibling of the running executable, first built
    /// (or found up to date) with `cargo build --profile <same profile> -p
    /// strata-benches --bin strata-workloads` into the same target
    /// directory. If cargo cannot be run, an existing sibling is used as it
    /// is.
    pub fn locate() -> Result<OwnWorkloads, String> {
        let binary = match std::env::var_os("STRATA_WORKLOADS").filter(|p| !p.is_empty()) {
            Some(path) => PathBuf::from(path),
            None => build_sibling()?,
        };
        let output = Command::new(&binary)
            .arg("--list")
            .output()
            .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
        if !output.status.success() {
            return Err(format!(
                "{} --list failed ({})",
                binary.display(),
                output.status
            ));
        }
        let list = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .map(|(name, about)| (name.to_string(), about.to_string()))
            .collect::<Vec<_>>();
        if list.is_empty() {
            return Err(format!("{} --list printed no workloads", binary.display()));
        }
        Ok(OwnWorkloads { binary, list })
    }
}

/// Builds `strata-workloads` next to the running executable and returns
/// its path.
fn build_sibling() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let profile_dir = exe
        .parent()
        .ok_or("this executable has no directory")?
        .to_path_buf();
    let sibling = profile_dir.join("strata-workloads");
    let target_dir = profile_dir.parent().map(Path::to_path_buf);
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_string(),
        Some(name) => name.to_string(),
        None => "release".to_string(),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    command
        .args(["build", "--quiet", "--profile", &profile])
        .args(["-p", "strata-benches", "--bin", "strata-workloads"])
        .current_dir(strata_tests::real_programs::workspace_root());
    if let Some(dir) = &target_dir {
        command.env("CARGO_TARGET_DIR", dir);
    }
    match command.output() {
        Ok(output) if output.status.success() && sibling.is_file() => Ok(sibling),
        Ok(output) if !sibling.is_file() => Err(format!(
            "building strata-workloads failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )),
        Err(error) if !sibling.is_file() => Err(format!(
            "cannot run cargo to build strata-workloads ({error}); build it with \
             `cargo build --release -p strata-benches` or set STRATA_WORKLOADS"
        )),
        _ => {
            eprintln!(
                "strata-bench compare: could not rebuild strata-workloads; using {}",
                sibling.display()
            );
            Ok(sibling)
        }
    }
}

/// One thing the comparison runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// A real program's scripted session.
    Program(Workload),
    /// A workload of `strata-workloads`.
    Own(String),
}

impl Subject {
    /// The name on the command line and in the report.
    pub fn name(&self) -> &str {
        match self {
            Subject::Program(workload) => workload.name(),
            Subject::Own(name) => name,
        }
    }

    /// `program` or `own`, for the report.
    pub fn kind(&self) -> &'static str {
        match self {
            Subject::Program(_) => "program",
            Subject::Own(_) => "own",
        }
    }

    /// Makes sure the programs the subject needs are installed.
    pub fn ensure_tools(&self) -> Result<(), String> {
        match self {
            Subject::Program(workload) => workload.ensure_tools(),
            Subject::Own(_) => Ok(()),
        }
    }

    /// Runs the subject once under `allocator`.
    pub fn run(
        &self,
        allocator: &Allocator,
        own: &OwnWorkloads,
        size: Size,
        stats: bool,
    ) -> Result<Outcome, String> {
        match self {
            Subject::Program(workload) => workload.run(allocator, stats),
            Subject::Own(name) => run_program(
                allocator,
                &own.binary,
                &[name.clone(), "--size".into(), size.name().into()],
                name,
                stats,
            ),
        }
    }
}

/// The peak live bytes a workload printed, if it printed them.
pub fn peak_live_bytes(output: &str) -> Option<u64> {
    output
        .lines()
        .find_map(|line| line.strip_prefix(PEAK_LIVE_PREFIX))
        .and_then(|value| value.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_live_bytes_is_read_from_its_line() {
        assert_eq!(
            peak_live_bytes("workload: fragmentation\npeak live bytes: 1234\nchecksum: 0\n"),
            Some(1234)
        );
        assert_eq!(peak_live_bytes("checksum: 0\n"), None);
        assert_eq!(peak_live_bytes("peak live bytes: many\n"), None);
    }

    #[test]
    fn sizes_round_trip_through_their_names() {
        for size in [Size::Tiny, Size::Quick, Size::Full] {
            assert_eq!(Size::from_name(size.name()), Some(size));
        }
        assert_eq!(Size::from_name("huge"), None);
    }
}
