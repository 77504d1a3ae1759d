//! Plan probes: which functions of one binary to probe for each role. The catalog of candidates
//! per map implementation (and why each role sits where it does) is `gobin::runtime`; planning
//! picks those the binary has, notes the entry points that reach them, and says when a binary
//! cannot show an overlap at all. `target` turns a binary's facts (read by gobin) into a
//! `GoTarget`: the planned probes with their attach points and iteration-end sites.

mod target;

pub use target::{GoTarget, ProbeTarget};

use gobin::runtime::catalog;
use gobin::{Function, MapImpl};
use map_trace_common::probe::Role;
use map_trace_common::program::Program;

/// How iterations are observed, which decides which iteration probes a session attaches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IterationMode {
    /// A probe on every step of every iterator: an iteration is in progress between two steps,
    /// and a write is confirmed as an overlap at the next step. The first step marks the start
    /// (iterators start zeroed), so the start functions are not probed.
    #[default]
    Steps,
    /// Probes on the start and on the step function's "iteration finished" exits only: a write
    /// inside that window is reported when the range finishes. No trap per step; ranges left by
    /// `break` (or `return`, `panic`) are never reported.
    Ends,
    /// Probes on the start and the "iteration finished" exits only, and no write probes: a
    /// range's end compares the map's header with its start. A map that gained elements (or
    /// grew) is reported without its writer; any change escalates the binary, which then gets
    /// `Escalation`'s probes for a while to name the writer of the next occurrence.
    Sentinel,
    /// Not a mode of its own: what a sentinel binary adds while escalated (steps and writes),
    /// which makes it the full mode on top of the sentinel's start and end probes.
    Escalation,
}

impl IterationMode {
    /// Whether a probe of this role is attached in this mode.
    pub fn uses(self, role: Role) -> bool {
        use IterationMode::*;
        let write = matches!(role, Role::Assign | Role::Delete | Role::Clear | Role::Grow);
        match self {
            Steps => !matches!(role, Role::IterStart | Role::IterEnd),
            Ends => role != Role::IterStep,
            Sentinel => matches!(role, Role::IterStart | Role::IterEnd | Role::Fatal),
            Escalation => write || role == Role::IterStep,
        }
    }

    /// The name users give it (`--mode`, config `mode`); `Escalation` is never chosen.
    pub const fn name(self) -> &'static str {
        match self {
            IterationMode::Steps => "full",
            IterationMode::Ends => "low-overhead",
            IterationMode::Sentinel => "sentinel",
            IterationMode::Escalation => "escalation",
        }
    }
}

/// A function chosen for a probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedProbe {
    pub role: Role,
    pub program: Program,
    pub function: Function,
    /// Entry points present in the binary that end in this function.
    pub via: Vec<String>,
}

/// The probes for one binary, and what could not be planned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub probes: Vec<PlannedProbe>,
    /// Functions of the catalog the linker left out because the program never calls them.
    pub absent: Vec<&'static str>,
    pub warnings: Vec<String>,
}

/// Chooses the probes for a binary with the given map implementation and symbols.
pub fn plan(map_impl: MapImpl, lookup: impl Fn(&str) -> Option<Function>) -> Plan {
    let mut out = Plan::default();
    for spec in catalog(map_impl) {
        match spec.symbols.iter().find_map(|s| lookup(s)) {
            Some(function) => out.probes.push(PlannedProbe {
                role: spec.role,
                program: spec.program,
                function,
                via: spec
                    .via
                    .iter()
                    .filter(|v| lookup(v).is_some())
                    .map(|v| v.to_string())
                    .collect(),
            }),
            None => out.absent.push(spec.symbols[0]),
        }
    }
    let has = |probes: &[PlannedProbe], role| probes.iter().any(|p| p.role == role);
    if !has(&out.probes, Role::IterStart) || !has(&out.probes, Role::IterStep) {
        // Steps without starts would compare a new range with a finished one's baseline:
        // never attach one without the other.
        out.probes
            .retain(|p| !matches!(p.role, Role::IterStart | Role::IterStep));
        out.warnings.push(
            "the binary contains no map iteration functions: it never ranges over a map, so no overlap can occur".into(),
        );
    }
    if [Role::Assign, Role::Delete, Role::Clear]
        .iter()
        .all(|&r| !has(&out.probes, r))
    {
        out.warnings
            .push("the binary contains no map write functions: nothing to detect".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn func(name: &str) -> Function {
        Function {
            name: name.into(),
            entry: 0x1000,
            end: 0x1100,
        }
    }

    #[test]
    fn swiss_plan_probes_internal_functions_once_and_reports_reflect_paths_as_via() {
        let present = [
            "internal/runtime/maps.(*Iter).Init",
            "internal/runtime/maps.(*Iter).Next",
            "runtime.mapIterStart",
            "reflect.mapIterStart",
            "runtime.mapassign_fast64",
            "internal/runtime/maps.(*Map).Delete",
            "runtime.mapdelete_fast64",
            "reflect.mapdelete",
            // A Swiss binary can carry the classic names as linkname shims: they must not be probed.
            "runtime.mapiterinit",
        ];
        let p = plan(MapImpl::Swiss, |n| present.contains(&n).then(|| func(n)));
        let names: Vec<_> = p.probes.iter().map(|p| p.function.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "internal/runtime/maps.(*Iter).Init",
                "internal/runtime/maps.(*Iter).Next",
                "runtime.mapassign_fast64",
                "internal/runtime/maps.(*Map).Delete",
            ]
        );
        assert_eq!(
            p.probes[0].via,
            [
                "runtime.mapIterStart",
                "reflect.mapIterStart",
                "runtime.mapiterinit"
            ]
        );
        assert_eq!(
            p.probes[3].via,
            ["runtime.mapdelete_fast64", "reflect.mapdelete"]
        );
        assert!(p.absent.contains(&"internal/runtime/maps.(*Map).Clear"));
        assert!(p.warnings.is_empty());
    }

    #[test]
    fn each_mode_attaches_only_the_iteration_probes_it_needs() {
        use IterationMode::{Ends, Steps};
        // The full mode starts an iteration at its first step; the low-overhead one never
        // traps on steps.
        assert!(!Steps.uses(Role::IterStart) && Steps.uses(Role::IterStep));
        assert!(!Steps.uses(Role::IterEnd));
        assert!(Ends.uses(Role::IterStart) && Ends.uses(Role::IterEnd));
        assert!(!Ends.uses(Role::IterStep));
        for role in [Role::Assign, Role::Delete, Role::Clear, Role::Grow] {
            assert!(Steps.uses(role) && Ends.uses(role));
        }
    }

    #[test]
    fn the_sentinel_traps_only_at_range_starts_and_ends_and_escalation_adds_the_rest() {
        use IterationMode::{Escalation, Sentinel, Steps};
        let sentinel: Vec<Role> = Role::ALL
            .into_iter()
            .filter(|&r| Sentinel.uses(r))
            .collect();
        assert_eq!(sentinel, [Role::IterStart, Role::IterEnd, Role::Fatal]);
        // Escalated, a sentinel binary has every probe the full mode has (and its start and
        // end besides), each attached once.
        for role in Role::ALL {
            assert!(
                !(Sentinel.uses(role) && Escalation.uses(role)),
                "{role:?} twice"
            );
            if Steps.uses(role) {
                assert!(
                    Sentinel.uses(role) || Escalation.uses(role),
                    "{role:?} missing"
                );
            }
        }
    }

    #[test]
    fn a_step_function_without_a_start_function_is_not_probed() {
        let present = ["runtime.mapiternext", "runtime.mapassign"];
        let p = plan(MapImpl::Classic, |n| present.contains(&n).then(|| func(n)));
        let roles: Vec<Role> = p.probes.iter().map(|p| p.role).collect();
        assert_eq!(roles, [Role::Assign]);
        assert_eq!(p.warnings.len(), 1);
    }

    #[test]
    fn classic_plan_without_iteration_warns() {
        let p = plan(MapImpl::Classic, |n| {
            (n == "runtime.mapassign").then(|| func(n))
        });
        assert_eq!(p.probes.len(), 1);
        assert_eq!(p.probes[0].role, Role::Assign);
        assert_eq!(p.warnings.len(), 1);
    }
}
