//! The SARIF log (`--sarif`), as a code-scanning tool reads it: valid against the published
//! schema, one result per finding group, locations relative to the source root. Built here from
//! findings as the kernel sends them; `kernel::sarif` writes one from a real race.

use std::time::SystemTime;

use map_trace::output::group::Groups;
use map_trace::output::{Clock, Report, sarif};
use map_trace::resolve::symbolize::Frame;
use map_trace_common::event::{Finding, FindingKind, Op};
use test_support::Scratch;

use crate::MAP_TRACE;
use crate::sarif_check::violations;

fn frame(function: &str, file: &str, line: u32) -> Frame {
    Frame {
        function: function.into(),
        file: file.into(),
        line,
    }
}

fn report(kind: FindingKind, writer: Vec<Frame>, other: Vec<Frame>, at_s: u64) -> Report {
    let f = Finding {
        write_ns: at_s * 1_000_000_000,
        kind: kind as u32,
        op: Op::Delete as u32,
        writer_goid: 18,
        iterator_goid: 7,
        tgid: 4242,
        ..Finding::default()
    };
    let clock = Clock::at(SystemTime::UNIX_EPOCH, 0);
    let mut r = Report::decode(&f, &clock).unwrap();
    r.map_type = "map[string]main.entry".into();
    r.writer_stack = writer;
    r.iterator_stack = other;
    r
}

#[test]
fn a_session_s_groups_make_a_valid_log_with_both_sides() {
    let mut groups = Groups::new(std::time::Duration::from_secs(5));
    let race = || {
        report(
            FindingKind::ConcurrentWrite,
            vec![
                frame("main.(*Cache).sweep", "/src/app/cache/janitor.go", 42),
                frame("main.main.func1", "/src/app/main.go", 30),
            ],
            vec![frame("main.stats", "/src/app/stats.go", 18)],
            1,
        )
    };
    groups.record(&mut race());
    groups.record(&mut race());
    groups.record(&mut report(
        FindingKind::Insert,
        vec![frame(
            "encoding/json.(*decodeState).object",
            "/usr/lib/go/src/encoding/json/decode.go",
            700,
        )],
        vec![frame("main.load", "/src/app/load.go", 9)],
        2,
    ));
    // A group with no stack at all still makes a result (without locations).
    groups.record(&mut report(
        FindingKind::ConcurrentWrites,
        vec![],
        vec![],
        3,
    ));
    let doc = sarif::document(&groups.all(), std::path::Path::new("/src/app"), "9.9.9", 2);

    let dir = Scratch::new("sarif");
    let path = dir.join("map-trace.sarif");
    sarif::write(&path, &doc).unwrap();
    let bad = violations(&path);
    assert!(bad.is_empty(), "not valid SARIF 2.1.0:\n{bad}");

    let run = &doc["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "map-trace");
    assert_eq!(run["properties"]["ungroupedOccurrences"], 2);
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), FindingKind::ALL.len());
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), 3, "one result per group: {results:?}");
    let r = &results[0];
    assert_eq!(r["ruleId"], "concurrent_write_during_iteration");
    assert_eq!(
        rules[r["ruleIndex"].as_u64().unwrap() as usize]["id"],
        r["ruleId"]
    );
    assert_eq!(r["level"], "error");
    assert_eq!(r["properties"]["count"], 2);
    let primary = &r["locations"][0]["physicalLocation"];
    assert_eq!(primary["artifactLocation"]["uri"], "cache/janitor.go");
    assert_eq!(primary["artifactLocation"]["uriBaseId"], "SRCROOT");
    assert_eq!(primary["region"]["startLine"], 42);
    let related = &r["relatedLocations"][0];
    assert_eq!(
        related["physicalLocation"]["artifactLocation"]["uri"],
        "stats.go"
    );
    assert_eq!(related["message"]["text"], "the range");
    // Both stacks as thread flows, outermost call first.
    let flows = r["codeFlows"][0]["threadFlows"].as_array().unwrap();
    assert_eq!(flows.len(), 2);
    let first_of = |i: usize| {
        flows[i]["locations"][0]["location"]["logicalLocations"][0]["fullyQualifiedName"].clone()
    };
    assert_eq!(first_of(0), "main.main.func1");
    assert_eq!(first_of(1), "main.stats");
    assert_eq!(
        run["originalUriBaseIds"]["SRCROOT"]["uri"],
        "file:///src/app/"
    );
    // Outside the source root: an absolute URI.
    assert_eq!(
        results[1]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
        "file:///usr/lib/go/src/encoding/json/decode.go"
    );
    assert_eq!(results[1]["level"], "warning");
    assert!(results[2].get("locations").is_none());
    assert!(
        r["partialFingerprints"]["mapTraceFindingId/v1"]
            .as_str()
            .is_some_and(|id| id.len() == 16)
    );
}

/// A `--sarif` path that cannot be written is refused before anything is loaded (no root
/// needed to see it), with one line and its own exit code.
#[test]
fn an_unwritable_sarif_path_is_refused_at_once() {
    let o = MAP_TRACE.run_within(
        &["--pid", "1", "--sarif", "/nonexistent-dir/x.sarif"],
        std::time::Duration::from_secs(5),
    );
    test_support::assert_fails(
        &o,
        18,
        "cannot write the SARIF log /nonexistent-dir/x.sarif",
    );
}
