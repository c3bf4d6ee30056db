//! What the benches' tests share: a run of one of the crate's binaries,
//! described for assertion messages.

use std::process::{Command, Output};

/// Runs `command` to its end and returns its output, with a description
/// of it (exit status, standard output and error) for assertion messages.
pub fn run(command: &mut Command) -> (Output, String) {
    let output = command.output().expect("run the benchmark binary");
    let text = format!(
        "status: {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output, text)
}
