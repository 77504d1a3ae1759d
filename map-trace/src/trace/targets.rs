//! The processes being traced and the executables they run: attach when a process is found,
//! detach and forget it when it exits.
//!
//! Probes belong to an executable. A file named by `--exe` gets one set of links for all its
//! processes, present and future (the kernel shares one breakpoint per file offset), so a process
//! it starts is traced from its first instruction; an explicit `--pid` of another file gets links
//! scoped to that process, so its siblings pay nothing.

use std::collections::{HashMap, HashSet};
use std::os::fd::{FromRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aya::Ebpf;
use aya::programs::uprobe::UProbeScope;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

use super::attach::{self, AttachError, Link};
use super::resolve::{BinaryInfo, ProcessInfo, Resolver};
use super::{TraceError, sweep};
use crate::error::TargetError;
use crate::metrics::AttachFailure;
use crate::plan::IterationMode;
use crate::target::analysis::GoTarget;
use crate::target::elf::{ElfImage, Segments};
use crate::target::exe_match::{ExeSpec, FileId};
use crate::target::process;

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
    /// Where the file was opened; where shared links are attached again after a suspension.
    path: PathBuf,
}

struct Proc {
    file: FileId,
    /// Links scoped to this process alone (explicit `--pid` of a file no `--exe` names).
    links: Vec<Link>,
    /// Where its executable was opened, to attach its own links again after a suspension.
    path: PathBuf,
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
    /// Files an `--exe` process ran that cannot be traced, so each exec of them is not analysed
    /// again (the failure was counted and said once).
    rejected: HashMap<FileId, String>,
    next_id: u32,
    exits: UnboundedSender<u32>,
    /// In the off part of a duty cycle: nothing is attached, everything is remembered.
    suspended: bool,
    /// Exited processes whose kernel entries are still to be removed (`reap`).
    dead: HashSet<u32>,
    mode: IterationMode,
}

impl Targets {
    pub fn new(specs: Vec<ExeSpec>, exits: UnboundedSender<u32>, mode: IterationMode) -> Self {
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
        }
    }

    pub fn watches_executables(&self) -> bool {
        !self.specs.is_empty()
    }

    /// Explicit `--pid` targets still running.
    pub fn explicit_running(&self) -> usize {
        self.procs.values().filter(|p| p.explicit).count()
    }

    pub fn processes(&self) -> usize {
        self.procs.len()
    }

    pub fn links(&self) -> usize {
        self.binaries
            .values()
            .map(|b| b.shared.as_ref().map_or(0, Vec::len))
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
        ebpf: &mut Ebpf,
        resolver: &mut Resolver,
        spec: usize,
    ) -> Result<String, TraceError> {
        let path = self.specs[spec].path.clone();
        let Some(file) = self.specs[spec].file else {
            return Ok(format!(
                "{}: no such file on this host; processes that run it inside their own root (containers) will be traced",
                path.display()
            ));
        };
        let new = self.binary(ebpf, resolver, file, &path)?;
        if let Err(e) = self.share(ebpf, file, &path) {
            if new {
                self.drop_binary(ebpf, resolver, file);
            }
            return Err(e.into());
        }
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
        ebpf: &mut Ebpf,
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
        let file = match FileId::of(&proc.host_path) {
            Ok(f) => f,
            Err(e) if explicit => return Err(TargetError::from_io(&proc.host_path, e).into()),
            Err(_) => return Ok(None),
        };
        let matched = self.specs.iter().any(|s| s.matches(&proc.exe, file));
        if !explicit && (!matched || self.rejected.contains_key(&file)) {
            return Ok(None);
        }
        // Watch for the exit before attaching, so a process that dies meanwhile is noticed.
        let pidfd = pidfd_open(pid).map_err(|e| match e.raw_os_error() {
            Some(libc::ESRCH) => TraceError::Target(TargetError::PidMissing { pid }),
            _ => TraceError::Other(format!("pidfd_open({pid}): {e}")),
        })?;
        let new = match self.binary(ebpf, resolver, file, &proc.host_path) {
            Ok(new) => new,
            Err(e) => {
                if !explicit {
                    self.rejected.insert(file, e.to_string());
                }
                return Err(e);
            }
        };
        match self.attach_process(ebpf, resolver, pid, file, &proc.host_path, matched, pidfd) {
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
                        path: proc.host_path,
                        explicit,
                        watch,
                    },
                );
                Ok(Some(attached))
            }
            Err(e) => {
                if new {
                    self.drop_binary(ebpf, resolver, file);
                }
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn attach_process(
        &mut self,
        ebpf: &mut Ebpf,
        resolver: &mut Resolver,
        pid: u32,
        file: FileId,
        host_path: &Path,
        matched: bool,
        pidfd: OwnedFd,
    ) -> Result<(Vec<Link>, OwnedFd), TraceError> {
        // Read while the process surely runs: its findings may arrive after it died.
        let bias = {
            let b = &self.binaries[&file];
            process::process_load_bias(pid, host_path, |off| b.segments.vaddr_of_offset(off))?
        };
        if matched {
            self.share(ebpf, file, host_path)?;
        }
        let b = &self.binaries[&file];
        let links = match b.shared {
            Some(_) => Vec::new(),
            None if self.suspended => Vec::new(),
            None => {
                let scope = std::num::NonZeroU32::new(pid)
                    .map_or(UProbeScope::AllProcesses, UProbeScope::OneProcess);
                attach::attach_binary(ebpf, &b.target, b.id, host_path, scope, self.mode)?
            }
        };
        resolver.add_process(pid, ProcessInfo::new(pid, b.info.clone(), bias));
        Ok((links, pidfd))
    }

    /// The binary at `file`, analysed and configured in the kernel if new; true when new.
    fn binary(
        &mut self,
        ebpf: &mut Ebpf,
        resolver: &mut Resolver,
        file: FileId,
        path: &Path,
    ) -> Result<bool, TraceError> {
        if self.binaries.contains_key(&file) {
            return Ok(false);
        }
        if self.binaries.len() >= map_trace_common::config::MAX_BINARIES as usize {
            return Err(TraceError::Other(format!(
                "{}: already tracing {} executables, the most map-trace handles at once",
                path.display(),
                self.binaries.len()
            )));
        }
        let image = ElfImage::open(path)?;
        let target = GoTarget::analyze_image(&image)?;
        let info = Arc::new(BinaryInfo::new(&image, &target)?);
        let id = self.next_id;
        attach::write_config(ebpf, &target, id)?;
        self.next_id += 1;
        resolver.add_binary(id, info.clone(), target.elf.pie);
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        self.binaries.insert(
            file,
            Binary {
                id,
                name,
                target,
                info,
                segments: image.segments(),
                shared: None,
                procs: 0,
                path: path.to_path_buf(),
            },
        );
        Ok(true)
    }

    /// Gives the binary links shared by all its processes, if it has none yet; processes of it
    /// that had links of their own drop them, so no operation traps twice.
    fn share(&mut self, ebpf: &mut Ebpf, file: FileId, path: &Path) -> Result<(), AttachError> {
        let b = self.binaries.get_mut(&file).expect("binary analysed first");
        if b.shared.is_some() {
            return Ok(());
        }
        b.shared = Some(match self.suspended {
            true => Vec::new(),
            false => attach::attach_binary(
                ebpf,
                &b.target,
                b.id,
                path,
                UProbeScope::AllProcesses,
                self.mode,
            )?,
        });
        for p in self.procs.values_mut().filter(|p| p.file == file) {
            attach::detach(ebpf, std::mem::take(&mut p.links));
        }
        Ok(())
    }

    fn drop_binary(&mut self, ebpf: &mut Ebpf, resolver: &mut Resolver, file: FileId) {
        if let Some(b) = self.binaries.remove(&file) {
            resolver.remove_binary(b.id);
            if let Some(links) = b.shared {
                attach::detach(ebpf, links);
            }
            attach::forget_binary(ebpf, b.id);
        }
    }

    fn spawn_watch(&self, pid: u32, pidfd: OwnedFd) -> JoinHandle<()> {
        let exits = self.exits.clone();
        tokio::spawn(async move {
            // A pidfd becomes readable when its process exits.
            // SAFETY: the OwnedFd moves into the AsyncFd, which keeps it open until dropped.
            match unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) } {
                Ok(fd) => {
                    let _ = fd.readable().await;
                }
                Err(_) => {
                    // Cannot watch it: fall back to polling /proc for this one process.
                    while Path::new(&format!("/proc/{pid}")).exists() {
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
            }
            let _ = exits.send(pid);
        })
    }

    /// A process exec'd: trace it if an `--exe` names what it runs now; forget it if it was
    /// traced and now runs something else.
    pub fn on_exec(
        &mut self,
        ebpf: &mut Ebpf,
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

    /// Removes the kernel entries (correlation state, stacks) of processes that exited since
    /// the last call, in one pass over each table. A pid traced again meanwhile keeps its own.
    pub fn reap(&mut self, ebpf: &mut Ebpf, resolver: &mut Resolver) {
        self.dead.retain(|pid| !self.procs.contains_key(pid));
        if self.dead.is_empty() {
            return;
        }
        sweep::forget_processes(ebpf, &self.dead);
        resolver.forget_stacks(&self.dead);
        self.dead.clear();
    }

    /// The off part of a duty cycle: detaches every link but forgets nothing, and drops the
    /// iteration state, since iterations that start or end while nothing is attached are not
    /// seen (a stale one could otherwise take a new range's writes for its own).
    pub fn suspend(&mut self, ebpf: &mut Ebpf) {
        if self.suspended {
            return;
        }
        self.suspended = true;
        for b in self.binaries.values_mut() {
            if let Some(links) = b.shared.as_mut() {
                attach::detach(ebpf, std::mem::take(links));
            }
        }
        for p in self.procs.values_mut() {
            attach::detach(ebpf, std::mem::take(&mut p.links));
        }
        sweep::forget_iterations(ebpf);
    }

    /// The on part of a duty cycle: attaches again what `suspend` detached. Returns what
    /// could not be attached (its process exited meanwhile, say).
    pub fn resume(&mut self, ebpf: &mut Ebpf) -> Vec<String> {
        if !self.suspended {
            return Vec::new();
        }
        self.suspended = false;
        let mut errors = Vec::new();
        for (file, b) in &mut self.binaries {
            let Some(links) = b.shared.as_mut() else {
                continue;
            };
            // The path it was opened by may have gone with its process (a container's copy):
            // any live process of the file reaches it too.
            let paths = std::iter::once(b.path.clone()).chain(
                self.procs
                    .iter()
                    .filter(|(_, p)| p.file == *file)
                    .map(|(pid, _)| PathBuf::from(format!("/proc/{pid}/exe"))),
            );
            let mut last = None;
            for path in paths {
                match attach::attach_binary(
                    ebpf,
                    &b.target,
                    b.id,
                    &path,
                    UProbeScope::AllProcesses,
                    self.mode,
                ) {
                    Ok(l) => {
                        *links = l;
                        last = None;
                        break;
                    }
                    Err(e) => last = Some(e.to_string()),
                }
            }
            errors.extend(last);
        }
        for (&pid, p) in &mut self.procs {
            let Some(b) = self.binaries.get(&p.file) else {
                continue;
            };
            if b.shared.is_some() {
                continue;
            }
            let scope = std::num::NonZeroU32::new(pid)
                .map_or(UProbeScope::AllProcesses, UProbeScope::OneProcess);
            match attach::attach_binary(ebpf, &b.target, b.id, &p.path, scope, self.mode) {
                Ok(l) => p.links = l,
                Err(e) => errors.push(format!("pid {pid}: {e}")),
            }
        }
        errors
    }

    /// Detaches a process that exited and removes everything kept for it. Its findings must
    /// have been read first. False when it was not traced.
    pub fn remove(&mut self, ebpf: &mut Ebpf, resolver: &mut Resolver, pid: u32) -> bool {
        let Some(p) = self.procs.remove(&pid) else {
            return false;
        };
        p.watch.abort();
        attach::detach(ebpf, p.links);
        resolver.remove_process(pid);
        self.dead.insert(pid);
        let Some(b) = self.binaries.get_mut(&p.file) else {
            return true;
        };
        b.procs -= 1;
        // Keep the probes of a file an `--exe` path names now, for its next process; drop
        // those of a container's copy or a replaced file once nothing runs it.
        let named = self
            .specs
            .iter()
            .any(|s| FileId::of(&s.path).ok() == Some(p.file));
        if b.procs == 0 && !named {
            self.drop_binary(ebpf, resolver, p.file);
        }
        true
    }
}

/// Maps why attaching failed to the bounded label of `map_trace_attach_failures_total`.
pub fn failure_reason(e: &TraceError) -> AttachFailure {
    match e {
        TraceError::Target(t) => match t {
            TargetError::NotElf { .. } | TargetError::NotGo { .. } => AttachFailure::NotGo,
            TargetError::GoTooOld { .. }
            | TargetError::UnsupportedArch { .. }
            | TargetError::Malformed { .. } => AttachFailure::UnsupportedGo,
            TargetError::PermissionDenied { .. } => AttachFailure::Permission,
            TargetError::PidMissing { .. }
            | TargetError::NoExecutable { .. }
            | TargetError::FileMissing { .. } => AttachFailure::ProcessGone,
            TargetError::Io { .. } => AttachFailure::Other,
        },
        TraceError::Attach(_) | TraceError::Kernel(_) => AttachFailure::KernelRejected,
        TraceError::Other(_) => AttachFailure::Other,
    }
}

fn describe(t: &GoTarget, mode: IterationMode) -> String {
    let how = match t.effective_mode(mode) {
        IterationMode::Steps => "",
        IterationMode::Ends => ", low overhead: each range seen at its start and end",
    };
    format!(
        "{} {} {} maps{how}",
        t.version,
        t.elf.arch,
        t.map_impl.name()
    )
}

fn warnings(b: &Binary) -> Vec<String> {
    b.target
        .warnings
        .iter()
        .cloned()
        .chain(b.info.types_warning())
        .collect()
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
