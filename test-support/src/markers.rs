//! The `want:` marker comments (`want:write`, `want:range`, `want:read`, `want:type`, `want:calls`) of testdata/go/scenarios: which source lines, functions and map
//! types each scenario's findings must name. Read from the copy of the sources each fixture was
//! built from, honouring the files' `//go:build` lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A line a finding must point at, and the function it is in (inlining expanded).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Site {
    pub function: String,
    pub file: String,
    pub line: u32,
}

#[derive(Clone, Debug, Default)]
pub struct Expected {
    pub writes: BTreeSet<Site>,
    pub ranges: BTreeSet<Site>,
    /// Reads Go dies at ("concurrent map read and map write"), named by `fatal_map_error`.
    pub reads: BTreeSet<Site>,
    pub types: BTreeSet<String>,
}

#[derive(Default)]
struct FuncMarkers {
    expected: Expected,
    calls: Vec<String>,
}

pub struct Markers {
    funcs: BTreeMap<String, FuncMarkers>,
    /// Scenario name → Go function.
    scenarios: BTreeMap<String, String>,
}

/// Whether a file's `//go:build` line (only the forms the fixtures use) admits Go 1.`minor`.
fn builds_for(text: &str, minor: u32) -> bool {
    let Some(line) = text.lines().find(|l| l.starts_with("//go:build ")) else {
        return true;
    };
    let expr = line.trim_start_matches("//go:build ").trim();
    let (negated, tag) = match expr.strip_prefix('!') {
        Some(t) => (true, t),
        None => (false, expr),
    };
    let since: u32 = tag
        .strip_prefix("go1.")
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("unexpected build constraint {line:?}"));
    (minor >= since) != negated
}

impl Markers {
    pub fn load(source_dir: &Path, minor: u32) -> Markers {
        let mut m = Markers {
            funcs: BTreeMap::new(),
            scenarios: BTreeMap::new(),
        };
        let mut entries: Vec<_> = std::fs::read_dir(source_dir)
            .unwrap_or_else(|e| panic!("{}: {e}", source_dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "go"))
            .collect();
        entries.sort();
        for path in entries {
            let text = std::fs::read_to_string(&path).unwrap();
            if !builds_for(&text, minor) {
                continue;
            }
            m.parse_file(&path.display().to_string(), &text);
        }
        assert!(
            !m.scenarios.is_empty(),
            "no scenarios in {}",
            source_dir.display()
        );
        m
    }

    fn parse_file(&mut self, file: &str, text: &str) {
        let mut current = String::new();
        for (i, line) in text.lines().enumerate() {
            let line_no = i as u32 + 1;
            if let Some(rest) = line.strip_prefix("func ") {
                current = rest.split('(').next().unwrap_or_default().to_string();
            }
            // `"name": fn,` in the scenarios table, or `scenarios["name"] = fn`.
            let t = line.trim();
            if let Some(rest) = t.strip_prefix('"')
                && let Some((name, f)) = rest.split_once("\":")
            {
                let f = f.trim().trim_end_matches(',');
                if !f.is_empty() && f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    self.scenarios.insert(name.into(), f.into());
                }
            }
            if let Some(rest) = t.strip_prefix("scenarios[\"")
                && let Some((name, f)) = rest.split_once("\"] = ")
            {
                self.scenarios.insert(name.into(), f.trim().into());
            }
            let Some(comment) = line.find("//").map(|at| &line[at..]) else {
                continue;
            };
            let words: Vec<&str> = comment.split_whitespace().collect();
            for (w, arg) in words.iter().zip(words.iter().skip(1)) {
                let fm = self.funcs.entry(current.clone()).or_default();
                let site = || Site {
                    function: arg.to_string(),
                    file: file.to_string(),
                    line: line_no,
                };
                match *w {
                    "want:write" => {
                        fm.expected.writes.insert(site());
                    }
                    "want:range" => {
                        fm.expected.ranges.insert(site());
                    }
                    "want:read" => {
                        fm.expected.reads.insert(site());
                    }
                    "want:type" => {
                        fm.expected.types.insert(arg.to_string());
                    }
                    "want:calls" => fm.calls.push(arg.to_string()),
                    _ => {}
                }
            }
        }
    }

    /// What `scenario`'s findings must name: its function's markers and those of the
    /// functions it names with `want:calls`.
    pub fn expected(&self, scenario: &str) -> Expected {
        let f = self
            .scenarios
            .get(scenario)
            .unwrap_or_else(|| panic!("scenario {scenario} is not in the scenarios table"));
        let mut out = Expected::default();
        let mut todo = vec![f.clone()];
        while let Some(name) = todo.pop() {
            let Some(fm) = self.funcs.get(&name) else {
                continue;
            };
            out.writes.extend(fm.expected.writes.iter().cloned());
            out.ranges.extend(fm.expected.ranges.iter().cloned());
            out.reads.extend(fm.expected.reads.iter().cloned());
            out.types.extend(fm.expected.types.iter().cloned());
            todo.extend(fm.calls.iter().cloned());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_lines() {
        assert!(builds_for("package main\n", 19));
        assert!(builds_for("//go:build go1.21\n", 21));
        assert!(!builds_for("//go:build go1.21\n", 19));
        assert!(builds_for("//go:build !go1.21\n", 19));
    }
}
