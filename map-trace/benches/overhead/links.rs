//! Issue 19's attach and detach figure, for both kinds of uprobe link: one Go process, and 20
//! processes of one binary, traced with `--pid`: the time from start to every process traced,
//! the link and perf-event fds the daemon then holds, the same after every process has exited
//! (their links closed), and SIGTERM to exit with all of them still attached.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The daemon's fds by kind (`bpf_link`, `perf_event`, ...) and in all.
fn fds(pid: u32) -> (usize, usize, usize) {
    let (mut links, mut perf, mut all) = (0, 0, 0);
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
    {
        all += 1;
        let t = std::fs::read_link(e.path()).unwrap_or_default();
        match t.to_string_lossy().as_ref() {
            "anon_inode:bpf_link" => links += 1,
            "anon_inode:[perf_event]" => perf += 1,
            _ => {}
        }
    }
    (links, perf, all)
}

/// Waits for stderr lines until `n` of them contain `needle` and one of `pids`.
fn wait_lines(
    rx: &mpsc::Receiver<String>,
    needle: &str,
    pids: &[u32],
    n: usize,
) -> Result<(), String> {
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let l = rx
            .recv_timeout(left)
            .map_err(|_| format!("only {seen} of {n} `{needle}` lines"))?;
        if l.contains(needle) && pids.iter().any(|p| l.contains(&format!("pid {p} "))) {
            seen += 1;
        }
    }
    Ok(())
}

fn one(daemon: &Path, bin: &Path, kind: &str, n: usize) -> Result<Value, String> {
    let mut procs: Vec<Child> = (0..n)
        .map(|_| {
            Command::new(bin)
                .arg("self_update_existing")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("{}: {e}", bin.display()))
        })
        .collect::<Result<_, _>>()?;
    let pids: Vec<u32> = procs.iter().map(Child::id).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut cmd = Command::new(daemon);
    for p in &pids {
        cmd.arg("--pid").arg(p.to_string());
    }
    let started = Instant::now();
    let mut mt = cmd
        .env("MAP_TRACE_UPROBE_LINKS", kind)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", daemon.display()))?;
    let err = BufReader::new(mt.stderr.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in err.lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    wait_lines(&rx, "tracing pid", &pids, n)?;
    let attach_s = started.elapsed().as_secs_f64();
    let attached = fds(mt.id());
    // Half of them exit: their links close while the daemon runs on.
    let half = n / 2;
    for c in procs.iter_mut().take(half) {
        let _ = c.stdin.take().map(|mut s| s.write_all(b"go\n"));
        let _ = c.wait();
    }
    wait_lines(&rx, "exited", &pids[..half], half)?;
    std::thread::sleep(Duration::from_secs(2));
    let after_exits = fds(mt.id());
    let stop = Instant::now();
    // SAFETY: a plain kill(2) of our child.
    unsafe { libc::kill(mt.id() as i32, libc::SIGTERM) };
    let _ = mt.wait();
    let stop_s = stop.elapsed().as_secs_f64();
    for c in &mut procs {
        let _ = c.stdin.take().map(|mut s| s.write_all(b"go\n"));
        let _ = c.wait();
    }
    let f = |(links, perf, all): (usize, usize, usize)| json!({"bpf_link": links, "perf_event": perf, "all": all});
    Ok(json!({
        "links": kind,
        "processes": n,
        "start_to_all_traced_s": attach_s,
        "fds_attached": f(attached),
        "fds_after_half_exited": f(after_exits),
        "sigterm_to_exit_s": stop_s,
    }))
}

/// Both link kinds, one process and 20, on `bin` (a scenarios fixture).
pub fn links(daemon: &Path, bin: &Path) -> Result<Value, String> {
    let mut rows = Vec::new();
    for kind in ["multi", "perf"] {
        for n in [1, 20] {
            rows.push(one(daemon, bin, kind, n)?);
        }
    }
    Ok(json!({ "binary": bin.display().to_string(), "rows": rows }))
}

pub fn print(s: &Value) {
    println!("\nuprobe links, {}:", s["binary"].as_str().unwrap_or("?"));
    for r in s["rows"].as_array().into_iter().flatten() {
        let fd = |k: &str, f: &str| r[k][f].as_u64().unwrap_or(0);
        println!(
            "  {:<5} {:>2} process(es): all traced {:.2} s after start; fds attached: {} bpf_link, {} perf_event, {} in all; after half exited: {} bpf_link, {} perf_event, {} in all; SIGTERM to exit {:.2} s",
            r["links"].as_str().unwrap_or("?"),
            r["processes"],
            r["start_to_all_traced_s"].as_f64().unwrap_or(0.0),
            fd("fds_attached", "bpf_link"),
            fd("fds_attached", "perf_event"),
            fd("fds_attached", "all"),
            fd("fds_after_half_exited", "bpf_link"),
            fd("fds_after_half_exited", "perf_event"),
            fd("fds_after_half_exited", "all"),
            r["sigterm_to_exit_s"].as_f64().unwrap_or(0.0),
        );
    }
}
