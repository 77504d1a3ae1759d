//! Exec notices: the tgid of every process that just exec'd, from the `exec_notify`
//! tracepoint's ring buffer, so `--exe` targets are matched as they start.

use aya::maps::{MapData, RingBuf};
use map_trace_common::event::ExecNotice;
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

/// Every notice waiting in the ring buffer.
pub fn drain_execs(ring: &mut RingBuf<MapData>) -> Vec<ExecNotice> {
    let mut notices = Vec::new();
    while let Some(item) = ring.next() {
        if item.len() == size_of::<ExecNotice>() {
            // SAFETY: the size matches and ExecNotice is plain data; the read is unaligned.
            notices.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<ExecNotice>()) });
        }
    }
    notices
}
