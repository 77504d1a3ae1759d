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

/// General register `n` (encoding order: RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8–R15), as
/// named by an end site's attach cookie. A match, because context fields must be read at
/// constant offsets.
#[cfg(bpf_target_arch = "x86_64")]
#[inline(always)]
pub fn reg(ctx: &ProbeContext, n: u64) -> u64 {
    // SAFETY: as above.
    let r = unsafe { &*ctx.regs };
    match n {
        0 => r.rax,
        1 => r.rcx,
        2 => r.rdx,
        3 => r.rbx,
        4 => r.rsp,
        5 => r.rbp,
        6 => r.rsi,
        7 => r.rdi,
        8 => r.r8,
        9 => r.r9,
        10 => r.r10,
        11 => r.r11,
        12 => r.r12,
        13 => r.r13,
        14 => r.r14,
        15 => r.r15,
        _ => 0,
    }
}

/// X`n`, as named by an end site's attach cookie.
#[cfg(bpf_target_arch = "aarch64")]
#[inline(always)]
pub fn reg(ctx: &ProbeContext, n: u64) -> u64 {
    // SAFETY: as above.
    let r = unsafe { &*ctx.regs };
    macro_rules! pick {
        ($($i:literal)*) => {
            match n {
                $($i => r.regs[$i],)*
                _ => 0,
            }
        };
    }
    pick!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30)
}

/// Where a stack walk starts at a probe placed before the function's own prologue has run:
/// the caller's call site (`ret`: its address on the stack on amd64, the link register itself on
/// arm64) and the caller's frame pointer, whose record `[fp] = caller's fp, [fp+8] = return
/// address` holds every frame above it on both architectures.
///
/// Inside a function whose prologue has run (`inside`), the frame pointer register is the
/// function's own record, so the walk starts there and its first return address is the call
/// site in the caller.
pub struct StackStart {
    #[cfg(bpf_target_arch = "x86_64")]
    pub sp: u64,
    #[cfg(bpf_target_arch = "aarch64")]
    pub lr: u64,
    pub fp: u64,
    pub inside: bool,
}

#[cfg(bpf_target_arch = "x86_64")]
#[inline(always)]
pub fn stack_start(ctx: &ProbeContext) -> StackStart {
    // SAFETY: as above.
    let r = unsafe { &*ctx.regs };
    StackStart {
        sp: r.rsp,
        fp: r.rbp,
        inside: false,
    }
}

#[cfg(bpf_target_arch = "aarch64")]
#[inline(always)]
pub fn stack_start(ctx: &ProbeContext) -> StackStart {
    // SAFETY: as above.
    let r = unsafe { &*ctx.regs };
    StackStart {
        lr: r.regs[30],
        fp: r.regs[29],
        inside: false,
    }
}

/// The caller's call site: the return address of the probed function.
#[cfg(bpf_target_arch = "x86_64")]
#[inline(always)]
pub fn return_address(s: &StackStart) -> Option<u64> {
    // SAFETY: bpf_probe_read_user faults safely.
    unsafe { aya_ebpf::helpers::bpf_probe_read_user(s.sp as *const u64) }.ok()
}

#[cfg(bpf_target_arch = "aarch64")]
#[inline(always)]
pub fn return_address(s: &StackStart) -> Option<u64> {
    Some(s.lr)
}

impl StackStart {
    /// What a write's entry probe keeps of its stack start for a walk later, while that write
    /// is still in progress: SP (amd64, where the return address is) or LR (arm64), and FP.
    #[inline(always)]
    pub fn saved(&self) -> (u64, u64) {
        #[cfg(bpf_target_arch = "x86_64")]
        let ret = self.sp;
        #[cfg(bpf_target_arch = "aarch64")]
        let ret = self.lr;
        (ret, self.fp)
    }

    /// A stack start kept by `saved`.
    #[inline(always)]
    pub fn from_saved(ret: u64, fp: u64) -> StackStart {
        StackStart {
            #[cfg(bpf_target_arch = "x86_64")]
            sp: ret,
            #[cfg(bpf_target_arch = "aarch64")]
            lr: ret,
            fp,
            inside: false,
        }
    }

    /// Whether the saved start still lies in a goroutine stack `[lo, hi)`: a goroutine whose
    /// stack was moved (copied to grow it) left the old one to be freed and reused.
    #[inline(always)]
    pub fn within(&self, lo: u64, hi: u64) -> bool {
        #[cfg(bpf_target_arch = "x86_64")]
        let sp_ok = self.sp >= lo && self.sp < hi;
        #[cfg(bpf_target_arch = "aarch64")]
        let sp_ok = true;
        sp_ok && self.fp >= lo && self.fp < hi
    }
}
