//! Validates SARIF logs against the published SARIF 2.1.0 schema (the OASIS standard's final
//! `sarif-2.1.0-rtm.5.json`, as Microsoft's `@microsoft/jest-sarif` ships it on npm) with
//! Python's `jsonschema` (Debian's python3-jsonschema, installed by `cargo xtask setup`): a
//! validator and a schema nobody here wrote.

use std::path::Path;
use std::process::Command;

/// The published schema, fetched once from the npm registry.
fn schema() -> std::path::PathBuf {
    crate::npm::npm_file(
        "@microsoft/jest-sarif@1.0.0-beta.0",
        "package/lib/schemas/sarif-2.1.0-rtm.5.json",
        "sarif-2.1.0-rtm.5.json",
    )
}

/// Every schema violation of the log at `log`, one per line (empty: valid).
pub(crate) fn violations(log: &Path) -> String {
    let script = r#"
import json, sys
import jsonschema
schema = json.load(open(sys.argv[1]))
log = json.load(open(sys.argv[2]))
v = jsonschema.Draft4Validator(schema)
for e in sorted(v.iter_errors(log), key=lambda e: list(e.path)):
    print("/".join(str(p) for p in e.path) + ": " + e.message[:300])
"#;
    let o = Command::new("python3")
        .args(["-c", script])
        .arg(schema())
        .arg(log)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}); run `cargo xtask setup`"));
    assert!(
        o.status.success(),
        "the SARIF validator did not run (python3-jsonschema missing? run `cargo xtask setup`): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}
