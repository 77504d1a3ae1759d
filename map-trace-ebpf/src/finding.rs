//! Findings handed to the daemon through the `FINDINGS` ring buffer.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use map_trace_common::event::{FOLD_REPEATS, Finding, FindingKind, Repeats, counter};
use map_trace_common::stack::{HASH_SEED, hash_step};

use crate::context::Event;
use crate::maps::{FINDINGS, OUTPUT, REPEATS, count};

/// `BPF_NOEXIST`: only the first occurrence creates the entry.
const BPF_NOEXIST: u64 = 1;

/// Don't wake the daemon per finding: it polls.
const BPF_RB_NO_WAKEUP: u64 = 1;

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

/// Hands a finding to the daemon, or counts it lost. A repeat of one already sent (same key,
/// see `Repeats`) is only counted in `REPEATS`, when the daemon asked for that.
#[inline(always)]
pub fn output(f: &mut Finding, kind: FindingKind) {
    let fold = OUTPUT.get(0).is_some_and(|v| v & FOLD_REPEATS != 0);
    if fold {
        let key = repeat_key(f);
        if let Some(r) = REPEATS.get_ptr_mut(key) {
            // SAFETY: a map value. Every CPU counts into it: a BPF atomic add (the
            // `core::sync::atomic` types offer no read-modify-write on this target).
            unsafe {
                atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*r).count, 1);
                (*r).last_ns = f.step_ns;
            }
            count(counter::FINDINGS + kind as u32);
            count(counter::REPEATS_FOLDED);
            return;
        }
        f.repeat_key = key;
    }
    match FINDINGS.output::<Finding>(&*f, BPF_RB_NO_WAKEUP) {
        Ok(()) => {
            count(counter::FINDINGS + kind as u32);
            if fold {
                // Created only once the first is on its way, so no repeat is counted against
                // a finding the daemon never gets.
                let _ = REPEATS.insert(f.repeat_key, Repeats::default(), BPF_NOEXIST);
            }
        }
        Err(_) => count(counter::FINDINGS_DROPPED),
    }
}

/// What makes two occurrences one in the kernel: kind, ops, map type, process and both stacks
/// (their `STACKS` keys hash every frame). Never 0, which means "not folded".
#[inline(always)]
fn repeat_key(f: &Finding) -> u64 {
    let mut h = hash_step(HASH_SEED, f.tgid as u64);
    h = hash_step(h, ((f.kind as u64) << 32) | f.op as u64);
    h = hash_step(h, f.other_op as u64);
    h = hash_step(h, f.map_type);
    h = hash_step(h, f.writer_stack);
    h = hash_step(h, f.iterator_stack);
    if h == 0 { 1 } else { h }
}

#[inline(always)]
pub fn emit(e: &Event, step: &StepContext, o: Overlap) {
    let mut f = Finding {
        write_ns: o.write_ns,
        step_ns: crate::context::now(),
        map: step.map,
        map_type: step.map_type,
        writer_stack: o.writer_stack,
        iterator_stack: step.stack,
        writer_goid: o.writer,
        iterator_goid: e.goid(),
        repeat_key: 0,
        tgid: e.tgid,
        kind: o.kind as u32,
        op: o.op,
        growing: o.growing as u32,
        writes: o.writes,
        binary: e.binary,
        other_op: 0,
        _pad: 0,
    };
    output(&mut f, o.kind);
}
