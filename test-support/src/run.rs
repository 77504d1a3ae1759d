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
    spawn(
        Command::new(&f.path)
            .arg(scenario)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .map(Reaped)
    .map_err(|e| format!("spawn {}: {e}", f.path.display()))
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
    let findings: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).map_err(|e| format!("bad JSON line {l:?}: {e}")))
        .collect::<Result<_, _>>()?;
    let kinds = kinds_of(&findings);
    Ok(Run {
        kinds,
        findings,
        stderr,
        target_code: code,
        target_stderr: terr,
    })
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
