//! Sentinel mode's escalation. The kernel counts, per binary, the ranges whose map changed
//! between start and end (`CHANGES`); when a binary's count rises, it gets the full mode's
//! probes (steps and writes) on top of the sentinel's for a bounded window, so the next
//! occurrence is reported with its writer and both stacks, and then falls back. A binary is
//! escalated at most once per `Escalation::every`.

use std::time::Instant;

use aya::Ebpf;

use crate::attach::Bpf;
use aya::maps::Array;
use aya::programs::uprobe::UProbeScope;
use map_trace_common::config::config_slot;
use map_trace_common::program::map;

use super::{Binary, Targets};
use crate::attach::probes::{self as attach, Link};
use crate::config::Escalation;
use crate::plan::IterationMode;

/// A sentinel binary's escalation state.
#[derive(Default)]
pub(super) struct Sentinel {
    /// `CHANGES` of its slot when last read.
    seen: u64,
    /// While escalated: the full probes added, and until when.
    links: Option<(Vec<Link>, Instant)>,
    /// When its last escalation began.
    last: Option<Instant>,
}

impl Sentinel {
    pub(super) fn new(seen: u64) -> Self {
        Sentinel {
            seen,
            ..Default::default()
        }
    }

    /// Links it holds now.
    pub(super) fn links(&self) -> usize {
        self.links.as_ref().map_or(0, |(l, _)| l.len())
    }
}

/// What escalation did this turn, for the user and the metrics.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Escalations {
    pub said: Vec<String>,
    pub started: u64,
    /// Ranges with a change seen while their binary could not escalate again yet.
    pub deferred: u64,
}

impl Targets {
    pub fn set_escalation(&mut self, e: Escalation) {
        self.escalation = e;
    }

    /// Whether binary `b` runs as a sentinel (its ranges' ends compare headers).
    pub(super) fn sentinel(&self, b: &Binary) -> bool {
        self.mode == IterationMode::Sentinel
            && b.target.effective_mode(self.mode) == IterationMode::Sentinel
    }

    /// The count a new binary's slot starts from (slots are reused by later binaries).
    pub(super) fn changes_now(ebpf: &Ebpf, id: u32) -> u64 {
        ebpf.map(map::CHANGES)
            .and_then(|m| Array::<_, u64>::try_from(m).ok())
            .and_then(|a| a.get(&config_slot(id), 0).ok())
            .unwrap_or(0)
    }

    /// Escalates the sentinel binaries whose maps changed, and lets those whose window is over
    /// fall back. Called every poll; costs one array read per sentinel binary.
    pub fn escalate(&mut self, ebpf: &mut Bpf, now: Instant) -> Escalations {
        let mut out = Escalations::default();
        if self.mode != IterationMode::Sentinel || self.suspended {
            return out;
        }
        let files: Vec<_> = self.binaries.keys().copied().collect();
        for file in files {
            let b = &self.binaries[&file];
            if !self.sentinel(b) {
                continue;
            }
            let count = Self::changes_now(ebpf, b.id);
            let new = count.saturating_sub(b.sentinel.seen);
            let changed = new > 0;
            let (id, name) = (b.id, b.name.clone());
            let until = b.sentinel.links.as_ref().map(|(_, u)| *u);
            let allowed = b
                .sentinel
                .last
                .is_none_or(|l| now.duration_since(l) >= self.escalation.every);
            self.binaries.get_mut(&file).expect("listed").sentinel.seen = count;
            match until {
                Some(u) if now >= u => {
                    self.fall_back(ebpf, file);
                    out.said
                        .push(format!("{name}: full probes removed, sentinel again"));
                }
                Some(_) => {}
                None if changed && allowed => match self.attach_full(ebpf, file) {
                    Ok(links) => {
                        // Settings last: until the full probes are in, ends keep comparing.
                        let b = self.binaries.get_mut(&file).expect("listed");
                        let _ = attach::write_config(ebpf, &b.target, id, false);
                        b.sentinel.links = Some((links, now + self.escalation.window));
                        b.sentinel.last = Some(now);
                        out.started += 1;
                        out.said.push(format!(
                            "{name}: a map changed during a range: full probes attached for {} to name the writer of the next occurrence",
                            humantime::format_duration(self.escalation.window)
                        ));
                    }
                    Err(e) => {
                        // Tried again no sooner than the next escalation would be: a failure
                        // that repeats must not fill the log every poll.
                        self.binaries.get_mut(&file).expect("listed").sentinel.last = Some(now);
                        out.said.push(format!(
                            "{name}: a map changed during a range, but the full probes could not be attached: {e}"
                        ));
                    }
                },
                None if changed => out.deferred += new,
                None => {}
            }
        }
        out
    }

    /// The full mode's extra probes for `file`: shared by all its processes when its sentinel
    /// probes are, else one set per process traced with links of its own.
    fn attach_full(
        &mut self,
        ebpf: &mut Bpf,
        file: crate::discover::exe_match::FileId,
    ) -> Result<Vec<Link>, attach::AttachError> {
        let b = &self.binaries[&file];
        if b.shared.is_some() {
            return b.attach(ebpf, UProbeScope::AllProcesses, IterationMode::Escalation);
        }
        let mut links = Vec::new();
        for (&pid, p) in &self.procs {
            if p.file != file || p.links.is_empty() {
                continue;
            }
            let Some(pid) = std::num::NonZeroU32::new(pid) else {
                continue;
            };
            match b.attach(
                ebpf,
                UProbeScope::OneProcess(pid),
                IterationMode::Escalation,
            ) {
                Ok(l) => links.extend(l),
                Err(e) => {
                    attach::detach(ebpf, links).in_background();
                    return Err(e);
                }
            }
        }
        Ok(links)
    }

    /// Ends `file`'s escalation: its ends compare headers again, then the full probes go.
    fn fall_back(&mut self, ebpf: &mut Bpf, file: crate::discover::exe_match::FileId) {
        let b = self.binaries.get_mut(&file).expect("listed");
        let Some((links, _)) = b.sentinel.links.take() else {
            return;
        };
        let _ = attach::write_config(ebpf, &b.target, b.id, true);
        // Ranges of the escalation whose ends come later have no snapshot: compared by none.
        b.sentinel.seen = Self::changes_now(ebpf, b.id);
        let d = attach::detach(ebpf, links);
        self.keep_closing(d);
    }

    /// The escalation links of `b`, for detaching with the rest of it.
    pub(super) fn take_escalation(b: &mut Binary) -> Vec<Link> {
        b.sentinel.links.take().map(|(l, _)| l).unwrap_or_default()
    }
}
