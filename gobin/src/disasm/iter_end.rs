//! Where an iteration runs to its end: the "iteration finished" exits of the step function
//! (`runtime.mapiternext`, Swiss `maps.(*Iter).Next`), for the low-overhead mode, which probes
//! those instead of every step. Never a return probe: uretprobes crash Go programs.
//!
//! Every finished path of the step function ends `it.key = nil; it.elem = nil; return`, and
//! no other path stores nil into the key (a step that found an entry stores its address). The
//! compiler clears the two adjacent pointers with one 16-byte store of the zero register
//! (amd64 `MOVUPS X15, key(REG)`, arm64 `STP ZR, ZR, [Xn, #key]`), so those stores are looked
//! for, with the key field's offset as displacement.
//!
//! The probe goes where the kernel emulates the probed instruction rather than single-stepping
//! it out of line, which costs a machine that traps slowly many times more (20–35× an emulated
//! hit, measured on KVM guests). The store is guarded by the write-barrier test of the same
//! statement, `CMPL runtime.writeBarrier(SB), $0; JE/JNE` on amd64 and `MOVWU
//! runtime.writeBarrier, Rn; CBZW/CBNZW Rn` on arm64, whose branch either jumps to the store
//! or falls through into it: that conditional branch runs once on every finished path, just
//! before the store, with REG already holding the iterator, and both kernels emulate it
//! (x86 `jcc`, arm64 `cbz`). Where no such guard is found, the probe goes on the instruction
//! after the store (single-stepped: `ADDQ $n, SP`, arm64 `LDP`/`MOVD`); when that instruction is
//! an unconditional jump (Go 1.19 branches around its write-barrier call there), on the jump's
//! target instead: the join that both the barrier path and the plain path reach.

use iced_x86::{Decoder, DecoderOptions, FlowControl, MemorySize, Mnemonic, OpKind, Register};
use yaxpeax_arch::{Decoder as _, U8Reader};
use yaxpeax_arm::armv8::a64::{InstDecoder, Opcode, Operand, SizeCode};

use crate::Arch;

/// A probe site on a finished path of the step function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndSite {
    /// Byte offset from the function entry.
    pub offset: u64,
    /// The register holding the iterator there: amd64 in encoding order (RAX 0, RCX 1, RDX 2,
    /// RBX 3, RSP 4, RBP 5, RSI 6, RDI 7, R8–R15 8–15), arm64 X0–X30.
    pub reg: u8,
}

/// The finished exits of the step function whose machine code is `code` (at virtual address
/// `entry`), for an iterator whose key pointer is at `key_offset`.
pub fn end_sites(arch: Arch, code: &[u8], entry: u64, key_offset: u64) -> Vec<EndSite> {
    let mut sites = match arch {
        Arch::X86_64 => x86_sites(code, entry, key_offset),
        Arch::Aarch64 => a64_sites(code, key_offset),
    };
    sites.sort_by_key(|s| s.offset);
    sites.dedup();
    sites
}

/// One decoded instruction: where it is, where the next one starts, and what matters here.
#[derive(Default)]
struct Insn {
    offset: u64,
    next: u64,
    /// `Some(base)` for a 16-byte zero store to `[base + key_offset]`.
    clears_key: Option<u8>,
    /// Target offset of an unconditional direct jump.
    jump_to: Option<u64>,
    /// A conditional direct branch: its target offset, and (arm64 `CBZ`/`CBNZ`) the 32-bit
    /// register it tests.
    branch_if: Option<(u64, Option<u16>)>,
    /// What a write-barrier test before a conditional branch would be: amd64 `CMP dword
    /// [rip+d], 0` (`Some(None)`); arm64 a 32-bit load into that register (`Some(Some(n))`).
    flag_test: Option<Option<u16>>,
    /// Leaves the straight line other than by a call: a jump, a branch or a return.
    leaves: bool,
    /// A no-op (alignment padding the compiler may put between a test and its branch).
    nop: bool,
}

/// The write-barrier test's branch that leads into the key store `insns[at]`: the conditional
/// branch just before it (the store is its fall-through) or one whose target it is with a
/// straight line from the branch to the store, preceded (past no-ops) by the test of a flag
/// that the branch's register, if any, holds.
fn guard_of(insns: &[Insn], at: usize) -> Option<u64> {
    let store = insns[at].offset;
    let lead_in = insns[..at].iter().rposition(|i| match i.branch_if {
        Some((target, _)) => target == store || i.next == store,
        None => false,
    })?;
    let branch = &insns[lead_in];
    let straight = insns[lead_in + 1..at].iter().all(|i| !i.leaves);
    let test = insns[..lead_in].iter().rev().find(|i| !i.nop)?;
    let tests_its_register = match (test.flag_test, branch.branch_if) {
        (Some(loaded), Some((_, tested))) => loaded == tested,
        _ => false,
    };
    (straight && tests_its_register).then_some(branch.offset)
}

fn sites_of(insns: &[Insn], code_len: u64) -> Vec<EndSite> {
    let starts: std::collections::HashSet<u64> = insns.iter().map(|i| i.offset).collect();
    let mut out = Vec::new();
    for (n, insn) in insns.iter().enumerate() {
        let Some(reg) = insn.clears_key else { continue };
        if let Some(offset) = guard_of(insns, n) {
            out.push(EndSite { offset, reg });
            continue;
        }
        let Some(after) = insns.get(n + 1).filter(|a| a.offset == insn.next) else {
            continue;
        };
        let offset = match after.jump_to {
            // Only a target that is an instruction boundary of this function.
            Some(t) if t < code_len && starts.contains(&t) => t,
            Some(_) => continue,
            None => after.offset,
        };
        out.push(EndSite { offset, reg });
    }
    out
}

fn x86_sites(code: &[u8], entry: u64, key_offset: u64) -> Vec<EndSite> {
    let mut decoder = Decoder::with_ip(64, code, entry, DecoderOptions::NONE);
    let mut insns = Vec::new();
    while decoder.can_decode() {
        let insn = decoder.decode();
        if insn.is_invalid() {
            // Padding or data after the last instruction: nothing further is code we can trust.
            break;
        }
        let offset = insn.ip() - entry;
        let clears_key = (matches!(
            insn.mnemonic(),
            Mnemonic::Movups | Mnemonic::Movupd | Mnemonic::Movdqu | Mnemonic::Movaps
        ) && insn.op_count() == 2
            && insn.op0_kind() == OpKind::Memory
            && insn.op1_kind() == OpKind::Register
            && insn.op1_register() == Register::XMM15
            && insn.memory_index() == Register::None
            && insn.memory_displacement64() == key_offset)
            .then(|| gpr64_number(insn.memory_base()))
            .flatten();
        let near = matches!(insn.op0_kind(), OpKind::NearBranch64);
        let target = insn.near_branch64().wrapping_sub(entry);
        let jump_to = (insn.mnemonic() == Mnemonic::Jmp && near).then_some(target);
        let branch_if = (insn.flow_control() == FlowControl::ConditionalBranch && near)
            .then_some((target, None));
        let flag_test = (insn.mnemonic() == Mnemonic::Cmp
            && insn.op_count() == 2
            && insn.op0_kind() == OpKind::Memory
            && insn.memory_base() == Register::RIP
            && insn.memory_size() == MemorySize::UInt32
            && matches!(
                insn.op1_kind(),
                OpKind::Immediate8to32 | OpKind::Immediate32
            )
            && insn.immediate(1) == 0)
            .then_some(None);
        insns.push(Insn {
            offset,
            next: insn.next_ip() - entry,
            clears_key,
            jump_to,
            branch_if,
            flag_test,
            leaves: !matches!(insn.flow_control(), FlowControl::Next | FlowControl::Call),
            nop: insn.mnemonic() == Mnemonic::Nop,
        });
    }
    sites_of(&insns, code.len() as u64)
}

/// The encoding number of a 64-bit general register (None for RIP, segment bases and the rest).
fn gpr64_number(r: Register) -> Option<u8> {
    const ORDER: [Register; 16] = [
        Register::RAX,
        Register::RCX,
        Register::RDX,
        Register::RBX,
        Register::RSP,
        Register::RBP,
        Register::RSI,
        Register::RDI,
        Register::R8,
        Register::R9,
        Register::R10,
        Register::R11,
        Register::R12,
        Register::R13,
        Register::R14,
        Register::R15,
    ];
    ORDER.iter().position(|&g| g == r).map(|n| n as u8)
}

const XZR: u16 = 31;

fn a64_sites(code: &[u8], key_offset: u64) -> Vec<EndSite> {
    let decoder = InstDecoder::default();
    let mut insns = Vec::new();
    let mut pos = 0usize;
    while pos + 4 <= code.len() {
        let mut reader = U8Reader::new(&code[pos..pos + 4]);
        let offset = pos as u64;
        pos += 4;
        let Ok(insn) = decoder.decode(&mut reader) else {
            insns.push(Insn {
                offset,
                next: pos as u64,
                // Unknown: nothing may be assumed to run straight through it.
                leaves: true,
                ..Insn::default()
            });
            continue;
        };
        let zr = Operand::Register(SizeCode::X, XZR);
        let clears_key = match insn.operands {
            [
                a,
                b,
                Operand::RegPreIndex(base, disp, false),
                Operand::Nothing,
            ] if insn.opcode == Opcode::STP
                && a == zr
                && b == zr
                && base < XZR
                && i64::from(disp) == key_offset as i64 =>
            {
                Some(base as u8)
            }
            _ => None,
        };
        let to = |delta: i64| (offset as i64).wrapping_add(delta) as u64;
        let jump_to = match insn.operands[0] {
            Operand::PCOffset(delta) if insn.opcode == Opcode::B => Some(to(delta)),
            _ => None,
        };
        let branch_if = match insn.operands {
            [
                Operand::Register(SizeCode::W, r),
                Operand::PCOffset(delta),
                ..,
            ] if matches!(insn.opcode, Opcode::CBZ | Opcode::CBNZ) => Some((to(delta), Some(r))),
            _ => None,
        };
        let flag_test = match insn.operands {
            [
                Operand::Register(SizeCode::W, r),
                Operand::RegPreIndex(_, _, false),
                ..,
            ] if insn.opcode == Opcode::LDR && r < XZR => Some(Some(r)),
            _ => None,
        };
        let leaves = jump_to.is_some()
            || matches!(
                insn.opcode,
                Opcode::B
                    | Opcode::Bcc(_)
                    | Opcode::BR
                    | Opcode::RET
                    | Opcode::CBZ
                    | Opcode::CBNZ
                    | Opcode::TBZ
                    | Opcode::TBNZ
            );
        insns.push(Insn {
            offset,
            next: pos as u64,
            clears_key,
            jump_to,
            branch_if,
            flag_test,
            leaves,
            nop: insn.opcode == Opcode::HINT,
        });
    }
    sites_of(&insns, code.len() as u64)
}
