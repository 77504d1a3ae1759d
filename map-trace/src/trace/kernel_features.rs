//! What map-trace needs from the running kernel, probed at start-up so an old or trimmed
//! kernel gets one message naming every missing feature, instead of a verifier or attach error
//! about one program. Kernel BTF is not among them: the probes use no CO-RE relocations.

use std::path::Path;

use aya::maps::MapType;
use aya::programs::ProgramType;
use aya::sys::{BpfHelper, is_helper_supported, is_map_supported, is_program_supported};

/// One kernel feature, and where it arrived upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Feature {
    pub name: &'static str,
    pub since: &'static str,
    /// Needed only with `--exe`.
    pub exe_only: bool,
}

pub const UPROBES: Feature = Feature {
    name: "uprobe perf events (CONFIG_UPROBE_EVENTS)",
    since: "Linux 4.17 for BPF on them",
    exe_only: false,
};
pub const RING_BUFFER: Feature = Feature {
    name: "BPF ring buffers",
    since: "Linux 5.8",
    exe_only: false,
};
pub const PROBE_READ_USER: Feature = Feature {
    name: "bpf_probe_read_user",
    since: "Linux 5.5",
    exe_only: false,
};
pub const ATTACH_COOKIE: Feature = Feature {
    name: "uprobe attach cookies (bpf_get_attach_cookie)",
    since: "Linux 5.15",
    exe_only: false,
};
pub const RAW_TRACEPOINT: Feature = Feature {
    name: "raw tracepoints",
    since: "Linux 4.17",
    exe_only: true,
};

pub const ALL: [Feature; 5] = [
    UPROBES,
    RING_BUFFER,
    PROBE_READ_USER,
    ATTACH_COOKIE,
    RAW_TRACEPOINT,
];

/// The features `present` says are missing, of those a session with or without `--exe` needs.
pub fn missing(present: impl Fn(Feature) -> bool, with_exe: bool) -> Vec<Feature> {
    ALL.into_iter()
        .filter(|f| with_exe || !f.exe_only)
        .filter(|&f| !present(f))
        .collect()
}

/// The error for a kernel that lacks `missing` (not empty).
pub fn describe(missing: &[Feature], release: &str) -> String {
    let list: Vec<String> = missing
        .iter()
        .map(|f| format!("{} ({})", f.name, f.since))
        .collect();
    format!(
        "this kernel ({release}) lacks what map-trace needs: {}; map-trace supports Linux 5.15 and later with BPF and uprobes enabled (tested on 6.1, 6.12 and 6.18)",
        list.join(", ")
    )
}

/// Probes the running kernel for `f`. A probe that cannot run (e.g. no permission) counts as
/// present, so the real operation reports the real reason.
pub fn present(f: Feature) -> bool {
    let uprobe = ProgramType::KProbe;
    match f {
        f if f == UPROBES => Path::new("/sys/bus/event_source/devices/uprobe/type").exists(),
        f if f == RING_BUFFER => is_map_supported(MapType::RingBuf).unwrap_or(true),
        f if f == PROBE_READ_USER => {
            is_helper_supported(uprobe, BpfHelper::BPF_FUNC_probe_read_user).unwrap_or(true)
        }
        f if f == ATTACH_COOKIE => {
            is_helper_supported(uprobe, BpfHelper::BPF_FUNC_get_attach_cookie).unwrap_or(true)
        }
        f if f == RAW_TRACEPOINT => {
            is_program_supported(ProgramType::RawTracePoint).unwrap_or(true)
        }
        _ => true,
    }
}

/// The kernel release, for messages.
pub fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown release".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_missing_feature_is_named_with_its_kernel_version() {
        let gone = missing(|f| f != RING_BUFFER && f != ATTACH_COOKIE, true);
        assert_eq!(gone, [RING_BUFFER, ATTACH_COOKIE]);
        let msg = describe(&gone, "5.4.0-150-generic");
        assert!(msg.contains("5.4.0-150-generic"), "{msg}");
        assert!(msg.contains("BPF ring buffers (Linux 5.8)"), "{msg}");
        assert!(msg.contains("bpf_get_attach_cookie) (Linux 5.15)"), "{msg}");
    }

    #[test]
    fn raw_tracepoints_matter_only_with_exe() {
        assert!(missing(|f| f != RAW_TRACEPOINT, false).is_empty());
        assert_eq!(missing(|f| f != RAW_TRACEPOINT, true), [RAW_TRACEPOINT]);
    }

    #[test]
    fn this_kernel_has_everything() {
        // The test machine and CI run 6.x kernels with BPF: a probe that says otherwise is
        // wrong, not the kernel.
        let gone = missing(present, true);
        assert!(gone.is_empty(), "{}", describe(&gone, &release()));
    }
}
