//! Writes in progress (testdata/go/scenarios/inprogress.go) under `map-trace --pid` on every
//! toolchain of the matrix (amd64), full and `--low-overhead` modes: a write that begins while
//! another goroutine's write is under way is `concurrent_writes` with both goroutines, ops and
//! stacks; a range that begins (and takes its only step) during another goroutine's write is
//! `concurrent_write_during_iteration` naming that writer; a delete racing a writer that grows a
//! classic map says so (`growing`). The targets are real races that Go's runtime usually kills:
//! their findings must be printed all the same.
//!
//! Needs root and a kernel with uprobes and BPF; fails (never skips) without them.

mod common;

use common::run::run_scenario_expecting;
use common::scenarios::{Build, RACY, check_findings, go_minor};
use common::{Fixture, check_all};

/// Runs of one racy scenario before it counts as missed.
const ATTEMPTS: usize = 8;

/// Go's runtime killed it ("concurrent map …", exit 2), or it survived its two seconds (3).
fn died_of_its_race_or_survived(code: Option<i32>, out: &str, err: &str) -> bool {
    (code == Some(2) && err.contains("concurrent map"))
        || (code == Some(3) && out.contains("survived"))
}

fn check(f: &Fixture, args: &[&str]) -> Vec<String> {
    let mut bad = Vec::new();
    let build = Build {
        name: &f.name,
        source_dir: &f.source_dir,
        minor: go_minor(&f.go_version),
    };
    for (scenario, kinds) in RACY {
        // A probe reads the flag a microsecond or two before Go's own check on the same call:
        // a write that sets it in between kills the process unseen. A real race recurs; so
        // does each run here, up to `ATTEMPTS` times, until one is seen.
        let mut run = None;
        for _ in 0..ATTEMPTS {
            match run_scenario_expecting(f, scenario, args, died_of_its_race_or_survived) {
                Ok(r) if r.findings.is_empty() => run = Some(Ok(r)),
                other => {
                    run = Some(other);
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
        bad.extend(check_findings(
            &build,
            scenario,
            kinds,
            &run.findings,
            &run.stderr,
        ));
        // Classic maps evacuate their old buckets over the writes after a growth: the delete
        // races a map that is growing. (Swiss growth lasts microseconds inside one insert.)
        if *scenario == "writers_grow_delete"
            && f.map_impl == "classic"
            && !run.findings.iter().any(|v| v["growing"] == true)
        {
            bad.push(format!(
                "{} {scenario}: no finding says the map was growing: {:?}",
                f.name, run.findings
            ));
        }
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
