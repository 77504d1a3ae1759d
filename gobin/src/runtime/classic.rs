//! The classic map implementation: `runtime.hmap` buckets with incremental evacuation (Go ≤ 1.23,
//! and 1.24/1.25 built with `GOEXPERIMENT=noswissmap`).

use map_trace_common::probe::Role;
use map_trace_common::program::Program;
use serde::Serialize;

use super::{ProbeSpec, catalog_len, catalog_of, spec};

/// What to probe on a classic build, role by role (see [`super::catalog`]).
pub const PROBES: &[ProbeSpec] = &ALL;
const ALL: [ProbeSpec; catalog_len(ITERATION, WRITES)] = catalog_of(ITERATION, WRITES);

/// Where ranges start and step.
const ITERATION: &[ProbeSpec] = &[
    spec(
        Role::IterStart,
        Program::IterStartClassic,
        &["runtime.mapiterinit"],
        &["reflect.mapiterinit"],
    ),
    spec(
        Role::IterStep,
        Program::IterStep,
        &["runtime.mapiternext"],
        &["reflect.mapiternext"],
    ),
];

/// Deletes, clears and growth (the assigns are shared: [`super::catalog_of`]).
const WRITES: &[ProbeSpec] = &[
    spec(
        Role::Delete,
        Program::DeleteClassic,
        &["runtime.mapdelete"],
        &["reflect.mapdelete"],
    ),
    spec(
        Role::Delete,
        Program::DeleteFast32,
        &["runtime.mapdelete_fast32"],
        &[],
    ),
    spec(
        Role::Delete,
        Program::DeleteFast64,
        &["runtime.mapdelete_fast64"],
        &[],
    ),
    spec(
        Role::Delete,
        Program::DeleteFaststr,
        &["runtime.mapdelete_faststr"],
        &["reflect.mapdelete_faststr"],
    ),
    spec(
        Role::Clear,
        Program::ClearClassic,
        &["runtime.mapclear"],
        &["reflect.mapclear"],
    ),
    // Growth state itself is read from hmap.oldbuckets at each write; this marks its start.
    spec(Role::Grow, Program::GrowClassic, &["runtime.hashGrow"], &[]),
];

/// `runtime.hmap` and `runtime.hiter`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClassicOffsets {
    pub hmap_count: u64,
    pub hmap_flags: u64,
    /// `log2` of the bucket count (a byte): it only grows, when the map grows (sentinel mode).
    pub hmap_b: u64,
    /// Non-nil while the map is growing (evacuation in progress).
    pub hmap_oldbuckets: u64,
    pub hiter_key: u64,
    pub hiter_t: u64,
    pub hiter_h: u64,
}

/// The layout of every measured release (docs/go-offsets-summary.txt): it never changed.
pub const BUILTIN: ClassicOffsets = ClassicOffsets {
    hmap_count: 0,
    hmap_flags: 8,
    hmap_b: 9,
    hmap_oldbuckets: 24,
    hiter_key: 0,
    hiter_t: 16,
    hiter_h: 24,
};

/// DWARF names of the map type descriptor, preferred first: `internal/abi.OldMapType` (1.24 and
/// 1.25, where `MapType` is the Swiss one), `runtime.maptype` (≤ 1.20), `internal/abi.MapType`
/// (1.21–1.23).
pub const MAPTYPES: &[&str] = &[
    "internal/abi.OldMapType",
    "runtime.maptype",
    "internal/abi.MapType",
];

/// Reads the layout from DWARF through `field(structs, fields)`, which gives the offset of the
/// first of `fields` in the first of `structs` that DWARF describes, or names what is missing.
pub fn from_dwarf(
    field: impl Fn(&[&str], &[&str]) -> Result<u64, String>,
) -> Result<ClassicOffsets, String> {
    let (h, it) = (&["runtime.hmap"][..], &["runtime.hiter"][..]);
    Ok(ClassicOffsets {
        hmap_count: field(h, &["count"])?,
        hmap_flags: field(h, &["flags"])?,
        hmap_b: field(h, &["B"])?,
        hmap_oldbuckets: field(h, &["oldbuckets"])?,
        hiter_key: field(it, &["key"])?,
        hiter_t: field(it, &["t"])?,
        hiter_h: field(it, &["h"])?,
    })
}
