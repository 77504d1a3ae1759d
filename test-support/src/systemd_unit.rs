//! The shipped systemd unit, `dist/systemd/map-trace.service`, as the tests read it: the unit
//! file's own checks (offline) and the runs with its credentials (root) both need its settings.

use std::path::Path;

use crate::repo_path;

/// The unit's ExecStart, as the README documents it.
pub const INSTALLED_BIN: &str = "/usr/local/bin/map-trace";
pub const INSTALLED_CONFIG: &str = "/etc/map-trace/config.toml";

pub fn unit_text() -> String {
    let p = repo_path("dist/systemd/map-trace.service");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `Key=value` lines of one section, comments and blank lines left out.
pub fn section<'a>(unit: &'a str, name: &str) -> Vec<(&'a str, &'a str)> {
    let header = format!("[{name}]");
    let mut inside = false;
    let mut out = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == header;
        } else if inside && !line.is_empty() && !line.starts_with(['#', ';']) {
            let (k, v) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("not Key=value: {line:?}"));
            assert!(!v.ends_with('\\'), "continuation lines unsupported: {line}");
            out.push((k.trim(), v.trim()));
        }
    }
    out
}

/// The arguments of the unit's ExecStart, after the binary, with the installed config path
/// replaced by `config`.
pub fn exec_start_args(config: &Path) -> Vec<String> {
    let unit = unit_text();
    let exec: Vec<&str> = section(&unit, "Service")
        .into_iter()
        .filter(|(k, _)| *k == "ExecStart")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(exec.len(), 1, "one ExecStart: {exec:?}");
    let mut words = exec[0].split_whitespace();
    assert_eq!(
        words.next(),
        Some(INSTALLED_BIN),
        "ExecStart runs the binary where the README installs it"
    );
    let args: Vec<String> = words
        .map(|w| {
            if w == INSTALLED_CONFIG {
                config.display().to_string()
            } else {
                w.to_string()
            }
        })
        .collect();
    assert!(
        args.iter().any(|a| Path::new(a) == config),
        "ExecStart does not read {INSTALLED_CONFIG}: {args:?}"
    );
    args
}
