//! Load the eBPF object, hand it one process's settings, and attach the planned probes.

use std::path::Path;

use aya::Ebpf;
use aya::maps::HashMap as BpfHashMap;
use aya::programs::UProbe;
use aya::programs::uprobe::UProbeScope;
use map_trace_common::config::{MAP_IMPL_CLASSIC, MAP_IMPL_SWISS, ProcConfig};

use crate::target::analysis::GoTarget;
use crate::target::offsets::MapOffsets;

/// What can go wrong while loading and attaching, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(
        "loading the eBPF object failed: {0}; map-trace needs root (or CAP_BPF and CAP_PERFMON) and a kernel with BPF ring buffers (5.8+)"
    )]
    Load(#[source] Box<aya::EbpfError>),
    #[error("the kernel rejected eBPF program {program}: {source}")]
    Verify {
        program: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("attaching {program} to {symbol} at offset {offset:#x} of {path}: {source}")]
    Attach {
        program: &'static str,
        symbol: String,
        offset: u64,
        path: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("eBPF object has no {0}: map-trace was built inconsistently")]
    Missing(&'static str),
    #[error("writing settings for pid {pid}: {source}")]
    Config {
        pid: u32,
        #[source]
        source: Box<aya::maps::MapError>,
    },
}

/// The per-process settings the probes read, from the target's runtime offsets.
pub fn proc_config(t: &GoTarget) -> ProcConfig {
    let o = &t.offsets;
    let (map_impl, map_count, map_oldbuckets, iter_key, iter_map, iter_typ) = match &o.map {
        MapOffsets::Classic(c) => (
            MAP_IMPL_CLASSIC,
            c.hmap_count,
            c.hmap_oldbuckets,
            c.hiter_key,
            c.hiter_h,
            c.hiter_t,
        ),
        MapOffsets::Swiss(s) => (
            MAP_IMPL_SWISS,
            s.map_used,
            0,
            s.iter_key,
            s.iter_m,
            s.iter_typ,
        ),
    };
    // Offsets are struct field offsets well below 4 GiB; the eBPF side uses u32.
    let n = |v: u64| v as u32;
    ProcConfig {
        map_impl,
        g_goid: n(o.g_goid),
        map_count: n(map_count),
        map_oldbuckets: n(map_oldbuckets),
        iter_key: n(iter_key),
        iter_map: n(iter_map),
        iter_typ: n(iter_typ),
        maptype_key: n(o.maptype_key),
        type_size: n(o.type_size),
        type_tflag: n(o.type_tflag),
        type_kind: n(o.type_kind),
        _pad: 0,
    }
}

/// Loads the eBPF object and verifies every program once; attaching is per process.
pub fn load() -> Result<Ebpf, AttachError> {
    let mut ebpf = Ebpf::load(crate::ebpf::object()).map_err(|e| AttachError::Load(Box::new(e)))?;
    for (name, program) in ebpf.programs_mut() {
        let verify = |source| AttachError::Verify {
            program: name.to_string(),
            source: Box::new(source),
        };
        let p: &mut UProbe = program.try_into().map_err(verify)?;
        p.load().map_err(verify)?;
    }
    Ok(ebpf)
}

/// Writes the process's settings and attaches every planned probe to it; returns the number
/// of probes attached.
pub fn attach_process(
    ebpf: &mut Ebpf,
    t: &GoTarget,
    pid: u32,
    exe: &Path,
) -> Result<usize, AttachError> {
    let mut config: BpfHashMap<_, u32, ProcConfig> = BpfHashMap::try_from(
        ebpf.map_mut("CONFIG")
            .ok_or(AttachError::Missing("CONFIG"))?,
    )
    .map_err(|source| AttachError::Config {
        pid,
        source: Box::new(source),
    })?;
    config
        .insert(pid, proc_config(t), 0)
        .map_err(|source| AttachError::Config {
            pid,
            source: Box::new(source),
        })?;
    let scope = match std::num::NonZeroU32::new(pid) {
        Some(p) => UProbeScope::OneProcess(p),
        None => UProbeScope::AllProcesses,
    };
    for probe in &t.probes {
        let p: &mut UProbe = ebpf
            .program_mut(probe.program)
            .ok_or(AttachError::Missing(probe.program))?
            .try_into()
            .map_err(|source| AttachError::Verify {
                program: probe.program.to_string(),
                source: Box::new(source),
            })?;
        p.attach(probe.uprobe_offset(), exe, scope)
            .map_err(|source| AttachError::Attach {
                program: probe.program,
                symbol: probe.function.name.clone(),
                offset: probe.uprobe_offset(),
                path: exe.display().to_string(),
                source: Box::new(source),
            })?;
    }
    Ok(t.probes.len())
}
