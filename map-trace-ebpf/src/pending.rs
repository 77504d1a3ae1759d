//! The insert check: an assign by a goroutine to a map it is ranging over inserted a key if the
//! map's count grew by the goroutine's next step of that range or its next write to the map
//! (Go spec: such a key may or may not be produced by the range). Never settled by growth
//! probes, which run inside the assign.

use map_trace_common::state::{ASSIGN_PENDING, IterState, SELF_INSERTED, SelfWrite};

use crate::context::{Event, read_u64};

/// Settles the assign pending in `st`, this goroutine's range over `map`: it inserted if the
/// map's count grew since. Called before anything else this goroutine does to the range.
#[inline(always)]
pub fn resolve_pending(e: &Event, map: u64, st: *mut IterState) {
    // SAFETY: valid map value pointer for the duration of the program.
    unsafe {
        if (*st).flags & ASSIGN_PENDING == 0 {
            return;
        }
        (*st).flags &= !ASSIGN_PENDING;
        if read_u64(map + e.cfg.map_count as u64).is_some_and(|now| now > (*st).pending_count) {
            (*st).flags |= SELF_INSERTED;
            (*st).inserted = (*st).pending;
        }
    }
}

/// Remembers this goroutine's assign to `map`, which it is ranging over (`st`), until it next
/// steps the range or writes the map again, which tells whether it inserted.
#[inline(always)]
pub fn note_assign(e: &Event, map: u64, st: *mut IterState, assign: SelfWrite) {
    let count_before = read_u64(map + e.cfg.map_count as u64).unwrap_or(u64::MAX);
    // SAFETY: as above.
    unsafe {
        (*st).pending = assign;
        (*st).pending_count = count_before;
        (*st).flags |= ASSIGN_PENDING;
    }
}
