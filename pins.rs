// The one place that pins the toolchain which builds the eBPF object. Included (`include!`) by
// map-trace/build.rs and by xtask, so a bump here changes both the build and `cargo xtask setup`.
// bpf-linker must link with the same LLVM major as this rustc, or it rejects the bitcode.

/// rustup toolchain that compiles map-trace-ebpf (needs rust-src for `-Z build-std=core`).
pub const EBPF_TOOLCHAIN: &str = "nightly";
/// LLVM major of that toolchain; `cargo xtask setup` refuses a mismatch.
pub const EBPF_LLVM_MAJOR: u32 = 22;
/// bpf-linker release built against that LLVM.
pub const BPF_LINKER_VERSION: &str = "0.13.0";
