//! `cargo xtask bench`: what map-trace costs, each figure a ratio of two measurements taken in
//! the same run on the same binary, so machine speed cancels out. A benchmark, not a test: it
//! asserts nothing about speed, it reports (table on stdout, JSON under target/bench/).
//!
//! Inputs (set by `cargo xtask bench`): MAP_TRACE_BENCH_WORKLOAD (testdata/go/bench built with
//! the newest Go), MAP_TRACE_BENCH_RACE (the same with -race), MAP_TRACE_BENCH_LARGE (a large Go
//! binary for attach time), MAP_TRACE_BENCH_DAEMON (the release map-trace), MAP_TRACE_BENCH_OUT.
//! For working on the eBPF programs, not for the README's table: `MAP_TRACE_BENCH_ONLY=probes`
//! stops after the per-hit costs (about ten minutes), `MAP_TRACE_BENCH_ONLY=programs` measures
//! only the step and assign programs' own run time by the kernel's BPF stats (20 seconds).

use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use aya::Ebpf;
use aya::maps::PerCpuArray;
use aya::programs::UProbe;
use aya::programs::uprobe::UProbeScope;
use map_trace::attach::probes as attach;
use map_trace::plan::GoTarget;
use map_trace::plan::IterationMode;
use map_trace_common::event::counter;
use map_trace_common::probe::Role;
use serde_json::{Value, json};

#[path = "overhead/hot.rs"]
mod hot;
#[path = "overhead/links.rs"]
mod links;
#[path = "overhead/scale.rs"]
mod scale;

/// Rounds of each configuration; medians are reported.
const ROUNDS: usize = 5;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn env_path(name: &str) -> Result<PathBuf, String> {
    std::env::var_os(name)
        .map(PathBuf::from)
        .ok_or_else(|| format!("{name} is not set; run the benchmark with `cargo xtask bench`"))
}

fn run() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("the benchmark attaches uprobes: run `sudo cargo xtask bench`".into());
    }
    let workload = env_path("MAP_TRACE_BENCH_WORKLOAD")?;
    let race = env_path("MAP_TRACE_BENCH_RACE")?;
    let large = env_path("MAP_TRACE_BENCH_LARGE")?;
    let hugo = env_path("MAP_TRACE_BENCH_HUGO")?;
    let fixtures = env_path("MAP_TRACE_FIXTURES")?;
    let daemon = env_path("MAP_TRACE_BENCH_DAEMON")?;
    let out = env_path("MAP_TRACE_BENCH_OUT")?;
    let target = GoTarget::analyze(&workload).map_err(|e| e.to_string())?;

    // Per-hit costs against the empty program, which is attached as a perf-event uprobe: ours
    // too, so that the ratio compares programs, not link kinds (`links` compares those).
    // SAFETY: no other thread reads the environment yet.
    unsafe { std::env::set_var("MAP_TRACE_UPROBE_LINKS", "perf") };
    if std::env::var("MAP_TRACE_BENCH_ONLY").as_deref() == Ok("programs") {
        for (mode, roles) in [
            ("range", &[Role::IterStep][..]),
            ("assign", &[Role::Assign][..]),
        ] {
            let run = |how| program_run_ns(&workload, &target, roles, how, &[mode, "2000000"]);
            let (empty, ours) = (run(Setup::EmptyAfterPrologue)?, run(Setup::Ours)?);
            println!(
                "{mode}: empty program {empty:.0} ns a run, ours {ours:.0} ns ({:.0} more)",
                ours - empty
            );
        }
        return Ok(());
    }
    let mut probes = Vec::new();
    for (mode, roles, n) in [
        ("assign", &[Role::Assign][..], 2_000_000),
        ("delete", &[Role::Delete, Role::Assign][..], 1_000_000),
        ("range", &[Role::IterStep][..], 2_000_000),
        (
            "update_in_range",
            &[Role::IterStep, Role::Assign][..],
            1_000_000,
        ),
    ] {
        probes.push(probe_cost(&workload, &target, mode, roles, n)?);
    }
    if std::env::var("MAP_TRACE_BENCH_ONLY").as_deref() == Ok("probes") {
        print_probe_costs(&probes);
        return Ok(());
    }
    // Everything after runs map-trace as users do: uprobe_multi links where the kernel has them.
    // SAFETY: as above.
    unsafe { std::env::remove_var("MAP_TRACE_UPROBE_LINKS") };
    let service = service_cost(&workload, &race, &daemon, 20_000)?;
    let race_ns_per_request = service["race_ms"].as_f64().unwrap_or(0.0) * 1e6 / 20_000.0;
    let duty = duty_cycle_cost(&workload, &daemon, 400_000, race_ns_per_request)?;
    let attach = attach_time(&daemon, &large)?;
    let memory = watching_memory(&daemon, &hugo)?;
    let hot_loop = hot::hot_loop(&workload, &daemon)?;
    let scale = scale::scale(&daemon, &fixtures)?;
    let newest = scale::fixtures(&fixtures)?
        .pop()
        .map(|(_, p)| p)
        .ok_or("no scenario fixture")?;
    let links = links::links(&daemon, &newest)?;

    let report = json!({
        "go": target.version.to_string(),
        "map_impl": target.map_impl.name(),
        "rounds": ROUNDS,
        "probe_cost": probes,
        "service": service,
        "duty_cycle": duty,
        "attach": attach,
        "memory": memory,
        "hot_loop": hot_loop,
        "scale": scale,
        "links": links,
    });
    print_table(&report);
    hot::print(&report["hot_loop"]);
    scale::print(&report["scale"]);
    links::print(&report["links"]);
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&report).unwrap() + "\n")
        .map_err(|e| format!("{}: {e}", out.display()))?;
    println!("\nwritten to {}", out.display());
    Ok(())
}

/// One run of the workload: (ops, ns of its own timed work).
fn workload_run(bin: &Path, args: &[&str]) -> Result<(u64, u64), String> {
    let o = Command::new(bin)
        .args(args)
        .output()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    if !o.status.success() {
        return Err(format!(
            "{} {args:?} failed: {}",
            bin.display(),
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    parse_result(&String::from_utf8_lossy(&o.stdout))
}

fn parse_result(stdout: &str) -> Result<(u64, u64), String> {
    let v: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| format!("no result line in {stdout:?}"))?;
    Ok((
        v["ops"].as_u64().unwrap_or(0),
        v["ns"].as_u64().unwrap_or(0),
    ))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// How a probe site is equipped during one measurement.
#[derive(Clone, Copy, PartialEq)]
enum Setup {
    /// Nothing attached.
    None,
    /// The empty program at our attach offset (after the stack-check prologue).
    EmptyAfterPrologue,
    /// The empty program at the function's first instruction.
    EmptyAtEntry,
    /// map-trace's real programs, every probe of the binary, configured as the daemon does.
    Ours,
}

/// Keeps what `setup` attached alive; dropping it detaches.
struct Attached {
    /// uprobe_multi links (closed when dropped), before the object they use.
    _links: Vec<attach::Link>,
    ebpf: Option<Ebpf>,
}

fn setup(bin: &Path, t: &GoTarget, roles: &[Role], how: Setup) -> Result<Attached, String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    match how {
        Setup::None => Ok(Attached {
            _links: Vec::new(),
            ebpf: None,
        }),
        Setup::EmptyAfterPrologue | Setup::EmptyAtEntry => {
            let mut ebpf = Ebpf::load(map_trace::ebpf::object()).map_err(|x| e(&x))?;
            let p: &mut UProbe = ebpf
                .program_mut(attach::BENCH_EMPTY_PROGRAM)
                .ok_or("no empty program")?
                .try_into()
                .map_err(|x| e(&x))?;
            p.load().map_err(|x| e(&x))?;
            for probe in t.probes.iter().filter(|p| roles.contains(&p.role)) {
                let offset = match how {
                    Setup::EmptyAtEntry => probe.file_offset,
                    _ => probe.uprobe_offset(),
                };
                p.attach(offset, bin, UProbeScope::AllProcesses)
                    .map_err(|x| e(&x))?;
            }
            Ok(Attached {
                _links: Vec::new(),
                ebpf: Some(ebpf),
            })
        }
        Setup::Ours => {
            let mut ebpf = attach::load().map_err(|x| e(&x))?;
            attach::write_config(&mut ebpf, t, 1, false).map_err(|x| e(&x))?;
            // Perf links detach when the Ebpf that owns their programs is dropped,
            // uprobe_multi links when theirs are.
            let links = attach::attach_binary(
                &mut ebpf,
                t,
                1,
                bin,
                UProbeScope::AllProcesses,
                IterationMode::Steps,
            )
            .map_err(|x| e(&x))?;
            Ok(Attached {
                _links: links,
                ebpf: Some(ebpf.into_inner()),
            })
        }
    }
}

fn role_hits(ebpf: &Ebpf, roles: &[Role]) -> u64 {
    let Some(map) = ebpf.map("COUNTERS") else {
        return 0;
    };
    let Ok(c) = PerCpuArray::<_, u64>::try_from(map) else {
        return 0;
    };
    roles
        .iter()
        .map(|&r| {
            c.get(&(counter::HITS + r as u32), 0)
                .map(|v| v.iter().sum::<u64>())
                .unwrap_or(0)
        })
        .sum()
}

/// Items 1 and 2: ns per hit of our program and of an empty one at the same offset, and of the
/// empty one at the function's entry.
fn probe_cost(
    bin: &Path,
    t: &GoTarget,
    mode: &str,
    roles: &[Role],
    n: u64,
) -> Result<Value, String> {
    let setups = [
        Setup::None,
        Setup::EmptyAfterPrologue,
        Setup::EmptyAtEntry,
        Setup::Ours,
    ];
    let mut ns: Vec<Vec<f64>> = vec![Vec::new(); setups.len()];
    let mut traps_per_op = 0.0;
    let n_arg = n.to_string();
    // Interleaved rounds, so a drift of the machine's speed hits every setup alike.
    for _ in 0..ROUNDS {
        for (i, &how) in setups.iter().enumerate() {
            let a = setup(bin, t, roles, how)?;
            let before = a.ebpf.as_ref().map_or(0, |e| role_hits(e, roles));
            let (ops, took) = workload_run(bin, &["-mode", mode, "-n", &n_arg])?;
            if how == Setup::Ours {
                let hits = role_hits(a.ebpf.as_ref().unwrap(), roles) - before;
                // Set-up work (filling, one range) traps too: count only the loop's share.
                traps_per_op = (hits as f64 / ops as f64).max(traps_per_op);
            }
            ns[i].push(took as f64 / ops as f64);
        }
    }
    let base = median(ns[0].clone());
    let per_hit = |i: usize| (median(ns[i].clone()) - base) / traps_per_op.max(1.0);
    let (empty, entry, ours) = (per_hit(1), per_hit(2), per_hit(3));
    let (empty_run, ours_run) = (
        program_run_ns(bin, t, roles, Setup::EmptyAfterPrologue, &[mode, &n_arg])?,
        program_run_ns(bin, t, roles, Setup::Ours, &[mode, &n_arg])?,
    );
    Ok(json!({
        "mode": mode,
        "roles": roles.iter().map(|r| r.name()).collect::<Vec<_>>().join("+"),
        "ops": n,
        "plain_ns_per_op": base,
        "traps_per_op": traps_per_op,
        "empty_after_prologue_ns_per_hit": empty,
        "empty_at_entry_ns_per_hit": entry,
        "ours_ns_per_hit": ours,
        "ours_over_empty": ours / empty,
        "empty_program_ns_per_run": empty_run,
        "ours_program_ns_per_run": ours_run,
        "entry_over_after_prologue": entry / empty,
    }))
}

/// The kernel's own account of the time the programs of `roles` ran (BPF run-time stats), in
/// ns per run over one extra run of the loop, apart from the timed rounds: keeping the stats
/// costs every run two clock reads, which the rounds must not pay. The trap is not in it, so it
/// prices the program alone and moves far less between runs than the per-hit figures. For the
/// loops with two roles, the runs of both are pooled.
fn program_run_ns(
    bin: &Path,
    t: &GoTarget,
    roles: &[Role],
    how: Setup,
    [mode, n_arg]: &[&str; 2],
) -> Result<f64, String> {
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .map_err(|e| format!("BPF run-time stats: {e}"))?;
    let a = setup(bin, t, roles, how)?;
    let ebpf = a.ebpf.as_ref().ok_or("nothing attached")?;
    let names: Vec<&str> = match how {
        Setup::Ours => t
            .probes
            .iter()
            .filter(|p| roles.contains(&p.role))
            .map(|p| p.program.name())
            .collect(),
        _ => vec![attach::BENCH_EMPTY_PROGRAM],
    };
    let totals = |ebpf: &Ebpf| -> (u64, u64) {
        let mut sum = (0, 0);
        for (name, p) in ebpf.programs() {
            if names.contains(&name)
                && let Ok(info) = p.info()
            {
                sum.0 += info.run_time().as_nanos() as u64;
                sum.1 += info.run_count();
            }
        }
        sum
    };
    let before = totals(ebpf);
    workload_run(bin, &["-mode", mode, "-n", n_arg]).map(drop)?;
    let after = totals(ebpf);
    drop(stats);
    let runs = after.1.saturating_sub(before.1);
    if runs == 0 {
        return Err(format!("no run of {names:?} was counted"));
    }
    Ok(after.0.saturating_sub(before.0) as f64 / runs as f64)
}

/// The daemon's stderr lines, read in the background.
fn stderr_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

fn wait_line(rx: &std::sync::mpsc::Receiver<String>, needle: &str) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(needle) => return Ok(l),
            Ok(_) => {}
            Err(_) => return Err(format!("map-trace never printed {needle:?}")),
        }
    }
}

/// CPU time a process has run, in ns (schedstat: exact, unlike the 10 ms ticks of stat).
fn cpu_ns(pid: u32) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let s = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        total += s
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
    }
    total
}

fn status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// One traced run of the workload, measured during its work only.
struct TracedRun {
    /// The workload's own timed ns.
    ns: u64,
    /// map-trace's CPU time over the work's wall time, and its peak RSS.
    cpu_share: f64,
    rss_kb: u64,
    /// map-trace's summary line of probe hits, printed when the target exited.
    hits_line: String,
    /// Sentinel mode: escalations to the full probes during the run.
    escalations: usize,
}

/// The workload waiting on stdin, and map-trace `--pid` on it, attached.
struct Traced {
    target: std::process::Child,
    mt: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

/// Starts the workload with `args` and `-wait`, map-trace `--pid` on it with `flags` (its
/// stdout to `mt_stdout`), and waits until map-trace printed `ready`; the workload still waits.
fn start_traced(
    bin: &Path,
    daemon: &Path,
    args: &[&str],
    flags: &[&str],
    mt_stdout: Stdio,
    ready: &str,
) -> Result<Traced, String> {
    let target = Command::new(bin)
        .args(args)
        .arg("-wait")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut mt = Command::new(daemon)
        .args(["--pid", &target.id().to_string()])
        .args(flags)
        .stdout(mt_stdout)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", daemon.display()))?;
    let lines = stderr_lines(&mut mt);
    wait_line(&lines, ready)?;
    Ok(Traced { target, mt, lines })
}

impl Traced {
    /// Lets the workload start its work.
    fn release(&mut self) -> Result<(), String> {
        self.target
            .stdin
            .take()
            .unwrap()
            .write_all(b"\n")
            .map_err(|e| e.to_string())
    }
}

/// Starts the workload waiting on stdin, map-trace `--pid` on it with `flags`, releases the
/// workload once map-trace printed `ready`, and waits for both.
fn traced_run(
    bin: &Path,
    daemon: &Path,
    args: &[&str],
    flags: &[&str],
    ready: &str,
) -> Result<TracedRun, String> {
    let mut t = start_traced(bin, daemon, args, flags, Stdio::null(), ready)?;
    let t0 = (Instant::now(), cpu_ns(t.mt.id()));
    t.release()?;
    let Traced {
        target,
        mut mt,
        lines,
    } = t;
    let o = target.wait_with_output().map_err(|e| e.to_string())?;
    let wall = t0.0.elapsed().as_secs_f64();
    let cpu = cpu_ns(mt.id()).saturating_sub(t0.1) as f64 / 1e9;
    let rss_kb = status_kb(mt.id(), "VmHWM:");
    let (_, ns) = parse_result(&String::from_utf8_lossy(&o.stdout))?;
    // The target exited, so map-trace prints its summary and exits.
    let hits_line = wait_line(&lines, "probes hit:")?;
    let _ = mt.wait();
    // The rest of the summary: sentinel mode says how often it escalated.
    let escalations = lines
        .iter()
        .find_map(|l| {
            let rest = l.trim().strip_prefix("sentinel: ")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0);
    Ok(TracedRun {
        ns,
        cpu_share: cpu / wall,
        rss_kb,
        hits_line,
        escalations,
    })
}

/// Map-runtime calls of one request of the service workload, counted from its source: the
/// decoded request (4 keys: 4 assigns), the counter update (1 assign), the response literal
/// (4 assigns), the range over the 4 headers and json.Marshal's range over the 4-key
/// response (each 1 start, which takes the first step itself, and 4 more steps, the last
/// finding the end).
const SERVICE_MAP_CALLS_PER_REQUEST: f64 = 19.0;

/// Items 3, 4 and 5 on the service workload: traced vs plain vs -race, traps per map call,
/// and the daemon's CPU and peak RSS meanwhile.
fn service_cost(bin: &Path, race: &Path, daemon: &Path, requests: u64) -> Result<Value, String> {
    let n = requests.to_string();
    let args = ["-mode", "service", "-n", n.as_str()];
    let (mut plain, mut raced, mut traced, mut light, mut sentinel) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut cpu_share, mut rss_kb, mut traps, mut light_traps, mut sentinel_traps) =
        (Vec::new(), 0u64, Vec::new(), Vec::new(), Vec::new());
    let mut escalations = 0usize;
    let traps_of = |run: &TracedRun| {
        let hits: u64 = run
            .hits_line
            .split(':')
            .nth(1)
            .unwrap_or("")
            .split(',')
            .filter_map(|kv| kv.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        hits as f64 / (requests as f64 * SERVICE_MAP_CALLS_PER_REQUEST)
    };
    for _ in 0..ROUNDS {
        plain.push(workload_run(bin, &args)?.1 as f64);
        raced.push(workload_run(race, &args)?.1 as f64);
        let run = traced_run(bin, daemon, &args, &["--format", "json"], "probes attached")?;
        traced.push(run.ns as f64);
        cpu_share.push(run.cpu_share);
        rss_kb = rss_kb.max(run.rss_kb);
        traps.push(traps_of(&run));
        let run = traced_run(bin, daemon, &args, &["--low-overhead"], "probes attached")?;
        light.push(run.ns as f64);
        light_traps.push(traps_of(&run));
        let run = traced_run(
            bin,
            daemon,
            &args,
            &["--mode", "sentinel"],
            "probes attached",
        )?;
        sentinel.push(run.ns as f64);
        sentinel_traps.push(traps_of(&run));
        escalations = escalations.max(run.escalations);
    }
    let (p, r, t, l) = (median(plain), median(raced), median(traced), median(light));
    let st = median(sentinel);
    Ok(json!({
        "requests": requests,
        "plain_ms": p / 1e6,
        "race_ms": r / 1e6,
        "traced_ms": t / 1e6,
        "traced_over_plain": t / p,
        "race_over_plain": r / p,
        "overhead_vs_race": (t - p) / (r - p),
        "traps_per_map_call": median(traps),
        "low_overhead": {
            "traced_ms": l / 1e6,
            "traced_over_plain": l / p,
            "overhead_vs_race": (l - p) / (r - p),
            "traps_per_map_call": median(light_traps),
        },
        "sentinel": {
            "traced_ms": st / 1e6,
            "traced_over_plain": st / p,
            "overhead_vs_race": (st - p) / (r - p),
            "traps_per_map_call": median(sentinel_traps),
            "escalations_in_a_run": escalations,
        },
        "map_calls_per_request": SERVICE_MAP_CALLS_PER_REQUEST,
        "daemon_cpu_share_of_a_core": median(cpu_share),
        "daemon_peak_rss_mb": rss_kb as f64 / 1024.0,
    }))
}

/// Item 4 in the duty-cycled mode: the service workload, long enough to span several cycles,
/// traced with `--duty-cycle 100ms/1s` (the 1s/10s of production, scaled down 10× so a run
/// takes seconds) against plain; the -race cost per request comes from `service_cost`.
fn duty_cycle_cost(
    bin: &Path,
    daemon: &Path,
    requests: u64,
    race_ns_per_request: f64,
) -> Result<Value, String> {
    const CYCLE: &str = "100ms/1s";
    let n = requests.to_string();
    let args = ["-mode", "service", "-n", n.as_str()];
    let (mut plain, mut traced) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        plain.push(workload_run(bin, &args)?.1 as f64 / requests as f64);
        let run = traced_run(bin, daemon, &args, &["--duty-cycle", CYCLE], "duty cycle:")?;
        traced.push(run.ns as f64 / requests as f64);
    }
    let (p, t) = (median(plain), median(traced));
    Ok(json!({
        "cycle": CYCLE,
        "requests": requests,
        "plain_ns_per_request": p,
        "traced_ns_per_request": t,
        "race_ns_per_request": race_ns_per_request,
        "overhead_vs_race": (t - p) / (race_ns_per_request - p),
    }))
}

/// Item 5: from starting map-trace to every probe attached, on a large Go binary.
fn attach_time(daemon: &Path, large: &Path) -> Result<Value, String> {
    let mut ms = Vec::new();
    let mut probes = String::new();
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let mut mt = Command::new(daemon)
            .args(["--exe", large.to_str().unwrap_or_default()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let lines = stderr_lines(&mut mt);
        probes = wait_line(&lines, "probes attached")?;
        ms.push(start.elapsed().as_secs_f64() * 1e3);
        // SAFETY: plain kill(2) of our own child.
        unsafe { libc::kill(mt.id() as i32, libc::SIGTERM) };
        let _ = mt.wait();
    }
    let size = std::fs::metadata(large).map(|m| m.len()).unwrap_or(0);
    Ok(json!({
        "binary": large.display().to_string(),
        "binary_mb": size as f64 / 1048576.0,
        "start_to_attached_ms": median(ms),
        "line": probes,
    }))
}

/// The daemon's resident memory while it watches a large real binary (`--exe`): settled after
/// the analysis, after one traced process of it, and the peak during the analysis.
fn watching_memory(daemon: &Path, bin: &Path) -> Result<Value, String> {
    let mut mt = Command::new(daemon)
        .args(["--exe", bin.to_str().unwrap_or_default()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let lines = stderr_lines(&mut mt);
    let line = wait_line(&lines, "probes attached");
    std::thread::sleep(Duration::from_secs(2));
    let settled_kb = status_kb(mt.id(), "VmRSS:");
    let ran = Command::new(bin)
        .arg("version")
        .output()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    std::thread::sleep(Duration::from_secs(2));
    let after_kb = status_kb(mt.id(), "VmRSS:");
    let peak_kb = status_kb(mt.id(), "VmHWM:");
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(mt.id() as i32, libc::SIGTERM) };
    let _ = mt.wait();
    let line = line?;
    if !ran.status.success() {
        return Err(format!(
            "{} version failed under map-trace: {}",
            bin.display(),
            ran.status
        ));
    }
    let size = std::fs::metadata(bin).map(|m| m.len()).unwrap_or(0);
    Ok(json!({
        "binary": bin.display().to_string(),
        "binary_mb": size as f64 / 1048576.0,
        "rss_watching_mb": settled_kb as f64 / 1024.0,
        "rss_after_a_process_mb": after_kb as f64 / 1024.0,
        "peak_rss_mb": peak_kb as f64 / 1024.0,
        "line": line,
    }))
}

fn print_table(r: &Value) {
    println!(
        "map-trace overhead ({} {} maps, median of {} rounds)\n",
        r["go"].as_str().unwrap_or("?"),
        r["map_impl"].as_str().unwrap_or("?"),
        r["rounds"]
    );
    print_probe_costs(r["probe_cost"].as_array().map_or(&[][..], Vec::as_slice));
    let s = &r["service"];
    println!(
        "\nservice workload, {} requests: plain {:.1} ms, traced {:.1} ms ({:.2}x), -race {:.1} ms ({:.2}x)",
        s["requests"],
        s["plain_ms"].as_f64().unwrap_or(0.0),
        s["traced_ms"].as_f64().unwrap_or(0.0),
        s["traced_over_plain"].as_f64().unwrap_or(0.0),
        s["race_ms"].as_f64().unwrap_or(0.0),
        s["race_over_plain"].as_f64().unwrap_or(0.0),
    );
    println!(
        "  (traced - plain) / (race - plain) = {:.3}   traps per map call = {:.3}",
        s["overhead_vs_race"].as_f64().unwrap_or(0.0),
        s["traps_per_map_call"].as_f64().unwrap_or(0.0),
    );
    let per_request =
        |v: &Value| v["traps_per_map_call"].as_f64().unwrap_or(0.0) * SERVICE_MAP_CALLS_PER_REQUEST;
    println!("  full: traps per request = {:.1}", per_request(s));
    for (name, l) in [
        ("--mode low-overhead", &s["low_overhead"]),
        ("--mode sentinel", &s["sentinel"]),
    ] {
        println!(
            "  {name}: traced {:.1} ms ({:.2}x); (traced - plain) / (race - plain) = {:.3}   traps per map call = {:.3}, per request = {:.1}",
            l["traced_ms"].as_f64().unwrap_or(0.0),
            l["traced_over_plain"].as_f64().unwrap_or(0.0),
            l["overhead_vs_race"].as_f64().unwrap_or(0.0),
            l["traps_per_map_call"].as_f64().unwrap_or(0.0),
            per_request(l),
        );
    }
    println!(
        "  --mode sentinel escalations in a run: {}",
        s["sentinel"]["escalations_in_a_run"]
    );
    let d = &r["duty_cycle"];
    println!(
        "  duty cycle {} over {} requests: {:.0} ns/request traced vs {:.0} plain; (traced - plain) / (race - plain) = {:.3}",
        d["cycle"].as_str().unwrap_or("?"),
        d["requests"],
        d["traced_ns_per_request"].as_f64().unwrap_or(0.0),
        d["plain_ns_per_request"].as_f64().unwrap_or(0.0),
        d["overhead_vs_race"].as_f64().unwrap_or(0.0),
    );
    println!(
        "  daemon: {:.1}% of a core, peak RSS {:.1} MB",
        s["daemon_cpu_share_of_a_core"].as_f64().unwrap_or(0.0) * 100.0,
        s["daemon_peak_rss_mb"].as_f64().unwrap_or(0.0),
    );
    let a = &r["attach"];
    println!(
        "attach: {:.0} ms from start to every probe attached on {} ({:.0} MB)",
        a["start_to_attached_ms"].as_f64().unwrap_or(0.0),
        a["binary"].as_str().unwrap_or("?"),
        a["binary_mb"].as_f64().unwrap_or(0.0),
    );
    let m = &r["memory"];
    println!(
        "memory watching {} ({:.0} MB): RSS {:.1} MB settled, {:.1} MB after one traced process, peak {:.1} MB during the analysis",
        m["binary"].as_str().unwrap_or("?"),
        m["binary_mb"].as_f64().unwrap_or(0.0),
        m["rss_watching_mb"].as_f64().unwrap_or(0.0),
        m["rss_after_a_process_mb"].as_f64().unwrap_or(0.0),
        m["peak_rss_mb"].as_f64().unwrap_or(0.0),
    );
}

/// The per-hit table: each program against the empty one at the same offset.
fn print_probe_costs(probes: &[Value]) {
    println!(
        "{:<16} {:>10} {:>8} {:>12} {:>12} {:>12} {:>10} {:>12} {:>14} {:>6}",
        "loop",
        "plain ns",
        "traps",
        "empty ns/hit",
        "entry ns/hit",
        "ours ns/hit",
        "ours/empty",
        "entry/after",
        "prog ns: empty",
        "ours"
    );
    for p in probes {
        println!(
            "{:<16} {:>10.1} {:>8.3} {:>12.0} {:>12.0} {:>12.0} {:>10.2} {:>12.2} {:>14.0} {:>6.0}",
            p["mode"].as_str().unwrap_or("?"),
            p["plain_ns_per_op"].as_f64().unwrap_or(0.0),
            p["traps_per_op"].as_f64().unwrap_or(0.0),
            p["empty_after_prologue_ns_per_hit"].as_f64().unwrap_or(0.0),
            p["empty_at_entry_ns_per_hit"].as_f64().unwrap_or(0.0),
            p["ours_ns_per_hit"].as_f64().unwrap_or(0.0),
            p["ours_over_empty"].as_f64().unwrap_or(0.0),
            p["entry_over_after_prologue"].as_f64().unwrap_or(0.0),
            p["empty_program_ns_per_run"].as_f64().unwrap_or(0.0),
            p["ours_program_ns_per_run"].as_f64().unwrap_or(0.0),
        );
    }
}
