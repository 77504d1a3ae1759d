//! Prometheus metrics of the daemon, and their text rendering for the /metrics endpoint.
//!
//! Every label has a bounded set of values (no addresses, pids or goroutine ids), so the number
//! of series cannot grow with the traced workload. Labelled series whose values are known up
//! front are created at zero, so `rate()` and absence alerts work from the first scrape.

pub mod connections;
pub mod health;
pub mod http;

use map_trace_common::probe::Role;
use prometheus::{
    Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::error::{TargetError, TraceError};

/// The `reason` label values of [`Metrics::events_dropped`].
pub const DROP_REASONS: [&str; 6] = [
    "ring_buffer_full",
    "exec_notices_lost",
    "table_full",
    "writes_unseen",
    "in_progress_unnamed",
    "undecodable",
];
/// The `reason` label values of [`Metrics::stack_samples_dropped`].
pub const STACK_DROP_REASONS: [&str; 2] = ["unreadable", "evicted"];
/// The `map` label values of [`Metrics::bpf_map_entries`].
pub const BPF_MAPS: [&str; 4] = ["config", "maps", "iters", "stacks"];

/// Why attaching to a process failed: the `reason` label of [`Metrics::attach_failures`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttachFailure {
    NotGo,
    UnsupportedGo,
    Permission,
    ProcessGone,
    KernelRejected,
    Other,
}

impl AttachFailure {
    pub const ALL: [AttachFailure; 6] = [
        AttachFailure::NotGo,
        AttachFailure::UnsupportedGo,
        AttachFailure::Permission,
        AttachFailure::ProcessGone,
        AttachFailure::KernelRejected,
        AttachFailure::Other,
    ];

    /// Why attaching failed, as the bounded label of `map_trace_attach_failures_total`.
    pub fn of(e: &TraceError) -> AttachFailure {
        match e {
            TraceError::Target(t) => match t {
                TargetError::NotElf { .. } | TargetError::NotGo { .. } => AttachFailure::NotGo,
                TargetError::GoTooOld { .. }
                | TargetError::GoVersionUnknown { .. }
                | TargetError::UnsupportedArch { .. }
                | TargetError::Malformed { .. } => AttachFailure::UnsupportedGo,
                TargetError::PermissionDenied { .. } => AttachFailure::Permission,
                TargetError::PidMissing { .. }
                | TargetError::NoExecutable { .. }
                | TargetError::FileMissing { .. } => AttachFailure::ProcessGone,
                TargetError::Io { .. }
                | TargetError::NotRegular { .. }
                | TargetError::TooLarge { .. } => AttachFailure::Other,
            },
            TraceError::Attach(_) | TraceError::Kernel(_) => AttachFailure::KernelRejected,
            TraceError::MetricsAddr { .. } | TraceError::Sarif { .. } | TraceError::Other(_) => {
                AttachFailure::Other
            }
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            AttachFailure::NotGo => "not_go",
            AttachFailure::UnsupportedGo => "unsupported_go",
            AttachFailure::Permission => "permission",
            AttachFailure::ProcessGone => "process_gone",
            AttachFailure::KernelRejected => "kernel_rejected",
            AttachFailure::Other => "other",
        }
    }
}

/// Values of the `outcome` label of `map_trace_exec_guard_total`.
pub const EXEC_GUARD_OUTCOMES: [&str; 4] = ["redeploy", "denied", "unanswered", "open_unanswered"];

pub struct Metrics {
    pub registry: Registry,
    /// Labels, in this order: kind, op, exe, traced_container, traced_pod (not `container` and
    /// `pod`, which Prometheus' Kubernetes discovery gives map-trace's own pod).
    pub findings: IntCounterVec,
    /// Label: role (`Role::name` of each probe role).
    pub probe_hits: IntCounterVec,
    /// Label: reason (one of [`DROP_REASONS`]).
    pub events_dropped: IntCounterVec,
    pub stack_samples: IntCounter,
    /// Label: reason (one of [`STACK_DROP_REASONS`]).
    pub stack_samples_dropped: IntCounterVec,
    pub stack_samples_truncated: IntCounter,
    pub writes_during_growth: IntCounter,
    pub processes_attached: IntGauge,
    pub process_attaches: IntCounter,
    pub process_detaches: IntCounter,
    /// Label: reason ([`AttachFailure::label`]); see [`Metrics::attach_failed`].
    pub attach_failures: IntCounterVec,
    pub probe_links: IntGauge,
    /// Label: outcome (one of [`EXEC_GUARD_OUTCOMES`]).
    pub exec_guard: IntCounterVec,
    /// 1 while execs of watched files are held until their probes match their content.
    pub exec_guard_active: IntGauge,
    /// Watched binaries analysed, or analysed again after a change on disk.
    pub binaries_analysed: IntCounter,
    /// 1 while probes are attached, 0 in the off part of a `--duty-cycle`.
    pub probes_active: IntGauge,
    /// Label: outcome (`started`, `deferred`): sentinel mode's escalations.
    pub escalations: IntCounterVec,
    /// Label: reason (`Skipped::reasons`): processes `--all` or `run` did not trace.
    pub processes_skipped: IntCounterVec,
    /// Label: map (one of [`BPF_MAPS`]).
    pub bpf_map_entries: IntGaugeVec,
    pub finding_groups: IntGauge,
    /// Label: version.
    pub build_info: IntGaugeVec,
    pub last_poll: Gauge,
}

impl Metrics {
    pub fn new(version: &str) -> Metrics {
        let registry = Registry::new();
        // Registration fails only for invalid or duplicate names, i.e. a bug in this function,
        // which the unit tests exercise.
        fn reg<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
            r.register(Box::new(c.clone()))
                .expect("metric definitions are valid and unique");
            c
        }
        fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
            reg(
                r,
                IntCounter::with_opts(Opts::new(name, help)).expect("valid metric"),
            )
        }
        fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
            reg(
                r,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        }
        fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
            reg(
                r,
                IntGauge::with_opts(Opts::new(name, help)).expect("valid metric"),
            )
        }

        let r = &registry;
        let m = Metrics {
            findings: counter_vec(
                r,
                "map_trace_findings_total",
                "Map writes seen overlapping an iteration of the same Go map, or another \
                 goroutine's write to it (kind concurrent_writes), and Go's map fatal errors \
                 (kind fatal_map_error, op none when no write in progress was named), by \
                 finding kind, write operation and traced executable. Each one is a potential \
                 fatal 'concurrent map iteration and map write' or 'concurrent map writes', or a \
                 silently skipped or repeated key. traced_container: the traced process's Kubernetes \
                 container name, else its systemd unit, else empty; traced_pod: its pod's \
                 namespace/name on Kubernetes, else empty.",
                &["kind", "op", "exe", "traced_container", "traced_pod"],
            ),
            probe_hits: counter_vec(
                r,
                "map_trace_probe_hits_total",
                "Uprobe hits received from the kernel, by probe role. A role that stays flat while \
                 the target is busy means that probe is not firing.",
                &["role"],
            ),
            events_dropped: counter_vec(
                r,
                "map_trace_events_dropped_total",
                "Events lost before correlation, by reason. Any increase means findings may have \
                 been missed.",
                &["reason"],
            ),
            stack_samples: counter(
                r,
                "map_trace_stack_samples_total",
                "Stack samples read from the kernel to attribute findings to source lines.",
            ),
            stack_samples_dropped: counter_vec(
                r,
                "map_trace_stack_samples_dropped_total",
                "Stack samples that could not be used, by reason (unreadable, or evicted from the \
                 kernel table before being read); the affected findings have no stack.",
                &["reason"],
            ),
            stack_samples_truncated: counter(
                r,
                "map_trace_stack_samples_truncated_total",
                "Stack samples cut off at the maximum depth, so their outermost frames are missing.",
            ),
            writes_during_growth: counter(
                r,
                "map_trace_writes_during_growth_total",
                "Map writes seen while the same Go map was being grown.",
            ),
            processes_attached: gauge(
                r,
                "map_trace_processes_attached",
                "Processes the daemon currently has probes attached to.",
            ),
            process_attaches: counter(
                r,
                "map_trace_process_attaches_total",
                "Processes the daemon attached probes to since it started.",
            ),
            process_detaches: counter(
                r,
                "map_trace_process_detaches_total",
                "Processes detached since the daemon started, because they exited or were dropped.",
            ),
            attach_failures: counter_vec(
                r,
                "map_trace_attach_failures_total",
                "Processes the daemon failed to attach to, by reason (not_go, unsupported_go, \
                 permission, process_gone, kernel_rejected, other); such processes are not traced.",
                &["reason"],
            ),
            probe_links: gauge(
                r,
                "map_trace_probe_links",
                "Uprobe links currently attached in the kernel: one per probe (perf-event uprobes), or one per eBPF program and binary or process (uprobe_multi links).",
            ),
            exec_guard: counter_vec(
                r,
                "map_trace_exec_guard_total",
                "Execs of watched files the exec guard held for the main loop, by outcome: \
                 redeploy (the file had changed: old probes detached, new ones attached, then \
                 let go), denied (changed, and the main loop did not answer in time: the exec \
                 failed with EPERM rather than run under stale probes), unanswered (a new file, \
                 let go untraced), open_unanswered (another process's open of a watched file \
                 let go after 2 s without the findings read first: a stalled main loop).",
                &["outcome"],
            ),
            processes_skipped: counter_vec(
                r,
                "map_trace_processes_skipped_total",
                "Processes --all or map-trace run followed but did not trace, by reason: \
                 excluded (--include/--exclude), toolchain (the Go toolchain's own commands), \
                 binary_cap (--max-binaries binaries were traced already).",
                &["reason"],
            ),
            exec_guard_active: gauge(
                r,
                "map_trace_exec_guard_active",
                "1 while execs of watched files are held until their probes match the file's \
                 content (fanotify); 0 when the kernel or privileges do not allow it, and probes \
                 then stay attached only while a process runs the file.",
            ),
            binaries_analysed: counter(
                r,
                "map_trace_binaries_analysed_total",
                "Executables analysed for probes, including again after a change on disk.",
            ),
            probes_active: gauge(
                r,
                "map_trace_probes_active",
                "1 while the probes are attached, 0 during the off part of a duty cycle (nothing is observed then).",
            ),
            escalations: counter_vec(
                r,
                "map_trace_escalations_total",
                "Sentinel mode: an executable's map changed during a range, by outcome: started \
                 (its full probes attached for the escalation window, to name the writer), \
                 deferred (it had escalated too recently).",
                &["outcome"],
            ),
            bpf_map_entries: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "map_trace_bpf_map_entries",
                        "Entries currently held in each kernel BPF table; a table at its capacity \
                         drops events.",
                    ),
                    &["map"],
                )
                .expect("valid metric"),
            ),
            finding_groups: gauge(
                r,
                "map_trace_finding_groups",
                "Distinct finding groups (deduplicated findings) the daemon currently holds.",
            ),
            build_info: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "map_trace_build_info",
                        "Always 1; the version label identifies the running map-trace build.",
                    ),
                    &["version"],
                )
                .expect("valid metric"),
            ),
            last_poll: reg(
                r,
                Gauge::with_opts(Opts::new(
                    "map_trace_last_poll_timestamp_seconds",
                    "Unix time of the daemon's last ring-buffer poll; if time() minus this keeps \
                     growing, the event loop is stuck.",
                ))
                .expect("valid metric"),
            ),
            registry,
        };
        #[cfg(target_os = "linux")]
        m.registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process metrics do not clash with map_trace_ ones");

        for role in Role::ALL.map(Role::name) {
            m.probe_hits.with_label_values(&[role]);
        }
        for reason in DROP_REASONS {
            m.events_dropped.with_label_values(&[reason]);
        }
        for reason in STACK_DROP_REASONS {
            m.stack_samples_dropped.with_label_values(&[reason]);
        }
        for why in AttachFailure::ALL {
            m.attach_failures.with_label_values(&[why.label()]);
        }
        for map in BPF_MAPS {
            m.bpf_map_entries.with_label_values(&[map]);
        }
        for outcome in EXEC_GUARD_OUTCOMES {
            m.exec_guard.with_label_values(&[outcome]);
        }
        for outcome in ["started", "deferred"] {
            m.escalations.with_label_values(&[outcome]);
        }
        for reason in crate::attach::targets::Skipped::reasons() {
            m.processes_skipped.with_label_values(&[reason]);
        }
        m.build_info.with_label_values(&[version]).set(1);
        m
    }

    pub fn attach_failed(&self, why: AttachFailure) {
        self.attach_failures.with_label_values(&[why.label()]).inc();
    }

    /// The text exposition format 0.0.4 ([`prometheus::TEXT_FORMAT`]).
    pub fn render(&self) -> String {
        // The encoder only rejects empty or nameless families, which gather() never returns;
        // should that change, a scrape still gets the reason rather than a panic.
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# map-trace: encoding metrics failed: {e}\n"))
    }
}

/// Raise a counter to an absolute total read from the kernel (monotonic source); never decreases it.
///
/// Not atomic as a whole: each counter must have a single writer, which the daemon's one event
/// loop is.
pub fn raise_to(counter: &IntCounter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    #[test]
    fn raise_to_follows_the_kernel_total_and_never_decreases() {
        let c = IntCounter::new("t_total", "t").unwrap();
        raise_to(&c, 5);
        assert_eq!(c.get(), 5);
        raise_to(&c, 12);
        assert_eq!(c.get(), 12);
        // A smaller total (e.g. a table re-created after a reload) must not move it back.
        raise_to(&c, 3);
        assert_eq!(c.get(), 12);
        raise_to(&c, 12);
        assert_eq!(c.get(), 12);
        raise_to(&c, 13);
        assert_eq!(c.get(), 13);
    }

    #[test]
    fn labelled_series_exist_from_the_first_scrape() {
        let text = Metrics::new("1.2.3").render();
        for role in Role::ALL.map(Role::name) {
            let line = format!("map_trace_probe_hits_total{{role=\"{role}\"}} 0\n");
            assert!(text.contains(&line), "{line:?} missing from:\n{text}");
        }
        for reason in DROP_REASONS {
            let line = format!("map_trace_events_dropped_total{{reason=\"{reason}\"}} 0\n");
            assert!(text.contains(&line), "{line:?} missing from:\n{text}");
        }
        for reason in STACK_DROP_REASONS {
            let line = format!("map_trace_stack_samples_dropped_total{{reason=\"{reason}\"}} 0\n");
            assert!(text.contains(&line), "{line:?} missing from:\n{text}");
        }
        for why in AttachFailure::ALL {
            let line = format!(
                "map_trace_attach_failures_total{{reason=\"{}\"}} 0\n",
                why.label()
            );
            assert!(text.contains(&line), "{line:?} missing from:\n{text}");
        }
        for map in BPF_MAPS {
            let line = format!("map_trace_bpf_map_entries{{map=\"{map}\"}} 0\n");
            assert!(text.contains(&line), "{line:?} missing from:\n{text}");
        }
        assert!(text.contains("map_trace_build_info{version=\"1.2.3\"} 1\n"));
        #[cfg(target_os = "linux")]
        {
            assert!(text.contains("\nprocess_cpu_seconds_total "), "{text}");
            assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
        }
    }

    #[test]
    fn attach_failure_labels_are_distinct_snake_case() {
        let labels: std::collections::BTreeSet<_> =
            AttachFailure::ALL.iter().map(|w| w.label()).collect();
        assert_eq!(labels.len(), AttachFailure::ALL.len());
        for l in labels {
            assert!(l.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{l}");
        }
    }

    /// The Debian `prometheus` package's promtool (override with $PROMTOOL).
    fn promtool_check(text: &str) -> (bool, String) {
        let tool = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into());
        let mut child = Command::new(&tool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("running {tool}: {e}; install it with `apt-get install prometheus`")
            });
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), said)
    }

    #[test]
    fn rendering_passes_promtool_lint() {
        let m = Metrics::new("0.1.0");
        m.findings
            .with_label_values(&[
                "concurrent_write_during_iteration",
                "assign",
                "server",
                "",
                "",
            ])
            .inc();
        m.findings
            .with_label_values(&[
                "clear_during_iteration",
                "clear",
                "worker",
                "api",
                "shop/api-1",
            ])
            .inc_by(3);
        raise_to(&m.probe_hits.with_label_values(&["iter_start"]), 42);
        m.events_dropped
            .with_label_values(&["ring_buffer_full"])
            .inc();
        m.stack_samples.inc_by(7);
        m.stack_samples_truncated.inc();
        m.writes_during_growth.inc();
        m.processes_attached.set(2);
        m.process_attaches.inc_by(3);
        m.process_detaches.inc();
        m.attach_failed(AttachFailure::UnsupportedGo);
        m.probe_links.set(14);
        m.bpf_map_entries.with_label_values(&["maps"]).set(9);
        m.finding_groups.set(2);
        m.last_poll.set(1_700_000_000.25);
        let text = m.render();

        let (ok, said) = promtool_check(&text);
        assert!(ok && said.trim().is_empty(), "promtool: {said}\n{text}");

        // The check is real: promtool does flag a counter without the _total suffix.
        let bad = "# HELP x_requests Requests.\n# TYPE x_requests counter\nx_requests 1\n";
        let (ok, said) = promtool_check(bad);
        assert!(
            !ok && said.contains("_total"),
            "promtool accepted {bad:?}: {said}"
        );
    }
}
