//! What map-trace needs from the running kernel, probed at start-up so an old or trimmed
//! kernel gets one message naming every missing feature, instead of a verifier or attach error
//! about one program. Kernel BTF is not among them: the probes use no CO-RE relocations.

use std::path::Path;

use aya::maps::MapType;
use aya::programs::ProgramType;
use aya::sys::{BpfHelper, is_helper_supported, is_map_supported, is_program_supported};

/// A kernel feature the probes need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    Uprobes,
    RingBuffer,
    ProbeReadUser,
    AttachCookie,
    RawTracepoint,
}

pub const ALL: [Feature; 5] = [
    Feature::Uprobes,
    Feature::RingBuffer,
    Feature::ProbeReadUser,
    Feature::AttachCookie,
    Feature::RawTracepoint,
];

impl Feature {
    pub const fn name(self) -> &'static str {
        match self {
            Feature::Uprobes => "uprobe perf events (CONFIG_UPROBE_EVENTS)",
            Feature::RingBuffer => "BPF ring buffers",
            Feature::ProbeReadUser => "bpf_probe_read_user",
            Feature::AttachCookie => "uprobe attach cookies (bpf_get_attach_cookie)",
            Feature::RawTracepoint => "raw tracepoints",
        }
    }

    /// Where it arrived upstream.
    pub const fn since(self) -> &'static str {
        match self {
            Feature::Uprobes => "Linux 4.17 for BPF on them",
            Feature::RingBuffer => "Linux 5.8",
            Feature::ProbeReadUser => "Linux 5.5",
            Feature::AttachCookie => "Linux 5.15",
            Feature::RawTracepoint => "Linux 4.17",
        }
    }

    /// Needed only with `--exe` (the exec notices).
    pub const fn exe_only(self) -> bool {
        matches!(self, Feature::RawTracepoint)
    }
}

/// The features `present` says are missing, of those a session with or without `--exe` needs.
pub fn missing(present: impl Fn(Feature) -> bool, with_exe: bool) -> Vec<Feature> {
    ALL.into_iter()
        .filter(|f| with_exe || !f.exe_only())
        .filter(|&f| !present(f))
        .collect()
}

/// The error for a kernel that lacks `missing` (not empty).
pub fn describe(missing: &[Feature], release: &str) -> String {
    let list: Vec<String> = missing
        .iter()
        .map(|f| format!("{} ({})", f.name(), f.since()))
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
        Feature::Uprobes => Path::new("/sys/bus/event_source/devices/uprobe/type").exists(),
        Feature::RingBuffer => is_map_supported(MapType::RingBuf).unwrap_or(true),
        Feature::ProbeReadUser => {
            is_helper_supported(uprobe, BpfHelper::BPF_FUNC_probe_read_user).unwrap_or(true)
        }
        Feature::AttachCookie => {
            is_helper_supported(uprobe, BpfHelper::BPF_FUNC_get_attach_cookie).unwrap_or(true)
        }
        Feature::RawTracepoint => is_program_supported(ProgramType::RawTracePoint).unwrap_or(true),
    }
}

/// The oldest kernel whose verifier takes the fatal-error program: the aarch64 6.1 VM's
/// exhausted its budget on it (minutes under emulation, then a refusal), 6.12's and 6.18's
/// accept it.
pub const FATAL_SINCE: (u32, u32) = (6, 12);

/// Whether Go's map fatal errors can be reported here: the fatal-error program needs
/// `bpf_loop` (Linux 5.17) and a verifier that takes it (`FATAL_SINCE`). Without it
/// `fatal_map_error` is not reported; nothing else changes.
pub fn fatal_supported() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        let has_loop =
            is_helper_supported(ProgramType::KProbe, BpfHelper::BPF_FUNC_loop).unwrap_or(true);
        has_loop && release_at_least(&release(), FATAL_SINCE)
    })
}

/// Whether a release string ("6.1.0-57-arm64") is at least `(major, minor)`; an unreadable one
/// counts as new enough, so the real load reports the real reason.
pub fn release_at_least(release: &str, (major, minor): (u32, u32)) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => true,
    }
}

/// The start-up warning when Go's map fatal errors cannot be reported, or None.
pub fn fatal_warning(supported: bool, release: &str) -> Option<String> {
    (!supported).then(|| {
        format!(
            "Go's map fatal errors (fatal_map_error) are reported on Linux {}.{} and later (the fatal-error probe needs bpf_loop and a verifier that takes it); this kernel is {release}: every other finding is reported",
            FATAL_SINCE.0, FATAL_SINCE.1
        )
    })
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
    fn release_strings_compare_by_major_and_minor() {
        assert!(!release_at_least("6.1.0-57-arm64", (6, 12)));
        assert!(release_at_least("6.12.117+deb12-arm64", (6, 12)));
        assert!(release_at_least("6.18.0", (6, 12)));
        assert!(!release_at_least("5.15.0-150-generic", (6, 12)));
        assert!(release_at_least("7.0", (6, 12)));
        assert!(release_at_least("unknown release", (6, 12)));
    }

    #[test]
    fn every_missing_feature_is_named_with_its_kernel_version() {
        let gone = missing(
            |f| f != Feature::RingBuffer && f != Feature::AttachCookie,
            true,
        );
        assert_eq!(gone, [Feature::RingBuffer, Feature::AttachCookie]);
        let msg = describe(&gone, "5.4.0-150-generic");
        assert!(msg.contains("5.4.0-150-generic"), "{msg}");
        assert!(msg.contains("BPF ring buffers (Linux 5.8)"), "{msg}");
        assert!(msg.contains("bpf_get_attach_cookie) (Linux 5.15)"), "{msg}");
    }

    #[test]
    fn raw_tracepoints_matter_only_with_exe() {
        let raw = Feature::RawTracepoint;
        assert!(missing(|f| f != raw, false).is_empty());
        assert_eq!(missing(|f| f != raw, true), [raw]);
    }

    #[test]
    fn this_kernel_has_everything() {
        // The test machine and CI run 6.x kernels with BPF: a probe that says otherwise is
        // wrong, not the kernel.
        let gone = missing(present, true);
        assert!(gone.is_empty(), "{}", describe(&gone, &release()));
        assert!(fatal_supported(), "6.18 runs the fatal-error probe");
        assert_eq!(fatal_warning(true, "6.18.0"), None);
        let w = fatal_warning(false, "6.1.0-57-arm64").unwrap();
        assert!(
            w.contains("6.1.0-57-arm64") && w.contains("fatal_map_error"),
            "{w}"
        );
    }
}
