//! The insert check: an assign by a goroutine to a map it is ranging over inserted a key if the
//! map's count grew by the goroutine's next top-level map call (Go spec: such a key may or may
//! not be produced by the range).

use map_trace_common::state::{PendingAssign, SELF_INSERTED, SelfWrite};

use crate::context::{Event, go_key, iter_key, read_u64};
use crate::maps::{ITERS, PENDING, count};
use map_trace_common::event::counter;

/// Settles this goroutine's pending assign: it inserted if the map's count grew since. Called
/// only from probes on top-level map calls, never from growth probes that run inside the assign.
#[inline(always)]
pub fn resolve_pending(e: &Event) {
    let key = go_key(e);
    // SAFETY: a map value of plain integers.
    let Some(p) = (unsafe { PENDING.get(key) }).copied() else {
        return;
    };
    let _ = PENDING.remove(key);
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
    if PENDING.insert(go_key(e), p, 0).is_err() {
        count(counter::PENDING_FULL);
    }
}
