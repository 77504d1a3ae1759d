//! `map-trace --exe`: processes of a binary are traced as they start, detached as they exit,
//! and leave nothing behind in the kernel; the oracles are the kernel's own views (the daemon's
//! BPF link fds, `bpftool` dumps of its maps), not map-trace's word.
//!
//! Needs root and a kernel with uprobes and BPF; fails (never skips) without them.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use test_support::daemon::{Daemon, bpf_map_entries, bpf_u64_array, fd_kinds};
use test_support::{Fixture, Reaped, Scratch};

use crate::MAP_TRACE;

/// This module's group at the kernel tests' gate.
const GROUP: &str = "daemon_exe";

const RACE: &str = "cross_delete_u64";
const CW: &str = "concurrent_write_during_iteration";

fn fixture(go: &str) -> Fixture {
    test_support::fixtures_of("scenarios")
        .into_iter()
        .find(|f| f.arch == "x86_64" && f.variant == "default" && f.go_version.starts_with(go))
        .unwrap_or_else(|| panic!("go{go} amd64 scenarios fixture"))
}

/// The fixture as a file of this test's own (another inode): `--exe` traces every process of
/// a file, so tests running in parallel on the shared fixture would see each other's. The copy
/// goes with the returned directory.
fn own_copy(go: &str, test: &str) -> (Scratch, Fixture) {
    let mut f = fixture(go);
    let dir = Scratch::new(test);
    let path = dir.join(f.path.file_name().unwrap());
    std::fs::copy(&f.path, &path).unwrap();
    f.path = path;
    (dir, f)
}

/// Starts a scenario that waits for a line on stdin.
fn spawn_waiting(f: &Fixture, scenario: &str) -> Reaped {
    test_support::run::spawn_waiting(f, scenario).unwrap_or_else(|e| panic!("{e}"))
}

/// Lets the scenario run and checks it finished as a correct Go program does.
fn release_and_wait(mut p: Reaped) {
    use std::io::Read as _;
    p.0.stdin.take().unwrap().write_all(b"\n").unwrap();
    let (mut out, mut err) = (String::new(), String::new());
    let _ = p.0.stdout.take().unwrap().read_to_string(&mut out);
    let _ = p.0.stderr.take().unwrap().read_to_string(&mut err);
    let status = p.0.wait().unwrap();
    assert!(
        status.success() && out.trim() == "ok",
        "target failed: {status}: {out}{err}"
    );
}

fn findings(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// The correlation tables and stacks in the kernel, which must hold nothing of exited processes.
const PER_PROCESS_MAPS: [&str; 3] = ["MAPS", "ITERS", "STACKS"];

/// Other processes open a watched file while its processes start: another tracer checking it,
/// a scanner, a backup. Each such open waits for the main loop to read the findings first
/// (the open might truncate the file), while the main loop opens the same file for the exec:
/// its own open must not queue behind one that waits for it. It did, for the whole 2 s an open
/// may wait (counted as `open_unanswered`), and short processes ran untraced meanwhile.
#[test]
fn others_opening_a_watched_file_do_not_stall_the_main_loop() {
    let _gate = test_support::kernel_test(GROUP, "attaches uprobes and a tracepoint");
    let (_dir, f) = own_copy("1.27", "scanned");
    let mut d = Daemon::start(MAP_TRACE, &["--exe", f.path.to_str().unwrap()], true);
    d.wait_line("probes attached for every process", Duration::from_secs(60));
    let waited_out = r#"map_trace_exec_guard_total{outcome="open_unanswered"}"#;
    let before = d.metrics().get(waited_out).copied();
    assert!(before.is_some(), "no {waited_out}");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scanner = {
        let (stop, path) = (stop.clone(), f.path.clone());
        std::thread::spawn(move || {
            let mut opens = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if std::fs::File::open(&path).is_ok() {
                    opens += 1;
                }
            }
            opens
        })
    };
    for _ in 0..10 {
        let p = spawn_waiting(&f, RACE);
        let pid = p.0.id();
        d.wait_line(&format!("tracing pid {pid} "), Duration::from_secs(10));
        release_and_wait(p);
        d.wait_line(&format!("pid {pid} exited"), Duration::from_secs(10));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let opens = scanner.join().unwrap();
    assert!(opens > 10, "the scanner opened the file only {opens} times");
    let m = d.metrics();
    assert_eq!(m.get(waited_out).copied(), before, "{m:?}");
    let (code, _, err) = d.terminate();
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn exe_traces_processes_as_they_start_and_leaves_nothing_when_they_exit() {
    let _gate = test_support::kernel_test(GROUP, "attaches uprobes and a tracepoint");
    let (_dir, f) = own_copy("1.27", "leaks");
    let path = f.path.to_str().unwrap();
    // Already running before map-trace starts: found by the /proc scan.
    let early = spawn_waiting(&f, RACE);
    let early_pid = early.0.id();
    std::thread::sleep(Duration::from_millis(100));

    let mut d = Daemon::start(
        MAP_TRACE,
        &["--exe", path, "--format", "json", "--every-occurrence"],
        true,
    );
    d.wait_line("probes attached for every process", Duration::from_secs(60));
    d.wait_line(
        &format!("tracing pid {early_pid} "),
        Duration::from_secs(10),
    );
    release_and_wait(early);
    d.wait_line(&format!("pid {early_pid} exited"), Duration::from_secs(10));
    let mt = d.pid();
    let links_before = fd_kinds(mt);
    let m = d.metrics();
    // A dozen probes: a link each (perf-event uprobes) or one per program (uprobe_multi).
    let shared_links = m["map_trace_probe_links"];
    assert!(shared_links >= 5.0, "{m:?}");

    // 20 short-lived processes started after map-trace: each traced, reported, detached.
    let mut pids = Vec::new();
    for _ in 0..20 {
        let p = spawn_waiting(&f, RACE);
        let pid = p.0.id();
        d.wait_line(&format!("tracing pid {pid} "), Duration::from_secs(10));
        release_and_wait(p);
        d.wait_line(
            &format!("pid {pid} exited: detached"),
            Duration::from_secs(10),
        );
        pids.push(pid);
    }
    d.wait_metric(
        "map_trace_process_detaches_total",
        Duration::from_secs(10),
        |v| v >= 21.0,
    );
    // Exited processes' entries are removed in batches, at least once a second: wait until
    // the kernel (bpftool) shows none left, then the gauges, refreshed since, must agree.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let entries = loop {
        let e = bpf_map_entries(mt);
        if PER_PROCESS_MAPS.iter().all(|n| e.get(*n) == Some(&0)) {
            break e;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "bpftool still sees entries of exited processes after 10 s: {e:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // With no iteration left, every group's count of iterations the kernel inserted less those
    // it removed equals those the daemon removed: writes skip the MAPS lookup again.
    let (hint, debt) = (
        bpf_u64_array(mt, "LIVE_HINT"),
        bpf_u64_array(mt, "LIVE_DEBT"),
    );
    assert_eq!(hint.len(), debt.len());
    assert!(
        hint.iter().sum::<u64>() > 0,
        "no iteration was ever counted"
    );
    let off: Vec<(usize, u64, u64)> = (0..hint.len())
        .filter(|&i| hint[i] != debt[i])
        .map(|i| (i, hint[i], debt[i]))
        .collect();
    assert!(off.is_empty(), "groups whose hint is not settled: {off:?}");
    std::thread::sleep(Duration::from_millis(1200));
    let m = d.metrics();
    assert_eq!(m["map_trace_process_attaches_total"], 21.0, "{m:?}");
    assert_eq!(m["map_trace_processes_attached"], 0.0, "{m:?}");
    assert_eq!(
        m["map_trace_probe_links"], shared_links,
        "links leaked: {m:?}"
    );
    for table in ["maps", "iters", "stacks"] {
        assert_eq!(
            m[&format!("map_trace_bpf_map_entries{{map=\"{table}\"}}")],
            0.0,
            "{table} entries left: {m:?}"
        );
    }
    // No link fd (uprobe) more than before.
    assert_eq!(fd_kinds(mt), links_before, "fds of map-trace changed");
    assert_eq!(
        entries.get("CONFIG"),
        Some(&1),
        "one binary configured: {entries:?}"
    );

    let (code, out, err) = d.terminate();
    assert_eq!(code, Some(0), "map-trace exit; stderr:\n{err}");
    assert!(err.contains("SIGTERM: detached"), "{err}");
    let found = findings(&out);
    let mut by_pid: BTreeMap<u64, Vec<&serde_json::Value>> = BTreeMap::new();
    for v in &found {
        assert_eq!(v["kind"], CW, "only the race is reported: {v}");
        by_pid
            .entry(v["pid"].as_u64().unwrap())
            .or_default()
            .push(v);
    }
    for pid in std::iter::once(early_pid).chain(pids) {
        let Some(vs) = by_pid.get(&u64::from(pid)) else {
            panic!("no finding for pid {pid}; stderr:\n{err}");
        };
        // Symbolized with that process's own tables, though it has exited since.
        let top = &vs[0]["writer_stack"][0];
        assert_eq!(top["function"], "main.crossDeleteU64.func1", "{}", vs[0]);
        assert_eq!(vs[0]["map_type"], "map[uint64]int", "{}", vs[0]);
    }
}

#[test]
fn exe_and_pid_together_and_other_binaries_are_left_alone() {
    let _gate = test_support::kernel_test(GROUP, "attaches uprobes and a tracepoint");
    let (_newest_dir, newest) = own_copy("1.27", "mixed");
    let (_other_dir, other) = own_copy("1.23", "mixed");
    // An explicit --pid of another binary (another Go version, other offsets) and an --exe.
    let explicit = spawn_waiting(&other, RACE);
    let explicit_pid = explicit.0.id();
    // Runs the --exe binary's sibling that no --exe names: must not be traced.
    let (_bystander_dir, bystander_f) = own_copy("1.26", "mixed");
    let bystander = spawn_waiting(&bystander_f, RACE);
    let bystander_pid = bystander.0.id();
    std::thread::sleep(Duration::from_millis(100));
    let pid_arg = explicit_pid.to_string();
    let mut d = Daemon::start(
        MAP_TRACE,
        &[
            "--exe",
            newest.path.to_str().unwrap(),
            "--pid",
            &pid_arg,
            "--format",
            "json",
            "--every-occurrence",
        ],
        true,
    );
    d.wait_line(
        &format!("tracing pid {explicit_pid} "),
        Duration::from_secs(60),
    );
    let p = spawn_waiting(&newest, RACE);
    let started = p.0.id();
    d.wait_line(&format!("tracing pid {started} "), Duration::from_secs(10));
    release_and_wait(p);
    release_and_wait(explicit);
    release_and_wait(bystander);
    d.wait_line(
        &format!("pid {explicit_pid} exited"),
        Duration::from_secs(10),
    );
    d.wait_line(&format!("pid {started} exited"), Duration::from_secs(10));
    // With --exe, map-trace keeps running after the explicit pid exits.
    std::thread::sleep(Duration::from_millis(300));
    let m = d.metrics();
    assert_eq!(m["map_trace_processes_attached"], 0.0, "{m:?}");
    let (code, out, err) = d.terminate();
    assert_eq!(code, Some(0), "{err}");
    assert!(
        !err.contains(&format!("pid {bystander_pid} ")),
        "a process of an unnamed binary was traced:\n{err}"
    );
    let pids: Vec<u64> = findings(&out)
        .iter()
        .map(|v| v["pid"].as_u64().unwrap())
        .collect();
    assert!(pids.contains(&u64::from(explicit_pid)), "{pids:?}\n{err}");
    assert!(pids.contains(&u64::from(started)), "{pids:?}\n{err}");
    assert!(!pids.contains(&u64::from(bystander_pid)), "{pids:?}");
}

#[test]
fn exe_that_is_not_go_fails_clearly() {
    let _gate = test_support::kernel_test(GROUP, "loads eBPF programs");
    test_support::assert_fails(
        &MAP_TRACE.run(&["--exe", "/bin/true"]),
        5,
        "not a Go program",
    );
}

#[test]
fn exe_reaches_a_binary_in_a_container_by_its_path_there() {
    let _gate = test_support::kernel_test(GROUP, "makes a mount namespace and attaches uprobes");
    let f = fixture("1.27");
    // A container without a container runtime: a private mount namespace whose root is a
    // tmpfs holding a copy of the binary (another inode) at /app/server, entered with
    // pivot_root as runtimes do. From the host its exe reads "/app/server" and its root "/".
    let root_dir = Scratch::new("ctr");
    let root = root_dir.path().to_path_buf();
    let mut d = Daemon::start(
        MAP_TRACE,
        &[
            "--exe",
            "/app/server",
            "--format",
            "json",
            "--every-occurrence",
        ],
        false,
    );
    d.wait_line("inside their own root", Duration::from_secs(60));
    let script = r#"R=$1; mount -t tmpfs none "$R" && mkdir "$R/app" "$R/old" && cp "$2" "$R/app/server" && cd "$R" && pivot_root . old && exec /app/server "$3""#;
    let p = Reaped(
        Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "sh",
            ])
            .arg(&root)
            .arg(&f.path)
            .arg(RACE)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("unshare (util-linux)"),
    );
    let pid = p.0.id();
    let line = d.wait_line(&format!("tracing pid {pid} "), Duration::from_secs(10));
    assert!(line.contains("(/app/server)"), "{line}");
    release_and_wait(p);
    d.wait_line(&format!("pid {pid} exited"), Duration::from_secs(10));
    let (code, out, err) = d.terminate();
    let _ = std::fs::remove_dir(&root);
    assert_eq!(code, Some(0), "{err}");
    let found = findings(&out);
    let mine: Vec<_> = found
        .iter()
        .filter(|v| v["pid"].as_u64() == Some(u64::from(pid)))
        .collect();
    assert!(
        !mine.is_empty(),
        "no finding for the container's pid:\n{err}"
    );
    assert_eq!(
        mine[0]["writer_stack"][0]["function"], "main.crossDeleteU64.func1",
        "{}",
        mine[0]
    );
}

#[test]
fn duty_cycle_detaches_between_windows_and_still_reports() {
    let _gate = test_support::kernel_test(GROUP, "attaches uprobes");
    let (_dir, f) = own_copy("1.27", "duty");
    let mut d = Daemon::start(
        MAP_TRACE,
        &[
            "--exe",
            f.path.to_str().unwrap(),
            "--format",
            "json",
            "--every-occurrence",
            "--duty-cycle",
            "300ms/1s",
        ],
        true,
    );
    d.wait_line("probes attached for every process", Duration::from_secs(60));
    d.wait_line(
        "duty cycle: probes attached 300ms of every 1s",
        Duration::from_secs(5),
    );
    // A racer that keeps running spans several on and off windows.
    let path = f.path.clone();
    let racer = std::thread::spawn(move || {
        let start = std::time::Instant::now();
        let mut runs = 0;
        while start.elapsed() < Duration::from_millis(3500) {
            let mut c = Command::new(&path)
                .arg(RACE)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            c.stdin.take().unwrap().write_all(b"\n").unwrap();
            assert!(c.wait().unwrap().success(), "the target failed");
            runs += 1;
        }
        runs
    });
    // The kernel's view of map-trace's links: all of them in the on part, none in the off part.
    let mt = d.pid();
    let (mut on, mut off) = (0, 0);
    for _ in 0..60 {
        // The probes' link fds (one per uprobe, or one per program with uprobe_multi links),
        // plus the exec tracepoint's, which stays.
        let links = fd_kinds(mt).get("bpf_link").copied().unwrap_or(0);
        match links {
            1 => off += 1,
            n if n >= 5 => on += 1,
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let runs = racer.join().unwrap();
    assert!(
        on > 0 && off > 0,
        "links never toggled: {on} on, {off} off samples"
    );
    let m = d.metrics();
    assert!(m.contains_key("map_trace_probes_active"), "{m:?}");
    let (code, out, err) = d.terminate();
    assert_eq!(code, Some(0), "{err}");
    let found = findings(&out);
    assert!(!found.is_empty(), "no finding in {runs} racy runs:\n{err}");
    for v in &found {
        assert_eq!(v["kind"], CW, "{v}");
        assert_eq!(
            v["writer_stack"][0]["function"], "main.crossDeleteU64.func1",
            "{v}"
        );
    }
    eprintln!(
        "{} findings from {runs} runs at a 30% duty cycle",
        found.len()
    );
}
