//! The tests that need neither root nor a kernel feature: the CLI and config as users meet them,
//! bad input files, the binary parsers and symbolizer against Go's own tools and DWARF, map
//! type names, the systemd unit file, Go binaries without build info, the metrics address. One
//! module per former test file (metrics_addr: the no-root tests of the former metrics_endpoint);
//! `cargo test -p map-trace --test integration offline::` runs them all, as any user. They do
//! not take the kernel tests' gate (see main.rs).

mod bad_inputs;
mod build_id;
mod config_cli;
mod fuzz_parsers;
mod inspect_cli;
mod inspect_matrix;
mod kubernetes;
mod metrics_addr;
mod no_buildinfo;
mod packages;
mod sarif;
mod symbolize_matrix;
mod systemd_unit;
mod type_names;

use std::process::Command;

use test_support::Fixture;

/// Runs a Go tool of the fixture's own toolchain and returns its stdout.
pub(super) fn go_tool(f: &Fixture, args: &[&str]) -> String {
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
