//! Occurrences the kernel folded (`REPEATS`, see `map_trace_common::event::Repeats`): the
//! first of each key came through the ring buffer with its `repeat_key`; its later ones are
//! only counted in the kernel. Their counts are read here, at most once a second, into the
//! finding groups, so totals, updates and the summary count every occurrence.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aya::maps::{HashMap as BpfHashMap, MapData};
use map_trace_common::event::{MAX_REPEAT_KEYS, Repeats};

use crate::output::Clock;
use crate::output::group::Groups;

/// Least time between two reads of the kernel's counts.
const READ_EVERY: Duration = Duration::from_secs(1);
/// A key whose count has not moved this long is let go, in the kernel too: its next
/// occurrence comes through the ring buffer again (and joins its group there).
const IDLE_AFTER: Duration = Duration::from_secs(60);

/// The kernel side, a trait so the bookkeeping is tested without a kernel.
pub trait RepeatTable {
    fn get(&self, key: u64) -> Option<Repeats>;
    fn remove(&mut self, key: u64);
}

impl RepeatTable for BpfHashMap<MapData, u64, Repeats> {
    fn get(&self, key: u64) -> Option<Repeats> {
        BpfHashMap::get(self, &key, 0).ok()
    }

    fn remove(&mut self, key: u64) {
        let _ = BpfHashMap::remove(self, &key);
    }
}

struct Tracked {
    finding_id: String,
    /// The kernel's count when last read.
    seen: u64,
    changed: Instant,
}

#[derive(Default)]
pub struct Folded {
    keys: HashMap<u64, Tracked>,
    last_read: Option<Instant>,
}

impl Folded {
    /// A finding with `key` came through the ring buffer (its kernel entry is new, at 0) and
    /// joined group `finding_id`. False when no more keys can be followed: the caller removes
    /// the kernel entry, so later occurrences come through the ring buffer instead.
    pub fn sent(&mut self, key: u64, finding_id: &str, now: Instant) -> bool {
        if !self.keys.contains_key(&key) && self.keys.len() >= MAX_REPEAT_KEYS as usize {
            return false;
        }
        self.keys.insert(
            key,
            Tracked {
                finding_id: finding_id.to_string(),
                seen: 0,
                changed: now,
            },
        );
        true
    }

    /// Adds what the kernel counted since the last read to the groups: once a second, or
    /// whenever `force` (the last drain).
    pub fn read(
        &mut self,
        table: &mut impl RepeatTable,
        groups: &mut Groups,
        clock: &Clock,
        now: Instant,
        force: bool,
    ) {
        if !force
            && self
                .last_read
                .is_some_and(|t| now.duration_since(t) < READ_EVERY)
        {
            return;
        }
        self.last_read = Some(now);
        self.keys.retain(|&key, t| {
            // Gone: evicted (the table is an LRU), or its process's entries were let go.
            let Some(r) = table.get(key) else {
                return false;
            };
            if r.count > t.seen {
                groups.add_repeats(&t.finding_id, r.count - t.seen, clock.wall(r.last_ns));
                t.seen = r.count;
                t.changed = now;
                return true;
            }
            if now.duration_since(t.changed) >= IDLE_AFTER {
                table.remove(key);
                return false;
            }
            true
        });
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::Report;
    use map_trace_common::event::Finding;
    use std::time::SystemTime;

    #[derive(Default)]
    struct Fake(HashMap<u64, Repeats>);

    impl Fake {
        /// The kernel counted `count` repeats of `key`, the latest at `last_ns`.
        fn counted(&mut self, key: u64, count: u64, last_ns: u64) {
            self.0.insert(key, Repeats { count, last_ns });
        }
    }

    impl RepeatTable for Fake {
        fn get(&self, key: u64) -> Option<Repeats> {
            self.0.get(&key).copied()
        }
        fn remove(&mut self, key: u64) {
            self.0.remove(&key);
        }
    }

    fn group(groups: &mut Groups) -> String {
        let clock = Clock::at(SystemTime::UNIX_EPOCH, 0);
        let f = Finding {
            kind: 1,
            ..Finding::default()
        };
        let mut r = Report::decode(&f, &clock).unwrap();
        r.map_type = "map[int]int".into();
        groups.record(&mut r);
        r.finding_id
    }

    #[test]
    fn kernel_counts_reach_the_group_once_each() {
        let clock = Clock::at(SystemTime::UNIX_EPOCH, 0);
        let mut groups = Groups::new(Duration::from_secs(5));
        let id = group(&mut groups);
        let mut table = Fake::default();
        let mut folded = Folded::default();
        let t0 = Instant::now();
        table.counted(7, 0, 0);
        assert!(folded.sent(7, &id, t0));
        table.counted(7, 41, 3_000_000_000);
        folded.read(&mut table, &mut groups, &clock, t0, false);
        let top = groups.top(1);
        assert_eq!(top[0].count, 42, "the first and 41 folded");
        assert_eq!(top[0].last, SystemTime::UNIX_EPOCH + Duration::from_secs(3));
        // Read again within the second: nothing; forced: nothing new either.
        folded.read(&mut table, &mut groups, &clock, t0, true);
        assert_eq!(groups.top(1)[0].count, 42);
        // Evicted in the kernel: no longer followed.
        table.0.clear();
        folded.read(&mut table, &mut groups, &clock, t0 + READ_EVERY, false);
        assert!(folded.is_empty());
    }

    #[test]
    fn a_key_sent_again_starts_from_zero_and_idle_keys_are_let_go() {
        let clock = Clock::at(SystemTime::UNIX_EPOCH, 0);
        let mut groups = Groups::new(Duration::from_secs(5));
        let id = group(&mut groups);
        let mut table = Fake::default();
        let mut folded = Folded::default();
        let t0 = Instant::now();
        folded.sent(7, &id, t0);
        table.counted(7, 5, 1);
        folded.read(&mut table, &mut groups, &clock, t0, true);
        // The kernel entry was evicted and made anew by a later first occurrence.
        table.counted(7, 0, 0);
        folded.sent(7, &id, t0);
        table.counted(7, 2, 2);
        folded.read(&mut table, &mut groups, &clock, t0, true);
        assert_eq!(groups.top(1)[0].count, 1 + 5 + 2);
        folded.read(&mut table, &mut groups, &clock, t0 + IDLE_AFTER, true);
        assert!(folded.is_empty());
        assert!(table.0.is_empty(), "the kernel entry is let go with it");
    }

    #[test]
    fn following_is_bounded() {
        let mut folded = Folded::default();
        let t0 = Instant::now();
        for k in 0..u64::from(MAX_REPEAT_KEYS) {
            assert!(folded.sent(k + 1, "g", t0));
        }
        assert!(!folded.sent(u64::from(MAX_REPEAT_KEYS) + 1, "g", t0));
        assert!(folded.sent(1, "g", t0), "a key already followed is renewed");
        assert_eq!(folded.len(), MAX_REPEAT_KEYS as usize);
    }
}
