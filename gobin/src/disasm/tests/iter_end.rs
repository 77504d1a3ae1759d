//! The "iteration finished" sites on hand-assembled step-function endings of each Go layout.

use crate::Arch;
use crate::disasm::iter_end::{EndSite, end_sites};

/// Go 1.21+ amd64: barrier buffer writes, the zero store, then the epilogue.
#[test]
fn amd64_site_is_the_instruction_after_the_zero_store() {
    let code = [
        0x49, 0x89, 0x0b, // MOVQ CX, 0(R11)
        0x44, 0x0f, 0x11, 0x38, // MOVUPS X15, 0(AX)
        0x48, 0x83, 0xc4, 0x60, // ADDQ $0x60, SP
        0x5d, // POPQ BP
        0xc3, // RET
    ];
    assert_eq!(
        end_sites(Arch::X86_64, &code, 0x1000, 0),
        [EndSite { offset: 7, reg: 0 }]
    );
    // A store to another field is not the key's.
    assert!(end_sites(Arch::X86_64, &code, 0x1000, 8).is_empty());
}

/// Go 1.19 amd64: the plain path jumps over the barrier calls to the shared return.
#[test]
fn amd64_jump_after_the_store_moves_the_site_to_the_join() {
    let code = [
        0x44, 0x0f, 0x11, 0x38, // 0: MOVUPS X15, 0(AX)
        0xeb, 0x03, // 4: JMP 9
        0x48, 0x89, 0xc7, // 6: MOVQ AX, DI (barrier path)
        0x48, 0x83, 0xc4, 0x68, // 9: ADDQ $0x68, SP
        0xc3, // RET
    ];
    assert_eq!(
        end_sites(Arch::X86_64, &code, 0x4000, 0),
        [EndSite { offset: 9, reg: 0 }]
    );
}

#[test]
fn arm64_site_follows_stp_zr_zr() {
    let words: [u32; 4] = [
        0xa9007c1f, // STP (ZR, ZR), (R0)
        0xf85f83fd, // MOVD -8(RSP), R29
        0xf84507fe, // MOVD.P 80(RSP), R30
        0xd65f03c0, // RET
    ];
    let code: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    assert_eq!(
        end_sites(Arch::Aarch64, &code, 0, 0),
        [EndSite { offset: 4, reg: 0 }]
    );
    // Go 1.19 arm64: STP then JMP 2 instructions ahead.
    let words: [u32; 4] = [0xa9007c1f, 0x14000002, 0xaa0003e2, 0xd65f03c0];
    let code: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    assert_eq!(
        end_sites(Arch::Aarch64, &code, 0, 0),
        [EndSite { offset: 12, reg: 0 }]
    );
    // STP (ZR, ZR), 72(R0) clears another field.
    let code = 0xa904fc1fu32.to_le_bytes();
    assert!(end_sites(Arch::Aarch64, &code, 0, 0).is_empty());
}

/// `CMPL runtime.writeBarrier(SB), $0` (RIP-relative, imm8 0).
const CMP_BARRIER: [u8; 7] = [0x83, 0x3d, 0x00, 0x10, 0x00, 0x00, 0x00];

fn x86(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Go 1.21+ amd64: the write-barrier test jumps to the zero store when barriers are off. The
/// site is that `JE`, which the kernel emulates, not the `ADDQ` after the store, which it
/// single-steps.
#[test]
fn amd64_site_is_the_barrier_branch_that_jumps_to_the_store() {
    let code = x86(&[
        &CMP_BARRIER,              // 0
        &[0x74, 0x08],             // 7: JE 0x11
        &[0x48, 0x8b, 0x08],       // 9: MOVQ 0(AX), CX
        &[0xe8, 0, 0, 0, 0],       // c: CALL runtime.gcWriteBarrier2
        &[0x44, 0x0f, 0x11, 0x38], // 11: MOVUPS X15, 0(AX)
        &[0x48, 0x83, 0xc4, 0x40], // 15: ADDQ $0x40, SP
        &[0x5d, 0xc3],             // 19: POPQ BP; RET
    ]);
    assert_eq!(
        end_sites(Arch::X86_64, &code, 0x1000, 0),
        [EndSite { offset: 7, reg: 0 }]
    );
    // A NOP between the test and its branch (one of go1.27's three sites has one); the store
    // moves to 0x12, still the JE's target.
    let padded = x86(&[&CMP_BARRIER, &[0x90], &[0x74, 0x08], &code[9..]]);
    assert_eq!(
        end_sites(Arch::X86_64, &padded, 0x1000, 0),
        [EndSite { offset: 8, reg: 0 }]
    );
}

/// Go 1.19 amd64: the write-barrier test branches away to the barrier calls and falls through
/// into the store.
#[test]
fn amd64_site_is_the_barrier_branch_that_falls_into_the_store() {
    let code = x86(&[
        &CMP_BARRIER,              // 0
        &[0x75, 0x06],             // 7: JNE 0xf
        &[0x44, 0x0f, 0x11, 0x38], // 9: MOVUPS X15, 0(AX)
        &[0xeb, 0x03],             // d: JMP 0x12
        &[0x48, 0x89, 0xc7],       // f: MOVQ AX, DI (barrier path)
        &[0x48, 0x83, 0xc4, 0x68], // 12: ADDQ $0x68, SP
        &[0xc3],
    ]);
    assert_eq!(
        end_sites(Arch::X86_64, &code, 0x4000, 0),
        [EndSite { offset: 7, reg: 0 }]
    );
}

/// A branch that is not the barrier test's, or that does not run straight into the store, is
/// no guard: the site stays after the store.
#[test]
fn amd64_other_branches_are_not_guards() {
    // The compare is of a register, not of a flag in memory.
    let code = x86(&[
        &[0x83, 0xf8, 0x00],       // 0: CMP EAX, 0
        &[0x74, 0x00],             // 3: JE 5
        &[0x44, 0x0f, 0x11, 0x38], // 5: MOVUPS X15, 0(AX)
        &[0x48, 0x83, 0xc4, 0x40], // 9: ADDQ $0x40, SP
        &[0xc3],
    ]);
    assert_eq!(
        end_sites(Arch::X86_64, &code, 0, 0),
        [EndSite { offset: 9, reg: 0 }]
    );
    // The branch jumps to the store, but its own fall-through returns first.
    let code = x86(&[
        &CMP_BARRIER,              // 0
        &[0x74, 0x01],             // 7: JE 0xa
        &[0xc3],                   // 9: RET
        &[0x44, 0x0f, 0x11, 0x38], // a: MOVUPS X15, 0(AX)
        &[0x48, 0x83, 0xc4, 0x60], // e: ADDQ $0x60, SP
        &[0xc3],
    ]);
    assert_eq!(
        end_sites(Arch::X86_64, &code, 0, 0),
        [EndSite {
            offset: 0xe,
            reg: 0
        }]
    );
}

fn a64(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// arm64: `MOVWU runtime.writeBarrier, R1; CBZW R1, store` (Go 1.21+) and `CBNZW R1, barrier`
/// falling into the store (Go 1.19): the site is the `CBZ`/`CBNZ`, which the kernel simulates.
#[test]
fn arm64_site_is_the_barrier_branch() {
    let code = a64(&[
        0xb9486361, // 0: MOVWU 2144(R27), R1
        0x34000081, // 4: CBZW R1, 4(PC) -> 0x14
        0xa9400801, // 8: LDP (R0), (R1, R2)
        0x9401e1c0, // c: CALL runtime.gcWriteBarrier2
        0xa9000b21, // 10: STP (R1, R2), (R25)
        0xa9007c1f, // 14: STP (ZR, ZR), (R0)
        0xf85f83fd, // 18: MOVD -8(RSP), R29
        0xd65f03c0, // 1c: RET
    ]);
    assert_eq!(
        end_sites(Arch::Aarch64, &code, 0, 0),
        [EndSite { offset: 4, reg: 0 }]
    );
    let code = a64(&[
        0xb9400361, // 0: MOVWU (R27), R1
        0x35000061, // 4: CBNZW R1, 3(PC) -> 0x10
        0xa9007c1f, // 8: STP (ZR, ZR), (R0)
        0x14000002, // c: JMP 2(PC)
        0xaa0003e2, // 10: MOVD R0, R2 (barrier path)
        0xd65f03c0, // 14: RET
    ]);
    assert_eq!(
        end_sites(Arch::Aarch64, &code, 0, 0),
        [EndSite { offset: 4, reg: 0 }]
    );
    // The loaded register is not the one tested: no guard, the site follows the store.
    let code = a64(&[
        0xb9486362, // 0: MOVWU 2144(R27), R2
        0x34000081, // 4: CBZW R1, 4(PC) -> 0x14
        0xa9400801, 0x9401e1c0, 0xa9000b21, 0xa9007c1f, // 14: STP (ZR, ZR), (R0)
        0xf85f83fd, // 18
        0xd65f03c0,
    ]);
    assert_eq!(
        end_sites(Arch::Aarch64, &code, 0, 0),
        [EndSite {
            offset: 0x18,
            reg: 0
        }]
    );
}
