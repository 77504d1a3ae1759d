//! Builds map-trace-ebpf for the bpf target with aya-build (the aya-template way) so that
//! `cargo build` alone produces a daemon with its eBPF object embedded.

include!("../pins.rs");

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    // Say what is missing in one line instead of letting cargo fail deep inside the eBPF build.
    which::which("bpf-linker").map_err(|_| {
        anyhow!("bpf-linker is not installed; run `cargo xtask setup` (pinned: bpf-linker {BPF_LINKER_VERSION}, LLVM {EBPF_LLVM_MAJOR})")
    })?;
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .iter()
        .find(|p| p.name.as_str() == "map-trace-ebpf")
        .context("map-trace-ebpf is not in the workspace")?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .context("map-trace-ebpf manifest has no parent")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "map-trace-ebpf",
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(EBPF_TOOLCHAIN),
    )
}
