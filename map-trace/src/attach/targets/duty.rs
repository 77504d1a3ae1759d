//! The duty cycle's two halves: everything detached, then everything attached again.

use crate::attach::Bpf;
use aya::programs::uprobe::UProbeScope;

use super::Targets;
use crate::attach::probes as attach;
use crate::attach::sweep;

impl Targets {
    /// The off part of a duty cycle: detaches every link but forgets nothing, and drops the
    /// iteration state, since iterations that start or end while nothing is attached are not
    /// seen (a stale one could otherwise take a new range's writes for its own).
    pub fn suspend(&mut self, ebpf: &mut Bpf) {
        if self.suspended {
            return;
        }
        self.suspended = true;
        for b in self.binaries.values_mut() {
            // An escalation ends with the rest (the sentinel never runs duty-cycled: this is
            // the shutdown).
            let extra = Self::take_escalation(b);
            if !extra.is_empty() {
                self.closing.push(attach::detach(ebpf, extra));
            }
            if let Some(links) = b.shared.as_mut() {
                self.closing
                    .push(attach::detach(ebpf, std::mem::take(links)));
            }
        }
        for p in self.procs.values_mut() {
            self.closing
                .push(attach::detach(ebpf, std::mem::take(&mut p.links)));
        }
        // No probe may record a range start after the forgetting below.
        self.wait_closed();
        sweep::forget_iterations(ebpf);
    }

    /// The on part of a duty cycle: attaches again what `suspend` detached, each binary through
    /// its own open file (never by path: a file deployed meanwhile under the same name must not
    /// get this one's offsets). Returns what could not be attached.
    pub fn resume(&mut self, ebpf: &mut Bpf) -> Vec<String> {
        if !self.suspended {
            return Vec::new();
        }
        self.suspended = false;
        let mut errors = Vec::new();
        for b in self.binaries.values_mut() {
            if b.shared.is_none() {
                continue;
            }
            match b.attach(ebpf, UProbeScope::AllProcesses, self.mode) {
                Ok(l) => b.shared = Some(l),
                Err(e) => errors.push(e.to_string()),
            }
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
            match b.attach(ebpf, scope, self.mode) {
                Ok(l) => p.links = l,
                Err(e) => errors.push(format!("pid {pid}: {e}")),
            }
        }
        errors
    }
}
