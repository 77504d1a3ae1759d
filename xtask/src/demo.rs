//! `cargo xtask demo`: builds a Go program with the newest toolchain, starts it, and points
//! map-trace at it.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::fixtures::{self, Job, Program};
use crate::toolchains::{Arch, CONFIGS, GoToolchain, Variant};
use crate::{cmd, paths, setup};

/// The demo target: a cache whose stats reporter ranges without the lock while the janitor
/// deletes (the bug), and whose janitor deletes during its own range (correct, not reported).
/// It waits for a line on stdin, sent once map-trace is attached.
const PROGRAM: &str = "demo";
/// map-trace is killed after this, so a stuck demo cannot hang.
const TIMEOUT: Duration = Duration::from_secs(60);

pub fn run() -> Result<ExitCode> {
    cmd::require_root(
        "cargo xtask demo",
        "map-trace reads another process and, later, attaches uprobes",
    )?;
    setup::run()?;
    let program = Program::load(&paths::go_programs_dir().join(PROGRAM))?;
    let newest = GoToolchain::newest();
    let config = CONFIGS
        .iter()
        .find(|c| c.toolchain == newest.version && c.goexperiment.is_none())
        .context("the newest Go toolchain has no plain config in CONFIGS")?;
    let arch = Arch::host()
        .with_context(|| format!("no Go arch for this host ({})", std::env::consts::ARCH))?;
    let go = fixtures::resolve(newest)?;
    let demo_dir = paths::target_dir().join("demo");
    let job = Job {
        program: &program,
        config,
        arch,
        variant: Variant::Default,
        go: &go,
        out: demo_dir.join(PROGRAM),
        src_dir: demo_dir.join("src").join(PROGRAM),
        stamp_path: demo_dir.join(format!("{PROGRAM}.stamp")),
    };
    fixtures::ensure_built(&job)?;
    println!("built {} with go{}", job.out.display(), newest.version);

    let map_trace = build_release_daemon()?;

    let mut go_child = cmd::spawn(
        &mut Command::new(&job.out),
        Stdio::piped(),
        "the demo Go program did not start",
    )?;
    let pid = go_child.id();
    println!(
        "started {} (pid {pid}); attaching map-trace",
        job.out.display()
    );
    let result = trace_demo(&map_trace, &mut go_child, pid);
    let _ = go_child.kill();
    let _ = go_child.wait();
    result
}

/// Builds the release daemon (the eBPF object embedded) and returns its path.
pub fn build_release_daemon() -> Result<std::path::PathBuf> {
    cmd::run(
        Command::new("cargo")
            .args(["build", "--release", "-p", "map-trace"])
            .current_dir(paths::repo_root()),
        "fix the map-trace build errors above",
    )?;
    Ok(paths::target_dir().join("release/map-trace"))
}

/// Runs `map-trace --pid`, releases the demo once the probes are attached, and checks that the
/// race was reported.
fn trace_demo(
    map_trace: &std::path::Path,
    go_child: &mut std::process::Child,
    pid: u32,
) -> Result<ExitCode> {
    let mut tracer = Command::new(map_trace)
        .args(["--pid", &pid.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", map_trace.display()))?;
    let stderr = tracer.stderr.take().context("map-trace stderr")?;
    let (attached_tx, attached_rx) = std::sync::mpsc::channel();
    let relay = std::thread::spawn(move || {
        // The summary's "N finding(s)": every occurrence, grouped or not.
        let mut total = 0usize;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            if line.contains("probes attached") {
                let _ = attached_tx.send(());
            }
            if let Some(rest) = line.strip_prefix("map-trace summary: ") {
                total = rest
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
            }
        }
        total
    });
    let stdout = tracer.stdout.take().context("map-trace stdout")?;
    // New finding groups print a block headed by the severity; repeats print "seen N×" lines.
    let findings = std::thread::spawn(move || {
        let (mut races, mut others) = (0usize, 0usize);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("{line}");
            let header = ["ERROR", "WARNING", "NOTICE"]
                .iter()
                .any(|s| line.starts_with(s));
            if header && !line.contains(" seen ") {
                if line.contains("concurrent_write_during_iteration") {
                    races += 1;
                } else {
                    others += 1;
                }
            }
        }
        (races, others)
    });
    if attached_rx.recv_timeout(TIMEOUT).is_err() {
        let _ = tracer.kill();
        let _ = tracer.wait();
        anyhow::bail!("map-trace did not attach within {TIMEOUT:?}");
    }
    go_child
        .stdin
        .take()
        .context("demo stdin")?
        .write_all(b"go\n")
        .context("releasing the demo program")?;
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = tracer.try_wait()? {
            break status;
        }
        if started.elapsed() > TIMEOUT {
            let _ = tracer.kill();
            let _ = tracer.wait();
            anyhow::bail!("map-trace did not stop within {TIMEOUT:?} after the demo finished");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let total = relay.join().unwrap_or(0);
    let (races, others) = findings.join().unwrap_or((0, 0));
    if !status.success() {
        anyhow::bail!("map-trace exited with {status}");
    }
    if races == 0 {
        anyhow::bail!(
            "map-trace reported no concurrent_write_during_iteration for the demo's race"
        );
    }
    if others > 0 {
        anyhow::bail!("map-trace reported {others} finding(s) of another kind: the demo has none");
    }
    println!(
        "demo: map-trace reported the stats/janitor race ({races} finding group(s), {total} occurrence(s)) and nothing for the janitor's own deletes"
    );
    Ok(ExitCode::SUCCESS)
}
