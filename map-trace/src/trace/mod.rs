//! `map-trace --pid N`: attach, poll findings and counters, stop cleanly.

pub mod attach;
pub mod resolve;
pub mod sweep;

use std::io::Write as _;
use std::os::fd::{FromRawFd as _, OwnedFd};
use std::time::Duration;

use aya::Ebpf;
use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use map_trace_common::event::{Finding, FindingKind, counter};
use map_trace_common::probe::Role;
use tokio::io::unix::AsyncFd;

use crate::error::TargetError;
use crate::group::{Groups, Seen};
use crate::report::{Clock, Report, Summary, TopFinding};
use crate::target::analysis::GoTarget;
use crate::target::elf::ElfImage;
use crate::target::process;
use resolve::{ProcessInfo, Resolver};

/// Least time between two "seen again" lines of one finding group in the human output.
const UPDATE_EVERY: Duration = Duration::from_secs(5);
/// Finding groups listed in the exit summary.
const TOP_FINDINGS: usize = 10;

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
    let stacks = BpfHashMap::try_from(
        ebpf.take_map("STACKS")
            .ok_or(attach::AttachError::Missing("STACKS"))?,
    )
    .map_err(|e| TraceError::Other(format!("stack table: {e}")))?;
    let mut resolver = Resolver::new(stacks);
    let (exits_tx, mut exits) = tokio::sync::mpsc::unbounded_channel();
    for &pid in &opts.pids {
        let proc = process::resolve(pid)?;
        // Watch for the exit before attaching, so a process that dies meanwhile is noticed.
        let pidfd = pidfd_open(pid).map_err(|e| match e.raw_os_error() {
            Some(libc::ESRCH) => TraceError::Target(TargetError::PidMissing { pid }),
            _ => TraceError::Other(format!("pidfd_open({pid}): {e}")),
        })?;
        let image = ElfImage::open(&proc.host_path)?;
        let target = GoTarget::analyze_image(&image)?;
        // Read while the process surely runs: its findings may arrive after it died.
        let bias =
            process::process_load_bias(pid, &proc.host_path, |off| image.vaddr_of_offset(off))?;
        let info = ProcessInfo::new(pid, &image, &target, bias)?;
        let types_warning = info.types_warning();
        resolver.add_process(pid, info);
        let n = attach::attach_process(&mut ebpf, &target, pid, &proc.host_path)?;
        eprintln!(
            "map-trace: tracing pid {pid} ({}): {} {} {} maps, {n} probes attached",
            proc.exe.display(),
            target.version,
            target.elf.arch,
            target.map_impl.name()
        );
        for w in target.warnings.iter().chain(&types_warning) {
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

    let mut sink = Sink {
        clock: &clock,
        format: opts.format,
        summary: &mut summary,
        groups: &mut groups,
        resolver: &mut resolver,
    };
    let stop = loop {
        tokio::select! {
            _ = poll.tick() => {
                sink.drain(&mut ring, &mut out, false);
            }
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
    sink.drain(&mut ring, &mut out, true);
    read_counters(&ebpf, &mut summary);
    summary.stacks_lost = resolver.lost;
    summary.ungrouped = groups.overflow;
    summary.top = groups
        .top(TOP_FINDINGS)
        .into_iter()
        .map(|g| TopFinding {
            latest: g.latest.clone(),
            first: g.first,
            last: g.last,
        })
        .collect();
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

/// Where findings go: resolved, grouped, printed.
struct Sink<'a> {
    clock: &'a Clock,
    format: Format,
    summary: &'a mut Summary,
    groups: &'a mut Groups,
    resolver: &'a mut Resolver,
}

impl Sink<'_> {
    /// Prints every finding waiting in the ring buffer; in human output, new groups in full and
    /// repeats as rate-limited count updates (all pending ones with `last`).
    fn drain(&mut self, ring: &mut RingBuf<MapData>, out: &mut impl std::io::Write, last: bool) {
        while let Some(item) = ring.next() {
            let bytes: &[u8] = &item;
            if bytes.len() < std::mem::size_of::<Finding>() {
                self.summary.undecodable += 1;
                continue;
            }
            // SAFETY: Finding is plain old data and the record is at least its size.
            let f: Finding = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
            let Some(mut r) = Report::decode(&f, self.clock) else {
                self.summary.undecodable += 1;
                continue;
            };
            self.resolver.resolve(&mut r);
            let seen = self.groups.record(&mut r);
            let text = match (self.format, seen) {
                (Format::Json, _) => r.to_json() + "\n",
                (Format::Human, Seen::New | Seen::Overflow) => r.to_human(),
                (Format::Human, Seen::Repeat) => continue,
            };
            let _ = out.write_all(text.as_bytes());
        }
        if self.format == Format::Human {
            for r in self.groups.due_updates(std::time::SystemTime::now(), last) {
                let _ = out.write_all(r.to_human_update().as_bytes());
            }
        }
        let _ = out.flush();
    }
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
    summary.stacks = get(counter::STACKS);
    summary.stacks_truncated = get(counter::STACKS_TRUNCATED);
    summary.stacks_unreadable = get(counter::STACKS_UNREADABLE);
}
