//! esbuild from the npm registry: a Go program shipped without build info, read by
//! `offline::no_buildinfo` and traced by `kernel::no_buildinfo`.

use std::path::PathBuf;
use std::process::Command;

use test_support::Scratch;

/// The esbuild release of the npm registry the tests use (go1.26.5, stripped, no build info).
pub(crate) const ESBUILD: &str = "0.28.2";

/// esbuild from the npm registry, unpacked under target/thirdparty (fetched once with npm).
pub(crate) fn esbuild(npm_arch: &str) -> PathBuf {
    let dir = test_support::repo_path("target/thirdparty");
    let bin = dir.join(format!("esbuild-{npm_arch}-{ESBUILD}"));
    if bin.exists() {
        return bin;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let scratch = Scratch::new("esbuild-fetch");
    let pkg = format!("@esbuild/linux-{npm_arch}@{ESBUILD}");
    let out = Command::new("npm")
        .args(["pack", "--silent", &pkg, "--pack-destination"])
        .arg(scratch.path())
        .output()
        .unwrap_or_else(|e| panic!("cannot run npm to fetch {pkg} ({e}); run `cargo xtask setup`"));
    assert!(
        out.status.success(),
        "cannot fetch {pkg} from the npm registry (this test needs it; it never skips): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tgz = scratch.join(String::from_utf8_lossy(&out.stdout).trim());
    let st = Command::new("tar")
        .arg("xzf")
        .arg(&tgz)
        .arg("-C")
        .arg(scratch.path())
        .status()
        .unwrap();
    assert!(st.success(), "tar xzf {}", tgz.display());
    // Rename into place: a concurrent test never sees half a file.
    let tmp = dir.join(format!(".esbuild-{npm_arch}-{}", std::process::id()));
    std::fs::copy(scratch.join("package/bin/esbuild"), &tmp).unwrap();
    std::fs::rename(&tmp, &bin).unwrap();
    bin
}
