//! Captures the current goroutine's stack into the `STACKS` table and returns its key.
//!
//! Walked along Go's frame pointers by hand rather than with `bpf_get_stackid`: the kernel's own
//! user unwinder starts at the probed instruction and, at a function's entry, omits the caller's
//! call site on some kernels and adds it on others (Linux 6.11 special-cases `push %rbp`), and
//! on arm64 never reads the link register. The first frame must be exactly that call site.

use aya_ebpf::helpers::bpf_probe_read_user;
use map_trace_common::event::counter;
use map_trace_common::stack::{HASH_SEED, MAX_STACK_DEPTH, STACK_TRUNCATED, hash_step};

use crate::context::Event;
use crate::goabi;
use crate::maps::{STACK_SCRATCH, STACKS, count};

/// `BPF_NOEXIST`: an equal stack is already stored under the same key.
const BPF_NOEXIST: u64 = 1;

/// The `STACKS` key of the current stack, or 0 when it could not be captured.
#[inline(always)]
pub fn capture(e: &Event) -> u64 {
    capture_from(e.tgid, &e.stack)
}

/// The `STACKS` key of the stack starting at `start` in process `tgid` (the current goroutine's,
/// or another goroutine's still inside a write), or 0 when it could not be captured.
#[inline(always)]
pub fn capture_from(tgid: u32, start: &goabi::StackStart) -> u64 {
    capture_limited(tgid, start, 0, MAX_STACK_DEPTH)
}

/// A stack of the given return addresses only (0s ignored), for a write whose frames can no
/// longer be read; 0 when there are none.
#[inline(always)]
pub fn capture_pcs(tgid: u32, pcs: &[u64; 2]) -> u64 {
    let Some(s) = STACK_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: a per-CPU map value; programs are not preempted on their CPU.
    let s = unsafe { &mut *s };
    let mut h = hash_step(HASH_SEED, tgid as u64);
    let mut len = 0usize;
    for &pc in pcs {
        if pc != 0 && len < MAX_STACK_DEPTH {
            s.pcs[len] = pc;
            h = hash_step(h, pc);
            len += 1;
        }
    }
    if len == 0 {
        return 0;
    }
    s.len = len as u32;
    s.flags = 0;
    s.tgid = tgid;
    count(counter::STACKS);
    let key = if h == 0 { 1 } else { h };
    // SAFETY: only tests presence.
    if unsafe { STACKS.get(key) }.is_none() {
        let _ = STACKS.insert(key, s, BPF_NOEXIST);
    }
    key
}

/// `capture_from` with the first return address given (`first`, 0: read it) and at most
/// `limit` frames.
#[inline(always)]
pub fn capture_limited(tgid: u32, start: &goabi::StackStart, first: u64, limit: usize) -> u64 {
    let Some(s) = STACK_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: a per-CPU map value; programs are not preempted on their CPU.
    let s = unsafe { &mut *s };
    let mut h = hash_step(HASH_SEED, tgid as u64);
    let mut len = 0u32;
    if !start.inside {
        let ret = match first {
            0 => goabi::return_address(start),
            pc => Some(pc),
        };
        let Some(ret) = ret else {
            count(counter::STACKS_UNREADABLE);
            return 0;
        };
        s.pcs[0] = ret;
        h = hash_step(h, ret);
        len = 1;
    }
    count(counter::STACKS);
    let mut fp = start.fp;
    let first_slot = len as usize;
    for i in 0..MAX_STACK_DEPTH {
        let slot = i + first_slot;
        if fp == 0 || slot >= MAX_STACK_DEPTH || slot >= limit {
            break;
        }
        // SAFETY: faults are caught by the helper.
        let Ok(record) = (unsafe { bpf_probe_read_user(fp as *const [u64; 2]) }) else {
            fp = 0;
            break;
        };
        let (next, pc) = (record[0], record[1]);
        if pc == 0 {
            fp = 0;
            break;
        }
        s.pcs[slot] = pc;
        len = slot as u32 + 1;
        h = hash_step(h, pc);
        // Frames sit at increasing addresses; anything else is a broken chain, not a frame.
        fp = if next > fp { next } else { 0 };
    }
    s.len = len;
    s.flags = 0;
    s.tgid = tgid;
    if fp != 0 && len as usize == MAX_STACK_DEPTH {
        s.flags = STACK_TRUNCATED;
        count(counter::STACKS_TRUNCATED);
    }
    let key = if h == 0 { 1 } else { h };
    // The same few stacks recur at every write of a loop: a lookup is much cheaper than an LRU
    // insert that finds the key taken.
    // SAFETY: only tests presence.
    if unsafe { STACKS.get(key) }.is_none() {
        let _ = STACKS.insert(key, s, BPF_NOEXIST);
    }
    key
}
