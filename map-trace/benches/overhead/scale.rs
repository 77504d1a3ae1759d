//! Issue 18's scale figure: 100 Go processes of mixed versions on one node under `--all` (the
//! scenario fixtures of every Go release of the matrix, each waiting on stdin): the time from
//! start to every one attached, the daemon's CPU and RSS over that time, the links and BPF
//! table entries it then holds, and how long detaching them all takes at SIGTERM.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{cpu_ns, status_kb};

/// Processes started.
const PROCESSES: usize = 100;
/// Where the daemon serves metrics during this figure.
const METRICS: &str = "127.0.0.1:19464";

/// The default-variant scenario fixtures for this host's arch, one per Go build, from the
/// fixture manifest.
pub fn fixtures(manifest: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let text =
        std::fs::read_to_string(manifest).map_err(|e| format!("{}: {e}", manifest.display()))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let arch = std::env::consts::ARCH;
    let list: Vec<(String, PathBuf)> = v["fixtures"]
        .as_array()
        .ok_or("manifest without fixtures")?
        .iter()
        .filter(|f| f["program"] == "scenarios" && f["variant"] == "default" && f["arch"] == arch)
        .filter_map(|f| {
            Some((
                f["name"].as_str()?.to_string(),
                PathBuf::from(f["path"].as_str()?),
            ))
        })
        .collect();
    if list.is_empty() {
        return Err("no scenario fixtures for this arch: run `cargo xtask fixtures`".into());
    }
    Ok(list)
}

fn metrics() -> String {
    Command::new("curl")
        .args(["-s", &format!("http://{METRICS}/metrics")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn sample(text: &str, name: &str) -> f64 {
    sample_of(text, name).unwrap_or(0.0)
}

/// None when the metrics do not have the sample at all.
fn sample_of(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

pub fn scale(daemon: &Path, manifest: &Path) -> Result<Value, String> {
    let builds = fixtures(manifest)?;
    let mut procs: Vec<Child> = Vec::new();
    for i in 0..PROCESSES {
        let (_, path) = &builds[i % builds.len()];
        let c = Command::new(path)
            .arg("self_update_existing")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        procs.push(c);
    }
    let pids: Vec<u32> = procs.iter().map(Child::id).collect();
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let mut mt = Command::new(daemon)
        .args(["--all", "--metrics-addr", METRICS])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", daemon.display()))?;
    let cpu0 = cpu_ns(mt.id());
    let err = BufReader::new(mt.stderr.take().unwrap());
    let mut attached = 0usize;
    let mut lines = err.lines();
    while attached < PROCESSES {
        let Some(Ok(l)) = lines.next() else {
            return Err(format!(
                "map-trace stopped after attaching {attached} of {PROCESSES}"
            ));
        };
        if l.contains("tracing pid")
            && let Some(pid) = l
                .split_whitespace()
                .nth(3)
                .and_then(|p| p.parse::<u32>().ok())
            && pids.contains(&pid)
        {
            attached += 1;
        }
        if started.elapsed() > Duration::from_secs(300) {
            return Err(format!("only {attached} of {PROCESSES} attached in 300 s"));
        }
    }
    let attach_s = started.elapsed().as_secs_f64();
    let cpu_s = cpu_ns(mt.id()).saturating_sub(cpu0) as f64 / 1e9;
    // Keep reading stderr so the daemon never blocks on it.
    let drain = std::thread::spawn(move || for _ in lines {});
    std::thread::sleep(Duration::from_secs(2));
    let rss_mb = status_kb(mt.id(), "VmRSS:") as f64 / 1024.0;
    let hwm_mb = status_kb(mt.id(), "VmHWM:") as f64 / 1024.0;
    let m = metrics();
    // The metric's label values (lower case); a missing sample shows as null, not as 0.
    let entries: Value = ["maps", "iters", "stacks"]
        .iter()
        .map(|t| {
            (
                t.to_string(),
                json!(sample_of(
                    &m,
                    &format!("map_trace_bpf_map_entries{{map=\"{t}\"}}")
                )),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into();
    let links = sample(&m, "map_trace_probe_links");
    // Release them all; then stop the daemon and time the detach.
    for c in &mut procs {
        let _ = c.stdin.take().map(|mut s| s.write_all(b"go\n"));
    }
    for c in &mut procs {
        let _ = c.wait();
    }
    let stop = Instant::now();
    // SAFETY: a plain kill(2) of our child.
    unsafe { libc::kill(mt.id() as i32, libc::SIGTERM) };
    let _ = mt.wait();
    let _ = drain.join();
    Ok(json!({
        "processes": PROCESSES,
        "go_builds": builds.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
        "start_to_all_attached_s": attach_s,
        "daemon_cpu_s_while_attaching": cpu_s,
        "daemon_rss_mb": rss_mb,
        "daemon_peak_rss_mb": hwm_mb,
        "probe_links": links,
        "bpf_map_entries": entries,
        "sigterm_to_exit_s": stop.elapsed().as_secs_f64(),
    }))
}

pub fn print(s: &Value) {
    println!(
        "\n--all with {} Go processes of {} builds: all attached {:.1} s after start ({:.1} s of daemon CPU); RSS {:.1} MB (peak {:.1} MB); {} probe links; BPF entries {}; SIGTERM to exit {:.1} s",
        s["processes"],
        s["go_builds"].as_array().map_or(0, Vec::len),
        s["start_to_all_attached_s"].as_f64().unwrap_or(0.0),
        s["daemon_cpu_s_while_attaching"].as_f64().unwrap_or(0.0),
        s["daemon_rss_mb"].as_f64().unwrap_or(0.0),
        s["daemon_peak_rss_mb"].as_f64().unwrap_or(0.0),
        s["probe_links"],
        s["bpf_map_entries"],
        s["sigterm_to_exit_s"].as_f64().unwrap_or(0.0),
    );
}
