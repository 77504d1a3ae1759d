//! The exit summary: totals, what was lost, and the most frequent findings.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::SystemTime;

use map_trace_common::event::FindingKind;
use map_trace_common::probe::Role;

use super::Report;
use crate::resolve::symbolize::Frame;

/// Totals for the exit summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub findings: BTreeMap<FindingKind, u64>,
    pub hits: BTreeMap<Role, u64>,
    pub findings_dropped: u64,
    pub tables_full: u64,
    pub writes_unseen: u64,
    /// Writes in progress seen but not reported: ended before they could be named.
    pub in_progress_unnamed: u64,
    pub writes_during_growth: u64,
    /// Occurrences counted in the kernel as repeats of one already reported (same stacks).
    pub repeats_folded: u64,
    /// Records that did not decode, and fatal errors whose message neither the probe nor the
    /// daemon could read.
    pub undecodable: u64,
    /// Fatal errors whose message only the daemon could read, found a map's: findings the
    /// kernel did not count.
    pub fatals_recovered: u64,
    /// Stacks walked in the kernel; of those, cut at the depth bound; not captured at all
    /// (first frame unreadable); evicted from the stack table before they were read.
    pub stacks: u64,
    pub stacks_truncated: u64,
    pub stacks_unreadable: u64,
    /// Exec notices lost (`--exe`): a process they announced is picked up by its first finding.
    pub execs_dropped: u64,
    pub stacks_lost: u64,
    /// Occurrences not grouped because the group table was full.
    pub ungrouped: u64,
    /// Sentinel mode: escalations started, and changes seen while one could not start yet.
    /// None in the other modes.
    pub escalations: Option<(u64, u64)>,
    /// The most frequent finding groups: their latest occurrence, with id and count.
    pub top: Vec<TopFinding>,
}

/// One line of the exit summary's list of most frequent findings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopFinding {
    pub latest: Report,
    pub first: SystemTime,
    pub last: SystemTime,
}

impl Summary {
    pub fn to_human(&self) -> String {
        let mut s = String::new();
        let total: u64 = self.findings.values().sum();
        let _ = write!(s, "map-trace summary: {total} finding(s)");
        if total > 0 {
            let by: Vec<String> = self
                .findings
                .iter()
                .map(|(k, n)| format!("{} {n}", k.name()))
                .collect();
            let _ = write!(s, " ({})", by.join(", "));
        }
        s.push('\n');
        let hits: Vec<String> = Role::ALL
            .iter()
            .map(|r| format!("{} {}", r.name(), self.hits.get(r).copied().unwrap_or(0)))
            .collect();
        let _ = writeln!(s, "  probes hit: {}", hits.join(", "));
        let _ = writeln!(s, "  writes to growing maps: {}", self.writes_during_growth);
        let _ = writeln!(
            s,
            "  repeats: {} occurrence(s) counted in the kernel, their stacks equal to one already reported",
            self.repeats_folded
        );
        let _ = writeln!(
            s,
            "  lost: {} finding(s) (ring buffer full), {} table insert(s) (tables full), {} write(s) overwritten before a step examined them, {} write(s) in progress that ended before they could be named, {} undecodable record(s)",
            self.findings_dropped,
            self.tables_full,
            self.writes_unseen,
            self.in_progress_unnamed,
            self.undecodable
        );
        let _ = writeln!(
            s,
            "  stacks: {} captured, {} truncated at {} frames, {} unreadable, {} lost before they were read",
            self.stacks,
            self.stacks_truncated,
            map_trace_common::stack::MAX_STACK_DEPTH,
            self.stacks_unreadable,
            self.stacks_lost
        );
        if let Some((started, deferred)) = self.escalations {
            let _ = writeln!(
                s,
                "  sentinel: {started} escalation(s) to the full probes; {deferred} range(s) saw a change while their executable could not escalate again yet"
            );
        }
        if self.ungrouped > 0 {
            let _ = writeln!(
                s,
                "  {} occurrence(s) not grouped (group table full)",
                self.ungrouped
            );
        }
        if !self.top.is_empty() {
            let _ = writeln!(s, "  top findings:");
            for t in &self.top {
                let r = &t.latest;
                let site = |frames: &[Frame]| {
                    frames.first().map_or_else(
                        || "?".to_string(),
                        |f| format!("{} ({})", f.function, f.location()),
                    )
                };
                // Two writers: the second site is the other write, not a range.
                // A crash: the side Go printed, the one that noticed.
                let second = match (&r.crash, r.other_op) {
                    (Some(_), _) => "noticed",
                    (None, Some(_)) => "other",
                    (None, None) => "range",
                };
                let _ = writeln!(
                    s,
                    "  {:>6}\u{d7} {} {}  [{}]  first {}  last {}\n           write   {}\n           {second:<8}{}",
                    r.count,
                    r.kind.name(),
                    r.map_type,
                    r.finding_id,
                    humantime::format_rfc3339_millis(t.first),
                    humantime::format_rfc3339_millis(t.last),
                    if r.kind == FindingKind::MapChanged {
                        "not known (sentinel)".to_string()
                    } else {
                        site(&r.writer_stack)
                    },
                    site(&r.iterator_stack),
                );
            }
        }
        s
    }
}
