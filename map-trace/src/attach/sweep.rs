//! Removes correlation state that no iteration will use again. Iterations that end normally or
//! by `break` leave their entries behind (entry probes cannot see a loop end), so without this
//! the bounded tables would fill up in a long-running process.

use std::collections::{HashMap, HashSet};

use aya::Ebpf;
use aya::maps::{Array, HashMap as BpfHashMap};
use map_trace_common::program::map;
use map_trace_common::state::{IterKey, IterState, MapKey, MapState, live_hint_index};

/// An entry untouched this long is dropped. An iteration paused longer than this between two
/// steps is then re-tracked from its next step: a possible miss, never a false report.
pub const STALE_NS: u64 = 30_000_000_000;

// A range stepping on the quiet path leaves its entries' ages alone for up to `QUIET_FOR_NS`
// (plus the 100 ms the kernel's clock may lag): the sweep must never take the entries of a
// range that is still stepping.
const _: () = assert!(map_trace_common::state::QUIET_FOR_NS * 10 < STALE_NS);

/// True when state last touched at `last_ns` is stale at `now_ns`.
pub fn is_stale(last_ns: u64, now_ns: u64) -> bool {
    now_ns.saturating_sub(last_ns) > STALE_NS
}

pub fn sweep(ebpf: &mut Ebpf, now_ns: u64) {
    remove_iterations(ebpf, |_, v| is_stale(v.last_step_ns, now_ns));
    remove_where::<MapKey, MapState>(ebpf, map::MAPS, |_, v| is_stale(v.last_step_ns, now_ns));
}

/// Removes every entry of processes that exited, in one pass over each table (a pass per exit
/// would cost thousands of syscalls each when many short-lived processes come and go): a tgid
/// may be reused by a process that must start clean, and the tables must not fill with the dead.
pub fn forget_processes(ebpf: &mut Ebpf, dead: &HashSet<u32>) {
    remove_iterations(ebpf, |k, _| dead.contains(&k.tgid));
    remove_where::<MapKey, MapState>(ebpf, map::MAPS, |k, _| dead.contains(&k.tgid));
}

/// Processes with entries in the per-process tables that `alive` says are gone. An exit notice
/// covers only processes the daemon had met; one that ran a watched file and exited before its
/// exec notice was read left entries no notice will ever name.
pub fn orphans(ebpf: &Ebpf, alive: impl Fn(u32) -> bool) -> HashSet<u32> {
    let mut tgids = HashSet::new();
    collect::<IterKey, IterState>(ebpf, map::ITERS, |k| k.tgid, &mut tgids);
    collect::<MapKey, MapState>(ebpf, map::MAPS, |k| k.tgid, &mut tgids);
    tgids.retain(|&t| !alive(t));
    tgids
}

fn collect<K: aya::Pod, V: aya::Pod>(
    ebpf: &Ebpf,
    name: &str,
    tgid: impl Fn(&K) -> u32,
    into: &mut HashSet<u32>,
) {
    let Some(map) = ebpf.map(name) else { return };
    let Ok(table) = BpfHashMap::<_, K, V>::try_from(map) else {
        return;
    };
    into.extend(table.keys().filter_map(Result::ok).map(|k| tgid(&k)));
}

/// Drops every iteration (with its pending insert check) and tracked map, for all processes.
/// The maps go too: each counts its live iterations, and a count left without its iterations
/// would only make their writes slower.
pub fn forget_iterations(ebpf: &mut Ebpf) {
    remove_iterations(ebpf, |_, _| true);
    remove_where::<MapKey, MapState>(ebpf, map::MAPS, |_, _| true);
}

/// Entries now in each correlation table, by the metric label of the table. (`config`, an
/// array, holds one entry per binary the daemon keeps: `Targets::binaries`.)
pub fn entries(ebpf: &Ebpf) -> [(&'static str, usize); 2] {
    [
        ("maps", keys::<MapKey, MapState>(ebpf, map::MAPS)),
        ("iters", keys::<IterKey, IterState>(ebpf, map::ITERS)),
    ]
}

fn keys<K: aya::Pod, V: aya::Pod>(ebpf: &Ebpf, name: &str) -> usize {
    let Some(map) = ebpf.map(name) else { return 0 };
    let Ok(table) = BpfHashMap::<_, K, V>::try_from(map) else {
        return 0;
    };
    table.keys().filter(Result::is_ok).count()
}

/// Removes the entries `doomed` picks; returns those this call removed (not the kernel first).
fn remove_where<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &str,
    doomed: impl Fn(&K, &V) -> bool,
) -> Vec<K> {
    let Some(map) = ebpf.map_mut(name) else {
        return Vec::new();
    };
    let Ok(mut table) = BpfHashMap::<_, K, V>::try_from(map) else {
        return Vec::new();
    };
    let stale: Vec<K> = table
        .iter()
        .filter_map(Result::ok)
        .filter(|(k, v)| doomed(k, v))
        .map(|(k, _)| k)
        .collect();
    stale
        .into_iter()
        .filter(|k| table.remove(k).is_ok())
        .collect()
}

/// Removes the iterations `doomed` picks, and counts each removed one in its group's
/// `LIVE_DEBT`, so that the kernel's `LIVE_HINT` less it stays an upper bound of the live
/// iterations (map-trace-ebpf/src/maps.rs). Only the daemon writes `LIVE_DEBT`, and only after
/// a removal succeeded: an entry the kernel removed itself was already taken off its hint.
fn remove_iterations(ebpf: &mut Ebpf, doomed: impl Fn(&IterKey, &IterState) -> bool) {
    let removed = remove_where::<IterKey, IterState>(ebpf, map::ITERS, doomed);
    if removed.is_empty() {
        return;
    }
    let mut by_group: HashMap<u32, u64> = HashMap::new();
    for k in &removed {
        *by_group.entry(live_hint_index(k.tgid, k.map)).or_default() += 1;
    }
    let Some(m) = ebpf.map_mut(map::LIVE_DEBT) else {
        return;
    };
    let Ok(mut debt) = Array::<_, u64>::try_from(m) else {
        return;
    };
    for (group, n) in by_group {
        if let Ok(old) = debt.get(&group, 0) {
            let _ = debt.set(group, old + n, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staleness() {
        assert!(!is_stale(100, 100 + STALE_NS));
        assert!(is_stale(100, 101 + STALE_NS));
        // A timestamp from the future (another CPU's clock read) is not stale.
        assert!(!is_stale(200, 100));
    }
}
