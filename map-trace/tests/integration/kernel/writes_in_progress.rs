//! Writes in progress (testdata/go/scenarios/inprogress.go) under `map-trace --pid` on every
//! toolchain of the matrix (amd64), full and `--low-overhead` modes: a write that begins while
//! another goroutine's write is under way is `concurrent_writes` with both goroutines, ops and
//! stacks; a range that begins (and takes its only step) during another goroutine's write is
//! `concurrent_write_during_iteration` naming that writer; a delete racing a writer that grows a
//! classic map says so (`growing`); a reader racing a writer until Go dies of `concurrent map
//! read and map write` is a `fatal_map_error` naming both. The targets are real races that Go's
//! runtime usually kills: their findings must be printed all the same, and each death of a map
//! error exactly one `fatal_map_error` with Go's message.
//!
//! Needs root and a kernel with uprobes and BPF; fails (never skips) without them.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;
use test_support::run::run_scenario_expecting;

use std::collections::BTreeMap;
use std::sync::Mutex;

use test_support::scenarios::{
    Build, RACY, Shown, check_findings, check_racy, fatal_message, go_minor, racy_complete,
    racy_shown, racy_target_ok,
};
use test_support::{Fixture, check_all};

use crate::MAP_TRACE;

/// This module's group at the kernel tests' gate.
const GROUP: &str = "writes_in_progress";

/// Runs of one racy scenario before it counts as missed.
const ATTEMPTS: usize = 8;

/// One race at a time: the two tests of this file run in parallel threads, and two racing
/// programs on two cores change each other's timing enough to halve how often a race is seen.
static ONE_RACE: Mutex<()> = Mutex::new(());

/// Per racy scenario: builds on which its own kinds were seen, and builds run.
type Direct = Mutex<BTreeMap<&'static str, (usize, usize)>>;

fn check(f: &Fixture, args: &[&str], direct: &Direct) -> Vec<String> {
    let mut bad = Vec::new();
    let build = Build {
        name: &f.name,
        source_dir: &f.source_dir,
        minor: go_minor(&f.go_version),
    };
    let classic = f.map_impl == "classic";
    for racy in RACY {
        let scenario = racy.name;
        // A probe reads the flag a microsecond or two before Go's own check on the same call:
        // a write that sets it in between kills the process unseen.
        // Until the scenario's own kinds are seen; a run whose crash report named both sides
        // instead is kept if no attempt does better.
        let (mut run, mut fallback) = (None, None);
        let _alone = ONE_RACE.lock().unwrap_or_else(|p| p.into_inner());
        for _ in 0..ATTEMPTS {
            match run_scenario_expecting(MAP_TRACE, f, scenario, args, racy_target_ok) {
                Ok(r) => match racy_shown(racy, classic, &r.findings, &r.target_stderr) {
                    Shown::Directly => {
                        run = Some(Ok(r));
                        break;
                    }
                    Shown::ByTheCrash => fallback = Some(Ok(r)),
                    Shown::Not => run = Some(Ok(r)),
                },
                Err(e) => {
                    run = Some(Err(e));
                    break;
                }
            }
        }
        let directly = matches!(&run, Some(Ok(r))
            if racy_shown(racy, classic, &r.findings, &r.target_stderr) == Shown::Directly);
        if !directly && fallback.is_some() {
            run = fallback;
        }
        if !racy.kinds.is_empty() {
            let mut d = direct.lock().unwrap();
            let e = d.entry(scenario).or_default();
            e.0 += usize::from(directly);
            e.1 += 1;
        }
        let run = match run.expect("ATTEMPTS > 0") {
            Ok(r) => r,
            Err(e) => {
                bad.push(format!("{} {scenario} {args:?}: {e}", f.name));
                continue;
            }
        };
        bad.extend(
            check_racy(
                &build,
                racy,
                classic,
                true,
                &run.findings,
                &run.stderr,
                &run.target_stderr,
            )
            .into_iter()
            .map(|b| format!("{b} {args:?}")),
        );
    }
    bad
}

fn amd64_default_builds() -> Vec<Fixture> {
    test_support::fixtures_of("scenarios")
        .into_iter()
        .filter(|f| f.arch == "x86_64" && f.variant == "default")
        .collect()
}

#[test]
fn writes_in_progress_name_both_sides_on_every_go_version() {
    let _gate = test_support::kernel_test(GROUP, "attaches uprobes");
    let direct = Direct::default();
    let failures = check_all(&amd64_default_builds(), |f| check(f, &[], &direct));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    seen_directly_on_most_builds(&direct);
}

/// Go's own check runs a microsecond or two after the probe's on the same call and wins some
/// races outright (the crash report then names both sides): the scenarios' own kinds must
/// still be seen on most builds, or the probe's check is broken.
fn seen_directly_on_most_builds(direct: &Direct) {
    for (scenario, (seen, runs)) in direct.lock().unwrap().iter() {
        assert!(
            seen * 3 >= runs * 2,
            "{scenario}: its own kinds seen on only {seen} of {runs} builds"
        );
    }
}

#[test]
fn writes_in_progress_in_low_overhead_mode() {
    let _gate = test_support::kernel_test(GROUP, "attaches uprobes");
    // The oldest and newest build of each map implementation.
    let builds: Vec<Fixture> = amd64_default_builds()
        .into_iter()
        .filter(|f| {
            ["1.19.", "1.25.", "1.24.", "1.27."]
                .iter()
                .any(|v| f.go_version.starts_with(v))
        })
        .collect();
    assert!(builds.len() >= 4, "builds: {}", builds.len());
    let direct = Direct::default();
    let failures = check_all(&builds, |f| check(f, &["--low-overhead"], &direct));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    seen_directly_on_most_builds(&direct);
}

#[test]
fn writes_in_progress_on_stripped_pie_and_cgo_builds() {
    let _gate = test_support::kernel_test(GROUP, "attaches uprobes");
    // Classic and Swiss: pclntab-only symbols, a load bias, and a C runtime beside Go's.
    let builds: Vec<Fixture> = test_support::fixtures_of("scenarios")
        .into_iter()
        .filter(|f| {
            f.arch == "x86_64"
                && ["stripped", "pie", "cgo"].contains(&f.variant.as_str())
                && ["1.23.", "1.27."]
                    .iter()
                    .any(|v| f.go_version.starts_with(v))
        })
        .collect();
    assert_eq!(
        builds.len(),
        6,
        "stripped, PIE and cgo builds of go1.23 and go1.27"
    );
    let direct = Direct::default();
    let failures = check_all(&builds, |f| check(f, &[], &direct));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    seen_directly_on_most_builds(&direct);
}

/// `--exe` with a duty cycle: processes started in the on parts die of their race with a
/// `fatal_map_error` naming the reader and the writer; those in the off parts go unreported
/// (counted by nothing: the probes are simply not there), never misreported.
#[test]
fn crashes_are_reported_under_exe_with_a_duty_cycle() {
    let _gate = test_support::kernel_test(GROUP, "attaches uprobes");
    let f = test_support::fixtures_of("scenarios")
        .into_iter()
        .find(|f| f.arch == "x86_64" && f.variant == "default" && f.go_version.starts_with("1.27"))
        .expect("go1.27 amd64 scenarios fixture");
    // A file of this test's own: --exe traces every process of a file.
    let dir = test_support::Scratch::new("crash-duty");
    let path = dir.join("scenarios");
    std::fs::copy(&f.path, &path).unwrap();
    let mut d = test_support::daemon::Daemon::start(
        MAP_TRACE,
        &[
            "--exe",
            path.to_str().unwrap(),
            "--format",
            "json",
            "--every-occurrence",
            "--duty-cycle",
            "500ms/1s",
        ],
        false,
    );
    d.wait_line("probes attached for every process", Duration::from_secs(60));
    let _alone = ONE_RACE.lock().unwrap_or_else(|p| p.into_inner());
    let start = std::time::Instant::now();
    let (mut runs, mut died) = (0, 0);
    while start.elapsed() < Duration::from_secs(4) {
        let mut c = Command::new(&path)
            .arg("read_during_write")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let out = c.wait_with_output().unwrap();
        let (stdout, err) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            racy_target_ok(out.status.code(), &stdout, &err),
            "target: {:?} {err}",
            out.status
        );
        died += usize::from(fatal_message(&err).is_some());
        runs += 1;
    }
    let (code, out, err) = d.terminate();
    assert_eq!(code, Some(0), "{err}");
    let found: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}")))
        .collect();
    let build = Build {
        name: &f.name,
        source_dir: &f.source_dir,
        minor: go_minor(&f.go_version),
    };
    let racy = RACY.iter().find(|r| r.name == "read_during_write").unwrap();
    assert!(
        racy_complete(
            racy,
            false,
            &found,
            "fatal error: concurrent map read and map write"
        ),
        "no crash named its writer in {runs} runs ({died} died):\n{err}"
    );
    let kinds: Vec<&str> = found.iter().map(|v| v["kind"].as_str().unwrap()).collect();
    assert!(kinds.iter().all(|k| *k == "fatal_map_error"), "{kinds:?}");
    assert!(
        found.len() <= died,
        "{} crashes reported of {died}",
        found.len()
    );
    let bad = check_findings(&build, racy.name, &["fatal_map_error"], &found, &err);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    eprintln!(
        "{} crashes reported of {died} in {runs} runs at a 50% duty cycle",
        found.len()
    );
}
