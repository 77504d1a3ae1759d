//! What is checked before anything is loaded into the kernel, so a mistake in the command
//! line costs nothing and needs no privilege to see: the `--exe` files, the SARIF log's path
//! and the metrics address.

use std::net::SocketAddr;

use gobin::elf::ElfImage;

use crate::config::Settings;
use crate::error::TargetError;
use crate::error::TraceError;

/// Refuses an `--exe` whose file is on this host but cannot be a program: not a regular file,
/// over the size limit, a symlink loop, unreadable, not ELF. Reads at most 4 bytes of each, so
/// it is safe before any signal handler is installed. A path that leads to no file on this
/// host is fine: processes may run it inside their own root (containers).
pub fn precheck(opts: &Settings) -> Result<(), TraceError> {
    for path in &opts.exes {
        match std::fs::metadata(path) {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) => {}
            Err(e) => return Err(TargetError::from_io(path, e).into()),
            Ok(_) => ElfImage::precheck(path)?,
        }
    }
    // A log that cannot be written is refused now, not after a whole session.
    if let Some(path) = &opts.sarif {
        crate::output::sarif::check_writable(path).map_err(|e| TraceError::sarif(path, &e))?;
    }
    Ok(())
}

/// Connections the kernel queues for the endpoint before it accepts them. `TcpListener::bind`
/// asks for 128; under a flood of connections a scraper's connection attempt that finds the
/// queue full is dropped and retried only after a second, so the queue is made deeper.
const LISTEN_BACKLOG: u32 = 1024;

/// A listening socket on `addr`, as `TcpListener::bind` makes it but with a deeper queue.
pub(super) fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As `bind` does: a restarted daemon can listen again at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Why a listen address cannot be bound, in the words that say what to change.
pub(super) fn bind_failure(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EADDRINUSE) => "the port is in use (by another map-trace?); choose another".into(),
        Some(libc::EADDRNOTAVAIL) => {
            "the address is not on this host; use one of its own addresses, e.g. 127.0.0.1".into()
        }
        Some(libc::EACCES) => {
            "permission denied (ports below 1024 need CAP_NET_BIND_SERVICE); choose a port above 1023".into()
        }
        _ => e.to_string(),
    }
}
