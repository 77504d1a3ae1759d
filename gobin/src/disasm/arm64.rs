//! arm64: g is in R28; the check uses R16 (REGRT1), R17 (REGRT2) and R27 (REGTMP, where the
//! assembler builds constants that do not fit an immediate).

use yaxpeax_arch::{Decoder as _, U8Reader};
use yaxpeax_arm::armv8::a64::{
    InstDecoder, Instruction as A64Instruction, Opcode, Operand, ShiftStyle, SizeCode,
};

use super::matcher::{Decode, Decoded, Isa, Match, forward};
use super::{CheckShape, STACKGUARD0};
use crate::Arch;

pub(super) struct Arm64;

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
pub(super) enum A64Op {
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
                    return Match::found(shape, false, d.next, entry, target);
                }
                (State::Start, _) => return Match::No,
                _ => return Match::Deviates,
            };
        }
        Match::ran_out(!matches!(state, State::Start))
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

/// 4 when the instruction at `offset` is arm64's frame-setup store with SP writeback
/// (`MOVD.W R30, -N(RSP)` = `STR X30, [SP, #-N]!`, or an `STP` of the same form), else 0.
///
/// The kernel single-steps such a store out of line, and an out-of-line step that is redone
/// applies the writeback twice: the VM tests saw a Go program on an arm64 6.1 kernel die with
/// its frame shifted (an argument reloaded from the saved-LR slot) once in a few hundred runs.
/// The next instruction (`MOVD R29, -8(RSP)`) is a plain store, harmless to redo, and the probe
/// there still sees the arguments, the link register and the caller's frame pointer unchanged.
pub(super) fn skip_writeback_store(arch: Arch, code: &[u8], offset: u64) -> u64 {
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
