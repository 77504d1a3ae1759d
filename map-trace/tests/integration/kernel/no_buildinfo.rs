//! Go binaries without build info under the live tracer: esbuild, as the npm registry ships it
//! (no `.go.buildinfo`), traced while it bundles. What is read from such binaries, without
//! root: `offline::no_buildinfo`.

use std::process::{Command, Stdio};
use std::time::Duration;

use test_support::daemon::Daemon;
use test_support::{Scratch, kernel_test};

use crate::MAP_TRACE;
use crate::esbuild::esbuild;

/// This module's group at the kernel tests' gate.
const GROUP: &str = "no_buildinfo";

/// The real thing: esbuild bundles a small program while map-trace traces it. It must do its
/// job as it does untraced, and map-trace must see its map calls (esbuild is correct code, so
/// no finding is expected; hits show the probes worked).
#[test]
fn esbuild_is_traced_while_it_bundles() {
    let _gate = kernel_test(GROUP, "attaches uprobes to esbuild");
    let bin = esbuild("x64");
    let dir = Scratch::new("esbuild-run");
    let exe = dir.join("esbuild");
    std::fs::copy(&bin, &exe).unwrap();
    std::fs::write(
        dir.join("a.js"),
        "import {b} from './b.js'\nconst m = new Map([[1, b]])\nconsole.log(m.get(1))\n",
    )
    .unwrap();
    std::fs::write(dir.join("b.js"), "export const b = 'bundled'\n").unwrap();
    let mut d = Daemon::start(
        MAP_TRACE,
        &[
            "--exe",
            exe.to_str().unwrap(),
            "--format",
            "json",
            "--every-occurrence",
        ],
        true,
    );
    d.wait_line("probes attached", Duration::from_secs(60));
    let child = Command::new(&exe)
        .args(["--bundle", "a.js", "--outfile=out.js"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let js = std::fs::read_to_string(dir.join("out.js")).unwrap();
    assert!(js.contains("bundled"), "{js}");
    // No wait for "pid N exited": esbuild bundles in a few milliseconds, and a process of a
    // watched file that is gone before the daemon reads it is counted (attach failures,
    // process_gone), not said. The probes are on the file, so its map calls are counted
    // either way, and its findings would be reported (`terminate` drains them).
    let series = "map_trace_probe_hits_total{role=\"assign\"}";
    let m = d.wait_metric(series, Duration::from_secs(10), |v| v > 0.0);
    assert!(m[series] > 0.0, "{m:?}");
    let (code, stdout, _) = d.terminate();
    assert_eq!(code, Some(0));
    assert!(
        stdout.trim().is_empty(),
        "findings in correct code: {stdout}"
    );
}
