//! Exec notices: the tgid of every process that just exec'd, from the `exec_notify`
//! tracepoint's ring buffer, so `--exe` targets are matched as they start.

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

/// Resolves when exec notices are waiting; never, when `--exe` is not in use.
pub async fn next_exec(
    execs: &mut Option<AsyncFd<RingBuf<MapData>>>,
) -> std::io::Result<tokio::io::unix::AsyncFdReadyMutGuard<'_, RingBuf<MapData>>> {
    match execs {
        Some(fd) => fd.readable_mut().await,
        None => std::future::pending().await,
    }
}

/// Every pid waiting in the ring buffer.
pub fn drain_execs(ring: &mut RingBuf<MapData>) -> Vec<u32> {
    let mut pids = Vec::new();
    while let Some(item) = ring.next() {
        if let Ok(b) = <[u8; 4]>::try_from(&item[..]) {
            pids.push(u32::from_ne_bytes(b));
        }
    }
    pids
}
