//! Per-binary settings the daemon writes before attaching: where the runtime keeps the fields
//! the probes read. Keyed in the eBPF `CONFIG` map by a binary id that every uprobe link of that
//! binary carries as its attach cookie, so processes built with different Go versions can be
//! traced at once and a new process of a traced binary needs no entry of its own.

/// Executables traced at once (distinct files, not processes).
pub const MAX_BINARIES: u32 = 1024;

/// `ProcConfig::map_impl` values.
pub const MAP_IMPL_CLASSIC: u32 = 0;
pub const MAP_IMPL_SWISS: u32 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcConfig {
    pub map_impl: u32,
    /// `runtime.g.goid`.
    pub g_goid: u32,
    /// Number of elements: classic `hmap.count`, Swiss `Map.used`.
    pub map_count: u32,
    /// Classic `hmap.oldbuckets` (non-nil while growing); unused on Swiss.
    pub map_oldbuckets: u32,
    /// Iterator's current key pointer (`hiter.key` / `Iter.key`); nil once exhausted.
    pub iter_key: u32,
    /// Iterator's map (`hiter.h` / `Iter.m`).
    pub iter_map: u32,
    /// Iterator's map type pointer (`hiter.t` / `Iter.typ`), named in findings.
    pub iter_typ: u32,
    /// Key type pointer in the map type descriptor.
    pub maptype_key: u32,
    /// `abi.Type.Size_`, `.TFlag` and `.Kind_` in a type descriptor.
    pub type_size: u32,
    pub type_tflag: u32,
    pub type_kind: u32,
    /// The byte that says a write is in progress (classic `hmap.flags`, Swiss `Map.writing`)
    /// and the bits of it that do (classic `hashWriting` = 4; Swiss: any).
    pub map_writing: u32,
    pub writing_mask: u32,
    /// The binary these settings belong to (its links' cookie; never 0). `CONFIG` is an array
    /// indexed by `binary % MAX_BINARIES`: a probe whose cookie differs (a binary being let go
    /// while another took its slot) finds no settings, as for a binary never configured.
    pub binary: u32,
    /// Sentinel mode, not escalated: a range's end compares the map's header with its start
    /// (`map_count` and the growth field) instead of reporting recorded writes.
    pub sentinel: u32,
    /// The header field that only grows when the map grows (classic `hmap.B`, Swiss
    /// `Map.dirLen`), and its size in bytes (1 or 8; read little-endian).
    pub map_growth: u32,
    pub growth_size: u32,
}

/// `ProcConfig::sentinel` values.
pub const SENTINEL_OFF: u32 = 0;
pub const SENTINEL_ON: u32 = 1;

/// `CONFIG`'s slot for binary `id`.
pub const fn config_slot(id: u32) -> u32 {
    id % MAX_BINARIES
}
