//! `--sarif` on a real race: the log map-trace writes when its `--pid` target exits is valid
//! against the published schema and points at the lines the scenario's markers name, relative
//! to `--source-root`. How the log is built: `offline::sarif`.

use test_support::run::run_scenario;
use test_support::{Scratch, kernel_test};

use crate::MAP_TRACE;
use crate::sarif_check::violations;

/// This module's group at the kernel tests' gate.
const GROUP: &str = "sarif";

/// The line of `path` holding `needle`, 1-based.
fn line_of(path: &std::path::Path, needle: &str) -> u64 {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i as u64 + 1)
        .unwrap_or_else(|| panic!("{needle:?} not in {}", path.display()))
}

#[test]
fn a_race_becomes_one_valid_sarif_result_at_its_lines() {
    let _gate = kernel_test(GROUP, "traces a Go process");
    let f = test_support::host_fixture("scenarios", "1.27.3");
    let dir = Scratch::new("sarif-run");
    let log = dir.join("findings.sarif");
    let root = f.source_dir.to_str().unwrap();
    let run = run_scenario(
        MAP_TRACE,
        &f,
        "cross_delete_u64",
        &["--sarif", log.to_str().unwrap(), "--source-root", root],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        run.stderr.contains("SARIF log written to"),
        "{}",
        run.stderr
    );
    let bad = violations(&log);
    assert!(bad.is_empty(), "not valid SARIF 2.1.0:\n{bad}");

    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&log).unwrap()).unwrap();
    let results = doc["runs"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "one group: {results:?}");
    let r = &results[0];
    assert_eq!(r["ruleId"], "concurrent_write_during_iteration");
    let main_go = f.source_dir.join("main.go");
    let at = |l: &serde_json::Value| {
        let p = &l["physicalLocation"];
        (
            p["artifactLocation"]["uri"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            p["artifactLocation"]["uriBaseId"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            p["region"]["startLine"].as_u64().unwrap_or(0),
        )
    };
    assert_eq!(
        at(&r["locations"][0]),
        (
            "main.go".to_string(),
            "SRCROOT".to_string(),
            line_of(&main_go, "want:write main.crossDeleteU64.func1")
        ),
        "{r}"
    );
    assert_eq!(
        at(&r["relatedLocations"][0]),
        (
            "main.go".to_string(),
            "SRCROOT".to_string(),
            line_of(&main_go, "want:range main.crossDeleteU64")
        ),
        "{r}"
    );
    assert_eq!(
        r["partialFingerprints"]["mapTraceFindingId/v1"],
        run.findings[0]["finding_id"]
    );
}
