//! Reading the machine code of Go functions. Where to attach inside a function: just after the
//! stack-check prologue.
//!
//! Every Go function that may need more stack starts by comparing SP (less its frame) with
//! `g.stackguard0` and branching to a `runtime.morestack` call at the end of the function. A
//! uprobe on the first instruction is both slow and imprecise:
//! * the kernel cannot emulate the compare (amd64 `CMP reg, [mem]`, arm64 `LDR`), so every hit
//!   single-steps it out of line (~4.9 µs on amd64);
//! * `runtime.newstack` resumes the function at its first instruction after growing the stack or
//!   serving a preemption request (both arrive through the guard), so an entry probe fires twice
//!   for one call.
//!
//! Just after the check's final conditional branch neither applies: that point is reached once
//! per call, with the arguments still in their registers (the check only uses scratch registers:
//! amd64 R12, arm64 R16, R17 and R27). On amd64 from Go 1.21 the instruction there is
//! `PUSH RBP`, which the kernel emulates (~1.1 µs). Go 1.19 (amd64) puts `SUB RSP, imm` there,
//! which the kernel single-steps, so there only the double firing goes away. arm64 puts
//! `STR X30, [SP, #-N]!` there, and the probe goes one instruction further (see
//! `skip_writeback_store`).
//!
//! The sequences are the ones `stacksplit` emits (`cmd/internal/obj/x86/obj6.go`,
//! `cmd/internal/obj/arm64/obj7.go`), unchanged from Go 1.19 through 1.27. They are matched
//! instruction by instruction, registers and branch directions included, because a wrong offset
//! would put a breakpoint in the middle of an instruction or skip part of the function: anything
//! else (nosplit functions, `-d=maymorestack` builds, garbage) falls back to the entry, with a
//! reason that says which case it was.
//!
//! The same decoders find where a map iteration runs to its end (`iter_end`), for the
//! low-overhead mode. The prologue matcher is split by job: `matcher` (the scan and the
//! classification every architecture shares), `amd64` and `arm64` (decoding and the sequences).

mod amd64;
mod arm64;
pub mod iter_end;
mod matcher;
#[cfg(test)]
mod tests;

use std::fmt;

use crate::Arch;
use amd64::Amd64;
use arm64::{Arm64, skip_writeback_store};
use matcher::{classify, scan};

/// Where a uprobe goes inside a function, relative to its entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachPoint {
    /// Byte offset from the function entry. 0 when no stack-check prologue was recognised.
    pub offset: u64,
    /// Why the offset is 0 (None when a prologue was recognised and skipped).
    pub fallback_reason: Option<String>,
}

/// Finds the first instruction after the stack-check branch of the function whose machine code is
/// `code` (starting at virtual address `entry`).
pub fn attach_point(arch: Arch, code: &[u8], entry: u64) -> AttachPoint {
    match stack_check(arch, code, entry) {
        Ok(check) => AttachPoint {
            offset: check.attach_offset + skip_writeback_store(arch, code, check.attach_offset),
            fallback_reason: None,
        },
        Err(fallback) => AttachPoint {
            offset: 0,
            fallback_reason: Some(fallback.to_string()),
        },
    }
}

/// Recognises the stack-check prologue at the start of `code` (at virtual address `entry`).
/// `code` may be the whole function or only its first few dozen bytes.
pub fn stack_check(arch: Arch, code: &[u8], entry: u64) -> Result<StackCheck, Fallback> {
    if code.is_empty() {
        return Err(Fallback::Empty);
    }
    match arch {
        Arch::X86_64 => classify(&scan::<Amd64>(code, entry)),
        Arch::Aarch64 => classify(&scan::<Arm64>(code, entry)),
    }
}

/// Which of the compiler's three stack checks a function has; its frame size decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CheckShape {
    /// Frame of at most `StackSmall` (128) bytes: SP itself is compared, because the guard
    /// already leaves that much room below it.
    Small,
    /// Frame of at most `StackBig` (4096) bytes: SP minus the excess over `StackSmall` is
    /// compared.
    Large,
    /// Larger frame: SP minus the frame could wrap around and pass the compare, so a branch on
    /// the subtraction's borrow comes first.
    Huge,
}

/// A recognised stack-check prologue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackCheck {
    pub shape: CheckShape,
    /// amd64 assembly (ABI0) functions have no g register on entry and load g from
    /// thread-local storage first.
    pub g_from_tls: bool,
    /// Byte offset of the first instruction after the final conditional branch.
    pub attach_offset: u64,
    /// Virtual address the check branches to: the block that calls `runtime.morestack`.
    pub morestack_block: u64,
}

/// Why no stack check was recognised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fallback {
    Empty,
    /// `g.stackguard0` is not read: the function is nosplit (or a leaf the compiler made one).
    NoStackCheck {
        /// Instructions examined: up to a return, an unconditional jump, the end of the code
        /// or the scan limit.
        scanned: usize,
        listing: String,
    },
    /// What starts like a stack check goes on differently from any sequence the compiler emits.
    Unrecognised {
        listing: String,
    },
    /// `g.stackguard0` is first read further in, after other code. `-d=maymorestack` builds do
    /// this (they spill the arguments and call a hook before the check), and so could a nosplit
    /// function that reads the guard.
    CheckNotAtEntry {
        at: u64,
        listing: String,
    },
    /// The code ends inside its first instruction or inside a stack check.
    Truncated {
        len: usize,
        listing: String,
    },
    /// Bytes that are not an instruction come before any stack check.
    Undecodable {
        offset: u64,
        bytes: String,
        listing: String,
    },
}

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fallback::Empty => f.write_str("no code to examine (empty function)"),
            Fallback::NoStackCheck { scanned, listing } => {
                let plural = if *scanned == 1 { "" } else { "s" };
                write!(
                    f,
                    "no stack check in the first {scanned} instruction{plural} (nosplit function): {listing}"
                )
            }
            Fallback::Unrecognised { listing } => write!(f, "unrecognised prologue: {listing}"),
            Fallback::CheckNotAtEntry { at, listing } => write!(
                f,
                "unrecognised prologue: g.stackguard0 is first read at +{at:#x}, after other code \
                 (as in -d=maymorestack builds): {listing}"
            ),
            Fallback::Truncated { len, listing } => write!(
                f,
                "code ends at +{len:#x}, before the stack check could be read whole: {listing}"
            ),
            Fallback::Undecodable {
                offset,
                bytes,
                listing,
            } => {
                write!(f, "undecodable bytes {bytes} at +{offset:#x}")?;
                if !listing.is_empty() {
                    write!(f, " after: {listing}")?;
                }
                Ok(())
            }
        }
    }
}

/// `g.stackguard0` is the third word of `runtime.g` in every Go version (after `stack.lo/hi`).
const STACKGUARD0: u64 = 16;
