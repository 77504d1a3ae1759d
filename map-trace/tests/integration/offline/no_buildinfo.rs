//! Go binaries without build info (`.go.buildinfo` removed, as esbuild's npm packages ship):
//! the version comes from `runtime.buildVersion`, and everything else is what the intact
//! binary gives. Oracles: the same fixture with its build info (every version, both arches,
//! stripped and PIE), binutils' objcopy doing the removal, and esbuild from the npm registry.
//! (esbuild traced while it bundles: `kernel::no_buildinfo`.)

use std::path::Path;
use std::process::Command;

use map_trace::plan::GoTarget;
use test_support::{Fixture, Scratch, check_all};

use crate::MAP_TRACE;
use crate::esbuild::esbuild;

/// `src` copied to `dst` with `.go.buildinfo` removed by the objcopy of its architecture.
fn without_build_info(src: &Path, arch: &str, dst: &Path) {
    let objcopy = match arch {
        "aarch64" | "arm64" => "aarch64-linux-gnu-objcopy",
        _ => "objcopy",
    };
    let out = Command::new(objcopy)
        .args(["--remove-section", ".go.buildinfo"])
        .arg(src)
        .arg(dst)
        .output()
        .unwrap_or_else(|e| panic!("{objcopy}: {e}; run `cargo xtask setup` (binutils)"));
    assert!(
        out.status.success(),
        "{objcopy} {}: {}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every scenarios fixture of the matrix but the cgo ones (externally linked: the same code).
fn fixtures() -> Vec<Fixture> {
    test_support::fixtures_of("scenarios")
        .into_iter()
        .filter(|f| !f.external_link)
        .collect()
}

#[test]
fn without_build_info_every_fixture_reads_as_with_it() {
    let fixtures = fixtures();
    let dir = Scratch::new("nobuildinfo");
    let failures = check_all(&fixtures, |f| {
        let copy = dir.join(&f.name);
        without_build_info(&f.path, &f.arch, &copy);
        let with = GoTarget::analyze(&f.path).unwrap_or_else(|e| panic!("{}: {e}", f.name));
        let without = match GoTarget::analyze(&copy) {
            Ok(t) => t,
            Err(e) => return vec![format!("{}: without build info: {e}", f.name)],
        };
        let mut bad = Vec::new();
        let mut same = |what: &str, a: String, b: String| {
            if a != b {
                bad.push(format!(
                    "{}: {what}: {a} with build info, {b} without",
                    f.name
                ));
            }
        };
        same(
            "version",
            with.build.raw_version.clone(),
            without.build.raw_version.clone(),
        );
        same(
            "map implementation",
            with.map_impl.name().into(),
            without.map_impl.name().into(),
        );
        same(
            "offsets",
            format!("{:?}", with.offsets),
            format!("{:?}", without.offsets),
        );
        let probes = |t: &GoTarget| -> Vec<String> {
            t.probes
                .iter()
                .map(|p| format!("{}@{:#x}", p.role.name(), p.file_offset + p.attach.offset))
                .collect()
        };
        same(
            "probes",
            probes(&with).join(" "),
            probes(&without).join(" "),
        );
        let source = format!("{:?}", without.version_source);
        let want = if f.stripped {
            "BuildVersionScan"
        } else {
            "BuildVersionSymbol"
        };
        same("version source", want.into(), source);
        bad
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn inspect_says_where_the_version_came_from() {
    let f = fixtures()
        .into_iter()
        .find(|f| f.stripped && f.arch == "x86_64")
        .expect("a stripped amd64 fixture");
    let dir = Scratch::new("nobuildinfo-inspect");
    let copy = dir.join("app");
    without_build_info(&f.path, &f.arch, &copy);
    let o = MAP_TRACE.run(&["inspect", copy.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        out.contains("version from: runtime.buildVersion (by its string header"),
        "{out}"
    );
    let o = MAP_TRACE.run(&["inspect", "--json", f.path.to_str().unwrap()]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["version_source"], "build_info");
}

/// A Go program whose build info is gone and whose `runtime.buildVersion` header no longer
/// points at its string cannot be pinned: refused with exit 17, saying so. An ELF file without
/// Go's function table is still "not a Go program" (exit 5).
#[test]
fn unpinnable_versions_are_refused_and_non_go_stays_non_go() {
    let f = fixtures()
        .into_iter()
        .find(|f| f.stripped && f.arch == "x86_64")
        .expect("a stripped amd64 fixture");
    let dir = Scratch::new("nobuildinfo-unpinned");
    let copy = dir.join("app");
    without_build_info(&f.path, &f.arch, &copy);
    let mut bytes = std::fs::read(&copy).unwrap();
    // Every `go1.` text loses its dot: no version string is left for a header to point at.
    let mut i = 0;
    while let Some(p) = bytes[i..].windows(4).position(|w| w == b"go1.") {
        bytes[i + p + 3] = b'_';
        i += p + 4;
    }
    std::fs::write(&copy, bytes).unwrap();
    let o = MAP_TRACE.run(&["inspect", copy.to_str().unwrap()]);
    test_support::assert_fails(&o, 17, "Go version cannot be pinned");

    let o = MAP_TRACE.run(&["inspect", "/bin/true"]);
    test_support::assert_fails(&o, 5, "not a Go program");
}

#[test]
fn esbuild_from_npm_is_read_on_both_arches() {
    for (npm_arch, arch) in [("x64", "x86_64"), ("arm64", "aarch64")] {
        let bin = esbuild(npm_arch);
        // As shipped: `go version` cannot read it.
        let t = GoTarget::analyze(&bin).unwrap_or_else(|e| panic!("esbuild {npm_arch}: {e}"));
        assert_eq!(t.elf.arch.name(), arch);
        assert_eq!(t.build.raw_version, "go1.26.5", "esbuild {npm_arch}");
        assert_eq!(t.map_impl.name(), "swiss");
        assert_eq!(format!("{:?}", t.version_source), "BuildVersionScan");
        for role in ["iter_start", "iter_step", "assign", "delete", "fatal"] {
            assert!(
                t.probes.iter().any(|p| p.role.name() == role),
                "esbuild {npm_arch}: no {role} probe"
            );
        }
    }
}
