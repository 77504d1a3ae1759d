//! `map-trace inspect`: show what map-trace learns from a Go binary, before attaching anything.

use std::fmt::Write as _;

use gobin::OffsetsSource;
use gobin::buildversion::VersionSource;
use gobin::offsets::RuntimeOffsets;
use serde::Serialize;

use crate::discover::process::ProcessExe;
use crate::plan::GoTarget;

fn hex(v: u64) -> String {
    format!("{v:#x}")
}

/// The `--json` document. Field names are a contract: scripts and tests read them.
#[derive(Serialize)]
pub struct Document {
    pub path: String,
    pub pid: Option<u32>,
    pub go_version: String,
    pub go_version_raw: String,
    /// `build_info`, or `runtime.buildVersion` (`_symbol`, `_scan`) when the binary has none.
    pub version_source: &'static str,
    pub goexperiments: Vec<String>,
    pub arch: &'static str,
    pub map_impl: &'static str,
    pub stripped: bool,
    pub pie: bool,
    pub linker: &'static str,
    pub symbols_source: &'static str,
    pub offsets_source: String,
    pub offsets: RuntimeOffsets,
    pub probes: Vec<ProbeEntry>,
    pub absent: Vec<&'static str>,
    pub warnings: Vec<String>,
}

#[derive(Serialize)]
pub struct ProbeEntry {
    pub role: &'static str,
    pub symbol: String,
    /// Virtual address of the function entry.
    pub address: String,
    /// File offset of the function entry.
    pub file_offset: String,
    /// Offset from the entry to the first instruction after the stack-check branch.
    pub attach_offset: String,
    /// What the uprobe is attached at: `file_offset + attach_offset`.
    pub uprobe_offset: String,
    /// Why `attach_offset` is 0, when it is.
    pub attach_note: Option<String>,
    pub via: Vec<String>,
}

impl Document {
    pub fn new(t: &GoTarget, process: Option<&ProcessExe>) -> Self {
        Document {
            path: t.path.display().to_string(),
            pid: process.map(|p| p.pid),
            go_version: t.version.to_string(),
            go_version_raw: t.build.raw_version.clone(),
            version_source: match t.version_source {
                VersionSource::BuildInfo => "build_info",
                VersionSource::BuildVersionSymbol => "runtime.buildVersion_symbol",
                VersionSource::BuildVersionScan => "runtime.buildVersion_scan",
            },
            goexperiments: t.build.goexperiments.clone(),
            arch: t.elf.arch.name(),
            map_impl: t.map_impl.name(),
            stripped: t.elf.stripped,
            pie: t.elf.pie,
            linker: if t.elf.external_linker {
                "external"
            } else {
                "internal"
            },
            symbols_source: match t.symbols_source {
                gobin::symbols::SymbolSource::Symtab => "symtab",
                gobin::symbols::SymbolSource::Pclntab => "pclntab",
            },
            offsets_source: match t.offsets_source {
                OffsetsSource::Dwarf => "dwarf".into(),
                OffsetsSource::Table { minor } => format!("table:go1.{minor}"),
            },
            offsets: t.offsets.clone(),
            probes: t
                .probes
                .iter()
                .map(|p| ProbeEntry {
                    role: p.role.name(),
                    symbol: p.function.name.clone(),
                    address: hex(p.function.entry),
                    file_offset: hex(p.file_offset),
                    attach_offset: hex(p.attach.offset),
                    uprobe_offset: hex(p.uprobe_offset()),
                    attach_note: p.attach.fallback_reason.clone(),
                    via: p.via.clone(),
                })
                .collect(),
            absent: t.absent.clone(),
            warnings: t.warnings.clone(),
        }
    }

    pub fn to_json(&self) -> String {
        // Serialising plain structs of strings and integers cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub fn to_human(&self) -> String {
        let mut s = String::new();
        let yes = |b: bool| if b { "yes" } else { "no" };
        let _ = writeln!(s, "{}", self.path);
        if let Some(pid) = self.pid {
            let _ = writeln!(s, "  pid:          {pid}");
        }
        let exps = if self.goexperiments.is_empty() {
            String::new()
        } else {
            format!("  (GOEXPERIMENT={})", self.goexperiments.join(","))
        };
        let _ = writeln!(s, "  Go:           {}{exps}", self.go_version);
        let from = match self.version_source {
            "build_info" => VersionSource::BuildInfo,
            "runtime.buildVersion_symbol" => VersionSource::BuildVersionSymbol,
            _ => VersionSource::BuildVersionScan,
        };
        let _ = writeln!(s, "  version from: {}", from.describe());
        let _ = writeln!(s, "  arch:         {}", self.arch);
        let _ = writeln!(s, "  maps:         {}", self.map_impl);
        let _ = writeln!(
            s,
            "  binary:       stripped: {}, PIE: {}, linker: {}",
            yes(self.stripped),
            yes(self.pie),
            self.linker
        );
        let _ = writeln!(s, "  symbols from: {}", self.symbols_source);
        let _ = writeln!(s, "  offsets from: {}", self.offsets_source);
        let _ = writeln!(s, "  probes ({}):", self.probes.len());
        let width = self
            .probes
            .iter()
            .map(|p| p.symbol.len())
            .max()
            .unwrap_or(0);
        let _ = writeln!(
            s,
            "    {:<10}  {:<width$}  {:>10}  {:>10}  {:>7}",
            "ROLE", "SYMBOL", "ADDRESS", "FILE OFF", "ATTACH"
        );
        for p in &self.probes {
            let _ = write!(
                s,
                "    {:<10}  {:<width$}  {:>10}  {:>10}  +{:<6}",
                p.role, p.symbol, p.address, p.file_offset, p.attach_offset
            );
            if let Some(note) = &p.attach_note {
                let _ = write!(s, "  ({note})");
            }
            if !p.via.is_empty() {
                let _ = write!(s, "  via {}", p.via.join(", "));
            }
            s.push('\n');
        }
        if !self.absent.is_empty() {
            let _ = writeln!(s, "  not linked (never called): {}", self.absent.join(", "));
        }
        let offsets = serde_json::to_value(&self.offsets).unwrap_or_default();
        if let Some(map) = offsets.as_object() {
            let fields: Vec<String> = map.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(s, "  runtime offsets: {}", fields.join(" "));
        }
        for w in &self.warnings {
            let _ = writeln!(s, "  warning: {w}");
        }
        s
    }
}
