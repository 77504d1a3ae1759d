//! Go's register ABI (ABIInternal) from raw `pt_regs`: aya's `ProbeContext::arg` follows the C
//! ABI, which is not where Go passes arguments. The current goroutine is in R14 (amd64) or R28
//! (arm64); integer arguments in RAX, RBX, RCX, RDI, RSI, R8… or R0…R15.

use aya_ebpf::programs::ProbeContext;

#[cfg(bpf_target_arch = "x86_64")]
#[inline(always)]
pub fn arg(ctx: &ProbeContext, n: usize) -> u64 {
    // SAFETY: ctx.regs is the probe's pt_regs, readable by uprobe programs.
    let r = unsafe { &*ctx.regs };
    match n {
        0 => r.rax,
        1 => r.rbx,
        2 => r.rcx,
        3 => r.rdi,
        4 => r.rsi,
        _ => 0,
    }
}

#[cfg(bpf_target_arch = "x86_64")]
#[inline(always)]
pub fn g(ctx: &ProbeContext) -> u64 {
    // SAFETY: as above.
    unsafe { (*ctx.regs).r14 }
}

#[cfg(bpf_target_arch = "aarch64")]
#[inline(always)]
pub fn arg(ctx: &ProbeContext, n: usize) -> u64 {
    // SAFETY: ctx.regs is the probe's pt_regs, readable by uprobe programs.
    let r = unsafe { &*ctx.regs };
    if n < 8 { r.regs[n] } else { 0 }
}

#[cfg(bpf_target_arch = "aarch64")]
#[inline(always)]
pub fn g(ctx: &ProbeContext) -> u64 {
    // SAFETY: as above.
    unsafe { (*ctx.regs).regs[28] }
}
