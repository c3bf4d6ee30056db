//! Real programs under an `LD_PRELOAD` allocator.
//!
//! This module holds everything the real-program integration tests
//! (`tests/tests/real_programs.rs`) and the peer benchmark
//! (`strata-bench compare` in `strata-benches`) share:
//!
//! - **Locating things**: the workspace, the cargo target directory (honouring
//!   `CARGO_TARGET_DIR`), the bundled workload files in `benches/workloads/`,
//!   and the Strata shim, which [`build_shim`] builds on demand.
//! - **Installing things**: [`require_tool`] and [`require_file`] find a
//!   program or library and, when running as root, install its Debian package
//!   with `apt-get`; otherwise they fail with a message naming the package.
//! - **Running things**: a [`Workload`] is a scripted session of one real
//!   program (python3, sqlite3, git, gcc, redis-server). [`Workload::run`]
//!   runs it in a fresh scratch directory under a given [`Allocator`] and
//!   returns an [`Outcome`]: the deterministic output to compare, the stderr
//!   of the preloaded processes (where `STRATA_STATS=1` prints its table), the
//!   wall time and the peak RSS of the children (from `wait4`).
//!
//! Each process of a workload plays a [`Role`]. Only the program under study
//! is preloaded; helpers such as `redis-benchmark` run on plain glibc so that
//! they do not blur the comparison.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The first line of the statistics table the shim prints when `STRATA_STATS=1`.
pub const STATS_BANNER: &str = "strata statistics";

/// Directories searched for programs: Debian's default `PATH` for root.
///
/// The caller's own `PATH` is deliberately not used: version-manager shims
/// (pyenv, asdf) are shell scripts that would run, and be measured, in front
/// of the real program.
pub const SYSTEM_PATH: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// The workspace root (the directory holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives inside the workspace")
        .to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` (or `CARGO_BUILD_TARGET_DIR`)
/// when set, relative paths taken from the workspace root, else `<root>/target`.
pub fn target_dir() -> PathBuf {
    let configured = std::env::var_os("CARGO_TARGET_DIR")
        .or_else(|| std::env::var_os("CARGO_BUILD_TARGET_DIR"))
        .filter(|dir| !dir.is_empty());
    match configured {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// The directory holding the bundled workload files (`benches/workloads`).
pub fn workloads_dir() -> PathBuf {
    workspace_root().join("benches").join("workloads")
}

/// Builds the shim with `cargo build --release -p strata-shim` (once per
/// process) and returns the absolute path of `libstrata.so`.
///
/// Setting `STRATA_SHIM=/path/to/libstrata.so` skips the build and uses that
/// file instead.
pub fn build_shim() -> Result<PathBuf, String> {
    static SHIM: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    SHIM.get_or_init(|| {
        if let Some(path) = std::env::var_os("STRATA_SHIM").filter(|p| !p.is_empty()) {
            let path = PathBuf::from(path);
            return if path.is_file() {
                Ok(path)
            } else {
                Err(format!("STRATA_SHIM={} is not a file", path.display()))
            };
        }
        cargo_build_shim(&target_dir(), &[])
    })
    .clone()
}

/// Runs `cargo build --release -p strata-shim` from the workspace root, with
/// `env` added to cargo's environment, and returns the path of the
/// `libstrata.so` it made in `target`, the target directory that build
/// uses (set `CARGO_TARGET_DIR` in `env` to build elsewhere).
pub fn cargo_build_shim(target: &Path, env: &[(&str, &OsStr)]) -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    command
        .args(["build", "--release", "-p", "strata-shim"])
        .current_dir(workspace_root());
    let mut described = String::new();
    for (name, value) in env {
        command.env(name, value);
        let _ = write!(described, "{name}=\"{}\" ", value.to_string_lossy());
    }
    let output = command
        .output()
        .map_err(|e| format!("cannot run {}: {e}", Path::new(&cargo).display()))?;
    if !output.status.success() {
        return Err(format!(
            "`{described}cargo build --release -p strata-shim` failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let shim = target.join("release").join("libstrata.so");
    if shim.is_file() {
        Ok(shim)
    } else {
        Err(format!(
            "the shim built, but {} does not exist",
            shim.display()
        ))
    }
}

/// Finds `name` in [`SYSTEM_PATH`], like `which`.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    SYSTEM_PATH
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| is_executable(path))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Returns the path of program `tool`, installing Debian `package` first if
/// the program is missing and we run as root.
///
/// When not root, a missing program is an error that names the package.
pub fn require_tool(tool: &str, package: &str) -> Result<PathBuf, String> {
    ensure_installed(tool, package, || find_tool(tool))
}

/// Returns `path` (a library or other file), installing Debian `package`
/// first if the file is missing and we run as root.
pub fn require_file(path: &Path, package: &str) -> Result<PathBuf, String> {
    let wanted = path.to_path_buf();
    ensure_installed(&path.display().to_string(), package, || {
        wanted.is_file().then(|| wanted.clone())
    })
}

/// Serialises installations: concurrent tests must not fight over dpkg's lock.
static APT_LOCK: Mutex<()> = Mutex::new(());

fn ensure_installed(
    what: &str,
    package: &str,
    find: impl Fn() -> Option<PathBuf>,
) -> Result<PathBuf, String> {
    if let Some(found) = find() {
        return Ok(found);
    }
    let _guard = APT_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(found) = find() {
        return Ok(found);
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(format!(
            "`{what}` is missing and we are not root, so it cannot be installed \
             automatically; run `sudo apt-get install -y {package}` and try again"
        ));
    }
    apt_install(package)?;
    find().ok_or_else(|| format!("installed package {package}, but `{what}` is still missing"))
}

/// `apt-get install -y PACKAGE`, retried once after `apt-get update`.
fn apt_install(package: &str) -> Result<(), String> {
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run apt-get: {e}"))
    };
    if apt(&["install", "-y", "-q", package])?.status.success() {
        return Ok(());
    }
    let update = apt(&["update", "-q"])?;
    if !update.status.success() {
        return Err(format!(
            "`apt-get update` failed while installing {package}:\n{}",
            String::from_utf8_lossy(&update.stderr)
        ));
    }
    let install = apt(&["install", "-y", "-q", package])?;
    if install.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`apt-get install -y {package}` failed:\n{}",
            String::from_utf8_lossy(&install.stderr)
        ))
    }
}

/// A malloc implementation to run programs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocator {
    /// Short name for tables and messages, e.g. `glibc` or `strata`.
    pub name: String,
    /// The shared library put in `LD_PRELOAD`, or `None` for glibc's malloc.
    pub preload: Option<PathBuf>,
}

impl Allocator {
    /// glibc's own malloc: no preload at all.
    pub fn glibc() -> Self {
        Allocator {
            name: "glibc".into(),
            preload: None,
        }
    }

    /// An allocator loaded with `LD_PRELOAD=library`.
    pub fn preloaded(name: &str, library: PathBuf) -> Self {
        Allocator {
            name: name.into(),
            preload: Some(library),
        }
    }

    /// The Strata shim, built on demand by [`build_shim`].
    pub fn strata() -> Result<Self, String> {
        Ok(Self::preloaded("strata", build_shim()?))
    }
}

/// What one run of a workload produced.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// The deterministic output, which must not depend on the allocator.
    pub output: String,
    /// The stderr of every preloaded process, each under a `--- label ---` line.
    pub diagnostics: String,
    /// Wall time of the timed processes ([`Role::Measured`] and [`Role::Client`]).
    pub wall: Duration,
    /// Largest `ru_maxrss` (KiB) of the preloaded processes and their children.
    pub peak_rss_kib: u64,
}

impl Outcome {
    /// Whether some preloaded process printed Strata's statistics table.
    pub fn printed_stats(&self) -> bool {
        self.diagnostics.contains(STATS_BANNER)
    }

    /// The diagnostics from the first statistics table on, if any.
    pub fn stats_table(&self) -> Option<&str> {
        let start = self.diagnostics.find(STATS_BANNER)?;
        let line_start = self.diagnostics[..start].rfind('\n').map_or(0, |i| i + 1);
        Some(&self.diagnostics[line_start..])
    }
}

/// Panics with a readable report if two outputs differ: the first differing
/// line and its neighbours, instead of two multi-kilobyte strings.
pub fn assert_same_output(what: &str, expected: &Outcome, actual: &Outcome, actual_name: &str) {
    if expected.output == actual.output {
        return;
    }
    let want: Vec<&str> = expected.output.lines().collect();
    let got: Vec<&str> = actual.output.lines().collect();
    let first = want
        .iter()
        .zip(&got)
        .position(|(a, b)| a != b)
        .unwrap_or(want.len().min(got.len()));
    let mut report = format!(
        "{what}: output under {actual_name} differs from glibc's \
         ({} vs {} lines); first difference at line {}:\n",
        want.len(),
        got.len(),
        first + 1
    );
    for i in first.saturating_sub(2)..(first + 3) {
        let _ = writeln!(
            report,
            "  line {:>5}  glibc: {:?}\n              {actual_name}: {:?}",
            i + 1,
            want.get(i).unwrap_or(&"<none>"),
            got.get(i).unwrap_or(&"<none>")
        );
    }
    let _ = write!(
        report,
        "stderr of the preloaded processes:\n{}",
        tail(&actual.diagnostics, 3000)
    );
    panic!("{report}");
}

/// The last `max` bytes of `text` (cut at a character boundary).
pub fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// How a process of a workload is run and accounted for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The program under study: preloaded, timed, and its RSS counts.
    Measured,
    /// A long-running program under study (a server): preloaded and its RSS
    /// counts, but its lifetime is not timed; its clients are.
    Server,
    /// A helper that drives a server (e.g. `redis-benchmark`): plain glibc,
    /// timed, RSS ignored.
    Client,
    /// Preparation or cleanup: plain glibc, neither timed nor measured.
    Setup,
}

impl Role {
    fn preloaded(self) -> bool {
        matches!(self, Role::Measured | Role::Server)
    }

    fn timed(self) -> bool {
        matches!(self, Role::Measured | Role::Client)
    }
}

/// A real-program workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Workload {
    /// `python3 benches/workloads/python_workload.py` with pymalloc (the default).
    Python,
    /// The same script with `PYTHONMALLOC=malloc`, so every object goes through malloc.
    PythonMalloc,
    /// `sqlite3` running `benches/workloads/sqlite_workload.sql` in memory.
    Sqlite,
    /// `git` init, add, commit, a second commit, repack and fsck of a generated tree.
    Git,
    /// `gcc -O2` compiling and linking `benches/workloads/gcc_program.c`.
    Gcc,
    /// `redis-server` driven by `redis-cli` checks and `redis-benchmark`.
    Redis,
}

impl Workload {
    /// Every workload, in table order.
    pub const ALL: [Workload; 6] = [
        Workload::Python,
        Workload::PythonMalloc,
        Workload::Sqlite,
        Workload::Git,
        Workload::Gcc,
        Workload::Redis,
    ];

    /// The workload's name on the command line and in tables.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Python => "python",
            Workload::PythonMalloc => "python-malloc",
            Workload::Sqlite => "sqlite",
            Workload::Git => "git",
            Workload::Gcc => "gcc",
            Workload::Redis => "redis",
        }
    }

    /// The workload called `name`, if any.
    pub fn from_name(name: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.name() == name)
    }

    /// The programs the workload runs, each with the Debian package providing it.
    pub fn tools(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Workload::Python | Workload::PythonMalloc => &[("python3", "python3")],
            Workload::Sqlite => &[("sqlite3", "sqlite3")],
            Workload::Git => &[("git", "git")],
            Workload::Gcc => &[("gcc", "gcc"), ("nm", "binutils")],
            Workload::Redis => &[
                ("redis-server", "redis-server"),
                ("redis-cli", "redis-tools"),
                ("redis-benchmark", "redis-tools"),
            ],
        }
    }

    /// Makes sure every program of [`Workload::tools`] is installed.
    pub fn ensure_tools(self) -> Result<(), String> {
        for (tool, package) in self.tools() {
            require_tool(tool, package)?;
        }
        Ok(())
    }

    /// Runs the workload once under `allocator` in a fresh scratch directory.
    ///
    /// With `stats`, preloaded processes get `STRATA_STATS=1`.
    pub fn run(self, allocator: &Allocator, stats: bool) -> Result<Outcome, String> {
        self.ensure_tools()?;
        let mut session = Session::new(allocator, stats, self.name())?;
        let output = match self {
            Workload::Python => python(&mut session, false)?,
            Workload::PythonMalloc => python(&mut session, true)?,
            Workload::Sqlite => sqlite(&mut session)?,
            Workload::Git => git(&mut session)?,
            Workload::Gcc => gcc(&mut session)?,
            Workload::Redis => redis(&mut session)?,
        };
        Ok(session.finish(output))
    }
}

/// Runs `program` with `args` once under `allocator`, as a measured process
/// in a fresh scratch directory, and returns its [`Outcome`]: its stdout as
/// the output, its stderr as diagnostics, its wall time and its peak RSS
/// (`ru_maxrss` from `wait4`).
///
/// `label` names the scratch directory and the process in messages. With
/// `stats`, the process gets `STRATA_STATS=1`. A non-zero exit is an error.
pub fn run_program(
    allocator: &Allocator,
    program: &Path,
    args: &[String],
    label: &str,
    stats: bool,
) -> Result<Outcome, String> {
    let mut session = Session::new(allocator, stats, label)?;
    let step = session
        .command_at(Role::Measured, program, label)
        .args(args);
    let output = session.run(step)?;
    Ok(session.finish(output))
}

/// A temporary directory, removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(label: &str) -> Result<Self, String> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("strata-{label}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(ScratchDir(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// One process to run: a [`Command`] plus its [`Role`] and stdin file.
struct Step {
    role: Role,
    label: String,
    command: Command,
    stdin: Option<PathBuf>,
}

impl Step {
    fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.command.arg(arg);
        self
    }

    fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.command.args(args);
        self
    }

    fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.command.env(key, value);
        self
    }

    fn stdin(mut self, path: &Path) -> Self {
        self.stdin = Some(path.to_path_buf());
        self
    }
}

/// Exit status and resource usage of a reaped child.
struct Reaped {
    status: ExitStatus,
    max_rss_kib: u64,
}

/// Blocks until `pid` exits and returns its status and `ru_maxrss`.
///
/// On Linux the child's rusage includes its own waited-for descendants, so
/// `gcc`'s figure covers `cc1`, `as` and `ld`.
fn wait4(pid: libc::pid_t, flags: libc::c_int) -> Result<Option<Reaped>, String> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: an all-zero rusage is a valid value of this plain C struct.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: both pointers are valid for writes for the whole call.
        let rc = unsafe { libc::wait4(pid, &mut status, flags, &mut usage) };
        if rc == pid {
            return Ok(Some(Reaped {
                status: ExitStatus::from_raw(status),
                max_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
            }));
        }
        if rc == 0 {
            return Ok(None); // WNOHANG and still running
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("wait4({pid}) failed: {error}"));
        }
    }
}

/// A process running in the background (a server). It is killed and reaped
/// on drop unless [`Background::wait`] already reaped it, so a failing test
/// never leaves it behind.
struct Background {
    label: String,
    child: Child,
    stderr_path: PathBuf,
    stdout_path: PathBuf,
    reaped: bool,
}

impl Background {
    fn pid(&self) -> libc::pid_t {
        libc::pid_t::try_from(self.child.id()).expect("pids fit in pid_t")
    }

    /// Reaps the process if it already exited.
    fn try_wait(&mut self) -> Result<Option<Reaped>, String> {
        let reaped = wait4(self.pid(), libc::WNOHANG)?;
        self.reaped |= reaped.is_some();
        Ok(reaped)
    }

    /// Waits for the process to exit.
    fn wait(&mut self) -> Result<Reaped, String> {
        let reaped = wait4(self.pid(), 0)?.expect("a blocking wait4 returns a status");
        self.reaped = true;
        Ok(reaped)
    }

    /// Sends `signal` to the process.
    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our
        // unreaped child, so it cannot have been recycled.
        unsafe { libc::kill(self.pid(), signal) };
    }

    /// The process's stdout and stderr so far, for error messages.
    fn logs(&self) -> String {
        format!(
            "{} stdout:\n{}\n{} stderr:\n{}",
            self.label,
            tail(
                &fs::read_to_string(&self.stdout_path).unwrap_or_default(),
                3000
            ),
            self.label,
            tail(
                &fs::read_to_string(&self.stderr_path).unwrap_or_default(),
                3000
            )
        )
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if !self.reaped {
            self.signal(libc::SIGKILL);
            let _ = wait4(self.pid(), 0);
        }
    }
}

/// One run of a workload: its scratch directory, the allocator, and the
/// measurements collected so far.
struct Session<'a> {
    allocator: &'a Allocator,
    stats: bool,
    dir: ScratchDir,
    steps: usize,
    wall: Duration,
    peak_rss_kib: u64,
    diagnostics: String,
}

impl<'a> Session<'a> {
    fn new(allocator: &'a Allocator, stats: bool, label: &str) -> Result<Self, String> {
        Ok(Session {
            allocator,
            stats,
            dir: ScratchDir::new(label)?,
            steps: 0,
            wall: Duration::ZERO,
            peak_rss_kib: 0,
            diagnostics: String::new(),
        })
    }

    fn dir(&self) -> &Path {
        &self.dir.0
    }

    fn finish(self, output: String) -> Outcome {
        Outcome {
            output,
            diagnostics: self.diagnostics,
            wall: self.wall,
            peak_rss_kib: self.peak_rss_kib,
        }
    }

    /// A step running `tool` (looked up with [`find_tool`]) in the scratch
    /// directory, with a clean environment for its role.
    fn command(&self, role: Role, tool: &str) -> Result<Step, String> {
        let program = find_tool(tool).ok_or_else(|| format!("`{tool}` is not installed"))?;
        Ok(self.command_at(role, &program, tool))
    }

    /// Like [`Session::command`], for a program given by path.
    fn command_at(&self, role: Role, program: &Path, label: &str) -> Step {
        let mut command = Command::new(program);
        command
            .current_dir(self.dir())
            .env_remove("LD_PRELOAD")
            .env_remove("STRATA_STATS")
            .env("LC_ALL", "C")
            .env("TZ", "UTC");
        if role.preloaded() {
            if let Some(library) = &self.allocator.preload {
                command.env("LD_PRELOAD", library);
            }
            if self.stats {
                command.env("STRATA_STATS", "1");
            }
        }
        Step {
            role,
            label: label.to_string(),
            command,
            stdin: None,
        }
    }

    /// Opens the stdin, stdout and stderr files of the next step.
    fn wire(&mut self, step: &mut Step) -> Result<(PathBuf, PathBuf), String> {
        self.steps += 1;
        let base = self.dir().join(format!("{:02}-{}", self.steps, step.label));
        let stdout_path = base.with_extension("out");
        let stderr_path = base.with_extension("err");
        let create = |path: &Path| {
            File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))
        };
        let stdin = match &step.stdin {
            Some(path) => Stdio::from(
                File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?,
            ),
            None => Stdio::null(),
        };
        step.command
            .stdin(stdin)
            .stdout(create(&stdout_path)?)
            .stderr(create(&stderr_path)?);
        Ok((stdout_path, stderr_path))
    }

    /// Records a finished preloaded process's stderr and RSS.
    fn account(&mut self, role: Role, label: &str, stderr: &str, max_rss_kib: u64) {
        if role.preloaded() {
            self.peak_rss_kib = self.peak_rss_kib.max(max_rss_kib);
            let _ = writeln!(self.diagnostics, "--- {label} stderr ---");
            self.diagnostics.push_str(stderr);
        }
    }

    /// Runs a step to completion and returns its stdout. A non-zero exit is
    /// an error carrying the step's stderr.
    fn run(&mut self, mut step: Step) -> Result<String, String> {
        let (stdout_path, stderr_path) = self.wire(&mut step)?;
        let describe = format!("{:?}", step.command);
        let start = Instant::now();
        let child = step
            .command
            .spawn()
            .map_err(|e| format!("cannot start {describe}: {e}"))?;
        let pid = libc::pid_t::try_from(child.id()).expect("pids fit in pid_t");
        let reaped = wait4(pid, 0)?.expect("a blocking wait4 returns a status");
        let elapsed = start.elapsed();
        if step.role.timed() {
            self.wall += elapsed;
        }
        let stdout = read_lossy(&stdout_path)?;
        let stderr = read_lossy(&stderr_path)?;
        self.account(step.role, &step.label, &stderr, reaped.max_rss_kib);
        if !reaped.status.success() {
            return Err(format!(
                "{describe} under {} failed ({}); stderr:\n{}",
                self.allocator.name,
                reaped.status,
                tail(&stderr, 4000)
            ));
        }
        Ok(stdout)
    }

    /// Starts a step in the background.
    fn spawn(&mut self, mut step: Step) -> Result<Background, String> {
        let (stdout_path, stderr_path) = self.wire(&mut step)?;
        let child = step
            .command
            .spawn()
            .map_err(|e| format!("cannot start {:?}: {e}", step.command))?;
        Ok(Background {
            label: step.label,
            child,
            stderr_path,
            stdout_path,
            reaped: false,
        })
    }

    /// Accounts for a background step that has been reaped, and checks that
    /// it exited successfully.
    fn finish_background(&mut self, process: &Background, reaped: Reaped) -> Result<(), String> {
        let stderr = read_lossy(&process.stderr_path)?;
        self.account(Role::Server, &process.label, &stderr, reaped.max_rss_kib);
        if reaped.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} under {} exited with {}\n{}",
                process.label,
                self.allocator.name,
                reaped.status,
                process.logs()
            ))
        }
    }
}

fn read_lossy(path: &Path) -> Result<String, String> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut file| file.read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn write_file(path: &Path, contents: &[u8]) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    fs::write(path, contents).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// 64-bit FNV-1a: a dependency-free fingerprint for comparing binary files.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A small deterministic pseudo-random generator (64-bit LCG, high bits out).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// Adds a `== title ==` section to a workload's output.
fn section(output: &mut String, title: &str, body: &str) {
    let _ = writeln!(output, "== {title} ==");
    output.push_str(body);
    if !body.ends_with('\n') {
        output.push('\n');
    }
}

/// python3 on the bundled script; its stdout is the output.
fn python(session: &mut Session, all_through_malloc: bool) -> Result<String, String> {
    let script = workloads_dir().join("python_workload.py");
    let mut step = session
        .command(Role::Measured, "python3")?
        .env("PYTHONHASHSEED", "0")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .arg(&script);
    if all_through_malloc {
        step = step.env("PYTHONMALLOC", "malloc");
    }
    session.run(step)
}

/// sqlite3 with an in-memory database, fed the bundled SQL script.
fn sqlite(session: &mut Session) -> Result<String, String> {
    let script = workloads_dir().join("sqlite_workload.sql");
    let step = session.command(Role::Measured, "sqlite3")?.stdin(&script);
    session.run(step)
}

/// Writes a deterministic tree of `dirs` × `files` text files under `root`.
/// With a non-zero `edit`, rewrites every seventh file instead (the second commit).
fn generate_tree(root: &Path, dirs: u64, files: u64, edit: u64) -> Result<(), String> {
    const WORDS: [&str; 12] = [
        "slab", "slice", "page", "domain", "object", "cache", "purge", "dirty", "clean", "partial",
        "full", "remote",
    ];
    for d in 0..dirs {
        for f in 0..files {
            if edit > 0 && f % 7 != d % 7 {
                continue;
            }
            let mut rng = Lcg(d * 1_000_003 + f * 7919 + edit);
            let mut text = String::new();
            for line in 0..(5 + rng.below(120)) {
                let _ = write!(text, "{line:04}");
                for _ in 0..(1 + rng.below(12)) {
                    let _ = write!(text, " {}", WORDS[rng.below(WORDS.len() as u64) as usize]);
                }
                text.push('\n');
            }
            let path = root
                .join(format!("module{d:02}"))
                .join(format!("file{f:03}.txt"));
            write_file(&path, text.as_bytes())?;
        }
    }
    Ok(())
}

/// git init, add and commit of a generated tree, a second commit, repack and
/// fsck. Fixed names and dates make the commit hashes deterministic.
fn git(session: &mut Session) -> Result<String, String> {
    let repo = session.dir().join("repo");
    generate_tree(&repo, 30, 60, 0)?;
    let home = session.dir().to_path_buf();
    let git = |session: &Session, args: &[&str]| -> Result<Step, String> {
        let mut step = session.command(Role::Measured, "git")?;
        for (key, value) in [
            ("GIT_AUTHOR_NAME", "Strata Tests"),
            ("GIT_AUTHOR_EMAIL", "tests@strata.invalid"),
            ("GIT_AUTHOR_DATE", "2024-01-01T12:00:00+0000"),
            ("GIT_COMMITTER_NAME", "Strata Tests"),
            ("GIT_COMMITTER_EMAIL", "tests@strata.invalid"),
            ("GIT_COMMITTER_DATE", "2024-01-01T12:00:00+0000"),
            ("GIT_CONFIG_NOSYSTEM", "1"),
            ("GIT_CONFIG_GLOBAL", "/dev/null"),
        ] {
            step = step.env(key, value);
        }
        Ok(step
            .env("HOME", &home)
            .args(["-C", "repo", "-c", "gc.auto=0"])
            .args(args))
    };
    let mut output = String::new();
    session.run(git(session, &["init", "-q"])?)?;
    session.run(git(session, &["symbolic-ref", "HEAD", "refs/heads/main"])?)?;
    session.run(git(session, &["add", "-A"])?)?;
    session.run(git(session, &["commit", "-q", "-m", "Generated tree"])?)?;
    generate_tree(&repo, 30, 60, 1)?;
    session.run(git(session, &["add", "-A"])?)?;
    session.run(git(
        session,
        &["commit", "-q", "-m", "Rewrite every seventh file"],
    )?)?;
    session.run(git(session, &["repack", "-a", "-d", "-q"])?)?;
    session.run(git(
        session,
        &["fsck", "--full", "--no-progress", "--strict"],
    )?)?;
    section(
        &mut output,
        "log",
        &session.run(git(session, &["log", "--format=%H %s"])?)?,
    );
    section(
        &mut output,
        "ls-tree",
        &session.run(git(session, &["ls-tree", "-r", "HEAD"])?)?,
    );
    let stat = session.run(git(session, &["diff", "--stat", "HEAD~1", "HEAD"])?)?;
    section(&mut output, "diff --stat", &stat);
    Ok(output)
}

/// gcc -O2 compiling and linking the bundled C file, then running the
/// result. The output fingerprints the object file and lists its symbols.
fn gcc(session: &mut Session) -> Result<String, String> {
    let source = fs::read(workloads_dir().join("gcc_program.c"))
        .map_err(|e| format!("cannot read gcc_program.c: {e}"))?;
    write_file(&session.dir().join("program.c"), &source)?;
    let compile = session.command(Role::Measured, "gcc")?.args([
        "-O2",
        "-Wall",
        "-c",
        "program.c",
        "-o",
        "program.o",
    ]);
    session.run(compile)?;
    let link = session
        .command(Role::Measured, "gcc")?
        .args(["program.o", "-o", "program"]);
    session.run(link)?;
    let object = fs::read(session.dir().join("program.o"))
        .map_err(|e| format!("cannot read program.o: {e}"))?;
    let mut output = String::new();
    let fingerprint = format!("{} bytes, fnv1a {:016x}", object.len(), fnv1a(&object));
    section(&mut output, "program.o", &fingerprint);
    section(
        &mut output,
        "nm",
        &session.run(session.command(Role::Measured, "nm")?.arg("program.o"))?,
    );
    let run = session.command_at(Role::Measured, &session.dir().join("program"), "program");
    section(&mut output, "program", &session.run(run)?);
    Ok(output)
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot bind: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no local address: {e}"))
}

/// Whether a Redis server answers `PING` on `port`.
fn redis_answers(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let mut reply = [0u8; 7];
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .is_ok()
        && stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

/// The commands `redis-cli` runs before the benchmark, and the keys it
/// reads back afterwards. Only deterministic replies are requested: no
/// `KEYS`/`SMEMBERS`, whose order depends on per-process hash seeds.
fn redis_scripts() -> (String, String) {
    let mut fill = String::new();
    let mut check = String::new();
    let mut rng = Lcg(42);
    for i in 0..3000 {
        let value: String = std::iter::repeat_n("v", 1 + rng.below(600) as usize).collect();
        let _ = writeln!(fill, "SET strata:key:{i} {value}{i}");
        let _ = writeln!(fill, "RPUSH strata:list:{} item{i}", i % 20);
        let _ = writeln!(fill, "HSET strata:hash:{} field{i} {i}", i % 50);
        let _ = writeln!(fill, "SADD strata:set:{} member{}", i % 10, i % 777);
        let _ = writeln!(fill, "ZADD strata:zset {} member{i}", rng.below(100_000));
        if i % 3 == 0 {
            let _ = writeln!(fill, "APPEND strata:key:{i} -appended");
            let _ = writeln!(fill, "INCRBY strata:counter {i}");
        }
    }
    for i in (0..3000).step_by(97) {
        let _ = writeln!(check, "GET strata:key:{i}");
        let _ = writeln!(check, "STRLEN strata:key:{i}");
    }
    for list in 0..20 {
        let _ = writeln!(check, "LLEN strata:list:{list}");
        let _ = writeln!(check, "LRANGE strata:list:{list} 0 4");
    }
    for hash in (0..50).step_by(7) {
        let _ = writeln!(check, "HLEN strata:hash:{hash}");
        let _ = writeln!(check, "HGET strata:hash:{hash} field{}", hash + 50);
    }
    for set in 0..10 {
        let _ = writeln!(check, "SCARD strata:set:{set}");
        let _ = writeln!(check, "SISMEMBER strata:set:{set} member{set}");
    }
    check.push_str("GET strata:counter\nZCARD strata:zset\nZRANGE strata:zset 0 9 WITHSCORES\n");
    (fill, check)
}

/// redis-server on a free 127.0.0.1 port, without persistence: `redis-cli`
/// fills and reads back a data set (compared), `redis-benchmark` runs a
/// bounded number of requests (only checked to complete), the data set is
/// read back again, and the server is shut down and reaped.
fn redis(session: &mut Session) -> Result<String, String> {
    let (fill, check) = redis_scripts();
    let fill_path = session.dir().join("fill.redis");
    let check_path = session.dir().join("check.redis");
    write_file(&fill_path, fill.as_bytes())?;
    write_file(&check_path, check.as_bytes())?;

    let port = free_port()?.to_string();
    let dir = session.dir().to_path_buf();
    let server = session
        .command(Role::Server, "redis-server")?
        .args([
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--daemonize", "no", "--loglevel", "notice", "--logfile", ""])
        .arg("--dir")
        .arg(&dir);
    let mut server = session.spawn(server)?;
    let port_number: u16 = port.parse().expect("a port number");

    // Wait until the server answers, or fail if it exits first. There is no
    // time limit: a server that neither listens nor exits hangs the test.
    while !redis_answers(port_number) {
        if let Some(reaped) = server.try_wait()? {
            return Err(format!(
                "redis-server under {} exited before answering ({})\n{}",
                session.allocator.name,
                reaped.status,
                server.logs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    let cli = |session: &Session, script: &Path| -> Result<Step, String> {
        Ok(session
            .command(Role::Client, "redis-cli")?
            .args(["-h", "127.0.0.1", "-p", &port])
            .stdin(script))
    };
    let mut output = String::new();
    let filled = session.run(cli(session, &fill_path)?)?;
    let replies: BTreeSet<&str> = filled.lines().collect();
    section(
        &mut output,
        "fill replies (distinct)",
        &format!("{replies:?}"),
    );
    section(
        &mut output,
        "check",
        &session.run(cli(session, &check_path)?)?,
    );

    let commands = "set,get,lpush,lrange_100,hset,mset";
    let benchmark = session
        .command(Role::Client, "redis-benchmark")?
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-n",
            "20000",
            "-r",
            "100000",
            "-d",
            "64",
            "-q",
        ])
        .args(["-t", commands]);
    let report = session.run(benchmark)?;
    // Progress updates end in '\r', final results in '\n'.
    let results = report.split(['\r', '\n']).map(str::trim);
    for name in commands.split(',').map(str::to_uppercase) {
        if !results
            .clone()
            .any(|r| r.starts_with(&name) && r.contains("requests per second"))
        {
            return Err(format!(
                "redis-benchmark printed no result for {name}:\n{report}"
            ));
        }
    }
    section(
        &mut output,
        "check after benchmark",
        &session.run(cli(session, &check_path)?)?,
    );

    let shutdown = session.command(Role::Setup, "redis-cli")?.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "shutdown",
        "nosave",
    ]);
    if session.run(shutdown).is_err() {
        server.signal(libc::SIGTERM); // redis shuts down cleanly on SIGTERM too
    }
    let reaped = server.wait()?;
    session.finish_background(&server, reaped)?;
    Ok(output)
}
