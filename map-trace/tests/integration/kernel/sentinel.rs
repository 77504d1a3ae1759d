//! Sentinel mode (`--mode sentinel`): probes on range starts and ends only, a map's header
//! compared between them, and escalation to the full probes after a change. On the scenario
//! suite it must report exactly the ranges that saw their map gain elements, and nothing on
//! correct code; on a race that keeps happening, its escalation must name the writer.

use std::io::Write as _;
use std::time::Duration;

use test_support::daemon::Daemon;
use test_support::markers::Markers;
use test_support::run::run_scenario;
use test_support::scenarios::{Build, CHANGED, CW, SENTINEL_REPORTS, go_minor, site_of};
use test_support::{Fixture, check_all, kernel_test, wait_timeout};

use crate::MAP_TRACE;

/// This module's group at the kernel tests' gate.
const GROUP: &str = "sentinel";

fn minor(f: &Fixture) -> u32 {
    go_minor(&f.go_version)
}

/// One scenario under `--mode sentinel`: exactly the expected kinds; a report names the
/// marked range and map type, and no writer.
fn check_sentinel(f: &Fixture, scenario: &str, reports: bool) -> Vec<String> {
    let run = match run_scenario(MAP_TRACE, f, scenario, &["--mode", "sentinel"]) {
        Ok(r) => r,
        Err(e) => return vec![format!("{} {scenario}: {e}", f.name)],
    };
    let name = &f.name;
    let want: std::collections::BTreeSet<String> =
        reports.then(|| CHANGED.to_string()).into_iter().collect();
    if run.kinds != want {
        return vec![format!(
            "{name} {scenario}: kinds {:?}, expected {want:?}\n{}",
            run.kinds, run.stderr
        )];
    }
    let build = Build {
        name,
        source_dir: &f.source_dir,
        minor: minor(f),
    };
    let expected = Markers::load(build.source_dir, build.minor).expected(scenario);
    let mut bad = Vec::new();
    for v in &run.findings {
        if v.get("writer_stack").is_some() || v.get("writer_goid").is_some() {
            bad.push(format!(
                "{name} {scenario}: a sentinel finding names a writer: {v}"
            ));
        }
        match site_of(&v["iterator_stack"]) {
            Ok(site) if expected.ranges.contains(&site) => {}
            Ok(site) => bad.push(format!(
                "{name} {scenario}: range at {site:?}, expected one of {:?}",
                expected.ranges
            )),
            Err(e) => bad.push(format!("{name} {scenario}: iterator_stack: {e}: {v}")),
        }
        let t = v["map_type"].as_str().unwrap_or_default();
        if !expected.types.contains(t) {
            bad.push(format!(
                "{name} {scenario}: map type {t}, expected {:?}",
                expected.types
            ));
        }
        if v["severity"] != "warning" {
            bad.push(format!("{name} {scenario}: severity {}", v["severity"]));
        }
    }
    bad
}

/// The scenario suite in sentinel mode on the oldest and newest release of each map
/// implementation: the ranges whose map gained elements are reported, nothing else is, and
/// correct programs never are. Prints the recall at first occurrence.
#[test]
fn sentinel_reports_ranges_whose_map_gained_elements_and_never_flags_correct_code() {
    let _gate = kernel_test(GROUP, "attaches uprobes");
    let fixtures = test_support::map_impl_bounds();
    let jobs = test_support::scenario_jobs(&fixtures);
    let failures = check_all(&jobs, |(f, s, _)| {
        check_sentinel(f, s, SENTINEL_REPORTS.contains(s))
    });
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let reporting = jobs.iter().filter(|(_, _, k)| !k.is_empty()).count();
    let races = jobs.iter().filter(|(_, _, k)| k.contains(&CW)).count();
    let seen = jobs
        .iter()
        .filter(|(_, s, _)| SENTINEL_REPORTS.contains(s))
        .count();
    let races_seen = jobs
        .iter()
        .filter(|(_, s, k)| k.contains(&CW) && SENTINEL_REPORTS.contains(s))
        .count();
    eprintln!(
        "sentinel recall at first occurrence on the scenario suite: {seen} of {reporting} reporting scenario runs ({:.0}%; cross-goroutine races {races_seen} of {races}) across {} Go builds; 0 false reports in {} runs",
        100.0 * seen as f64 / reporting as f64,
        fixtures.len(),
        jobs.len()
    );
}

/// How the escalation test names its target: the file (links shared by its processes) or the
/// process (links of its own, and so are the escalation's).
#[derive(Clone, Copy, PartialEq)]
enum Scope {
    Exe,
    Pid,
}

/// A race that keeps happening (`hot_cross_insert`: another goroutine inserts during a range
/// every 20 ms): the sentinel reports the first occurrence without its writer, escalates, the
/// full probes then name the writer, and the binary falls back to the sentinel when the window
/// is over and escalates again after the period.
#[test]
fn sentinel_escalation_names_the_writer_then_falls_back() {
    let _gate = kernel_test(GROUP, "traces a Go process");
    escalation_run(Scope::Exe);
}

/// The same with `--pid`: the escalation's probes are the process's own.
#[test]
fn sentinel_escalation_of_one_process_names_the_writer() {
    let _gate = kernel_test(GROUP, "traces a Go process");
    escalation_run(Scope::Pid);
}

fn escalation_run(scope: Scope) {
    // Its own copy: `--exe` traces every process of a file.
    let (_dir, exe) = test_support::run::own_copy("scenarios", "1.26.6", "sentinel-escalation");
    let secs = 5;
    let mut t = test_support::run::spawn_hot(&exe, "hot_cross_insert", secs);
    let pid = t.0.id();
    let pid_arg = pid.to_string();
    let target = match scope {
        Scope::Exe => ["--exe", exe.to_str().unwrap()],
        Scope::Pid => ["--pid", pid_arg.as_str()],
    };
    let mut args = target.to_vec();
    args.extend([
        "--format",
        "json",
        "--mode",
        "sentinel",
        "--escalate-for",
        "1s",
        "--escalate-every",
        "2s",
    ]);
    let mut d = Daemon::start(MAP_TRACE, &args, true);
    d.wait_line("probes attached", Duration::from_secs(60));
    t.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let code = wait_timeout(&mut t.0, Duration::from_secs(secs + 60)).unwrap();
    assert_eq!(code, Some(0), "the traced program failed");
    d.wait_line(&format!("pid {pid} exited"), Duration::from_secs(30));
    let (code, stdout, stderr) = d.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    let findings = test_support::json_findings(&stdout);
    let of = |kind: &str| findings.iter().find(|v| v["kind"] == kind);
    let changed = of(CHANGED).unwrap_or_else(|| panic!("no {CHANGED}: {stdout}\n{stderr}"));
    assert_eq!(
        changed["iterator_stack"][0]["function"],
        "main.hotCrossRange"
    );
    assert!(changed.get("writer_stack").is_none(), "{changed}");
    let named = of(CW).unwrap_or_else(|| panic!("escalation named no writer: {stdout}\n{stderr}"));
    assert_eq!(
        named["writer_stack"][0]["function"], "main.hotCrossRange.func1",
        "{named}"
    );
    assert_eq!(named["iterator_stack"][0]["function"], "main.hotCrossRange");
    assert_ne!(named["writer_goid"], named["iterator_goid"]);
    // Only these two kinds: the escalated probes classify, they do not add noise.
    for v in &findings {
        assert!(v["kind"] == CHANGED || v["kind"] == CW, "{v}");
    }
    // 1 s windows at most every 2 s over 5 s: escalated, fell back, escalated again.
    let started: u64 = stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("sentinel: ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no escalation summary: {stderr}"));
    assert!(started >= 2, "escalations {started}: {stderr}");
    assert!(stderr.contains("full probes attached for 1s"), "{stderr}");
    assert!(stderr.contains("sentinel again"), "{stderr}");
    eprintln!(
        "sentinel on hot_cross_insert ({}): {started} escalations",
        if scope == Scope::Exe {
            "--exe"
        } else {
            "--pid"
        }
    );
}
