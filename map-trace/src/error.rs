//! Errors a user can act on, each with its own exit code so scripts can tell them apart, and
//! how they are printed. Why a binary cannot be read ([`TargetError`], exit codes 3–11, 15, 16)
//! is gobin's; a tracing session's ([`TraceError`], 12–14) are below.

pub use gobin::error::TargetError;

use std::net::SocketAddr;

use crate::attach::AttachError;

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
}

/// Errors of a tracing session, each with an exit code.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Attach(#[from] AttachError),
    /// The kernel lacks features the probes need (all of them named).
    #[error("{0}")]
    Kernel(String),
    /// `--metrics-addr` cannot be listened on: its own code, because it is fixed by choosing
    /// another address, not by anything about the targets or the kernel.
    #[error("cannot serve metrics on {addr}: {why}")]
    MetricsAddr { addr: SocketAddr, why: String },
    /// `--sarif FILE` cannot be written (checked before anything is attached, and at exit).
    #[error("cannot write the SARIF log {}: {why}", .path.display())]
    Sarif {
        path: std::path::PathBuf,
        why: String,
    },
    #[error("{0}")]
    Other(String),
}

impl TraceError {
    /// `--sarif FILE` could not be written, checked at start or written at exit.
    pub fn sarif(path: &std::path::Path, e: &std::io::Error) -> TraceError {
        TraceError::Sarif {
            path: path.to_path_buf(),
            why: e.to_string(),
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            TraceError::Target(e) => e.exit_code(),
            TraceError::Attach(_) => 12,
            TraceError::Kernel(_) => 13,
            TraceError::MetricsAddr { .. } => 14,
            TraceError::Sarif { .. } => 18,
            TraceError::Other(_) => 1,
        }
    }
}
