//! Runs one scenario of testdata/go/scenarios under `map-trace --pid --format json` and collects
//! what it reported.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::scenarios::kinds_of;
use crate::{Fixture, MapTrace, Reaped, wait_timeout};

/// Starts scenario `scenario` of `f`, its stdio piped: it waits for a line on stdin before it
/// runs, so a tracer can attach first.
pub fn spawn_waiting(f: &Fixture, scenario: &str) -> Result<Reaped, String> {
    spawn_waiting_at(&f.path, scenario)
}

/// `spawn_waiting` of the scenarios binary at `path`.
fn spawn_waiting_at(path: &std::path::Path, scenario: &str) -> Result<Reaped, String> {
    spawn(
        Command::new(path)
            .arg(scenario)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .map(Reaped)
    .map_err(|e| format!("spawn {}: {e}", path.display()))
}

/// Spawns `cmd`, again while its executable is busy (ETXTBSY): a test that has just copied a
/// fixture closed its copy, but another test's child, forked meanwhile and not yet exec'd, may
/// still hold the write descriptor for a moment.
pub fn spawn(cmd: &mut Command) -> std::io::Result<std::process::Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

pub struct Run {
    pub kinds: BTreeSet<String>,
    pub findings: Vec<serde_json::Value>,
    /// map-trace's stderr.
    pub stderr: String,
    /// The target's exit code (None: killed by a signal) and stderr.
    pub target_code: Option<i32>,
    pub target_stderr: String,
}

/// Runs one scenario under `map-trace --pid --format json`; the target must exit 0 and print ok.
pub fn run_scenario(
    exe: MapTrace,
    f: &Fixture,
    scenario: &str,
    args: &[&str],
) -> Result<Run, String> {
    run_scenario_expecting(exe, f, scenario, args, |code, out, _| {
        code == Some(0) && out.trim() == "ok"
    })
}

/// Like `run_scenario`, with the target's acceptable outcomes given by `target_ok(code, stdout,
/// stderr)`.
pub fn run_scenario_expecting(
    exe: MapTrace,
    f: &Fixture,
    scenario: &str,
    args: &[&str],
    target_ok: impl Fn(Option<i32>, &str, &str) -> bool,
) -> Result<Run, String> {
    let mut target = spawn_waiting(f, scenario)?;
    let pid = target.0.id().to_string();
    let mut tracer = Reaped(
        exe.command()
            .args(["--pid", &pid, "--format", "json", "--every-occurrence"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn map-trace: {e}"))?,
    );
    // Relay map-trace's stderr, noting when it is attached.
    let (tx, rx) = mpsc::channel();
    let err = tracer.0.stderr.take().unwrap();
    let relay = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if line.contains("probes attached") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let mut out = tracer.0.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    if rx.recv_timeout(Duration::from_secs(30)).is_err() {
        drop(tracer);
        return Err(format!(
            "map-trace did not attach: {}",
            relay.join().unwrap_or_default()
        ));
    }
    let (code, terr) = release(&mut target, target_ok)?;
    let tcode = wait_timeout(&mut tracer.0, Duration::from_secs(20))?;
    let stderr = relay.join().unwrap_or_default();
    let stdout = reader.join().unwrap_or_default();
    if tcode != Some(0) {
        return Err(format!("map-trace exited {tcode:?}: {stderr}"));
    }
    if !stderr.contains("exited") || !stderr.contains("summary") {
        return Err(format!(
            "map-trace did not report the exit and a summary: {stderr}"
        ));
    }
    let findings = json_records(stdout.lines())?;
    let kinds = kinds_of(&findings);
    Ok(Run {
        kinds,
        findings,
        stderr,
        target_code: code,
        target_stderr: terr,
    })
}

/// Every line of map-trace's `--format json --every-occurrence` stdout as JSON (one finding
/// each); a line that is not JSON is the run's failure.
fn json_records<'a>(
    lines: impl Iterator<Item = &'a str>,
) -> Result<Vec<serde_json::Value>, String> {
    lines
        .map(|l| serde_json::from_str(l).map_err(|e| format!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// Lets a target started by `spawn_waiting` run, waits for its end (60 s at most) and judges
/// it with `target_ok(code, stdout, stderr)`: its exit code and stderr when acceptable.
fn release(
    target: &mut Reaped,
    target_ok: impl Fn(Option<i32>, &str, &str) -> bool,
) -> Result<(Option<i32>, String), String> {
    target
        .0
        .stdin
        .take()
        .unwrap()
        .write_all(b"go\n")
        .map_err(|e| e.to_string())?;
    let code = wait_timeout(&mut target.0, Duration::from_secs(60))?;
    let mut tout = String::new();
    let _ = target.0.stdout.take().unwrap().read_to_string(&mut tout);
    let mut terr = String::new();
    let _ = target.0.stderr.take().unwrap().read_to_string(&mut terr);
    if !target_ok(code, &tout, &terr) {
        return Err(format!(
            "target exited {code:?} under map-trace: {tout}{terr}"
        ));
    }
    Ok((code, terr))
}

/// Starts one of the hot scenarios (`hot_self_insert`, `hot_cross_insert`) of the scenarios
/// binary at `path` for `secs` seconds, waiting on stdin for its go (output discarded).
pub fn spawn_hot(path: &std::path::Path, scenario: &str, secs: u64) -> Reaped {
    Reaped(
        spawn(
            Command::new(path)
                .arg(scenario)
                .env("HOT_SECONDS", secs.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .unwrap_or_else(|e| panic!("spawn {}: {e}", path.display())),
    )
}

/// A copy of this arch's Go `version` build of `program` in a scratch directory of its own
/// (`--exe` traces every process of a file: tests that run at once must not share one).
pub fn own_copy(program: &str, version: &str, test: &str) -> (crate::Scratch, std::path::PathBuf) {
    let f = crate::host_fixture(program, version);
    let dir = crate::Scratch::new(test);
    let path = dir.join(program);
    std::fs::copy(&f.path, &path).unwrap();
    (dir, path)
}

/// One `map-trace --exe` daemon for many scenario runs of one build, the way the VM tests run
/// them: the probes are loaded and attached once instead of once a run (the verifier's ~1 s
/// was most of each run's time), and each run's findings are those carrying its pid, read once
/// the daemon has said the pid exited (it drains a process's findings before it says so).
/// The build is traced through a copy of its own: `--exe` traces every process of a file, and
/// other tests may run the same fixture meanwhile.
pub struct ExeSession {
    daemon: crate::daemon::Daemon,
    path: std::path::PathBuf,
    _dir: crate::Scratch,
}

impl ExeSession {
    /// Starts `map-trace --exe COPY --format json --every-occurrence ARGS` on a copy of `f`.
    pub fn start(exe: MapTrace, f: &Fixture, args: &[&str]) -> Result<ExeSession, String> {
        let dir = crate::Scratch::new(&format!("session-{}", f.name));
        let path = dir.join(&f.name);
        std::fs::copy(&f.path, &path).map_err(|e| format!("copy {}: {e}", f.path.display()))?;
        let exe_arg = path.to_string_lossy().into_owned();
        let mut all = vec![
            "--exe",
            exe_arg.as_str(),
            "--format",
            "json",
            "--every-occurrence",
        ];
        all.extend_from_slice(args);
        let mut daemon = crate::daemon::Daemon::start_to_file(exe, &all, &dir.join("stdout"));
        daemon.try_wait_line_with(&["probes attached"], Duration::from_secs(60))?;
        Ok(ExeSession {
            daemon,
            path,
            _dir: dir,
        })
    }

    /// Runs `scenario` to its end; the target must exit 0 and print ok.
    pub fn run(&mut self, scenario: &str) -> Result<Run, String> {
        self.run_expecting(scenario, |code, out, _| {
            code == Some(0) && out.trim() == "ok"
        })
    }

    /// Like `run`, with the target's acceptable outcomes given by `target_ok(code, stdout,
    /// stderr)`.
    pub fn run_expecting(
        &mut self,
        scenario: &str,
        target_ok: impl Fn(Option<i32>, &str, &str) -> bool,
    ) -> Result<Run, String> {
        let mut target = spawn_waiting_at(&self.path, scenario)?;
        let pid = target.0.id();
        let log_from = self.daemon.log.len();
        // The probes are on the file, so the process is traced from its first instruction, but
        // its findings are resolved (load bias, map types) from what the daemon reads of it
        // once it has seen it start: wait for that, as a process that lives longer would.
        self.daemon
            .try_wait_line_with(&[&format!("tracing pid {pid} ")], Duration::from_secs(30))?;
        let (code, terr) = release(&mut target, target_ok)?;
        self.daemon
            .try_wait_line_with(&[&format!("pid {pid} exited")], Duration::from_secs(30))?;
        let lines = self.daemon.stdout_lines();
        let mut findings = json_records(lines.iter().map(String::as_str))?;
        findings.retain(|v| v["pid"] == pid);
        // What the daemon said during this run (and perhaps the end of the one before).
        let stderr = self.daemon.log[log_from..].join("\n");
        Ok(Run {
            kinds: kinds_of(&findings),
            findings,
            stderr,
            target_code: code,
            target_stderr: terr,
        })
    }

    /// Stops the daemon with SIGTERM; it must exit 0 with its summary.
    pub fn finish(self) -> Result<(), String> {
        let (code, _, stderr) = self.daemon.terminate();
        if code != Some(0) || !stderr.contains("summary") {
            return Err(format!(
                "map-trace exited {code:?} without a summary: {stderr}"
            ));
        }
        Ok(())
    }
}

/// One scenario run to check: the build, the scenario and the kinds it must report.
pub type Job<'a> = (&'a Fixture, &'a str, &'a [&'a str]);

/// Runs `jobs` (in their order) under one `ExeSession` per build started with `args`, two
/// builds at a time, and judges each run with `check`. Returns every failure, each naming its
/// build and scenario.
pub fn check_in_sessions(
    exe: MapTrace,
    jobs: &[Job<'_>],
    args: &[&str],
    check: impl Fn(&Job<'_>, Result<Run, String>) -> Vec<String> + Sync,
) -> Vec<String> {
    let mut builds: Vec<(&Fixture, Vec<&Job<'_>>)> = Vec::new();
    for job in jobs {
        match builds.iter_mut().find(|(f, _)| f.name == job.0.name) {
            Some((_, runs)) => runs.push(job),
            None => builds.push((job.0, vec![job])),
        }
    }
    crate::check_all(&builds, |(f, runs)| {
        let started = std::time::Instant::now();
        let mut session = match ExeSession::start(exe, f, args) {
            Ok(s) => s,
            Err(e) => return vec![format!("{}: {e}", f.name)],
        };
        let mut failures = Vec::new();
        for job in runs {
            failures.extend(check(job, session.run(job.1)));
        }
        if let Err(e) = session.finish() {
            failures.push(format!("{}: {e}", f.name));
        }
        eprintln!(
            "{}: {} runs under one daemon in {:.1}s",
            f.name,
            runs.len(),
            started.elapsed().as_secs_f64()
        );
        failures
    })
}

/// The usual judgement of a run: exactly the kinds `want`, with every field and marked site
/// (`scenarios::check_findings`).
pub fn check_run(job: &Job<'_>, want: &[&str], run: Result<Run, String>) -> Vec<String> {
    let (f, scenario, _) = job;
    match run {
        Ok(run) => crate::scenarios::check_findings(
            &crate::scenarios::Build {
                name: &f.name,
                source_dir: &f.source_dir,
                minor: crate::scenarios::go_minor(&f.go_version),
            },
            scenario,
            want,
            &run.findings,
            &run.stderr,
        ),
        Err(e) => vec![format!("{} {scenario}: {e}", f.name)],
    }
}
