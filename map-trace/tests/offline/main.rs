//! Every integration test that needs neither root nor a kernel feature, in one binary: the CLI
//! and config as users meet them, bad input files, the binary parsers and symbolizer against
//! Go's own tools and DWARF, map type names, and the systemd unit file. One module per former
//! test file; `cargo test -p map-trace --test offline` runs them all, as any user.
//!
//! The tests that load eBPF, attach uprobes, run the daemon against live processes or need root
//! stay one binary each (tests/*.rs). Cargo runs test binaries one after another, and those are
//! timing-sensitive tracing tests (deploy once failed under extra load): in one binary they
//! would run concurrently with each other.

mod bad_inputs;
mod config_cli;
mod fuzz_parsers;
mod inspect_cli;
mod inspect_matrix;
mod symbolize_matrix;
mod systemd_unit;
mod type_names;

use std::process::Command;

use test_support::{Fixture, MapTrace};

/// The binary under test, for test-support's helpers that run it.
const MAP_TRACE: MapTrace = MapTrace::new(env!("CARGO_BIN_EXE_map-trace"));

/// Runs a Go tool of the fixture's own toolchain and returns its stdout.
fn go_tool(f: &Fixture, args: &[&str]) -> String {
    let out = Command::new(&f.go)
        .arg("tool")
        .args(args)
        .env("GOROOT", &f.goroot)
        .env("GOTOOLCHAIN", "local")
        .output()
        .unwrap_or_else(|e| panic!("running {} tool {args:?}: {e}", f.go.display()));
    assert!(
        out.status.success(),
        "{} tool {args:?} failed: {}",
        f.go.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
