//! map-trace running in the background as a daemon would: its stderr lines arrive as they are
//! written, its /metrics can be read, and it is stopped with SIGTERM like systemd does.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::MapTrace;
use crate::http::{free_port, http_get};

/// A map-trace process; killed and reaped on drop if still running.
pub struct Daemon {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    /// Every stderr line received so far.
    pub log: Vec<String>,
    stdout: Option<std::thread::JoinHandle<()>>,
    /// Every stdout line so far, as it is written (a long-running daemon's findings are read
    /// while it runs).
    out_lines: Arc<Mutex<Vec<String>>>,
    /// Where stdout goes instead, when started by `start_to_file`.
    out_file: Option<std::path::PathBuf>,
    pub metrics_port: Option<u16>,
}

impl Daemon {
    /// Starts map-trace with `args`; with `metrics`, adds `--metrics-addr` on a free loopback
    /// port.
    pub fn start(exe: MapTrace, args: &[&str], metrics: bool) -> Daemon {
        let mut cmd = exe.command();
        cmd.args(args);
        let metrics_port = metrics.then(free_port);
        if let Some(port) = metrics_port {
            cmd.arg("--metrics-addr").arg(format!("127.0.0.1:{port}"));
        }
        Daemon::spawn(cmd, metrics_port)
    }

    /// Starts map-trace with `args`, its stdout going to the file `stdout` instead of a pipe:
    /// a line it wrote before a stderr line is then in the file when that stderr line arrives
    /// (through two pipes, the stdout reader may not have caught up yet).
    pub fn start_to_file(exe: MapTrace, args: &[&str], stdout: &std::path::Path) -> Daemon {
        let mut cmd = exe.command();
        cmd.args(args);
        let file = std::fs::File::create(stdout)
            .unwrap_or_else(|e| panic!("create {}: {e}", stdout.display()));
        Daemon::spawn_with(cmd, None, Some((file, stdout.to_path_buf())))
    }

    /// Starts `cmd`: map-trace, or a program that execs it (`setpriv` with a service's
    /// credentials), serving metrics on `metrics_port` if it does.
    pub fn spawn(cmd: Command, metrics_port: Option<u16>) -> Daemon {
        Daemon::spawn_with(cmd, metrics_port, None)
    }

    fn spawn_with(
        mut cmd: Command,
        metrics_port: Option<u16>,
        to_file: Option<(std::fs::File, std::path::PathBuf)>,
    ) -> Daemon {
        let (stdout, out_file) = match to_file {
            Some((file, path)) => (Stdio::from(file), Some(path)),
            None => (Stdio::piped(), None),
        };
        let mut child = cmd
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
        let (tx, lines) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let out_lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().map(|out| {
            let sink = Arc::clone(&out_lines);
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            })
        });
        Daemon {
            child: Some(child),
            lines,
            log: Vec::new(),
            stdout,
            out_lines,
            out_file,
            metrics_port,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Waits for a stderr line containing `needle` (also among lines already received);
    /// panics with the log on timeout or if map-trace exits first.
    pub fn wait_line(&mut self, needle: &str, limit: Duration) -> String {
        self.wait_line_with(&[needle], limit)
    }

    /// Like `wait_line`, for a line that contains every one of `needles`.
    pub fn wait_line_with(&mut self, needles: &[&str], limit: Duration) -> String {
        self.try_wait_line_with(needles, limit)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `wait_line_with` that returns the failure (with the log) instead of panicking.
    pub fn try_wait_line_with(
        &mut self,
        needles: &[&str],
        limit: Duration,
    ) -> Result<String, String> {
        let wanted = |l: &str| needles.iter().all(|n| l.contains(n));
        if let Some(l) = self.log.iter().find(|l| wanted(l)) {
            return Ok(l.clone());
        }
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if wanted(&line) {
                        return Ok(line);
                    }
                }
                Err(_) => {
                    return Err(format!(
                        "map-trace did not print {needles:?} within {limit:?} (exit status {:?}); stderr so far:\n{}",
                        self.child
                            .as_mut()
                            .and_then(|c| c.try_wait().ok().flatten()),
                        self.log.join("\n")
                    ));
                }
            }
        }
    }

    /// The stdout lines written so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        match &self.out_file {
            Some(path) => std::fs::read_to_string(path)
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
                .lines()
                .map(str::to_string)
                .collect(),
            None => self.out_lines.lock().unwrap().clone(),
        }
    }

    /// GET on the metrics port: (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        let port = self.metrics_port.expect("started with metrics");
        http_get(port, path).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// The samples of /metrics, keyed by series (`name{labels}` exactly as exposed).
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "{body}");
        parse_samples(&body)
    }

    /// Polls /metrics until `series` satisfies `pred`; returns all samples then.
    pub fn wait_metric(
        &self,
        series: &str,
        limit: Duration,
        pred: impl Fn(f64) -> bool,
    ) -> BTreeMap<String, f64> {
        let deadline = Instant::now() + limit;
        loop {
            let m = self.metrics();
            if m.get(series).is_some_and(|v| pred(*v)) {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "{series} never satisfied the condition within {limit:?}; last: {:?}",
                m.get(series)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, as systemd stops a service; returns (exit code, stdout, all stderr).
    pub fn terminate(mut self) -> (Option<i32>, String, String) {
        let mut child = self.child.take().unwrap();
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("map-trace ignored SIGTERM for 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.log.push(line);
        }
        if let Some(reader) = self.stdout.take() {
            reader.join().unwrap();
        }
        let out = self
            .stdout_lines()
            .iter()
            .map(|l| format!("{l}\n"))
            .collect();
        (status.code(), out, self.log.join("\n"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `name{labels} value` lines of the text format; comments skipped.
pub fn parse_samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// File descriptors of `pid` by what they are (`bpf_link`: one per uprobe or tracepoint link,
/// `bpf-map`, `bpf-prog`, ...). Read from the kernel, not from map-trace.
pub fn fd_kinds(pid: u32) -> BTreeMap<String, usize> {
    let mut kinds = BTreeMap::new();
    let dir = format!("/proc/{pid}/fd");
    for e in std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .flatten()
    {
        if let Ok(target) = std::fs::read_link(e.path()) {
            let t = target.to_string_lossy().into_owned();
            if let Some(kind) = t.strip_prefix("anon_inode:") {
                *kinds.entry(kind.to_string()).or_insert(0) += 1;
            }
        }
    }
    kinds
}

/// The BPF maps process `pid` holds, by name: (id, type, max_entries).
fn bpf_maps(pid: u32) -> BTreeMap<String, (String, String, u64)> {
    let mut out = BTreeMap::new();
    let dir = format!("/proc/{pid}/fd");
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let is_map =
            std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy() == "anon_inode:bpf-map");
        if !is_map {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            e.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        let Some(id) = info
            .lines()
            .find_map(|l| l.strip_prefix("map_id:"))
            .map(|v| v.trim().to_string())
        else {
            continue;
        };
        let show = bpftool(&["map", "show", "id", &id]);
        let (Some(name), Some(kind)) = (show["name"].as_str(), show["type"].as_str()) else {
            continue;
        };
        let max = show["max_entries"].as_u64().unwrap_or(0);
        out.insert(name.to_string(), (id, kind.to_string(), max));
    }
    out
}

/// Entries in each hash table process `pid` holds, and the used (not all-zero) slots of its
/// small arrays (`CONFIG`: one per binary configured), by map name.
pub fn bpf_map_entries(pid: u32) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (name, (id, kind, max)) in bpf_maps(pid) {
        let dump = || bpftool(&["map", "dump", "id", &id]);
        if kind.contains("hash") {
            out.insert(name, dump().as_array().map_or(0, Vec::len));
        } else if kind == "array" && max <= 1024 {
            let used = dump()
                .as_array()
                .map_or(0, |v| v.iter().filter(|e| nonzero(&e["value"])).count());
            out.insert(name, used);
        }
    }
    out
}

/// The values of the u64 array `name` of process `pid` (e.g. `LIVE_HINT`), by index.
pub fn bpf_u64_array(pid: u32, name: &str) -> Vec<u64> {
    let maps = bpf_maps(pid);
    let (id, _, _) = maps
        .get(name)
        .unwrap_or_else(|| panic!("map-trace (pid {pid}) holds no BPF map {name}"));
    let dump = bpftool(&["map", "dump", "id", id]);
    let mut values: Vec<(u64, u64)> = dump
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| (number(&e["key"]), number(&e["value"])))
        .collect();
    values.sort_unstable();
    values.into_iter().map(|(_, v)| v).collect()
}

/// bpftool prints a value with BTF as numbers and objects, without as `["0x01", …]` bytes.
fn nonzero(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Number(n) => n.as_u64() != Some(0),
        serde_json::Value::String(s) => {
            u64::from_str_radix(s.trim_start_matches("0x"), 16) != Ok(0)
        }
        serde_json::Value::Array(a) => a.iter().any(nonzero),
        serde_json::Value::Object(o) => o.values().any(nonzero),
        _ => false,
    }
}

/// A key or value as a little-endian number, from either of bpftool's forms.
fn number(v: &serde_json::Value) -> u64 {
    match v {
        serde_json::Value::Number(n) => n.as_u64().unwrap_or(0),
        serde_json::Value::Array(bytes) => bytes.iter().rev().fold(0, |acc, b| {
            let b = b.as_str().map_or(0, |s| {
                u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap_or(0)
            });
            (acc << 8) | b
        }),
        _ => 0,
    }
}

fn bpftool(args: &[&str]) -> serde_json::Value {
    let o = Command::new("bpftool")
        .arg("-j")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("bpftool: {e}; install it with `cargo xtask setup`"));
    assert!(
        o.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null)
}
