//! Where findings go: read from the ring buffer, resolved, grouped, printed; and the kernel's
//! counters read into the summary.

use aya::Ebpf;
use aya::maps::{MapData, PerCpuArray, RingBuf};
use map_trace_common::event::{Finding, FindingKind, counter};
use map_trace_common::fatal::Fatal;
use map_trace_common::probe::Role;
use map_trace_common::program::map;

use crate::output::Format;
use crate::output::group::{Groups, Seen};
use crate::output::{Clock, Report, Summary};
use crate::resolve::Resolver;

/// Where findings go: resolved, grouped, printed.
pub struct Sink<'a> {
    /// Findings, and Go's map fatal errors (`fatal_error`).
    pub findings: RingBuf<MapData>,
    pub fatals: RingBuf<MapData>,
    pub clock: &'a Clock,
    pub format: Format,
    pub summary: &'a mut Summary,
    pub groups: &'a mut Groups,
    pub resolver: &'a mut Resolver,
}

impl Sink<'_> {
    /// Prints every finding waiting in the ring buffer; in human output, new groups in full and
    /// repeats as rate-limited count updates (all pending ones with `last`).
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
            let text = match (self.format, seen) {
                (Format::Json, _) => r.to_json() + "\n",
                // A crash is printed in full every time: each is a process lost.
                (Format::Human, _) if r.crash.is_some() => r.to_human(),
                (Format::Human, Seen::New | Seen::Overflow) => r.to_human(),
                (Format::Human, Seen::Repeat) => continue,
            };
            let _ = out.write_all(text.as_bytes());
        }
        if self.format == Format::Human {
            for r in self.groups.due_updates(std::time::SystemTime::now(), last) {
                let _ = out.write_all(r.to_human_update().as_bytes());
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
        let item = self.fatals.next()?;
        Some(decode::<Fatal>(&item).and_then(|f| Report::decode_fatal(&f, self.clock)))
    }
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
        let n = get(counter::FINDINGS + kind as u32);
        if n > 0 {
            summary.findings.insert(kind, n);
        }
    }
    summary.findings_dropped = get(counter::FINDINGS_DROPPED);
    summary.tables_full =
        get(counter::ITERS_FULL) + get(counter::MAPS_FULL) + get(counter::PENDING_FULL);
    summary.writes_unseen = get(counter::WRITES_UNSEEN);
    summary.in_progress_unnamed = get(counter::IN_PROGRESS_UNNAMED);
    summary.writes_during_growth = get(counter::WRITES_DURING_GROWTH);
    summary.stacks = get(counter::STACKS);
    summary.stacks_truncated = get(counter::STACKS_TRUNCATED);
    summary.stacks_unreadable = get(counter::STACKS_UNREADABLE);
    summary.execs_dropped = get(counter::EXECS_DROPPED);
}
