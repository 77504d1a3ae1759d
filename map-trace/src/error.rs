//! Errors a user can act on, each with its own exit code so scripts can tell them apart.

use std::path::PathBuf;

/// Why a target cannot be inspected or traced.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("{}: no such file", .path.display())]
    FileMissing { path: PathBuf },
    #[error("{}: not an ELF file", .path.display())]
    NotElf { path: PathBuf },
    #[error("{}: ELF file but not a Go program (no Go build info)", .path.display())]
    NotGo { path: PathBuf },
    #[error(
        "{}: built with {version}, which passes arguments on the stack; map-trace needs Go's register ABI (Go 1.17+ on x86_64, 1.18+ on aarch64)",
        .path.display()
    )]
    GoTooOld { path: PathBuf, version: String },
    #[error("{}: unsupported architecture {arch}; map-trace supports x86_64 and aarch64", .path.display())]
    UnsupportedArch { path: PathBuf, arch: String },
    #[error("no process with pid {pid}")]
    PidMissing { pid: u32 },
    #[error("process {pid} has no executable (a kernel thread or a process that is exiting)")]
    NoExecutable { pid: u32 },
    #[error(
        "permission denied reading {}: run as root (sudo map-trace …) or grant CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH",
        .path.display()
    )]
    PermissionDenied { path: PathBuf },
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: malformed Go binary: {detail}", .path.display())]
    Malformed { path: PathBuf, detail: String },
}

impl TargetError {
    /// Process exit code. 1 is any other failure and 2 a usage error (clap).
    pub fn exit_code(&self) -> u8 {
        match self {
            TargetError::FileMissing { .. } => 3,
            TargetError::NotElf { .. } => 4,
            TargetError::NotGo { .. } => 5,
            TargetError::GoTooOld { .. } => 6,
            TargetError::UnsupportedArch { .. } => 7,
            TargetError::PidMissing { .. } | TargetError::NoExecutable { .. } => 8,
            TargetError::PermissionDenied { .. } => 9,
            TargetError::Io { .. } => 10,
            TargetError::Malformed { .. } => 11,
        }
    }

    /// Maps an I/O error on `path` to the specific variant a user can act on.
    pub fn from_io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        match source.kind() {
            std::io::ErrorKind::NotFound => TargetError::FileMissing { path },
            std::io::ErrorKind::PermissionDenied => TargetError::PermissionDenied { path },
            _ => TargetError::Io { path, source },
        }
    }
}
