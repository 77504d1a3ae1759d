//! Load the eBPF object, hand it one binary's settings, and attach or detach the planned probes.

use std::path::Path;

use aya::Ebpf;
use aya::maps::{Array, MapData};
use aya::programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope};
use aya::programs::{RawTracePoint, UProbe};
use gobin::offsets::MapOffsets;
use map_trace_common::config::{
    MAP_IMPL_CLASSIC, MAP_IMPL_SWISS, ProcConfig, SENTINEL_OFF, SENTINEL_ON, config_slot,
};
use map_trace_common::event::FOLD_REPEATS;
use map_trace_common::probe::Role;
use map_trace_common::program::{Program, map};

use super::detach::{Closable, Detaching};
use super::multi::{MultiError, MultiPrograms};
use crate::plan::IterationMode;
use crate::plan::{GoTarget, ProbeTarget};

/// What can go wrong while loading and attaching, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(
        "loading the eBPF object failed: {0}; map-trace needs root (or CAP_BPF and CAP_PERFMON, and CAP_SYS_ADMIN for perf-event uprobes before Linux 6.10) and a kernel with BPF ring buffers (5.8+)"
    )]
    Load(#[source] Box<aya::EbpfError>),
    #[error("the kernel rejected eBPF program {program}: {source}")]
    Verify {
        program: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("attaching {program} to {symbol} at offset {offset:#x} of {path}: {}", causes(.source))]
    Attach {
        program: &'static str,
        symbol: String,
        offset: u64,
        path: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("attaching to the kernel's {name} tracepoint (needed by --exe): {source}")]
    Tracepoint {
        name: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error(
        "the kernel refused a uprobe on {path} (permission denied): creating uprobes needs CAP_SYS_ADMIN on current kernels (Linux 6.16+ and stable kernels since July 2025, CVE-2025-38466), so run as root or add CAP_SYS_ADMIN"
    )]
    AttachDenied { path: String },
    #[error(
        "the kernel refused to load or link the uprobe programs for {path} (permission denied): uprobe_multi links need CAP_BPF and CAP_PERFMON, so run as root or add them"
    )]
    MultiDenied { path: String },
    #[error("attaching {program} ({sites} sites) to {path} with a uprobe_multi link: {source}")]
    AttachMulti {
        program: &'static str,
        sites: usize,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the kernel rejected eBPF program {program} (for uprobe_multi links): {reason}")]
    VerifyMulti {
        program: &'static str,
        reason: String,
    },
    #[error(
        "MAP_TRACE_UPROBE_LINKS=multi, but this kernel ({release}) has no uprobe_multi links with a process filter (Linux 6.10+)"
    )]
    NoMulti { release: String },
    #[error("eBPF object has no {0}: map-trace was built inconsistently")]
    Missing(&'static str),
    #[error("eBPF map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
}

/// The per-binary settings the probes read, from the target's runtime offsets.
pub fn proc_config(t: &GoTarget, binary: u32, sentinel: bool) -> ProcConfig {
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
    // Classic writers toggle `hashWriting` (4) in `hmap.flags`; Swiss ones `Map.writing`
    // (0 or 1) as a whole (docs/go-runtime-maps.md §3.1, §3.3, §6).
    let (map_writing, writing_mask) = match &o.map {
        MapOffsets::Classic(c) => (c.hmap_flags, HASH_WRITING),
        MapOffsets::Swiss(s) => (s.map_writing, 0xff),
    };
    // Sentinel mode's growth field: classic `hmap.B` (a byte), Swiss `Map.dirLen` (an int):
    // each only ever grows, and only when an insert grows the map (docs/go-runtime-maps.md).
    let (map_growth, growth_size) = match &o.map {
        MapOffsets::Classic(c) => (c.hmap_b, 1),
        MapOffsets::Swiss(s) => (s.map_dir_len, 8),
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
        map_writing: n(map_writing),
        writing_mask: writing_mask as u32,
        binary,
        sentinel: if sentinel { SENTINEL_ON } else { SENTINEL_OFF },
        map_growth: n(map_growth),
        growth_size,
    }
}

/// Writes the output settings the probes read (`OUTPUT[0]`): whether to fold repeats.
pub fn set_output(ebpf: &mut Ebpf, fold_repeats: bool) -> Result<(), AttachError> {
    let flags = if fold_repeats { FOLD_REPEATS } else { 0 };
    set_first(ebpf, map::OUTPUT, flags)
}

/// Writes the daemon's clock (`CLOCK_MONOTONIC`, ns) where range steps read it: they date
/// their entries by it (for the sweep) instead of reading a clock per step.
pub fn set_clock(ebpf: &mut Ebpf, monotonic_ns: u64) -> Result<(), AttachError> {
    set_first(ebpf, map::CLOCK, monotonic_ns)
}

/// Sets entry 0 of the one-entry array `name` (a setting the programs read).
fn set_first<T: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
    value: T,
) -> Result<(), AttachError> {
    let err = |e: aya::maps::MapError| AttachError::Map {
        map: name,
        source: Box::new(e),
    };
    let m = ebpf.map_mut(name).ok_or(AttachError::Missing(name))?;
    Array::<_, T>::try_from(m)
        .map_err(err)?
        .set(0, value, 0)
        .map_err(err)
}

/// Classic `hashWriting`: "a goroutine is writing to the map" (runtime/map.go).
const HASH_WRITING: u64 = 4;

/// The tracepoint program that reports execs; loaded only when `--exe` needs it.
pub const EXEC_PROGRAM: &str = Program::ExecNotify.name();
/// The empty uprobe the benchmark uses as the floor; never loaded by the daemon.
pub const BENCH_EMPTY_PROGRAM: &str = Program::BenchEmpty.name();

/// The loaded eBPF object: aya's, and where the kernel has them the same programs loaded for
/// uprobe_multi links (`multi`), which then carry every uprobe.
pub struct Bpf {
    ebpf: Ebpf,
    multi: Option<MultiPrograms>,
}

impl std::ops::Deref for Bpf {
    type Target = Ebpf;
    fn deref(&self) -> &Ebpf {
        &self.ebpf
    }
}

impl std::ops::DerefMut for Bpf {
    fn deref_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }
}

impl Bpf {
    /// aya's object alone; the programs loaded for uprobe_multi links stay loaded while links
    /// made with them are open.
    pub fn into_inner(self) -> Ebpf {
        self.ebpf
    }

    /// What carries the uprobes, for the start-up line.
    pub fn link_kind(&self) -> &'static str {
        match self.multi {
            Some(_) => "uprobe_multi links",
            None => "perf-event uprobes",
        }
    }
}

/// Which uprobe links to use, from `MAP_TRACE_UPROBE_LINKS`: `multi` (required), `perf`, or
/// unset (multi where the kernel has them). Forcing one is for tests and the bench, and a way
/// out should a kernel's uprobe_multi misbehave.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Links {
    Multi,
    Perf,
    Auto,
}

fn wanted_links() -> Links {
    match std::env::var("MAP_TRACE_UPROBE_LINKS").as_deref() {
        Ok("multi") => Links::Multi,
        Ok("perf") => Links::Perf,
        _ => Links::Auto,
    }
}

/// Loads the eBPF object: its maps are created, its programs are verified only when first
/// attached (`attach_binary`), so a target pays for the programs its map implementation uses —
/// about half of them — and start-up stays short.
pub fn load() -> Result<Bpf, AttachError> {
    // Not `Ebpf::load`, which parses the kernel's BTF twice (its loader's default, then again
    // for `.btf`): once is all it uses, and each parse is tens of milliseconds of start-up.
    let ebpf = aya::EbpfLoader::new()
        .load(crate::ebpf::object())
        .map_err(|e| AttachError::Load(Box::new(e)))?;
    let wanted = wanted_links();
    if wanted == Links::Perf {
        return Ok(Bpf { ebpf, multi: None });
    }
    if !super::multi::supported() {
        return match wanted {
            Links::Multi => Err(AttachError::NoMulti {
                release: super::kernel_features::release(),
            }),
            _ => Ok(Bpf { ebpf, multi: None }),
        };
    }
    let multi = match MultiPrograms::new(&ebpf, crate::ebpf::object()) {
        Ok(m) => Some(m),
        Err(reason) if wanted == Links::Multi => {
            return Err(AttachError::VerifyMulti {
                program: "(object)",
                reason,
            });
        }
        // The kernel has the links but the object could not be prepared for them (its BTF
        // refused, say): perf-event uprobes still work.
        Err(reason) => {
            eprintln!(
                "map-trace: warning: not using uprobe_multi links ({reason}); using perf-event uprobes"
            );
            None
        }
    };
    Ok(Bpf { ebpf, multi })
}

/// Loads and attaches the exec tracepoint; its notices arrive in the `EXECS` ring (`events`).
pub fn watch_execs(ebpf: &mut Ebpf) -> Result<(), AttachError> {
    let verify = |source| AttachError::Verify {
        program: EXEC_PROGRAM.to_string(),
        source: Box::new(source),
    };
    let p: &mut RawTracePoint = ebpf
        .program_mut(EXEC_PROGRAM)
        .ok_or(AttachError::Missing(EXEC_PROGRAM))?
        .try_into()
        .map_err(verify)?;
    p.load().map_err(verify)?;
    p.attach("sched_process_exec")
        .map_err(|source| AttachError::Tracepoint {
            name: "sched_process_exec",
            source: Box::new(source),
        })?;
    Ok(())
}

/// `map-trace run`: the cgroup whose execs the exec tracepoint stops and announces.
pub fn set_run_cgroup(ebpf: &mut Ebpf, id: u64) -> Result<(), AttachError> {
    set_first(ebpf, map::RUN_CGROUP, id)
}

/// One attached link: which program, and what to close — one perf-event uprobe, or a
/// uprobe_multi link holding every site of that program in the binary.
pub struct Link {
    program: Program,
    kind: LinkKind,
}

enum LinkKind {
    Perf(UProbeLinkId),
    Multi(std::os::fd::OwnedFd),
}

/// Writes a binary's settings in its slot, under its id, which its links carry as their cookie.
/// `sentinel`: its ranges' ends compare the map header (sentinel mode, not escalated).
pub fn write_config(
    ebpf: &mut Ebpf,
    t: &GoTarget,
    binary: u32,
    sentinel: bool,
) -> Result<(), AttachError> {
    config_table(ebpf)?
        .set(config_slot(binary), proc_config(t, binary, sentinel), 0)
        .map_err(|source| AttachError::Map {
            map: map::CONFIG,
            source: Box::new(source),
        })
}

/// Attaches every planned probe to the file at `exe`, each link carrying `binary` as its
/// cookie; `scope` says which processes trap. On failure nothing of this call stays attached.
pub fn attach_binary(
    bpf: &mut Bpf,
    t: &GoTarget,
    binary: u32,
    exe: &Path,
    scope: UProbeScope,
    mode: IterationMode,
) -> Result<Vec<Link>, AttachError> {
    let mut links = Vec::with_capacity(t.probes.len());
    // A kernel that cannot run the fatal-error program goes on without that probe (said once
    // at start-up).
    let fatal = super::kernel_features::fatal_supported();
    let probes: Vec<&ProbeTarget> = t
        .probes_for(mode)
        .filter(|p| fatal || p.role != Role::Fatal)
        .collect();
    let result = match bpf.multi.as_mut() {
        Some(multi) => attach_multi(multi, &probes, binary, exe, scope, &mut links),
        None => probes.iter().try_for_each(|probe| {
            attach_one(bpf, probe, binary, exe, scope).map(|l| links.push(l))
        }),
    };
    match result {
        Ok(()) => Ok(links),
        Err(e) => {
            detach(bpf, links).wait();
            Err(e)
        }
    }
}

/// The cookie of a probe's sites: the low half names the binary; an end site's probe finds
/// the iterator in the register named by the high half.
fn cookie(probe: &ProbeTarget, binary: u32) -> u64 {
    u64::from(binary) | u64::from(probe.reg.unwrap_or(0)) << 32
}

/// One uprobe_multi link per program, holding every site of that program.
fn attach_multi(
    multi: &mut MultiPrograms,
    probes: &[&ProbeTarget],
    binary: u32,
    exe: &Path,
    scope: UProbeScope,
    links: &mut Vec<Link>,
) -> Result<(), AttachError> {
    let pid = match scope {
        UProbeScope::AllProcesses => 0,
        UProbeScope::OneProcess(pid) => pid.get(),
        _ => 0,
    };
    let mut programs: Vec<Program> = probes.iter().map(|p| p.program).collect();
    programs.sort_by_key(|p| p.name());
    programs.dedup();
    for program in programs {
        let sites: Vec<(u64, u64)> = probes
            .iter()
            .filter(|p| p.program == program)
            .map(|p| (p.uprobe_offset(), cookie(p, binary)))
            .collect();
        let fd = multi
            .attach(program.name(), exe, &sites, pid)
            .map_err(|e| match e {
                MultiError::Load(reason) => AttachError::VerifyMulti {
                    program: program.name(),
                    reason,
                },
                MultiError::LoadDenied => AttachError::MultiDenied {
                    path: exe.display().to_string(),
                },
                MultiError::Link(source)
                    if source.kind() == std::io::ErrorKind::PermissionDenied =>
                {
                    AttachError::MultiDenied {
                        path: exe.display().to_string(),
                    }
                }
                MultiError::Link(source) => AttachError::AttachMulti {
                    program: program.name(),
                    sites: sites.len(),
                    path: exe.display().to_string(),
                    source,
                },
            })?;
        links.push(Link {
            program,
            kind: LinkKind::Multi(fd),
        });
    }
    Ok(())
}

fn attach_one(
    ebpf: &mut Ebpf,
    probe: &ProbeTarget,
    binary: u32,
    exe: &Path,
    scope: UProbeScope,
) -> Result<Link, AttachError> {
    let verify = |source| AttachError::Verify {
        program: probe.program.name().to_string(),
        source: Box::new(source),
    };
    let p: &mut UProbe = ebpf
        .program_mut(probe.program.name())
        .ok_or(AttachError::Missing(probe.program.name()))?
        .try_into()
        .map_err(verify)?;
    if p.fd().is_err() {
        p.load().map_err(verify)?;
    }
    let point = UProbeAttachPoint {
        location: UProbeAttachLocation::AbsoluteOffset(probe.uprobe_offset()),
        cookie: Some(cookie(probe, binary)),
    };
    let id = p
        .attach(point, exe, scope)
        .map_err(|source| match permission_denied(&source) {
            true => AttachError::AttachDenied {
                path: exe.display().to_string(),
            },
            false => AttachError::Attach {
                program: probe.program.name(),
                symbol: probe.function.name.clone(),
                offset: probe.uprobe_offset(),
                path: exe.display().to_string(),
                source: Box::new(source),
            },
        })?;
    Ok(Link {
        program: probe.program,
        kind: LinkKind::Perf(id),
    })
}

/// An error and its causes on one line ("`perf_event_open` failed: No such process"): aya's
/// own message alone does not say why the kernel refused.
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// Whether an attach failed for lack of privilege (EACCES/EPERM somewhere in its causes).
fn permission_denied(e: &aya::programs::ProgramError) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::PermissionDenied
        {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Detaches links; a perf link whose program is gone was already detached with it.
pub fn detach(ebpf: &mut Ebpf, links: Vec<Link>) -> Detaching {
    let owned = links
        .into_iter()
        .filter_map(|link| match link.kind {
            LinkKind::Multi(fd) => Some(Closable::Multi(fd)),
            LinkKind::Perf(id) => {
                let p = ebpf.program_mut(link.program.name())?;
                let l = <&mut UProbe>::try_from(p).ok()?.take_link(id).ok()?;
                Some(Closable::Perf(l))
            }
        })
        .collect();
    super::detach::close(owned)
}

/// Clears a binary's settings once nothing of it is attached (unless its slot went to
/// another binary meanwhile).
pub fn forget_binary(ebpf: &mut Ebpf, binary: u32) {
    if let Ok(mut table) = config_table(ebpf) {
        let slot = config_slot(binary);
        if table.get(&slot, 0).is_ok_and(|c| c.binary == binary) {
            let _ = table.set(slot, ProcConfig::default(), 0);
        }
    }
}

fn config_table(ebpf: &mut Ebpf) -> Result<Array<&mut MapData, ProcConfig>, AttachError> {
    let map = ebpf
        .map_mut(map::CONFIG)
        .ok_or(AttachError::Missing(map::CONFIG))?;
    Array::try_from(map).map_err(|source| AttachError::Map {
        map: map::CONFIG,
        source: Box::new(source),
    })
}
