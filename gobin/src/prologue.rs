//! Where to attach inside a Go function: just after the stack-check prologue.
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

use std::fmt::{self, Write as _};

use iced_x86::{
    Decoder, DecoderError, DecoderOptions, Formatter as _, IntelFormatter, Mnemonic, OpKind,
    Register,
};
use yaxpeax_arch::{Decoder as _, U8Reader};
use yaxpeax_arm::armv8::a64::{
    InstDecoder, Instruction as A64Instruction, Opcode, Operand, ShiftStyle, SizeCode,
};

use crate::Arch;

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

/// 4 when the instruction at `offset` is arm64's frame-setup store with SP writeback
/// (`MOVD.W R30, -N(RSP)` = `STR X30, [SP, #-N]!`, or an `STP` of the same form), else 0.
///
/// The kernel single-steps such a store out of line, and an out-of-line step that is redone
/// applies the writeback twice: the VM tests saw a Go program on an arm64 6.1 kernel die with
/// its frame shifted (an argument reloaded from the saved-LR slot) once in a few hundred runs.
/// The next instruction (`MOVD R29, -8(RSP)`) is a plain store, harmless to redo, and the probe
/// there still sees the arguments, the link register and the caller's frame pointer unchanged.
fn skip_writeback_store(arch: Arch, code: &[u8], offset: u64) -> u64 {
    if arch != Arch::Aarch64 {
        return 0;
    }
    let Some(word) = usize::try_from(offset)
        .ok()
        .and_then(|o| code.get(o..o.checked_add(4)?))
    else {
        return 0;
    };
    let Ok(insn) = InstDecoder::default().decode(&mut U8Reader::new(word)) else {
        return 0;
    };
    let writes_back_sp = insn
        .operands
        .iter()
        .any(|o| matches!(o, Operand::RegPreIndex(X31, _, true)));
    if matches!(insn.opcode, Opcode::STR | Opcode::STP) && writes_back_sp {
        4
    } else {
        0
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
/// How far to look for a late `g.stackguard0` read, only to word the fallback reason: the
/// maymorestack hook's spill and reload of up to 24 argument registers fits.
const DIAGNOSTIC_LIMIT: usize = 64;
/// Instructions quoted in a nosplit reason: enough to see what the function starts with.
const NOSPLIT_QUOTE: usize = 3;

/// What an instruction set contributes: decoding, and the matcher for its stack checks.
trait Isa {
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

enum Decode<I> {
    /// An instruction and its length.
    Insn(I, usize),
    /// No bytes left, or not enough for the instruction they start.
    End,
    /// Not an instruction; how many bytes to quote.
    Invalid(usize),
}

struct Decoded<A: Isa + ?Sized> {
    insn: A::Insn,
    op: A::Op,
    /// Offsets from the entry, of this instruction and of the next.
    offset: u64,
    next: u64,
    reads_guard: bool,
}

enum Stop {
    Limit,
    FlowEnd,
    EndOfCode,
    Invalid { offset: u64, bytes: String },
}

struct Scan<A: Isa> {
    /// The first `A::WINDOW` instructions at most.
    insns: Vec<Decoded<A>>,
    /// Instructions decoded in all, the window and the diagnostic scan after it.
    scanned: usize,
    stop: Stop,
    late_guard_read: Option<u64>,
    code_len: usize,
    entry: u64,
}

fn scan<A: Isa>(code: &[u8], entry: u64) -> Scan<A> {
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

enum Match {
    Found(StackCheck),
    /// The decoded instructions start a check, but it is not complete.
    Partial,
    /// A check starts, then an instruction does not fit it.
    Deviates,
    /// The first instruction does not start a check.
    No,
}

fn classify<A: Isa>(scan: &Scan<A>) -> Result<StackCheck, Fallback> {
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
fn forward(target: i64, next: u64) -> bool {
    i64::try_from(next).is_ok_and(|next| target > next)
}

// ---------------------------------------------------------------------------------------------
// amd64: g is in R14 (ABIInternal) and the check's scratch register is R12.
// ---------------------------------------------------------------------------------------------

struct Amd64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum X86Op {
    /// `mov r14, fs:[disp]`, or with `via_r14` `mov r14, fs:[r14]`.
    LoadGFromTls {
        via_r14: bool,
    },
    /// g's TLS offset, for the `fs:[r14]` load that follows in position-independent code:
    /// `mov r14, imm` in PIE executables (local-exec TLS), `mov r14, [rip+disp]` in shared
    /// objects (initial-exec TLS; from obj6.go, not seen in a binary).
    LoadTlsOffset,
    /// `cmp rsp, [r14+0x10]` or `cmp r12, [r14+0x10]`.
    CmpGuard(Register),
    /// `lea r12, [rsp+disp]`.
    LeaR12Sp,
    /// `mov r12, rsp`.
    MovR12Sp,
    /// `sub r12, imm`.
    SubR12Imm,
    /// `jb` to an offset from the entry.
    Jb(i64),
    /// `jbe` to an offset from the entry.
    Jbe(i64),
    Other,
}

/// No x86 instruction is longer.
const X86_MAX_INSN: usize = 15;

impl Isa for Amd64 {
    type Insn = iced_x86::Instruction;
    type Op = X86Op;
    // TLS load of g in two instructions (PIE), then the huge check in five.
    const WINDOW: usize = 8;

    fn decode(code: &[u8], pos: usize, entry: u64) -> Decode<Self::Insn> {
        let Some(rest) = code.get(pos..).filter(|rest| !rest.is_empty()) else {
            return Decode::End;
        };
        let ip = entry.wrapping_add(pos as u64);
        let mut decoder = Decoder::with_ip(64, rest, ip, DecoderOptions::NONE);
        let insn = decoder.decode();
        if !insn.is_invalid() {
            Decode::Insn(insn, insn.len())
        } else if decoder.last_error() == DecoderError::NoMoreBytes {
            Decode::End
        } else {
            Decode::Invalid(X86_MAX_INSN)
        }
    }

    fn op(insn: &Self::Insn, _offset: u64, entry: u64) -> X86Op {
        x86_op(insn, entry)
    }

    /// Only a compare with g.stackguard0 counts as some stack check. Stores do not (nosplit
    /// runtime code such as `entersyscallblock` sets it to `stackPreempt`), nor do loads, which
    /// are also what C code linked into the binary (race detector, cgo) does with R14+16.
    fn reads_guard(insn: &Self::Insn) -> bool {
        insn.mnemonic() == Mnemonic::Cmp
            && insn.op_count() == 2
            && insn.op0_kind() == OpKind::Register
            && insn.op1_kind() == OpKind::Memory
            && x86_is_guard(insn)
    }

    // iced's flow_control() needs its `instr_info` feature, which the workspace leaves off.
    fn ends_flow(insn: &Self::Insn) -> bool {
        matches!(
            insn.mnemonic(),
            Mnemonic::Ret
                | Mnemonic::Retf
                | Mnemonic::Jmp
                | Mnemonic::Jmpe
                | Mnemonic::Int3
                | Mnemonic::Int1
                | Mnemonic::Int
                | Mnemonic::Ud0
                | Mnemonic::Ud1
                | Mnemonic::Ud2
                | Mnemonic::Hlt
        )
    }

    fn format(insn: &Self::Insn) -> String {
        let mut formatter = IntelFormatter::new();
        let options = formatter.options_mut();
        options.set_hex_prefix("0x");
        options.set_hex_suffix("");
        options.set_uppercase_hex(false);
        options.set_space_after_operand_separator(true);
        let mut out = String::new();
        formatter.format(insn, &mut out);
        out
    }

    fn matches(insns: &[Decoded<Self>], entry: u64) -> Match {
        #[derive(Clone, Copy)]
        enum State {
            Start,
            NeedTlsLoad,
            /// g is in R14: the check proper starts here.
            G,
            NeedSub,
            NeedJb,
            NeedCmpR12(CheckShape),
            NeedJbe(CheckShape),
        }
        let mut state = State::Start;
        let mut g_from_tls = false;
        for d in insns {
            state = match (state, d.op) {
                (State::Start, X86Op::LoadGFromTls { via_r14: false })
                | (State::NeedTlsLoad, X86Op::LoadGFromTls { via_r14: true }) => {
                    g_from_tls = true;
                    State::G
                }
                (State::Start, X86Op::LoadTlsOffset) => State::NeedTlsLoad,
                (State::Start | State::G, X86Op::CmpGuard(Register::RSP)) => {
                    State::NeedJbe(CheckShape::Small)
                }
                (State::Start | State::G, X86Op::LeaR12Sp) => State::NeedCmpR12(CheckShape::Large),
                (State::Start | State::G, X86Op::MovR12Sp) => State::NeedSub,
                (State::NeedSub, X86Op::SubR12Imm) => State::NeedJb,
                (State::NeedJb, X86Op::Jb(target)) if forward(target, d.next) => {
                    State::NeedCmpR12(CheckShape::Huge)
                }
                (State::NeedCmpR12(shape), X86Op::CmpGuard(Register::R12)) => State::NeedJbe(shape),
                (State::NeedJbe(shape), X86Op::Jbe(target)) if forward(target, d.next) => {
                    return Match::Found(StackCheck {
                        shape,
                        g_from_tls,
                        attach_offset: d.next,
                        morestack_block: entry.wrapping_add_signed(target),
                    });
                }
                (State::Start, _) => return Match::No,
                _ => return Match::Deviates,
            };
        }
        if matches!(state, State::Start) {
            Match::No
        } else {
            Match::Partial
        }
    }
}

fn x86_is_reg(insn: &iced_x86::Instruction, operand: u32, reg: Register) -> bool {
    insn.op_kind(operand) == OpKind::Register && insn.op_register(operand) == reg
}

/// The memory operand is `[r14+0x10]` with no segment override: g.stackguard0.
fn x86_is_guard(insn: &iced_x86::Instruction) -> bool {
    insn.memory_base() == Register::R14
        && insn.memory_index() == Register::None
        && insn.memory_displacement64() == STACKGUARD0
        && insn.segment_prefix() == Register::None
}

fn x86_op(insn: &iced_x86::Instruction, entry: u64) -> X86Op {
    if insn.op_count() == 1 && insn.op0_kind() == OpKind::NearBranch64 {
        // Branches reach ±2 GiB, so the wrapped difference read as signed is exact.
        let target = insn.near_branch_target().wrapping_sub(entry) as i64;
        return match insn.mnemonic() {
            Mnemonic::Jb => X86Op::Jb(target),
            Mnemonic::Jbe => X86Op::Jbe(target),
            _ => X86Op::Other,
        };
    }
    if insn.op_count() != 2 {
        return X86Op::Other;
    }
    let mem = insn.op1_kind() == OpKind::Memory;
    let imm = matches!(
        insn.op1_kind(),
        OpKind::Immediate8to64 | OpKind::Immediate32to64 | OpKind::Immediate64
    );
    let no_index = insn.memory_index() == Register::None;
    let segment = insn.segment_prefix();
    match insn.mnemonic() {
        Mnemonic::Cmp if mem && insn.op0_kind() == OpKind::Register && x86_is_guard(insn) => {
            match insn.op0_register() {
                reg @ (Register::RSP | Register::R12) => X86Op::CmpGuard(reg),
                _ => X86Op::Other,
            }
        }
        Mnemonic::Mov if x86_is_reg(insn, 0, Register::R14) => {
            match (mem, segment, insn.memory_base()) {
                (true, Register::FS, Register::None) if no_index => {
                    X86Op::LoadGFromTls { via_r14: false }
                }
                (true, Register::FS, Register::R14)
                    if no_index && insn.memory_displacement64() == 0 =>
                {
                    X86Op::LoadGFromTls { via_r14: true }
                }
                (true, Register::None, Register::RIP) => X86Op::LoadTlsOffset,
                (false, ..) if imm => X86Op::LoadTlsOffset,
                _ => X86Op::Other,
            }
        }
        Mnemonic::Mov
            if x86_is_reg(insn, 0, Register::R12) && x86_is_reg(insn, 1, Register::RSP) =>
        {
            X86Op::MovR12Sp
        }
        Mnemonic::Lea
            if x86_is_reg(insn, 0, Register::R12)
                && insn.memory_base() == Register::RSP
                && no_index =>
        {
            X86Op::LeaR12Sp
        }
        Mnemonic::Sub if x86_is_reg(insn, 0, Register::R12) && imm => X86Op::SubR12Imm,
        _ => X86Op::Other,
    }
}

// ---------------------------------------------------------------------------------------------
// arm64: g is in R28; the check uses R16 (REGRT1), R17 (REGRT2) and R27 (REGTMP, where the
// assembler builds constants that do not fit an immediate).
// ---------------------------------------------------------------------------------------------

struct Arm64;

// Register 31 is SP or XZR depending on the operand; yaxpeax-arm tells them apart as
// `Operand::RegisterOrSP` (SP) and `Operand::Register` (XZR).
const X16: u16 = 16;
const X17: u16 = 17;
const X27: u16 = 27;
const X28: u16 = 28;
const X31: u16 = 31;
/// Condition codes of `B.cond`: LO (carry clear, the subtraction borrowed) and LS.
const COND_LO: u8 = 0b0011;
const COND_LS: u8 = 0b1001;
/// MOVZ/MOVN/ORR plus up to three MOVK build any 64-bit constant.
const MAX_CONST_INSNS: usize = 4;
/// Every A64 instruction is one little-endian 32-bit word.
const A64_INSN: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum A64Op {
    /// `ldr x16, [x28, #16]`.
    LoadGuard,
    /// `cmp sp, x16`.
    CmpSp,
    /// `sub x17, sp, #imm` or `subs x17, sp, #imm` (the immediate optionally `lsl #12`).
    SubSpImm {
        set_flags: bool,
    },
    /// The first instruction of a constant in x27: `movz`, `movn`, or `orr x27, xzr, #bitmask`.
    ConstStart,
    /// `movk x27, …`.
    ConstMore,
    /// `subs x17, sp, x27`.
    SubsSpTmp,
    /// `cmp x17, x16`.
    CmpX17,
    /// `b.lo` to an offset from the entry.
    BLo(i64),
    /// `b.ls` to an offset from the entry.
    BLs(i64),
    Other,
}

impl Isa for Arm64 {
    type Insn = A64Instruction;
    type Op = A64Op;
    // The guard load, a constant of up to four instructions, then four more.
    const WINDOW: usize = 10;

    fn decode(code: &[u8], pos: usize, _entry: u64) -> Decode<Self::Insn> {
        let Some(word) = code.get(pos..pos.saturating_add(A64_INSN)) else {
            return Decode::End;
        };
        let mut reader = U8Reader::new(word);
        match InstDecoder::default().decode(&mut reader) {
            Ok(insn) => Decode::Insn(insn, A64_INSN),
            Err(_) => Decode::Invalid(A64_INSN),
        }
    }

    fn op(insn: &Self::Insn, offset: u64, _entry: u64) -> A64Op {
        a64_op(insn, offset)
    }

    /// A load from g.stackguard0 into any register: arm64 has no compare with memory.
    fn reads_guard(insn: &Self::Insn) -> bool {
        matches!(insn.opcode, Opcode::LDR | Opcode::LDUR)
            && insn.operands[1] == Operand::RegPreIndex(X28, STACKGUARD0 as i32, false)
    }

    fn ends_flow(insn: &Self::Insn) -> bool {
        matches!(
            insn.opcode,
            Opcode::B
                | Opcode::BR
                | Opcode::RET
                | Opcode::ERET
                | Opcode::UDF
                | Opcode::BRK
                | Opcode::HLT
        )
    }

    fn format(insn: &Self::Insn) -> String {
        insn.to_string()
    }

    fn matches(insns: &[Decoded<Self>], entry: u64) -> Match {
        #[derive(Clone, Copy)]
        enum State {
            Start,
            Loaded,
            /// Building the frame constant in x27; how many instructions so far.
            Const(usize),
            NeedBLo,
            NeedCmpX17(CheckShape),
            NeedBLs(CheckShape),
        }
        let mut state = State::Start;
        for d in insns {
            state = match (state, d.op) {
                (State::Start, A64Op::LoadGuard) => State::Loaded,
                (State::Loaded, A64Op::CmpSp) => State::NeedBLs(CheckShape::Small),
                (State::Loaded, A64Op::SubSpImm { set_flags: false }) => {
                    State::NeedCmpX17(CheckShape::Large)
                }
                (State::Loaded, A64Op::SubSpImm { set_flags: true }) => State::NeedBLo,
                (State::Loaded, A64Op::ConstStart) => State::Const(1),
                (State::Const(n), A64Op::ConstMore) if n < MAX_CONST_INSNS => State::Const(n + 1),
                (State::Const(_), A64Op::SubsSpTmp) => State::NeedBLo,
                (State::NeedBLo, A64Op::BLo(target)) if forward(target, d.next) => {
                    State::NeedCmpX17(CheckShape::Huge)
                }
                (State::NeedCmpX17(shape), A64Op::CmpX17) => State::NeedBLs(shape),
                (State::NeedBLs(shape), A64Op::BLs(target)) if forward(target, d.next) => {
                    return Match::Found(StackCheck {
                        shape,
                        g_from_tls: false,
                        attach_offset: d.next,
                        morestack_block: entry.wrapping_add_signed(target),
                    });
                }
                (State::Start, _) => return Match::No,
                _ => return Match::Deviates,
            };
        }
        if matches!(state, State::Start) {
            Match::No
        } else {
            Match::Partial
        }
    }
}

/// A register with no shift or extension (`x16`, `x16, lsl #0`, `x16, uxtx`).
fn a64_plain_reg(operand: &Operand, reg: u16) -> bool {
    matches!(operand, Operand::RegShift(ShiftStyle::LSL | ShiftStyle::UXTX, 0, SizeCode::X, r) if *r == reg)
}

/// An X register as a destination, whichever way the decoder reports register 0–30.
fn a64_dest(operand: &Operand, reg: u16) -> bool {
    matches!(operand, Operand::Register(SizeCode::X, r) | Operand::RegisterOrSP(SizeCode::X, r) if *r == reg)
}

/// `B.cond` reaches ±1 MiB, and `offset` is bounded by the code's length.
fn a64_target(offset: u64, delta: i64) -> i64 {
    i64::try_from(offset).map_or(i64::MAX, |offset| offset.saturating_add(delta))
}

fn a64_op(insn: &A64Instruction, offset: u64) -> A64Op {
    let [o0, o1, o2, o3] = &insn.operands;
    let sp = Operand::RegisterOrSP(SizeCode::X, X31);
    let xzr = Operand::Register(SizeCode::X, X31);
    let three = matches!(o3, Operand::Nothing);
    let imm12 = matches!(o2, Operand::Immediate(_) | Operand::ImmShift(_, 0 | 12));
    match insn.opcode {
        Opcode::LDR
            if *o0 == Operand::Register(SizeCode::X, X16)
                && *o1 == Operand::RegPreIndex(X28, STACKGUARD0 as i32, false)
                && *o2 == Operand::Nothing =>
        {
            A64Op::LoadGuard
        }
        Opcode::SUBS if *o0 == xzr && *o1 == sp && a64_plain_reg(o2, X16) && three => A64Op::CmpSp,
        Opcode::SUBS if *o0 == xzr && a64_dest(o1, X17) && a64_plain_reg(o2, X16) && three => {
            A64Op::CmpX17
        }
        Opcode::SUB | Opcode::SUBS if a64_dest(o0, X17) && *o1 == sp && imm12 && three => {
            A64Op::SubSpImm {
                set_flags: insn.opcode == Opcode::SUBS,
            }
        }
        Opcode::SUBS if a64_dest(o0, X17) && *o1 == sp && a64_plain_reg(o2, X27) && three => {
            A64Op::SubsSpTmp
        }
        Opcode::MOVZ | Opcode::MOVN if a64_dest(o0, X27) && matches!(o1, Operand::ImmShift(..)) => {
            A64Op::ConstStart
        }
        Opcode::ORR if a64_dest(o0, X27) && *o1 == xzr && matches!(o2, Operand::Imm64(_)) => {
            A64Op::ConstStart
        }
        Opcode::MOVK if a64_dest(o0, X27) && matches!(o1, Operand::ImmShift(..)) => {
            A64Op::ConstMore
        }
        Opcode::Bcc(cond) => match (*o0, cond) {
            (Operand::PCOffset(delta), COND_LO) => A64Op::BLo(a64_target(offset, delta)),
            (Operand::PCOffset(delta), COND_LS) => A64Op::BLs(a64_target(offset, delta)),
            _ => A64Op::Other,
        },
        _ => A64Op::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Function starts copied from binaries of the `mapops` fixture (plus a test file of
    // functions with 64 B to 5 MB local arrays, for every frame shape), built with
    // CGO_ENABLED=0; the offsets and branch targets are those `go tool objdump` of the same
    // toolchain prints.

    // go1.27.3 amd64 runtime.mapassign_fast64, entry 0x408d00:
    // CMPQ SP, 0x10(R14); JBE 0x4090b0; PUSHQ BP; MOVQ SP, BP
    const AMD64_SMALL_127: &[u8] = &[
        0x49, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0xa6, 0x03, 0x00, 0x00, 0x55, 0x48, 0x89, 0xe5, 0x48,
        0x83,
    ];
    // go1.19.8 amd64 runtime.mapassign_fast64, entry 0x410980: the same check, then
    // SUBQ $0x38, SP (1.19 saves BP inside the frame instead of pushing it).
    const AMD64_SMALL_119: &[u8] = &[
        0x49, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0xf1, 0x02, 0x00, 0x00, 0x48, 0x83, 0xec, 0x38, 0x48,
        0x89,
    ];
    // go1.27.3 amd64 runtime.mapassign (Swiss), entry 0x407dc0:
    // LEAQ -0x30(SP), R12; CMPQ R12, 0x10(R14); JBE 0x408346; PUSHQ BP
    const AMD64_LARGE_127: &[u8] = &[
        0x4c, 0x8d, 0x64, 0x24, 0xd0, 0x4d, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0x77, 0x05, 0x00, 0x00,
        0x55, 0x48, 0x89, 0xe5, 0x48,
    ];
    // go1.27.3 amd64 main.f5000 (5000-byte local array), entry 0x524900:
    // MOVQ SP, R12; SUBQ $0x1328, R12; JB 0x52494e; CMPQ R12, 0x10(R14); JBE 0x52494e; PUSHQ BP
    const AMD64_HUGE_127: &[u8] = &[
        0x49, 0x89, 0xe4, 0x49, 0x81, 0xec, 0x28, 0x13, 0x00, 0x00, 0x72, 0x42, 0x4d, 0x3b, 0x66,
        0x10, 0x76, 0x3c, 0x55, 0x48, 0x89, 0xe5, 0x48, 0x81,
    ];
    // go1.27.3 amd64 runtime.call16.abi0 (assembly), entry 0x482380:
    // MOVQ FS:0xfffffff8, R14; CMPQ SP, 0x10(R14); JBE 0x4823ed; PUSHQ BP
    const AMD64_TLS_SMALL_127: &[u8] = &[
        0x64, 0x4c, 0x8b, 0x34, 0x25, 0xf8, 0xff, 0xff, 0xff, 0x49, 0x3b, 0x66, 0x10, 0x76, 0x5e,
        0x55, 0x48, 0x89, 0xe5, 0x48,
    ];
    // go1.27.3 amd64 -buildmode=pie runtime.call16.abi0, entry 0x4826c0:
    // MOVQ $-0x8, R14; MOVQ FS:0(R14), R14; CMPQ SP, 0x10(R14); JBE 0x48272f; PUSHQ BP
    const AMD64_PIE_TLS_SMALL_127: &[u8] = &[
        0x49, 0xc7, 0xc6, 0xf8, 0xff, 0xff, 0xff, 0x64, 0x4d, 0x8b, 0x36, 0x49, 0x3b, 0x66, 0x10,
        0x76, 0x5e, 0x55, 0x48, 0x89, 0xe5, 0x48, 0x83, 0xec,
    ];
    // go1.27.3 amd64 runtime.call4096.abi0, entry 0x482820: MOVQ FS:0xfffffff8, R14;
    // MOVQ SP, R12; SUBQ $0xf88, R12; JB 0x4828be; CMPQ R12, 0x10(R14); JBE 0x4828be; PUSHQ BP
    const AMD64_TLS_HUGE_127: &[u8] = &[
        0x64, 0x4c, 0x8b, 0x34, 0x25, 0xf8, 0xff, 0xff, 0xff, 0x49, 0x89, 0xe4, 0x49, 0x81, 0xec,
        0x88, 0x0f, 0x00, 0x00, 0x0f, 0x82, 0x85, 0x00, 0x00, 0x00, 0x4d, 0x3b, 0x66, 0x10, 0x76,
        0x7f, 0x55,
    ];
    // go1.19.8 amd64 runtime.call65536.abi0, entry 0x45ed20: as above with 32-bit JB and JBE
    // (both to 0x45ede2), then SUBQ.
    const AMD64_TLS_HUGE_119: &[u8] = &[
        0x64, 0x4c, 0x8b, 0x34, 0x25, 0xf8, 0xff, 0xff, 0xff, 0x49, 0x89, 0xe4, 0x49, 0x81, 0xec,
        0x88, 0xff, 0x00, 0x00, 0x0f, 0x82, 0xa9, 0x00, 0x00, 0x00, 0x4d, 0x3b, 0x66, 0x10, 0x0f,
        0x86, 0x9f, 0x00, 0x00, 0x00, 0x48,
    ];
    // go1.27.3 amd64 reflect.maplen (nosplit leaf), entry 0x47ca20:
    // TESTQ AX, AX; JE; MOVQ 0(AX), AX; RET; XORL AX, AX; RET
    const AMD64_NOSPLIT_127: &[u8] = &[
        0x48, 0x85, 0xc0, 0x74, 0x04, 0x48, 0x8b, 0x00, 0xc3, 0x31, 0xc0, 0xc3,
    ];
    // go1.27.3 amd64 runtime.entersyscallblock (nosplit), entry 0x47de40: it stores
    // stackPreempt into g.stackguard0 (MOVQ $-0x522, 0x10(R14)) at +0x22.
    const AMD64_NOSPLIT_STORES_GUARD_127: &[u8] = &[
        0x55, 0x48, 0x89, 0xe5, 0x48, 0x81, 0xec, 0xa0, 0x00, 0x00, 0x00, 0x4c, 0x89, 0x74, 0x24,
        0x40, 0x49, 0x8b, 0x46, 0x30, 0xff, 0x80, 0x08, 0x01, 0x00, 0x00, 0x41, 0xc6, 0x86, 0xb7,
        0x00, 0x00, 0x00, 0x01, 0x49, 0xc7, 0x46, 0x10, 0xde, 0xfa, 0xff, 0xff, 0x49, 0x8b, 0x46,
        0x30, 0x48, 0x8b,
    ];
    // go1.27.3 amd64 built with -gcflags=all=-d=maymorestack=runtime.mayMoreStackPreempt,
    // runtime.mapassign_fast64, entry 0x409580: three spills, CALL, three reloads, then
    // CMPQ SP, 0x10(R14) at +0x23.
    const AMD64_MAYMORESTACK_127: &[u8] = &[
        0x48, 0x89, 0x44, 0x24, 0x08, 0x48, 0x89, 0x5c, 0x24, 0x10, 0x48, 0x89, 0x4c, 0x24, 0x18,
        0xe8, 0xac, 0x8f, 0x07, 0x00, 0x48, 0x8b, 0x44, 0x24, 0x08, 0x48, 0x8b, 0x5c, 0x24, 0x10,
        0x48, 0x8b, 0x4c, 0x24, 0x18, 0x49, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0xa3, 0x03, 0x00, 0x00,
        0x55, 0x48, 0x89,
    ];

    // go1.27.3 arm64 runtime.mapassign_fast64, entry 0x17f90:
    // MOVD 16(R28), R16; CMP R16, RSP; BLS 248(PC); MOVD.W R30, -112(RSP)
    const ARM64_SMALL_127: &[u8] = &[
        0x90, 0x0b, 0x40, 0xf9, 0xff, 0x63, 0x30, 0xeb, 0x09, 0x1f, 0x00, 0x54, 0xfe, 0x0f, 0x19,
        0xf8,
    ];
    // go1.19.8 arm64 runtime.mapassign_fast64, entry 0x1fa60: the same, BLS 193(PC).
    const ARM64_SMALL_119: &[u8] = &[
        0x90, 0x0b, 0x40, 0xf9, 0xff, 0x63, 0x30, 0xeb, 0x29, 0x18, 0x00, 0x54, 0xfe, 0x0f, 0x1c,
        0xf8,
    ];
    // go1.27.3 arm64 runtime.mapassign (Swiss), entry 0x17040:
    // MOVD 16(R28), R16; SUB $80, RSP, R17; CMP R16, R17; BLS 309(PC); MOVD.W R30, -208(RSP)
    const ARM64_LARGE_127: &[u8] = &[
        0x90, 0x0b, 0x40, 0xf9, 0xf1, 0x43, 0x01, 0xd1, 0x3f, 0x02, 0x10, 0xeb, 0xa9, 0x26, 0x00,
        0x54, 0xfe, 0x0f, 0x13, 0xf8,
    ];
    // go1.27.3 arm64 main.f4100, entry 0x117b60: MOVD 16(R28), R16; SUBS $4016, RSP, R17;
    // BCC 27(PC); CMP R16, R17; BLS 25(PC); MOVD $4144, R27
    const ARM64_HUGE_IMM_127: &[u8] = &[
        0x90, 0x0b, 0x40, 0xf9, 0xf1, 0xc3, 0x3e, 0xf1, 0x63, 0x03, 0x00, 0x54, 0x3f, 0x02, 0x10,
        0xeb, 0x29, 0x03, 0x00, 0x54, 0x1b, 0x06, 0x82, 0xd2,
    ];
    // go1.19.8 arm64 main.f70001, entry 0xaf580: MOVD 16(R28), R16; MOVD $4384, R27 (MOVZ);
    // MOVK $(1<<16), R27; SUBS R27, RSP, R17; BCC 27(PC); CMP R16, R17; BLS 25(PC); SUB …
    const ARM64_HUGE_MOVK_119: &[u8] = &[
        0x90, 0x0b, 0x40, 0xf9, 0x1b, 0x24, 0x82, 0xd2, 0x3b, 0x00, 0xa0, 0xf2, 0xf1, 0x63, 0x3b,
        0xeb, 0x63, 0x03, 0x00, 0x54, 0x3f, 0x02, 0x10, 0xeb, 0x29, 0x03, 0x00, 0x54, 0xf4, 0x83,
        0x06, 0xd1,
    ];
    // go1.19.8 arm64 main.g131144 (131144-byte array), entry 0x66150: the constant 0x1fff0 is
    // a bitmask immediate, so MOVD $131056, R27 is ORR R27, ZR, #0x1fff0; then as above.
    const ARM64_HUGE_ORR_119: &[u8] = &[
        0x90, 0x0b, 0x40, 0xf9, 0xfb, 0x33, 0x7c, 0xb2, 0xf1, 0x63, 0x3b, 0xeb, 0x63, 0x03, 0x00,
        0x54, 0x3f, 0x02, 0x10, 0xeb, 0x29, 0x03, 0x00, 0x54, 0xf4, 0xc3, 0x01, 0xd1,
    ];
    // go1.27.3 arm64 main.two2 (two arrays, frame 0x20080), entry 0x880e0:
    // MOVD 16(R28), R16; SUBS $(32<<12), RSP, R17; BCC 51(PC); CMP R16, R17; BLS 49(PC)
    const ARM64_HUGE_LSL12_127: &[u8] = &[
        0x90, 0x0b, 0x40, 0xf9, 0xf1, 0x83, 0x40, 0xf1, 0x63, 0x06, 0x00, 0x54, 0x3f, 0x02, 0x10,
        0xeb, 0x29, 0x06, 0x00, 0x54, 0xf4, 0x03, 0x02, 0xd1,
    ];
    // go1.27.3 arm64 reflect.maplen (nosplit leaf), entry 0x875b0: CBZ R0, 3(PC);
    // MOVD (R0), R0; RET; MOVD ZR, R0
    const ARM64_NOSPLIT_127: &[u8] = &[
        0x60, 0x00, 0x00, 0xb4, 0x00, 0x00, 0x40, 0xf9, 0xc0, 0x03, 0x5f, 0xd6, 0xe0, 0x03, 0x1f,
        0xaa,
    ];
    // go1.19.8 arm64 runtime.abort.abi0, entry 0x6f280: MOVD $0, R0; MOVD (R0), R0; then an
    // undefined word (objdump prints `?`) and padding.
    const ARM64_ABORT_119: &[u8] = &[
        0x00, 0x00, 0x80, 0xd2, 0x00, 0x00, 0x40, 0xf9, 0x00, 0x17, 0xa7, 0xbe, 0x00, 0x00, 0x00,
        0x00,
    ];
    // go1.27.3 arm64 -d=maymorestack runtime.mapassign_fast64, entry 0x18a70: spills, a frame
    // for the hook, BL, reloads, then MOVD 16(R28), R16 at +0x30.
    const ARM64_MAYMORESTACK_127: &[u8] = &[
        0xe0, 0x87, 0x00, 0xa9, 0xe2, 0x0f, 0x00, 0xf9, 0xfe, 0x0f, 0x1e, 0xf8, 0xfd, 0x83, 0x1f,
        0xf8, 0xfd, 0x23, 0x00, 0xd1, 0xfa, 0x07, 0x00, 0xf9, 0xfa, 0xe4, 0x01, 0x94, 0xfa, 0x07,
        0x40, 0xf9, 0xfd, 0x83, 0x5f, 0xf8, 0xfe, 0x07, 0x42, 0xf8, 0xe0, 0x87, 0x40, 0xa9, 0xe2,
        0x0f, 0x40, 0xf9, 0x90, 0x0b, 0x40, 0xf9, 0xff, 0x63, 0x30, 0xeb, 0x09, 0x1f, 0x00, 0x54,
        0xfe, 0x0f, 0x19, 0xf8,
    ];

    /// (arch, code, entry, attach offset, shape, g from TLS, morestack block)
    type Case = (Arch, &'static [u8], u64, u64, CheckShape, bool, u64);

    const RECOGNISED: &[Case] = &[
        (
            Arch::X86_64,
            AMD64_SMALL_127,
            0x408d00,
            10,
            CheckShape::Small,
            false,
            0x4090b0,
        ),
        (
            Arch::X86_64,
            AMD64_SMALL_119,
            0x410980,
            10,
            CheckShape::Small,
            false,
            0x410c7b,
        ),
        (
            Arch::X86_64,
            AMD64_LARGE_127,
            0x407dc0,
            15,
            CheckShape::Large,
            false,
            0x408346,
        ),
        (
            Arch::X86_64,
            AMD64_HUGE_127,
            0x524900,
            18,
            CheckShape::Huge,
            false,
            0x52494e,
        ),
        (
            Arch::X86_64,
            AMD64_TLS_SMALL_127,
            0x482380,
            15,
            CheckShape::Small,
            true,
            0x4823ed,
        ),
        (
            Arch::X86_64,
            AMD64_PIE_TLS_SMALL_127,
            0x4826c0,
            17,
            CheckShape::Small,
            true,
            0x48272f,
        ),
        (
            Arch::X86_64,
            AMD64_TLS_HUGE_127,
            0x482820,
            31,
            CheckShape::Huge,
            true,
            0x4828be,
        ),
        (
            Arch::X86_64,
            AMD64_TLS_HUGE_119,
            0x45ed20,
            35,
            CheckShape::Huge,
            true,
            0x45ede2,
        ),
        (
            Arch::Aarch64,
            ARM64_SMALL_127,
            0x17f90,
            12,
            CheckShape::Small,
            false,
            0x17f98 + 248 * 4,
        ),
        (
            Arch::Aarch64,
            ARM64_SMALL_119,
            0x1fa60,
            12,
            CheckShape::Small,
            false,
            0x1fa68 + 193 * 4,
        ),
        (
            Arch::Aarch64,
            ARM64_LARGE_127,
            0x17040,
            16,
            CheckShape::Large,
            false,
            0x1704c + 309 * 4,
        ),
        (
            Arch::Aarch64,
            ARM64_HUGE_IMM_127,
            0x117b60,
            20,
            CheckShape::Huge,
            false,
            0x117b70 + 25 * 4,
        ),
        (
            Arch::Aarch64,
            ARM64_HUGE_MOVK_119,
            0xaf580,
            28,
            CheckShape::Huge,
            false,
            0xaf598 + 25 * 4,
        ),
        (
            Arch::Aarch64,
            ARM64_HUGE_ORR_119,
            0x66150,
            24,
            CheckShape::Huge,
            false,
            0x66164 + 25 * 4,
        ),
        (
            Arch::Aarch64,
            ARM64_HUGE_LSL12_127,
            0x880e0,
            20,
            CheckShape::Huge,
            false,
            0x880f0 + 49 * 4,
        ),
    ];

    #[test]
    fn recognises_every_shape() {
        for &(arch, code, entry, offset, shape, g_from_tls, morestack_block) in RECOGNISED {
            let want = StackCheck {
                shape,
                g_from_tls,
                attach_offset: offset,
                morestack_block,
            };
            assert_eq!(
                stack_check(arch, code, entry),
                Ok(want),
                "{arch:?} {code:02x?}"
            );
            let skip = skip_writeback_store(arch, code, offset);
            assert!(skip == 0 || arch == Arch::Aarch64);
            assert_eq!(
                attach_point(arch, code, entry),
                AttachPoint {
                    offset: offset + skip,
                    fallback_reason: None
                }
            );
        }
    }

    #[test]
    fn arm64_probe_goes_past_the_frame_store_with_writeback() {
        // Small frames: `MOVD.W R30, -N(RSP)` right after the branch is stepped over.
        assert_eq!(
            attach_point(Arch::Aarch64, ARM64_SMALL_127, 0x17f90).offset,
            16
        );
        assert_eq!(
            attach_point(Arch::Aarch64, ARM64_SMALL_119, 0x1fa60).offset,
            16
        );
        // `STR X30, [SP, #-32]!` and `STP X29, X30, [SP, #-16]!` write SP back; a plain
        // `STUR X29, [SP, #-8]` and amd64's `PUSHQ BP` do not count.
        let str_pre = 0xf81e0ffeu32.to_le_bytes();
        let stp_pre = 0xa9bf7bfdu32.to_le_bytes();
        let stur = 0xf81f83fdu32.to_le_bytes();
        assert_eq!(skip_writeback_store(Arch::Aarch64, &str_pre, 0), 4);
        assert_eq!(skip_writeback_store(Arch::Aarch64, &stp_pre, 0), 4);
        assert_eq!(skip_writeback_store(Arch::Aarch64, &stur, 0), 0);
        assert_eq!(skip_writeback_store(Arch::X86_64, &[0x55], 0), 0);
    }

    #[test]
    fn entry_address_only_moves_the_morestack_block() {
        for &(arch, code, entry, offset, ..) in RECOGNISED {
            for other in [0, 1, entry ^ 0x5000, u64::MAX - 3] {
                let check = stack_check(arch, code, other).expect("recognised at any address");
                assert_eq!(check.attach_offset, offset);
            }
        }
    }

    #[test]
    fn code_may_stop_right_after_the_branch() {
        for &(arch, code, entry, offset, ..) in RECOGNISED {
            let exact = &code[..offset as usize];
            assert_eq!(attach_point(arch, exact, entry).offset, offset);
        }
    }

    fn reason(arch: Arch, code: &[u8]) -> String {
        let point = attach_point(arch, code, 0x401000);
        assert_eq!(point.offset, 0);
        point.fallback_reason.expect("a reason with offset 0")
    }

    #[test]
    fn nosplit_functions_fall_back_with_a_reason() {
        assert_eq!(
            stack_check(Arch::X86_64, AMD64_NOSPLIT_127, 0x47ca20),
            Err(Fallback::NoStackCheck {
                scanned: 4,
                listing:
                    "+0x0 test rax, rax; +0x3 je short 0x000000000047ca29; +0x5 mov rax, [rax]; …"
                        .into()
            })
        );
        assert_eq!(
            reason(Arch::Aarch64, ARM64_NOSPLIT_127),
            "no stack check in the first 3 instructions (nosplit function): \
             +0x0 cbz x0, $+0xc; +0x4 ldr x0, [x0]; +0x8 ret"
        );
        // A store to g.stackguard0 is not a check.
        assert!(
            reason(Arch::X86_64, AMD64_NOSPLIT_STORES_GUARD_127)
                .starts_with("no stack check in the first 9 instructions (nosplit function): ")
        );
        assert!(
            reason(Arch::X86_64, &[0xc3])
                .starts_with("no stack check in the first 1 instruction (")
        );
    }

    #[test]
    fn a_check_after_other_code_is_not_skipped() {
        for (arch, code, at) in [
            (Arch::X86_64, AMD64_MAYMORESTACK_127, 0x23),
            (Arch::Aarch64, ARM64_MAYMORESTACK_127, 0x30),
        ] {
            match stack_check(arch, code, 0x1000) {
                Err(Fallback::CheckNotAtEntry { at: got, .. }) => assert_eq!(got, at),
                other => panic!("{arch:?}: {other:?}"),
            }
            assert!(
                reason(arch, code)
                    .starts_with("unrecognised prologue: g.stackguard0 is first read at")
            );
        }
    }

    /// Copies `code` with the bytes at `at` replaced.
    fn patched(code: &[u8], at: usize, bytes: &[u8]) -> Vec<u8> {
        let mut out = code.to_vec();
        out[at..at + bytes.len()].copy_from_slice(bytes);
        out
    }

    #[test]
    fn a_check_that_goes_on_differently_is_unrecognised() {
        let cases = [
            // JB instead of JBE.
            (Arch::X86_64, patched(AMD64_SMALL_127, 4, &[0x0f, 0x82])),
            // JBE backwards.
            (Arch::X86_64, patched(AMD64_SMALL_127, 4, &[0x76, 0xf0])),
            // CMPQ AX, 0x10(R14): not SP.
            (
                Arch::X86_64,
                patched(AMD64_SMALL_127, 0, &[0x49, 0x3b, 0x46, 0x10]),
            ),
            // NOP between LEAQ and CMPQ.
            (
                Arch::X86_64,
                [&AMD64_LARGE_127[..5], &[0x90], &AMD64_LARGE_127[5..]].concat(),
            ),
            // CMP XZR, X16: register 31 as the zero register, not SP.
            (
                Arch::Aarch64,
                patched(ARM64_SMALL_127, 4, &[0xff, 0x03, 0x10, 0xeb]),
            ),
            // B.LO instead of B.LS.
            (
                Arch::Aarch64,
                patched(ARM64_SMALL_127, 8, &[0x03, 0x1f, 0x00, 0x54]),
            ),
            // B.LS to itself.
            (
                Arch::Aarch64,
                patched(ARM64_SMALL_127, 8, &[0x09, 0x00, 0x00, 0x54]),
            ),
            // SUB into X18 instead of X17.
            (
                Arch::Aarch64,
                patched(ARM64_LARGE_127, 4, &[0xf2, 0x43, 0x01, 0xd1]),
            ),
            // CMP R16, R17 missing after the carry check.
            (
                Arch::Aarch64,
                patched(ARM64_HUGE_IMM_127, 12, &[0x1f, 0x20, 0x03, 0xd5]),
            ),
        ];
        for (arch, code) in cases {
            let why = reason(arch, &code);
            assert!(
                why.starts_with("unrecognised prologue: +0x0 "),
                "{arch:?} {code:02x?}: {why}"
            );
        }
    }

    #[test]
    fn truncated_code_falls_back() {
        assert_eq!(
            reason(Arch::X86_64, &AMD64_SMALL_127[..6]),
            "code ends at +0x6, before the stack check could be read whole: \
             +0x0 cmp rsp, [r14+0x10]"
        );
        assert!(reason(Arch::X86_64, &AMD64_SMALL_127[..2]).contains("<no whole instruction>"));
        assert!(reason(Arch::X86_64, &AMD64_TLS_HUGE_119[..20]).starts_with("code ends at +0x14"));
        assert!(reason(Arch::Aarch64, &ARM64_SMALL_127[..8]).starts_with("code ends at +0x8"));
        assert!(reason(Arch::Aarch64, &ARM64_SMALL_127[..11]).starts_with("code ends at +0xb"));
        assert!(reason(Arch::Aarch64, &ARM64_SMALL_127[..3]).contains("<no whole instruction>"));
        // A trailing partial word does not matter once the check is complete.
        assert_eq!(
            attach_point(Arch::Aarch64, &ARM64_SMALL_127[..14], 0).offset,
            12
        );
    }

    #[test]
    fn garbage_falls_back() {
        assert_eq!(
            reason(Arch::X86_64, &[]),
            "no code to examine (empty function)"
        );
        assert_eq!(
            reason(Arch::Aarch64, &[]),
            "no code to examine (empty function)"
        );
        // 0x06 (PUSH ES) does not exist in 64-bit mode.
        assert_eq!(
            reason(Arch::X86_64, &[0x06, 0x01]),
            "undecodable bytes 0601 at +0x0"
        );
        assert_eq!(
            reason(Arch::Aarch64, &[0xff; 4]),
            "undecodable bytes ffffffff at +0x0"
        );
        assert_eq!(
            reason(Arch::Aarch64, ARM64_ABORT_119),
            "undecodable bytes 0017a7be at +0x8 after: +0x0 mov x0, #0x0; +0x4 ldr x0, [x0]"
        );
        // A guard load followed by garbage.
        let guard_then_garbage = patched(ARM64_SMALL_127, 4, &[0xff; 4]);
        assert_eq!(
            reason(Arch::Aarch64, &guard_then_garbage),
            "unrecognised prologue: +0x0 ldr x16, [x28, #0x10]; +0x4 <undecodable ffffffff>"
        );
    }

    /// Every prefix and every single-bit flip of every real sequence: no panic, an offset
    /// inside the code, and a reason exactly when the offset is 0.
    #[test]
    fn never_panics_on_prefixes_and_bit_flips() {
        let mut all: Vec<(Arch, &[u8])> = RECOGNISED.iter().map(|c| (c.0, c.1)).collect();
        all.extend([
            (Arch::X86_64, AMD64_NOSPLIT_127),
            (Arch::X86_64, AMD64_NOSPLIT_STORES_GUARD_127),
            (Arch::X86_64, AMD64_MAYMORESTACK_127),
            (Arch::Aarch64, ARM64_NOSPLIT_127),
            (Arch::Aarch64, ARM64_ABORT_119),
            (Arch::Aarch64, ARM64_MAYMORESTACK_127),
        ]);
        let check = |arch: Arch, code: &[u8]| {
            for entry in [0, 0x401000, u64::MAX] {
                let point = attach_point(arch, code, entry);
                assert!(point.offset as usize <= code.len(), "{arch:?} {code:02x?}");
                assert_eq!(point.offset == 0, point.fallback_reason.is_some());
            }
        };
        for (arch, code) in all {
            for len in 0..=code.len() {
                check(arch, &code[..len]);
            }
            for bit in 0..code.len() * 8 {
                let mut flipped = code.to_vec();
                flipped[bit / 8] ^= 1 << (bit % 8);
                check(arch, &flipped);
            }
        }
    }

    #[test]
    fn never_panics_on_pseudo_random_bytes() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut code = [0u8; 48];
        for _ in 0..20_000 {
            let len = (next() % 49) as usize;
            for byte in code.iter_mut().take(len) {
                *byte = next() as u8;
            }
            for arch in [Arch::X86_64, Arch::Aarch64] {
                let point = attach_point(arch, &code[..len], next());
                assert!(point.offset as usize <= len);
            }
        }
    }
}
