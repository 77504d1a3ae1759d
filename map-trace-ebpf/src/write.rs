//! Writes (assign, delete, clear) and growth: each is noted as in progress (`inprogress`), and
//! on a map some goroutine is ranging over it is numbered for the next step to examine
//! (`iterate`), or, by the ranging goroutine itself, kept as its own insert, delete or clear.

use aya_ebpf::programs::ProbeContext;
use map_trace_common::config::MAP_IMPL_CLASSIC;
use map_trace_common::event::{Op, counter};
use map_trace_common::probe::Role;
use map_trace_common::state::*;

use crate::context::{current_tgid, iter_key, now, read_u64, tracked};
use crate::iterate::{end_iteration, visited_key};
use crate::keys::{Key, deletes_other_key};
use crate::maps::{ITERS, count, live_hint_index, note_group_write};
use crate::pending::{note_assign, resolve_pending};
use crate::{goabi, inprogress, stack};

/// A write (assign, delete, clear) to `map` of type `map_type` begins.
#[inline(always)]
pub fn write(ctx: &ProbeContext, role: Role, map: u64, map_type: u64, op: Op, key: Key) {
    count(counter::HITS + role as u32);
    if map == 0 {
        return;
    }
    let tgid = current_tgid();
    inprogress::write_begins(ctx, tgid, map, map_type, op);
    let Some((e, ms)) = tracked(ctx, tgid, map) else {
        return;
    };
    let e = &e;
    let growing = e.cfg.map_impl == MAP_IMPL_CLASSIC
        && read_u64(map + e.cfg.map_oldbuckets as u64).is_some_and(|old| old != 0);
    if growing {
        count(counter::WRITES_DURING_GROWTH);
    }
    let ikey = iter_key(e, map);
    let mut own = ITERS.get_ptr_mut(ikey);
    // What this goroutine's own iteration is visiting, read once: it tells both whether that
    // range has ended and, for a delete, whether another key is deleted.
    let mut visiting = None;
    // SAFETY: valid map value pointers for the duration of the program.
    unsafe {
        if let Some(st) = own {
            resolve_pending(e, map, st);
            visiting = visited_key(e, (*st).it, map);
            if visiting == Some(0) {
                end_iteration(&ikey, ms);
                own = None;
                if (*ms).last_g == e.g {
                    (*ms).last_it = 0;
                }
            }
        }
        let (last_it, last_g) = ((*ms).last_it, (*ms).last_g);
        if last_g != e.g && visited_key(e, last_it, map) == Some(0) {
            (*ms).last_it = 0;
            let theirs = IterKey { g: last_g, ..ikey };
            end_iteration(&theirs, ms);
        }
        if (*ms).live == 0 {
            return; // every iteration of the map has ended: no step can follow this write
        }
    }
    // A tracked map's writes may become findings; their stacks are only available now.
    let stack = stack::capture(e);
    let ns = now();
    let this = SelfWrite { ns, stack };
    // SAFETY: valid map value pointers for the duration of the program.
    unsafe {
        let seq = (*ms).write_seq + 1;
        (*ms).write_seq = seq;
        let slot = (seq as usize) & (WRITE_RING - 1);
        if slot < WRITE_RING {
            (*ms).ring[slot] = WriteRecord {
                seq,
                goid: e.goid(),
                g: e.g,
                ns,
                stack,
                op: op as u32,
                growing: growing as u32,
            };
        }
        // After the record is in place: a step reads its group's count before the map's
        // sequence, so one that sees this count also sees the write.
        note_group_write(live_hint_index(e.tgid, map));
        let Some(st) = own else {
            return;
        };
        if growing {
            (*st).flags |= SELF_GREW;
        }
        match op {
            Op::Assign => note_assign(e, map, st, this),
            Op::Delete => {
                if deletes_other_key(e, visiting, &key) {
                    (*st).flags |= SELF_DELETED_OTHER;
                    (*st).self_deletes_other += 1;
                    (*st).deleted_other = this;
                }
            }
            Op::Clear => {
                (*st).flags |= SELF_CLEARED;
                (*st).cleared = this;
            }
        }
    }
}

/// Growth of `map` (classic `hashGrow`; Swiss `growToTable`, `(*table).grow`/`split`), inside an
/// assign of this goroutine: mark that write as growing the map.
#[inline(always)]
pub fn grow(ctx: &ProbeContext, map: u64) {
    count(counter::HITS + Role::Grow as u32);
    if map == 0 {
        return;
    }
    let tgid = current_tgid();
    inprogress::grows(tgid, goabi::g(ctx), map);
    let Some((e, ms)) = tracked(ctx, tgid, map) else {
        return;
    };
    if e.cfg.map_impl != MAP_IMPL_CLASSIC {
        count(counter::WRITES_DURING_GROWTH);
    }
    // SAFETY: valid map value pointers.
    unsafe {
        let mut best = WRITE_RING;
        let mut best_seq = 0;
        for i in 0..WRITE_RING {
            let w = (*ms).ring[i];
            if w.g == e.g && w.seq > best_seq {
                best = i;
                best_seq = w.seq;
            }
        }
        if best < WRITE_RING {
            (*ms).ring[best].growing = 1;
        }
        if let Some(st) = ITERS.get_ptr_mut(iter_key(&e, map)) {
            (*st).flags |= SELF_GREW;
        }
    }
}
