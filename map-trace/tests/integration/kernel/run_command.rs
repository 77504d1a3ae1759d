//! `map-trace run -- CMD`: every Go program CMD and its descendants run is traced from its first
//! instruction; the exit status is CMD's, or 66 for findings at or above `--fail-on`; nothing
//! is left stopped.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use test_support::{Scratch, kernel_test, wait_timeout};

use crate::MAP_TRACE;

/// This module's group at the kernel tests' gate.
const GROUP: &str = "run_command";

/// `map-trace run [args] -- cmd…` to its end (within 5 minutes), as root without sudo's
/// variables, so the command runs as root unless a test says otherwise.
fn run(args: &[&str], cmd: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = MAP_TRACE.command();
    c.arg("run")
        .args(args)
        .arg("--")
        .args(cmd)
        .env_remove("SUDO_UID")
        .env_remove("SUDO_GID")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn map-trace run");
    let code = wait_timeout(&mut child, Duration::from_secs(300)).expect("map-trace run");
    let o = child.wait_with_output().unwrap();
    assert!(code.is_some() || o.status.code().is_none());
    o
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `go test` of a package under a scratch copy of testdata/gotest, offline.
fn go_test(pkg: &str, dir: &Scratch) -> Output {
    let goroot = test_support::goroot("1.26.6");
    let src = test_support::repo_path("testdata/gotest");
    let work = dir.join("gotest");
    copy_dir(&src, &work);
    let go = goroot.join("bin/go");
    let path = format!("{}:/usr/bin:/bin", goroot.join("bin").display());
    // Kept between runs: a cold cache compiles the standard library's test dependencies
    // first, minutes on a small host.
    let cache = test_support::repo_path("target/gotest-cache");
    let gopath = dir.join("gopath");
    let env = [
        ("PATH", path.as_str()),
        ("GOROOT", goroot.to_str().unwrap()),
        ("GOCACHE", cache.to_str().unwrap()),
        ("GOPATH", gopath.to_str().unwrap()),
        ("HOME", dir.path().to_str().unwrap()),
        ("GOFLAGS", "-mod=mod"),
        ("GOPROXY", "off"),
        ("GOTOOLCHAIN", "local"),
        ("CGO_ENABLED", "0"),
    ];
    let script = format!(
        "cd {} && exec {} test -count=1 -vet=off ./{pkg}",
        work.display(),
        go.display()
    );
    run(&["--as-root"], &["sh", "-c", &script], &env)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// A CI step: `go test` of a package with a racy test reports the race with both sides and
/// exits 66; a correct package exits 0 with no finding. The Go toolchain's own programs
/// (go, compile, link, vet) are not traced, the test binary is.
#[test]
fn go_test_of_a_racy_package_fails_and_a_correct_one_passes() {
    let _gate = kernel_test(GROUP, "runs go test under map-trace");
    let dir = Scratch::new("run-go-test");
    let started = Instant::now();
    let o = go_test("racy", &dir);
    let (out, err) = text(&o);
    eprintln!(
        "go test ./racy under map-trace run: {:?}",
        started.elapsed()
    );
    assert_eq!(o.status.code(), Some(66), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("concurrent_write_during_iteration"),
        "{out}\n{err}"
    );
    assert!(
        out.contains("racy.TestInsertDuringRange.func1"),
        "writer side: {out}"
    );
    assert!(out.contains("racy.TestInsertDuringRange"), "{out}");
    assert!(out.contains("racy_test.go:"), "{out}");
    assert!(
        err.contains("racy.test"),
        "the test binary was not traced: {err}"
    );
    assert!(err.contains("map-trace summary"), "{err}");
    for tool in ["/compile ", "/link ", "/vet "] {
        assert!(
            !err.lines()
                .any(|l| l.contains("tracing pid") && l.contains(tool)),
            "the toolchain's {tool} was traced: {err}"
        );
    }

    let o = go_test("correct", &dir);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(!out.contains("\"kind\"") && !out.contains("ERROR"), "{out}");
    assert!(
        err.contains("correct.test"),
        "the test binary was not traced: {err}"
    );
    assert!(err.contains("map-trace summary: 0 finding(s)"), "{err}");
}

/// A shell script that starts two Go programs built by different Go versions, one after the
/// other: both are traced from their first instruction (each races as soon as it starts) and
/// both races are reported.
#[test]
fn a_script_starting_two_go_versions_is_traced_throughout() {
    let _gate = kernel_test(GROUP, "runs Go programs under map-trace");
    let old = test_support::host_fixture("scenarios", "1.19.8");
    let new = test_support::host_fixture("scenarios", "1.27.3");
    let script = format!(
        "echo go | {} cross_insert_str && echo go | {} self_insert",
        old.path.display(),
        new.path.display()
    );
    let o = run(&["--format", "json"], &["sh", "-c", &script], &[]);
    let (out, err) = text(&o);
    // The first program's race is an error: 66 (the second's own-range insert, a warning,
    // would not fail the run by itself).
    assert_eq!(o.status.code(), Some(66), "{out}\n{err}");
    assert!(
        err.contains("go1.19.8") && err.contains("go1.27.3"),
        "{err}"
    );
    // Each program's end is said, though both ended before the script did.
    assert_eq!(err.matches("exited: detached").count(), 2, "{err}");
    let kinds: Vec<String> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["record"] == "finding")
        .map(|v| format!("{} {}", v["kind"], v["pid"]))
        .collect();
    assert!(
        kinds
            .iter()
            .any(|k| k.contains("concurrent_write_during_iteration")),
        "{kinds:?}\n{err}"
    );
    assert!(
        kinds.iter().any(|k| k.contains("insert_during_iteration")),
        "{kinds:?}\n{err}"
    );
    // --fail-on never: the script's own status.
    let o = run(&["--fail-on", "never"], &["sh", "-c", &script], &[]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
}

/// A command that is not Go, and one killed by a signal: their status is the run's, nothing is
/// reported, and the command runs as the user behind sudo.
#[test]
fn non_go_commands_keep_their_status_and_run_as_the_sudo_user() {
    let _gate = kernel_test(GROUP, "runs commands under map-trace");
    let o = run(&[], &["sh", "-c", "exit 3"], &[]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("map-trace summary: 0 finding(s)"), "{err}");
    assert!(
        !err.contains("not tracing"),
        "a non-Go program was complained about: {err}"
    );

    let o = run(&[], &["sh", "-c", "kill -KILL $$"], &[]);
    assert_eq!(o.status.code(), Some(128 + 9), "{:?}", text(&o));

    let o = run(
        &[],
        &["sh", "-c", "id -u; id -g"],
        &[("SUDO_UID", "65534"), ("SUDO_GID", "65534")],
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert_eq!(out.trim(), "65534\n65534", "{err}");
    let o = run(
        &["--as-root"],
        &["id", "-u"],
        &[("SUDO_UID", "65534"), ("SUDO_GID", "65534")],
    );
    assert_eq!(text(&o).0.trim(), "0");
}

/// A program that dies of Go's own map fatal error under `run`: its finding (the writer Go
/// does not name) is still printed, and the run fails.
#[test]
fn a_child_dying_of_a_go_fatal_error_is_reported() {
    let _gate = kernel_test(GROUP, "runs a Go program that crashes");
    let f = test_support::host_fixture("scenarios", "1.26.6");
    let script = format!("echo go | {} read_during_write", f.path.display());
    // The race is real: Go usually dies of it (exit 2), else the program gives up after 2 s
    // (exit 3). Attempts until it died.
    for attempt in 1..=4 {
        let o = run(&["--format", "json"], &["sh", "-c", &script], &[]);
        let (out, err) = text(&o);
        if !out.contains("fatal_map_error") {
            eprintln!("attempt {attempt}: Go did not die of the race: {err}");
            continue;
        }
        assert_eq!(o.status.code(), Some(66), "{out}\n{err}");
        assert!(out.contains("concurrent map read and map write"), "{out}");
        return;
    }
    panic!("Go never died of the race in 4 attempts");
}

/// Interrupted while the command keeps exec'ing (each exec held until map-trace releases it):
/// the first two SIGTERMs go to the command (which ignores them), the third stops map-trace,
/// which kills the command, and no process is left stopped.
#[test]
fn an_interrupted_run_leaves_nothing_stopped() {
    let _gate = kernel_test(GROUP, "runs commands under map-trace");
    let script = "trap '' INT TERM; while :; do /bin/true; done";
    let mut child = MAP_TRACE
        .command()
        .args(["run", "--", "sh", "-c", script])
        .env_remove("SUDO_UID")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let pid = child.id() as i32;
    for _ in 0..3 {
        // SAFETY: a plain kill(2) of our child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        std::thread::sleep(Duration::from_millis(300));
    }
    let started = Instant::now();
    let code = wait_timeout(&mut child, Duration::from_secs(30)).unwrap();
    let err = {
        use std::io::Read as _;
        let mut s = String::new();
        child.stderr.take().unwrap().read_to_string(&mut s).unwrap();
        s
    };
    assert_eq!(code, Some(128 + 9), "map-trace: {err}");
    assert!(started.elapsed() < Duration::from_secs(10), "{err}");
    assert!(err.contains("map-trace summary"), "{err}");
    // Nothing stopped anywhere that this run could have stopped: no `true` in state T.
    std::thread::sleep(Duration::from_millis(500));
    let ps = Command::new("ps")
        .args(["-eo", "stat=,comm="])
        .output()
        .unwrap();
    let stopped: Vec<String> = String::from_utf8_lossy(&ps.stdout)
        .lines()
        .filter(|l| l.starts_with('T') && (l.contains("true") || l.contains(" sh")))
        .map(str::to_string)
        .collect();
    assert!(stopped.is_empty(), "left stopped: {stopped:?}\n{err}");
    assert!(
        !err.contains("still run"),
        "the cgroup was left behind: {err}"
    );
}
