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
