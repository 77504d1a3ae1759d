//! The insert check: an assign by a goroutine to a map it is ranging over inserted a key if the
//! map's count grew by the goroutine's next top-level map call (Go spec: such a key may or may
//! not be produced by the range).

use core::intrinsics::{AtomicOrdering, atomic_xadd, atomic_xsub};

use map_trace_common::state::{PendingAssign, SELF_INSERTED, SelfWrite};

use crate::context::{Event, go_key, iter_key, read_u64};
use crate::maps::{ITERS, PENDING, PENDING_LIVE, count, may_be_pending};
use map_trace_common::event::counter;

/// `BPF_NOEXIST` / `BPF_EXIST`: only an entry this call creates is counted in `PENDING_LIVE`.
const BPF_NOEXIST: u64 = 1;
const BPF_EXIST: u64 = 2;

/// Settles this goroutine's pending assign: it inserted if the map's count grew since. Called
/// only from probes on top-level map calls, never from growth probes that run inside the assign.
#[inline(always)]
pub fn resolve_pending(e: &Event) {
    if !may_be_pending() {
        return;
    }
    let key = go_key(e);
    // SAFETY: a map value of plain integers.
    let Some(p) = (unsafe { PENDING.get(key) }).copied() else {
        return;
    };
    // Taken off the count only by whoever removed it (the daemon may have, meanwhile).
    if PENDING.remove(key).is_ok()
        && let Some(made) = PENDING_LIVE.get_ptr_mut(0)
    {
        // SAFETY: an array slot every CPU counts into: a BPF atomic sub.
        unsafe { atomic_xsub::<u64, u64, { AtomicOrdering::Relaxed }>(made, 1) };
    }
    let Some(now_count) = read_u64(p.map + e.cfg.map_count as u64) else {
        return;
    };
    if now_count > p.count_before
        && let Some(st) = ITERS.get_ptr_mut(iter_key(e, p.map))
    {
        // SAFETY: valid map value pointer for the duration of the program.
        unsafe {
            (*st).flags |= SELF_INSERTED;
            (*st).inserted = SelfWrite {
                ns: p.ns,
                stack: p.stack,
            };
        }
    }
}

/// Remembers this goroutine's assign to `map`, which it is ranging over, until its next map call
/// tells whether it inserted.
#[inline(always)]
pub fn note_assign(e: &Event, map: u64, stack: u64) {
    let count_before = read_u64(map + e.cfg.map_count as u64).unwrap_or(u64::MAX);
    let p = PendingAssign {
        map,
        count_before,
        ns: e.now,
        stack,
    };
    let key = go_key(e);
    if PENDING.insert(key, p, BPF_NOEXIST).is_ok() {
        if let Some(made) = PENDING_LIVE.get_ptr_mut(0) {
            // SAFETY: an array slot every CPU counts into: a BPF atomic add.
            unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(made, 1) };
        }
    } else if PENDING.insert(key, p, BPF_EXIST).is_err() {
        // Neither new nor there to replace: the table is full.
        count(counter::PENDING_FULL);
    }
}
