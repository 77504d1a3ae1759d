#![no_std]
#![no_main]

use aya_ebpf::{macros::map, macros::uprobe, maps::PerCpuArray, programs::ProbeContext};
use map_trace_common::probe::Role;

/// Hits per probe role (index = `Role as u32`), per CPU so the hot path takes no lock.
#[map]
static HITS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Role::COUNT as u32, 0);

#[inline(always)]
fn count(role: Role) {
    if let Some(slot) = HITS.get_ptr_mut(role as u32) {
        // SAFETY: per-CPU slot, and eBPF programs are not preempted on the same CPU.
        unsafe { *slot += 1 };
    }
}

/// Counts calls of an assign function: used by the attach-offset tests to prove that a probe
/// placed after the stack-check prologue fires exactly once per call.
#[uprobe]
pub fn count_assign(_ctx: ProbeContext) -> u32 {
    count(Role::Assign);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
