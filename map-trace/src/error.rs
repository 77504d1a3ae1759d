//! Errors a user can act on, each with its own exit code so scripts can tell them apart.

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
            // 12 and 13 are eBPF and kernel failures, 14 the metrics address (trace::TraceError).
            TargetError::NotRegular { .. } => 15,
            TargetError::TooLarge { .. } => 16,
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

/// The longest message map-trace prints about one error.
pub const MAX_MESSAGE_CHARS: usize = 300;

/// `msg` as one line of at most `max` characters, so a log line stays one line however long or
/// multi-line what it quotes (a verifier log, a path with a newline, a parser's excerpt).
/// Lines are joined with " | "; an over-long message keeps its start and its end, where the
/// path and the cause usually are, with "…" between.
pub fn one_line(msg: &str, max: usize) -> String {
    let joined = msg
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    // Other control characters (a carriage return, an escape sequence in a path) could still
    // rewrite the terminal line.
    let clean: Vec<char> = joined
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if clean.len() <= max {
        return clean.into_iter().collect();
    }
    let keep = max.saturating_sub(1);
    let head = keep - keep / 2;
    let tail = keep / 2;
    let mut out: String = clean[..head].iter().collect();
    out.push('…');
    out.extend(&clean[clean.len() - tail..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_become_one_bounded_line() {
        assert_eq!(one_line("a: b", 300), "a: b");
        assert_eq!(
            one_line("verifier said:\n  0: r1 = 0\n\n  invalid access\n", 300),
            "verifier said: | 0: r1 = 0 | invalid access"
        );
        assert_eq!(one_line("bad\rpath\u{1b}[2J", 300), "bad?path?[2J");
        let long = format!("/{}: no such file", "x".repeat(1000));
        let s = one_line(&long, 40);
        assert_eq!(s.chars().count(), 40);
        assert!(
            s.starts_with("/xxx") && s.ends_with(": no such file"),
            "{s}"
        );
        assert_eq!(s.matches('…').count(), 1);
    }

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
