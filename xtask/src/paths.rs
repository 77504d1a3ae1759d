//! Where the workspace and its build outputs are.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The workspace root. `cargo xtask` (cargo run) sets CARGO_MANIFEST_DIR at run time; prefer it
/// over the compile-time value, which goes stale when a checkout is copied along with target/.
pub fn repo_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .filter(|d| d.join("src/main.rs").is_file() && d.ends_with("xtask"))
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
        manifest_dir
            .parent()
            .expect("xtask lives one level below the workspace root")
            .to_path_buf()
    })
}

/// Cargo's target dir, honouring `CARGO_TARGET_DIR` like cargo does.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => repo_root().join(dir),
        None => repo_root().join("target"),
    }
}

pub fn go_programs_dir() -> PathBuf {
    repo_root().join("testdata/go")
}
