//! Judges a VM's outputs, on the host, with the same checks live_scenarios.rs makes on host
//! runs (test-support/src/scenarios.rs): one outcome per scenario run, failed when it did not run.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;

use super::guest::{GuestFixture, Plan, SENTINEL_SCENARIO};
use super::scenarios::{self, Build, check_findings, check_racy, racy_target_ok};
use super::serial::Console;

pub struct Outcome {
    /// `go1.27.3-arm64-default self_insert`, or with ` (--pid --low-overhead)`.
    pub label: String,
    pub problems: Vec<String>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One line of the guest's `runs` file.
#[derive(Debug, PartialEq)]
struct Run {
    pid: u64,
    exit: i32,
    /// The daemon said this pid exited (so it traced it, and drained its findings).
    exit_seen: bool,
}

/// `n pid fixture scenario exit-code exited-seen start end` → (fixture, scenario) → Run (the
/// last line of each: a racy scenario's last attempt).
fn parse_runs(text: &str) -> BTreeMap<(String, String), Run> {
    text.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let [_, pid, fixture, scenario, exit, seen, ..] = w[..] else {
                return None;
            };
            Some((
                (fixture.to_string(), scenario.to_string()),
                Run {
                    pid: pid.parse().ok()?,
                    exit: exit.parse().ok()?,
                    exit_seen: seen == "1",
                },
            ))
        })
        .collect()
}

/// map-trace's JSON findings by pid, and the lines that were not JSON findings.
fn parse_findings(text: &str) -> (BTreeMap<u64, Vec<serde_json::Value>>, Vec<String>) {
    let mut by_pid: BTreeMap<u64, Vec<serde_json::Value>> = BTreeMap::new();
    let mut bad = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) if v["pid"].is_u64() => by_pid
                .entry(v["pid"].as_u64().expect("checked"))
                .or_default()
                .push(v),
            _ => bad.push(line.to_string()),
        }
    }
    (by_pid, bad)
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Why the guest did not see "pid N exited" in time: what the daemon said of N at all (a line
/// that came after the guest stopped waiting shows a slow main loop, none a process it never
/// followed) and its slow turns (`MAP_TRACE_DEBUG_LOOP`), so a CI log alone tells the two apart.
fn exit_unseen(pid: u64, log: &str) -> String {
    let mine = format!("pid {pid} ");
    let said: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&mine) || l.contains("main loop took"))
        .take(8)
        .collect();
    let said = if said.is_empty() {
        format!("it said nothing of pid {pid}")
    } else {
        format!(
            "what it said of pid {pid}, and its slow turns: {}",
            said.join(" | ")
        )
    };
    format!(
        "map-trace did not say pid {pid} exited within {}s of its end: not traced, or its findings not drained; {said}",
        super::guest::EXIT_WAIT / 10
    )
}

/// The shared checks; `Markers::load` panics on unreadable sources, which fails this run only.
fn check(
    f: &GuestFixture,
    scenario: &str,
    expected: &[&str],
    findings: &[serde_json::Value],
    log: &str,
) -> Vec<String> {
    let build = Build {
        name: &f.name,
        source_dir: &f.source_dir,
        minor: f.minor,
    };
    std::panic::catch_unwind(AssertUnwindSafe(|| {
        check_findings(&build, scenario, expected, findings, log)
    }))
    .unwrap_or_else(|_| {
        vec![format!(
            "{} {scenario}: cannot read the want: markers in {} (panic above)",
            f.name,
            f.source_dir.display()
        )]
    })
}

/// `unfinished` says why the guest may not have finished (deadline, qemu failure), if it did not.
pub fn judge(plan: &Plan, console: &Console, unfinished: &str) -> Vec<Outcome> {
    let mut everywhere = console.problems.clone();
    if !console.done {
        everywhere.push(unfinished.to_string());
    }
    let mut outcomes = daemon_runs(plan, console, &everywhere);
    outcomes.push(pid_run(plan, console, everywhere.clone()));
    outcomes.push(sentinel_run(plan, console, everywhere));
    outcomes
}

fn daemon_runs(plan: &Plan, console: &Console, everywhere: &[String]) -> Vec<Outcome> {
    let runs = parse_runs(&console.text("runs"));
    let (mut by_pid, bad_lines) = parse_findings(&console.text("daemon.out"));
    let log = console.text("daemon.err");
    let see_log = "(map-trace's stderr: guest/daemon.err)";
    let mut daemon = everywhere.to_vec();
    match console
        .files
        .get("daemon.rc")
        .map(|b| String::from_utf8_lossy(b))
    {
        Some(rc) if rc.trim() == "0" => {}
        rc => daemon.push(format!(
            "the map-trace daemon exited {}: {}",
            rc.as_deref().map_or("(never)", str::trim),
            last_lines(&log, 5)
        )),
    }
    if console.done && !log.contains("summary") {
        daemon.push(format!("the daemon printed no summary {see_log}"));
    }
    for l in &bad_lines {
        daemon.push(format!("the daemon printed a line that is no finding: {l}"));
    }
    let attach_failed = console.mark_args("ATTACH-FAILED").is_some();

    let mut outcomes = Vec::new();
    let mut claimed = BTreeSet::new();
    for f in &plan.fixtures {
        for (scenario, expected) in &f.scenarios {
            let mut problems = daemon.clone();
            match runs.get(&(f.name.clone(), scenario.to_string())) {
                None if attach_failed => problems.push(format!(
                    "did not run: map-trace did not attach: {}",
                    last_lines(&log, 5)
                )),
                None => problems.push("did not run (see serial.log)".into()),
                Some(r) => {
                    claimed.insert(r.pid);
                    let n = r.pid;
                    let out = console.text(&run_file(f, scenario, "out"));
                    if r.exit != 0 || out.trim() != "ok" {
                        let err = console.text(&run_file(f, scenario, "err"));
                        problems.push(format!(
                            "target (pid {n}) exited {} under map-trace: {out}{err}",
                            r.exit
                        ));
                    }
                    if !r.exit_seen {
                        problems.push(format!("{} {see_log}", exit_unseen(n, &log)));
                    }
                    let findings = by_pid.remove(&r.pid).unwrap_or_default();
                    problems.extend(check(f, scenario, expected, &findings, see_log));
                }
            }
            outcomes.push(Outcome {
                label: format!("{} {scenario}", f.name),
                problems,
            });
        }
    }
    outcomes.extend(racy_runs(plan, console, &daemon, &mut by_pid));
    if !by_pid.is_empty() {
        let pids: Vec<String> = by_pid.keys().map(u64::to_string).collect();
        outcomes.push(Outcome {
            label: "findings of no scenario process".into(),
            problems: vec![format!(
                "the daemon reported findings for pid(s) {} {see_log}",
                pids.join(", ")
            )],
        });
    }
    outcomes
}

/// The racy scenarios (`racy` in the guest): every attempt's pid is claimed, the last one is
/// judged as tests/integration/kernel/writes_in_progress.rs judges a host run.
fn racy_runs(
    plan: &Plan,
    console: &Console,
    daemon: &[String],
    by_pid: &mut BTreeMap<u64, Vec<serde_json::Value>>,
) -> Vec<Outcome> {
    let text = console.text("racy-runs");
    let said = console.text("daemon.err");
    let attempts: Vec<((String, String), Run)> = text
        .lines()
        .filter_map(|l| parse_runs(l).into_iter().next())
        .collect();
    let mut outcomes = Vec::new();
    for f in &plan.fixtures {
        for racy in &f.racy {
            let key = (f.name.clone(), racy.name.to_string());
            let mine: Vec<&Run> = attempts
                .iter()
                .filter(|(k, _)| *k == key)
                .map(|(_, r)| r)
                .collect();
            let mut problems = daemon.to_vec();
            let Some(last) = mine.last() else {
                problems.push("did not run (see serial.log)".into());
                outcomes.push(Outcome {
                    label: format!("{} {}", f.name, racy.name),
                    problems,
                });
                continue;
            };
            for r in &mine[..mine.len() - 1] {
                by_pid.remove(&r.pid);
            }
            let findings = by_pid.remove(&last.pid).unwrap_or_default();
            let out = console.text(&run_file(f, racy.name, "out"));
            let err = console.text(&run_file(f, racy.name, "err"));
            if !racy_target_ok(Some(last.exit), &out, &err) {
                problems.push(format!(
                    "target (pid {}) exited {} under map-trace: {out}{err}",
                    last.pid, last.exit
                ));
            }
            if !last.exit_seen {
                problems.push(exit_unseen(last.pid, &said));
            }
            let build = Build {
                name: &f.name,
                source_dir: &f.source_dir,
                minor: f.minor,
            };
            let log = "(map-trace's stderr: guest/daemon.err)";
            problems.extend(
                std::panic::catch_unwind(AssertUnwindSafe(|| {
                    check_racy(&build, racy, f.classic, plan.fatal, &findings, log, &err)
                }))
                .unwrap_or_else(|_| vec![format!("{}: cannot read the want: markers", f.name)]),
            );
            outcomes.push(Outcome {
                label: format!("{} {} ({} attempt(s))", f.name, racy.name, mine.len()),
                problems,
            });
        }
    }
    outcomes
}

/// The guest's file for one run's target output (`out` or `err`).
fn run_file(f: &GuestFixture, scenario: &str, ext: &str) -> String {
    format!("run-{}-{scenario}.{ext}", f.name)
}

fn pid_run(plan: &Plan, console: &Console, mut problems: Vec<String>) -> Outcome {
    let (fixture, scenario) = &plan.pid_run;
    let label = format!("{fixture} {scenario} (--pid --low-overhead)");
    let Some(f) = plan.fixtures.iter().find(|f| &f.name == fixture) else {
        problems.push(format!("{fixture} is not in the plan"));
        return Outcome { label, problems };
    };
    let expected = f
        .scenarios
        .iter()
        .find(|(s, _)| s == scenario)
        .map_or(&[][..], |(_, k)| *k);
    let Some((log, findings)) = one_pid_run(console, "pid", "low overhead", &mut problems) else {
        return Outcome { label, problems };
    };
    problems.extend(check(f, scenario, expected, &findings, &log));
    Outcome { label, problems }
}

/// The `--pid --mode sentinel` run: one `map_changed_during_iteration` at the scenario's
/// range, with no writer (the sentinel does not know it).
fn sentinel_run(plan: &Plan, console: &Console, mut problems: Vec<String>) -> Outcome {
    let fixture = &plan.pid_run.0;
    let label = format!("{fixture} {SENTINEL_SCENARIO} (--pid --mode sentinel)");
    let Some((_, findings)) = one_pid_run(console, "sentinel", "sentinel", &mut problems) else {
        return Outcome { label, problems };
    };
    let kinds: Vec<&str> = findings.iter().filter_map(|v| v["kind"].as_str()).collect();
    if kinds != [scenarios::CHANGED] {
        problems.push(format!(
            "kinds {kinds:?}, expected [{}]",
            scenarios::CHANGED
        ));
    }
    for v in &findings {
        if v.get("writer_stack").is_some() {
            problems.push(format!("a sentinel finding names a writer: {v}"));
        }
        match scenarios::site_of(&v["iterator_stack"]) {
            Ok(site) if site.function == "main.crossInsertStr" => {}
            Ok(site) => problems.push(format!("range at {site:?}, not in main.crossInsertStr")),
            Err(e) => problems.push(format!("iterator_stack: {e}: {v}")),
        }
    }
    Outcome { label, problems }
}

/// The files of one `pid_run NAME` of the guest: its log and findings once the target and
/// map-trace both ended well, in the mode the log names by `mode_words`; None if it never ran.
fn one_pid_run(
    console: &Console,
    name: &str,
    mode_words: &str,
    problems: &mut Vec<String>,
) -> Option<(String, Vec<serde_json::Value>)> {
    let file = |ext: &str| format!("{name}{ext}");
    let rc = |f: &str| console.text(f).trim().to_string();
    let log = console.text(&file(".err"));
    if !console.files.contains_key(&file("-run")) {
        problems.push("did not run (see serial.log)".into());
        return None;
    }
    let out = console.text(&file("-target.out"));
    if rc(&file("-target.rc")) != "0" || out.trim() != "ok" {
        problems.push(format!(
            "target exited {} under map-trace --pid: {out}{}",
            rc(&file("-target.rc")),
            console.text(&file("-target.err"))
        ));
    }
    if rc(&file(".rc")) != "0" {
        problems.push(format!(
            "map-trace --pid exited {}: {log}",
            rc(&file(".rc"))
        ));
    }
    if !log.contains("exited") || !log.contains("summary") {
        problems.push(format!(
            "map-trace --pid did not report the exit and a summary: {log}"
        ));
    }
    if !log.contains(mode_words) {
        problems.push(format!(
            "map-trace --pid did not run in the {mode_words} mode (no end sites?): {log}"
        ));
    }
    let (by_pid, bad_lines) = parse_findings(&console.text(&file(".out")));
    for l in &bad_lines {
        problems.push(format!(
            "map-trace --pid printed a line that is no finding: {l}"
        ));
    }
    Some((log, by_pid.into_values().flatten().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_lines() {
        let runs = parse_runs(
            "1 140 go1.27.3-arm64-default self_insert 0 1 8.95 9.16\n\
             2 150 go1.27.3-arm64-default rwmutex 124 0 9.20 9.30\n\
             garbage\n",
        );
        assert_eq!(runs.len(), 2);
        assert_eq!(
            runs[&("go1.27.3-arm64-default".into(), "rwmutex".into())],
            Run {
                pid: 150,
                exit: 124,
                exit_seen: false
            }
        );
    }

    /// Judged against the committed scenario sources (their markers), with no findings: the
    /// correct programs pass, the rest fail for the reason that applies.
    #[test]
    fn every_planned_run_is_judged_and_unrun_ones_fail() {
        use crate::vm::scenarios::{CW, INSERT};
        let fixture = "go1.27.3-arm64-default";
        let plan = Plan {
            fixtures: vec![GuestFixture {
                name: fixture.into(),
                host_path: "/unused".into(),
                source_dir: crate::paths::go_programs_dir().join("scenarios"),
                minor: 27,
                scenarios: vec![
                    ("rwmutex", &[]),
                    ("self_insert", &[INSERT]),
                    ("channel_handoff", &[]),
                    ("break_then_write", &[]),
                    ("cross_delete_u64", &[CW]),
                ],
                racy: scenarios::RACY
                    .iter()
                    .filter(|r| r.name == "read_during_write")
                    .collect(),
                classic: false,
            }],
            fatal: true,
            pid_run: (fixture.into(), "rwmutex"),
        };
        let mut console = Console {
            done: true,
            ..Console::default()
        };
        let mut put = |name: &str, text: &str| {
            console.files.insert(name.into(), text.as_bytes().to_vec());
        };
        put(
            "runs",
            &format!(
                "1 10 {fixture} rwmutex 0 1 1 2\n2 11 {fixture} self_insert 0 1 2 3\n\
                 3 12 {fixture} channel_handoff 2 1 3 4\n4 13 {fixture} cross_delete_u64 0 0 4 5\n"
            ),
        );
        for s in [
            "rwmutex",
            "self_insert",
            "channel_handoff",
            "cross_delete_u64",
        ] {
            put(&format!("run-{fixture}-{s}.out"), "ok\n");
        }
        put("daemon.rc", "0\n");
        put(
            "daemon.err",
            "map-trace: tracing pid 13 (/fx/x): go1.27.3\nmap-trace: tracing pid 130 (/fx/x)\nmap-trace: debug: a sweep turn of the main loop took 900 ms\nmap-trace summary: 1 finding(s)\n",
        );
        put(
            "daemon.out",
            "{\"kind\":\"x\",\"pid\":999}\n{\"kind\":\"concurrent_writes\",\"pid\":30}\n",
        );
        // Two attempts at the race: the first's findings are claimed, the last is judged.
        put(
            "racy-runs",
            &format!(
                "6 30 {fixture} read_during_write 2 1 5 6\n6 31 {fixture} read_during_write 3 1 6 7\n"
            ),
        );
        put(
            &format!("run-{fixture}-read_during_write.out"),
            "survived 0\n",
        );
        put("pid-run", "20 1 2\n");
        put("pid-target.out", "ok\n");
        put("pid-target.rc", "0\n");
        put("pid.rc", "0\n");
        put(
            "pid.err",
            "map-trace: tracing pid 20 (go1.27.3 aarch64 swiss maps, low overhead: each range seen at its start and end)\nmap-trace: pid 20 exited: detached\nmap-trace summary: 0\n",
        );
        put("pid.out", "");
        // The sentinel run: a finding without a writer at the range, as expected.
        put("sentinel-run", "21 2 3\n");
        put("sentinel-target.out", "ok\n");
        put("sentinel-target.rc", "0\n");
        put("sentinel.rc", "0\n");
        put(
            "sentinel.err",
            "map-trace: tracing pid 21 (go1.27.3 aarch64 swiss maps, sentinel: each range's start and end compared)\nmap-trace: pid 21 exited: detached\nmap-trace summary: 1\n",
        );
        put(
            "sentinel.out",
            "{\"kind\":\"map_changed_during_iteration\",\"pid\":21,\"iterator_stack\":[{\"function\":\"main.crossInsertStr\",\"file\":\"/m.go\",\"line\":131}]}\n",
        );

        let outcomes = judge(&plan, &console, "unfinished");
        let by_label: BTreeMap<&str, &Outcome> =
            outcomes.iter().map(|o| (o.label.as_str(), o)).collect();
        let problems = |label: &str| by_label[label].problems.join("\n");
        assert!(
            by_label[&*format!("{fixture} rwmutex")].passed(),
            "{}",
            problems(&format!("{fixture} rwmutex"))
        );
        let pid_label = format!("{fixture} rwmutex (--pid --low-overhead)");
        assert!(by_label[&*pid_label].passed(), "{}", problems(&pid_label));
        let sentinel_label = format!("{fixture} cross_insert_str (--pid --mode sentinel)");
        assert!(
            by_label[&*sentinel_label].passed(),
            "{}",
            problems(&sentinel_label)
        );
        assert!(problems(&format!("{fixture} self_insert")).contains("kinds {}"));
        assert!(problems(&format!("{fixture} channel_handoff")).contains("exited 2"));
        assert!(problems(&format!("{fixture} break_then_write")).contains("did not run"));
        let unseen = problems(&format!("{fixture} cross_delete_u64"));
        assert!(unseen.contains("did not say pid 13 exited"), "{unseen}");
        // What the daemon did say of it, and its slow turns, are quoted; another pid's lines not.
        assert!(
            unseen.contains("tracing pid 13 (") && unseen.contains("took 900 ms"),
            "{unseen}"
        );
        assert!(!unseen.contains("pid 130"), "{unseen}");
        let no_scenario = problems("findings of no scenario process");
        assert!(
            no_scenario.contains("999") && !no_scenario.contains("30"),
            "{no_scenario}"
        );
        let racy = problems(&format!("{fixture} read_during_write (2 attempt(s))"));
        assert!(racy.contains("not seen in any attempt"), "{racy}");
        assert!(!racy.contains("exited 3"), "{racy}");
        assert_eq!(outcomes.len(), 9);

        console.done = false;
        let outcomes = judge(&plan, &console, "killed at the deadline");
        let planned = outcomes.iter().filter(|o| o.label.starts_with(fixture));
        assert!(planned.clone().count() == 8);
        assert!(
            planned
                .clone()
                .all(|o| o.problems.iter().any(|p| p == "killed at the deadline"))
        );
    }

    #[test]
    fn findings_by_pid() {
        let (by_pid, bad) = parse_findings(
            "{\"kind\":\"x\",\"pid\":140}\n\n{\"kind\":\"y\",\"pid\":140}\n{\"kind\":\"z\",\"pid\":7}\nnot json\n",
        );
        assert_eq!(by_pid[&140].len(), 2);
        assert_eq!(by_pid[&7][0]["kind"], "z");
        assert_eq!(bad, ["not json"]);
    }
}
