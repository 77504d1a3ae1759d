//! amd64: g is in R14 (ABIInternal) and the check's scratch register is R12.

use iced_x86::{
    Decoder, DecoderError, DecoderOptions, Formatter as _, IntelFormatter, Mnemonic, OpKind,
    Register,
};

use super::matcher::{Decode, Decoded, Isa, Match, forward};
use super::{CheckShape, STACKGUARD0};

pub(super) struct Amd64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum X86Op {
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
                    return Match::found(shape, g_from_tls, d.next, entry, target);
                }
                (State::Start, _) => return Match::No,
                _ => return Match::Deviates,
            };
        }
        Match::ran_out(!matches!(state, State::Start))
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
