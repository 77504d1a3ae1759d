//! map-trace run with exactly the credentials of the shipped systemd unit,
//! `dist/systemd/map-trace.service` (user, capability bounding and ambient sets,
//! no_new_privs), works as the daemon - follows a racy Go program started after it, reports the
//! race, serves /healthz, detaches on SIGTERM - and fails clearly when any one of the
//! capabilities it really needs is missing. (The unit file's own checks: `offline::systemd_unit`.)
//!
//! systemd need not be PID 1: the credentials are applied with util-linux `setpriv`. These runs
//! need root (to hand out capabilities) and fail, never skip, without it.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use test_support::daemon::Daemon;
use test_support::http::free_port;
use test_support::systemd_unit::{exec_start_args, section, unit_text};
use test_support::{Fixture, Reaped, Scratch, repo_path, wait_timeout};

/// This module's group at the kernel tests' gate.
const GROUP: &str = "systemd_unit";

/// The first uid of systemd's DynamicUser= range (61184-65519): an id that owns nothing and has
/// no passwd entry, like the one the unit gets.
const DYNAMIC_UID: u32 = 61184;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The [Service] settings of the unit that decide who the process is.
#[derive(Debug)]
struct Credentials {
    uid: u32,
    gid: u32,
    /// setpriv's names: "sys_admin", "bpf", ...
    bounding: BTreeSet<String>,
    ambient: BTreeSet<String>,
    no_new_privs: bool,
}

fn yes(v: &str) -> bool {
    matches!(v, "yes" | "true" | "on" | "1")
}

/// A capability list as systemd merges it: lines add up, an empty assignment resets (`~`, an
/// inverted list, is not used by the unit and refused here).
fn caps(settings: &[(&str, &str)], key: &str) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    for (_, v) in settings.iter().filter(|(k, _)| *k == key) {
        if v.is_empty() {
            set.clear();
        }
        assert!(!v.starts_with('~'), "{key}=~ is not supported here");
        for cap in v.split_whitespace() {
            let name = cap
                .strip_prefix("CAP_")
                .unwrap_or_else(|| panic!("{key}: {cap} is not a capability name"));
            set.insert(name.to_ascii_lowercase());
        }
    }
    set
}

fn id_of(flag: &str, name: &str) -> u32 {
    let o = Command::new("id").args([flag, name]).output().unwrap();
    text(&o.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("id {flag} {name}: {}", text(&o.stderr)))
}

fn unit_credentials() -> Credentials {
    let unit = unit_text();
    let s = section(&unit, "Service");
    let last = |key: &str| s.iter().rev().find(|(k, _)| *k == key).map(|(_, v)| *v);
    let (uid, gid) = if last("DynamicUser").is_some_and(yes) {
        (DYNAMIC_UID, DYNAMIC_UID)
    } else if let Some(user) = last("User") {
        let group = last("Group").unwrap_or(user);
        (id_of("-u", user), id_of("-g", group))
    } else {
        (0, 0)
    };
    let c = Credentials {
        uid,
        gid,
        bounding: caps(&s, "CapabilityBoundingSet"),
        ambient: caps(&s, "AmbientCapabilities"),
        no_new_privs: last("NoNewPrivileges").is_some_and(yes),
    };
    assert!(
        !c.bounding.is_empty(),
        "the unit sets no capability bounding set: {c:?}"
    );
    assert!(
        c.ambient.is_subset(&c.bounding),
        "ambient capabilities outside the bounding set are dropped by the kernel: {c:?}"
    );
    c
}

impl Credentials {
    /// The same credentials without one capability.
    fn without(&self, cap: &str) -> Credentials {
        assert!(self.ambient.contains(cap), "the unit does not grant {cap}");
        let drop = |s: &BTreeSet<String>| s.iter().filter(|c| *c != cap).cloned().collect();
        Credentials {
            uid: self.uid,
            gid: self.gid,
            bounding: drop(&self.bounding),
            ambient: drop(&self.ambient),
            no_new_privs: self.no_new_privs,
        }
    }

    /// These credentials with a drop-in's [Service] capabilities added, as systemd merges them.
    fn with_drop_in(&self, drop_in: &str) -> Credentials {
        let s = section(drop_in, "Service");
        let mut c = Credentials {
            uid: self.uid,
            gid: self.gid,
            bounding: self.bounding.clone(),
            ambient: self.ambient.clone(),
            no_new_privs: self.no_new_privs,
        };
        c.bounding.extend(caps(&s, "CapabilityBoundingSet"));
        c.ambient.extend(caps(&s, "AmbientCapabilities"));
        c
    }

    /// map-trace with `args`, run with these credentials as systemd would set them up (the
    /// process is map-trace itself: setpriv execs it).
    fn command(&self, args: &[String]) -> Command {
        let list = |s: &BTreeSet<String>| {
            let mut v = String::from("-all");
            for c in s {
                v.push_str(",+");
                v.push_str(c);
            }
            v
        };
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--clear-groups")
            // Ambient capabilities must be inheritable too; systemd sets both.
            .arg(format!("--inh-caps={}", list(&self.ambient)))
            .arg(format!("--ambient-caps={}", list(&self.ambient)))
            .arg(format!("--bounding-set={}", list(&self.bounding)));
        if self.no_new_privs {
            cmd.arg("--no-new-privs");
        }
        cmd.arg(env!("CARGO_BIN_EXE_map-trace")).args(args);
        cmd
    }

    /// A capability set as the kernel shows it in /proc/PID/status.
    fn mask(set: &BTreeSet<String>) -> u64 {
        set.iter().fold(0, |m, c| {
            m | 1u64
                << match c.as_str() {
                    "dac_read_search" => 2,
                    "sys_ptrace" => 19,
                    "sys_admin" => 21,
                    "perfmon" => 38,
                    "bpf" => 39,
                    other => panic!("capability {other}: add its number here"),
                }
        })
    }

    /// Asserts that process `pid` has exactly these credentials.
    fn assert_held_by(&self, pid: u32) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
                .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
                .to_string()
        };
        let uids = field("Uid:");
        assert!(
            uids.split_whitespace().all(|u| u == self.uid.to_string()),
            "map-trace runs as uids {uids}, not {}",
            self.uid
        );
        let hex = |name: &str| u64::from_str_radix(&field(name), 16).unwrap();
        let ambient = Self::mask(&self.ambient);
        assert_eq!(hex("CapEff:"), ambient, "effective capabilities");
        assert_eq!(hex("CapAmb:"), ambient, "ambient capabilities");
        assert_eq!(hex("CapBnd:"), Self::mask(&self.bounding), "bounding set");
        assert_eq!(
            field("NoNewPrivs:") == "1",
            self.no_new_privs,
            "no_new_privs"
        );
    }
}

/// The scenarios program of the newest Go toolchain, native arch, default build.
fn scenarios_fixture() -> Fixture {
    let mut all: Vec<Fixture> = test_support::fixtures_of("scenarios")
        .into_iter()
        .filter(|f| {
            f.arch == std::env::consts::ARCH && f.variant == "default" && f.goexperiment.is_none()
        })
        .collect();
    all.sort_by_key(|f| {
        f.go_version
            .split('.')
            .map(|p| p.parse().unwrap_or(0))
            .collect::<Vec<u32>>()
    });
    all.pop().unwrap_or_else(|| {
        panic!(
            "no default scenarios fixture for {}",
            std::env::consts::ARCH
        )
    })
}

/// A copy of the scenarios program in a root-only directory (mode 0700), like a service binary
/// its own user may run but others may not read: opening it takes CAP_DAC_READ_SEARCH.
fn private_copy(name: &str) -> (Scratch, PathBuf) {
    let dir = Scratch::new(&format!("systemd-unit-{name}")).with_mode(0o700);
    let path = dir.join("racy-service");
    // cp, not std::fs::copy: a child another test thread forks meanwhile would inherit our write
    // descriptor and make exec fail with ETXTBSY.
    let o = Command::new("cp")
        .arg(&scenarios_fixture().path)
        .arg(&path)
        .output()
        .unwrap();
    assert!(o.status.success(), "cp: {}", text(&o.stderr));
    (dir, path)
}

/// Starts the racy scenario as root (as another user's service would run); it races once it
/// reads a line on stdin.
/// A program whose race the shipped config's sentinel mode reports at its one occurrence:
/// another goroutine inserts during its range.
fn start_target(exe: &Path) -> Reaped {
    let child = Command::new(exe)
        .arg("cross_insert_str")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", exe.display()));
    Reaped(child)
}

/// Lets a started target race, and asserts it then exits 0 after printing "ok".
fn run_target(target: &mut Reaped) {
    target.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let code = wait_timeout(&mut target.0, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("the target: {e}"));
    let mut out = String::new();
    let _ = target.0.stdout.take().unwrap().read_to_string(&mut out);
    let mut err = String::new();
    let _ = target.0.stderr.take().unwrap().read_to_string(&mut err);
    assert!(
        code == Some(0) && out.trim() == "ok",
        "target exited {code:?} under map-trace: {out}{err}"
    );
}

/// Polls `path` on the daemon's metrics port until `ok(status, body)` holds (for up to 10 s).
fn wait_http(daemon: &Daemon, path: &str, ok: impl Fn(u16, &str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, body) = daemon.get(path);
        if ok(code, &body) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "GET {path} still answers {code}: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn unit_credentials_run_the_daemon_end_to_end() {
    let _gate = test_support::kernel_test(
        GROUP,
        "hands map-trace the unit's capabilities with setpriv",
    );
    let creds = unit_credentials();
    let (_exe_dir, exe) = private_copy("daemon");
    let port = free_port();
    // The example config with this test's executable and port.
    let shipped = std::fs::read_to_string(repo_path("dist/config.toml")).unwrap();
    let config: String = shipped
        .lines()
        .map(|l| {
            if l.starts_with("exe =") {
                format!("exe = [{:?}]\n", exe.display().to_string())
            } else if l.starts_with("metrics_addr =") {
                format!("metrics_addr = \"127.0.0.1:{port}\"\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert_ne!(
        config, shipped,
        "the example config has no exe and metrics_addr lines"
    );
    let config_dir = Scratch::new("systemd-unit-daemon-config").with_mode(0o755);
    let config_path = config_dir.join("config.toml");
    std::fs::write(&config_path, config).unwrap();

    // One process of the program runs before map-trace starts and waits; another starts after.
    let mut early = start_target(&exe);
    let mut tracer = Daemon::spawn(creds.command(&exec_start_args(&config_path)), Some(port));
    let exe_name = exe.display().to_string();
    let limit = Duration::from_secs(30);
    // Without CAP_SYS_ADMIN there is no exec guard: the file's probes go to each process.
    tracer.wait_line_with(&["watching", &exe_name], limit);
    tracer.wait_line_with(&["tracing pid", &early.0.id().to_string()], limit);
    creds.assert_held_by(tracer.pid());
    wait_http(&tracer, "/healthz", |code, _| code == 200);

    let mut late = start_target(&exe);
    tracer.wait_line_with(&["tracing pid", &late.0.id().to_string()], limit);
    run_target(&mut late);
    wait_http(&tracer, "/metrics", |_, body| {
        body.lines()
            .any(|l| l.starts_with("map_trace_findings_total{") && !l.ends_with(" 0"))
    });

    let (code, stdout, stderr) = tracer.terminate();
    assert_eq!(code, Some(0), "map-trace on SIGTERM: {stderr}");
    assert!(stderr.contains("SIGTERM: detached"), "{stderr}");
    // The unit grants no CAP_SYS_ADMIN: uprobe_multi links (Linux 6.10+) carry the probes.
    assert!(
        stderr.contains("uprobes as uprobe_multi links"),
        "the unit's credentials need uprobe_multi links (Linux 6.10+; else perf-uprobes.conf): {stderr}"
    );
    assert!(stderr.contains("cannot hold execs"), "{stderr}");
    let kinds: Vec<String> = stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}"));
            v["kind"].as_str().unwrap_or("?").to_string()
        })
        .collect();
    // The shipped config's sentinel mode: the range saw its map gain an element.
    assert!(stderr.contains("sentinel"), "{stderr}");
    assert!(
        kinds.iter().any(|k| k == "map_changed_during_iteration"),
        "no map_changed_during_iteration finding: {kinds:?}\n{stderr}"
    );
    // Detaching left the process that was traced all along intact: it still races and exits 0.
    assert!(
        early.0.try_wait().unwrap().is_none(),
        "a traced program died when map-trace detached"
    );
    run_target(&mut early);
}

/// map-trace --pid with one capability fewer than the unit grants, against a private target;
/// bounded by --duration in case it does not fail.
fn run_without(cap: &str) -> Output {
    run_as(&unit_credentials().without(cap), &format!("no-{cap}"), &[])
}

/// map-trace --pid with `creds` and `env`, against a private target, for 5 s at most.
fn run_as(creds: &Credentials, name: &str, env: &[(&str, &str)]) -> Output {
    let (_exe_dir, exe) = private_copy(name);
    let target = start_target(&exe);
    let args = ["--pid", &target.0.id().to_string(), "--duration", "5s"].map(String::from);
    let o = creds
        .command(&args)
        .envs(env.iter().copied())
        .output()
        .expect("setpriv (util-linux) runs");
    drop(target);
    o
}

/// Asserts the failure a user of the unit would find in the journal: this exit code, one line
/// containing every needle, no panic.
fn assert_fails_clearly(o: &Output, missing: &str, code: i32, needles: &[&str]) {
    let err = text(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(code),
        "without CAP_{} map-trace must fail with exit code {code}; stderr: {err}",
        missing.to_ascii_uppercase()
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "stderr {err:?} lacks {n:?}");
    }
}

// Every capability the unit grants is needed. (CAP_SYS_ADMIN, which the kernel also accepts in
// place of CAP_BPF and CAP_PERFMON, is not granted: uprobe_multi links do without it.)

#[test]
fn without_cap_bpf_nothing_can_be_loaded() {
    let _gate = test_support::kernel_test(
        GROUP,
        "hands map-trace the unit's capabilities with setpriv",
    );
    let o = run_without("bpf");
    assert_fails_clearly(&o, "bpf", 12, &["CAP_BPF", "CAP_PERFMON"]);
}

#[test]
fn without_cap_perfmon_the_uprobe_programs_cannot_be_loaded() {
    let _gate = test_support::kernel_test(
        GROUP,
        "hands map-trace the unit's capabilities with setpriv",
    );
    let o = run_without("perfmon");
    assert_fails_clearly(
        &o,
        "perfmon",
        12,
        &["permission denied", "CAP_BPF", "CAP_PERFMON"],
    );
}

/// Perf-event uprobes (kernels before 6.10; forced here) need CAP_SYS_ADMIN: the unit alone
/// fails naming it, the unit with its drop-in `perf-uprobes.conf` traces.
#[test]
fn perf_event_uprobes_need_the_drop_in() {
    let _gate = test_support::kernel_test(
        GROUP,
        "hands map-trace the unit's capabilities with setpriv",
    );
    let perf = [("MAP_TRACE_UPROBE_LINKS", "perf")];
    let o = run_as(&unit_credentials(), "no-sys-admin", &perf);
    assert_fails_clearly(
        &o,
        "sys_admin",
        12,
        &["needs CAP_SYS_ADMIN", "permission denied"],
    );
    let drop_in = std::fs::read_to_string(repo_path("dist/systemd/perf-uprobes.conf")).unwrap();
    let creds = unit_credentials().with_drop_in(&drop_in);
    let o = run_as(&creds, "drop-in", &perf);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains("uprobes as perf-event uprobes") && err.contains("tracing pid"),
        "{err}"
    );
}

#[test]
fn without_cap_sys_ptrace_other_users_processes_cannot_be_read() {
    let _gate = test_support::kernel_test(
        GROUP,
        "hands map-trace the unit's capabilities with setpriv",
    );
    let o = run_without("sys_ptrace");
    assert_fails_clearly(
        &o,
        "sys_ptrace",
        9,
        &["permission denied", "/exe", "CAP_SYS_PTRACE"],
    );
}

#[test]
fn without_cap_dac_read_search_private_executables_cannot_be_read() {
    let _gate = test_support::kernel_test(
        GROUP,
        "hands map-trace the unit's capabilities with setpriv",
    );
    let o = run_without("dac_read_search");
    assert_fails_clearly(
        &o,
        "dac_read_search",
        9,
        &["permission denied", "racy-service", "CAP_DAC_READ_SEARCH"],
    );
}
