//! Go's map fatal errors: when the runtime is about to die of `concurrent map writes`,
//! `concurrent map read and map write`, `concurrent map iteration and map write` (or another
//! map message), name every write in progress in the dying process — for a read/write crash
//! the writer Go never prints — while those goroutines are still inside their writes.
//!
//! The probe sits on `runtime.fatal`, which every map check of Go 1.19–1.27 calls (Swiss
//! builds through `internal/runtime/maps.fatal`, a one-call shim). It costs nothing while
//! nothing crashes. At a crash it looks at the latest writes to begin on each CPU (`RECENT`,
//! in a `bpf_loop`, Linux 5.17+) for writes of this process by other goroutines whose map's
//! writing flag is still set, or that began just before; the first one still in progress is
//! walked as `inprogress` walks a live race's writer, the others are named by their call
//! sites. Microseconds count: a writer leaves its write soon after Go's check, and its frames
//! are then no longer trusted.

use core::ffi::c_void;

use aya_ebpf::helpers::{bpf_loop, bpf_probe_read_user_buf};
use map_trace_common::config::ProcConfig;
use map_trace_common::event::{FindingKind, counter};
use map_trace_common::fatal::{
    FATAL_MESSAGE_LEN, FATAL_RECENT_NS, FATAL_WRITERS, Fatal, FatalWriter, is_map_message,
};
use map_trace_common::state::{RECENT_CPUS, RECENT_PER_CPU, WRITER_SLOTS, Writer};

use crate::context::Event;
use crate::inprogress::{self, WAYS};
use crate::maps::{FATAL_SCRATCH, FATALS, RECENT, WRITERS, count};
use crate::stack;

/// What the search needs and finds. On the BPF stack: `bpf_loop` hands its callback a pointer
/// to the caller's stack only.
#[repr(C)]
struct Scan {
    cfg: ProcConfig,
    /// The goroutine that is dying (its own write, if any, is not "another" write).
    g: u64,
    /// When it called the runtime's fatal-error function.
    now: u64,
    tgid: u32,
    /// Entries of `slots` filled, and writes found past them.
    found: u32,
    more: u32,
    /// Bit i: the write in `slots[i]` was still in progress (its map's flag set) when found.
    busy: u32,
    _pad: u32,
    /// The slots of the writes found, in the order found.
    slots: [u32; FATAL_WRITERS],
}

/// `runtime.fatal(s string)`: `ptr`, `len` the message.
#[inline(always)]
pub fn fatal(e: &Event, ptr: u64, len: u64) {
    let Some(rec) = FATAL_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a per-CPU map value; programs are not preempted on their CPU.
    let rec = unsafe { &mut *rec };
    rec.message = [0; FATAL_MESSAGE_LEN];
    let n = (len as usize).min(FATAL_MESSAGE_LEN);
    if n == 0 {
        return;
    }
    // SAFETY: faults are caught by the helper; `n` is within the buffer.
    let read = unsafe { bpf_probe_read_user_buf(ptr as *const u8, &mut rec.message[..n]) };
    // The kernel's reads never fault a page in: a process that never touched its message's
    // page dies with it unmapped. Such a record is sent as if it were a map's, with where the
    // message is, for the daemon to read and judge (`Fatal::settle_message`): a crash is rare,
    // and dropping it silently lost a map's fatal error now and then.
    let unread = read.is_err();
    if !unread && !is_map_message(&rec.message, n) {
        return; // a deadlock, a sync misuse: not a map's
    }
    rec.message_addr = if unread { ptr } else { 0 };
    // The precise clock: the writers' slots it is compared with below keep precise times.
    let now = crate::context::now();
    rec.ns = now;
    rec.goid = e.goid();
    rec.tgid = e.tgid;
    rec.binary = e.binary;
    rec.message_len = if unread { 0 } else { n as u32 };
    rec.message_full_len = len.min(u32::MAX as u64) as u32;
    rec.stack = stack::capture(e);
    let mut scan = Scan {
        cfg: *e.cfg,
        g: e.g,
        now,
        tgid: e.tgid,
        found: 0,
        more: 0,
        busy: 0,
        _pad: 0,
        slots: [u32::MAX; FATAL_WRITERS],
    };
    // The callback only finds writes: a stack walk in a callback is more than the 6.1
    // verifier can take (its loop is not pruned there), so the first write found — the one
    // most likely still in progress — is walked here, and any others are named by their call
    // sites, kept at their entries.
    // SAFETY: the callback is a BPF subprogram reading and writing `scan`, which outlives the
    // call.
    unsafe {
        bpf_loop(
            RECENT_CPUS * RECENT_PER_CPU,
            look as *mut c_void,
            (&mut scan as *mut Scan).cast(),
            0,
        );
    }
    let (mut named, mut unnamed) = (0usize, 0u32);
    for i in 0..FATAL_WRITERS {
        if i as u32 >= scan.found {
            break;
        }
        // SAFETY: an array slot of plain integers.
        let Some(w) = WRITERS.get(scan.slots[i]).copied() else {
            continue;
        };
        let busy = scan.busy & (1 << i) != 0;
        let (goid, stack) = match i == 0 && busy {
            true => inprogress::walk_from(e.tgid, e.g, e.cfg, &w),
            false => (
                inprogress::goid_of(e.cfg, &w),
                stack::capture_pcs(e.tgid, &w.pcs),
            ),
        };
        if stack == 0 {
            unnamed += 1;
            count(counter::IN_PROGRESS_UNNAMED);
            continue;
        }
        if let Some(out) = rec.writer.get_mut(named) {
            *out = FatalWriter {
                map: w.map,
                map_type: w.map_type,
                goid,
                stack,
                op: w.op,
                growing: (w.growing != 0 || inprogress::classic_growing_in(e.cfg, w.map)) as u32,
                in_progress: busy as u32,
                _pad: 0,
            };
            named += 1;
        }
    }
    rec.writers = named as u32;
    rec.writers_unnamed = unnamed;
    rec.writers_more = scan.more;
    // The daemon drains this ring at each poll, and before it forgets a process that exited.
    match FATALS.output::<Fatal>(&*rec, 0) {
        // Unread: a finding only once the daemon has read it and found it a map's.
        Ok(()) if unread => count(counter::FATALS_UNREAD),
        Ok(()) => count(counter::FINDINGS + FindingKind::FatalMapError as u32),
        Err(_) => count(counter::FINDINGS_DROPPED),
    }
}

/// Entry `index` of `RECENT`: if its slot holds a write of the dying process by another
/// goroutine, the latest to its map, that is still in progress (its map's writing flag set)
/// or began at most `FATAL_RECENT_NS` before the crash, that write is recorded.
#[inline(never)]
extern "C" fn look(index: u32, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the caller's `Scan` (see `fatal`).
    let s = unsafe { &mut *(ctx as *mut Scan) };
    let Some(&entry) = RECENT.get(index) else {
        return 1;
    };
    if entry == 0 {
        return 0;
    }
    let slot = (entry - 1) & (WRITER_SLOTS - 1);
    // SAFETY: an array slot of plain integers.
    let Some(w) = WRITERS.get(slot).copied() else {
        return 0;
    };
    if w.tgid != s.tgid || w.g == 0 || w.g == s.g || seen(s, slot) || !latest(s, slot, &w) {
        return 0;
    }
    let busy = inprogress::busy(&s.cfg, w.map);
    if !busy && s.now.saturating_sub(w.ns) > FATAL_RECENT_NS {
        return 0;
    }
    match s.slots.get_mut(s.found as usize) {
        Some(at) => {
            *at = slot;
            s.busy |= (busy as u32) << s.found;
            s.found += 1;
        }
        None => s.more += 1,
    }
    0
}

/// Whether `slot` was looked at already (a slot is noted again at each write that reuses it).
#[inline(always)]
fn seen(s: &Scan, slot: u32) -> bool {
    let mut seen = false;
    for &at in &s.slots {
        seen |= at == slot;
    }
    seen
}

/// Whether `w`, in `slot`, is the latest entry of another goroutine for its map: a map's
/// entries share its group of `WAYS` slots, and only the latest can be the write in progress.
#[inline(always)]
fn latest(s: &Scan, slot: u32, w: &Writer) -> bool {
    let base = slot & !(WAYS - 1);
    let mut latest = true;
    for b in 0..WAYS {
        if let Some(o) = WRITERS.get(base | b)
            && base | b != slot
            && o.tgid == s.tgid
            && o.g != 0
            && o.g != s.g
            && o.map == w.map
            && o.ns > w.ns
        {
            latest = false;
        }
    }
    latest
}
