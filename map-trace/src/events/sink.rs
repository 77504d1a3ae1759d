//! Where findings go: read from the ring buffer, resolved, grouped, printed; and the kernel's
//! counters read into the summary.

use aya::Ebpf;
use aya::maps::{MapData, PerCpuArray, RingBuf};
use gobin::gotypes::Memory as _;
use map_trace_common::event::{Finding, FindingKind, counter};
use map_trace_common::fatal::{Fatal, FatalMessage};
use map_trace_common::probe::Role;
use map_trace_common::program::map;

use crate::events::repeats::{Folded, RepeatTable};
use crate::output::Format;
use crate::output::group::{Groups, Seen};
use crate::output::{Clock, Report, Summary};
use crate::resolve::Resolver;
use crate::resolve::memory::ProcMem;

/// Where findings go: resolved, grouped, printed.
pub struct Sink<'a> {
    /// Findings, and Go's map fatal errors (`fatal_error`).
    pub findings: RingBuf<MapData>,
    pub fatals: RingBuf<MapData>,
    pub clock: &'a Clock,
    pub format: Format,
    /// Every occurrence in full (`--every-occurrence`), not one per group and updates.
    pub every: bool,
    pub summary: &'a mut Summary,
    pub groups: &'a mut Groups,
    pub resolver: &'a mut Resolver,
    /// The kernel's counts of folded occurrences (`REPEATS`), and the keys followed there.
    pub repeats: Option<aya::maps::HashMap<MapData, u64, map_trace_common::event::Repeats>>,
    pub folded: Folded,
}

impl Sink<'_> {
    /// Prints every finding waiting in the ring buffer: new groups in full and repeats as
    /// rate-limited count updates (all pending ones with `last`), or every occurrence in full.
    pub fn drain(
        &mut self,
        out: &mut impl std::io::Write,
        last: bool,
        mut each: impl FnMut(&mut Resolver, &Report),
    ) {
        while let Some(r) = self.next() {
            let Some(mut r) = r else {
                self.summary.undecodable += 1;
                continue;
            };
            each(self.resolver, &r);
            r.resolve(self.resolver);
            let seen = self.groups.record(&mut r);
            if r.repeat_key != 0
                && !self
                    .folded
                    .sent(r.repeat_key, &r.finding_id, std::time::Instant::now())
                && let Some(t) = self.repeats.as_mut()
            {
                // Not followed: its later occurrences must come through the ring buffer.
                RepeatTable::remove(t, r.repeat_key);
            }
            if !shown_in_full(seen, self.every, r.crash.is_some()) {
                continue;
            }
            let text = match self.format {
                Format::Json => r.to_json() + "\n",
                Format::Human => r.to_human(),
            };
            let _ = out.write_all(text.as_bytes());
        }
        if let Some(t) = self.repeats.as_mut() {
            self.folded
                .read(t, self.groups, self.clock, std::time::Instant::now(), last);
        }
        if !self.every {
            for u in self.groups.due_updates(std::time::SystemTime::now(), last) {
                let text = match self.format {
                    Format::Json => u.to_json() + "\n",
                    Format::Human => u.to_human(),
                };
                let _ = out.write_all(text.as_bytes());
            }
        }
        let _ = out.flush();
    }

    /// The next record of either ring, findings first (a crash ends its process: what led to
    /// it comes before it): Some(None) for one that does not decode.
    fn next(&mut self) -> Option<Option<Report>> {
        if let Some(item) = self.findings.next() {
            return Some(decode::<Finding>(&item).and_then(|f| Report::decode(&f, self.clock)));
        }
        loop {
            let item = self.fatals.next()?;
            let Some(mut f) = decode::<Fatal>(&item) else {
                return Some(None);
            };
            let (unread, tgid, binary) = (f.message_addr != 0, f.tgid, f.binary);
            // From the process if it is still there, else from its executable: a message is a
            // constant of the file (and a process's exit is handled after its records, so its
            // load bias is still known here).
            let resolver = &mut *self.resolver;
            // Called only for a message the probe could not read: /proc/PID/mem is opened then.
            let read = |addr, buf: &mut [u8]| {
                ProcMem::new(tgid).read(addr, buf)
                    || resolver.with_lookup(tgid, binary, |l| l.read_file(addr, buf))
            };
            match f.settle_message(read) {
                FatalMessage::Map => {
                    self.summary.fatals_recovered += unread as u64;
                    return Some(Report::decode_fatal(&f, self.clock));
                }
                FatalMessage::Other => continue,
                // Counted with the records that did not decode.
                FatalMessage::Unread => return Some(None),
            }
        }
    }
}

/// Whether an occurrence is printed in full: the first of its group, one no group could take
/// (the table is full), a crash (each is a process lost), or every one with
/// `--every-occurrence`. Repeats are counted into rate-limited updates, so a hot bug writes a
/// line per group every few seconds, not one per occurrence (a journal's worth).
fn shown_in_full(seen: Seen, every: bool, crash: bool) -> bool {
    every || crash || seen != Seen::Repeat
}

/// A record of plain old data, if it is at least that long.
fn decode<T: aya::Pod>(bytes: &[u8]) -> Option<T> {
    // SAFETY: T is plain old data (every bit pattern valid) and the record is at least its size.
    (bytes.len() >= size_of::<T>())
        .then(|| unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) })
}

pub fn read_counters(ebpf: &Ebpf, summary: &mut Summary) {
    let Some(map) = ebpf.map(map::COUNTERS) else {
        return;
    };
    let Ok(counters) = PerCpuArray::<_, u64>::try_from(map) else {
        return;
    };
    let get = |i: u32| -> u64 { counters.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0) };
    for role in Role::ALL {
        summary.hits.insert(role, get(counter::HITS + role as u32));
    }
    for kind in FindingKind::ALL {
        let n = get(counter::FINDINGS + kind as u32)
            + match kind {
                FindingKind::FatalMapError => summary.fatals_recovered,
                _ => 0,
            };
        if n > 0 {
            summary.findings.insert(kind, n);
        }
    }
    summary.findings_dropped = get(counter::FINDINGS_DROPPED);
    summary.repeats_folded = get(counter::REPEATS_FOLDED);
    summary.tables_full = get(counter::ITERS_FULL) + get(counter::MAPS_FULL);
    summary.writes_unseen = get(counter::WRITES_UNSEEN);
    summary.in_progress_unnamed = get(counter::IN_PROGRESS_UNNAMED);
    summary.writes_during_growth = get(counter::WRITES_DURING_GROWTH);
    summary.stacks = get(counter::STACKS);
    summary.stacks_truncated = get(counter::STACKS_TRUNCATED);
    summary.stacks_unreadable = get(counter::STACKS_UNREADABLE);
    summary.execs_dropped = get(counter::EXECS_DROPPED);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_folded_unless_every_occurrence_is_asked_for() {
        assert!(shown_in_full(Seen::New, false, false));
        assert!(shown_in_full(Seen::Overflow, false, false));
        assert!(!shown_in_full(Seen::Repeat, false, false));
        // A crash is a process lost: always in full.
        assert!(shown_in_full(Seen::Repeat, false, true));
        assert!(shown_in_full(Seen::Repeat, true, false));
    }
}
