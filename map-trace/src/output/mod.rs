//! Output: findings as users see them — one block (or one JSON line) per occurrence (here),
//! Go's map fatal errors (`crash`), finding groups (`group`), the exit summary (`summary`) —
//! and the `inspect` document (`inspect`).

mod crash;
pub mod group;
pub mod inspect;
pub mod sarif;
mod summary;

pub use crash::{Crash, InProgress};
pub use summary::{Summary, TopFinding};

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use map_trace_common::event::{Finding, FindingKind, Op};
use serde::Serialize;

use std::sync::Arc;

use crate::discover::location::Location;
use crate::resolve::Resolver;
use crate::resolve::symbolize::Frame;

/// How findings are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Human,
    Json,
}

/// Frames per stack in the human output; JSON carries them all.
const HUMAN_FRAMES: usize = 8;

/// A finding decoded from the kernel record, with wall-clock time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub kind: FindingKind,
    pub op: Op,
    /// `concurrent_writes`: the write that was in progress (its goroutine is `iterator_goid`,
    /// its stack `iterator_stack`).
    pub other_op: Option<Op>,
    pub map: u64,
    pub writer_goid: u64,
    pub iterator_goid: u64,
    pub growing: bool,
    pub pid: u32,
    /// The executable's id in this session (see `Finding::binary`).
    pub binary: u32,
    pub writes: u32,
    pub time: SystemTime,
    /// Its key in the kernel's `REPEATS` table, where later equal occurrences are counted
    /// (0: not folded).
    pub repeat_key: u64,
    /// Kernel keys of the two stacks (0: not captured), resolved into the frames below.
    pub writer_stack_key: u64,
    pub iterator_stack_key: u64,
    /// The map type descriptor's runtime address, resolved into `map_type`.
    pub map_type_addr: u64,
    pub map_type: String,
    pub writer_stack: Vec<Frame>,
    pub iterator_stack: Vec<Frame>,
    /// Identifies the finding's group (kind, both sites, map type); stable across runs.
    pub finding_id: String,
    /// Occurrences of the group so far, this one included.
    pub count: u64,
    /// `fatal_map_error` only: what the crash carried. The writer side above is then its first
    /// write in progress (if any), the iterator side the goroutine Go named.
    pub crash: Option<Box<Crash>>,
    /// Where the process runs (cgroup, container, unit, pod), when it was attached.
    pub location: Option<Arc<Location>>,
}

/// Converts kernel monotonic timestamps (`bpf_ktime_get_ns`) to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    realtime_at: SystemTime,
    monotonic_ns_at: u64,
}

impl Clock {
    /// A clock that reads `realtime_at` when the monotonic clock read `monotonic_ns_at`.
    pub fn at(realtime_at: SystemTime, monotonic_ns_at: u64) -> Self {
        Clock {
            realtime_at,
            monotonic_ns_at,
        }
    }

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
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Report {
    /// None for a record with an unknown kind or op (a newer eBPF object, or corruption).
    pub fn decode(f: &Finding, clock: &Clock) -> Option<Self> {
        Some(Report {
            kind: FindingKind::from_u32(f.kind)?,
            op: Op::from_u32(f.op)?,
            other_op: match FindingKind::from_u32(f.kind)? {
                FindingKind::ConcurrentWrites => Some(Op::from_u32(f.other_op)?),
                _ => None,
            },
            map: f.map,
            writer_goid: f.writer_goid,
            iterator_goid: f.iterator_goid,
            growing: f.growing != 0,
            pid: f.tgid,
            binary: f.binary,
            writes: f.writes,
            time: clock.wall(f.write_ns),
            repeat_key: f.repeat_key,
            writer_stack_key: f.writer_stack,
            iterator_stack_key: f.iterator_stack,
            map_type_addr: f.map_type,
            map_type: String::new(),
            writer_stack: Vec::new(),
            iterator_stack: Vec::new(),
            finding_id: String::new(),
            count: 0,
            crash: None,
            location: None,
        })
    }

    /// The op for the findings metric: a crash with no write in progress named has none.
    pub fn op_label(&self) -> &'static str {
        match &self.crash {
            Some(c) if c.writes.is_empty() => "none",
            _ => self.op.name(),
        }
    }

    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Line<'a> {
            /// `finding`: one occurrence in full (the first of its group, or every one with
            /// `--every-occurrence`); `update` objects are `group::Update::to_json`.
            record: &'static str,
            kind: &'a str,
            severity: &'a str,
            /// `fatal_map_error`: the runtime's message.
            #[serde(skip_serializing_if = "Option::is_none")]
            message: Option<&'a str>,
            /// The writer side; absent for a crash without a write in progress named.
            #[serde(skip_serializing_if = "Option::is_none")]
            op: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            map: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            writer_goid: Option<u64>,
            /// The range's side; for `concurrent_writes` and `fatal_map_error` the `other_*`
            /// fields instead.
            #[serde(skip_serializing_if = "Option::is_none")]
            iterator_goid: Option<u64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            other_op: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            other_goid: Option<u64>,
            growing: bool,
            pid: u32,
            writes: u32,
            timestamp: String,
            map_type: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            writer_stack: Option<&'a [Frame]>,
            #[serde(skip_serializing_if = "Option::is_none")]
            iterator_stack: Option<&'a [Frame]>,
            #[serde(skip_serializing_if = "Option::is_none")]
            other_stack: Option<&'a [Frame]>,
            #[serde(skip_serializing_if = "Option::is_none")]
            writes_in_progress: Option<&'a [InProgress]>,
            #[serde(skip_serializing_if = "Option::is_none")]
            writes_in_progress_unnamed: Option<u32>,
            finding_id: &'a str,
            count: u64,
            /// `cgroup`, `container_id`, `unit`, `pod_*`, `container_name`: each when known.
            #[serde(flatten, skip_serializing_if = "Option::is_none")]
            location: Option<&'a Location>,
        }
        let crash = self.crash.as_deref();
        // A sentinel's finding knows the range, not the writer.
        let sentinel = self.kind == FindingKind::MapChanged;
        let writer = !sentinel && crash.is_none_or(|c| !c.writes.is_empty());
        let other = self.other_op.is_some() || crash.is_some();
        serde_json::to_string(&Line {
            record: "finding",
            kind: self.kind.name(),
            severity: self.kind.severity(),
            message: crash.map(|c| c.message.as_str()),
            op: writer.then(|| self.op.name()),
            map: (writer || sentinel).then(|| format!("{:#x}", self.map)),
            writer_goid: writer.then_some(self.writer_goid),
            iterator_goid: (!other).then_some(self.iterator_goid),
            other_op: match crash {
                Some(c) => Some(c.noticed),
                None => self.other_op.map(Op::name),
            },
            other_goid: other.then_some(self.iterator_goid),
            growing: self.growing,
            pid: self.pid,
            writes: self.writes,
            timestamp: humantime::format_rfc3339_millis(self.time).to_string(),
            map_type: &self.map_type,
            writer_stack: writer.then_some(&self.writer_stack[..]),
            iterator_stack: (!other).then_some(&self.iterator_stack[..]),
            other_stack: other.then_some(&self.iterator_stack[..]),
            writes_in_progress: crash.map(|c| &c.writes[..]),
            writes_in_progress_unnamed: crash.map(|c| c.unnamed),
            finding_id: &self.finding_id,
            count: self.count,
            location: self.location.as_deref(),
        })
        .unwrap_or_default()
    }

    /// The block printed the first time a finding's group is seen.
    pub fn to_human(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<7} {}  {}  pid {}  {}  [{}]",
            self.kind.severity().to_uppercase(),
            self.kind.name(),
            self.map_type,
            self.pid,
            humantime::format_rfc3339_millis(self.time),
            self.finding_id,
        );
        if let Some(at) = self.location.as_ref().and_then(|l| l.describe()) {
            let _ = writeln!(s, "  in {at}");
        }
        if let Some(c) = &self.crash {
            c.write_human(&mut s, self.iterator_goid, &self.iterator_stack);
            return s;
        }
        if self.kind == FindingKind::MapChanged {
            let mut what = format!(
                "  the map gained {} element(s) during a range by goroutine {}",
                self.writes, self.iterator_goid
            );
            if self.growing {
                what.push_str(" and grew");
            }
            let _ = writeln!(
                s,
                "{what}; the writer is not known yet (sentinel mode: the full probes are attached for a while to name it)"
            );
            write_frames(&mut s, &self.iterator_stack);
            return s;
        }
        if let Some(other) = self.other_op {
            let mut who = format!("  {} by goroutine {}", self.op.name(), self.writer_goid);
            if self.growing {
                who.push_str("; the map was growing");
            }
            let _ = writeln!(s, "{who}");
            write_frames(&mut s, &self.writer_stack);
            let _ = writeln!(
                s,
                "  while goroutine {} {}s (in progress)",
                self.iterator_goid,
                other.name()
            );
            write_frames(&mut s, &self.iterator_stack);
            return s;
        }
        let own = self.writer_goid == self.iterator_goid;
        let mut who = if own {
            format!(
                "  {} by goroutine {} during its own range",
                self.op.name(),
                self.writer_goid
            )
        } else {
            format!("  {} by goroutine {}", self.op.name(), self.writer_goid)
        };
        if self.writes > 1 {
            let _ = write!(who, " ({} writes since the previous step)", self.writes);
        }
        if self.growing {
            who.push_str("; the map was growing");
        }
        let _ = writeln!(s, "{who}");
        write_frames(&mut s, &self.writer_stack);
        if own {
            let _ = writeln!(s, "  in the range at");
        } else {
            let _ = writeln!(s, "  while goroutine {} ranges", self.iterator_goid);
        }
        write_frames(&mut s, &self.iterator_stack);
        s
    }
}

pub(crate) fn write_frames(s: &mut String, frames: &[Frame]) {
    if frames.is_empty() {
        let _ = writeln!(s, "    (stack not captured)");
        return;
    }
    let width = frames
        .iter()
        .take(HUMAN_FRAMES)
        .map(|f| f.function.len())
        .max()
        .unwrap_or(0);
    for f in frames.iter().take(HUMAN_FRAMES) {
        let _ = writeln!(s, "    {:<width$}  {}", f.function, f.location());
    }
    if frames.len() > HUMAN_FRAMES {
        let _ = writeln!(s, "    … {} more", frames.len() - HUMAN_FRAMES);
    }
}

impl Report {
    /// Fills the stacks and map types from the kernel's references in the finding.
    pub fn resolve(&mut self, resolver: &mut Resolver) {
        self.location = resolver.location(self.pid);
        resolver.with_lookup(self.pid, self.binary, |l| {
            self.writer_stack = l.stack(self.writer_stack_key);
            self.iterator_stack = l.stack(self.iterator_stack_key);
            self.map_type = l.map_type(self.map_type_addr);
            if let Some(c) = self.crash.as_deref_mut() {
                for w in &mut c.writes {
                    w.stack = l.stack(w.stack_key);
                    w.map_type = l.map_type(w.map_type_addr);
                }
                if c.writes.is_empty() {
                    self.map_type = "map[?]? (no write in progress named)".into();
                }
                // From its runtime frames, which the shown stack leaves out.
                c.noticed_in(&l.untrimmed(self.iterator_stack_key));
            }
        });
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
            map_type: 0x4a0000,
            writer_stack: 1,
            iterator_stack: 2,
            writer_goid: 18,
            iterator_goid: 7,
            repeat_key: 0,
            tgid: 4242,
            kind,
            op,
            growing: 1,
            writes: 1,
            binary: 0,
            other_op: 0,
            _pad: 0,
        }
    }

    #[test]
    fn two_writers_are_named_as_the_write_and_the_other_write() {
        let clock = Clock::at(SystemTime::UNIX_EPOCH, 0);
        let mut f = finding(FindingKind::ConcurrentWrites as u32, Op::Delete as u32);
        f.other_op = Op::Clear as u32;
        let mut r = Report::decode(&f, &clock).unwrap();
        let frame = |function: &str| Frame {
            function: function.into(),
            file: "/src/main.go".into(),
            line: 7,
        };
        r.writer_stack = vec![frame("main.sweep")];
        r.iterator_stack = vec![frame("main.reset")];
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["kind"], "concurrent_writes");
        assert_eq!(v["severity"], "error");
        assert_eq!(
            (v["op"].clone(), v["writer_goid"].clone()),
            ("delete".into(), 18.into())
        );
        assert_eq!(
            (v["other_op"].clone(), v["other_goid"].clone()),
            ("clear".into(), 7.into())
        );
        assert_eq!(v["other_stack"][0]["function"], "main.reset");
        assert!(v.get("iterator_goid").is_none() && v.get("iterator_stack").is_none());
        let h = r.to_human();
        assert!(
            h.contains("delete by goroutine 18; the map was growing"),
            "{h}"
        );
        assert!(h.contains("while goroutine 7 clears (in progress)"), "{h}");
        // Only concurrent_writes carries another op.
        let r = Report::decode(&finding(0, 1), &clock).unwrap();
        assert_eq!(r.other_op, None);
    }

    #[test]
    fn json_line_has_the_contract_fields() {
        let clock = Clock::at(SystemTime::UNIX_EPOCH, 0);
        let mut r = Report::decode(&finding(0, 1), &clock).unwrap();
        r.map_type = "map[uint64]int".into();
        r.writer_stack = vec![Frame {
            function: "main.f".into(),
            file: "/src/main.go".into(),
            line: 42,
        }];
        r.finding_id = "00112233aabbccdd".into();
        r.count = 3;
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
        assert_eq!(v["map_type"], "map[uint64]int");
        assert_eq!(
            v["writer_stack"],
            serde_json::json!([{"function": "main.f", "file": "/src/main.go", "line": 42}])
        );
        assert_eq!(v["iterator_stack"], serde_json::json!([]));
        assert_eq!(v["finding_id"], "00112233aabbccdd");
        assert_eq!(v["count"], 3);
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
        let mut r = Report::decode(&finding(0, 0), &clock).unwrap();
        r.map_type = "map[string]main.entry".into();
        r.writer_stack = (0..10)
            .map(|i| Frame {
                function: format!("main.f{i}"),
                file: "/src/cache/janitor.go".into(),
                line: 40 + i,
            })
            .collect();
        let h = r.to_human();
        assert!(
            h.starts_with("ERROR   concurrent_write_during_iteration  map[string]main.entry"),
            "{h}"
        );
        assert!(h.contains("  assign by goroutine 18"), "{h}");
        assert!(h.contains("    main.f0  /src/cache/janitor.go:40\n"), "{h}");
        assert!(h.contains("… 2 more"), "{h}");
        assert!(
            h.contains("  while goroutine 7 ranges\n    (stack not captured)"),
            "{h}"
        );
        assert!(h.contains("growing"), "{h}");
    }
}
