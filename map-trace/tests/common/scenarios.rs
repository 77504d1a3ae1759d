//! What each scenario of testdata/go/scenarios must report, and the checks of one scenario's
//! findings. Std and serde_json only: `cargo xtask vm-test` includes this file (`#[path]`) to
//! judge the runs it made inside emulated VMs exactly as live_scenarios.rs judges host runs.

use std::collections::BTreeSet;
use std::path::Path;

use super::markers::{Expected, Markers, Site};

pub const CW: &str = "concurrent_write_during_iteration";
pub const INSERT: &str = "insert_during_iteration";
pub const DELETE_OTHER: &str = "delete_other_during_iteration";
pub const CLEAR: &str = "clear_during_iteration";
pub const WRITES: &str = "concurrent_writes";

/// Each scenario of testdata/go/scenarios and the exact kinds it must produce.
pub const EXPECTED: &[(&str, &[&str])] = &[
    ("cross_delete_u64", &[CW]),
    ("cross_insert_str", &[CW]),
    ("cross_update_struct", &[CW]),
    ("cross_clear_ptr", &[CW]),
    ("json_marshal_race", &[CW]),
    ("self_insert", &[INSERT]),
    ("self_delete_other", &[DELETE_OTHER]),
    ("self_delete_current", &[]),
    ("self_update_existing", &[]),
    ("self_clear", &[CLEAR]),
    ("break_then_write", &[]),
    ("loop_finished_then_write", &[]),
    ("rwmutex", &[]),
    ("channel_handoff", &[]),
    ("grow_during_iteration", &[INSERT]),
    ("nested_two_maps", &[]),
    ("reflect_cross_write", &[CW]),
    ("reflect_self_delete", &[DELETE_OTHER]),
    // Correct concurrent writers: never a finding.
    ("mutex_writers", &[]),
    ("handoff_writers", &[]),
    ("cow_atomic", &[]),
    ("sync_map", &[]),
];

/// Real races with a write in progress (testdata/go/scenarios/inprogress.go), which Go's own
/// runtime usually kills (exit 2, "concurrent map …") or which exit 3 after two seconds.
pub const RACY: &[(&str, &[&str])] = &[
    ("writers_clear_insert", &[WRITES]),
    ("range_during_write", &[CW]),
    ("writers_grow_delete", &[WRITES]),
];

/// Scenarios that exist only from some Go release on (they use newer APIs), as (name, minor).
pub const SINCE: &[(&str, u32, &[&str])] = &[("reflect_self_clear", 21, &[CLEAR])];

/// Every scenario a build of Go 1.`minor` has, with the kinds it must produce.
pub fn scenarios_for(minor: u32) -> Vec<(&'static str, &'static [&'static str])> {
    let mut all = EXPECTED.to_vec();
    all.extend(
        SINCE
            .iter()
            .filter(|(_, since, _)| minor >= *since)
            .map(|(s, _, k)| (*s, *k)),
    );
    all
}

/// `1.24.11` -> 24.
pub fn go_minor(go_version: &str) -> u32 {
    go_version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

/// The site a stack names: its first frame in package main (library frames such as reflect's
/// or encoding/json's may come first, runtime frames never).
pub fn site_of(stack: &serde_json::Value) -> Result<Site, String> {
    let frames = stack.as_array().ok_or("stack is not an array")?;
    let first = frames.first().ok_or("empty stack")?;
    let name = first["function"].as_str().unwrap_or_default();
    if name.starts_with("runtime.") || name.starts_with("internal/runtime/") {
        return Err(format!("first frame is the runtime's: {first}"));
    }
    let main = frames
        .iter()
        .find(|fr| {
            fr["function"]
                .as_str()
                .is_some_and(|n| n.starts_with("main."))
        })
        .ok_or("no frame in package main")?;
    Ok(Site {
        function: main["function"].as_str().unwrap_or_default().into(),
        file: main["file"].as_str().unwrap_or_default().into(),
        line: main["line"].as_u64().unwrap_or(0) as u32,
    })
}

/// Every finding names a marked write line, a marked range statement and a marked map type,
/// and every marker is named by some finding. `build` names the fixture in messages.
pub fn check_sites(
    build: &str,
    scenario: &str,
    findings: &[serde_json::Value],
    exp: &Expected,
) -> Vec<String> {
    let mut bad = Vec::new();
    let (mut writes, mut ranges, mut types) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for v in findings {
        let ty = v["map_type"].as_str().unwrap_or_default().to_string();
        if !exp.types.contains(&ty) {
            bad.push(format!(
                "{build} {scenario}: map type {ty:?}, expected one of {:?}",
                exp.types
            ));
        }
        types.insert(ty);
        // Two writers: both sides are writes; there is no range.
        let sides: [(&str, bool); 2] = if v["kind"] == WRITES {
            [("writer_stack", true), ("other_stack", true)]
        } else {
            [("writer_stack", true), ("iterator_stack", false)]
        };
        for (key, is_write) in sides {
            let (want, got) = match is_write {
                true => (&exp.writes, &mut writes),
                false => (&exp.ranges, &mut ranges),
            };
            match site_of(&v[key]) {
                Ok(site) if want.contains(&site) => {
                    got.insert(site);
                }
                Ok(site) => bad.push(format!(
                    "{build} {scenario}: {key} names {site:?}, expected one of {want:?}\n{v}"
                )),
                Err(e) => bad.push(format!("{build} {scenario}: {key}: {e}\n{v}")),
            }
        }
        let id = v["finding_id"].as_str().unwrap_or_default();
        if id.len() != 16 || v["count"].as_u64().unwrap_or(0) == 0 {
            bad.push(format!("{build} {scenario}: bad finding_id/count: {v}"));
        }
    }
    if !findings.is_empty() {
        for (what, want, got) in [
            ("write", &exp.writes, &writes),
            ("range", &exp.ranges, &ranges),
        ] {
            for missing in want.difference(got) {
                bad.push(format!(
                    "{build} {scenario}: no finding names the {what} at {missing:?}"
                ));
            }
        }
        for missing in exp.types.difference(&types) {
            bad.push(format!(
                "{build} {scenario}: no finding names type {missing}"
            ));
        }
    }
    bad
}

/// The kinds of a run's findings.
pub fn kinds_of(findings: &[serde_json::Value]) -> BTreeSet<String> {
    findings
        .iter()
        .map(|v| v["kind"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// Where a fixture was built from and with which Go minor: what its markers depend on.
pub struct Build<'a> {
    pub name: &'a str,
    pub source_dir: &'a Path,
    pub minor: u32,
}

/// Everything one scenario run's findings must satisfy: exactly the expected kinds, every
/// field present, goroutines consistent with the kind, growth seen where the scenario grows
/// the map, and the marked sites. `log` (map-trace's stderr) is shown when the kinds differ.
pub fn check_findings(
    build: &Build,
    scenario: &str,
    expected: &[&str],
    findings: &[serde_json::Value],
    log: &str,
) -> Vec<String> {
    let name = build.name;
    let kinds = kinds_of(findings);
    let want: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
    let mut bad = Vec::new();
    if kinds != want {
        bad.push(format!(
            "{name} {scenario}: kinds {kinds:?}, expected {want:?}\n{log}"
        ));
    }
    for v in findings {
        let two_writers = v["kind"] == WRITES;
        let sides: &[&str] = if two_writers {
            &["other_op", "other_goid", "other_stack"]
        } else {
            &["iterator_goid", "iterator_stack"]
        };
        for key in [
            "kind",
            "severity",
            "op",
            "map",
            "writer_goid",
            "growing",
            "pid",
            "timestamp",
            "map_type",
            "writer_stack",
            "finding_id",
            "count",
        ]
        .iter()
        .chain(sides)
        {
            if v.get(key).is_none() {
                bad.push(format!("{name} {scenario}: finding lacks {key}: {v}"));
            }
        }
        if two_writers {
            if v["writer_goid"] == v["other_goid"] {
                bad.push(format!(
                    "{name} {scenario}: one goroutine on both sides: {v}"
                ));
            }
            continue;
        }
        let same = v["writer_goid"] == v["iterator_goid"];
        let cross = v["kind"] == CW;
        if same == cross {
            bad.push(format!(
                "{name} {scenario}: writer/iterator goroutines inconsistent with kind: {v}"
            ));
        }
    }
    if scenario == "grow_during_iteration" && !findings.iter().any(|v| v["growing"] == true) {
        bad.push(format!(
            "{name} {scenario}: no finding says the map was growing"
        ));
    }
    let markers = Markers::load(build.source_dir, build.minor);
    bad.extend(check_sites(
        name,
        scenario,
        findings,
        &markers.expected(scenario),
    ));
    bad
}
