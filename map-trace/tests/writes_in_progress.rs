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

mod common;

use common::run::run_scenario_expecting;
use common::scenarios::{Build, RACY, check_racy, go_minor, racy_complete, racy_target_ok};
use common::{Fixture, check_all};

/// Runs of one racy scenario before it counts as missed.
const ATTEMPTS: usize = 8;

/// One race at a time: the two tests of this file run in parallel threads, and two racing
/// programs on two cores change each other's timing enough to halve how often a race is seen.
static ONE_RACE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn check(f: &Fixture, args: &[&str]) -> Vec<String> {
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
        let mut run = None;
        let _alone = ONE_RACE.lock().unwrap_or_else(|p| p.into_inner());
        for _ in 0..ATTEMPTS {
            match run_scenario_expecting(f, scenario, args, racy_target_ok) {
                Ok(r) => {
                    let done = racy_complete(racy, classic, &r.findings, &r.target_stderr);
                    run = Some(Ok(r));
                    if done {
                        break;
                    }
                }
                Err(e) => {
                    run = Some(Err(e));
                    break;
                }
            }
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
    common::fixtures_of("scenarios")
        .into_iter()
        .filter(|f| f.arch == "x86_64" && f.variant == "default")
        .collect()
}

#[test]
fn writes_in_progress_name_both_sides_on_every_go_version() {
    common::require_root("attaches uprobes");
    let failures = check_all(&amd64_default_builds(), |f| check(f, &[]));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn writes_in_progress_in_low_overhead_mode() {
    common::require_root("attaches uprobes");
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
    let failures = check_all(&builds, |f| check(f, &["--low-overhead"]));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
