//! What the main loop does with each event: a process found, exec'd or exited, an exec held
//! by the guard, a watched path changed, a metrics tick.

use crate::attach::Bpf;

use crate::attach::targets::{self, Targets};
use crate::attach::{exec_guard, path_watch, sweep};
use crate::discover::process;
use crate::error::{MAX_MESSAGE_CHARS, one_line};
use crate::events::sink::{Sink, read_counters};
use crate::metrics::{AttachFailure, Metrics, raise_to};
use crate::output::Summary;
use crate::resolve::Resolver;

pub(super) fn announce(a: &targets::Attached, metrics: &Metrics) {
    let how = if a.shared {
        format!("{} probes attached, shared by its executable", a.probes)
    } else {
        format!("{} probes attached", a.probes)
    };
    eprintln!(
        "map-trace: tracing pid {} ({}): {}, {how}",
        a.pid,
        a.exe.display(),
        a.description
    );
    for w in &a.warnings {
        eprintln!("map-trace: warning: {w}");
    }
    metrics.process_attaches.inc();
}

/// Starts tracing a process found by the /proc scan or an exec notice, or a finding of a
/// process whose notice was lost; failures are counted and said, never fatal.
pub(super) fn adopt(
    targets: &mut Targets,
    ebpf: &mut Bpf,
    resolver: &mut Resolver,
    metrics: &Metrics,
    pid: u32,
    exec: bool,
) {
    let result = if exec {
        targets.on_exec(ebpf, resolver, pid)
    } else {
        targets.add(ebpf, resolver, pid, false)
    };
    match result {
        Ok(Some(a)) => announce(&a, metrics),
        Ok(None) => {}
        Err(e) => {
            let reason = AttachFailure::of(&e);
            // A process that ran a matching file and exited before it could be read is
            // counted, but not worth a line each.
            // Under `run`, most of what a command starts is not Go (a shell, make, a C
            // compiler): counted, not said.
            let quiet = reason == AttachFailure::ProcessGone
                || (reason == AttachFailure::NotGo && targets.follows());
            if !quiet {
                let e = one_line(&e.to_string(), MAX_MESSAGE_CHARS);
                eprintln!("map-trace: not tracing pid {pid}: {e}");
            }
            metrics
                .attach_failures
                .with_label_values(&[reason.label()])
                .inc();
        }
    }
}

/// True when `pid` is not traced and no longer runs anything: it exited before it could be
/// followed. Asked of /proc, not of `adopt`'s outcome: `Targets::add` cannot tell a process
/// that is gone from one that never ran a watched file (both are "not ours" to it).
fn gone_unfollowed(targets: &Targets, pid: u32) -> bool {
    !targets.is_traced(pid) && process::is_gone(pid)
}

/// Everything the main loop works on.
pub(super) struct Session<'a, 's> {
    pub ebpf: &'a mut Bpf,
    pub targets: &'a mut Targets,
    pub metrics: &'a Metrics,
    pub sink: Sink<'s>,
    /// Pids with findings that were gone before they could be followed, said once each.
    pub unfollowed: std::collections::HashSet<u32>,
}

impl Session<'_, '_> {
    /// An exec the guard holds: settle it, then look again at processes it displaced.
    pub(super) fn held(&mut self, h: exec_guard::Held, out: &mut impl std::io::Write) {
        // Findings first: a retired binary's symbols go with it.
        self.drain(out, false);
        for line in self.targets.on_held(self.ebpf, self.sink.resolver, h) {
            eprintln!("map-trace: {line}");
        }
        self.readd();
    }

    pub(super) fn rescan(
        &mut self,
        paths: Option<&mut path_watch::PathWatch>,
        out: &mut impl std::io::Write,
    ) {
        for line in self.targets.mark_dirs() {
            eprintln!("map-trace: warning: {line}");
        }
        // Findings are symbolized from the binaries about to be let go.
        self.drain(out, false);
        self.targets.rescan(self.ebpf, self.sink.resolver);
        if let Some(p) = paths {
            p.set(&self.targets.names());
        }
    }

    /// Processes detached because their file's probes were retired: traced again if they
    /// still run a watched file.
    pub(super) fn readd(&mut self) {
        for pid in self.targets.take_readd() {
            self.adopt(pid, false);
            // It was traced until its probes were retired: its end is said like any other.
            if gone_unfollowed(self.targets, pid) {
                eprintln!("map-trace: pid {pid} exited: detached");
                self.metrics.process_detaches.inc();
            }
        }
    }

    fn adopt(&mut self, pid: u32, exec: bool) {
        adopt(
            self.targets,
            self.ebpf,
            self.sink.resolver,
            self.metrics,
            pid,
            exec,
        );
    }

    pub(super) fn exec(&mut self, pid: u32) {
        self.adopt(pid, true);
        self.readd();
    }

    pub(super) fn exited(&mut self, pid: u32, out: &mut impl std::io::Write) {
        // Its last findings first: they need its symbols, which go with it.
        self.drain(out, false);
        if self.targets.remove(self.ebpf, self.sink.resolver, pid) {
            eprintln!("map-trace: pid {pid} exited: detached");
            self.metrics.process_detaches.inc();
            self.metrics
                .processes_attached
                .set(self.targets.processes() as i64);
        }
    }

    pub(super) fn drain(&mut self, out: &mut impl std::io::Write, last: bool) {
        let targets = &mut *self.targets;
        let ebpf = &mut *self.ebpf;
        let metrics = self.metrics;
        let unfollowed = &mut self.unfollowed;
        self.sink.drain(out, last, |resolver, r| {
            // A process whose exec notice was lost still reaches us through its findings. One
            // that is gone already (a short process whose notice came while the loop was busy)
            // is said once, so its findings are not orphans in the log.
            if !targets.is_traced(r.pid) && targets.watches_executables() {
                adopt(targets, ebpf, resolver, metrics, r.pid, false);
                // Findings come only from watched files, so a process with findings that could
                // not be followed ran one: its end is said, as for a traced process.
                if gone_unfollowed(targets, r.pid) && unfollowed.insert(r.pid) {
                    eprintln!(
                        "map-trace: pid {} exited before it could be followed: its findings are reported",
                        r.pid
                    );
                    if unfollowed.len() > 4096 {
                        unfollowed.clear();
                    }
                }
            }
            let exe = targets
                .exe_name(r.pid)
                .or_else(|| targets.binary_name(r.binary))
                .unwrap_or("unknown");
            let at = resolver.location(r.pid).unwrap_or_default();
            metrics
                .findings
                .with_label_values(&[
                    r.kind.name(),
                    r.op_label(),
                    exe,
                    at.container_label(),
                    &at.pod_label(),
                ])
                .inc();
        });
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.metrics.last_poll.set(now);
    }

    /// Sentinel mode: escalates executables whose maps changed, ends escalations that are over.
    pub(super) fn escalate(&mut self) {
        let e = self.targets.escalate(self.ebpf, std::time::Instant::now());
        for line in &e.said {
            eprintln!("map-trace: {line}");
        }
        let m = &self.metrics.escalations;
        m.with_label_values(&["started"]).inc_by(e.started);
        m.with_label_values(&["deferred"]).inc_by(e.deferred);
    }

    /// Removes what exited processes left in the kernel, then passes the kernel's counters and
    /// the table sizes on to the metrics.
    pub(super) fn update_metrics(&mut self) {
        self.targets.reap(self.ebpf, self.sink.resolver);
        let mut s = Summary::default();
        read_counters(self.ebpf, &mut s);
        let m = self.metrics;
        for (role, n) in &s.hits {
            raise_to(&m.probe_hits.with_label_values(&[role.name()]), *n);
        }
        let dropped = [
            ("ring_buffer_full", s.findings_dropped),
            ("exec_notices_lost", s.execs_dropped),
            ("table_full", s.tables_full),
            ("writes_unseen", s.writes_unseen),
            ("in_progress_unnamed", s.in_progress_unnamed),
            ("undecodable", self.sink.summary.undecodable),
        ];
        for (reason, n) in dropped {
            raise_to(&m.events_dropped.with_label_values(&[reason]), n);
        }
        raise_to(&m.stack_samples, s.stacks);
        for (reason, n) in self.targets.skipped().by_reason() {
            raise_to(&m.processes_skipped.with_label_values(&[reason]), n);
        }
        raise_to(&m.stack_samples_truncated, s.stacks_truncated);
        let stacks_dropped = [
            ("unreadable", s.stacks_unreadable),
            ("evicted", self.sink.resolver.lost),
        ];
        for (reason, n) in stacks_dropped {
            raise_to(&m.stack_samples_dropped.with_label_values(&[reason]), n);
        }
        raise_to(&m.writes_during_growth, s.writes_during_growth);
        raise_to(&m.binaries_analysed, self.targets.analysed);
        if let Some(c) = self.targets.guard_counts() {
            use std::sync::atomic::Ordering::Relaxed;
            let outcomes = [
                ("redeploy", c.redeploys_held.load(Relaxed)),
                ("denied", c.denied.load(Relaxed)),
                ("unanswered", c.unanswered.load(Relaxed)),
                ("open_unanswered", c.opens_unanswered.load(Relaxed)),
            ];
            for (outcome, n) in outcomes {
                raise_to(&m.exec_guard.with_label_values(&[outcome]), n);
            }
        }
        m.processes_attached.set(self.targets.processes() as i64);
        m.probe_links.set(self.targets.links() as i64);
        m.finding_groups.set(self.sink.groups.len() as i64);
        for (name, n) in sweep::entries(self.ebpf) {
            m.bpf_map_entries.with_label_values(&[name]).set(n as i64);
        }
        m.bpf_map_entries
            .with_label_values(&["config"])
            .set(self.targets.binaries() as i64);
        m.bpf_map_entries
            .with_label_values(&["stacks"])
            .set(self.sink.resolver.stack_entries() as i64);
    }
}
