//! What every architecture shares: decoding a function's first instructions through [`Isa`],
//! and classifying what the architecture's matcher made of them, with the listing that a
//! fallback reason quotes.

use std::fmt::Write as _;

use super::{CheckShape, Fallback, StackCheck};

/// How far to look for a late `g.stackguard0` read, only to word the fallback reason: the
/// maymorestack hook's spill and reload of up to 24 argument registers fits.
const DIAGNOSTIC_LIMIT: usize = 64;
/// Instructions quoted in a nosplit reason: enough to see what the function starts with.
const NOSPLIT_QUOTE: usize = 3;

/// What an instruction set contributes: decoding, and the matcher for its stack checks.
pub(super) trait Isa {
    type Insn: Copy;
    type Op: Copy;
    /// Instructions handed to the matcher: at least the longest check.
    const WINDOW: usize;
    fn decode(code: &[u8], pos: usize, entry: u64) -> Decode<Self::Insn>;
    /// `offset` is the instruction's, from the entry.
    fn op(insn: &Self::Insn, offset: u64, entry: u64) -> Self::Op;
    fn reads_guard(insn: &Self::Insn) -> bool;
    /// Return, unconditional jump or trap: what follows is not on the path from the entry.
    fn ends_flow(insn: &Self::Insn) -> bool;
    fn format(insn: &Self::Insn) -> String;
    fn matches(insns: &[Decoded<Self>], entry: u64) -> Match;
}

pub(super) enum Decode<I> {
    /// An instruction and its length.
    Insn(I, usize),
    /// No bytes left, or not enough for the instruction they start.
    End,
    /// Not an instruction; how many bytes to quote.
    Invalid(usize),
}

pub(super) struct Decoded<A: Isa + ?Sized> {
    pub(super) insn: A::Insn,
    pub(super) op: A::Op,
    /// Offsets from the entry, of this instruction and of the next.
    pub(super) offset: u64,
    pub(super) next: u64,
    pub(super) reads_guard: bool,
}

enum Stop {
    Limit,
    FlowEnd,
    EndOfCode,
    Invalid { offset: u64, bytes: String },
}

pub(super) struct Scan<A: Isa> {
    /// The first `A::WINDOW` instructions at most.
    insns: Vec<Decoded<A>>,
    /// Instructions decoded in all, the window and the diagnostic scan after it.
    scanned: usize,
    stop: Stop,
    late_guard_read: Option<u64>,
    code_len: usize,
    entry: u64,
}

pub(super) fn scan<A: Isa>(code: &[u8], entry: u64) -> Scan<A> {
    let mut insns = Vec::with_capacity(A::WINDOW);
    let mut late_guard_read = None;
    let mut pos = 0usize;
    let mut scanned = 0usize;
    let stop = loop {
        if scanned >= DIAGNOSTIC_LIMIT || (scanned >= A::WINDOW && late_guard_read.is_some()) {
            break Stop::Limit;
        }
        let offset = pos as u64;
        let (insn, len) = match A::decode(code, pos, entry) {
            Decode::Insn(insn, len) => (insn, len),
            Decode::End => break Stop::EndOfCode,
            Decode::Invalid(quote) => {
                let end = code.len().min(pos.saturating_add(quote));
                break Stop::Invalid {
                    offset,
                    bytes: hex_bytes(code.get(pos..end).unwrap_or_default()),
                };
            }
        };
        pos = pos.saturating_add(len);
        scanned += 1;
        let reads_guard = A::reads_guard(&insn);
        if insns.len() < A::WINDOW {
            insns.push(Decoded {
                insn,
                op: A::op(&insn, offset, entry),
                offset,
                next: pos as u64,
                reads_guard,
            });
        } else if reads_guard && late_guard_read.is_none() {
            late_guard_read = Some(offset);
        }
        if A::ends_flow(&insn) {
            break Stop::FlowEnd;
        }
    };
    Scan {
        insns,
        scanned,
        stop,
        late_guard_read,
        code_len: code.len(),
        entry,
    }
}

pub(super) enum Match {
    Found(StackCheck),
    /// The decoded instructions start a check, but it is not complete.
    Partial,
    /// A check starts, then an instruction does not fit it.
    Deviates,
    /// The first instruction does not start a check.
    No,
}

impl Match {
    /// The final conditional branch of a check of `shape` (at `target`, relative to the
    /// function's `entry`) is matched: probes go right after it, at `next`.
    pub(super) fn found(
        shape: CheckShape,
        g_from_tls: bool,
        next: u64,
        entry: u64,
        target: i64,
    ) -> Match {
        Match::Found(StackCheck {
            shape,
            g_from_tls,
            attach_offset: next,
            morestack_block: entry.wrapping_add_signed(target),
        })
    }

    /// The instructions ran out before a check was complete: none begun, or one begun.
    pub(super) fn ran_out(begun: bool) -> Match {
        if begun { Match::Partial } else { Match::No }
    }
}

pub(super) fn classify<A: Isa>(scan: &Scan<A>) -> Result<StackCheck, Fallback> {
    let everything = usize::MAX;
    let stopped_in_window = scan.scanned == scan.insns.len();
    let ended = matches!(scan.stop, Stop::EndOfCode) && stopped_in_window;
    let truncated = || Fallback::Truncated {
        len: scan.code_len,
        listing: scan.listing(everything),
    };
    let unrecognised = || Fallback::Unrecognised {
        listing: scan.listing(everything),
    };
    let first_guard_read = scan
        .insns
        .iter()
        .find(|d| d.reads_guard)
        .map(|d| d.offset)
        .or(scan.late_guard_read);
    match A::matches(&scan.insns, scan.entry) {
        Match::Found(check) => return Ok(check),
        Match::Partial if ended => return Err(truncated()),
        Match::No if ended && scan.insns.is_empty() => return Err(truncated()),
        // Without a read of the guard, a start like `mov r12, rsp` was a coincidence.
        Match::Partial | Match::Deviates if first_guard_read.is_some() => {
            return Err(unrecognised());
        }
        Match::Partial | Match::Deviates | Match::No => {}
    }
    match first_guard_read {
        Some(0) => return Err(unrecognised()),
        Some(at) => {
            return Err(Fallback::CheckNotAtEntry {
                at,
                listing: scan.listing(NOSPLIT_QUOTE),
            });
        }
        None => {}
    }
    // Garbage after the first few instructions of a nosplit function (arm64 `UNDEF` words after
    // a call that does not return, say) says nothing about its prologue.
    if let Stop::Invalid { offset, bytes } = &scan.stop
        && stopped_in_window
    {
        return Err(Fallback::Undecodable {
            offset: *offset,
            bytes: bytes.clone(),
            listing: scan.decoded_listing(everything),
        });
    }
    Err(Fallback::NoStackCheck {
        scanned: scan.scanned,
        listing: scan.listing(NOSPLIT_QUOTE),
    })
}

impl<A: Isa> Scan<A> {
    /// The first `limit` decoded instructions, then the undecodable bytes if decoding stopped on
    /// them right after.
    fn listing(&self, limit: usize) -> String {
        let mut out = self.decoded_listing(limit);
        if let Stop::Invalid { offset, bytes } = &self.stop
            && self.scanned < limit
            && self.scanned == self.insns.len()
        {
            if !out.is_empty() {
                out.push_str("; ");
            }
            let _ = write!(out, "+{offset:#x} <undecodable {bytes}>");
        }
        if out.is_empty() {
            out.push_str("<no whole instruction>");
        }
        out
    }

    fn decoded_listing(&self, limit: usize) -> String {
        let mut out = String::new();
        for (i, d) in self.insns.iter().take(limit).enumerate() {
            if i > 0 {
                out.push_str("; ");
            }
            let _ = write!(out, "+{:#x} {}", d.offset, A::format(&d.insn));
        }
        if self.scanned > self.insns.len().min(limit) {
            out.push_str("; …");
        }
        out
    }
}

fn hex_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The morestack block is always placed after the function body, so a backward (or
/// self-) branch cannot be part of a check. Branch targets are signed offsets from the entry:
/// a branch to before the entry must not look like a long forward one.
pub(super) fn forward(target: i64, next: u64) -> bool {
    i64::try_from(next).is_ok_and(|next| target > next)
}
