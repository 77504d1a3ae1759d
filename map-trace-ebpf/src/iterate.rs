//! In-kernel correlation of iterations and writes, so only findings cross to userspace.
//!
//! An iteration is in progress between two consecutive steps of the same goroutine over the same
//! map. A write overlaps it only if that iteration takes another step afterwards: each tracked
//! map numbers its writes, each iteration remembers the number at its last step, and the next
//! step examines what came in between. Writes after a `break`, after the loop ended, or on an
//! abandoned iterator are never followed by a step, so they are never reported.

use core::intrinsics::{AtomicOrdering, atomic_xadd, atomic_xsub};

use aya_ebpf::bindings::{BPF_EXIST, BPF_NOEXIST};
use aya_ebpf::helpers::bpf_probe_read_user;

use map_trace_common::event::{FindingKind, Op, counter};
use map_trace_common::state::*;

use crate::context::{Event, iter_key, map_state, read_u64};
use crate::finding::{Overlap, StepContext, emit};
use crate::maps::{ITERS, LIVE_HINT, count, group_writes, live_hint_index};
use crate::pending::resolve_pending;
use crate::{inprogress, sentinel, stack};

/// `for … range m` begins (classic `mapiterinit`, Swiss `(*Iter).Init`). Probed only in the
/// low-overhead mode: otherwise the first step marks the start.
#[inline(always)]
pub fn iter_start(e: &Event, map: u64, it: u64, map_type: u64) {
    if map == 0 {
        return; // ranging over a nil map: no iteration at all
    }
    if read_u64(map + e.cfg.map_count as u64) == Some(0) {
        // Nothing to visit: the range body never runs, and the step function's finished exit
        // may not even see the map (Swiss leaves `it.m` nil), so the entry would linger.
        return;
    }
    let Some(ms) = map_state(e, map, true) else {
        return;
    };
    let key = iter_key(e, map);
    begin_iteration(e, &key, ms, it);
    // A sentinel records no writes: a writer slot left from an escalation would name a write
    // long over. The writing flag itself is in the range's snapshot (`sentinel::snapshot`).
    if e.cfg.sentinel == 0 {
        inprogress::during_iteration(e, map, it, map_type);
    }
}

/// Tracks an iteration from now on: writes before this point never overlap it. An entry this
/// goroutine left for the map (a range that ended or was left by `break`) is reused.
///
/// Whether the entry is new is decided by the insert itself (no-exist, then exist, then
/// no-exist again), not by an earlier lookup: the daemon may remove the entry in between, and
/// only an entry this call created may be counted in `live` and `LIVE_HINT`, exactly once.
#[inline(always)]
fn begin_iteration(e: &Event, key: &IterKey, ms: *mut MapState, it: u64) {
    // The group's count first, then the map's sequence (see `write`).
    let seen_group = group_writes(live_hint_index(key.tgid, key.map));
    // SAFETY: valid map value pointer.
    let seen_seq = unsafe { (*ms).write_seq };
    let mut fresh = IterState {
        it,
        seen_seq,
        seen_group,
        last_step_ns: e.tick,
        ..IterState::default()
    };
    sentinel::snapshot(e, key.map, &mut fresh);
    // A reference, so the three inserts share one copy on the 512-byte BPF stack.
    let st = &fresh;
    let created = if ITERS.insert(key, st, BPF_NOEXIST.into()).is_ok() {
        true
    } else if ITERS.insert(key, st, BPF_EXIST.into()).is_ok() {
        false
    } else if ITERS.insert(key, st, BPF_NOEXIST.into()).is_ok() {
        true
    } else {
        count(counter::ITERS_FULL);
        return;
    };
    if created {
        // SAFETY: as above. Atomic: other CPUs update the same count (a BPF atomic add; the
        // `core::sync::atomic` types offer no read-modify-write on this target).
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*ms).live, 1) };
        if let Some(h) = LIVE_HINT.get_ptr_mut(live_hint_index(key.tgid, key.map)) {
            // SAFETY: an array slot; atomic, as above.
            unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(h, 1) };
        }
    }
}

/// Forgets an iteration known to have ended, so writes to its map stop being recorded once no
/// other iteration of it is live.
#[inline(always)]
pub fn end_iteration(key: &IterKey, ms: *mut MapState) {
    if ITERS.remove(key).is_ok() {
        // SAFETY: valid map value pointer; only a removal that succeeded lowers the count, so
        // it never goes below the entries that exist.
        unsafe {
            if (*ms).live > 0 {
                atomic_xsub::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*ms).live, 1);
            }
        }
        // The same for the map's group: its entry was counted when it was inserted.
        if let Some(h) = LIVE_HINT.get_ptr_mut(live_hint_index(key.tgid, key.map)) {
            // SAFETY: an array slot; atomic, as above.
            unsafe {
                if *h > 0 {
                    atomic_xsub::<u64, u64, { AtomicOrdering::Relaxed }>(h, 1);
                }
            }
        }
    }
}

/// The key pointer of the iterator at `it` if it still iterates `map` (None for no iterator,
/// another map, or unreadable memory). Nil (`Some(0)`) once the range has run to its end: the
/// runtime sets it nil then, and never while a range is still visiting entries. A moved or
/// reused iterator reads as anything else, so at worst an ended iteration is recognised late.
#[inline(always)]
pub fn visited_key(e: &Event, it: u64, map: u64) -> Option<u64> {
    if it == 0 {
        return None;
    }
    iter_fields(e, it).filter(|f| f.map == map).map(|f| f.key)
}

/// An iterator's map and key pointer.
pub struct IterFields {
    pub map: u64,
    pub key: u64,
}

/// Reads the iterator's map and key pointer: with one user-memory read where both lie in its
/// first 32 bytes, as they do in every supported release (key at 0, map at 24, in `hiter` and
/// Swiss `Iter` alike), else with two. Every step pays for this, and each read is a helper call.
#[inline(always)]
pub fn iter_fields(e: &Event, it: u64) -> Option<IterFields> {
    let (m, k) = (e.cfg.iter_map as u64, e.cfg.iter_key as u64);
    if m < 32 && k < 32 && m % 8 == 0 && k % 8 == 0 {
        // SAFETY: faults are caught by the helper.
        let words = unsafe { bpf_probe_read_user(it as *const [u64; 4]) }.ok()?;
        // A match, not an index: LLVM drops a mask it can prove redundant, and the verifier
        // refuses a stack read at an offset it cannot bound.
        let word = |off: u64| match off {
            0 => words[0],
            8 => words[1],
            16 => words[2],
            _ => words[3],
        };
        return Some(IterFields {
            map: word(m),
            key: word(k),
        });
    }
    Some(IterFields {
        map: read_u64(it + m)?,
        key: read_u64(it + k)?,
    })
}

/// An iterator steps (classic `mapiternext`, Swiss `(*Iter).Next`): report what overlapped
/// since its previous step.
#[inline(always)]
pub fn iter_step(e: &Event, it: u64) {
    let Some(IterFields { map, key }) = iter_fields(e, it) else {
        return;
    };
    if map == 0 {
        return; // Swiss Next on a nil or empty map
    }
    let ikey = iter_key(e, map);
    // Read before the map's sequence (see `write`).
    let group = group_writes(live_hint_index(e.tgid, map));
    let existing = ITERS.get_ptr_mut(ikey);
    if key != 0
        && let Some(st) = existing
        // SAFETY: valid map value pointer for the duration of the program.
        && unsafe { (*st).quiet(it, group, e.tick) }
    {
        // Nothing to report but a write of another goroutine in progress.
        inprogress::during_iteration(e, map, it, 0);
        return;
    }
    let Some(ms) = map_state(e, map, true) else {
        return;
    };
    let reported = match existing {
        // The first step of a range: iterators start zeroed and their key is never nil at a
        // later step, so this is where the iteration begins, with no probe on its start.
        _ if key == 0 => {
            begin_iteration(e, &ikey, ms, it);
            false
        }
        Some(st) => {
            resolve_pending(e, map, st);
            let reported = report_overlaps(e, map, it, ms, st);
            // SAFETY: valid map value pointers for the duration of the program.
            unsafe {
                (*st).it = it;
                (*st).seen_group = group;
                (*st).announced = 1;
                (*ms).last_it = it;
                (*ms).last_g = e.g;
            }
            reported
        }
        // An iteration that began before we attached (or was swept): track it from here.
        None => {
            begin_iteration(e, &ikey, ms, it);
            false
        }
    };
    // A write still in progress was recorded at its entry, and reported above if it was
    // another goroutine's: once. (One call site: each inlined copy costs verification.)
    if !reported {
        inprogress::during_iteration(e, map, it, 0);
    }
}

/// The low-overhead and sentinel modes' end of a range (an "iteration finished" exit of the step function,
/// `it` read from the register the site names): reports what overlapped the whole range, then
/// forgets it.
#[inline(always)]
pub fn iter_end(e: &Event, it: u64) {
    let Some(map) = read_u64(it + e.cfg.iter_map as u64).filter(|&m| m != 0) else {
        return;
    };
    let Some(ms) = map_state(e, map, false) else {
        return;
    };
    let ikey = iter_key(e, map);
    let Some(st) = ITERS.get_ptr_mut(ikey) else {
        return;
    };
    if e.cfg.sentinel != 0 {
        // No write was recorded (no write probes): the header tells.
        sentinel::range_ended(e, map, it, st);
    } else {
        resolve_pending(e, map, st);
        if !report_overlaps(e, map, it, ms, st) {
            inprogress::during_iteration(e, map, it, 0);
        }
    }
    end_iteration(&ikey, ms);
}

/// Emits a finding for each kind of write that overlapped the iteration `st` of `map` since it
/// last reported (its previous step, or its start), and starts the next interval. True when
/// another goroutine's write was reported.
#[inline(always)]
fn report_overlaps(e: &Event, map: u64, it: u64, ms: *mut MapState, st: *mut IterState) -> bool {
    // SAFETY: valid map value pointers for the duration of the program.
    unsafe {
        let seen = (*st).seen_seq;
        let now_seq = (*ms).write_seq;
        let flags = (*st).flags;
        let mut latest = WriteRecord::default();
        let mut foreign = 0u32;
        if now_seq > seen {
            for i in 0..WRITE_RING {
                let w = (*ms).ring[i];
                if w.seq > seen && w.g != e.g {
                    foreign += 1;
                    if w.seq > latest.seq {
                        latest = w;
                    }
                }
            }
            if now_seq - seen > WRITE_RING as u64 {
                count(counter::WRITES_UNSEEN);
            }
        }
        if foreign > 0 || flags & (SELF_INSERTED | SELF_DELETED_OTHER | SELF_CLEARED) != 0 {
            // Only steps that report anything pay for the type read and the stack walk.
            let step = StepContext {
                map,
                map_type: read_u64(it + e.cfg.iter_typ as u64).unwrap_or(0),
                stack: stack::capture(e),
            };
            if foreign > 0 {
                let op = match latest.op {
                    0 => Op::Assign,
                    1 => Op::Delete,
                    _ => Op::Clear,
                } as u32;
                emit(
                    e,
                    &step,
                    Overlap {
                        kind: FindingKind::ConcurrentWrite,
                        op,
                        writer: latest.goid,
                        write_ns: latest.ns,
                        writer_stack: latest.stack,
                        growing: latest.growing != 0,
                        writes: foreign,
                    },
                );
            }
            let grew = flags & SELF_GREW != 0;
            let me = e.goid();
            let own = |kind, op: Op, w: SelfWrite, writes| Overlap {
                kind,
                op: op as u32,
                writer: me,
                write_ns: w.ns,
                writer_stack: w.stack,
                growing: grew,
                writes,
            };
            if flags & SELF_INSERTED != 0 {
                emit(
                    e,
                    &step,
                    own(FindingKind::Insert, Op::Assign, (*st).inserted, 1),
                );
            }
            if flags & SELF_DELETED_OTHER != 0 {
                let n = (*st).self_deletes_other;
                emit(
                    e,
                    &step,
                    own(FindingKind::DeleteOther, Op::Delete, (*st).deleted_other, n),
                );
            }
            if flags & SELF_CLEARED != 0 {
                emit(
                    e,
                    &step,
                    own(FindingKind::Clear, Op::Clear, (*st).cleared, 1),
                );
            }
        }
        (*st).flags = 0;
        (*st).self_deletes_other = 0;
        (*st).seen_seq = now_seq;
        (*st).last_step_ns = e.tick;
        (*ms).last_step_ns = e.tick;
        foreign > 0
    }
}
