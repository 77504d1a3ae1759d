//! The eBPF object built from map-trace-ebpf by build.rs, embedded in the daemon.

/// The compiled eBPF object (an ELF for the bpf target), aligned as aya requires.
pub fn object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/map-trace"))
}
