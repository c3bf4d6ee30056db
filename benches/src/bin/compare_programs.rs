//! `compare_programs`: the former name of `strata-bench compare`, kept so
//! that existing scripts keep working. It takes the same options (see
//! `strata-bench compare --help`).

use std::process::ExitCode;

fn main() -> ExitCode {
    strata_benches::compare::main(std::env::args().skip(1).collect())
}
