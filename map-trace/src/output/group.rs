//! De-duplication: occurrences of the same finding (kind, writer site, iterator site, map type)
//! form one group with a count, first and last seen, and a stable id.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use map_trace_common::event::FindingKind;
use map_trace_common::stack::{HASH_SEED, hash_step};

use crate::output::Report;
use crate::resolve::symbolize::Frame;

/// Groups kept at once; occurrences of further groups are still reported, but not counted
/// into a group (`Groups::overflow`).
pub const MAX_GROUPS: usize = 4096;

/// A group's id: FNV-1a of what identifies it, so the same bug in the same build gets the same
/// id in every run and on every host. Sites are function, file and line, never addresses.
pub fn finding_id(
    kind: FindingKind,
    writer: Option<&Frame>,
    iterator: Option<&Frame>,
    map_type: &str,
) -> String {
    let site = |f: Option<&Frame>| {
        f.map_or_else(String::new, |f| {
            format!("{}|{}|{}", f.function, f.file, f.line)
        })
    };
    let (mut a, mut b) = (site(writer), site(iterator));
    // Two writers racing: A meeting B and B meeting A are the same bug.
    if kind == FindingKind::ConcurrentWrites && b < a {
        std::mem::swap(&mut a, &mut b);
    }
    let text = format!("{}\n{a}\n{b}\n{map_type}", kind.name());
    let mut h = HASH_SEED;
    for b in text.bytes() {
        h = hash_step(h, u64::from(b));
    }
    format!("{h:016x}")
}

#[derive(Clone, Debug)]
pub struct Group {
    pub count: u64,
    pub first: SystemTime,
    pub last: SystemTime,
    /// The latest occurrence, with the group's id and count filled in.
    pub latest: Report,
    /// Count when the group was last printed, and when.
    shown_count: u64,
    shown_at: SystemTime,
}

/// A group seen again since it was last printed: what an update line or object says.
#[derive(Clone, Debug)]
pub struct Update {
    /// The latest occurrence, its `count` the group's total.
    pub latest: Report,
    pub first: SystemTime,
    /// Occurrences since the group was last printed.
    pub new: u64,
}

impl Update {
    pub fn to_human(&self) -> String {
        let r = &self.latest;
        format!(
            "{:<7} {}  {}  [{}]  seen {}\u{d7} (last {})\n",
            r.kind.severity().to_uppercase(),
            r.kind.name(),
            r.map_type,
            r.finding_id,
            r.count,
            humantime::format_rfc3339_millis(r.time),
        )
    }

    /// `{"record":"update",…}`: the group's running count, without stacks (the group's
    /// `finding` object carried them).
    pub fn to_json(&self) -> String {
        #[derive(serde::Serialize)]
        struct Line<'a> {
            record: &'static str,
            kind: &'a str,
            severity: &'a str,
            finding_id: &'a str,
            map_type: &'a str,
            count: u64,
            new: u64,
            first: String,
            last: String,
            pid: u32,
        }
        let r = &self.latest;
        serde_json::to_string(&Line {
            record: "update",
            kind: r.kind.name(),
            severity: r.kind.severity(),
            finding_id: &r.finding_id,
            map_type: &r.map_type,
            count: r.count,
            new: self.new,
            first: humantime::format_rfc3339_millis(self.first).to_string(),
            last: humantime::format_rfc3339_millis(r.time).to_string(),
            pid: r.pid,
        })
        .unwrap_or_default()
    }
}

/// What the human output should do with an occurrence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// First of its group: print the whole block.
    New,
    /// Repeat: counted, printed later as a rate-limited update.
    Repeat,
    /// The group table is full: print it like a new one, uncounted.
    Overflow,
}

pub struct Groups {
    groups: HashMap<String, Group>,
    /// Least time between two update lines of one group.
    update_every: Duration,
    pub overflow: u64,
}

impl Groups {
    pub fn new(update_every: Duration) -> Self {
        Groups {
            groups: HashMap::new(),
            update_every,
            overflow: 0,
        }
    }

    /// Files `r` into its group, setting its `finding_id` and `count`.
    pub fn record(&mut self, r: &mut Report) -> Seen {
        r.finding_id = finding_id(
            r.kind,
            r.writer_stack.first(),
            r.iterator_stack.first(),
            &r.map_type,
        );
        if let Some(g) = self.groups.get_mut(&r.finding_id) {
            g.count += 1;
            g.first = g.first.min(r.time);
            g.last = g.last.max(r.time);
            r.count = g.count;
            g.latest = r.clone();
            return Seen::Repeat;
        }
        if self.groups.len() >= MAX_GROUPS {
            self.overflow += 1;
            r.count = 1;
            return Seen::Overflow;
        }
        r.count = 1;
        self.groups.insert(
            r.finding_id.clone(),
            Group {
                count: 1,
                first: r.time,
                last: r.time,
                latest: r.clone(),
                shown_count: 1,
                shown_at: r.time,
            },
        );
        Seen::New
    }

    /// `n` more occurrences of group `id`, the latest at `at`, counted in the kernel
    /// (`events::repeats`). Nothing for a group no longer kept.
    pub fn add_repeats(&mut self, id: &str, n: u64, at: SystemTime) {
        if let Some(g) = self.groups.get_mut(id) {
            g.count += n;
            g.last = g.last.max(at);
            g.latest.count = g.count;
            g.latest.time = g.latest.time.max(at);
        }
    }

    /// Groups seen again since they were last printed, at most once per `update_every` each;
    /// marks them printed. With `flush`, every group with unprinted occurrences.
    pub fn due_updates(&mut self, now: SystemTime, flush: bool) -> Vec<Update> {
        let mut due: Vec<&mut Group> = self
            .groups
            .values_mut()
            .filter(|g| g.count > g.shown_count)
            .filter(|g| {
                flush
                    || now
                        .duration_since(g.shown_at)
                        .is_ok_and(|d| d >= self.update_every)
            })
            .collect();
        due.sort_by(|a, b| a.latest.finding_id.cmp(&b.latest.finding_id));
        due.into_iter()
            .map(|g| {
                let new = g.count - g.shown_count;
                g.shown_count = g.count;
                g.shown_at = now;
                Update {
                    latest: g.latest.clone(),
                    first: g.first,
                    new,
                }
            })
            .collect()
    }

    /// The `n` groups seen most often, most first (ties: the earliest first).
    pub fn top(&self, n: usize) -> Vec<&Group> {
        let mut all: Vec<&Group> = self.groups.values().collect();
        all.sort_by(|a, b| b.count.cmp(&a.count).then(a.first.cmp(&b.first)));
        all.truncate(n);
        all
    }

    /// Every group, the first seen first (ties: by id, so the order is the same every run).
    pub fn all(&self) -> Vec<&Group> {
        let mut all: Vec<&Group> = self.groups.values().collect();
        all.sort_by(|a, b| {
            a.first
                .cmp(&b.first)
                .then(a.latest.finding_id.cmp(&b.latest.finding_id))
        });
        all
    }

    /// The kinds of every group reported.
    pub fn kinds(&self) -> Vec<FindingKind> {
        let mut k: Vec<_> = self.groups.values().map(|g| g.latest.kind).collect();
        k.sort();
        k.dedup();
        k
    }

    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::Clock;
    use map_trace_common::event::Finding;

    fn frame(function: &str, line: u32) -> Frame {
        Frame {
            function: function.into(),
            file: "/src/cache.go".into(),
            line,
        }
    }

    fn report(kind: u32, writer_line: u32, at_ms: u64) -> Report {
        let f = Finding {
            write_ns: at_ms * 1_000_000,
            kind,
            writer_goid: 18,
            iterator_goid: 7,
            ..Finding::default()
        };
        let clock = Clock::at(SystemTime::UNIX_EPOCH, 0);
        let mut r = Report::decode(&f, &clock).unwrap();
        r.map_type = "map[string]main.entry".into();
        r.writer_stack = vec![frame("main.sweep", writer_line), frame("main.run", 30)];
        r.iterator_stack = vec![frame("main.stats", 18)];
        r
    }

    #[test]
    fn ids_are_stable_and_depend_only_on_the_group_key() {
        let id = finding_id(
            FindingKind::ConcurrentWrite,
            Some(&frame("main.sweep", 42)),
            Some(&frame("main.stats", 18)),
            "map[string]main.entry",
        );
        // Pinned (FNV-1a 64 of "kind\nwriter\niterator\ntype", computed independently): ids
        // must not change between releases, or what users keyed on them breaks.
        assert_eq!(id, "0ed2a6002fd3ce2a");
        let other_line = finding_id(
            FindingKind::ConcurrentWrite,
            Some(&frame("main.sweep", 43)),
            Some(&frame("main.stats", 18)),
            "map[string]main.entry",
        );
        assert_ne!(id, other_line);
        let other_kind = finding_id(
            FindingKind::Insert,
            Some(&frame("main.sweep", 42)),
            Some(&frame("main.stats", 18)),
            "map[string]main.entry",
        );
        assert_ne!(id, other_kind);
    }

    #[test]
    fn repeats_are_counted_and_updates_rate_limited() {
        let mut g = Groups::new(Duration::from_secs(5));
        let mut a = report(0, 42, 1000);
        assert_eq!(g.record(&mut a), Seen::New);
        assert_eq!(a.count, 1);
        // Only deeper frames differ: same group.
        let mut b = report(0, 42, 2000);
        b.writer_stack[1].line = 31;
        assert_eq!(g.record(&mut b), Seen::Repeat);
        assert_eq!((b.count, b.finding_id.clone()), (2, a.finding_id.clone()));
        let mut c = report(0, 99, 2500);
        assert_eq!(g.record(&mut c), Seen::New);
        assert_eq!(g.len(), 2);

        let t = |ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        assert!(g.due_updates(t(3000), false).is_empty(), "too soon");
        let due = g.due_updates(t(6000), false);
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].latest.count, due[0].new), (2, 1));
        assert_eq!(due[0].first, t(1000));
        assert!(g.due_updates(t(20000), false).is_empty(), "nothing new");
        let mut d = report(0, 99, 7000);
        g.record(&mut d);
        assert_eq!(
            g.due_updates(t(7001), true).len(),
            1,
            "flush ignores the rate"
        );

        let top = g.top(10);
        assert_eq!(top.len(), 2);
        assert_eq!(top[0].count, 2);
        assert_eq!(top[0].first, t(1000));
        assert_eq!(top[0].last, t(2000));
    }

    /// The JSON contract of the two records a journal gets: a `finding` per new group, with
    /// stacks, and `update`s with the running count and no stacks.
    #[test]
    fn json_records_finding_then_update() {
        let mut g = Groups::new(Duration::from_secs(5));
        let mut a = report(0, 42, 1000);
        g.record(&mut a);
        let first: serde_json::Value = serde_json::from_str(&a.to_json()).unwrap();
        assert_eq!(first["record"], "finding");
        assert_eq!(first["count"], 1);
        assert_eq!(first["writer_stack"][0]["function"], "main.sweep");
        for ms in [2000, 3000, 4000] {
            g.record(&mut report(0, 42, ms));
        }
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(7);
        let due = g.due_updates(t, false);
        let u: serde_json::Value = serde_json::from_str(&due[0].to_json()).unwrap();
        let keys: Vec<&str> = u.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "count",
                "finding_id",
                "first",
                "kind",
                "last",
                "map_type",
                "new",
                "pid",
                "record",
                "severity"
            ]
        );
        assert_eq!(u["record"], "update");
        assert_eq!(u["finding_id"], first["finding_id"]);
        assert_eq!((u["count"].as_u64(), u["new"].as_u64()), (Some(4), Some(3)));
        assert_eq!(u["first"], "1970-01-01T00:00:01.000Z");
        assert_eq!(u["last"], "1970-01-01T00:00:04.000Z");
        assert!(due[0].to_human().contains("seen 4\u{d7}"));
    }

    #[test]
    fn a_full_table_still_reports() {
        let mut g = Groups::new(Duration::from_secs(5));
        for line in 0..MAX_GROUPS as u32 {
            g.record(&mut report(0, line, 1));
        }
        assert_eq!(g.record(&mut report(0, 1_000_000, 1)), Seen::Overflow);
        assert_eq!(g.record(&mut report(0, 5, 1)), Seen::Repeat);
        assert_eq!(g.overflow, 1);
    }

    #[test]
    fn two_writers_make_one_group_whichever_met_the_other() {
        let f = |function: &str, line| Frame {
            function: function.into(),
            file: "/src/main.go".into(),
            line,
        };
        let (a, b) = (f("main.a", 1), f("main.b", 2));
        let k = FindingKind::ConcurrentWrites;
        assert_eq!(
            finding_id(k, Some(&a), Some(&b), "map[int]int"),
            finding_id(k, Some(&b), Some(&a), "map[int]int")
        );
        // A range and a write are not interchangeable.
        let k = FindingKind::ConcurrentWrite;
        assert_ne!(
            finding_id(k, Some(&a), Some(&b), "map[int]int"),
            finding_id(k, Some(&b), Some(&a), "map[int]int")
        );
    }
}
