//! The stack-check matcher on real function starts, their truncations, patches and bit flips.

use super::samples::*;
use crate::Arch;
use crate::disasm::arm64::skip_writeback_store;
use crate::disasm::{AttachPoint, Fallback, StackCheck, attach_point, stack_check};

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
            listing: "+0x0 test rax, rax; +0x3 je short 0x000000000047ca29; +0x5 mov rax, [rax]; …"
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
        reason(Arch::X86_64, &[0xc3]).starts_with("no stack check in the first 1 instruction (")
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
            reason(arch, code).starts_with("unrecognised prologue: g.stackguard0 is first read at")
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
