//! The Swiss table map implementation of `internal/runtime/maps` (Go 1.24+ by default, the only
//! one from 1.26).

use map_trace_common::probe::Role;
use map_trace_common::program::Program;
use serde::Serialize;

use super::{ProbeSpec, catalog_len, catalog_of, spec};

/// What to probe on a Swiss build, role by role (see [`super::catalog`]).
pub const PROBES: &[ProbeSpec] = &ALL;
const ALL: [ProbeSpec; catalog_len(ITERATION, WRITES)] = catalog_of(ITERATION, WRITES);

/// Where ranges start and step.
const ITERATION: &[ProbeSpec] = &[
    spec(
        Role::IterStart,
        Program::IterStartSwiss,
        &["internal/runtime/maps.(*Iter).Init"],
        &[
            "runtime.mapIterStart",
            "reflect.mapIterStart",
            "runtime.mapiterinit",
            "reflect.mapiterinit",
        ],
    ),
    spec(
        Role::IterStep,
        Program::IterStep,
        &["internal/runtime/maps.(*Iter).Next"],
        &[
            "runtime.mapIterNext",
            "reflect.mapIterNext",
            "runtime.mapiternext",
            "reflect.mapiternext",
        ],
    ),
];

/// Deletes, clears and growth (the assigns are shared: [`super::catalog_of`]).
const WRITES: &[ProbeSpec] = &[
    spec(
        Role::Delete,
        Program::DeleteSwiss,
        &["internal/runtime/maps.(*Map).Delete"],
        &[
            "runtime.mapdelete",
            "runtime.mapdelete_fast32",
            "runtime.mapdelete_fast64",
            "runtime.mapdelete_faststr",
            "reflect.mapdelete",
            "reflect.mapdelete_faststr",
        ],
    ),
    spec(
        Role::Clear,
        Program::ClearSwiss,
        &["internal/runtime/maps.(*Map).Clear"],
        &["runtime.mapclear", "reflect.mapclear"],
    ),
    spec(
        Role::Grow,
        Program::GrowSwissMap,
        &["internal/runtime/maps.(*Map).growToTable"],
        &[],
    ),
    spec(
        Role::Grow,
        Program::GrowSwissTable,
        &["internal/runtime/maps.(*table).grow"],
        &[],
    ),
    spec(
        Role::Grow,
        Program::GrowSwissTable,
        &["internal/runtime/maps.(*table).split"],
        &[],
    ),
];

/// `internal/runtime/maps.Map`, `.Iter` and `.table`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SwissOffsets {
    pub map_used: u64,
    pub map_dir_len: u64,
    pub map_global_depth: u64,
    pub map_writing: u64,
    pub map_clear_seq: u64,
    pub iter_key: u64,
    pub iter_typ: u64,
    pub iter_m: u64,
    pub iter_global_depth: u64,
    pub iter_tab: u64,
    pub table_index: u64,
}

/// The layout of every measured release (docs/go-offsets-summary.txt): it never changed.
pub const BUILTIN: SwissOffsets = SwissOffsets {
    map_used: 0,
    map_dir_len: 24,
    map_global_depth: 32,
    map_writing: 34,
    map_clear_seq: 40,
    iter_key: 0,
    iter_typ: 16,
    iter_m: 24,
    iter_global_depth: 56,
    iter_tab: 72,
    table_index: 8,
};

/// DWARF names of the map type descriptor, preferred first: `internal/abi.SwissMapType` (1.24
/// and 1.25), `internal/abi.MapType` (1.26+).
pub const MAPTYPES: &[&str] = &["internal/abi.SwissMapType", "internal/abi.MapType"];

/// Reads the layout from DWARF through `field(structs, fields)`, which gives the offset of the
/// first of `fields` in the first of `structs` that DWARF describes, or names what is missing.
pub fn from_dwarf(
    field: impl Fn(&[&str], &[&str]) -> Result<u64, String>,
) -> Result<SwissOffsets, String> {
    let m = &["internal/runtime/maps.Map"][..];
    let it = &["internal/runtime/maps.Iter"][..];
    Ok(SwissOffsets {
        map_used: field(m, &["used"])?,
        map_dir_len: field(m, &["dirLen"])?,
        map_global_depth: field(m, &["globalDepth"])?,
        map_writing: field(m, &["writing"])?,
        map_clear_seq: field(m, &["clearSeq"])?,
        iter_key: field(it, &["key"])?,
        iter_typ: field(it, &["typ"])?,
        iter_m: field(it, &["m"])?,
        iter_global_depth: field(it, &["globalDepth"])?,
        iter_tab: field(it, &["tab"])?,
        table_index: field(&["internal/runtime/maps.table"], &["index"])?,
    })
}
