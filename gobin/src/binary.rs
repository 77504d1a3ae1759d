//! The facts of one Go executable, read in one pass: everything the daemon plans its probes
//! from, and everything `map-trace inspect` reports about the binary itself.

use std::path::PathBuf;

use crate::buildinfo::{self, BuildInfo, BuildInfoError, GoVersion};
use crate::buildversion::{self, VersionSource};
use crate::elf::{ElfFacts, ElfImage};
use crate::offsets::{self, RuntimeOffsets};
use crate::pclntab::{Format, Pclntab};
use crate::symbols::Symbols;
use crate::{Arch, MapImpl, TargetError, dwarf, mapimpl};

/// Oldest Go releases with the register ABI our probes read (arguments in registers, g in
/// R14/R28): Go 1.17 on amd64 and 1.18 on arm64.
fn oldest_supported(arch: Arch) -> GoVersion {
    match arch {
        Arch::X86_64 => GoVersion::new(1, 17, 0),
        Arch::Aarch64 => GoVersion::new(1, 18, 0),
    }
}

/// Where the runtime offsets came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OffsetsSource {
    Dwarf,
    /// The built-in table of this known release.
    Table {
        minor: u32,
    },
}

/// A Go executable as read from its file, before any probe is chosen.
pub struct GoBinary {
    pub path: PathBuf,
    pub elf: ElfFacts,
    pub build: BuildInfo,
    pub version: GoVersion,
    /// Build info, or `runtime.buildVersion` when the build info was removed.
    pub version_source: VersionSource,
    pub map_impl: MapImpl,
    /// Its functions by name; `symbols.source` says whether from `.symtab` or `.gopclntab`.
    pub symbols: Symbols,
    pub offsets: RuntimeOffsets,
    pub offsets_source: OffsetsSource,
    /// What the user should know about how the facts were read: build info that the symbols
    /// contradicted, a layout assumed from a neighbouring release.
    pub warnings: Vec<String>,
}

impl GoBinary {
    /// Reads the facts of the Go program in `image`; refuses what map-trace cannot trace (not
    /// Go, a Go without the register ABI) with the error that says so.
    pub fn read(image: &ElfImage) -> Result<Self, TargetError> {
        let path = image.path().to_path_buf();
        let file = image.object()?;
        let elf = image.facts()?;
        let (build, version_source) = match buildinfo::read(&file) {
            Ok(b) => (b, VersionSource::BuildInfo),
            Err(BuildInfoError::Missing) => without_build_info(image, &file)?,
            Err(BuildInfoError::Malformed(d)) => return Err(image.malformed(d)),
        };
        let mut warnings = Vec::new();
        let version = match build.version {
            Some(v) => v,
            None => {
                return Err(
                    image.malformed(format!("unrecognised Go version {:?}", build.raw_version))
                );
            }
        };
        if version < oldest_supported(elf.arch) {
            return Err(TargetError::GoTooOld {
                path,
                version: build.raw_version.clone(),
            });
        }
        let symbols = Symbols::load(&file).map_err(|e| image.malformed(e.to_string()))?;
        let (map_impl, why) = mapimpl::decide(&build, version, |s| symbols.contains(s));
        warnings.extend(why);

        let choice = offsets::table_choice(version);
        let table = offsets::builtin(choice.minor, map_impl);
        let (offsets, offsets_source) = if elf.has_dwarf {
            let from_dwarf = dwarf::struct_layouts(&file, offsets::DWARF_STRUCTS)
                .map_err(|e| e.to_string())
                .and_then(|l| offsets::from_dwarf(&l, map_impl));
            match from_dwarf {
                Ok(o) => (o, OffsetsSource::Dwarf),
                Err(e) => {
                    warnings.push(format!("{e}; using the built-in table"));
                    warnings.extend(choice.warning);
                    (
                        table,
                        OffsetsSource::Table {
                            minor: choice.minor,
                        },
                    )
                }
            }
        } else {
            warnings.extend(choice.warning);
            (
                table,
                OffsetsSource::Table {
                    minor: choice.minor,
                },
            )
        };
        Ok(GoBinary {
            path,
            elf,
            build,
            version,
            version_source,
            map_impl,
            symbols,
            offsets,
            offsets_source,
            warnings,
        })
    }
}

/// A file without `.go.buildinfo`: a Go program only if it has Go's function table, and then
/// traced only if `runtime.buildVersion` pins its version, agreeing with the table's format.
fn without_build_info(
    image: &ElfImage,
    file: &object::read::elf::ElfFile64<'_>,
) -> Result<(BuildInfo, VersionSource), TargetError> {
    let path = image.path().to_path_buf();
    let table = object::File::parse(file.data())
        .ok()
        .and_then(|generic| Pclntab::read(&generic).ok());
    let Some(table) = table else {
        return Err(TargetError::NotGo { path });
    };
    let (build, source) =
        buildversion::read(file).map_err(|detail| TargetError::GoVersionUnknown {
            path: path.clone(),
            detail,
        })?;
    let minor = build.version.map_or(0, |v| v.minor);
    let fits = match table.format() {
        Format::Go116 => (16..=17).contains(&minor),
        Format::Go118 => (18..=19).contains(&minor),
        Format::Go120 => minor >= 20,
    };
    if !fits {
        return Err(TargetError::GoVersionUnknown {
            path,
            detail: format!(
                "runtime.buildVersion says {} but the function table has the {:?} layout",
                build.raw_version,
                table.format()
            ),
        });
    }
    Ok((build, source))
}
