//! Redeploying a binary that `--exe` watches, every way operators do it, while processes of it
//! start at once or a little later: none may crash, none may go untraced, and each one's
//! findings must come from the build it really ran. Then a hundred deploys must leave nothing
//! behind: links, fds, BPF entries, open files, disk blocks.
//!
//! The binaries live on a tmpfs of the test's own: its block count is exact, and unmounting it
//! fails while anything (a uprobe, an open fd) still holds a file on it.
//!
//! Needs root and a kernel with uprobes, BPF and fanotify permission events; fails (never
//! skips) without them.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use test_support::daemon::{Daemon, bpf_map_entries, fd_kinds};
use test_support::{Fixture, Scratch};

use crate::MAP_TRACE;

/// This module's group at the kernel tests' gate.
const GROUP: &str = "deploy";

/// Reported by both builds for this scenario, from these functions.
const SCENARIO: &str = "cross_delete_u64";
const WRITER: &str = "main.crossDeleteU64.func1";
const MAP_TYPE: &str = "map[uint64]int";

fn fixture(go: &str) -> Fixture {
    test_support::fixtures_of("scenarios")
        .into_iter()
        .find(|f| f.arch == "x86_64" && f.variant == "default" && f.go_version.starts_with(go))
        .unwrap_or_else(|| panic!("go{go} amd64 scenarios fixture"))
}

/// A tmpfs mounted on a scratch directory for one test; unmounted (and checked unmountable) by
/// `release`.
struct Tmpfs {
    dir: Scratch,
    mounted: bool,
}

impl Tmpfs {
    fn new(name: &str) -> Tmpfs {
        let dir = Scratch::new(name);
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                "size=512m",
                "none",
                dir.path().to_str().unwrap(),
            ],
        );
        Tmpfs { dir, mounted: true }
    }

    fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.dir.join(name)
    }

    /// Bytes in use on the tmpfs.
    fn used(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(self.dir.path()).unwrap();
        (s.blocks() - s.blocks_free()) * s.fragment_size()
    }

    /// Unmounts; fails the test if anything still holds a file there. (The scratch directory,
    /// empty again, goes when `self` drops.)
    fn release(mut self) {
        let o = Command::new("umount")
            .arg(self.dir.path())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "the scratch tmpfs is still busy (something holds a deployed file): {}",
            String::from_utf8_lossy(&o.stderr)
        );
        self.mounted = false;
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily, so that the scratch directory's own drop, which follows, finds it empty.
        if self.mounted {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

fn run(cmd: &str, args: &[&str]) {
    let o = Command::new(cmd).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// How a new build replaces the one at `path`.
#[derive(Clone, Copy, Debug)]
enum Deploy {
    /// `cp` over it: same inode, new content (the case that crashed processes).
    CopyOver,
    /// `install`, as deploy scripts call it.
    Install,
    RemoveThenCopy,
    /// Copied next to it, then renamed over it.
    MoveOver,
    /// `path` is a symlink into a release directory, re-pointed to a new one.
    SymlinkFlip,
}

const DEPLOYS: [Deploy; 5] = [
    Deploy::CopyOver,
    Deploy::Install,
    Deploy::RemoveThenCopy,
    Deploy::MoveOver,
    Deploy::SymlinkFlip,
];

fn deploy(how: Deploy, src: &Path, path: &Path, n: usize) {
    let (s, p) = (src.to_str().unwrap(), path.to_str().unwrap());
    match how {
        Deploy::CopyOver => run("cp", &[s, p]),
        Deploy::Install => run("install", &["-m", "0755", s, p]),
        Deploy::RemoveThenCopy => {
            std::fs::remove_file(path).unwrap();
            run("cp", &[s, p]);
        }
        Deploy::MoveOver => {
            let tmp = format!("{p}.new");
            run("cp", &[s, &tmp]);
            run("mv", &["-f", &tmp, p]);
        }
        Deploy::SymlinkFlip => {
            let dir = path.parent().unwrap();
            let rel = dir.join(format!("release-{n}"));
            std::fs::create_dir_all(&rel).unwrap();
            run("cp", &[s, rel.join("app").to_str().unwrap()]);
            run("ln", &["-sfn", &format!("release-{n}/app"), p]);
        }
    }
}

/// Puts the first build in place for `how`: a file, or a symlink to one.
fn first_deploy(how: Deploy, src: &Path, path: &Path) {
    if let Deploy::SymlinkFlip = how {
        deploy(how, src, path, 0);
    } else {
        run("cp", &[src.to_str().unwrap(), path.to_str().unwrap()]);
    }
}

/// Starts `n` processes of `path` that run the scenario at once (their stdin already holds
/// the line they wait for): a traced process must have had its probes before it began.
fn start_now(path: &Path, n: usize) -> Vec<std::process::Child> {
    (0..n)
        .map(|_| {
            let mut c = spawn(path);
            c.stdin.take().unwrap().write_all(b"\n").unwrap();
            c
        })
        .collect()
}

/// The scenario process, waiting for its line on stdin.
fn spawn(path: &Path) -> std::process::Child {
    Command::new(path)
        .arg(SCENARIO)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", path.display()))
}

/// Starts a process of `path` that waits for its line on stdin before running the scenario,
/// once the daemon has had time to see it.
fn waiting(path: &Path) -> std::process::Child {
    let c = spawn(path);
    std::thread::sleep(Duration::from_millis(200));
    c
}

/// Waits for each; returns the pids, or a description of every process that failed.
fn finish(children: Vec<std::process::Child>, what: &str) -> Result<Vec<u32>, String> {
    let mut pids = Vec::new();
    let mut failed = Vec::new();
    for mut c in children {
        let pid = c.id();
        let (mut out, mut err) = (String::new(), String::new());
        let _ = c.stdout.take().unwrap().read_to_string(&mut out);
        let _ = c.stderr.take().unwrap().read_to_string(&mut err);
        let status = c.wait().unwrap();
        if status.success() && out.trim() == "ok" {
            pids.push(pid);
        } else {
            let err: String = err.lines().take(3).collect::<Vec<_>>().join(" | ");
            failed.push(format!("{what}: pid {pid}: {status}: {err}"));
        }
    }
    if failed.is_empty() {
        Ok(pids)
    } else {
        Err(failed.join("\n"))
    }
}

#[test]
fn every_deploy_method_keeps_every_process_alive_and_traced() {
    let _gate = test_support::kernel_test(GROUP, "attaches uprobes and holds execs with fanotify");
    let classic = fixture("1.23");
    let swiss = fixture("1.27");
    assert_eq!(
        (classic.map_impl.as_str(), swiss.map_impl.as_str()),
        ("classic", "swiss")
    );
    let scratch = Tmpfs::new("deploy");
    let mut crashed = Vec::new();
    let mut expected: BTreeMap<u32, String> = BTreeMap::new();
    let mut runs = 0;
    let mut logs = String::new();
    for (m, how) in DEPLOYS.into_iter().enumerate() {
        let dir = scratch.join(format!("{how:?}"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("app");
        first_deploy(how, &classic.path, &path);
        let mut d = Daemon::start(
            MAP_TRACE,
            &[
                "--exe",
                path.to_str().unwrap(),
                "--format",
                "json",
                "--every-occurrence",
            ],
            false,
        );
        d.wait_line("probes attached for every process", Duration::from_secs(60));
        d.log.clear();
        let builds = [
            (&swiss, "go1.27"),
            (&classic, "go1.23"),
            (&swiss, "go1.27"),
            (&classic, "go1.23"),
        ];
        for (n, (build, version)) in builds.into_iter().enumerate() {
            // A process of the old build still running through the deploy (the kernel refuses
            // `cp` over a running executable: ETXTBSY), released once the new build has run.
            let old = (!matches!(how, Deploy::CopyOver)).then(|| waiting(&path));
            deploy(how, &build.path, &path, n + 1);
            // Half the rounds start processes the instant the deploy returns.
            let delayed = n % 2 == 1;
            if delayed {
                std::thread::sleep(Duration::from_millis(300));
            }
            let what = format!(
                "{how:?} to {version}{}",
                if delayed { " after 300 ms" } else { "" }
            );
            match finish(start_now(&path, 10), &what) {
                Ok(pids) => {
                    for p in pids {
                        expected.insert(p, what.clone());
                    }
                }
                Err(e) => crashed.push(e),
            }
            runs += 10;
            if let Some(mut o) = old {
                o.stdin.take().unwrap().write_all(b"\n").unwrap();
                let what = format!("{how:?}: old build running through the deploy to {version}");
                match finish(vec![o], &what) {
                    Ok(pids) => expected.extend(pids.into_iter().map(|p| (p, what.clone()))),
                    Err(e) => crashed.push(e),
                }
                runs += 1;
            }
            // The daemon says which build it attached to, before that build's processes ran.
            d.wait_line(&format!("({version}."), Duration::from_secs(10));
            d.log.retain(|l| !l.contains(&format!("({version}.")));
        }
        let (code, out, err) = d.terminate();
        assert_eq!(code, Some(0), "map-trace exit ({how:?}); stderr:\n{err}");
        logs.push_str(&format!("--- {how:?} (method {m})\n{err}\n"));
        for line in out.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let pid = v["pid"].as_u64().unwrap() as u32;
            if expected.contains_key(&pid) {
                assert_eq!(v["writer_stack"][0]["function"], WRITER, "pid {pid}: {v}");
                assert_eq!(v["map_type"], MAP_TYPE, "pid {pid}: {v}");
                expected.remove(&pid);
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
    assert!(runs >= 216, "{runs} processes");
    assert!(
        crashed.is_empty(),
        "processes failed after a deploy:\n{}\n{logs}",
        crashed.join("\n")
    );
    assert!(
        expected.is_empty(),
        "{} of {runs} processes ran untraced: {expected:?}\n{logs}",
        expected.len()
    );
    scratch.release();
}

#[test]
fn a_hundred_deploys_leave_nothing_behind() {
    let _gate = test_support::kernel_test(GROUP, "attaches uprobes and holds execs with fanotify");
    let builds = [fixture("1.23"), fixture("1.27")];
    let scratch = Tmpfs::new("deploy-leaks");
    let path = scratch.join("app");
    run(
        "cp",
        &[builds[0].path.to_str().unwrap(), path.to_str().unwrap()],
    );
    let mut d = Daemon::start(
        MAP_TRACE,
        &[
            "--exe",
            path.to_str().unwrap(),
            "--format",
            "json",
            "--every-occurrence",
        ],
        true,
    );
    d.wait_line("probes attached for every process", Duration::from_secs(60));
    let mt = d.pid();
    // One round trip through both builds first: each map implementation's programs are loaded
    // once, when first needed, and stay loaded.
    for build in [&builds[1], &builds[0]] {
        deploy(Deploy::CopyOver, &build.path, &path, 0);
        finish(start_now(&path, 1), "warm-up").unwrap_or_else(|e| panic!("{e}"));
    }
    d.wait_metric("map_trace_probe_links", Duration::from_secs(10), |v| {
        v > 0.0
    });
    std::thread::sleep(Duration::from_millis(1500));
    let baseline = (
        fd_kinds(mt),
        d.metrics()["map_trace_probe_links"],
        scratch.used(),
    );
    let methods = [
        Deploy::CopyOver,
        Deploy::Install,
        Deploy::RemoveThenCopy,
        Deploy::MoveOver,
    ];
    for n in 0..100 {
        // Ends on builds[0], the baseline's build, so the file in place is the same size.
        let build = &builds[(n + 1) % 2];
        deploy(methods[n % methods.len()], &build.path, &path, n);
        // Every few deploys a process runs the new file, as a real service would.
        if n % 5 == 0 {
            finish(start_now(&path, 1), &format!("deploy {n}")).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    // One process of the last build, so that build is attached as at the baseline.
    finish(start_now(&path, 1), "last").unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = d.metrics();
        let now = (fd_kinds(mt), m["map_trace_probe_links"], scratch.used());
        let entries = bpf_map_entries(mt);
        let settled = now == baseline
            && entries.get("CONFIG") == Some(&1)
            && ["MAPS", "ITERS", "STACKS"]
                .iter()
                .all(|t| entries.get(*t) == Some(&0))
            && m["map_trace_processes_attached"] == 0.0;
        if settled {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 100 deploys: fds, links, used bytes {now:?} vs baseline {baseline:?}; BPF entries {entries:?}; processes {}",
            m["map_trace_processes_attached"]
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let m = d.metrics();
    assert!(m["map_trace_exec_guard_active"] == 1.0, "{m:?}");
    let (code, _, err) = d.terminate();
    assert_eq!(code, Some(0), "{err}");
    std::fs::remove_file(&path).unwrap();
    scratch.release();
}
