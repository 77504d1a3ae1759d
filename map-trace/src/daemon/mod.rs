//! The daemon, `map-trace --pid N` / `--exe PATH`: owns the loop that drives every stage —
//! attach, poll findings and counters, follow processes as they start and exit, serve metrics,
//! stop cleanly. `session` is what the loop does per event, `startup` what is checked before
//! anything is loaded.

pub mod command;
mod session;
mod startup;
mod turns;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aya::maps::HashMap as BpfHashMap;
use map_trace_common::program::map;
use tokio::io::unix::AsyncFd;

use crate::attach::targets::Targets;
use crate::attach::{exec_guard, kernel_features, path_watch, probes as attach, sweep};
use crate::config::Settings;
use crate::discover::exe_match::{self, ExeSpec};
use crate::discover::process;
use crate::error::{MAX_MESSAGE_CHARS, TraceError, one_line};
use crate::events::execs::{drain_execs, next_exec};
use crate::events::ring;
use crate::events::sink::{Sink, read_counters};
use crate::metrics::Metrics;
use crate::metrics::health::Health;
use crate::output::group::Groups;
use crate::output::{Clock, Summary, TopFinding, sarif};
use crate::resolve::Resolver;
use session::{Session, adopt, announce};
pub use startup::precheck;
use startup::{bind_failure, listen};

/// Least time between two "seen again" lines of one finding group in the human output.
const UPDATE_EVERY: Duration = Duration::from_secs(5);
/// Finding groups listed in the exit summary.
const TOP_FINDINGS: usize = 10;

/// Why tracing stopped.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    Signal(&'static str),
    Duration,
    TargetsExited,
    /// `run`: the command exited.
    Command(std::process::ExitStatus),
}

/// Traces until stopped; returns the exit status (0, or under `run` the command's or 66).
pub fn run(opts: Settings) -> Result<u8, TraceError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| TraceError::Other(format!("starting the runtime: {e}")))?;
    rt.block_on(session(opts))
}

/// /healthz turns unhealthy when the main loop has not polled for this long.
const STALE_AFTER: Duration = Duration::from_secs(10);

async fn session(opts: Settings) -> Result<u8, TraceError> {
    // Before attaching: a signal that arrives once probes are in must detach them, not kill us
    // with the default action.
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| TraceError::Other(format!("SIGINT handler: {e}")))?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| TraceError::Other(format!("SIGTERM handler: {e}")))?;
    let metrics = Arc::new(Metrics::new(env!("CARGO_PKG_VERSION")));
    let health = Arc::new(Health::new());
    // Bound before anything is attached: a port in use is a start-up error, not a silent gap.
    let server = match opts.metrics_addr {
        Some(addr) => Some(serve_metrics(addr, &metrics, &health).await?),
        None => None,
    };

    let gone = kernel_features::missing(kernel_features::present, !opts.exes.is_empty());
    if !gone.is_empty() {
        return Err(TraceError::Kernel(kernel_features::describe(
            &gone,
            &kernel_features::release(),
        )));
    }
    if let Some(w) = kernel_features::fatal_warning(
        kernel_features::fatal_supported(),
        &kernel_features::release(),
    ) {
        eprintln!("map-trace: warning: {w}");
    }
    let mut ebpf = attach::load()?;
    // Before any probe can fire: repeats are folded in the kernel unless every occurrence is
    // wanted in full.
    attach::set_output(&mut ebpf, !opts.every_occurrence)?;
    attach::set_clock(&mut ebpf, crate::output::monotonic_ns())?;
    let stacks = BpfHashMap::try_from(
        ebpf.take_map(map::STACKS)
            .ok_or(attach::AttachError::Missing(map::STACKS))?,
    )
    .map_err(|e| TraceError::Other(format!("stack table: {e}")))?;
    let mut resolver = Resolver::new(stacks);
    let (exits_tx, mut exits) = tokio::sync::mpsc::unbounded_channel();
    let specs: Vec<ExeSpec> = opts.exes.iter().cloned().map(ExeSpec::new).collect();
    let (guard, mut held) = start_guard(&specs, &metrics);
    let mut paths = match specs.is_empty() {
        true => None,
        false => path_watch::PathWatch::new()
            .map_err(|e| eprintln!("map-trace: warning: not watching --exe paths for changes: {e}"))
            .ok(),
    };
    let mut targets = Targets::new(specs, exits_tx, opts.mode, guard);
    targets.set_escalation(opts.escalation);
    // `run`: its command's own cgroup, named to the exec tracepoint before it is attached.
    let cgroup = match &opts.command {
        Some(c) => {
            targets.follow(crate::attach::targets::Follow {
                toolchain: c.toolchain,
                max_binaries: map_trace_common::config::MAX_BINARIES as usize,
                ..Default::default()
            });
            command::prepare(&mut ebpf)
        }
        None => {
            if let Some(all) = &opts.all {
                // The toolchain's own commands are skipped here too: a build host's compiler
                // is not the service.
                targets.follow(crate::attach::targets::Follow {
                    toolchain: false,
                    filter: crate::attach::targets::PathFilter {
                        include: all.include.clone(),
                        exclude: all.exclude.clone(),
                    },
                    keep_idle: true,
                    max_binaries: all.max_binaries,
                });
            }
            None
        }
    };
    // The guard's marks before the first attach: an exec from now on waits for its probes.
    for e in targets.mark_dirs() {
        eprintln!("map-trace: warning: {e}");
    }
    if let Some(p) = paths.as_mut() {
        p.set(&targets.names());
    }
    // Exec notices first, then the /proc scan: a process started in between is seen twice
    // (harmless), never missed.
    let mut execs = if targets.watches_executables() {
        attach::watch_execs(&mut ebpf)?;
        let ring = ring(&mut ebpf, map::EXECS)?;
        // SAFETY: the ring buffer owns its fd and moves into the AsyncFd, which keeps it open
        // until dropped.
        let fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| TraceError::Other(format!("exec notices: {}", e.into_parts().1)))?;
        Some(fd)
    } else {
        None
    };
    for i in 0..opts.exes.len() {
        let msg = targets.watch(&mut ebpf, &mut resolver, i)?;
        eprintln!("map-trace: {msg}");
    }
    for &pid in &opts.pids {
        if let Some(a) = targets.add(&mut ebpf, &mut resolver, pid, true)? {
            announce(&a, &metrics);
        }
    }
    if !opts.exes.is_empty() || opts.all.is_some() {
        let me = std::process::id();
        for pid in exe_match::pids(Path::new("/proc")) {
            if pid != me {
                adopt(&mut targets, &mut ebpf, &mut resolver, &metrics, pid, false);
            }
        }
    }
    // Said once set up, so that a failure before is still one line.
    eprintln!(
        "map-trace: uprobes as {} (Linux {})",
        ebpf.link_kind(),
        kernel_features::release()
    );
    if opts.all.is_some() {
        // The line a supervisor or a test waits for: from here on every exec is seen.
        eprintln!(
            "map-trace: watching every Go process on this host: {} traced now, new ones as they start",
            targets.processes()
        );
    }

    let findings = ring(&mut ebpf, map::FINDINGS)?;
    let fatals = ring(&mut ebpf, map::FATALS)?;
    let repeats = ebpf
        .take_map(map::REPEATS)
        .and_then(|m| BpfHashMap::try_from(m).ok());
    let clock = Clock::now();
    let mut summary = Summary::default();
    let mut groups = Groups::new(UPDATE_EVERY);
    let mut out = std::io::stdout().lock();

    let deadline = async {
        match opts.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    // The ring buffer is polled, not woken per finding: cheap for the traced program.
    let mut poll = tokio::time::interval(Duration::from_millis(100));
    let mut sweep_tick = tokio::time::interval(Duration::from_secs(5));
    let mut metrics_tick = tokio::time::interval(Duration::from_secs(1));
    // Starts in the on part; never fires without a duty cycle.
    let duty = tokio::time::sleep(
        opts.duty_cycle
            .map_or(Duration::from_secs(365 * 86400), |d| d.on),
    );
    tokio::pin!(duty);
    let mut active = true;
    metrics.probes_active.set(1);
    if let Some(d) = opts.duty_cycle {
        eprintln!(
            "map-trace: duty cycle: probes attached {} of every {} ({:.0}% of the time)",
            humantime::format_duration(d.on),
            humantime::format_duration(d.period),
            d.fraction() * 100.0
        );
    }

    let mut session = Session {
        ebpf: &mut ebpf,
        targets: &mut targets,
        metrics: &metrics,
        sink: Sink {
            findings,
            fatals,
            clock: &clock,
            format: opts.format,
            every: opts.every_occurrence,
            summary: &mut summary,
            groups: &mut groups,
            resolver: &mut resolver,
            repeats,
            folded: Default::default(),
        },
        unfollowed: std::collections::HashSet::new(),
    };
    let mut child = match &opts.command {
        Some(c) => Some(command::start(c, cgroup.as_ref())?),
        None => None,
    };
    let child_pid = child.as_ref().and_then(tokio::process::Child::id);
    let mut forwarded = 0;
    let mut turns = turns::Turns::from_env();
    let stop = loop {
        turns.end();
        if !session.targets.watches_executables() && session.targets.explicit_running() == 0 {
            break Stop::TargetsExited;
        }
        tokio::select! {
            _ = poll.tick() => {
                turns.begin("poll");
                // An array slot's update cannot fail once the first one at load succeeded.
                let _ = attach::set_clock(session.ebpf, crate::output::monotonic_ns());
                session.drain(&mut out, false);
                session.escalate();
                health.beat();
            }
            Some(h) = next_held(&mut held) => {
                turns.begin("held exec");
                session.held(h, &mut out);
            }
            // At once: a new release directory must be marked before a symlink flips to it.
            () = changed(paths.as_mut()) => {
                turns.begin("path change");
                session.rescan(paths.as_mut(), &mut out);
            }
            ready = next_exec(&mut execs) => {
                turns.begin("exec notice");
                if let Ok(mut guard) = ready {
                    let notices = drain_execs(guard.get_inner_mut());
                    guard.clear_ready();
                    for n in notices {
                        // Under `run` without a cgroup every exec is announced: only the
                        // command's descendants are ours.
                        let ours = cgroup.is_some()
                            || child_pid.is_none_or(|root| process::descends_from(n.tgid, root));
                        if ours {
                            session.exec(n.tgid);
                        }
                        if n.held != 0 {
                            command::resume(n.tgid);
                        }
                    }
                }
            }
            _ = metrics_tick.tick() => {
                turns.begin("metrics");
                session.update_metrics();
            }
            () = &mut duty, if opts.duty_cycle.is_some() => {
                turns.begin("duty cycle");
                let d = opts.duty_cycle.expect("guarded");
                // Phases are timed from their start, so slow attaching does not stretch them.
                let started = tokio::time::Instant::now();
                active = !active;
                let next = if active {
                    for e in session.targets.resume(session.ebpf) {
                        eprintln!(
                            "map-trace: warning: attaching again: {}",
                            one_line(&e.to_string(), MAX_MESSAGE_CHARS)
                        );
                    }
                    d.on
                } else {
                    // Findings of the on part first, then nothing is attached.
                    session.drain(&mut out, false);
                    session.targets.suspend(session.ebpf);
                    d.period - d.on
                };
                metrics.probes_active.set(i64::from(active));
                session.update_metrics();
                duty.as_mut().reset(started + next);
            }
            _ = sweep_tick.tick() => {
                turns.begin("sweep");
                sweep::sweep(session.ebpf, crate::output::monotonic_ns());
                session.targets.find_orphans(session.ebpf, session.sink.resolver);
                // Also a backstop for changes inotify cannot see (another mount namespace).
                session.rescan(paths.as_mut(), &mut out);
            }
            _ = sigint.recv() => match command::forward_or_stop(child_pid, libc::SIGINT, &mut forwarded) {
                true => continue,
                false => break Stop::Signal("SIGINT"),
            },
            _ = sigterm.recv() => match command::forward_or_stop(child_pid, libc::SIGTERM, &mut forwarded) {
                true => continue,
                false => break Stop::Signal("SIGTERM"),
            },
            status = command::wait(&mut child) => {
                break Stop::Command(status);
            }
            _ = &mut deadline => break Stop::Duration,
            Some(pid) = exits.recv() => {
                turns.begin("exit");
                session.exited(pid, &mut out);
            }
        }
    };
    // `run`: the command's programs usually end before it does, and their exits may still be
    // queued behind its own: said, as they would have been.
    if matches!(stop, Stop::Command(_)) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        while let Ok(pid) = exits.try_recv() {
            session.exited(pid, &mut out);
        }
    }
    // Findings emitted just before a target died (e.g. of Go's own fatal error) are still in
    // the ring buffer: drain it before detaching.
    session.drain(&mut out, true);
    let kinds = session.sink.groups.kinds();
    session.update_metrics();
    read_counters(&ebpf, &mut summary);
    summary.stacks_lost = resolver.lost;
    summary.ungrouped = groups.overflow;
    if opts.mode == crate::plan::IterationMode::Sentinel {
        let m = &metrics.escalations;
        summary.escalations = Some((
            m.with_label_values(&["started"]).get(),
            m.with_label_values(&["deferred"]).get(),
        ));
    }
    summary.top = groups
        .top(TOP_FINDINGS)
        .into_iter()
        .map(|g| TopFinding {
            latest: g.latest.clone(),
            first: g.first,
            last: g.last,
        })
        .collect();
    // Out before detaching, which takes about a second on a busy host (each uprobe is
    // unregistered with an RCU grace period): the summary is what a stopped service is read by.
    let _ = out.flush();
    eprint!("{}", summary.to_human());
    let sarif_written = opts.sarif.as_ref().map(|path| {
        let root = opts
            .source_root
            .clone()
            .or_else(|| std::env::current_dir().ok())
            .unwrap_or_else(|| "/".into());
        let doc = sarif::document(
            &groups.all(),
            &root,
            env!("CARGO_PKG_VERSION"),
            groups.overflow,
        );
        sarif::write(path, &doc).map_err(|e| TraceError::sarif(path, &e))
    });
    drop(execs);
    // Every link closed at once (dropped with `ebpf` they close one by one, ~0.1 s each).
    targets.suspend(&mut ebpf);
    let guard = targets.take_guard();
    drop(targets);
    drop(ebpf);
    // Only now may held execs go on: nothing stale is left to meet them. Dropping the queue
    // lets the guard thread answer what it still holds, and the guard's fd closing answers
    // the rest in the kernel.
    drop(held);
    drop(guard);
    if let Some((stop, task)) = server {
        let _ = stop.send(());
        let _ = task.await;
    }
    let _ = out.flush();
    // Nothing of the command may stay stopped: a notice lost or unread left its exec held.
    if let Some(c) = &cgroup {
        c.pids().into_iter().for_each(command::resume);
    }
    let status = match &stop {
        Stop::Signal(s) => {
            eprintln!("map-trace: {s}: detached");
            None
        }
        Stop::Duration => {
            eprintln!("map-trace: duration elapsed: detached");
            None
        }
        Stop::TargetsExited => None,
        Stop::Command(status) => Some(*status),
    };
    // A command still running when tracing stopped: after the third signal it is killed with
    // all it started; after --duration it is waited for. Its status is the run's.
    let status = match (status, child.as_mut()) {
        (Some(s), _) => Some(s),
        (None, Some(c)) => {
            if matches!(stop, Stop::Signal(_)) {
                command::kill(c, cgroup.as_ref());
            }
            c.wait().await.ok()
        }
        (None, None) => None,
    };
    drop(cgroup);
    match sarif_written {
        Some(Err(e)) => return Err(e),
        Some(Ok(())) => {
            let path = opts.sarif.as_deref().unwrap_or(Path::new(""));
            eprintln!("map-trace: SARIF log written to {}", path.display());
        }
        None => {}
    }
    Ok(match (status, &opts.command) {
        (Some(s), Some(c)) => command::exit_code(s, c.fail_on, &kinds),
        _ => 0,
    })
}

type Server = (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
);

async fn serve_metrics(
    addr: SocketAddr,
    metrics: &Arc<Metrics>,
    health: &Arc<Health>,
) -> Result<Server, TraceError> {
    let listener = listen(addr).map_err(|e| TraceError::MetricsAddr {
        addr,
        why: bind_failure(&e),
    })?;
    // Port 0 means any free port: say the one we got.
    let addr = listener.local_addr().unwrap_or(addr);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(crate::metrics::http::serve(
        listener,
        metrics.clone(),
        health.clone(),
        STALE_AFTER,
        async {
            let _ = rx.await;
        },
    ));
    eprintln!("map-trace: serving metrics on http://{addr}/metrics");
    Ok((tx, task))
}

/// Starts the exec guard for `--exe` paths; without one (no fanotify permission events here),
/// says what that costs.
fn start_guard(
    specs: &[ExeSpec],
    metrics: &Metrics,
) -> (
    Option<exec_guard::ExecGuard>,
    Option<tokio::sync::mpsc::UnboundedReceiver<exec_guard::Held>>,
) {
    if specs.is_empty() {
        return (None, None);
    }
    match exec_guard::ExecGuard::start(specs.iter().map(|s| s.path.clone()).collect()) {
        Ok((g, rx)) => {
            metrics.exec_guard_active.set(1);
            (Some(g), Some(rx))
        }
        Err(e) => {
            eprintln!(
                "map-trace: warning: cannot hold execs of watched files ({e}; needs CAP_SYS_ADMIN and a kernel with CONFIG_FANOTIFY_ACCESS_PERMISSIONS): probes are attached to a process when it has started and removed when the last one exits, so a file redeployed in place never meets old probes, but each process's first instructions go untraced"
            );
            (None, None)
        }
    }
}

async fn next_held(
    held: &mut Option<tokio::sync::mpsc::UnboundedReceiver<exec_guard::Held>>,
) -> Option<exec_guard::Held> {
    match held {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn changed(paths: Option<&mut path_watch::PathWatch>) {
    match paths {
        Some(p) => p.changed().await,
        None => std::future::pending().await,
    }
}
