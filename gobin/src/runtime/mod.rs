//! The Go runtime's map implementations as the probes see them: for each (`classic`, `swiss`),
//! the runtime functions each probe role sits on, and where the runtime keeps the fields the
//! probes read (the built-in layout, and the DWARF names to read it from).
//!
//! Each role gets the fewest functions that every path reaches (docs/go-runtime-maps.md
//! §1.3): on Swiss builds reflect bypasses `runtime.mapIterStart`/`mapIterNext`/`mapdelete`/
//! `mapclear`, so the probes sit on the `internal/runtime/maps` functions they all end in. Each
//! map operation then costs one trap, never two.

pub mod classic;
pub mod swiss;

use map_trace_common::probe::Role;
use map_trace_common::program::Program;

use crate::MapImpl;

/// A function to probe, and the entry points that reach it (reported, not probed).
#[derive(Clone, Copy)]
pub struct ProbeSpec {
    pub role: Role,
    /// The eBPF program that reads this function's arguments (map-trace-ebpf/src/main.rs).
    pub program: Program,
    /// Alternative names of the same function, first match wins.
    pub symbols: &'static [&'static str],
    pub via: &'static [&'static str],
}

const fn spec(
    role: Role,
    program: Program,
    symbols: &'static [&'static str],
    via: &'static [&'static str],
) -> ProbeSpec {
    ProbeSpec {
        role,
        program,
        symbols,
        via,
    }
}

/// Every map check of Go 1.19–1.27 dies through `runtime.fatal`; Swiss builds reach it through
/// `internal/runtime/maps.fatal`, `sync` through `sync.fatal` (one-call shims). Never hit while
/// nothing crashes, so its cost at the entry (no stack-check prologue: it is nosplit) is moot.
const FATAL: ProbeSpec = spec(
    Role::Fatal,
    Program::FatalError,
    &["runtime.fatal"],
    &["internal/runtime/maps.fatal", "sync.fatal"],
);

/// The assigns, the same in both implementations: Swiss builds keep the `runtime.mapassign*`
/// entry points (each takes the type, the map and the key, and inserts or updates in place).
const ASSIGNS: &[ProbeSpec] = &[
    spec(
        Role::Assign,
        Program::Assign,
        &["runtime.mapassign"],
        &["reflect.mapassign0", "reflect.mapassign"],
    ),
    spec(
        Role::Assign,
        Program::Assign,
        &["runtime.mapassign_fast32"],
        &[],
    ),
    spec(
        Role::Assign,
        Program::Assign,
        &["runtime.mapassign_fast64"],
        &[],
    ),
    spec(
        Role::Assign,
        Program::Assign,
        &["runtime.mapassign_fast64ptr"],
        &[],
    ),
    spec(
        Role::Assign,
        Program::Assign,
        &["runtime.mapassign_faststr"],
        &["reflect.mapassign_faststr0", "reflect.mapassign_faststr"],
    ),
];

/// The length of [`catalog_of`]`(iteration, writes)`.
const fn catalog_len(iteration: &[ProbeSpec], writes: &[ProbeSpec]) -> usize {
    iteration.len() + ASSIGNS.len() + writes.len() + 1
}

/// One implementation's catalog: its iteration probes, the shared assigns, its other writes and
/// growth, then the fatal-error probe (`N`: [`catalog_len`]).
const fn catalog_of<const N: usize>(
    iteration: &[ProbeSpec],
    writes: &[ProbeSpec],
) -> [ProbeSpec; N] {
    let parts: [&[ProbeSpec]; 4] = [iteration, ASSIGNS, writes, &[FATAL]];
    let mut out = [FATAL; N];
    let (mut n, mut p) = (0, 0);
    while p < parts.len() {
        let mut i = 0;
        while i < parts[p].len() {
            out[n] = parts[p][i];
            n += 1;
            i += 1;
        }
        p += 1;
    }
    assert!(n == N, "catalog length mismatch");
    out
}

/// The functions to probe for a map implementation, in the order they are planned and reported.
pub fn catalog(map_impl: MapImpl) -> &'static [ProbeSpec] {
    match map_impl {
        MapImpl::Classic => classic::PROBES,
        MapImpl::Swiss => swiss::PROBES,
    }
}
