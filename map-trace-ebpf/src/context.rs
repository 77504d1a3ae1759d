//! What every probe starts from: the goroutine and process it fired in, with that binary's
//! settings, and the keys and user-memory reads the other modules share.

use aya_ebpf::EbpfContext as _;
use aya_ebpf::helpers::{
    bpf_get_attach_cookie, bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user,
};
use aya_ebpf::programs::ProbeContext;
use map_trace_common::config::ProcConfig;
use map_trace_common::event::counter;
use map_trace_common::probe::Role;
use map_trace_common::state::{IterKey, MapKey, MapState};

use crate::goabi;
use crate::maps::{CLOCK, MAPS, config, count, live_hint_index, may_be_ranged};

/// The goroutine and process a probe fired in, with that process's settings.
pub struct Event {
    pub tgid: u32,
    /// The executable's id (the link's cookie).
    pub binary: u32,
    /// The goroutine's `g` (its register): tells one goroutine's writes from another's. Its id
    /// is read from it only where it is reported (`goid`).
    pub g: u64,
    /// The daemon's clock (`CLOCK`, at most one 100 ms poll behind): what entries are aged by
    /// for the sweep. A time a user will see is read precisely, by `now()`, where it is taken.
    pub tick: u64,
    /// The binary's `CONFIG` slot, read in place: copying its 68 bytes cost every probe more
    /// than the few fields any one probe reads.
    pub cfg: &'static ProcConfig,
    /// Where this goroutine's stack walk would start; walked only when a stack is needed.
    pub stack: goabi::StackStart,
}

/// Counts the hit, then finds the binary's settings (by the link's cookie) and the goroutine.
/// None for a binary the daemon did not configure.
#[inline(always)]
pub fn event(ctx: &ProbeContext, role: Role) -> Option<Event> {
    count(counter::HITS + role as u32);
    full_event(ctx, current_tgid())
}

#[inline(always)]
pub fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

#[inline(always)]
pub fn full_event(ctx: &ProbeContext, tgid: u32) -> Option<Event> {
    // SAFETY: the context is the probe's own; the helper only reads the link's cookie.
    let binary = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) } as u32;
    let cfg = config(binary)?;
    let g = goabi::g(ctx);
    if g == 0 {
        return None;
    }
    Some(Event {
        tgid,
        binary,
        g,
        // Not the kernel's clock: reading it cost every range step about 45 ns on a KVM guest,
        // a sixth of the program, to date entries the sweep ages by the second. (Uprobe
        // programs may not read the coarse clock.)
        tick: CLOCK.get(0).copied().unwrap_or(0),
        cfg,
        stack: goabi::stack_start(ctx),
    })
}

/// A write or growth probe's event, only when `map` may have an iteration in progress. Most
/// writes go to maps nobody is ranging over; they cost one lookup and never read the goroutine
/// or the clock.
#[inline(always)]
pub fn tracked(ctx: &ProbeContext, tgid: u32, map: u64) -> Option<(Event, *mut MapState)> {
    // Array reads first: a map with no range in its group has none in progress.
    if !may_be_ranged(live_hint_index(tgid, map)) {
        return None;
    }
    let ms = MAPS.get_ptr_mut(MapKey { tgid, _pad: 0, map })?;
    // SAFETY: valid map value pointer for the duration of the program.
    if unsafe { (*ms).live } == 0 {
        return None;
    }
    Some((full_event(ctx, tgid)?, ms))
}

impl Event {
    /// The goroutine's id (0: unreadable), for what is recorded or reported: a user-memory
    /// read, which costs a range step as much as a hash lookup, so not taken per event.
    #[inline(always)]
    pub fn goid(&self) -> u64 {
        read_u64(self.g + self.cfg.g_goid as u64).unwrap_or(0)
    }
}

/// `CLOCK_MONOTONIC` in ns, for a time that is recorded or reported.
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
pub fn read_u64(addr: u64) -> Option<u64> {
    // SAFETY: bpf_probe_read_user faults safely on bad addresses.
    unsafe { bpf_probe_read_user(addr as *const u64) }.ok()
}

#[inline(always)]
pub fn read_u8(addr: u64) -> Option<u8> {
    // SAFETY: as above.
    unsafe { bpf_probe_read_user(addr as *const u8) }.ok()
}

#[inline(always)]
pub fn map_key(e: &Event, map: u64) -> MapKey {
    MapKey {
        tgid: e.tgid,
        _pad: 0,
        map,
    }
}

#[inline(always)]
pub fn iter_key(e: &Event, map: u64) -> IterKey {
    IterKey {
        tgid: e.tgid,
        _pad: 0,
        g: e.g,
        map,
    }
}

#[inline(always)]
pub fn map_state(e: &Event, map: u64, create: bool) -> Option<*mut MapState> {
    let key = map_key(e, map);
    if let Some(p) = MAPS.get_ptr_mut(key) {
        return Some(p);
    }
    if !create {
        return None;
    }
    let fresh = MapState {
        last_step_ns: e.tick,
        ..MapState::default()
    };
    if MAPS.insert(key, fresh, 0).is_err() {
        count(counter::MAPS_FULL);
        return None;
    }
    MAPS.get_ptr_mut(key)
}
