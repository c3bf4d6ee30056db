//! Integration tests of `libstrata.so`, the LD_PRELOAD shim: small C and C++
//! programs (in `tests/c/`) run with the shim preloaded, and the launcher.
//!
//! Each program checks its own behaviour and ends with an `ok <n> checks`
//! line; every preloaded run also proves it was served by Strata through
//! the `STRATA_VERBOSE=1` banner. Needs `cc` (Debian `gcc`) and `g++`.

use std::process::Command;

use strata_tests::shim_support::{
    clear_strata_env, elf_section_names, elf_type, preloaded, program, program_with, run, run_checked, shared_library, shim, workspace_dir,
    ET_DYN, ET_EXEC, INTERPOSED,
};

const SIGABRT: i32 = 6;

#[test]
fn corner_cases_follow_glibc() {
    run_checked("corner.c", &[]);
}

#[test]
fn alignment_is_honoured_up_to_16_mib() {
    run_checked("align.c", &[]);
}

#[test]
fn usable_size_is_exact_and_writable() {
    run_checked("usable.c", &[]);
}

#[test]
fn bulk_allocation_is_all_or_nothing_and_frees_in_bulk() {
    run_checked("bulk.c", &[]);
}

#[test]
fn calloc_zeroes_reused_dirty_memory() {
    run_checked("calloc_dirty.c", &[]);
}

#[test]
fn fork_under_multithreaded_load_does_not_deadlock() {
    let run = run_checked("fork_load.c", &[]);
    assert_eq!(run.field("forks"), 200, "{}", run.describe());
}

/// `fork` while other threads allocate holding stdio locks (`fflush(NULL)`,
/// `getline`, `open_memstream`): the allocator's lock must be taken after
/// glibc's stdio list lock, as glibc takes its own. A deadlock is caught by
/// the harness's hang guard.
#[test]
fn fork_while_stdio_allocates_does_not_deadlock() {
    let run = run_checked("fork_stdio.c", &[]);
    assert_eq!(run.field("forks"), 200, "{}", run.describe());
}

#[test]
fn thread_churn_keeps_rss_bounded() {
    let run = run_checked("churn.c", &[]);
    let warm = run.field("rss_warm_kib");
    let end = run.field("rss_end_kib");
    let peak = run.field("hwm_kib");
    // Each of the 4000 threads formats about a dozen 64 KiB slices: kept by
    // dead threads, they would pass 3 GiB. Returned, they are reused.
    assert!(end <= warm + 64 * 1024, "RSS grew from {warm} KiB to {end} KiB over 3600 threads\n{}", run.describe());
    assert!(peak <= 256 * 1024, "peak RSS {peak} KiB\n{}", run.describe());
}

/// Destructors of a pthread key created after the shim's allocate with the
/// thread's cache, in every round glibc runs, and the cache still goes back
/// (also for heaps made during the destructor rounds).
#[test]
fn thread_exit_destructors_allocate_from_the_thread_cache() {
    let run = run_checked("thread_exit_cache.c", &[]);
    let threads = run.field("threads_per_round");
    for round in 1..=3 {
        let refills = run.field(&format!("refills_round{round}"));
        // 2000 objects of 256 bytes take 8 slices from a cache, so about 9
        // refills per thread; served without a cache, only the thread's own
        // allocation refills, once.
        assert!(
            refills >= 4 * threads,
            "destructors in round {round}: {refills} refills for {threads} threads, so not from the cache\n{}",
            run.describe()
        );
    }
    let growth = run.field("live_growth");
    // A heap kept for a round that never comes holds about 12 KiB (itself,
    // and the objects of the slices it owns) per thread, 800 threads.
    assert!(growth <= 256 * 1024, "live bytes grew by {growth} over 2000 threads\n{}", run.describe());
    let rss = run.field("rss_growth_kib");
    assert!(rss <= 64 * 1024, "RSS grew by {rss} KiB over 2000 threads\n{}", run.describe());
}

/// Runs one misuse case and checks the single abort line naming the
/// operation, the problem and the pointer.
fn assert_misuse_aborts(case: &str, operation: &str, problem: &str) {
    let run = run(preloaded(&program("misuse.c")).arg(case));
    run.assert_on_strata();
    assert_eq!(run.signal(), Some(SIGABRT), "{case}: expected SIGABRT\n{}", run.describe());
    let pointer = run.stdout.trim();
    assert!(pointer.starts_with("0x"), "{case}: the program printed no pointer\n{}", run.describe());
    let lines = run.stderr_without_banner();
    assert_eq!(lines.len(), 1, "{case}: expected exactly one line on stderr\n{}", run.describe());
    let expected_start = format!("strata: {operation}: {problem}");
    assert!(
        lines[0].starts_with(&expected_start) && lines[0].contains(pointer) && lines[0].ends_with("; aborting"),
        "{case}: expected `{expected_start} ... {pointer} ...; aborting`\n{}",
        run.describe()
    );
}

#[test]
fn double_free_aborts_with_one_line() {
    assert_misuse_aborts("double-free", "free()", "double free of");
}

#[test]
fn double_free_of_a_span_aborts_with_one_line() {
    assert_misuse_aborts("double-free-span", "free()", "double free of");
}

#[test]
fn double_free_from_other_threads_aborts_with_one_line() {
    assert_misuse_aborts("double-free-remote", "free()", "double free of");
}

#[test]
fn free_of_a_foreign_pointer_aborts_with_one_line() {
    assert_misuse_aborts("foreign", "free()", "free of");
}

#[test]
fn free_of_an_interior_pointer_aborts_with_one_line() {
    assert_misuse_aborts("interior", "free()", "free of");
}

#[test]
fn double_free_through_strata_free_bulk_aborts_with_one_line() {
    assert_misuse_aborts("double-free-bulk", "strata_free_bulk()", "double free of");
}

#[test]
fn realloc_of_a_foreign_pointer_aborts_with_one_line() {
    assert_misuse_aborts("realloc-foreign", "realloc()", "free of");
}

/// Checks an `rss_return` run that freed more than `freed_kib` KiB: the
/// resident set fell to within a quarter of the freed memory above what
/// the kept blocks need.
fn assert_rss_returned(mode: &str, freed_kib: i64) {
    let run = run_checked("rss_return.c", &[mode]);
    let peak = run.field("rss_peak_kib");
    let after = run.field("rss_after_kib");
    let live = run.field("rss_live_kib");
    assert!(peak - live > freed_kib, "the program did not reach its peak\n{}", run.describe());
    assert!(
        after <= live + (peak - live) / 4,
        "{mode}: RSS only fell from {peak} KiB to {after} KiB ({live} KiB live)\n{}",
        run.describe()
    );
}

#[test]
fn rss_returns_after_frees_with_malloc_trim() {
    assert_rss_returned("trim", 150 * 1024);
}

#[test]
fn rss_returns_after_frees_within_the_purge_delay() {
    assert_rss_returned("activity", 150 * 1024);
}

/// One 64-byte block in 1,000 kept: every slice keeps a block or two, and
/// `malloc_trim(0)` still gives back all but their pages (`rss_live_kib`
/// counts a 4 KiB page per kept block).
#[test]
fn rss_returns_from_slices_a_few_blocks_keep_with_malloc_trim() {
    assert_rss_returned("pinned", 48 * 1024);
}

/// The same blocks kept, with no `malloc_trim`: a program that goes on
/// with a light load gets the empty pages of those slices back from the
/// delayed purge.
#[test]
fn rss_returns_from_slices_a_few_blocks_keep_within_the_purge_delay() {
    assert_rss_returned("pinned-activity", 48 * 1024);
}

/// Blocks above the size classes keep their contents through growth and
/// shrinking by `realloc`, and growth in 64 KiB steps mostly stays in place
/// (spans into the slices after them, huge blocks by `mremap` with headroom).
#[test]
fn large_blocks_keep_their_contents_through_realloc() {
    let run = run_checked("large_growth.c", &[]);
    // 1024 reallocs per buffer: a copy at each would be quadratic.
    assert!(run.field("one_moves") <= 64, "{}", run.describe());
    assert!(run.field("two_moves") <= 128, "{}", run.describe());
}

/// Freed huge mappings are reused: `calloc` of one is zero, and the
/// resident set stays bounded while blocks of 3 to 24 MiB churn.
#[test]
fn reused_huge_mappings_are_zeroed_and_bounded() {
    run_checked("huge_reuse.c", &[]);
}

/// Under `RLIMIT_AS`, freed memory the allocator still holds is given back
/// and the request retried before `malloc` fails.
#[test]
fn reclaim_and_retry_under_an_address_space_limit() {
    let run = run_checked("reclaim_rlimit.c", &[]);
    assert!(run.field("spans") >= 100, "{}", run.describe());
}

/// After a program frees most of its memory and goes on with one small
/// `malloc`/`free` at a time, the resident set still falls.
#[test]
fn light_work_reaches_the_delayed_purge() {
    let run = run_checked("light_purge.c", &[]);
    assert!(
        run.field("rss_after_kib")
            <= run.field("rss_base_kib")
                + (run.field("rss_peak_kib") - run.field("rss_base_kib")) / 8,
        "{}",
        run.describe()
    );
}

#[test]
fn dlopen_loads_and_serves_from_strata() {
    let mut command = Command::new(program("dlopen_shim.c"));
    clear_strata_env(&mut command);
    let run = run(command.arg(&shim().library).env("STRATA_VERBOSE", "1"));
    run.assert_ok();
    assert!(
        run.stderr.contains("malloc interposed: no (loaded with dlopen: "),
        "the banner should say the dlopen'ed library does not interpose\n{}",
        run.describe()
    );
}

/// A position-independent executable resolves `malloc` to the first
/// definition in lookup order: the preloaded shim.
#[test]
fn interposition_is_detected_in_a_pie_program() {
    let program = program_with("malloc_address.c", &["-fPIE", "-pie"]);
    assert_eq!(elf_type(&program), ET_DYN, "{} is not a PIE", program.display());
    let run = run(&mut preloaded(&program));
    run.assert_on_strata().assert_ok();
    assert_eq!(run.field("dlsym_in_program"), 0, "{}", run.describe());
}

/// A non-PIE executable that takes `malloc`'s address has an undefined
/// `malloc` whose value is its own PLT stub, which
/// `dlsym(RTLD_DEFAULT, "malloc")` returns: the banner must still see that
/// the shim serves it.
#[test]
fn interposition_is_detected_in_a_non_pie_program() {
    let program = program_with("malloc_address.c", &["-fno-pie", "-no-pie"]);
    assert_eq!(elf_type(&program), ET_EXEC, "{} is not a fixed-address executable", program.display());
    let run = run(&mut preloaded(&program));
    run.assert_on_strata().assert_ok();
    // The trap is set: the lookup the old banner relied on lands in the
    // program.
    assert_eq!(run.field("dlsym_in_program"), 1, "{}", run.describe());
}

/// Debian's `/usr/bin/python3`, the case the wrong banner was first seen
/// on (a non-PIE executable).
#[test]
fn interposition_is_detected_in_debian_python3() {
    let python = std::path::Path::new("/usr/bin/python3");
    assert!(python.is_file(), "no /usr/bin/python3: install the Debian package `python3`");
    let run = run(preloaded(python).args(["-c", "print('ok 1 checks')"]));
    run.assert_on_strata().assert_ok();
}

/// Another `malloc` earlier in `LD_PRELOAD` wins, and the banner names it
/// rather than blaming `dlopen`; listed after the shim, it loses.
#[test]
fn another_allocator_earlier_in_ld_preload_is_named() {
    let other = shared_library("other_malloc.c");
    let library = &shim().library;
    let hello = program("hello.c");
    let before = run(preloaded(&hello).env("LD_PRELOAD", format!("{}:{}", other.display(), library.display())));
    before.assert_ok();
    let expected = format!("malloc interposed: no (another allocator earlier in LD_PRELOAD: {});", other.display());
    assert!(before.stderr.contains(&expected), "expected `{expected}`\n{}", before.describe());
    let after = run(preloaded(&hello).env("LD_PRELOAD", format!("{}:{}", library.display(), other.display())));
    after.assert_on_strata().assert_ok();
}

#[test]
fn cxx_new_and_delete_land_in_strata() {
    run_checked("newdelete.cpp", &[]);
}

#[test]
fn glibc_tuning_and_reporting_functions_answer() {
    let run = run_checked("extras.c", &[]);
    assert!(run.stderr.contains("strata statistics"), "malloc_stats printed no table\n{}", run.describe());
}

#[test]
fn strata_stats_prints_the_table_at_exit_even_after_stderr_closed() {
    let run = run(preloaded(&program("stats_live.c")).env("STRATA_STATS", "1"));
    run.assert_on_strata();
    assert!(run.status.success(), "{}", run.describe());
    assert!(run.stderr.contains("strata statistics"), "no statistics table\n{}", run.describe());
    let bytes_live = stats_figure(&run, "bytes live");
    assert!(bytes_live >= 1000 * 3072, "bytes live {bytes_live}\n{}", run.describe());
    let class_3072_objects: usize = run
        .stderr
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|fields| fields.len() == 4 && fields[0] == "3072")
        .and_then(|fields| fields[3].parse().ok())
        .unwrap_or_else(|| panic!("no row for class 3072\n{}", run.describe()));
    assert!(class_3072_objects >= 1000, "class 3072 holds {class_3072_objects} objects\n{}", run.describe());
}

#[test]
fn no_strata_output_without_the_variables() {
    let mut command = Command::new(program("stats_live.c"));
    clear_strata_env(&mut command);
    let run = run(command.env("LD_PRELOAD", &shim().library));
    assert!(run.status.success(), "{}", run.describe());
    assert_eq!(run.stderr, "", "the shim printed without being asked\n{}", run.describe());
    assert_eq!(run.stdout, "done\n", "{}", run.describe());
}

#[test]
fn strata_verbose_reports_the_settings() {
    let run = run(preloaded(&program("hello.c")).env("STRATA_PURGE_DELAY_MS", "1234").env("STRATA_STATS", "0"));
    run.assert_on_strata().assert_ok();
    let banner = run.stderr.lines().find(|line| line.contains(INTERPOSED)).unwrap();
    assert!(banner.starts_with("strata: "), "{banner}");
    assert!(banner.contains(&shim().library.display().to_string()), "{banner}");
    assert!(banner.contains("purge delay 1234 ms"), "{banner}");
    assert!(banner.contains("stats at exit: off"), "{banner}");
    assert!(banner.contains("; hardening: on;"), "{banner}");
}

#[test]
fn a_bad_purge_delay_is_reported_and_ignored() {
    let run = run(preloaded(&program("hello.c")).env("STRATA_PURGE_DELAY_MS", "soon"));
    run.assert_on_strata().assert_ok();
    assert!(
        run.stderr.contains("strata: ignoring STRATA_PURGE_DELAY_MS=soon: expected a whole number of milliseconds"),
        "{}",
        run.describe()
    );
    assert!(run.stderr.contains("purge delay 250 ms"), "{}", run.describe());
}

/// The warning a boolean variable with a value that is neither on nor off
/// prints.
fn flag_warning(name: &str, value: &str) -> String {
    format!(
        "strata: ignoring {name}={value}: expected 1, yes, true or on to turn it on, or 0, no, false or off; \
         taken as off"
    )
}

#[test]
fn a_bad_strata_stats_value_is_reported_and_taken_as_off() {
    for value in ["2", "maybe", " 1", "1 "] {
        let run = run(preloaded(&program("hello.c")).env("STRATA_STATS", value));
        run.assert_on_strata().assert_ok();
        assert_eq!(run.stderr_without_banner(), [flag_warning("STRATA_STATS", value)], "{}", run.describe());
        assert!(run.stderr.contains("stats at exit: off"), "{}", run.describe());
        assert!(!run.stderr.contains("strata statistics"), "{}", run.describe());
    }
}

#[test]
fn a_bad_strata_verbose_value_is_reported_and_taken_as_off() {
    for value in ["2", "maybe", " 1"] {
        let run = run(preloaded(&program("hello.c")).env("STRATA_VERBOSE", value));
        run.assert_ok();
        assert_eq!(run.stderr.lines().collect::<Vec<_>>(), [flag_warning("STRATA_VERBOSE", value)], "{}", run.describe());
    }
}

#[test]
fn off_values_of_the_flags_are_accepted_silently() {
    for value in ["0", "no", "FALSE", "off", ""] {
        let stats = run(preloaded(&program("hello.c")).env("STRATA_STATS", value));
        stats.assert_on_strata().assert_ok();
        assert!(stats.stderr_without_banner().is_empty(), "STRATA_STATS={value:?}\n{}", stats.describe());
        let verbose = run(preloaded(&program("hello.c")).env("STRATA_VERBOSE", value));
        verbose.assert_ok();
        assert_eq!(verbose.stderr, "", "STRATA_VERBOSE={value:?}\n{}", verbose.describe());
    }
}

/// `STRATA_HUGE_PAGES=1` backs the memory in use with huge pages: slab
/// pages are on huge pages from their first touch (the mapping of a small
/// block amid 16 MiB of others has `AnonHugePages`), with nothing to
/// collapse, and huge blocks are advised (the `hg` flag of
/// `/proc/self/smaps`), whether grown by `realloc` (and then on huge pages
/// once filled) or allocated at their size; the banner says so. Without
/// the variable, only a huge block that grew by `realloc` is advised, and
/// slab pages keep small pages. `STRATA_HUGE_PAGES=0` advises nothing, and
/// a value that is neither on nor off is reported and taken as off.
/// Nothing is collapsed in any case. (A machine whose transparent huge pages are
/// `always` backs memory with them unasked: there only the advice tells.)
#[test]
fn strata_huge_pages_backs_slab_pages_and_huge_blocks_with_huge_pages() {
    let always = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .expect("transparent huge pages are configured")
        .contains("[always]");
    let on = run(preloaded(&program("huge_pages.c")).env("STRATA_HUGE_PAGES", "1").env("STRATA_STATS", "1"));
    on.assert_on_strata().assert_ok();
    assert!(on.stdout.starts_with("small: yes\nhuge: yes\nhuge backed: yes\nallocated: yes\n"), "{}", on.describe());
    assert!(on.stderr.contains("huge pages: asked for"), "{}", on.describe());
    assert_eq!(stats_figure(&on, "parts collapsed"), 0, "no part was split, so none collapsed back\n{}", on.describe());
    let small = if always { "" } else { "small: no\n" };
    let unset = run(preloaded(&program("huge_pages.c")).env("STRATA_STATS", "1"));
    unset.assert_on_strata().assert_ok();
    assert!(unset.stdout.starts_with(&format!("{small}huge: yes\nhuge backed: yes\nallocated: no\n")), "{}", unset.describe());
    assert!(unset.stderr.contains("huge pages: for huge blocks grown by realloc"), "{}", unset.describe());
    assert_eq!(stats_figure(&unset, "parts collapsed"), 0, "{}", unset.describe());
    let off = run(preloaded(&program("huge_pages.c")).env("STRATA_HUGE_PAGES", "0").env("STRATA_STATS", "1"));
    off.assert_on_strata().assert_ok();
    assert!(off.stdout.starts_with(small) && off.stdout.contains("huge: no\n") && off.stdout.contains("allocated: no\n"), "{}", off.describe());
    assert!(off.stderr.contains("huge pages: off"), "{}", off.describe());
    assert_eq!(stats_figure(&off, "parts collapsed"), 0, "{}", off.describe());
    let bad = run(preloaded(&program("huge_pages.c")).env("STRATA_HUGE_PAGES", "maybe"));
    bad.assert_on_strata().assert_ok();
    assert_eq!(bad.stderr_without_banner(), [flag_warning("STRATA_HUGE_PAGES", "maybe")], "{}", bad.describe());
    assert!(bad.stdout.starts_with(small) && bad.stdout.contains("huge: no\n"), "{}", bad.describe());
}

/// The figure on the `name` line of the statistics table a run printed
/// (`STRATA_STATS=1`).
fn stats_figure(run: &strata_tests::shim_support::Run, name: &str) -> u64 {
    run.stderr
        .lines()
        .find_map(|line| line.trim().strip_prefix(name))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `{name}` line\n{}", run.describe()))
}

#[test]
fn a_too_large_purge_delay_is_reported_with_the_maximum() {
    for value in ["18446744073709551615", "99999999999999999999999", "1000000000001"] {
        let run = run(preloaded(&program("hello.c")).env("STRATA_PURGE_DELAY_MS", value));
        run.assert_on_strata().assert_ok();
        let expected = format!(
            "strata: ignoring STRATA_PURGE_DELAY_MS={value}: too large: the maximum is 1000000000000 ms (about 31 years)"
        );
        assert_eq!(run.stderr_without_banner(), [expected], "{}", run.describe());
        assert!(run.stderr.contains("purge delay 250 ms"), "{}", run.describe());
    }
    let run = run(preloaded(&program("hello.c")).env("STRATA_PURGE_DELAY_MS", "1000000000000"));
    run.assert_on_strata().assert_ok();
    assert!(run.stderr_without_banner().is_empty(), "{}", run.describe());
    assert!(run.stderr.contains("purge delay 1000000000000 ms"), "{}", run.describe());
}

/// Release builds ship without debug info (4.7 MB of the library's 5), but
/// keep the symbol table, which profilers and callgrind's
/// `--toggle-collect` use.
#[test]
fn release_builds_ship_without_debug_info() {
    let shim = shim();
    for artifact in [&shim.library, &shim.launcher] {
        let sections = elf_section_names(artifact);
        let debug: Vec<_> = sections.iter().filter(|name| name.starts_with(".debug_")).collect();
        assert!(debug.is_empty(), "{} has debug sections {debug:?}", artifact.display());
        assert!(sections.iter().any(|name| name == ".symtab"), "{} has no symbol table", artifact.display());
    }
    let size = std::fs::metadata(&shim.library).unwrap().len();
    assert!(size < 1 << 20, "{} is {size} bytes", shim.library.display());
}

#[test]
fn launcher_prints_its_version() {
    let manifest = std::fs::read_to_string(workspace_dir().join("userspace-shim/Cargo.toml")).unwrap();
    let version = manifest
        .lines()
        .find_map(|line| line.strip_prefix("version = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("a version line in userspace-shim/Cargo.toml");
    for flag in ["--version", "-V"] {
        let run = run(Command::new(&shim().launcher).arg(flag));
        assert!(run.status.success(), "{}", run.describe());
        assert_eq!(run.stdout, format!("strata {version}\n"), "{}", run.describe());
    }
}

#[test]
fn launcher_runs_a_command_on_strata() {
    let shim = shim();
    let mut command = Command::new(&shim.launcher);
    clear_strata_env(&mut command);
    let hello = program("hello.c");
    let run = run(command.arg("run").arg("--").arg(&hello).env("STRATA_VERBOSE", "1"));
    run.assert_on_strata().assert_ok();
    assert!(run.stdout.contains(&format!("LD_PRELOAD={}\n", shim.library.display())), "{}", run.describe());
}

#[test]
fn launcher_appends_to_an_existing_preload() {
    let shim = shim();
    let mut command = Command::new(&shim.launcher);
    clear_strata_env(&mut command);
    // A missing library makes ld.so warn and carry on.
    let run = run(command
        .args(["run", "--"])
        .arg(program("hello.c"))
        .env("LD_PRELOAD", "/nonexistent/libother.so")
        .env("STRATA_VERBOSE", "1"));
    run.assert_on_strata().assert_ok();
    let expected = format!("LD_PRELOAD=/nonexistent/libother.so:{}\n", shim.library.display());
    assert!(run.stdout.contains(&expected), "expected {expected}\n{}", run.describe());
}

#[test]
fn launcher_explains_bad_usage() {
    let launcher = &shim().launcher;
    let cases: [(&[&str], i32, &str); 4] = [
        (&[], 2, "strata: missing subcommand"),
        (&["run", "--"], 2, "strata: `run` needs a command to run"),
        (&["launch", "ls"], 2, "strata: unknown subcommand `launch`"),
        (&["run", "--", "/nonexistent/program"], 127, "strata: cannot run `/nonexistent/program`"),
    ];
    for (args, code, message) in cases {
        let run = run(Command::new(launcher).args(args));
        assert_eq!(run.status.code(), Some(code), "strata {args:?}\n{}", run.describe());
        assert!(run.stderr.starts_with(message), "strata {args:?}: expected `{message}`\n{}", run.describe());
        if code == 2 {
            assert!(run.stderr.contains("usage: strata run"), "strata {args:?}: no usage\n{}", run.describe());
        }
    }
    let help = run(Command::new(launcher).arg("help"));
    assert!(help.status.success() && help.stdout.starts_with("usage: strata run"), "{}", help.describe());
}

// ----- the page source failing, under the shim ---------------------------------

/// Runs `fault_points.c` in `mode` with the fault-injection library
/// (`tests/c/fault_inject.c`) preloaded before the shim, and `env` set;
/// checks that it ran on Strata and passed its own checks.
fn with_faults(mode: &str, env: &[(&str, &str)]) -> strata_tests::shim_support::Run {
    let faults = shared_library("fault_inject.c");
    let mut command = preloaded(&program("fault_points.c"));
    command
        .env(
            "LD_PRELOAD",
            format!("{}:{}", faults.display(), shim().library.display()),
        )
        .arg(mode);
    for (name, value) in env {
        command.env(name, value);
    }
    let run = run(&mut command);
    run.assert_on_strata().assert_ok();
    run
}

/// The fault library can only fail the maps Strata makes through the
/// dynamic `mmap`, `madvise` and `munmap` symbols: libstrata.so must import
/// them (and no `mremap`, which it does not use).
#[test]
fn libstrata_maps_through_the_dynamic_libc_symbols() {
    let output = Command::new("nm")
        .args(["-D", "--undefined-only"])
        .arg(&shim().library)
        .output()
        .unwrap_or_else(|e| panic!("cannot run nm ({e}); install the Debian package `binutils`"));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let imports: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().last())
        .map(|symbol| symbol.split('@').next().unwrap_or(symbol).to_string())
        .collect();
    for symbol in ["mmap", "madvise", "munmap", "mremap"] {
        assert!(
            imports.iter().any(|name| name == symbol),
            "libstrata.so does not import {symbol}: {imports:?}"
        );
    }
}

/// Every map fails from the process's start, Strata's own first page at load
/// included: every allocation function gives NULL and ENOMEM, nothing
/// crashes, and once maps work everything allocates, and the thread that
/// met the failure gets its cache (regression: it stayed uncached for good).
#[test]
fn maps_failing_from_the_start_give_enomem_then_recover() {
    let run = with_faults("first-map", &[("FAULT_MMAP", "0,-1")]);
    assert!(run.field("map_failures") >= 10, "{}", run.describe());
    assert!(
        run.field("refills_after_recovery") > 0,
        "{}",
        run.describe()
    );
}

/// Maps fail once pages exist: the mapped pages fill up, then every kind of
/// request fails with ENOMEM, freed memory is reused, every object keeps
/// its contents, and allocation recovers.
#[test]
fn maps_failing_during_growth_give_enomem_and_keep_every_object() {
    let run = with_faults("growth", &[]);
    assert!(run.field("map_failures") >= 10, "{}", run.describe());
}

/// One huge allocation's map fails, by size or by alignment; a huge
/// `realloc` grows into the room its mapping kept while maps and remaps
/// fail, and fails cleanly beyond it; the next map works.
#[test]
fn a_failed_huge_map_gives_enomem_and_the_next_works() {
    let run = with_faults("huge", &[]);
    // Four refused allocations (the program counts them one by one), and
    // the refused growth, which may try both a map and a remap.
    assert!(run.field("map_failures") >= 5, "{}", run.describe());
    assert!(run.field("remap_failures") >= 1, "{}", run.describe());
}

/// `realloc` that would need a map fails with ENOMEM and leaves the block as
/// it was, from every kind of block; it keeps the prefix once maps work.
#[test]
fn realloc_growth_that_cannot_map_leaves_the_block_intact() {
    let run = with_faults("realloc", &[]);
    assert!(run.field("map_failures") >= 8, "{}", run.describe());
}

/// `madvise` fails when dirty slices are purged (`malloc_trim` and the
/// purge delay): no live object changes, the unpurged memory is reused and
/// `calloc` still zeroes it, and purging works again after.
#[test]
fn failed_purges_lose_no_object_and_calloc_still_zeroes() {
    let run = with_faults("purge", &[]);
    assert!(run.field("purge_failures") >= 1, "{}", run.describe());
}

/// `munmap` fails (freed huge blocks, empty pages, the trimmed ends of new
/// mappings): nothing crashes or changes, allocation goes on.
#[test]
fn failed_unmaps_are_survived() {
    let run = with_faults("unmap", &[]);
    assert!(run.field("unmap_failures") >= 3, "{}", run.describe());
}

/// Four threads exhaust the mapped pages at once while maps fail, get
/// ENOMEM, keep their objects, and free each other's after recovery.
#[test]
fn threads_meeting_failing_maps_get_enomem_and_recover() {
    let run = with_faults("threads", &[]);
    assert!(run.field("map_failures") >= 8, "{}", run.describe());
}

/// `RLIMIT_AS` lowered under a running program: real map failures, ENOMEM,
/// reuse of freed spans, recovery when the limit is raised.
#[test]
fn rlimit_as_makes_maps_fail_for_real() {
    run_checked("fault_points.c", &["rlimit"]);
}

/// `RLIMIT_AS` leaves no room for Strata's first page when the library
/// loads: the process starts, allocation fails with ENOMEM, and works once
/// the limit is raised.
#[test]
fn rlimit_as_below_the_first_page_fails_cleanly() {
    let run = run_checked("fault_points.c", &["rlimit-start"]);
    assert!(
        run.stdout.contains("mode=rlimit-start-child\n"),
        "the child did not run\n{}",
        run.describe()
    );
}

/// Runs one case of `hardening.c` with `STRATA_DEBUG` set to `debug` (or
/// unset), checking that it ran on Strata and printed the pointer it then
/// misused.
fn run_hardening(case: &str, debug: Option<&str>) -> (strata_tests::shim_support::Run, String) {
    let mut command = preloaded(&program("hardening.c"));
    if let Some(value) = debug {
        command.env("STRATA_DEBUG", value);
    }
    let run = run(command.arg(case));
    run.assert_on_strata();
    let pointer = run.stdout.lines().next().unwrap_or("").trim().to_owned();
    assert!(pointer.starts_with("0x"), "{case}: the program printed no pointer\n{}", run.describe());
    (run, pointer)
}

/// A use-after-free write of a live block's address into a freed block's
/// free-list link (kept encoded) is found before the link is followed, and
/// the process stops with one line, before the live block is handed out
/// twice. The link is checked when it becomes the head of the slice's free
/// list (the block it belonged to has just been handed out), so the line
/// names the block's slice. A remote-free list taken into an empty free
/// list becomes that list as it is, and its links are checked the same way.
#[test]
fn a_forged_free_list_link_aborts_with_one_line() {
    for case in ["forged-link", "forged-remote-link"] {
        let (run, pointer) = run_hardening(case, None);
        assert_eq!(run.signal(), Some(SIGABRT), "{case}: expected SIGABRT\n{}", run.describe());
        let lines = run.stderr_without_banner();
        assert_eq!(lines.len(), 1, "{case}: expected exactly one line on stderr\n{}", run.describe());
        let address = usize::from_str_radix(pointer.trim_start_matches("0x"), 16).expect("a hexadecimal pointer");
        let slice = address & !(strata_tests::shim_support::SLICE_SIZE - 1);
        let expected = format!(
            "strata: heap corruption: the free-list link of a freed object in the slice at {slice:#x} was overwritten (use after free); aborting"
        );
        assert_eq!(lines[0], expected, "{case}\n{}", run.describe());
    }
}

/// `STRATA_DEBUG=1`: a byte written past a small block is found at its free,
/// reported with the block, its size class and the byte found.
#[test]
fn debug_mode_reports_a_small_overrun_at_free() {
    let (run, pointer) = run_hardening("overrun-small", Some("1"));
    assert!(run.stderr.contains("debug: on"), "the banner shows debug mode\n{}", run.describe());
    assert_eq!(run.signal(), Some(SIGABRT), "expected SIGABRT\n{}", run.describe());
    let lines = run.stderr_without_banner();
    assert_eq!(lines.len(), 1, "expected exactly one line on stderr\n{}", run.describe());
    let start = format!("strata: free: heap overrun past the end of {pointer} (size class ");
    let end = ", 40 bytes asked for): byte 40 (the first past the object) reads 0x78, not the canary 0xcb; aborting";
    // The middle names the class and its object size: `<class>, <size>-byte objects`.
    let class = lines[0]
        .strip_prefix(&start)
        .and_then(|rest| rest.strip_suffix(end))
        .and_then(|rest| rest.strip_suffix("-byte objects"))
        .and_then(|rest| rest.split_once(", "))
        .and_then(|(class, size)| Some((class.parse::<usize>().ok()?, size.parse::<usize>().ok()?)));
    assert!(
        class.is_some_and(|(_, size)| size > 40),
        "expected `{start}<class>, <size>-byte objects{end}`\n{}",
        run.describe()
    );
}

/// `STRATA_DEBUG=1`: writes that run past a large block hit its guard page
/// and fault at once. Without debug mode the same writes go unnoticed (they
/// land in other slices of the page), which the test also checks, so the
/// fault is the guard page's.
#[test]
fn debug_mode_guards_large_blocks_with_a_page_that_faults() {
    const SIGSEGV: i32 = 11;
    let (run, _) = run_hardening("overrun-large", Some("1"));
    assert_eq!(run.signal(), Some(SIGSEGV), "expected SIGSEGV\n{}", run.describe());
    let (unguarded, _) = run_hardening("overrun-large", None);
    assert_eq!(unguarded.status.code(), Some(1), "without debug mode the writes land\n{}", unguarded.describe());
    assert!(unguarded.stderr.contains("misuse went unnoticed"), "{}", unguarded.describe());
}

/// `STRATA_DEBUG=1` leaves correct programs alone: blocks written up to
/// their usable size, resized, aligned and freed raise no report, and the
/// shim's other C programs pass in debug mode too. A bad value is reported
/// and taken as off.
#[test]
fn debug_mode_passes_correct_programs() {
    let clean = run(preloaded(&program("hardening.c")).env("STRATA_DEBUG", "1").arg("clean"));
    clean.assert_on_strata().assert_ok();
    assert!(clean.stderr.contains("debug: on"), "{}", clean.describe());
    assert!(clean.stderr_without_banner().is_empty(), "{}", clean.describe());
    for source in ["corner.c", "align.c", "usable.c", "bulk.c", "calloc_dirty.c"] {
        let checked = run_checked_with_env(source, "STRATA_DEBUG", "1");
        assert!(checked.stderr.contains("debug: on"), "{source}\n{}", checked.describe());
    }
    let run = run(preloaded(&program("hardening.c")).env("STRATA_DEBUG", "maybe").arg("clean"));
    run.assert_on_strata().assert_ok();
    assert!(run.stderr.contains("debug: off"), "{}", run.describe());
    assert!(
        run.stderr.contains(
            "strata: ignoring STRATA_DEBUG=maybe: expected 1, yes, true or on to turn it on, or 0, no, false or off; taken as off"
        ),
        "{}",
        run.describe()
    );
}

fn run_checked_with_env(source: &str, name: &str, value: &str) -> strata_tests::shim_support::Run {
    let run = run(preloaded(&program(source)).env(name, value));
    run.assert_on_strata().assert_ok();
    run
}
