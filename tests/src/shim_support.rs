//! Support for the shim's integration tests (`tests/shim.rs`): building
//! `libstrata.so` and the `strata` launcher, compiling the C and C++ test
//! programs in `tests/c/`, and running them with the shim preloaded.
//!
//! Everything is built once per test process, into the target directory the
//! test binary itself lives in, so `CARGO_TARGET_DIR` and `--target-dir` are
//! respected without looking at them. Missing tools are a test failure with
//! the Debian package to install, never a skip.
//!
//! Every program runs under a hang guard ([`HANG_GUARD`]): one that has not
//! finished by then is killed, with everything it forked, and the test fails
//! saying so. The guard is far above any program's running time; it only
//! keeps a deadlock (the bug some tests look for) from hanging the suite.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread;
use std::time::Duration;

/// Text of the start-up banner that `STRATA_VERBOSE=1` prints when the
/// library serves the process's `malloc`.
pub const INTERPOSED: &str = "malloc interposed: yes";

/// Bytes in one Strata slice (the core's `page::SLICE_SIZE`): the unit that
/// some diagnostics name, by its address.
pub const SLICE_SIZE: usize = 64 * 1024;

/// How long a program may run before [`run`] kills it and fails the test: a
/// guard against hangs (deadlocks), not a performance limit.
pub const HANG_GUARD: Duration = Duration::from_secs(300);

/// The built shim.
#[derive(Debug)]
pub struct Shim {
    /// Absolute path of `libstrata.so`.
    pub library: PathBuf,
    /// Absolute path of the `strata` launcher.
    pub launcher: PathBuf,
}

/// The target directory holding the running test binary
/// (`<target>/<profile>/deps/<test>`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.ancestors()
        .nth(3)
        .unwrap_or_else(|| panic!("{} is not inside a cargo target directory", exe.display()))
        .to_path_buf()
}

/// Where compiled test programs go: beside the test binary's profile.
fn programs_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile = exe.ancestors().nth(2).expect("a profile directory");
    profile.join("strata-shim-programs")
}

/// The workspace root.
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the workspace").to_path_buf()
}

/// Builds `libstrata.so` and the launcher (release profile, as shipped) once,
/// with the cargo running these tests, into the same target directory.
pub fn shim() -> &'static Shim {
    static SHIM: OnceLock<Shim> = OnceLock::new();
    SHIM.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let target = target_dir();
        let output = Command::new(&cargo)
            .args(["build", "--release", "-p", "strata-shim"])
            .current_dir(workspace_dir())
            .env("CARGO_TARGET_DIR", &target)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", Path::new(&cargo).display()));
        assert!(
            output.status.success(),
            "cargo build --release -p strata-shim failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let release = target.join("release");
        let shim = Shim { library: release.join("libstrata.so"), launcher: release.join("strata") };
        assert!(shim.library.is_file(), "the build did not produce {}", shim.library.display());
        assert!(shim.launcher.is_file(), "the build did not produce {}", shim.launcher.display());
        shim
    })
}

/// Compiles `tests/c/<source>` (a `.c` or `.cpp` file) once and returns the
/// executable.
pub fn program(source: &str) -> PathBuf {
    program_with(source, &[])
}

/// Compiles `tests/c/<source>` once with extra compiler `flags` (for example
/// `-no-pie`) and returns the executable, named after the source and the
/// flags.
pub fn program_with(source: &str, flags: &[&str]) -> PathBuf {
    let stem = Path::new(source).file_stem().expect("a source file name").to_string_lossy().into_owned();
    let name = std::iter::once(stem.as_str())
        .chain(flags.iter().map(|flag| flag.trim_start_matches('-')))
        .collect::<Vec<_>>()
        .join("-");
    built(source, flags, name)
}

/// Compiles `tests/c/<source>` once as a shared library (`-shared -fPIC`)
/// and returns `lib<stem>.so`.
pub fn shared_library(source: &str) -> PathBuf {
    let stem = Path::new(source).file_stem().expect("a source file name").to_string_lossy().into_owned();
    built(source, &["-shared", "-fPIC"], format!("lib{stem}.so"))
}

/// The ELF file type of `path` (`e_type`): 2 for a fixed-address
/// executable (non-PIE), 3 for a shared object or a PIE.
pub fn elf_type(path: &Path) -> u16 {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    assert!(bytes.len() > 18 && bytes.starts_with(b"\x7fELF"), "{} is not an ELF file", path.display());
    u16::from_le_bytes([bytes[16], bytes[17]])
}

/// The section names of the 64-bit little-endian ELF file at `path`.
pub fn elf_section_names(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    assert!(bytes.len() > 64 && bytes.starts_with(b"\x7fELF") && bytes[4] == 2, "{} is not ELF64", path.display());
    let u16_at = |at: usize| usize::from(u16::from_le_bytes([bytes[at], bytes[at + 1]]));
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
    let (table, entry_size, count, names_index) = (u64_at(0x28), u16_at(0x3a), u16_at(0x3c), u16_at(0x3e));
    let header = |index: usize| table + index * entry_size;
    let names = u64_at(header(names_index) + 0x18);
    (0..count)
        .map(|index| {
            let start = names + u32_at(header(index));
            let end = start + bytes[start..].iter().position(|&b| b == 0).expect("a terminated section name");
            String::from_utf8_lossy(&bytes[start..end]).into_owned()
        })
        .collect()
}

/// `e_type` of a fixed-address (non-PIE) executable.
pub const ET_EXEC: u16 = 2;
/// `e_type` of a shared object or a position-independent executable.
pub const ET_DYN: u16 = 3;

/// Builds `output` from `source` with `flags`, once per process.
fn built(source: &str, flags: &[&str], output: String) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, Arc<OnceLock<PathBuf>>>>> = OnceLock::new();
    let cell = BUILT.get_or_init(Default::default).lock().unwrap().entry(output.clone()).or_default().clone();
    cell.get_or_init(|| compile(source, flags, &output)).clone()
}

fn compile(source: &str, flags: &[&str], name: &str) -> PathBuf {
    let path = workspace_dir().join("tests/c").join(source);
    assert!(path.is_file(), "no test program {}", path.display());
    let cxx = path.extension() == Some(OsStr::new("cpp"));
    let (compiler, package) = if cxx { ("g++", "g++") } else { ("cc", "gcc") };
    let dir = programs_dir();
    std::fs::create_dir_all(&dir).expect("create the programs directory");
    let output = dir.join(name);
    let partial = dir.join(format!("{name}.{}.tmp", std::process::id()));
    let mut command = Command::new(compiler);
    if cxx {
        command.arg("-std=c++17");
    } else {
        command.arg("-std=gnu11");
    }
    // -fno-builtin: the compiler must not elide or fold allocation calls the
    // tests make on purpose.
    command
        .args(["-O1", "-g", "-fno-builtin", "-Wall", "-Wextra", "-pthread"])
        .args(["-Wno-alloc-size-larger-than", "-Wno-use-after-free", "-Wno-free-nonheap-object"])
        .arg("-Wno-deprecated-declarations")
        .args(flags)
        // `strata.h`, the shim's extensions.
        .arg("-I")
        .arg(workspace_dir().join("userspace-shim/include"))
        .arg("-o")
        .arg(&partial)
        .arg(&path)
        .arg("-ldl");
    let result = command.output().unwrap_or_else(|e| {
        panic!("cannot run the compiler `{compiler}` ({e}); install the Debian package `{package}`")
    });
    assert!(
        result.status.success(),
        "{compiler} {} failed on {}:\n{}",
        flags.join(" "),
        path.display(),
        String::from_utf8_lossy(&result.stderr)
    );
    std::fs::rename(&partial, &output).expect("move the compiled program into place");
    output
}

/// The outcome of one program run.
#[derive(Debug)]
pub struct Run {
    /// The command line, for messages.
    pub command: String,
    /// How the program ended.
    pub status: ExitStatus,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl Run {
    /// Everything about the run, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "command: {}\nstatus: {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.command, self.status, self.stdout, self.stderr
        )
    }

    /// Asserts the program exited with status 0 and printed its "ok" line.
    pub fn assert_ok(&self) -> &Self {
        assert!(self.status.success(), "the program failed\n{}", self.describe());
        assert!(
            self.stdout.lines().any(|line| line.starts_with("ok ") && line.ends_with(" checks")),
            "the program did not report its checks\n{}",
            self.describe()
        );
        self
    }

    /// Asserts the start-up banner shows the library serving `malloc`.
    pub fn assert_on_strata(&self) -> &Self {
        assert!(self.stderr.contains(INTERPOSED), "the program did not run on Strata\n{}", self.describe());
        self
    }

    /// The signal that ended the program, if one did.
    pub fn signal(&self) -> Option<i32> {
        self.status.signal()
    }

    /// Stderr without the start-up banner.
    pub fn stderr_without_banner(&self) -> Vec<&str> {
        self.stderr.lines().filter(|line| !line.contains(" loaded in pid ")).collect()
    }

    /// The value of a `name=value` line of stdout, as a number.
    pub fn field(&self, name: &str) -> i64 {
        let prefix = format!("{name}=");
        self.stdout
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no numeric `{name}=` line in the output\n{}", self.describe()))
    }
}

/// Runs `command` (stdin empty, stdout and stderr captured) and collects
/// its outcome. A program still running after [`HANG_GUARD`] is killed,
/// with its process group, and the test fails.
pub fn run(command: &mut Command) -> Run {
    let line = format!("{command:?}");
    // Its own process group, so that the guard also kills what it forked.
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let mut child = command.spawn().unwrap_or_else(|e| panic!("cannot run {line}: {e}"));
    let pid = child.id();
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    // The waiter only watches: it waits with WNOWAIT, leaving the program to
    // be reaped below, so its process id stays its own until then.
    let (done, finished) = mpsc::channel();
    thread::spawn(move || {
        loop {
            // SAFETY: all-zero is a valid `siginfo_t`, and `info` a valid
            // out-parameter; WNOWAIT reaps nothing.
            let result = unsafe {
                let mut info: libc::siginfo_t = std::mem::zeroed();
                libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT)
            };
            if result == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                break;
            }
        }
        let _ = done.send(());
    });
    let hung = finished.recv_timeout(HANG_GUARD).is_err();
    if hung {
        // SAFETY: signals the process group the program leads; the program
        // has not been reaped yet, so the group's id is still its own.
        unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
    }
    let status = child.wait().unwrap_or_else(|e| panic!("cannot wait for {line}: {e}"));
    let run = Run {
        command: line,
        status,
        stdout: String::from_utf8_lossy(&stdout.join().expect("the stdout reader")).into_owned(),
        stderr: String::from_utf8_lossy(&stderr.join().expect("the stderr reader")).into_owned(),
    };
    assert!(
        !hung,
        "the program did not finish within {} s (hang guard, not a time limit: probably a deadlock); \
         killed it and its children\n{}",
        HANG_GUARD.as_secs(),
        run.describe()
    );
    run
}

/// Reads `pipe` to its end on a thread of its own.
fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// A command running `program` with `libstrata.so` preloaded and the
/// start-up banner on (`STRATA_VERBOSE=1`), so that runs can prove they were
/// served by Strata. Strata variables of the caller's environment are
/// cleared.
pub fn preloaded(program: &Path) -> Command {
    let mut command = Command::new(program);
    clear_strata_env(&mut command);
    command.env("LD_PRELOAD", &shim().library).env("STRATA_VERBOSE", "1");
    command
}

/// Removes the shim's variables (and `LD_PRELOAD`) from `command`'s
/// environment.
pub fn clear_strata_env(command: &mut Command) {
    for name in [
        "LD_PRELOAD",
        "STRATA_STATS",
        "STRATA_VERBOSE",
        "STRATA_PURGE_DELAY_MS",
        "STRATA_DEBUG",
        "STRATA_HUGE_PAGES",
    ] {
        command.env_remove(name);
    }
}

/// Compiles `source`, runs it under the shim with `args`, and checks that it
/// ran on Strata and passed its own checks.
pub fn run_checked(source: &str, args: &[&str]) -> Run {
    let run = run(preloaded(&program(source)).args(args));
    run.assert_on_strata().assert_ok();
    run
}
