//! map-trace's integration tests, in one binary of two parts:
//!
//! - `offline`: everything that needs neither root nor a kernel feature (the CLI and config as
//!   users meet them, bad inputs, the binary parsers and symbolizer against Go's own tools and
//!   DWARF, map type names, the systemd unit file, binaries without build info). Any user runs
//!   them alone with `cargo test -p map-trace --test integration offline::` (or plain
//!   `cargo test offline::`).
//! - `kernel`: the tests that load eBPF, attach uprobes, run the daemon against live processes
//!   or drop privileges. Each calls `test_support::kernel_test` first, which fails it loudly
//!   without root (never skips: `sudo cargo xtask test` runs everything, as CI does), and which
//!   is a gate: the tests of one module (one group, a former test file) run in parallel with
//!   each other, never with a kernel test of another module, as when each file was a binary of
//!   its own. Some are timing-sensitive (deploy once failed under extra load).
//!
//! Offline tests do not take the gate.

mod esbuild;
mod kernel;
mod npm;
mod offline;
mod sarif_check;

use test_support::MapTrace;

/// The binary under test, for test-support's helpers that run it.
pub(crate) const MAP_TRACE: MapTrace = MapTrace::new(env!("CARGO_BIN_EXE_map-trace"));
