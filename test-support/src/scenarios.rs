//! What each scenario of testdata/go/scenarios must report, and the checks of one scenario's
//! findings. `cargo xtask vm-test` judges the runs it made inside emulated VMs with these,
//! exactly as live_scenarios.rs judges host runs.

use std::collections::BTreeSet;
use std::path::Path;

use crate::markers::{Expected, Markers, Site};

pub const CW: &str = "concurrent_write_during_iteration";
pub const INSERT: &str = "insert_during_iteration";
pub const DELETE_OTHER: &str = "delete_other_during_iteration";
pub const CLEAR: &str = "clear_during_iteration";
pub const WRITES: &str = "concurrent_writes";
pub const FATAL: &str = "fatal_map_error";
pub const CHANGED: &str = "map_changed_during_iteration";

/// The scenarios of `EXPECTED` whose range sees its map gain elements: what sentinel mode
/// reports (as `CHANGED`, without the writer) at their one occurrence. The others' writes
/// delete, clear or update: the count stays or falls, which the sentinel never reports.
pub const SENTINEL_REPORTS: &[&str] = &["cross_insert_str", "self_insert", "grow_during_iteration"];

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

/// A real race with a write in progress (testdata/go/scenarios/inprogress.go), which Go's own
/// runtime usually kills (exit 2, "fatal error: concurrent map …") or which exits 3 after two
/// seconds.
pub struct Racy {
    pub name: &'static str,
    /// Kinds a run must report besides `fatal_map_error` (which it reports exactly when Go
    /// died of the race).
    pub kinds: &'static [&'static str],
    /// Go must die of it, and its `fatal_map_error` name the write in progress.
    pub dies_naming_writer: bool,
    /// On classic maps some finding must say the map was growing (evacuating).
    pub growing_on_classic: bool,
    /// Also run in the emulated VMs (`cargo xtask vm-test`).
    pub in_vms: bool,
}

pub const RACY: &[Racy] = &[
    Racy {
        name: "writers_clear_insert",
        kinds: &[WRITES],
        dies_naming_writer: false,
        growing_on_classic: false,
        in_vms: true,
    },
    Racy {
        name: "range_during_write",
        kinds: &[CW],
        dies_naming_writer: false,
        growing_on_classic: false,
        in_vms: true,
    },
    Racy {
        name: "writers_grow_delete",
        kinds: &[WRITES],
        dies_naming_writer: false,
        // Classic maps evacuate their old buckets over the writes after a growth: the delete
        // races a map that is growing. (Swiss growth lasts microseconds inside one insert.)
        growing_on_classic: true,
        // 425,984 inserts before the race begins take 40 s an attempt under TCG; every amd64
        // build runs it on the host.
        in_vms: false,
    },
    Racy {
        name: "read_during_write",
        kinds: &[],
        dies_naming_writer: true,
        growing_on_classic: false,
        in_vms: true,
    },
];

/// Go's runtime killed it ("concurrent map …", exit 2), or it survived its two seconds (3).
pub fn racy_target_ok(code: Option<i32>, out: &str, err: &str) -> bool {
    (code == Some(2) && fatal_message(err).is_some())
        || (code == Some(3) && out.contains("survived"))
}

/// How a racy run showed its race.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shown {
    Not,
    /// Go's own check beat the probe's (a microsecond or two apart on the same call), and the
    /// `fatal_map_error` names both sides instead.
    ByTheCrash,
    /// With the scenario's own kinds.
    Directly,
}

/// How a run showed what a racy scenario is there to show (when not, it is run again: each
/// is a race, and a real race recurs).
pub fn racy_shown(
    racy: &Racy,
    classic: bool,
    findings: &[serde_json::Value],
    target_stderr: &str,
) -> Shown {
    let kinds = kinds_of(findings);
    let died = fatal_message(target_stderr).is_some();
    let writer_named = findings.iter().any(|v| {
        v["kind"] == FATAL
            && v["writes_in_progress"]
                .as_array()
                .is_some_and(|w| !w.is_empty())
    });
    let growing = findings.iter().any(|v| v["growing"] == true);
    if (racy.growing_on_classic && classic && !growing)
        || (racy.dies_naming_writer && !(died && writer_named))
    {
        Shown::Not
    } else if racy.kinds.iter().all(|k| kinds.contains(*k)) {
        Shown::Directly
    } else if died && writer_named {
        Shown::ByTheCrash
    } else {
        Shown::Not
    }
}

/// Whether a run showed its race at all (`racy_shown`).
pub fn racy_complete(
    racy: &Racy,
    classic: bool,
    findings: &[serde_json::Value],
    target_stderr: &str,
) -> bool {
    racy_shown(racy, classic, findings, target_stderr) != Shown::Not
}

/// What `racy_complete` looks for, as fixed strings each of which some JSON line of the run
/// must contain: how a VM's /init tells a complete run without parsing JSON.
pub fn racy_patterns(racy: &Racy, classic: bool) -> Vec<String> {
    let mut p: Vec<String> = racy
        .kinds
        .iter()
        .map(|k| format!("\"kind\":\"{k}\""))
        .collect();
    if racy.dies_naming_writer {
        p.push("\"writes_in_progress\":[{".into());
    }
    if racy.growing_on_classic && classic {
        p.push("\"growing\":true".into());
    }
    p
}

/// The checks of one racy run (the one kept of its attempts): shown (growth seen where it
/// must be), exactly the scenario's kinds (none when the crash showed it instead) plus a
/// `fatal_map_error` exactly when Go died of the race (on a kernel where map-trace reports
/// them: `fatal_reported`), carrying the message Go printed, and the marked sites.
pub fn check_racy(
    build: &Build,
    racy: &Racy,
    classic: bool,
    fatal_reported: bool,
    findings: &[serde_json::Value],
    log: &str,
    target_stderr: &str,
) -> Vec<String> {
    let (name, scenario) = (build.name, racy.name);
    let died = fatal_message(target_stderr);
    let mut bad = Vec::new();
    if racy_shown(racy, classic, findings, target_stderr) == Shown::Not {
        bad.push(format!(
            "{name} {scenario}: not seen in any attempt (Go's runtime: {died:?}): {findings:?}"
        ));
    }
    let mut kinds = match racy_shown(racy, classic, findings, target_stderr) {
        Shown::ByTheCrash => vec![],
        Shown::Directly | Shown::Not => racy.kinds.to_vec(),
    };
    if died.is_some() && fatal_reported {
        kinds.push(FATAL);
    }
    bad.extend(check_findings(build, scenario, &kinds, findings, log));
    for v in findings.iter().filter(|v| v["kind"] == FATAL) {
        if v["message"].as_str() != died {
            bad.push(format!(
                "{name} {scenario}: message {} but Go printed {died:?}",
                v["message"]
            ));
        }
    }
    bad
}

/// The map message Go died of, from the target's stderr ("fatal error: concurrent map …").
pub fn fatal_message(stderr: &str) -> Option<&str> {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("fatal error: "))
        .filter(|m| m.contains(" map"))
        .map(str::trim)
}

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

/// What a stack of a finding must name.
#[derive(Clone, Copy)]
enum Side {
    Write,
    Range,
    Read,
}

/// A finding's stacks and what each must name: two writers name two writes; a crash names the
/// goroutine Go names by what it was doing (`other_op`) and each write in progress.
fn sides_of(v: &serde_json::Value) -> Vec<(String, Side)> {
    let mut sides = Vec::new();
    if v.get("writer_stack").is_some() {
        sides.push(("writer_stack".to_string(), Side::Write));
    }
    if v["kind"] == WRITES {
        sides.push(("other_stack".into(), Side::Write));
    } else if v["kind"] == FATAL {
        let noticed = match v["other_op"].as_str() {
            Some("range") => Side::Range,
            Some("write") => Side::Write,
            _ => Side::Read,
        };
        sides.push(("other_stack".into(), noticed));
    } else {
        sides.push(("iterator_stack".into(), Side::Range));
    }
    sides
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
    let (mut writes, mut ranges, mut reads) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    let mut types = BTreeSet::new();
    for v in findings {
        let ty = v["map_type"].as_str().unwrap_or_default().to_string();
        // A crash with no write in progress named has no map to name.
        let unnamed = v["kind"] == FATAL && v.get("writer_stack").is_none();
        if !unnamed {
            if !exp.types.contains(&ty) {
                bad.push(format!(
                    "{build} {scenario}: map type {ty:?}, expected one of {:?}",
                    exp.types
                ));
            }
            types.insert(ty);
        }
        for (key, side) in sides_of(v) {
            let (want, got) = match side {
                Side::Write => (&exp.writes, &mut writes),
                Side::Range => (&exp.ranges, &mut ranges),
                Side::Read => (&exp.reads, &mut reads),
            };
            match site_of(&v[key.as_str()]) {
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
            ("read", &exp.reads, &reads),
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

/// A `fatal_map_error`'s fields: the message, the goroutine Go names, every write in progress
/// (another goroutine each, the first mirrored in the writer fields).
fn check_crash_fields(name: &str, scenario: &str, v: &serde_json::Value) -> Vec<String> {
    let mut bad = Vec::new();
    let mut need = vec![
        "severity",
        "message",
        "other_op",
        "other_goid",
        "other_stack",
        "pid",
        "timestamp",
        "map_type",
        "writes_in_progress",
        "writes_in_progress_unnamed",
        "finding_id",
        "count",
    ];
    let writes = v["writes_in_progress"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !writes.is_empty() {
        need.extend(["op", "map", "writer_goid", "writer_stack"]);
        if v["writer_goid"] != writes[0]["goid"] || v["writer_stack"] != writes[0]["stack"] {
            bad.push(format!(
                "{name} {scenario}: writer fields are not the first write in progress: {v}"
            ));
        }
    }
    for key in need {
        if v.get(key).is_none() {
            bad.push(format!("{name} {scenario}: crash lacks {key}: {v}"));
        }
    }
    for w in &writes {
        if w["goid"] == v["other_goid"] {
            bad.push(format!(
                "{name} {scenario}: the goroutine Go names is its own write in progress: {v}"
            ));
        }
        if let Err(e) = site_of(&w["stack"]) {
            bad.push(format!("{name} {scenario}: write in progress: {e}: {v}"));
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
        if v["kind"] == FATAL {
            bad.extend(check_crash_fields(name, scenario, v));
            continue;
        }
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
