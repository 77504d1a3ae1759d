//! Everything map-trace needs to know about one Go executable, gathered in one pass: the
//! binary's facts (read by gobin), then the probes planned on them, each with its attach point
//! inside the function and, for the iterator's step function, its "iteration finished" sites.

use std::path::{Path, PathBuf};

use gobin::buildinfo::{BuildInfo, GoVersion};
use gobin::buildversion::VersionSource;
use gobin::disasm::{self, AttachPoint, iter_end};
use gobin::elf::{ElfFacts, ElfImage};
use gobin::offsets::RuntimeOffsets;
use gobin::symbols::SymbolSource;
use gobin::{Function, GoBinary, MapImpl, OffsetsSource};
use map_trace_common::probe::Role;
use map_trace_common::program::Program;

use super::{self as plan, IterationMode};
use crate::error::TargetError;

/// A probe ready to attach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeTarget {
    pub role: Role,
    /// The eBPF program to attach (it knows this function's argument registers).
    pub program: Program,
    pub function: Function,
    /// File offset of the function entry in the executable (what the kernel's uprobe API takes).
    pub file_offset: u64,
    pub attach: AttachPoint,
    pub via: Vec<String>,
    /// The register holding the iterator at an `IterEnd` site (see `iter_end::EndSite`).
    pub reg: Option<u8>,
}

impl GoTarget {
    /// The probes a session observing iterations in `mode` attaches. A binary whose step
    /// function shows no "finished" exit (see `iter_end`) is observed step by step even in the
    /// low-overhead mode: its ranges could not be seen to end.
    pub fn probes_for(&self, mode: IterationMode) -> impl Iterator<Item = &ProbeTarget> {
        let mode = self.effective_mode(mode);
        self.probes.iter().filter(move |p| mode.uses(p.role))
    }

    /// `mode`, or the full mode where the low-overhead or sentinel one cannot work for this
    /// binary.
    pub fn effective_mode(&self, mode: IterationMode) -> IterationMode {
        match mode {
            IterationMode::Ends | IterationMode::Sentinel
                if !self.probes.iter().any(|p| p.role == Role::IterEnd) =>
            {
                IterationMode::Steps
            }
            m => m,
        }
    }
}

impl ProbeTarget {
    /// File offset to hand to the kernel: the entry's plus the prologue skip.
    pub fn uprobe_offset(&self) -> u64 {
        self.file_offset + self.attach.offset
    }
}

/// A Go executable, analysed.
pub struct GoTarget {
    pub path: PathBuf,
    pub elf: ElfFacts,
    pub build: BuildInfo,
    pub version: GoVersion,
    /// Build info, or `runtime.buildVersion` in a binary whose build info was removed.
    pub version_source: VersionSource,
    pub map_impl: MapImpl,
    pub symbols_source: SymbolSource,
    pub offsets: RuntimeOffsets,
    pub offsets_source: OffsetsSource,
    pub probes: Vec<ProbeTarget>,
    /// Catalog functions the linker left out (the program never uses them).
    pub absent: Vec<&'static str>,
    pub warnings: Vec<String>,
}

impl GoTarget {
    pub fn analyze(path: &Path) -> Result<Self, TargetError> {
        let image = ElfImage::open(path)?;
        Self::analyze_image(&image)
    }

    pub fn analyze_image(image: &ElfImage) -> Result<Self, TargetError> {
        let GoBinary {
            path,
            elf,
            build,
            version,
            version_source,
            map_impl,
            symbols,
            offsets,
            offsets_source,
            mut warnings,
        } = GoBinary::read(image)?;

        let planned = plan::plan(map_impl, |s| symbols.get(s).cloned());
        warnings.extend(planned.warnings);
        let mut probes = Vec::with_capacity(planned.probes.len());
        for p in planned.probes {
            let f = &p.function;
            let code = image.bytes_at(f.entry, f.end.saturating_sub(f.entry))?;
            let file_offset = image.file_offset(f.entry)?;
            probes.push(ProbeTarget {
                role: p.role,
                program: p.program,
                file_offset,
                attach: disasm::attach_point(elf.arch, code, f.entry),
                function: p.function.clone(),
                via: p.via,
                reg: None,
            });
            if p.role == Role::IterStep {
                let key = offsets.iter_key();
                let sites = iter_end::end_sites(elf.arch, code, f.entry, key);
                if sites.is_empty() {
                    warnings.push(format!(
                        "no \"iteration finished\" exit found in {}: --low-overhead falls back to probing every step",
                        f.name
                    ));
                }
                for site in sites {
                    probes.push(ProbeTarget {
                        role: Role::IterEnd,
                        program: Program::IterEnd,
                        file_offset,
                        attach: AttachPoint {
                            offset: site.offset,
                            fallback_reason: None,
                        },
                        function: p.function.clone(),
                        via: Vec::new(),
                        reg: Some(site.reg),
                    });
                }
            }
        }
        Ok(GoTarget {
            path,
            elf,
            build,
            version,
            version_source,
            map_impl,
            symbols_source: symbols.source,
            offsets,
            offsets_source,
            probes,
            absent: planned.absent,
            warnings,
        })
    }
}
