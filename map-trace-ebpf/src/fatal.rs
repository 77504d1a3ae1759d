//! Go's map fatal errors: when the runtime is about to die of `concurrent map writes`,
//! `concurrent map read and map write`, `concurrent map iteration and map write` (or another
//! map message), name every write in progress in the dying process — for a read/write crash
//! the writer Go never prints — while those goroutines are still inside their writes.
//!
//! The probe sits on `runtime.fatal`, which every map check of Go 1.19–1.27 calls (Swiss
//! builds through `internal/runtime/maps.fatal`, a one-call shim). It costs nothing while
//! nothing crashes. At a crash it scans all of `WRITERS` (in a `bpf_loop`, Linux 5.17+) for
//! entries of this process whose map's writing flag is set, and walks each one's stack as
//! `inprogress` does for a live race.

use core::ffi::c_void;

use aya_ebpf::helpers::{bpf_loop, bpf_probe_read_user_buf};
use map_trace_common::event::{FindingKind, counter};
use map_trace_common::fatal::{
    FATAL_MESSAGE_LEN, FATAL_WRITERS, Fatal, FatalWriter, is_map_message,
};
use map_trace_common::state::WRITER_SLOTS;

use crate::correlate::Event;
use crate::inprogress::{self, WAYS};
use crate::maps::{FATAL_SCRATCH, FATALS, WRITERS, count};
use crate::stack;

/// What the scan of `WRITERS` needs and finds. On the BPF stack: `bpf_loop` hands its callback
/// a pointer to the caller's stack only.
#[repr(C)]
struct Scan {
    /// The goroutine that is dying (its own write, if any, is not "another" write).
    g: u64,
    tgid: u32,
    map_writing: u32,
    writing_mask: u32,
    /// Entries of `slots` filled; writes in progress beyond them.
    found: u32,
    more: u32,
    _pad: u32,
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
    // SAFETY: faults are caught by the helper; `n` is within the buffer.
    if n == 0
        || unsafe { bpf_probe_read_user_buf(ptr as *const u8, &mut rec.message[..n]) }.is_err()
    {
        return;
    }
    if !is_map_message(&rec.message, n) {
        return; // a deadlock, a sync misuse: not a map's
    }
    rec.ns = e.now;
    rec.goid = e.goid;
    rec.tgid = e.tgid;
    rec.binary = e.binary;
    rec.message_len = n as u32;
    rec.message_full_len = len.min(u32::MAX as u64) as u32;
    rec.stack = stack::capture(e);
    let mut scan = Scan {
        g: e.g,
        tgid: e.tgid,
        map_writing: e.cfg.map_writing,
        writing_mask: e.cfg.writing_mask,
        found: 0,
        more: 0,
        _pad: 0,
        slots: [0; FATAL_WRITERS],
    };
    // SAFETY: the callback is a BPF subprogram reading `scan`, which outlives the call.
    unsafe {
        bpf_loop(
            WRITER_SLOTS / WAYS,
            scan_group as *mut c_void,
            (&mut scan as *mut Scan).cast(),
            0,
        );
    }
    rec.writers_more = scan.more;
    rec.writers_unnamed = 0;
    let mut named = 0usize;
    for i in 0..FATAL_WRITERS {
        if i >= scan.found as usize {
            break;
        }
        // SAFETY: an array slot of plain integers.
        let Some(w) = WRITERS.get(scan.slots[i]).copied() else {
            continue;
        };
        let (goid, stack) = inprogress::walk(e, &w);
        if stack == 0 {
            rec.writers_unnamed += 1;
            count(counter::IN_PROGRESS_UNNAMED);
            continue;
        }
        if let Some(slot) = rec.writer.get_mut(named) {
            *slot = FatalWriter {
                map: w.map,
                map_type: w.map_type,
                goid,
                stack,
                op: w.op,
                growing: (w.growing != 0 || inprogress::classic_growing(e, w.map)) as u32,
            };
            named += 1;
        }
    }
    rec.writers = named as u32;
    // Wake the daemon: the process is about to exit, and it reads this before it forgets it.
    match FATALS.output::<Fatal>(&*rec, 0) {
        Ok(()) => count(counter::FINDINGS + FindingKind::FatalMapError as u32),
        Err(_) => count(counter::FINDINGS_DROPPED),
    }
}

/// One group of `WAYS` slots (`index`): records the slot of each map of the dying process whose
/// latest write by another goroutine is still in progress (its writing flag set).
#[inline(never)]
extern "C" fn scan_group(index: u32, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the caller's `Scan` (see `fatal`).
    let s = unsafe { &mut *(ctx as *mut Scan) };
    let base = (index * WAYS) & (WRITER_SLOTS - 1);
    for a in 0..WAYS {
        let Some(w) = WRITERS.get(base | a) else {
            continue;
        };
        let mine = |tgid: u32, g: u64| tgid == s.tgid && g != 0 && g != s.g;
        if !mine(w.tgid, w.g) {
            continue;
        }
        // A map's entries share its group: only its latest one can be the write in progress.
        let mut latest = true;
        for b in 0..WAYS {
            if let Some(o) = WRITERS.get(base | b)
                && b != a
                && mine(o.tgid, o.g)
                && o.map == w.map
                && (o.ns > w.ns || (o.ns == w.ns && b > a))
            {
                latest = false;
            }
        }
        if !latest || !inprogress::flag_set(w.map, s.map_writing, s.writing_mask) {
            continue;
        }
        match s.slots.get_mut(s.found as usize) {
            Some(slot) => {
                *slot = base | a;
                s.found += 1;
            }
            None => s.more += 1,
        }
    }
    0
}
