//! Probe entry points only: each reads its function's arguments from Go's registers and hands
//! them on: ranges to `iterate`, writes and growth to `write`, Go's fatal errors to `fatal`.
//! Below them: `context` (the event every probe starts from), `inprogress` (writes under way),
//! `pending` (the insert check), `keys`, `stack`, `finding` (the ring buffer) and `maps`.
//! Which program goes on which runtime function is decided by the probe catalogs
//! (gobin/src/runtime/, one file per map implementation); each program's name is a
//! `map_trace_common::program::Program`.
#![no_std]
// BPF atomic add/sub on shared map values (see iterate::begin_iteration).
#![allow(internal_features)]
#![feature(core_intrinsics)]
#![no_main]

mod context;
mod fatal;
mod finding;
mod goabi;
mod inprogress;
mod iterate;
mod keys;
mod maps;
mod pending;
mod sentinel;
mod stack;
mod write;

use aya_ebpf::EbpfContext as _;
use aya_ebpf::helpers::{
    bpf_get_attach_cookie, bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_send_signal,
};
use aya_ebpf::macros::{raw_tracepoint, uprobe};
use aya_ebpf::programs::{ProbeContext, RawTracePointContext};
use context::event;
use goabi::arg;
use keys::Key;
use map_trace_common::event::{ExecNotice, Op};
use map_trace_common::probe::Role;

/// classic `runtime.mapiterinit(t, h, it)`
#[uprobe]
pub fn iter_start_classic(ctx: ProbeContext) -> u32 {
    if let Some(e) = event(&ctx, Role::IterStart) {
        iterate::iter_start(&e, arg(&ctx, 1), arg(&ctx, 2), arg(&ctx, 0));
    }
    0
}

/// Swiss `maps.(*Iter).Init(it, typ, m)`
#[uprobe]
pub fn iter_start_swiss(ctx: ProbeContext) -> u32 {
    if let Some(e) = event(&ctx, Role::IterStart) {
        iterate::iter_start(&e, arg(&ctx, 2), arg(&ctx, 0), arg(&ctx, 1));
    }
    0
}

/// classic `runtime.mapiternext(it)`, Swiss `maps.(*Iter).Next(it)`
#[uprobe]
pub fn iter_step(ctx: ProbeContext) -> u32 {
    if let Some(e) = event(&ctx, Role::IterStep) {
        iterate::iter_step(&e, arg(&ctx, 0));
    }
    0
}

/// Low-overhead mode: just after `it.key = nil` on a finished path of `mapiternext` /
/// `(*Iter).Next` (gobin/src/disasm/iter_end.rs). The attach cookie's high half names the
/// register that holds the iterator there.
#[uprobe]
pub fn iter_end(ctx: ProbeContext) -> u32 {
    if let Some(mut e) = event(&ctx, Role::IterEnd) {
        // SAFETY: the helper only reads the link's cookie.
        let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
        // Mid-function: the frame pointer is the step function's own record.
        e.stack.inside = true;
        iterate::iter_end(&e, goabi::reg(&ctx, cookie >> 32));
    }
    0
}

/// `runtime.mapassign*(t, m, key)` (both implementations)
#[uprobe]
pub fn assign(ctx: ProbeContext) -> u32 {
    write::write(
        &ctx,
        Role::Assign,
        arg(&ctx, 1),
        arg(&ctx, 0),
        Op::Assign,
        Key::None,
    );
    0
}

/// classic `runtime.mapdelete(t, h, &key)`
#[uprobe]
pub fn delete_classic(ctx: ProbeContext) -> u32 {
    let key = Key::Ptr(arg(&ctx, 2), arg(&ctx, 0));
    write::write(
        &ctx,
        Role::Delete,
        arg(&ctx, 1),
        arg(&ctx, 0),
        Op::Delete,
        key,
    );
    0
}

/// classic `runtime.mapdelete_fast32(t, h, key)`
#[uprobe]
pub fn delete_fast32(ctx: ProbeContext) -> u32 {
    let key = Key::U32(arg(&ctx, 2));
    write::write(
        &ctx,
        Role::Delete,
        arg(&ctx, 1),
        arg(&ctx, 0),
        Op::Delete,
        key,
    );
    0
}

/// classic `runtime.mapdelete_fast64(t, h, key)`
#[uprobe]
pub fn delete_fast64(ctx: ProbeContext) -> u32 {
    let key = Key::U64(arg(&ctx, 2));
    write::write(
        &ctx,
        Role::Delete,
        arg(&ctx, 1),
        arg(&ctx, 0),
        Op::Delete,
        key,
    );
    0
}

/// classic `runtime.mapdelete_faststr(t, h, s)`: the string in two registers
#[uprobe]
pub fn delete_faststr(ctx: ProbeContext) -> u32 {
    let key = Key::Str(arg(&ctx, 2), arg(&ctx, 3));
    write::write(
        &ctx,
        Role::Delete,
        arg(&ctx, 1),
        arg(&ctx, 0),
        Op::Delete,
        key,
    );
    0
}

/// Swiss `maps.(*Map).Delete(m, typ, &key)`
#[uprobe]
pub fn delete_swiss(ctx: ProbeContext) -> u32 {
    let key = Key::Ptr(arg(&ctx, 2), arg(&ctx, 1));
    write::write(
        &ctx,
        Role::Delete,
        arg(&ctx, 0),
        arg(&ctx, 1),
        Op::Delete,
        key,
    );
    0
}

/// classic `runtime.mapclear(t, h)`
#[uprobe]
pub fn clear_classic(ctx: ProbeContext) -> u32 {
    write::write(
        &ctx,
        Role::Clear,
        arg(&ctx, 1),
        arg(&ctx, 0),
        Op::Clear,
        Key::None,
    );
    0
}

/// Swiss `maps.(*Map).Clear(m, typ)`
#[uprobe]
pub fn clear_swiss(ctx: ProbeContext) -> u32 {
    write::write(
        &ctx,
        Role::Clear,
        arg(&ctx, 0),
        arg(&ctx, 1),
        Op::Clear,
        Key::None,
    );
    0
}

/// classic `runtime.hashGrow(t, h)`
#[uprobe]
pub fn grow_classic(ctx: ProbeContext) -> u32 {
    write::grow(&ctx, arg(&ctx, 1));
    0
}

/// Swiss `maps.(*Map).growToTable(m, typ)`
#[uprobe]
pub fn grow_swiss_map(ctx: ProbeContext) -> u32 {
    write::grow(&ctx, arg(&ctx, 0));
    0
}

/// Swiss `maps.(*table).grow(t, typ, m, capacity)` and `split(t, typ, m)`
#[uprobe]
pub fn grow_swiss_table(ctx: ProbeContext) -> u32 {
    write::grow(&ctx, arg(&ctx, 2));
    0
}

/// `runtime.fatal(s string)`: Go is about to die of an error it detected; a map's is reported
/// with every write in progress in the process.
#[uprobe]
pub fn fatal_error(ctx: ProbeContext) -> u32 {
    if let Some(e) = event(&ctx, Role::Fatal) {
        fatal::fatal(&e, arg(&ctx, 0), arg(&ctx, 1));
    }
    0
}

/// `sched_process_exec`: tells the daemon which process just started a new program, so `--exe`
/// can pick up processes as they start. A raw tracepoint, because it needs no tracefs mount
/// (often absent in containers and minimal hosts). Loaded only when `--exe` or `run` is in use.
///
/// Under `map-trace run`, only execs in the command's cgroup (its descendants) are announced,
/// and each is stopped first: the signal is taken on the way back to user space, before the new
/// program's first instruction, and the daemon resumes it once its probes are attached.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn exec_notify(_ctx: RawTracePointContext) -> i32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let mut notice = ExecNotice { tgid, held: 0 };
    let run = maps::RUN_CGROUP.get(0).copied().unwrap_or(0);
    if run != 0 {
        // SAFETY: no preconditions.
        if unsafe { bpf_get_current_cgroup_id() } != run {
            return 0;
        }
        // SAFETY: signals the current process, which is exec'ing.
        notice.held = u32::from(unsafe { bpf_send_signal(SIGSTOP) } == 0);
    }
    // A full buffer loses the notice; the daemon's /proc scan at start-up and the counter cover
    // what is missed (under `run`, its sweep of the cgroup resumes what was stopped).
    if maps::EXECS.output::<ExecNotice>(&notice, 0).is_err() {
        maps::count(map_trace_common::event::counter::EXECS_DROPPED);
    }
    0
}

/// Linux's SIGSTOP (the same number on x86_64 and arm64).
const SIGSTOP: u32 = 19;

/// Does nothing. `cargo xtask bench` attaches it where a real probe sits, to price the trap
/// alone; the daemon never loads it.
#[uprobe]
pub fn bench_empty(_ctx: ProbeContext) -> u32 {
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
