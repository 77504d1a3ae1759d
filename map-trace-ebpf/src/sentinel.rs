//! Sentinel mode: a range's start and end compare the map's header, with no probe on its steps
//! or on any write. The count and the growth field (classic `hmap.B`, Swiss `Map.dirLen`) grow
//! only by an insert, so a range that ends with either higher than at its start overlapped an
//! insert: its own (the range may or may not produce the key: a warning) or another
//! goroutine's (a data race). A count that only fell may be the ranging goroutine's own
//! deletes, which the Go spec defines: never reported, but counted in `CHANGES` like every
//! change, so the daemon escalates and the full probes classify the next occurrence.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use map_trace_common::config::config_slot;
use map_trace_common::event::{FindingKind, Op};
use map_trace_common::state::{IterState, SNAPSHOT_BUSY, SNAPSHOT_TAKEN};

use crate::context::{Event, read_u64};
use crate::finding::{Overlap, StepContext, emit};
use crate::maps::CHANGES;
use crate::{inprogress, stack};

/// What the header says at one moment.
struct Header {
    count: u64,
    growth: u64,
    /// Another goroutine's write is in progress (the writing flag is set: the ranging
    /// goroutine is in the runtime's iteration code, not writing).
    busy: bool,
}

#[inline(always)]
fn header(e: &Event, map: u64) -> Option<Header> {
    let count = read_u64(map + e.cfg.map_count as u64)?;
    let raw = read_u64(map + e.cfg.map_growth as u64)?;
    Some(Header {
        count,
        // Little-endian on both arches: a byte field is the low byte of the word at it.
        growth: if e.cfg.growth_size == 1 {
            raw & 0xff
        } else {
            raw
        },
        busy: inprogress::busy(e.cfg, map),
    })
}

/// Records the header in a range's state as it begins (sentinel mode only; otherwise the
/// snapshot stays empty and the end compares nothing).
#[inline(always)]
pub fn snapshot(e: &Event, map: u64, st: &mut IterState) {
    if e.cfg.sentinel == 0 {
        return;
    }
    if let Some(h) = header(e, map) {
        st.start_count = h.count;
        st.start_growth = h.growth;
        st.snapshot = SNAPSHOT_TAKEN | if h.busy { SNAPSHOT_BUSY } else { 0 };
    }
}

/// A range ended: compares the header with its start, reports an insert that overlapped it and
/// counts any change for the daemon.
#[inline(always)]
pub fn range_ended(e: &Event, map: u64, it: u64, st: *mut IterState) {
    // SAFETY: a valid map value pointer for the duration of the program.
    let (snap, start_count, start_growth, start_ns) = unsafe {
        (
            (*st).snapshot,
            (*st).start_count,
            (*st).start_growth,
            (*st).last_step_ns,
        )
    };
    if snap & SNAPSHOT_TAKEN == 0 {
        return;
    }
    let Some(now) = header(e, map) else {
        return;
    };
    let gained = now.count > start_count;
    let grew = now.growth > start_growth;
    let busy = now.busy || snap & SNAPSHOT_BUSY != 0;
    if !(gained || grew || busy || now.count != start_count) {
        return;
    }
    if let Some(c) = CHANGES.get_ptr_mut(config_slot(e.binary)) {
        // SAFETY: an array slot; every CPU counts into it (a BPF atomic add).
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(c, 1) };
    }
    if !(gained || grew || busy) {
        return; // fewer elements only: possibly the range's own deletes, which are defined
    }
    let step = StepContext {
        map,
        map_type: read_u64(it + e.cfg.iter_typ as u64).unwrap_or(0),
        stack: stack::capture(e),
    };
    emit(
        e,
        &step,
        Overlap {
            kind: FindingKind::MapChanged,
            op: Op::Assign as u32,
            writer: 0,
            // The writer is unknown: the range's start stands for when.
            write_ns: start_ns,
            writer_stack: 0,
            growing: grew,
            writes: now.count.saturating_sub(start_count).min(u32::MAX as u64) as u32,
        },
    );
}
