//! Files of packages on the npm registry the tests use (real third-party artifacts: esbuild's
//! Go binary, the published SARIF schema), fetched once with `npm pack` into target/thirdparty.
//! A test that needs one and cannot fetch it fails saying so: it never skips.

use std::path::PathBuf;
use std::process::Command;

use test_support::Scratch;

/// `inner` (a path inside the package's tarball, e.g. `package/bin/esbuild`) of npm package
/// `pkg` (`name@version`), kept as target/thirdparty/`name`.
pub(crate) fn npm_file(pkg: &str, inner: &str, name: &str) -> PathBuf {
    let dir = test_support::repo_path("target/thirdparty");
    let out = dir.join(name);
    if out.exists() {
        return out;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let scratch = Scratch::new("npm-fetch");
    let packed = Command::new("npm")
        .args(["pack", "--silent", pkg, "--pack-destination"])
        .arg(scratch.path())
        .output()
        .unwrap_or_else(|e| panic!("cannot run npm to fetch {pkg} ({e}); run `cargo xtask setup`"));
    assert!(
        packed.status.success(),
        "cannot fetch {pkg} from the npm registry (this test needs it; it never skips): {}",
        String::from_utf8_lossy(&packed.stderr)
    );
    let tgz = scratch.join(String::from_utf8_lossy(&packed.stdout).trim());
    let st = Command::new("tar")
        .arg("xzf")
        .arg(&tgz)
        .arg("-C")
        .arg(scratch.path())
        .arg(inner)
        .status()
        .unwrap();
    assert!(st.success(), "tar xzf {} {inner}", tgz.display());
    // Rename into place: a concurrent test never sees half a file.
    let tmp = dir.join(format!(".{name}-{}", std::process::id()));
    std::fs::copy(scratch.join(inner), &tmp).unwrap();
    std::fs::rename(&tmp, &out).unwrap();
    out
}
