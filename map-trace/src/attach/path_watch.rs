//! Notices when what an `--exe` path names may have changed: a file written, renamed or
//! removed in a directory on the way to it, or a symlink on the way re-pointed. It only says
//! "look again"; the exec guard, not this, is what keeps a changed file from running under
//! stale probes. This makes the look prompt: replaced binaries are let go (their probes, fds
//! and disk space) and the directories a re-pointed symlink now leads to are marked.

use std::os::fd::{AsFd as _, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::io::unix::AsyncFd;

pub struct PathWatch {
    fd: AsyncFd<OwnedFd>,
    inotify: Inotify,
    watches: Vec<(PathBuf, WatchDescriptor)>,
}

/// Entry changes in a directory, and writes to the files in it.
fn mask() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_ONLYDIR
}

impl PathWatch {
    pub fn new() -> std::io::Result<PathWatch> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        // A second fd of the same inotify instance for tokio to poll; reads go through nix.
        let dup = inotify.as_fd().try_clone_to_owned()?;
        Ok(PathWatch {
            // SAFETY: `dup` is a fresh fd owned here; the AsyncFd keeps it open until dropped.
            fd: unsafe { AsyncFd::register_with_interest(dup, tokio::io::Interest::READABLE) }
                .map_err(|e| e.into_parts().1)?,
            inotify,
            watches: Vec::new(),
        })
    }

    /// Watches every directory on the way to each name and to what it resolves to now; drops
    /// watches no longer on any way.
    pub fn set(&mut self, names: &[PathBuf]) {
        let wanted = ancestors(names);
        self.watches.retain(|(d, wd)| {
            let keep = wanted.contains(d);
            if !keep {
                let _ = self.inotify.rm_watch(*wd);
            }
            keep
        });
        for d in wanted {
            if self.watches.iter().any(|(w, _)| *w == d) {
                continue;
            }
            if let Ok(wd) = self.inotify.add_watch(&d, mask()) {
                self.watches.push((d, wd));
            }
        }
    }

    /// Resolves when something changed; reads (and discards) every waiting event.
    pub async fn changed(&mut self) {
        loop {
            let Ok(mut guard) = self.fd.readable().await else {
                return std::future::pending().await;
            };
            let mut any = false;
            while let Ok(events) = self.inotify.read_events() {
                any |= !events.is_empty();
                if events.is_empty() {
                    break;
                }
            }
            guard.clear_ready();
            if any {
                return;
            }
        }
    }
}

/// The directories on the way to each name, as written and as resolved now, root excluded.
fn ancestors(names: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for n in names {
        let real = std::fs::canonicalize(n).ok();
        for p in std::iter::once(n.as_path()).chain(real.as_deref()) {
            for a in p.ancestors().skip(1) {
                if a == Path::new("/") || a.as_os_str().is_empty() {
                    continue;
                }
                if !out.iter().any(|x| x == a) {
                    out.push(a.to_path_buf());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_of_the_name_and_its_target() {
        let d = std::env::temp_dir().join(format!("mt-pathwatch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("rel/r1")).unwrap();
        std::fs::write(d.join("rel/r1/app"), b"x").unwrap();
        std::os::unix::fs::symlink("rel/r1", d.join("current")).unwrap();
        let d = std::fs::canonicalize(&d).unwrap();
        let got = ancestors(&[d.join("current/app")]);
        // The symlink's directory (where a flip happens) and the target's.
        assert!(got.contains(&d.join("current")), "{got:?}");
        assert!(got.contains(&d), "{got:?}");
        assert!(got.contains(&d.join("rel/r1")), "{got:?}");
        assert!(!got.contains(&PathBuf::from("/")), "{got:?}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
