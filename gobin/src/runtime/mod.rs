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

/// The functions to probe for a map implementation, in the order they are planned and reported.
pub fn catalog(map_impl: MapImpl) -> &'static [ProbeSpec] {
    match map_impl {
        MapImpl::Classic => classic::PROBES,
        MapImpl::Swiss => swiss::PROBES,
    }
}
