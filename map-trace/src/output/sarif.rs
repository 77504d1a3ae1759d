//! `--sarif FILE`: the finding groups of a session as a SARIF 2.1.0 log, for code-scanning
//! tools and CI. One result per group: the rule is its kind, the level its severity, the
//! primary location the writer's first frame, the related location the other side's first frame
//! (the range, the other write, or the goroutine that noticed a fatal error), and both stacks as
//! thread flows. Paths inside the source root are relative to it (`%SRCROOT%`).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use map_trace_common::event::FindingKind;
use serde_json::{Value, json};

use crate::output::Report;
use crate::output::group::Group;
use crate::resolve::symbolize::Frame;

/// The schema the document names; tests validate against the published file.
pub const SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";

const URI_BASE: &str = "SRCROOT";

/// What each rule says, once, in the log's rule table.
fn description(kind: FindingKind) -> &'static str {
    match kind {
        FindingKind::ConcurrentWrite => {
            "A goroutine wrote to a map while another goroutine was ranging over it, without synchronization: a data race (Go may stop with \"concurrent map iteration and map write\")."
        }
        FindingKind::Insert => {
            "A goroutine inserted a key into a map it was ranging over: the Go spec leaves it unspecified whether the range produces the new key."
        }
        FindingKind::DeleteOther => {
            "A goroutine deleted a key other than the current one from a map it was ranging over: defined by the Go spec (the deleted key is not produced), reported for review."
        }
        FindingKind::Clear => {
            "A goroutine cleared a map it was ranging over: the range produces no further keys."
        }
        FindingKind::ConcurrentWrites => {
            "Two goroutines wrote to one map at the same time: a data race (Go may stop with \"concurrent map writes\")."
        }
        FindingKind::FatalMapError => {
            "The Go runtime stopped the program with a map fatal error; the writes in progress then are named."
        }
        FindingKind::MapChanged => {
            "Sentinel mode: a map gained elements while a goroutine ranged over it, seen from the map's header. The writer is not known yet: the ranging goroutine itself (the range may or may not produce the new keys) or another goroutine (a data race). The full probes are attached for a while to name it."
        }
    }
}

/// SARIF's level for a severity.
fn level(kind: FindingKind) -> &'static str {
    match kind.severity() {
        "error" => "error",
        "warning" => "warning",
        _ => "note",
    }
}

/// What the other side of a finding of this kind is.
fn other_side(kind: FindingKind) -> &'static str {
    match kind {
        FindingKind::ConcurrentWrites => "the other write",
        FindingKind::FatalMapError => "the goroutine that noticed",
        _ => "the range",
    }
}

/// The SARIF log of `groups` (in the order given), written by map-trace `version` with source
/// paths under `root` made relative.
pub fn document(groups: &[&Group], root: &Path, version: &str, ungrouped: u64) -> Value {
    let rules: Vec<Value> = FindingKind::ALL
        .iter()
        .map(|&k| {
            json!({
                "id": k.name(),
                "shortDescription": {"text": k.name().replace('_', " ")},
                "fullDescription": {"text": description(k)},
                "defaultConfiguration": {"level": level(k)},
            })
        })
        .collect();
    let results: Vec<Value> = groups.iter().map(|g| result(g, root)).collect();
    json!({
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "map-trace",
                "version": version,
                "rules": rules,
            }},
            "originalUriBaseIds": {URI_BASE: {"uri": dir_uri(root)}},
            "results": results,
            "properties": {"ungroupedOccurrences": ungrouped},
        }],
    })
}

fn result(g: &Group, root: &Path) -> Value {
    let r: &Report = &g.latest;
    let kind = r.kind;
    let rule_index = FindingKind::ALL
        .iter()
        .position(|&k| k == kind)
        .unwrap_or(0);
    let mut out = json!({
        "ruleId": kind.name(),
        "ruleIndex": rule_index,
        "level": level(kind),
        "message": {"text": message(r, g.count)},
        "partialFingerprints": {"mapTraceFindingId/v1": r.finding_id},
        "properties": {
            "count": g.count,
            "mapType": r.map_type,
            "first": stamp(g.first),
            "last": stamp(g.last),
            "pid": r.pid,
        },
    });
    if let Some(at) = r.location.as_deref()
        && let Ok(Value::Object(fields)) = serde_json::to_value(at)
    {
        for (k, v) in fields {
            out["properties"][k] = v;
        }
    }
    let (write, other) = (&r.writer_stack, &r.iterator_stack);
    if let Some(f) = write.first().or(other.first()) {
        out["locations"] = json!([location(f, root, None)]);
    }
    if let (Some(_), Some(f)) = (write.first(), other.first()) {
        out["relatedLocations"] = json!([location(f, root, Some((1, other_side(kind))))]);
    }
    let flows: Vec<Value> = [(write, "the write"), (other, other_side(kind))]
        .into_iter()
        .filter(|(s, _)| !s.is_empty())
        .map(|(s, who)| thread_flow(s, who, root))
        .collect();
    if !flows.is_empty() {
        out["codeFlows"] = json!([{"threadFlows": flows}]);
    }
    out
}

fn message(r: &Report, count: u64) -> String {
    let at = |s: &[Frame]| {
        s.first()
            .map_or_else(|| "an unknown site".to_string(), |f| f.function.clone())
    };
    let sides = if r.writer_stack.is_empty() && r.kind == FindingKind::MapChanged {
        format!(
            "during the range in {}, writer not known",
            at(&r.iterator_stack)
        )
    } else if r.iterator_stack.is_empty() {
        format!("in {}", at(&r.writer_stack))
    } else {
        format!(
            "in {}; {} in {}",
            at(&r.writer_stack),
            other_side(r.kind),
            at(&r.iterator_stack)
        )
    };
    format!(
        "{} on {} {sides} (seen {count}\u{d7}).",
        r.kind.name(),
        r.map_type
    )
}

/// A goroutine's stack as a thread flow, outermost call first (SARIF's execution order).
fn thread_flow(stack: &[Frame], who: &str, root: &Path) -> Value {
    let locations: Vec<Value> = stack
        .iter()
        .rev()
        .map(|f| json!({"location": location(f, root, None)}))
        .collect();
    json!({"message": {"text": who}, "locations": locations})
}

fn location(f: &Frame, root: &Path, related: Option<(u32, &str)>) -> Value {
    let mut physical = json!({"artifactLocation": artifact(&f.file, root)});
    if f.line > 0 {
        physical["region"] = json!({"startLine": f.line});
    }
    let mut l = json!({
        "physicalLocation": physical,
        "logicalLocations": [{"fullyQualifiedName": f.function, "kind": "function"}],
    });
    if let Some((id, text)) = related {
        l["id"] = json!(id);
        l["message"] = json!({"text": text});
    }
    l
}

/// Relative to the source root when inside it, else an absolute `file:` URI.
fn artifact(file: &str, root: &Path) -> Value {
    let path = Path::new(file);
    match path.strip_prefix(root) {
        Ok(rel) if path.is_absolute() && !rel.as_os_str().is_empty() => {
            json!({"uri": encode(&rel.to_string_lossy()), "uriBaseId": URI_BASE})
        }
        _ if path.is_absolute() => json!({"uri": format!("file://{}", encode(file))}),
        // Not a path at all (a frame without source): kept as it is, relative.
        _ => json!({"uri": encode(file)}),
    }
}

fn dir_uri(root: &Path) -> String {
    let s = root.to_string_lossy();
    let slash = if s.ends_with('/') { "" } else { "/" };
    format!("file://{}{slash}", encode(&s))
}

/// Percent-encodes what a URI path may not hold as it is (RFC 3986 unreserved and `/` kept).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn stamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Writes `doc` to `path` whole: a temporary file beside it, then renamed over it, so a reader
/// never sees half a log.
pub fn write(path: &Path, doc: &Value) -> std::io::Result<()> {
    let tmp = temp_beside(path);
    std::fs::write(
        &tmp,
        serde_json::to_string_pretty(doc).unwrap_or_default() + "\n",
    )?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Checked before anything is attached: the file can be created where it is named.
pub fn check_writable(path: &Path) -> std::io::Result<()> {
    let tmp = temp_beside(path);
    std::fs::write(&tmp, b"")?;
    std::fs::remove_file(&tmp)
}

fn temp_beside(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_inside_the_root_are_relative_and_others_absolute() {
        let root = Path::new("/src/app");
        assert_eq!(
            artifact("/src/app/cache/janitor.go", root),
            json!({"uri": "cache/janitor.go", "uriBaseId": "SRCROOT"})
        );
        assert_eq!(
            artifact("/usr/lib/go/src/encoding/json/encode.go", root),
            json!({"uri": "file:///usr/lib/go/src/encoding/json/encode.go"})
        );
        assert_eq!(
            artifact("/src/app dir/a b.go", Path::new("/src")),
            json!({"uri": "app%20dir/a%20b.go", "uriBaseId": "SRCROOT"})
        );
        assert_eq!(dir_uri(root), "file:///src/app/");
    }
}
