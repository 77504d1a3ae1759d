//! `map-trace --pid N`: attach, poll findings and counters, stop cleanly.

pub mod attach;
pub mod sweep;

use std::io::Write as _;
use std::os::fd::{FromRawFd as _, OwnedFd};
use std::time::Duration;

use aya::Ebpf;
use aya::maps::{MapData, PerCpuArray, RingBuf};
use map_trace_common::event::{Finding, FindingKind, counter};
use map_trace_common::probe::Role;
use tokio::io::unix::AsyncFd;

use crate::error::TargetError;
use crate::report::{Clock, Report, Summary};
use crate::target::analysis::GoTarget;
use crate::target::process;

/// How findings are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
}

pub struct Options {
    pub pids: Vec<u32>,
    pub duration: Option<Duration>,
    pub format: Format,
}

/// Why tracing stopped.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    Signal(&'static str),
    Duration,
    TargetsExited,
}

/// Errors of a tracing session, each with an exit code.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Attach(#[from] attach::AttachError),
    #[error("{0}")]
    Other(String),
}

impl TraceError {
    pub fn exit_code(&self) -> u8 {
        match self {
            TraceError::Target(e) => e.exit_code(),
            TraceError::Attach(_) => 12,
            TraceError::Other(_) => 1,
        }
    }
}

fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall; on success the kernel returns a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

pub fn run(opts: Options) -> Result<(), TraceError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| TraceError::Other(format!("starting the runtime: {e}")))?;
    rt.block_on(session(opts))
}

async fn session(opts: Options) -> Result<(), TraceError> {
    // Before attaching: a signal that arrives once probes are in must detach them, not kill us
    // with the default action.
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| TraceError::Other(format!("SIGINT handler: {e}")))?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| TraceError::Other(format!("SIGTERM handler: {e}")))?;
    let mut ebpf = attach::load()?;
    let (exits_tx, mut exits) = tokio::sync::mpsc::unbounded_channel();
    for &pid in &opts.pids {
        let proc = process::resolve(pid)?;
        // Watch for the exit before attaching, so a process that dies meanwhile is noticed.
        let pidfd = pidfd_open(pid).map_err(|e| match e.raw_os_error() {
            Some(libc::ESRCH) => TraceError::Target(TargetError::PidMissing { pid }),
            _ => TraceError::Other(format!("pidfd_open({pid}): {e}")),
        })?;
        let target = GoTarget::analyze(&proc.host_path)?;
        let n = attach::attach_process(&mut ebpf, &target, pid, &proc.host_path)?;
        eprintln!(
            "map-trace: tracing pid {pid} ({}): {} {} {} maps, {n} probes attached",
            proc.exe.display(),
            target.version,
            target.elf.arch,
            target.map_impl.name()
        );
        for w in &target.warnings {
            eprintln!("map-trace: warning: {w}");
        }
        // SAFETY: the OwnedFd moves into the AsyncFd, which keeps it open until dropped.
        let pidfd =
            unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
                .map_err(|e| {
                    TraceError::Other(format!("watching pid {pid}: {}", e.into_parts().1))
                })?;
        // A pidfd becomes readable when its process exits.
        let exits = exits_tx.clone();
        tokio::spawn(async move {
            let _ = pidfd.readable().await;
            let _ = exits.send(pid);
        });
    }
    let mut running = opts.pids.len();

    let mut ring = RingBuf::try_from(
        ebpf.take_map("FINDINGS")
            .ok_or(attach::AttachError::Missing("FINDINGS"))?,
    )
    .map_err(|e| TraceError::Other(format!("ring buffer: {e}")))?;
    let clock = Clock::now();
    let mut summary = Summary::default();
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

    let stop = loop {
        tokio::select! {
            _ = poll.tick() => drain(&mut ring, &clock, opts.format, &mut summary, &mut out),
            _ = sweep_tick.tick() => sweep::sweep(&mut ebpf, crate::report::monotonic_ns()),
            _ = sigint.recv() => break Stop::Signal("SIGINT"),
            _ = sigterm.recv() => break Stop::Signal("SIGTERM"),
            _ = &mut deadline => break Stop::Duration,
            Some(pid) = exits.recv() => {
                eprintln!("map-trace: pid {pid} exited");
                running -= 1;
                if running == 0 {
                    break Stop::TargetsExited;
                }
            }
        }
    };
    // Findings emitted just before a target died (e.g. of Go's own fatal error) are still in
    // the ring buffer: drain it before detaching.
    drain(&mut ring, &clock, opts.format, &mut summary, &mut out);
    read_counters(&ebpf, &mut summary);
    drop(ebpf); // detaches every probe
    let _ = out.flush();
    match stop {
        Stop::Signal(s) => eprintln!("map-trace: {s}: detached"),
        Stop::Duration => eprintln!("map-trace: duration elapsed: detached"),
        Stop::TargetsExited => {}
    }
    eprint!("{}", summary.to_human());
    Ok(())
}

fn drain(
    ring: &mut RingBuf<MapData>,
    clock: &Clock,
    format: Format,
    summary: &mut Summary,
    out: &mut impl std::io::Write,
) {
    while let Some(item) = ring.next() {
        let bytes: &[u8] = &item;
        if bytes.len() < std::mem::size_of::<Finding>() {
            summary.undecodable += 1;
            continue;
        }
        // SAFETY: Finding is plain old data and the record is at least its size.
        let f: Finding = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        match Report::decode(&f, clock) {
            Some(r) => {
                let line = match format {
                    Format::Human => r.to_human(),
                    Format::Json => r.to_json() + "\n",
                };
                let _ = out.write_all(line.as_bytes());
            }
            None => summary.undecodable += 1,
        }
    }
    let _ = out.flush();
}

fn read_counters(ebpf: &Ebpf, summary: &mut Summary) {
    let Some(map) = ebpf.map("COUNTERS") else {
        return;
    };
    let Ok(counters) = PerCpuArray::<_, u64>::try_from(map) else {
        return;
    };
    let get = |i: u32| -> u64 { counters.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0) };
    for role in Role::ALL {
        summary.hits.insert(role, get(counter::HITS + role as u32));
    }
    for kind in FindingKind::ALL {
        let n = get(counter::FINDINGS + kind as u32);
        if n > 0 {
            summary.findings.insert(kind, n);
        }
    }
    summary.findings_dropped = get(counter::FINDINGS_DROPPED);
    summary.tables_full =
        get(counter::ITERS_FULL) + get(counter::MAPS_FULL) + get(counter::PENDING_FULL);
    summary.writes_unseen = get(counter::WRITES_UNSEEN);
    summary.writes_during_growth = get(counter::WRITES_DURING_GROWTH);
}
