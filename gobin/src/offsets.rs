//! Where the Go runtime keeps the fields the probes read, per Go version and map implementation.
//!
//! The built-in table was measured from the DWARF of real builds of every supported release
//! (docs/go-offsets-summary.txt) and is re-checked against DWARF by the fixture tests.
//! Binaries with DWARF use their own; stripped ones use the table.
//!
//! The fields every map implementation shares (the goroutine id, the type descriptors) are here;
//! each implementation's own, with its built-in layout and DWARF names, are in
//! `runtime::classic` and `runtime::swiss`.

use serde::Serialize;

use crate::MapImpl;
use crate::buildinfo::GoVersion;
use crate::dwarf::Layouts;
use crate::runtime::{classic, swiss};

pub use crate::runtime::classic::ClassicOffsets;
pub use crate::runtime::swiss::SwissOffsets;

/// Field offsets (bytes) the eBPF programs need.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuntimeOffsets {
    /// `runtime.g.goid`: the goroutine id, read through the g register.
    pub g_goid: u64,
    /// Offset of the key type pointer in the map type descriptor (`maptype.key` / `MapType.Key`).
    pub maptype_key: u64,
    /// Offset of the size in a type descriptor (`_type.size` / `abi.Type.Size_`).
    pub type_size: u64,
    /// Type flags (`tflag`): `TFlagRegularMemory` says a key compares as plain bytes.
    pub type_tflag: u64,
    /// Kind byte (`kind` / `Kind_`), to recognise string keys.
    pub type_kind: u64,
    /// Name offset (`str` / `Str`) in a type descriptor: names the map type in findings.
    pub type_str: u64,
    /// Elem type pointer in the map type descriptor, for the sizes when a name is missing.
    pub maptype_elem: u64,
    #[serde(flatten)]
    pub map: MapOffsets,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum MapOffsets {
    Classic(ClassicOffsets),
    Swiss(SwissOffsets),
}

impl RuntimeOffsets {
    /// The iterator's key pointer (`hiter.key` / `Iter.key`), nil once a range has ended.
    pub fn iter_key(&self) -> u64 {
        match &self.map {
            MapOffsets::Classic(c) => c.hiter_key,
            MapOffsets::Swiss(s) => s.iter_key,
        }
    }
}

/// Go releases whose layouts were measured; the table answers exactly for these.
pub const KNOWN_MINORS: [u32; 8] = [19, 21, 22, 23, 24, 25, 26, 27];

/// How a layout was chosen for a version, and what the user should be told about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableChoice {
    /// The known release whose layout is used.
    pub minor: u32,
    pub warning: Option<String>,
}

/// Picks the known layout for `version`: exact, else the nearest older known release (or the
/// oldest known one for releases older than every measured one). Callers reject Go < 1.17.
pub fn table_choice(version: GoVersion) -> TableChoice {
    let newest = *KNOWN_MINORS.last().unwrap_or(&27);
    if version.major == 1 && KNOWN_MINORS.contains(&version.minor) {
        return TableChoice {
            minor: version.minor,
            warning: None,
        };
    }
    let (minor, why) = if version.major > 1 || version.minor > newest {
        (
            newest,
            "is newer than every Go release map-trace was measured on",
        )
    } else {
        let older = KNOWN_MINORS.iter().rev().find(|&&m| m < version.minor);
        match older {
            Some(&m) => (m, "was not measured"),
            None => (
                KNOWN_MINORS[0],
                "is older than every Go release map-trace was measured on",
            ),
        }
    };
    TableChoice {
        minor,
        warning: Some(format!(
            "{version} {why}; assuming the runtime layout of go1.{minor} (a binary with DWARF would be read exactly)"
        )),
    }
}

/// The built-in layout of the known release `go1.<minor>`.
pub fn builtin(minor: u32, map_impl: MapImpl) -> RuntimeOffsets {
    // syscallbp was added to g before goid in 1.23; gobuf.ret was removed in 1.25.
    let g_goid = match minor {
        23 | 24 => 160,
        _ => 152,
    };
    let map = match map_impl {
        MapImpl::Classic => MapOffsets::Classic(classic::BUILTIN),
        MapImpl::Swiss => MapOffsets::Swiss(swiss::BUILTIN),
    };
    RuntimeOffsets {
        g_goid,
        maptype_key: 48,
        type_size: 0,
        type_tflag: 20,
        type_kind: 23,
        type_str: 40,
        maptype_elem: 56,
        map,
    }
}

/// Struct names whose layouts `from_dwarf` needs (across all versions' spellings).
pub const DWARF_STRUCTS: &[&str] = &[
    "runtime.g",
    "runtime.hmap",
    "runtime.hiter",
    "internal/runtime/maps.Map",
    "internal/runtime/maps.Iter",
    "internal/runtime/maps.table",
    "runtime.maptype",
    "internal/abi.MapType",
    "internal/abi.OldMapType",
    "internal/abi.SwissMapType",
    "runtime._type",
    "internal/abi.Type",
];

/// Builds the offsets from DWARF layouts; names the first missing field on failure.
pub fn from_dwarf(layouts: &Layouts, map_impl: MapImpl) -> Result<RuntimeOffsets, String> {
    let field = |structs: &[&str], fields: &[&str]| -> Result<u64, String> {
        structs
            .iter()
            .filter_map(|s| layouts.get(*s))
            .find_map(|members| fields.iter().find_map(|f| members.get(*f).copied()))
            .ok_or_else(|| format!("DWARF has no {}.{}", structs[0], fields[0]))
    };
    // The map type descriptor changed names: runtime.maptype (≤1.20), abi.MapType (classic 1.21–1.23,
    // Swiss 1.26+), abi.OldMapType / abi.SwissMapType (1.24–1.25). Prefer the one of this map_impl.
    let maptypes = match map_impl {
        MapImpl::Classic => classic::MAPTYPES,
        MapImpl::Swiss => swiss::MAPTYPES,
    };
    let types = &["internal/abi.Type", "runtime._type"][..];
    let map = match map_impl {
        MapImpl::Classic => MapOffsets::Classic(classic::from_dwarf(field)?),
        MapImpl::Swiss => MapOffsets::Swiss(swiss::from_dwarf(field)?),
    };
    Ok(RuntimeOffsets {
        g_goid: field(&["runtime.g"], &["goid"])?,
        maptype_key: field(maptypes, &["Key", "key"])?,
        type_size: field(types, &["Size_", "size"])?,
        type_tflag: field(types, &["TFlag", "tflag"])?,
        type_kind: field(types, &["Kind_", "kind"])?,
        type_str: field(types, &["Str", "str"])?,
        maptype_elem: field(maptypes, &["Elem", "elem"])?,
        map,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_versions_have_no_warning() {
        for minor in KNOWN_MINORS {
            let c = table_choice(GoVersion::new(1, minor, 3));
            assert_eq!(
                c,
                TableChoice {
                    minor,
                    warning: None
                }
            );
        }
    }

    #[test]
    fn unknown_versions_use_nearest_known_layout_with_a_warning() {
        let c = table_choice(GoVersion::new(1, 20, 14));
        assert_eq!(c.minor, 19);
        assert!(c.warning.unwrap().contains("was not measured"));
        let c = table_choice(GoVersion::new(1, 31, 0));
        assert_eq!(c.minor, 27);
        assert!(c.warning.unwrap().contains("newer"));
        let c = table_choice(GoVersion::new(1, 18, 10));
        assert_eq!(c.minor, 19);
        assert!(c.warning.unwrap().contains("older"));
    }

    #[test]
    fn dwarf_structs_name_every_struct_an_implementation_reads() {
        // Each implementation names its structs itself; the DWARF reader only collects those
        // listed here, so a name missing from the list would make DWARF look incomplete.
        let asked = std::cell::RefCell::new(Vec::new());
        let field = |structs: &[&str], _: &[&str]| -> Result<u64, String> {
            asked
                .borrow_mut()
                .extend(structs.iter().map(|s| s.to_string()));
            Ok(0)
        };
        classic::from_dwarf(field).unwrap();
        swiss::from_dwarf(field).unwrap();
        let maptypes = classic::MAPTYPES.iter().chain(swiss::MAPTYPES);
        let mut names = asked.into_inner();
        names.extend(maptypes.map(|s| s.to_string()));
        for name in names {
            assert!(DWARF_STRUCTS.contains(&name.as_str()), "{name}");
        }
    }

    #[test]
    fn goid_moves_in_123_and_back_in_125() {
        let goid = |minor| builtin(minor, MapImpl::Classic).g_goid;
        assert_eq!(
            [goid(19), goid(22), goid(23), goid(24), goid(25), goid(27)],
            [152, 152, 160, 160, 152, 152]
        );
    }
}
