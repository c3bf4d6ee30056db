//! `strata-bench soak`.

use std::process::ExitCode;

/// Runs `strata-bench soak` with the arguments after the command name.
pub fn main(_args: Vec<String>) -> ExitCode {
    eprintln!("strata-bench soak: not built yet");
    ExitCode::FAILURE
}
