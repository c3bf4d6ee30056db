//! `strata`: runs a program with `libstrata.so` preloaded.
//!
//! ```text
//! strata run -- CMD [ARGS...]
//! strata --version
//! ```
//!
//! The library is looked up next to this executable (cargo builds both into
//! the same directory) and appended, as an absolute path, to any
//! `LD_PRELOAD` already set. The command then replaces this process, so its
//! exit status and signals are the command's own.

use std::ffi::{OsStr, OsString};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The library's file name.
const LIBRARY: &str = "libstrata.so";

const USAGE: &str = "\
usage: strata run [--] CMD [ARGS...]
       strata help
       strata --version

Runs CMD with the Strata allocator preloaded (libstrata.so, found next to
this executable). Settings come from the environment:

  STRATA_STATS=1            print allocator statistics to stderr at exit
  STRATA_VERBOSE=1          print start-up details to stderr
  STRATA_PURGE_DELAY_MS=N   return unused memory to the OS after N ms (default 250)
  STRATA_HUGE_PAGES=1       back the memory in use with transparent huge pages
  STRATA_DEBUG=1            debug mode: canaries and guard pages (slow)
";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    Help,
    Version,
    Run { program: OsString, args: Vec<OsString> },
}

fn main() -> ExitCode {
    let request = match parse(std::env::args_os().skip(1)) {
        Ok(request) => request,
        Err(message) => {
            eprintln!("strata: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match request {
        Request::Help => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Request::Version => {
            println!("strata {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Request::Run { program, args } => run(&program, &args),
    }
}

/// Parses the arguments after the executable name.
fn parse(mut args: impl Iterator<Item = OsString>) -> Result<Request, String> {
    let Some(subcommand) = args.next() else {
        return Err("missing subcommand".into());
    };
    match subcommand.to_str() {
        Some("help" | "--help" | "-h") => Ok(Request::Help),
        Some("version" | "--version" | "-V") => Ok(Request::Version),
        Some("run") => {
            let mut rest: Vec<OsString> = args.collect();
            if rest.first().is_some_and(|arg| arg == "--") {
                rest.remove(0);
            }
            if rest.is_empty() {
                return Err("`run` needs a command to run, as in `strata run -- ls -l`".into());
            }
            let program = rest.remove(0);
            Ok(Request::Run { program, args: rest })
        }
        _ => Err(format!("unknown subcommand `{}`", subcommand.to_string_lossy())),
    }
}

/// Execs `program` with the library preloaded; returns only on failure.
fn run(program: &OsStr, args: &[OsString]) -> ExitCode {
    let library = match find_library() {
        Ok(library) => library,
        Err(message) => {
            eprintln!("strata: {message}");
            return ExitCode::from(2);
        }
    };
    let preload = preload_value(std::env::var_os("LD_PRELOAD"), &library);
    let error = Command::new(program).args(args).env("LD_PRELOAD", preload).exec();
    eprintln!("strata: cannot run `{}`: {error}", program.to_string_lossy());
    ExitCode::from(127)
}

/// The absolute path of `libstrata.so` beside this executable.
fn find_library() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate the strata executable: {e}"))?;
    let exe = exe.canonicalize().unwrap_or(exe);
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let library = dir.join(LIBRARY);
    if library.is_file() {
        Ok(library)
    } else {
        Err(format!(
            "{} not found next to {}; build it with `cargo build --release -p strata-shim`",
            library.display(),
            exe.display()
        ))
    }
}

/// `LD_PRELOAD` with `library` appended (separated by a colon), unless it is
/// already listed.
fn preload_value(existing: Option<OsString>, library: &Path) -> OsString {
    let existing = existing.unwrap_or_default();
    let listed = existing.to_string_lossy().split([':', ' ']).any(|entry| Path::new(entry) == library);
    if listed {
        return existing;
    }
    let mut value = existing;
    if !value.is_empty() {
        value.push(":");
    }
    value.push(library.as_os_str());
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> impl Iterator<Item = OsString> {
        list.iter().map(OsString::from).collect::<Vec<_>>().into_iter()
    }

    #[test]
    fn run_takes_the_command_after_the_separator() {
        let request = parse(args(&["run", "--", "ls", "-l"])).unwrap();
        assert_eq!(request, Request::Run { program: "ls".into(), args: vec!["-l".into()] });
        let request = parse(args(&["run", "ls"])).unwrap();
        assert_eq!(request, Request::Run { program: "ls".into(), args: vec![] });
    }

    #[test]
    fn version_is_a_request() {
        for flag in ["--version", "-V", "version"] {
            assert_eq!(parse(args(&[flag])).unwrap(), Request::Version);
        }
    }

    #[test]
    fn bad_usage_is_explained() {
        assert!(parse(args(&[])).unwrap_err().contains("missing subcommand"));
        assert!(parse(args(&["run", "--"])).unwrap_err().contains("needs a command"));
        assert!(parse(args(&["jump"])).unwrap_err().contains("unknown subcommand `jump`"));
    }

    #[test]
    fn preload_is_appended_once() {
        let lib = Path::new("/x/libstrata.so");
        assert_eq!(preload_value(None, lib), "/x/libstrata.so");
        assert_eq!(preload_value(Some("/a.so".into()), lib), "/a.so:/x/libstrata.so");
        assert_eq!(preload_value(Some("/x/libstrata.so".into()), lib), "/x/libstrata.so");
    }
}
