//! Findings as users see them: one block (or one JSON line) per finding, and the exit summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use map_trace_common::event::{Finding, FindingKind, Op};
use map_trace_common::probe::Role;
use serde::Serialize;

/// A finding decoded from the kernel record, with wall-clock time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub kind: FindingKind,
    pub op: Op,
    pub map: u64,
    pub writer_goid: u64,
    pub iterator_goid: u64,
    pub growing: bool,
    pub pid: u32,
    pub writes: u32,
    pub time: SystemTime,
}

/// Converts kernel monotonic timestamps (`bpf_ktime_get_ns`) to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    realtime_at: SystemTime,
    monotonic_ns_at: u64,
}

impl Clock {
    pub fn now() -> Self {
        Clock {
            realtime_at: SystemTime::now(),
            monotonic_ns_at: monotonic_ns(),
        }
    }

    pub fn wall(&self, monotonic_ns: u64) -> SystemTime {
        if monotonic_ns >= self.monotonic_ns_at {
            self.realtime_at + Duration::from_nanos(monotonic_ns - self.monotonic_ns_at)
        } else {
            self.realtime_at - Duration::from_nanos(self.monotonic_ns_at - monotonic_ns)
        }
    }
}

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Report {
    /// None for a record with an unknown kind or op (a newer eBPF object, or corruption).
    pub fn decode(f: &Finding, clock: &Clock) -> Option<Self> {
        Some(Report {
            kind: FindingKind::from_u32(f.kind)?,
            op: Op::from_u32(f.op)?,
            map: f.map,
            writer_goid: f.writer_goid,
            iterator_goid: f.iterator_goid,
            growing: f.growing != 0,
            pid: f.tgid,
            writes: f.writes,
            time: clock.wall(f.write_ns),
        })
    }

    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Line<'a> {
            kind: &'a str,
            severity: &'a str,
            op: &'a str,
            map: String,
            writer_goid: u64,
            iterator_goid: u64,
            growing: bool,
            pid: u32,
            writes: u32,
            timestamp: String,
        }
        serde_json::to_string(&Line {
            kind: self.kind.name(),
            severity: self.kind.severity(),
            op: self.op.name(),
            map: format!("{:#x}", self.map),
            writer_goid: self.writer_goid,
            iterator_goid: self.iterator_goid,
            growing: self.growing,
            pid: self.pid,
            writes: self.writes,
            timestamp: humantime::format_rfc3339_millis(self.time).to_string(),
        })
        .unwrap_or_default()
    }

    pub fn to_human(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<7} {}  map {:#x}  pid {}  {}",
            self.kind.severity().to_uppercase(),
            self.kind.name(),
            self.map,
            self.pid,
            humantime::format_rfc3339_millis(self.time)
        );
        let who = if self.writer_goid == self.iterator_goid {
            format!(
                "goroutine {} ({} during its own range)",
                self.writer_goid,
                self.op.name()
            )
        } else {
            format!(
                "{} by goroutine {} while goroutine {} ranges over the map",
                self.op.name(),
                self.writer_goid,
                self.iterator_goid
            )
        };
        let _ = write!(s, "  {who}");
        if self.writes > 1 {
            let _ = write!(s, " ({} writes since the previous step)", self.writes);
        }
        if self.growing {
            let _ = write!(s, "; the map was growing");
        }
        s.push('\n');
        s
    }
}

/// Totals for the exit summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub findings: BTreeMap<FindingKind, u64>,
    pub hits: BTreeMap<Role, u64>,
    pub findings_dropped: u64,
    pub tables_full: u64,
    pub writes_unseen: u64,
    pub writes_during_growth: u64,
    pub undecodable: u64,
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
            "  lost: {} finding(s) (ring buffer full), {} table insert(s) (tables full), {} write(s) overwritten before a step examined them, {} undecodable record(s)",
            self.findings_dropped, self.tables_full, self.writes_unseen, self.undecodable
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(kind: u32, op: u32) -> Finding {
        Finding {
            write_ns: 5_000_000_000,
            step_ns: 5_000_000_100,
            map: 0xc000012345,
            writer_goid: 18,
            iterator_goid: 7,
            tgid: 4242,
            kind,
            op,
            growing: 1,
            writes: 1,
            _pad: 0,
        }
    }

    #[test]
    fn json_line_has_the_contract_fields() {
        let clock = Clock {
            realtime_at: SystemTime::UNIX_EPOCH,
            monotonic_ns_at: 0,
        };
        let r = Report::decode(&finding(0, 1), &clock).unwrap();
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["kind"], "concurrent_write_during_iteration");
        assert_eq!(v["severity"], "error");
        assert_eq!(v["op"], "delete");
        assert_eq!(v["map"], "0xc000012345");
        assert_eq!(v["writer_goid"], 18);
        assert_eq!(v["iterator_goid"], 7);
        assert_eq!(v["growing"], true);
        assert_eq!(v["pid"], 4242);
        assert_eq!(v["timestamp"], "1970-01-01T00:00:05.000Z");
    }

    #[test]
    fn unknown_kinds_are_not_decoded() {
        let clock = Clock::now();
        assert!(Report::decode(&finding(9, 0), &clock).is_none());
        assert!(Report::decode(&finding(0, 7), &clock).is_none());
    }

    #[test]
    fn human_block_names_both_goroutines() {
        let clock = Clock::now();
        let h = Report::decode(&finding(0, 0), &clock).unwrap().to_human();
        assert!(
            h.starts_with("ERROR   concurrent_write_during_iteration"),
            "{h}"
        );
        assert!(
            h.contains("assign by goroutine 18 while goroutine 7 ranges"),
            "{h}"
        );
        assert!(h.contains("growing"), "{h}");
    }
}
