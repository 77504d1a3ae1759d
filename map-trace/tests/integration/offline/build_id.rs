//! The Go build ID the daemon reads to tell a rewritten file from its analysed self
//! (`gobin::buildid`, part of every file's content stamp) is the one `go tool buildid` prints,
//! for every scenarios fixture: each Go release, both arches, default, stripped, PIE and cgo
//! builds (one program: the other two add nothing the reader could get wrong).

use super::go_tool;

#[test]
fn build_ids_match_go_tool_buildid_on_every_fixture() {
    let fixtures = test_support::fixtures_of("scenarios");
    assert!(fixtures.len() >= 80, "only {} fixtures", fixtures.len());
    let mut ids = std::collections::BTreeSet::new();
    for f in &fixtures {
        let file = std::fs::File::open(&f.path).unwrap();
        let ours = gobin::buildid::go_build_id(&file)
            .unwrap_or_else(|| panic!("no build ID read from {}", f.path.display()));
        let go = go_tool(f, &["buildid", f.path.to_str().unwrap()]);
        assert_eq!(ours, go.trim(), "{}", f.path.display());
        ids.insert(ours);
    }
    // Different builds, different IDs: the ID names the content.
    assert_eq!(ids.len(), fixtures.len());
}

#[test]
fn a_file_that_is_not_go_has_no_build_id() {
    for path in ["/bin/sh", "/etc/passwd"] {
        let file = std::fs::File::open(path).unwrap();
        assert_eq!(gobin::buildid::go_build_id(&file), None, "{path}");
    }
}
