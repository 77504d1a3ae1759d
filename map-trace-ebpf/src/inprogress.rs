//! Writes in progress: who is writing each map right now.
//!
//! Every write's entry probe records itself in the map's `WRITERS` slot (the goroutine's `g`,
//! where its stack walk starts and the op, from registers; its call site, one stack read on
//! amd64) and notes the slot among its CPU's latest (`RECENT`, for `fatal`). A write is *in
//! progress* while the map's own writing flag is set (classic `hmap.flags & hashWriting`, Swiss `Map.writing`),
//! the very flag Go's runtime checks before it dies of `concurrent map writes` or `concurrent
//! map iteration and map write`: read, not guessed. The runtime sets it after hashing, so it is
//! clear at the entry of a well-behaved write and of every step of a well-behaved range. A later
//! write or range step that finds it set names the slot's writer and walks that goroutine's
//! stack then, while it is still inside its write, so both sides are reported.
//!
//! Correct code never trips this: writes under one lock, maps handed over through channels,
//! copy-on-write maps and `sync.Map` never find another goroutine's write in progress.

use aya_ebpf::EbpfContext as _;
use aya_ebpf::helpers::bpf_get_attach_cookie;
use aya_ebpf::programs::ProbeContext;
use map_trace_common::config::{MAP_IMPL_CLASSIC, ProcConfig};
use map_trace_common::event::{Finding, FindingKind, Op, counter};
use map_trace_common::state::{RECENT_CPUS, RECENT_PER_CPU, WRITER_WAYS, Writer};

use crate::context::{self, Event};
use crate::finding::{self, Overlap, StepContext};
use crate::goabi::{self, StackStart};
use crate::maps::{RECENT, RECENT_AT, WRITERS, config, count, writer_group as group};
use crate::stack;
use map_trace_common::stack::MAX_STACK_DEPTH;

/// `runtime.g.stack.lo` and `.hi`, at the start of `g` in every supported release.
const G_STACK_LO: u64 = 0;
const G_STACK_HI: u64 = 8;

/// Slots per map, each holding one goroutine's latest write: a goroutine's own next write must
/// not overwrite the entry of the write in progress it is about to meet.
pub const WAYS: u32 = WRITER_WAYS;

/// What one look at a map's slots found, for goroutine `g`'s write.
struct Slots {
    /// Where `g` records this write: its own slot for the map, else the oldest.
    mine: u32,
    /// Another goroutine has an entry for the map: only then can a write of it be in progress
    /// (an entry is recorded before its write sets the map's flag), so only then is the flag
    /// read (a user-memory read and a settings lookup the common, unshared map never pays).
    shared: bool,
}

#[inline(always)]
fn look(base: u32, tgid: u32, map: u64, g: u64) -> Slots {
    // Plain integers, no Option: LLVM may keep an Option's unset payload in a register it
    // never wrote, which the verifier refuses to see spilled (`!read_ok`).
    let mut own = u32::MAX;
    let mut oldest_at = base;
    let mut oldest = u64::MAX;
    let mut shared = false;
    for i in 0..WAYS {
        let Some(w) = WRITERS.get(base | i) else {
            continue;
        };
        let this_map = w.tgid == tgid && w.map == map;
        if this_map && w.g == g {
            own = base | i;
        } else if this_map && w.g != 0 {
            shared = true;
        }
        // Another map's entry counts as oldest of all.
        let age = if this_map { w.ns } else { 0 };
        if age < oldest {
            oldest = age;
            oldest_at = base | i;
        }
    }
    Slots {
        mine: if own == u32::MAX { oldest_at } else { own },
        shared,
    }
}

/// Whether some goroutine is inside a write to `map` now.
#[inline(always)]
pub fn busy(cfg: &ProcConfig, map: u64) -> bool {
    context::read_u8(map + cfg.map_writing as u64)
        .is_some_and(|f| f & (cfg.writing_mask as u8) != 0)
}

/// A write to `map` begins (the entry probe of an assign, delete or clear): records it as this
/// goroutine's latest write to the map, then, if another goroutine writes the map too, reports
/// the write of it in progress, if any.
#[inline(always)]
pub fn write_begins(ctx: &ProbeContext, tgid: u32, map: u64, map_type: u64, op: Op) {
    let g = goabi::g(ctx);
    let slots = look(group(tgid, map), tgid, map, g);
    record(slots.mine, tgid, g, (map, map_type), op, ctx, slots.shared);
    if !slots.shared {
        return;
    }
    // SAFETY: the helper only reads the link's cookie.
    let binary = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) } as u32;
    let Some(cfg) = config(binary) else {
        return;
    };
    // Read last: the runtime's own check comes right after this probe returns, and a flag set
    // between the two is a race Go sees and this does not.
    if busy(cfg, map) {
        report_writes(ctx, tgid, map, map_type, op, g);
    }
}

/// Records the write of goroutine `g` beginning now in `slot`, with its call site, and its
/// caller's when another goroutine writes the map too (`shared`).
#[inline(always)]
fn record(
    slot: u32,
    tgid: u32,
    g: u64,
    (map, map_type): (u64, u64),
    op: Op,
    ctx: &ProbeContext,
    shared: bool,
) {
    let Some(w) = WRITERS.get_ptr_mut(slot) else {
        return;
    };
    let start = goabi::stack_start(ctx);
    let (ret, fp) = start.saved();
    // The call site always (one read on amd64, a register on arm64): a write that has ended
    // by the time it is named — a crash's writer is named microseconds after Go's check —
    // still has it. Its caller's too on a shared map, where live races are named.
    let pcs = [
        goabi::return_address(&start).unwrap_or(0),
        match shared {
            true => context::read_u64(fp + 8).unwrap_or(0),
            false => 0,
        },
    ];
    // SAFETY: no preconditions. Orders the entries of one map's slots.
    let ns = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    // SAFETY: an array slot; plain stores, which a reader on another CPU may see half done:
    // it checks `tgid`, `map` and the stack bounds before it trusts them.
    unsafe {
        (*w).map = map;
        (*w).map_type = map_type;
        (*w).g = g;
        (*w).ret = ret;
        (*w).pcs = pcs;
        (*w).fp = fp;
        (*w).ns = ns;
        (*w).tgid = tgid;
        (*w).op = op as u32;
        (*w).growing = 0;
    }
    note_recent(slot);
}

/// Notes `slot` among this CPU's latest writes (`RECENT`).
#[inline(always)]
fn note_recent(slot: u32) {
    // SAFETY: no preconditions.
    let cpu = unsafe { aya_ebpf::helpers::bpf_get_smp_processor_id() };
    let Some(at) = RECENT_AT.get_ptr_mut(0) else {
        return;
    };
    if cpu >= RECENT_CPUS {
        return;
    }
    // SAFETY: per-CPU value; programs are not preempted on their CPU.
    let i = unsafe {
        let i = *at;
        *at = i.wrapping_add(1);
        i
    };
    if let Some(e) = RECENT.get_ptr_mut(cpu * RECENT_PER_CPU + (i & (RECENT_PER_CPU - 1))) {
        // SAFETY: an array slot of this CPU's own; a u32 store.
        unsafe { *e = slot + 1 };
    }
}

/// The write of goroutine `g` to `map` grows it (a growth probe inside that write).
#[inline(always)]
pub fn grows(tgid: u32, g: u64, map: u64) {
    let base = group(tgid, map);
    for i in 0..WAYS {
        if let Some(w) = WRITERS.get_ptr_mut(base | i) {
            // SAFETY: as above.
            unsafe {
                if (*w).tgid == tgid && (*w).map == map && (*w).g == g {
                    (*w).growing = 1;
                }
            }
        }
    }
}

/// The write in progress on `map` of another goroutine than `g`: the latest entry of another
/// goroutine in the map's slots. None when they have since been taken by other maps' writers.
#[inline(always)]
pub fn other(tgid: u32, map: u64, g: u64) -> Option<Writer> {
    // Another goroutine's entry for this map (its `g` is never 0 once written).
    let theirs = |w: &Writer| w.tgid == tgid && w.map == map && w.g != g && w.g != 0;
    let base = group(tgid, map);
    // Compared in place and copied once: every range step looks here, and copying each of the
    // four 88-byte slots cost it more than the comparisons. Unrolled by hand: as a loop, LLVM
    // kept the back-edge, which Linux 6.1 refused in the programs that inline this.
    let mut best = u32::MAX;
    let mut best_ns = 0;
    let mut consider = |slot: u32| {
        if let Some(w) = WRITERS.get(slot)
            && theirs(w)
            && (best == u32::MAX || w.ns > best_ns)
        {
            best = slot;
            best_ns = w.ns;
        }
    };
    const _: () = assert!(WAYS == 4, "other() looks at four ways");
    consider(base);
    consider(base | 1);
    consider(base | 2);
    consider(base | 3);
    if best == u32::MAX {
        return None;
    }
    // Checked again on the copy: another CPU may have taken the slot since.
    WRITERS.get(best).copied().filter(theirs)
}

/// The named writer's goroutine id and its stack, walked now (0 when its stack has moved since
/// its entry, or cannot be read). Its frames are trusted only if it is still inside the same
/// write once they are read (the map's flag still set, its slot unchanged): a write that ended
/// meanwhile has let its frames be reused, and only its call site, kept at its entry, is kept.
#[inline(always)]
pub fn walk(e: &Event, w: &Writer) -> (u64, u64) {
    walk_from(e.tgid, e.g, e.cfg, w)
}

/// The writing goroutine's id (0: unreadable).
#[inline(always)]
pub fn goid_of(cfg: &ProcConfig, w: &Writer) -> u64 {
    context::read_u64(w.g + cfg.g_goid as u64).unwrap_or(0)
}

/// `walk`, for goroutine `g` of process `tgid` with settings `cfg`.
#[inline(always)]
pub fn walk_from(tgid: u32, g: u64, cfg: &ProcConfig, w: &Writer) -> (u64, u64) {
    let goid = goid_of(cfg, w);
    let start = StackStart::from_saved(w.ret, w.fp);
    let bounds = (
        context::read_u64(w.g + G_STACK_LO),
        context::read_u64(w.g + G_STACK_HI),
    );
    let stack = match bounds {
        (Some(lo), Some(hi)) if start.within(lo, hi) => {
            stack::capture_limited(tgid, &start, w.pcs[0], MAX_STACK_DEPTH)
        }
        _ => 0,
    };
    let same = other(tgid, w.map, g).is_some_and(|now| now.ns == w.ns && now.g == w.g);
    if same && busy(cfg, w.map) {
        return (goid, stack);
    }
    (goid, stack::capture_pcs(tgid, &w.pcs))
}

#[inline(always)]
pub fn classic_growing(e: &Event, map: u64) -> bool {
    classic_growing_in(e.cfg, map)
}

/// Classic maps: evacuation is in progress (`hmap.oldbuckets` set).
#[inline(always)]
pub fn classic_growing_in(cfg: &ProcConfig, map: u64) -> bool {
    cfg.map_impl == MAP_IMPL_CLASSIC
        && context::read_u64(map + cfg.map_oldbuckets as u64).is_some_and(|old| old != 0)
}

/// `concurrent_writes`: this write found another goroutine's in progress.
#[inline(always)]
fn report_writes(ctx: &ProbeContext, tgid: u32, map: u64, map_type: u64, op: Op, g: u64) {
    let Some(e) = context::full_event(ctx, tgid) else {
        return;
    };
    let Some(w) = other(tgid, map, g) else {
        return;
    };
    let (other_goid, other_stack) = walk(&e, &w);
    if other_stack == 0 {
        // Better no finding than one whose other side names nothing, or frames read from a
        // stack that has moved on.
        count(counter::IN_PROGRESS_UNNAMED);
        return;
    }
    let (other_op, other_growing) = (w.op, w.growing != 0);
    let now = context::now();
    let mut f = Finding {
        write_ns: now,
        step_ns: now,
        map,
        map_type,
        writer_stack: stack::capture(&e),
        iterator_stack: other_stack,
        writer_goid: e.goid(),
        iterator_goid: other_goid,
        repeat_key: 0,
        tgid,
        kind: FindingKind::ConcurrentWrites as u32,
        op: op as u32,
        growing: (other_growing || classic_growing(&e, map)) as u32,
        writes: 1,
        binary: e.binary,
        other_op,
        _pad: 0,
    };
    finding::output(&mut f, FindingKind::ConcurrentWrites);
}

/// A range over `map` starts, steps or ends (`it` its iterator) while another goroutine's write
/// to it is in progress: `concurrent_write_during_iteration`, the writer named from its entry.
/// Also when that write began before the range and when the range has a single step. True when
/// it reported.
///
/// `map_type`: the map's type descriptor, or 0 to read it from the iterator (which holds it
/// from the range's first step on; not yet at the start).
#[inline(always)]
pub fn during_iteration(e: &Event, map: u64, it: u64, map_type: u64) -> bool {
    // Array reads first: a map no other goroutine writes has no write of another in progress.
    let Some(w) = other(e.tgid, map, e.g) else {
        return false;
    };
    if !busy(e.cfg, map) {
        return false;
    }
    let (writer, writer_stack) = walk(e, &w);
    if writer_stack == 0 {
        count(counter::IN_PROGRESS_UNNAMED);
        return false;
    }
    let (op, growing) = (w.op, w.growing != 0);
    let step = StepContext {
        map,
        map_type: match map_type {
            0 => context::read_u64(it + e.cfg.iter_typ as u64).unwrap_or(0),
            t => t,
        },
        stack: stack::capture(e),
    };
    finding::emit(
        e,
        &step,
        Overlap {
            kind: FindingKind::ConcurrentWrite,
            op,
            writer,
            write_ns: context::now(),
            writer_stack,
            growing: growing || classic_growing(e, map),
            writes: 1,
        },
    );
    true
}
