//! esbuild from the npm registry: a Go program shipped without build info, read by
//! `offline::no_buildinfo` and traced by `kernel::no_buildinfo`.

use std::path::PathBuf;

/// The esbuild release of the npm registry the tests use (go1.26.5, stripped, no build info).
pub(crate) const ESBUILD: &str = "0.28.2";

/// esbuild from the npm registry, unpacked under target/thirdparty (fetched once with npm).
pub(crate) fn esbuild(npm_arch: &str) -> PathBuf {
    crate::npm::npm_file(
        &format!("@esbuild/linux-{npm_arch}@{ESBUILD}"),
        "package/bin/esbuild",
        &format!("esbuild-{npm_arch}-{ESBUILD}"),
    )
}
