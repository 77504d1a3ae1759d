//! In-kernel correlation of iterations and writes, so only findings cross to userspace.
//!
//! An iteration is in progress between two consecutive steps of the same goroutine over the same
//! map. A write overlaps it only if that iteration takes another step afterwards: each tracked
//! map numbers its writes, each iteration remembers the number at its last step, and the next
//! step examines what came in between. Writes after a `break`, after the loop ended, or on an
//! abandoned iterator are never followed by a step, so they are never reported.

use core::intrinsics::{AtomicOrdering, atomic_xadd, atomic_xsub};

use aya_ebpf::EbpfContext as _;
use aya_ebpf::helpers::{
    bpf_get_attach_cookie, bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user,
};
use aya_ebpf::programs::ProbeContext;
use map_trace_common::config::{MAP_IMPL_CLASSIC, ProcConfig};
use map_trace_common::event::{Finding, FindingKind, Op, counter};
use map_trace_common::probe::Role;
use map_trace_common::state::*;

use crate::keys::{Key, deletes_other_key};
use crate::maps::{CONFIG, FINDINGS, ITERS, MAPS, PENDING, count};
use crate::{goabi, inprogress, stack};

/// Don't wake the daemon per finding: it polls.
const BPF_RB_NO_WAKEUP: u64 = 1;

/// The goroutine and process a probe fired in, with that process's settings.
pub struct Event {
    pub tgid: u32,
    /// The executable's id (the link's cookie).
    pub binary: u32,
    pub goid: u64,
    /// The goroutine's `g` (its register): tells one goroutine's writes from another's.
    pub g: u64,
    pub now: u64,
    pub cfg: ProcConfig,
    /// Where this goroutine's stack walk would start; walked only when a stack is needed.
    pub stack: goabi::StackStart,
}

/// Counts the hit, then finds the binary's settings (by the link's cookie) and the goroutine.
/// None for a binary the daemon did not configure.
#[inline(always)]
pub fn event(ctx: &ProbeContext, role: Role) -> Option<Event> {
    count(counter::HITS + role as u32);
    full_event(ctx, current_tgid())
}

#[inline(always)]
fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

#[inline(always)]
pub fn full_event(ctx: &ProbeContext, tgid: u32) -> Option<Event> {
    // SAFETY: the context is the probe's own; the helper only reads the link's cookie.
    let binary = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) } as u32;
    // SAFETY: a map value of plain integers.
    let cfg = unsafe { *CONFIG.get(binary)? };
    let g = goabi::g(ctx);
    let goid = read_u64(g.checked_add(cfg.g_goid as u64)?)?;
    Some(Event {
        tgid,
        binary,
        goid,
        g,
        // SAFETY: no preconditions.
        now: unsafe { bpf_ktime_get_ns() },
        cfg,
        stack: goabi::stack_start(ctx),
    })
}

/// A write or growth probe's event, only when `map` may have an iteration in progress. Most
/// writes go to maps nobody is ranging over; they cost one lookup and never read the goroutine
/// or the clock.
#[inline(always)]
fn tracked(ctx: &ProbeContext, tgid: u32, map: u64) -> Option<(Event, *mut MapState)> {
    let ms = MAPS.get_ptr_mut(MapKey { tgid, _pad: 0, map })?;
    // SAFETY: valid map value pointer for the duration of the program.
    if unsafe { (*ms).live } == 0 {
        return None;
    }
    Some((full_event(ctx, tgid)?, ms))
}

#[inline(always)]
pub fn read_u64(addr: u64) -> Option<u64> {
    // SAFETY: bpf_probe_read_user faults safely on bad addresses.
    unsafe { bpf_probe_read_user(addr as *const u64) }.ok()
}

#[inline(always)]
pub fn read_u8(addr: u64) -> Option<u8> {
    // SAFETY: as above.
    unsafe { bpf_probe_read_user(addr as *const u8) }.ok()
}

#[inline(always)]
fn map_key(e: &Event, map: u64) -> MapKey {
    MapKey {
        tgid: e.tgid,
        _pad: 0,
        map,
    }
}

#[inline(always)]
fn iter_key(e: &Event, map: u64) -> IterKey {
    IterKey {
        tgid: e.tgid,
        _pad: 0,
        goid: e.goid,
        map,
    }
}

#[inline(always)]
fn go_key(e: &Event) -> GoKey {
    GoKey {
        tgid: e.tgid,
        _pad: 0,
        goid: e.goid,
    }
}

#[inline(always)]
fn map_state(e: &Event, map: u64, create: bool) -> Option<*mut MapState> {
    let key = map_key(e, map);
    if let Some(p) = MAPS.get_ptr_mut(key) {
        return Some(p);
    }
    if !create {
        return None;
    }
    let fresh = MapState {
        last_step_ns: e.now,
        ..MapState::default()
    };
    if MAPS.insert(key, fresh, 0).is_err() {
        count(counter::MAPS_FULL);
        return None;
    }
    MAPS.get_ptr_mut(key)
}

/// What a step found, ready to become a `Finding`.
pub struct Overlap {
    pub kind: FindingKind,
    /// `Op as u32`.
    pub op: u32,
    pub writer: u64,
    pub write_ns: u64,
    pub writer_stack: u64,
    pub growing: bool,
    pub writes: u32,
}

/// The step's own context, shared by every finding it emits.
pub struct StepContext {
    pub map: u64,
    pub map_type: u64,
    /// The iterating goroutine's stack, captured once for all findings of the step.
    pub stack: u64,
}

/// Hands a finding to the daemon, or counts it lost.
#[inline(always)]
pub fn output(f: &Finding, kind: FindingKind) {
    match FINDINGS.output::<Finding>(f, BPF_RB_NO_WAKEUP) {
        Ok(()) => count(counter::FINDINGS + kind as u32),
        Err(_) => count(counter::FINDINGS_DROPPED),
    }
}

#[inline(always)]
pub fn emit(e: &Event, step: &StepContext, o: Overlap) {
    let f = Finding {
        write_ns: o.write_ns,
        step_ns: e.now,
        map: step.map,
        map_type: step.map_type,
        writer_stack: o.writer_stack,
        iterator_stack: step.stack,
        writer_goid: o.writer,
        iterator_goid: e.goid,
        tgid: e.tgid,
        kind: o.kind as u32,
        op: o.op,
        growing: o.growing as u32,
        writes: o.writes,
        binary: e.binary,
        other_op: 0,
        _pad: 0,
    };
    output(&f, o.kind);
}

/// Settles this goroutine's pending assign: it inserted if the map's count grew since. Called
/// only from probes on top-level map calls, never from growth probes that run inside the assign.
#[inline(always)]
fn resolve_pending(e: &Event) {
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

/// `for … range m` begins (classic `mapiterinit`, Swiss `(*Iter).Init`). Probed only in the
/// low-overhead mode: otherwise the first step marks the start.
#[inline(always)]
pub fn iter_start(e: &Event, map: u64, it: u64, map_type: u64) {
    resolve_pending(e);
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
    let replaces = ITERS.get_ptr_mut(key).is_some();
    begin_iteration(e, &key, ms, it, replaces);
    inprogress::during_iteration(e, map, it, map_type);
}

/// Tracks an iteration from now on: writes before this point never overlap it. `replaces`: this
/// goroutine's entry for the map, left by a range that ended or was left by `break`, is reused.
#[inline(always)]
fn begin_iteration(e: &Event, key: &IterKey, ms: *mut MapState, it: u64, replaces: bool) {
    // SAFETY: valid map value pointer.
    let seen_seq = unsafe { (*ms).write_seq };
    let st = IterState {
        it,
        seen_seq,
        last_step_ns: e.now,
        ..IterState::default()
    };
    if ITERS.insert(key, st, 0).is_err() {
        count(counter::ITERS_FULL);
        return;
    }
    if !replaces {
        // SAFETY: as above. Atomic: other CPUs update the same count (a BPF atomic add; the
        // `core::sync::atomic` types offer no read-modify-write on this target).
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*ms).live, 1) };
    }
}

/// Forgets an iteration known to have ended, so writes to its map stop being recorded once no
/// other iteration of it is live.
#[inline(always)]
fn end_iteration(key: &IterKey, ms: *mut MapState) {
    if ITERS.remove(key).is_ok() {
        // SAFETY: valid map value pointer; only a removal that succeeded lowers the count, so
        // it never goes below the entries that exist.
        unsafe {
            if (*ms).live > 0 {
                atomic_xsub::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*ms).live, 1);
            }
        }
    }
}

/// The key pointer of the iterator at `it` if it still iterates `map` (None for no iterator,
/// another map, or unreadable memory). Nil (`Some(0)`) once the range has run to its end: the
/// runtime sets it nil then, and never while a range is still visiting entries. A moved or
/// reused iterator reads as anything else, so at worst an ended iteration is recognised late.
#[inline(always)]
fn visited_key(e: &Event, it: u64, map: u64) -> Option<u64> {
    if it == 0 || read_u64(it + e.cfg.iter_map as u64) != Some(map) {
        return None;
    }
    read_u64(it + e.cfg.iter_key as u64)
}

/// An iterator steps (classic `mapiternext`, Swiss `(*Iter).Next`): report what overlapped
/// since its previous step.
#[inline(always)]
pub fn iter_step(e: &Event, it: u64) {
    resolve_pending(e);
    let Some(map) = read_u64(it + e.cfg.iter_map as u64) else {
        return;
    };
    if map == 0 {
        return; // Swiss Next on a nil or empty map
    }
    let Some(ms) = map_state(e, map, true) else {
        return;
    };
    let ikey = iter_key(e, map);
    let existing = ITERS.get_ptr_mut(ikey);
    let reported = match existing {
        // The first step of a range: iterators start zeroed and their key is never nil at a
        // later step, so this is where the iteration begins, with no probe on its start.
        _ if read_u64(it + e.cfg.iter_key as u64) == Some(0) => {
            begin_iteration(e, &ikey, ms, it, existing.is_some());
            false
        }
        Some(st) => {
            let reported = report_overlaps(e, map, it, ms, st);
            // SAFETY: valid map value pointers for the duration of the program.
            unsafe {
                (*st).it = it;
                (*ms).last_it = it;
                (*ms).last_goid = e.goid;
            }
            reported
        }
        // An iteration that began before we attached (or was swept): track it from here.
        None => {
            begin_iteration(e, &ikey, ms, it, false);
            false
        }
    };
    // A write still in progress was recorded at its entry, and reported above if it was
    // another goroutine's: once. (One call site: each inlined copy costs verification.)
    if !reported {
        inprogress::during_iteration(e, map, it, 0);
    }
}

/// The low-overhead mode's end of a range (an "iteration finished" exit of the step function,
/// `it` read from the register the site names): reports what overlapped the whole range, then
/// forgets it.
#[inline(always)]
pub fn iter_end(e: &Event, it: u64) {
    resolve_pending(e);
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
    if !report_overlaps(e, map, it, ms, st) {
        inprogress::during_iteration(e, map, it, 0);
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
                if w.seq > seen && w.goid != e.goid {
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
            let own = |kind, op: Op, w: SelfWrite, writes| Overlap {
                kind,
                op: op as u32,
                writer: e.goid,
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
        (*st).last_step_ns = e.now;
        (*ms).last_step_ns = e.now;
        foreign > 0
    }
}

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
    resolve_pending(e);
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
            visiting = visited_key(e, (*st).it, map);
            if visiting == Some(0) {
                end_iteration(&ikey, ms);
                own = None;
                if (*ms).last_goid == e.goid {
                    (*ms).last_it = 0;
                }
            }
        }
        let (last_it, last_goid) = ((*ms).last_it, (*ms).last_goid);
        if last_goid != e.goid && visited_key(e, last_it, map) == Some(0) {
            (*ms).last_it = 0;
            let theirs = IterKey {
                goid: last_goid,
                ..ikey
            };
            end_iteration(&theirs, ms);
        }
        if (*ms).live == 0 {
            return; // every iteration of the map has ended: no step can follow this write
        }
    }
    // A tracked map's writes may become findings; their stacks are only available now.
    let stack = stack::capture(e);
    let this = SelfWrite { ns: e.now, stack };
    // SAFETY: valid map value pointers for the duration of the program.
    unsafe {
        let seq = (*ms).write_seq + 1;
        (*ms).write_seq = seq;
        let slot = (seq as usize) & (WRITE_RING - 1);
        if slot < WRITE_RING {
            (*ms).ring[slot] = WriteRecord {
                seq,
                goid: e.goid,
                ns: e.now,
                stack,
                op: op as u32,
                growing: growing as u32,
            };
        }
        let Some(st) = own else {
            return;
        };
        if growing {
            (*st).flags |= SELF_GREW;
        }
        match op {
            Op::Assign => {
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
            if w.goid == e.goid && w.seq > best_seq {
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
