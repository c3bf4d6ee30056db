//! `strata-bench`: the benchmark and soak commands that compare Strata with
//! its peers and put it under long load.
//!
//! ```text
//! strata-bench compare [options]   # the comparison report (see `compare --help`)
//! strata-bench soak [options]      # the soak run (see `soak --help`)
//! strata-bench kv-chart [options]  # the charts of a benches/kv.sh run (see `kv-chart --help`)
//! strata-bench --version
//! ```

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let command = args.next();
    let rest: Vec<String> = args.collect();
    match command.as_deref() {
        Some("compare") => strata_benches::compare::main(rest),
        Some("soak") => strata_benches::soak::main(rest),
        Some("kv-chart") => strata_benches::kv::main(rest),
        Some("--version") => {
            println!("strata-bench {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: strata-bench compare [options] | soak [options] | kv-chart [options] | --version");
            ExitCode::from(2)
        }
    }
}
