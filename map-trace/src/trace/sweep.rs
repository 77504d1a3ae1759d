//! Removes correlation state that no iteration will use again. Iterations that end normally or
//! by `break` leave their entries behind (entry probes cannot see a loop end), so without this
//! the bounded tables would fill up in a long-running process.

use aya::Ebpf;
use aya::maps::HashMap as BpfHashMap;
use map_trace_common::state::{GoKey, IterKey, IterState, MapKey, MapState, PendingAssign};

/// An entry untouched this long is dropped. An iteration paused longer than this between two
/// steps is then re-tracked from its next step: a possible miss, never a false report.
pub const STALE_NS: u64 = 30_000_000_000;

/// True when state last touched at `last_ns` is stale at `now_ns`.
pub fn is_stale(last_ns: u64, now_ns: u64) -> bool {
    now_ns.saturating_sub(last_ns) > STALE_NS
}

pub fn sweep(ebpf: &mut Ebpf, now_ns: u64) {
    sweep_map::<IterKey, IterState>(ebpf, "ITERS", now_ns, |v| v.last_step_ns);
    sweep_map::<MapKey, MapState>(ebpf, "MAPS", now_ns, |v| v.last_step_ns);
    sweep_map::<GoKey, PendingAssign>(ebpf, "PENDING", now_ns, |v| v.ns);
}

fn sweep_map<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &str,
    now_ns: u64,
    last: impl Fn(&V) -> u64,
) {
    let Some(map) = ebpf.map_mut(name) else {
        return;
    };
    let Ok(mut table) = BpfHashMap::<_, K, V>::try_from(map) else {
        return;
    };
    let stale: Vec<K> = table
        .iter()
        .filter_map(Result::ok)
        .filter(|(_, v)| is_stale(last(v), now_ns))
        .map(|(k, _)| k)
        .collect();
    for k in stale {
        let _ = table.remove(&k);
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
