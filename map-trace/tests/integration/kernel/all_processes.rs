//! `--all`: every Go process on the host, present and future, filtered by path globs, each
//! finding saying where its process runs (cgroup, container id, unit).

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use test_support::daemon::Daemon;
use test_support::{Reaped, Scratch, kernel_test, wait_timeout};

use crate::MAP_TRACE;

/// This module's group at the kernel tests' gate.
const GROUP: &str = "all_processes";

const CONTAINER_ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The cgroup v2 mount (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on hybrid hosts).
fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mounts
        .lines()
        .find(|l| l.contains(" - cgroup2 "))
        .and_then(|l| l.split_whitespace().nth(4))
        .map(PathBuf::from)
        .expect("a cgroup v2 hierarchy is mounted (needed to place a process as a container)")
}

/// A cgroup laid out as Docker's systemd driver lays out a container's, removed when dropped.
struct FakeContainer(PathBuf);

impl FakeContainer {
    fn new() -> FakeContainer {
        let dir = cgroup2_root()
            .join(format!("map-trace-test-{}.slice", std::process::id()))
            .join(format!("docker-{CONTAINER_ID}.scope"));
        std::fs::create_dir_all(&dir).unwrap();
        FakeContainer(dir)
    }
}

impl Drop for FakeContainer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
        let _ = std::fs::remove_dir(self.0.parent().unwrap());
    }
}

/// A scenario process waiting for "go" on stdin, optionally placed in `cgroup` before exec.
fn waiting(path: &Path, scenario: &str, cgroup: Option<&Path>) -> Reaped {
    let mut c = Command::new(path);
    c.arg(scenario)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(dir) = cgroup {
        let procs = dir.join("cgroup.procs");
        // SAFETY: one write(2) of a static string between fork and exec.
        unsafe {
            c.pre_exec(move || std::fs::write(&procs, "0"));
        }
    }
    Reaped(c.spawn().unwrap())
}

fn release(t: &mut Reaped) {
    t.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let code = wait_timeout(&mut t.0, Duration::from_secs(60)).unwrap();
    assert_eq!(code, Some(0), "a traced program failed");
}

/// A Go process already running (in a container-shaped cgroup) and one started later are
/// traced, of two Go versions; one excluded by a glob and a non-Go process are not. Findings
/// carry the container id, unit and cgroup; the skipped one is counted.
#[test]
fn all_traces_every_go_process_and_says_where_it_runs() {
    let _gate = kernel_test(GROUP, "traces every Go process on the host");
    let dir = Scratch::new("all-processes");
    let copy = |version: &str, name: &str| {
        let p = dir.join(name);
        std::fs::copy(test_support::host_fixture("scenarios", version).path, &p).unwrap();
        p
    };
    let (early, late, skipped) = (
        copy("1.26.6", "early"),
        copy("1.19.8", "late"),
        copy("1.27.3", "skipped-app"),
    );
    let container = FakeContainer::new();
    let mut t_early = waiting(&early, "cross_insert_str", Some(&container.0));
    let mut t_skip = waiting(&skipped, "cross_insert_str", None);
    let mut sleeper = Reaped(Command::new("sleep").arg("30").spawn().unwrap());
    std::thread::sleep(Duration::from_millis(300));
    let mut d = Daemon::start(
        MAP_TRACE,
        &["--all", "--exclude", "*/skipped-*", "--format", "json"],
        true,
    );
    d.wait_line(
        &format!("tracing pid {}", t_early.0.id()),
        Duration::from_secs(120),
    );
    let mut t_late = waiting(&late, "self_insert", None);
    d.wait_line(
        &format!("tracing pid {}", t_late.0.id()),
        Duration::from_secs(60),
    );
    let pids = (t_early.0.id(), t_late.0.id(), t_skip.0.id());
    release(&mut t_early);
    release(&mut t_late);
    release(&mut t_skip);
    d.wait_line(&format!("pid {} exited", pids.1), Duration::from_secs(30));
    let m = d.metrics();
    let (code, stdout, stderr) = d.terminate();
    let _ = sleeper.0.kill();
    assert_eq!(code, Some(0), "{stderr}");
    let findings = test_support::json_findings(&stdout);
    let of = |pid: u32| findings.iter().find(|v| v["pid"] == pid);
    let early_f = of(pids.0)
        .unwrap_or_else(|| panic!("no finding of the running process: {stdout}\n{stderr}"));
    assert_eq!(early_f["kind"], "concurrent_write_during_iteration");
    assert_eq!(early_f["container_id"], CONTAINER_ID, "{early_f}");
    assert_eq!(
        early_f["unit"],
        format!("docker-{CONTAINER_ID}.scope"),
        "{early_f}"
    );
    assert!(
        early_f["cgroup"]
            .as_str()
            .unwrap_or("")
            .ends_with(&format!("docker-{CONTAINER_ID}.scope")),
        "{early_f}"
    );
    let late_f = of(pids.1)
        .unwrap_or_else(|| panic!("no finding of the process started later: {stdout}\n{stderr}"));
    assert_eq!(late_f["kind"], "insert_during_iteration");
    assert!(late_f.get("container_id").is_none(), "{late_f}");
    assert!(
        of(pids.2).is_none(),
        "the excluded program was traced: {stdout}"
    );
    assert!(
        !stderr.contains(&format!("tracing pid {}", pids.2)),
        "{stderr}"
    );
    assert!(
        !stderr.contains("not tracing"),
        "a non-Go process was complained about: {stderr}"
    );
    let excluded = m
        .get("map_trace_processes_skipped_total{reason=\"excluded\"}")
        .copied()
        .unwrap_or(0.0);
    assert!(excluded >= 1.0, "{m:?}");
    let series = m.keys().find(|k| {
        k.starts_with("map_trace_findings_total{")
            && k.contains(&format!("traced_container=\"docker-{CONTAINER_ID}.scope\""))
    });
    assert!(
        series.is_some(),
        "no findings series with the container label: {m:?}"
    );
    assert!(
        stderr.contains("go1.26.6") && stderr.contains("go1.19.8"),
        "{stderr}"
    );
}
