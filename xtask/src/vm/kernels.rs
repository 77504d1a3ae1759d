//! The VM matrix: which kernels, for which arch, booted how, and where `cargo xtask setup`
//! puts them (outside the repo, never as the host's kernel).

use std::path::PathBuf;

use clap::ValueEnum;

/// Kernels and busybox live here, one directory per VM.
pub const VM_ROOT: &str = "/opt/map-trace/vm";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum VmArch {
    #[value(name = "aarch64")]
    Aarch64,
    #[value(name = "x86_64")]
    X86_64,
}

impl VmArch {
    /// As `uname -m` and the fixture manifest's `arch` say it.
    pub fn name(self) -> &'static str {
        match self {
            VmArch::Aarch64 => "aarch64",
            VmArch::X86_64 => "x86_64",
        }
    }

    /// Debian's (and Go's) name.
    pub fn debian(self) -> &'static str {
        match self {
            VmArch::Aarch64 => "arm64",
            VmArch::X86_64 => "amd64",
        }
    }

    /// musl, so the daemon runs in a guest that has nothing but busybox.
    pub fn rust_target(self) -> &'static str {
        match self {
            VmArch::Aarch64 => "aarch64-unknown-linux-musl",
            VmArch::X86_64 => "x86_64-unknown-linux-musl",
        }
    }

    pub fn qemu(self) -> &'static str {
        match self {
            VmArch::Aarch64 => "qemu-system-aarch64",
            VmArch::X86_64 => "qemu-system-x86_64",
        }
    }

    /// Machine and CPU. TCG only: this machine's /dev/kvm opens but the CPU has no vmx/svm.
    /// On arm64, `pauth-impdef=on` boots about 3× faster than emulating the architected
    /// pointer-authentication algorithm.
    pub fn machine_args(self) -> &'static [&'static str] {
        match self {
            VmArch::Aarch64 => &["-M", "virt", "-cpu", "max,pauth-impdef=on"],
            VmArch::X86_64 => &["-M", "q35", "-cpu", "max"],
        }
    }

    /// How qemu emulates the CPUs. x86_64 guests get one host thread for both vCPUs
    /// (`thread=single`): with a thread per vCPU (MTTCG), a vCPU sometimes executes a stale
    /// translation of the page where the kernel copies a probed instruction to step it out of
    /// line, so a traced thread runs another probe's instruction (on x86 nothing in the guest
    /// tells the emulator that code changed; our reading, not confirmed in qemu). Measured on the x86_64 6.1 guest with plain tracefs
    /// uprobes, no map-trace at all: 6 of 18 runs of a Go program crashed (SIGILL in the
    /// middle of a probed instruction, or a return to a heap address after a stack adjustment
    /// of another function's size), against 0 of 30 with `thread=single`. arm64 guests keep
    /// MTTCG (twice as fast; the kernel flushes the instruction cache there), and no such crash
    /// has been seen on them since probes left the frame-setup store (README, VM tests).
    pub fn accel(self) -> &'static str {
        match self {
            VmArch::Aarch64 => "tcg",
            VmArch::X86_64 => "tcg,thread=single",
        }
    }

    /// The serial console built into Debian's kernels (pl011, 8250).
    pub fn console(self) -> &'static str {
        match self {
            VmArch::Aarch64 => "ttyAMA0",
            VmArch::X86_64 => "ttyS0",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Series {
    #[value(name = "6.1")]
    V6_1,
    #[value(name = "6.12")]
    V6_12,
}

impl Series {
    pub fn name(self) -> &'static str {
        match self {
            Series::V6_1 => "6.1",
            Series::V6_12 => "6.12",
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct Vm {
    pub arch: VmArch,
    pub series: Series,
}

/// What `cargo xtask vm-test` runs by default, in this order, one VM at a time.
pub const MATRIX: &[Vm] = &[
    Vm {
        arch: VmArch::Aarch64,
        series: Series::V6_12,
    },
    Vm {
        arch: VmArch::Aarch64,
        series: Series::V6_1,
    },
    Vm {
        arch: VmArch::X86_64,
        series: Series::V6_1,
    },
];

impl Vm {
    /// `aarch64-6.12`: the directory name under VM_ROOT and target/vm.
    pub fn name(&self) -> String {
        format!("{}-{}", self.arch.name(), self.series.name())
    }

    /// The Debian 12 meta-package that depends on the newest kernel of the series, so setup
    /// follows security updates instead of pinning a package the archive drops.
    pub fn meta_package(&self) -> String {
        let flavour = self.arch.debian();
        match self.series {
            Series::V6_1 => format!("linux-image-{flavour}:{flavour}"),
            Series::V6_12 => format!("linux-image-6.12-{flavour}:{flavour}"),
        }
    }

    pub fn dir(&self) -> PathBuf {
        PathBuf::from(VM_ROOT).join(self.name())
    }

    pub fn vmlinuz(&self) -> PathBuf {
        self.dir().join("vmlinuz")
    }

    /// Names the kernel package the vmlinuz came from; written last, so it marks a complete
    /// install.
    pub fn package_file(&self) -> PathBuf {
        self.dir().join("package")
    }
}

pub fn busybox_path(arch: VmArch) -> PathBuf {
    PathBuf::from(VM_ROOT)
        .join(format!("busybox-{}", arch.name()))
        .join("busybox")
}

/// The VMs of the matrix that `--arch`/`--kernel` select (each unset: any).
pub fn select(arch: Option<VmArch>, series: Option<Series>) -> Vec<&'static Vm> {
    MATRIX
        .iter()
        .filter(|vm| arch.is_none_or(|a| a == vm.arch) && series.is_none_or(|s| s == vm.series))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection() {
        assert_eq!(select(None, None).len(), 3);
        let arm = select(Some(VmArch::Aarch64), None);
        assert_eq!(arm.len(), 2);
        assert_eq!(
            select(None, Some(Series::V6_12))
                .iter()
                .map(|v| v.name())
                .collect::<Vec<_>>(),
            ["aarch64-6.12"]
        );
        assert!(select(Some(VmArch::X86_64), Some(Series::V6_12)).is_empty());
        assert_eq!(MATRIX[1].meta_package(), "linux-image-arm64:arm64");
        assert_eq!(MATRIX[0].meta_package(), "linux-image-6.12-arm64:arm64");
    }
}
