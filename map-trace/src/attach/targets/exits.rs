//! Exits: each traced process's pidfd reports its end, and what exited processes left in the
//! kernel tables (their own, or those of processes that ran a watched file and were gone
//! before they were met) is removed in batches.

use std::os::fd::OwnedFd;
use std::path::Path;

use aya::Ebpf;

use crate::attach::Bpf;
use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;

use super::Targets;
use crate::attach::probes as attach;
use crate::attach::sweep;
use crate::resolve::Resolver;

impl Targets {
    /// Detaches a process that exited and removes everything kept for it. Its findings must
    /// have been read first. False when it was not traced. Its links close in the background.
    pub fn remove(&mut self, ebpf: &mut Bpf, resolver: &mut Resolver, pid: u32) -> bool {
        let Some(p) = self.procs.remove(&pid) else {
            return false;
        };
        p.watch.abort();
        let d = attach::detach(ebpf, p.links);
        self.keep_closing(d);
        resolver.remove_process(pid);
        self.dead.insert(pid);
        let Some(b) = self.binaries.get_mut(&p.file) else {
            return true;
        };
        b.procs -= 1;
        let idle = b.procs == 0;
        // Keep the probes of a file an `--exe` path names now, for its next process; drop
        // those of a container's copy or a replaced file once nothing runs it.
        let named = self.specs.iter().any(|s| s.file() == Some(p.file));
        // `--all` keeps an idle binary's analysis (nothing of it stays attached).
        let keep = self.keeps_idle() && !named;
        // Without the exec guard nothing may stay attached to a file nothing runs: it could
        // be rewritten in place before its next exec.
        if idle && (!named || !self.guarded()) && !keep {
            let d = self.drop_binary(ebpf, resolver, p.file);
            if self.guarded() {
                self.keep_closing(d);
            } else {
                // Unguarded, a rewrite of the file could meet these probes at its next exec.
                d.wait();
            }
        }
        self.settle();
        true
    }

    pub(super) fn spawn_watch(&self, pid: u32, pidfd: OwnedFd) -> JoinHandle<()> {
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

    /// Marks for removal the kernel entries of processes that are gone but were never met
    /// (they exited before their exec notice was read); `reap` removes them.
    pub fn find_orphans(&mut self, ebpf: &Ebpf, resolver: &Resolver) {
        let alive = |t: u32| Path::new(&format!("/proc/{t}")).exists();
        let mut gone = sweep::orphans(ebpf, alive);
        gone.extend(resolver.stack_tgids().into_iter().filter(|&t| !alive(t)));
        gone.retain(|t| !self.procs.contains_key(t));
        self.dead.extend(gone);
    }

    /// Removes the kernel entries (correlation state, stacks) of processes that exited since
    /// the last call, in one pass over each table. A pid traced again meanwhile keeps its own.
    pub fn reap(&mut self, ebpf: &mut Bpf, resolver: &mut Resolver) {
        self.dead.retain(|pid| !self.procs.contains_key(pid));
        if self.dead.is_empty() {
            return;
        }
        sweep::forget_processes(ebpf, &self.dead);
        resolver.forget_stacks(&self.dead);
        self.dead.clear();
    }
}

pub(super) fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ESRCH))?;
    Ok(rustix::process::pidfd_open(
        pid,
        rustix::process::PidfdFlags::empty(),
    )?)
}
