//! `strata-bench compare`.

use std::process::ExitCode;

/// Runs `strata-bench compare` with the arguments after the command name.
pub fn main(_args: Vec<String>) -> ExitCode {
    eprintln!("strata-bench compare: not built yet");
    ExitCode::FAILURE
}
