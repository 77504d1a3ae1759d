//! Why a Go binary cannot be read: errors a user can act on, each with its own exit code so
//! scripts can tell them apart. The daemon re-exports this type and adds its own exit codes
//! (eBPF, kernel, metrics address) around these.

use std::path::PathBuf;

use crate::input::{self, InputError};

/// Why a target cannot be inspected or traced.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The path leads to no file: missing, a symlink loop, a component not a directory.
    #[error("{}: {why}", .path.display())]
    FileMissing { path: PathBuf, why: String },
    #[error("{}: not a regular file but a {kind}; map-trace reads only regular files", .path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error(
        "{}: {size} bytes, more than the {} map-trace reads from a binary",
        .path.display(),
        input::bytes(*.limit)
    )]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("{}: not an ELF file", .path.display())]
    NotElf { path: PathBuf },
    #[error(
        "{}: ELF file but not a Go program (no Go build info, no Go function table)",
        .path.display()
    )]
    NotGo { path: PathBuf },
    #[error(
        "{}: a Go program without build info whose Go version cannot be pinned: {detail}",
        .path.display()
    )]
    GoVersionUnknown { path: PathBuf, detail: String },
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
            // 12 and 13 are eBPF and kernel failures, 14 the metrics address (map-trace's
            // `error::TraceError`).
            TargetError::NotRegular { .. } => 15,
            TargetError::TooLarge { .. } => 16,
            TargetError::GoVersionUnknown { .. } => 17,
        }
    }

    /// Maps an I/O error on `path` to the specific variant a user can act on.
    pub fn from_io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if input::leads_nowhere(&source) {
            return TargetError::FileMissing {
                path,
                why: input::describe_io(&source),
            };
        }
        match source.kind() {
            std::io::ErrorKind::PermissionDenied => TargetError::PermissionDenied { path },
            std::io::ErrorKind::IsADirectory => TargetError::NotRegular {
                path,
                kind: "directory",
            },
            _ => TargetError::Io { path, source },
        }
    }

    /// Why a binary at `path` was not read (see [`input::open_regular`]).
    pub fn from_input(path: impl Into<PathBuf>, e: InputError) -> Self {
        let path = path.into();
        match e {
            InputError::NotRegular(kind) => TargetError::NotRegular { path, kind },
            InputError::TooLarge { size, limit } => TargetError::TooLarge { path, size, limit },
            InputError::Io(e) => TargetError::from_io(path, e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_target_error_kind_has_its_words_and_code() {
        let loop_err = std::io::Error::from_raw_os_error(libc::ELOOP);
        let e = TargetError::from_io("/x", loop_err);
        assert_eq!(
            e.to_string(),
            "/x: symlink loop (too many levels of symbolic links)"
        );
        assert_eq!(e.exit_code(), 3);
        let e = TargetError::from_io("/x", std::io::ErrorKind::NotFound.into());
        assert_eq!(
            (e.to_string().as_str(), e.exit_code()),
            ("/x: no such file", 3)
        );
        let e = TargetError::from_io("/x", std::io::Error::from_raw_os_error(libc::EISDIR));
        assert_eq!(e.exit_code(), 15);
        let e = TargetError::from_input("/x", InputError::NotRegular("FIFO (named pipe)"));
        assert_eq!(
            (e.to_string().as_str(), e.exit_code()),
            (
                "/x: not a regular file but a FIFO (named pipe); map-trace reads only regular files",
                15
            )
        );
        let e = TargetError::from_input(
            "/x",
            InputError::TooLarge {
                size: (1 << 30) + 1,
                limit: 1 << 30,
            },
        );
        assert_eq!(e.exit_code(), 16);
        assert!(e.to_string().contains("more than the 1 GiB"), "{e}");
        let e = TargetError::from_io("/x", std::io::Error::from_raw_os_error(libc::EIO));
        assert_eq!(e.exit_code(), 10);
    }
}
