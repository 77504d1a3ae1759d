//! Findings handed to the daemon through the `FINDINGS` ring buffer.

use map_trace_common::event::{Finding, FindingKind, counter};

use crate::context::Event;
use crate::maps::{FINDINGS, count};

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
