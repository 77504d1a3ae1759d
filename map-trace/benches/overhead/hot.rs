//! Issue 16's hot loop: a bug that fires tens of thousands of times a second (the workload's
//! `hot` mode, one finding group). Measured under the default output (one `finding` object, then
//! updates; repeats folded in the kernel) and with `--every-occurrence` (every occurrence sent and
//! printed), side by side: occurrences, ring-buffer losses, stacks walked, JSON lines and bytes
//! per second, the cost of an occurrence over the plain run, and how long after SIGINT the
//! summary is out.

use std::io::Read as _;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Traced, parse_result, start_traced, wait_line, workload_run};

/// Hot-loop iterations per run: a few seconds traced.
const ITERATIONS: &str = "300000";

/// What the summary says, by the start of its lines.
fn summary_number(summary: &[String], line_start: &str, word_after: &str) -> u64 {
    summary
        .iter()
        .find_map(|l| {
            let rest = l.trim_start().strip_prefix(line_start)?;
            let words: Vec<&str> = rest.split_whitespace().collect();
            let at = words.iter().position(|w| w.starts_with(word_after))?;
            words.get(at.checked_sub(1)?)?.parse().ok()
        })
        .unwrap_or(0)
}

/// One traced run to the end: the workload's ns, map-trace's stdout and its summary lines.
fn traced(bin: &Path, daemon: &Path, flags: &[&str]) -> Result<(u64, String, Vec<String>), String> {
    let mut flags = flags.to_vec();
    flags.extend(["--format", "json"]);
    let args = ["-mode", "hot", "-n", ITERATIONS];
    let mut t = start_traced(
        bin,
        daemon,
        &args,
        &flags,
        Stdio::piped(),
        "probes attached",
    )?;
    let mut stdout = t.mt.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    t.release()?;
    let Traced {
        target,
        mut mt,
        lines,
    } = t;
    let o = target.wait_with_output().map_err(|e| e.to_string())?;
    let (_, ns) = parse_result(&String::from_utf8_lossy(&o.stdout))?;
    let _ = mt.wait();
    let out = reader.join().unwrap_or_default();
    // The rest of its stderr, to its end: the summary.
    let summary: Vec<String> = lines.iter().collect();
    Ok((ns, out, summary))
}

/// SIGINT while the loop runs: ms until the summary's first line is out.
fn stop_time(bin: &Path, daemon: &Path) -> Result<f64, String> {
    let args = ["-mode", "hot", "-n", "100000000"];
    let flags = ["--format", "json"];
    let mut t = start_traced(bin, daemon, &args, &flags, Stdio::null(), "probes attached")?;
    t.release()?;
    std::thread::sleep(Duration::from_secs(2));
    let asked = Instant::now();
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(t.mt.id() as i32, libc::SIGINT) };
    wait_line(&t.lines, "map-trace summary")?;
    let ms = asked.elapsed().as_secs_f64() * 1e3;
    let _ = t.mt.wait();
    let _ = t.target.kill();
    let _ = t.target.wait();
    Ok(ms)
}

pub fn hot_loop(bin: &Path, daemon: &Path) -> Result<Value, String> {
    let (_, plain_ns) = workload_run(bin, &["-mode", "hot", "-n", ITERATIONS])?;
    let mut side = Vec::new();
    for (name, flags) in [
        ("default", &[][..]),
        ("every_occurrence", &["--every-occurrence"][..]),
    ] {
        let (ns, out, summary) = traced(bin, daemon, flags)?;
        let occurrences = summary_number(&summary, "map-trace summary:", "finding");
        let secs = ns as f64 / 1e9;
        side.push(json!({
            "output": name,
            "occurrences": occurrences,
            "occurrences_per_s": occurrences as f64 / secs,
            "lost": summary_number(&summary, "lost:", "finding"),
            "folded": summary_number(&summary, "repeats:", "occurrence"),
            "stacks_walked": summary_number(&summary, "stacks:", "captured"),
            "json_lines": out.lines().count(),
            "json_lines_per_s": out.lines().count() as f64 / secs,
            "json_bytes_per_s": out.len() as f64 / secs,
            "traced_over_plain": ns as f64 / plain_ns as f64,
            "ns_per_occurrence": ns.saturating_sub(plain_ns) as f64 / occurrences.max(1) as f64,
        }));
    }
    Ok(json!({
        "iterations": ITERATIONS,
        "plain_ms": plain_ns as f64 / 1e6,
        "runs": side,
        "sigint_to_summary_ms": stop_time(bin, daemon)?,
    }))
}

pub fn print(h: &Value) {
    println!(
        "\nhot loop ({} ranges inserting into themselves, plain {:.1} ms); SIGINT to summary {:.0} ms",
        h["iterations"].as_str().unwrap_or("?"),
        h["plain_ms"].as_f64().unwrap_or(0.0),
        h["sigint_to_summary_ms"].as_f64().unwrap_or(0.0),
    );
    println!(
        "  {:<17} {:>11} {:>9} {:>9} {:>9} {:>9} {:>11} {:>12} {:>10} {:>8}",
        "output",
        "occurrences",
        "per s",
        "lost",
        "folded",
        "stacks",
        "JSON lines",
        "JSON bytes/s",
        "ns/occur.",
        "x plain"
    );
    for r in h["runs"].as_array().into_iter().flatten() {
        println!(
            "  {:<17} {:>11} {:>9.0} {:>9} {:>9} {:>9} {:>11} {:>12.0} {:>10.0} {:>8.2}",
            r["output"].as_str().unwrap_or("?"),
            r["occurrences"],
            r["occurrences_per_s"].as_f64().unwrap_or(0.0),
            r["lost"],
            r["folded"],
            r["stacks_walked"],
            r["json_lines"],
            r["json_bytes_per_s"].as_f64().unwrap_or(0.0),
            r["ns_per_occurrence"].as_f64().unwrap_or(0.0),
            r["traced_over_plain"].as_f64().unwrap_or(0.0),
        );
    }
}
