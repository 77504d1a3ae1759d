//! Where an iteration runs to its end: the "iteration finished" exits of the step function
//! (`runtime.mapiternext`, Swiss `maps.(*Iter).Next`), for the low-overhead mode, which probes
//! those instead of every step. Never a return probe: uretprobes crash Go programs.
//!
//! Every finished path of the step function ends `it.key = nil; it.elem = nil; return`, and
//! no other path stores nil into the key (a step that found an entry stores its address). The
//! compiler clears the two adjacent pointers with one 16-byte store of the zero register
//! (amd64 `MOVUPS X15, key(REG)`, arm64 `STP ZR, ZR, [Xn, #key]`), so those stores are looked
//! for, with the key field's offset as displacement. The probe goes on the next instruction,
//! where REG still holds the iterator. When that instruction is an unconditional jump (Go 1.19
//! branches around its write-barrier call there), it goes on the jump's target instead: the
//! join that both the barrier path and the plain path reach.

use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind, Register};
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
struct Insn {
    offset: u64,
    next: u64,
    /// `Some(base)` for a 16-byte zero store to `[base + key_offset]`.
    clears_key: Option<u8>,
    /// Target offset of an unconditional direct jump.
    jump_to: Option<u64>,
}

fn sites_of(insns: &[Insn], code_len: u64) -> Vec<EndSite> {
    let starts: std::collections::HashSet<u64> = insns.iter().map(|i| i.offset).collect();
    let mut out = Vec::new();
    for (n, insn) in insns.iter().enumerate() {
        let Some(reg) = insn.clears_key else { continue };
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
        let jump_to = (insn.mnemonic() == Mnemonic::Jmp
            && matches!(insn.op0_kind(), OpKind::NearBranch64))
        .then(|| insn.near_branch64().wrapping_sub(entry));
        insns.push(Insn {
            offset,
            next: insn.next_ip() - entry,
            clears_key,
            jump_to,
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
                clears_key: None,
                jump_to: None,
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
        let jump_to = match insn.operands[0] {
            Operand::PCOffset(delta) if insn.opcode == Opcode::B => {
                Some((offset as i64).wrapping_add(delta) as u64)
            }
            _ => None,
        };
        insns.push(Insn {
            offset,
            next: pos as u64,
            clears_key,
            jump_to,
        });
    }
    sites_of(&insns, code.len() as u64)
}
