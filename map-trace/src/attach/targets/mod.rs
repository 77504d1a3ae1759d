//! The processes being traced and the executables they run: attach when a process is found,
//! detach and forget it when it exits.
//!
//! Probes belong to an executable. A file named by `--exe` gets one set of links for all its
//! processes, present and future (the kernel shares one breakpoint per file offset), so a process
//! it starts is traced from its first instruction; an explicit `--pid` of another file gets links
//! scoped to that process, so its siblings pay nothing.
//!
//! Each binary keeps its file open and is always attached through that descriptor, so the
//! offsets found in a file go to that very file, never to whatever a path names by then; its
//! content fingerprint says when the file was rewritten in place (`deploy.rs`).

mod deploy;
mod describe;
mod duty;
mod escalate;
mod exits;
mod follow;

pub use escalate::Escalations;
pub use follow::{Follow, PathFilter, Skipped};

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::attach::Bpf;
use aya::programs::uprobe::UProbeScope;
use gobin::elf::Segments;
use map_trace_common::config::config_slot;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

use super::detach::Detaching;
use super::exec_guard::{ExecGuard, Fingerprint, file_id, stamp};
use super::probes::{self as attach, AttachError, Link};
use crate::discover::exe_match::{ExeSpec, FileId};
use crate::discover::process;
use crate::error::{TargetError, TraceError};
use crate::plan::GoTarget;
use crate::plan::IterationMode;
use crate::resolve::{BinaryInfo, ProcessInfo, Resolver};
use describe::{describe, give_back_freed_memory, warnings};

/// A file to analyse: its identity and content, where to open it, and how to name it.
struct FileAt<'a> {
    file: FileId,
    fingerprint: Fingerprint,
    path: &'a Path,
    name: &'a Path,
}

impl<'a> FileAt<'a> {
    fn new(file: FileId, fingerprint: Fingerprint, path: &'a Path) -> Self {
        FileAt {
            file,
            fingerprint,
            path,
            name: path,
        }
    }
}

/// One executable with probes planned for it.
struct Binary {
    /// The cookie its links carry and its key in the kernel's `CONFIG`.
    id: u32,
    /// File name, for the bounded `exe` metric label.
    name: String,
    target: GoTarget,
    info: Arc<BinaryInfo>,
    segments: Segments,
    /// Links every process of the file shares (`--exe`); None when each process has its own.
    /// Empty while suspended.
    shared: Option<Vec<Link>>,
    procs: usize,
    /// The analysed file, open: every link is attached through it (`/proc/self/fd/N`).
    open: std::fs::File,
    /// Its content when analysed; links are valid for this content only.
    fingerprint: Fingerprint,
    /// Sentinel mode: its escalations.
    sentinel: escalate::Sentinel,
}

impl Binary {
    /// A path to exactly the analysed file, whatever is at its name now.
    fn fd_path(&self) -> PathBuf {
        use std::os::fd::AsRawFd as _;
        PathBuf::from(format!("/proc/self/fd/{}", self.open.as_raw_fd()))
    }

    /// Attaches every planned probe through the analysed file itself, for `scope`.
    fn attach(
        &self,
        ebpf: &mut Bpf,
        scope: UProbeScope,
        mode: IterationMode,
    ) -> Result<Vec<Link>, AttachError> {
        attach::attach_binary(ebpf, &self.target, self.id, &self.fd_path(), scope, mode)
    }
}

struct Proc {
    file: FileId,
    /// Links scoped to this process alone (explicit `--pid` of a file no `--exe` names).
    links: Vec<Link>,
    explicit: bool,
    /// Waits on the process's pidfd; aborting it closes the fd.
    watch: JoinHandle<()>,
}

/// A process now traced, for the start-up line.
pub struct Attached {
    pub pid: u32,
    pub exe: PathBuf,
    pub description: String,
    pub probes: usize,
    pub shared: bool,
    /// Said once per executable.
    pub warnings: Vec<String>,
}

pub struct Targets {
    specs: Vec<ExeSpec>,
    binaries: HashMap<FileId, Binary>,
    procs: HashMap<u32, Proc>,
    /// Files an `--exe` process ran that cannot be traced, at the content found untraceable,
    /// so each exec of them is not analysed again (the failure was counted and said once).
    rejected: HashMap<FileId, (Fingerprint, String)>,
    next_id: u32,
    exits: UnboundedSender<u32>,
    /// In the off part of a duty cycle: nothing is attached, everything is remembered.
    suspended: bool,
    /// Exited processes whose kernel entries are still to be removed (`reap`).
    dead: HashSet<u32>,
    mode: IterationMode,
    /// Holds execs of watched files until their probes match (`exec_guard`). Without it,
    /// probes are attached only while a process runs the file: a file cannot be rewritten
    /// while it runs (ETXTBSY), so no stale probe can meet new code, at the price of each
    /// process's first instructions going untraced.
    guard: Option<ExecGuard>,
    /// Processes detached because their file's probes were retired, to be looked at again.
    readd: Vec<u32>,
    /// Links closing in the background (`detach`), waited for where they must be gone.
    closing: Vec<Detaching>,
    /// Executables analysed so far, again after a change included.
    pub analysed: u64,
    /// Sentinel mode: how long and how often a binary gets the full probes.
    escalation: crate::config::Escalation,
    /// `map-trace run` and `--all`: processes no `--exe` names are followed (`follow.rs`).
    follow: Option<Follow>,
    skipped: Skipped,
}

impl Targets {
    pub fn new(
        specs: Vec<ExeSpec>,
        exits: UnboundedSender<u32>,
        mode: IterationMode,
        guard: Option<ExecGuard>,
    ) -> Self {
        Targets {
            specs,
            binaries: HashMap::new(),
            procs: HashMap::new(),
            rejected: HashMap::new(),
            next_id: 1,
            exits,
            suspended: false,
            dead: HashSet::new(),
            mode,
            guard,
            readd: Vec::new(),
            closing: Vec::new(),
            analysed: 0,
            escalation: Default::default(),
            follow: None,
            skipped: Skipped::default(),
        }
    }

    /// The exec guard, handed over at shutdown: it must outlive every probe.
    pub fn take_guard(&mut self) -> Option<ExecGuard> {
        self.guard.take()
    }

    pub fn guard_counts(&self) -> Option<&super::exec_guard::GuardCounts> {
        self.guard.as_ref().map(|g| &*g.counts)
    }

    /// Whether probes may stay on a file nothing runs (the exec guard is there).
    fn guarded(&self) -> bool {
        self.guard.is_some()
    }

    pub fn watches_executables(&self) -> bool {
        !self.specs.is_empty() || self.follow.is_some()
    }

    /// Explicit `--pid` targets still running.
    pub fn explicit_running(&self) -> usize {
        self.procs.values().filter(|p| p.explicit).count()
    }

    /// A fresh binary id whose `CONFIG` slot no binary kept here holds (ids are never reused:
    /// probes of a binary being let go may still fire with its id, and find no settings).
    fn next_config_id(&mut self) -> u32 {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1).max(1);
            let taken = self
                .binaries
                .values()
                .any(|b| config_slot(b.id) == config_slot(id));
            if !taken {
                return id;
            }
        }
    }

    /// Binaries with settings in the kernel's `CONFIG`.
    pub fn binaries(&self) -> usize {
        self.binaries.len()
    }

    pub fn processes(&self) -> usize {
        self.procs.len()
    }

    pub fn links(&self) -> usize {
        self.binaries
            .values()
            .map(|b| b.shared.as_ref().map_or(0, Vec::len) + b.sentinel.links())
            .sum::<usize>()
            + self.procs.values().map(|p| p.links.len()).sum::<usize>()
    }

    pub fn is_traced(&self, pid: u32) -> bool {
        self.procs.contains_key(&pid)
    }

    /// The file name of a traced process's executable.
    pub fn exe_name(&self, pid: u32) -> Option<&str> {
        let p = self.procs.get(&pid)?;
        self.binaries.get(&p.file).map(|b| b.name.as_str())
    }

    /// The file name of a binary by its id.
    pub fn binary_name(&self, id: u32) -> Option<&str> {
        self.binaries
            .values()
            .find(|b| b.id == id)
            .map(|b| b.name.as_str())
    }

    /// Attaches to the file an `--exe` names on this host, before any process of it is seen,
    /// so processes it starts later are traced from their first instruction. Returns what to
    /// tell the user.
    pub fn watch(
        &mut self,
        ebpf: &mut Bpf,
        resolver: &mut Resolver,
        spec: usize,
    ) -> Result<String, TraceError> {
        let path = self.specs[spec].path.clone();
        let Ok(meta) = std::fs::metadata(&path) else {
            return Ok(format!(
                "{}: no such file on this host; processes that run it inside their own root (containers) will be traced",
                path.display()
            ));
        };
        let (file, fp) = stamp(&path, &meta);
        let new = self.binary(ebpf, resolver, FileAt::new(file, fp, &path))?;
        if !self.guarded() {
            // Analysed (a bad file is said now), attached when a process runs it.
            let b = &self.binaries[&file];
            return Ok(format!(
                "watching {} ({}): {} probes, attached to each process of this file when it starts",
                path.display(),
                describe(&b.target, self.mode),
                b.target.probes_for(self.mode).count()
            ));
        }
        if let Err(e) = self.share(ebpf, file) {
            if new {
                self.drop_binary(ebpf, resolver, file).in_background();
            }
            return Err(e.into());
        }
        self.settle();
        let b = &self.binaries[&file];
        let mut msg = format!(
            "watching {} ({}): {} probes attached for every process of this file",
            path.display(),
            describe(&b.target, self.mode),
            b.target.probes_for(self.mode).count()
        );
        for w in warnings(b) {
            msg.push_str(&format!("\nmap-trace: warning: {w}"));
        }
        Ok(msg)
    }

    /// Starts tracing `pid`: always when `explicit`, else only when an `--exe` names what it
    /// runs. Ok(None): not a target, or already traced.
    pub fn add(
        &mut self,
        ebpf: &mut Bpf,
        resolver: &mut Resolver,
        pid: u32,
        explicit: bool,
    ) -> Result<Option<Attached>, TraceError> {
        if self.procs.contains_key(&pid) {
            return Ok(None);
        }
        let proc = match process::resolve(pid) {
            Ok(p) => p,
            Err(e) if explicit => return Err(e.into()),
            // Kernel threads, processes gone meanwhile: not ours to report.
            Err(_) => return Ok(None),
        };
        let meta = match std::fs::metadata(&proc.host_path) {
            Ok(m) => m,
            Err(e) if explicit => return Err(TargetError::from_io(&proc.host_path, e).into()),
            Err(_) => return Ok(None),
        };
        let matched = self
            .specs
            .iter()
            .any(|s| s.matches(&proc.exe, file_id(&meta)));
        // The stamp's content part opens the file: only for one that may become a target.
        // Opening every exec'd file met other tracers' exec guards (another map-trace holding
        // that file): each such open waits for that daemon's main loop, which may itself be
        // opening one of ours, and two daemons held each other's main loop for seconds.
        if !explicit && !matched && self.follow.is_none() {
            return Ok(None);
        }
        let (file, fp) = stamp(&proc.host_path, &meta);
        let rejected = self.rejected.get(&file).is_some_and(|(at, _)| *at == fp);
        if !explicit
            && (rejected
                || !(matched
                    || self.follow_admits(ebpf, resolver, &proc.exe, &proc.host_path, file, fp)))
        {
            return Ok(None);
        }
        // Watch for the exit before attaching, so a process that dies meanwhile is noticed.
        let pidfd = exits::pidfd_open(pid).map_err(|e| match e.raw_os_error() {
            Some(libc::ESRCH) => TraceError::Target(TargetError::PidMissing { pid }),
            _ => TraceError::Other(format!("pidfd_open({pid}): {e}")),
        })?;
        let new = match self.binary(ebpf, resolver, FileAt::new(file, fp, &proc.host_path)) {
            Ok(new) => new,
            Err(e) => {
                if !explicit {
                    self.rejected.insert(file, (fp, e.to_string()));
                    self.settle();
                }
                return Err(e);
            }
        };
        match self.attach_process(ebpf, resolver, pid, file, matched, pidfd) {
            Ok(links) => {
                let b = self.binaries.get_mut(&file).expect("binary just added");
                b.procs += 1;
                let attached = Attached {
                    pid,
                    exe: proc.exe,
                    description: describe(&b.target, self.mode),
                    probes: b.target.probes_for(self.mode).count(),
                    shared: b.shared.is_some(),
                    warnings: if new { warnings(b) } else { Vec::new() },
                };
                let watch = self.spawn_watch(pid, links.1);
                self.procs.insert(
                    pid,
                    Proc {
                        file,
                        links: links.0,
                        explicit,
                        watch,
                    },
                );
                self.settle();
                Ok(Some(attached))
            }
            Err(e) => {
                if new {
                    self.drop_binary(ebpf, resolver, file).in_background();
                }
                Err(e)
            }
        }
    }

    fn attach_process(
        &mut self,
        ebpf: &mut Bpf,
        resolver: &mut Resolver,
        pid: u32,
        file: FileId,
        matched: bool,
        pidfd: OwnedFd,
    ) -> Result<(Vec<Link>, OwnedFd), TraceError> {
        // Read while the process surely runs: its findings may arrive after it died.
        let bias = {
            let b = &self.binaries[&file];
            process::process_load_bias(pid, &b.fd_path(), |off| b.segments.vaddr_of_offset(off))?
        };
        if matched {
            self.share(ebpf, file)?;
        }
        let b = &self.binaries[&file];
        let links = match b.shared {
            Some(_) => Vec::new(),
            None if self.suspended => Vec::new(),
            None => {
                let scope = std::num::NonZeroU32::new(pid)
                    .map_or(UProbeScope::AllProcesses, UProbeScope::OneProcess);
                b.attach(ebpf, scope, self.mode)?
            }
        };
        resolver.add_process(
            pid,
            ProcessInfo::new(pid, b.info.clone(), bias).located(pid),
        );
        Ok((links, pidfd))
    }

    /// The binary at `file` with content `fp`, analysed and configured in the kernel if new;
    /// true when new. A binary analysed at other content is retired first, with its probes.
    fn binary(
        &mut self,
        ebpf: &mut Bpf,
        resolver: &mut Resolver,
        at: FileAt<'_>,
    ) -> Result<bool, TraceError> {
        let FileAt {
            file,
            fingerprint: fp,
            path,
            name,
        } = at;
        match self.binaries.get(&file) {
            Some(b) if b.fingerprint == fp => return Ok(false),
            Some(_) => {
                // Processes started since the change run the new content: found again later.
                let pids = self.retire(ebpf, resolver, file);
                self.readd.extend(pids);
            }
            None => {}
        }
        if self.binaries.len() >= map_trace_common::config::MAX_BINARIES as usize {
            return Err(TraceError::Other(format!(
                "{}: already tracing {} executables, the most map-trace handles at once",
                name.display(),
                self.binaries.len()
            )));
        }
        // Opened once: the stamp, the analysis and every attach are of this one file.
        let (open, fingerprint, image) = deploy::open_binary(path, name, file)?;
        self.analysed += 1;
        let target = GoTarget::analyze_image(&image)?;
        let info = Arc::new(BinaryInfo::new(&image, &target)?.mapped_from(&open, &image));
        // What the analysis read stays in the page cache; symbolizing faults in what it needs.
        image.backing().release_resident();
        let segments = image.segments();
        drop(image);
        give_back_freed_memory();
        let id = self.next_config_id();
        let sentinel = self.mode == IterationMode::Sentinel
            && target.effective_mode(self.mode) == IterationMode::Sentinel;
        attach::write_config(ebpf, &target, id, sentinel)?;
        resolver.add_binary(id, info.clone(), target.elf.pie);
        let name = name.file_name().map_or_else(
            || name.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        self.binaries.insert(
            file,
            Binary {
                id,
                name,
                target,
                info,
                segments,
                shared: None,
                procs: 0,
                open,
                fingerprint,
                sentinel: escalate::Sentinel::new(Self::changes_now(ebpf, id)),
            },
        );
        if let Some(g) = &self.guard {
            use std::os::fd::AsFd as _;
            // Best effort: the directory marks cover the usual case without it.
            let _ = g.mark_file(self.binaries[&file].open.as_fd());
        }
        Ok(true)
    }

    /// Gives the binary links shared by all its processes, if it has none yet; processes of it
    /// that had links of their own drop them, so no operation traps twice.
    fn share(&mut self, ebpf: &mut Bpf, file: FileId) -> Result<(), AttachError> {
        let b = self.binaries.get_mut(&file).expect("binary analysed first");
        if b.shared.is_some() {
            return Ok(());
        }
        b.shared = Some(match self.suspended {
            true => Vec::new(),
            false => b.attach(ebpf, UProbeScope::AllProcesses, self.mode)?,
        });
        // The shared links trap already; a process's own ones may double a hit meanwhile.
        for p in self.procs.values_mut().filter(|p| p.file == file) {
            let d = attach::detach(ebpf, std::mem::take(&mut p.links));
            self.closing.push(d);
        }
        Ok(())
    }

    /// Forgets a binary: its settings at once, its shared links in the background (wait on
    /// the result where stale probes could meet new content).
    fn drop_binary(&mut self, ebpf: &mut Bpf, resolver: &mut Resolver, file: FileId) -> Detaching {
        let Some(mut b) = self.binaries.remove(&file) else {
            return Detaching::none();
        };
        resolver.remove_binary(b.id);
        // Settings first: a probe still attached while its link closes finds none and returns.
        attach::forget_binary(ebpf, b.id);
        let mut links = Self::take_escalation(&mut b);
        links.extend(b.shared.take().unwrap_or_default());
        let detaching = attach::detach(ebpf, links);
        if let Some(g) = &self.guard {
            use std::os::fd::AsFd as _;
            g.unmark_file(b.open.as_fd());
        }
        // Closing `open` lets a deleted file's blocks go.
        detaching
    }

    /// A process exec'd: trace it if an `--exe` names what it runs now; forget it if it was
    /// traced and now runs something else.
    pub fn on_exec(
        &mut self,
        ebpf: &mut Bpf,
        resolver: &mut Resolver,
        pid: u32,
    ) -> Result<Option<Attached>, TraceError> {
        if let Some(p) = self.procs.get(&pid) {
            let now = process::resolve(pid)
                .ok()
                .and_then(|e| FileId::of(&e.host_path).ok());
            // Gone already: a stale notice (the pid's previous owner exec'd, then the number
            // was reused) or one read late. Its pidfd reports the exit.
            let Some(now) = now else {
                return Ok(None);
            };
            if now == p.file {
                return Ok(None);
            }
            let explicit = p.explicit;
            self.remove(ebpf, resolver, pid);
            if explicit {
                // The user named this process: it stays a target whatever it runs now.
                return self.add(ebpf, resolver, pid, true);
            }
        }
        self.add(ebpf, resolver, pid, false)
    }

    /// Keeps `d` until its links are closed, and lets go of those already closed (a daemon
    /// that sees a million processes exit must not keep a million handles).
    fn keep_closing(&mut self, d: Detaching) {
        self.closing.retain(|c| !c.is_done());
        if !d.is_done() {
            self.closing.push(d);
        }
    }

    /// Waits for every link being closed: where probes of an old content must be gone.
    pub(super) fn wait_closed(&mut self) {
        self.closing.drain(..).for_each(Detaching::wait);
    }
}
