//! Events from the kernel: findings and Go's fatal errors out of their ring buffers, decoded
//! and handed on (`sink`), the kernel's counters, and exec notices (`execs`).

pub mod execs;
pub mod repeats;
pub mod sink;

use aya::maps::{MapData, RingBuf};

use crate::attach::AttachError;
use crate::error::TraceError;

/// A ring buffer of the eBPF object, taken from it.
pub fn ring(ebpf: &mut aya::Ebpf, name: &'static str) -> Result<RingBuf<MapData>, TraceError> {
    let map = ebpf.take_map(name).ok_or(AttachError::Missing(name))?;
    RingBuf::try_from(map).map_err(|e| TraceError::Other(format!("ring buffer {name}: {e}")))
}
