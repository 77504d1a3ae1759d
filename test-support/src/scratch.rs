//! A directory of one test's own, gone when the test ends, whether it passed or not.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// `map-trace-NAME-PID-N` in the temp dir, made fresh (never one of another test of the same
/// binary, nor one left by an earlier run whose pid this one has), and removed with everything
/// in it when dropped.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        loop {
            let dir = std::env::temp_dir().join(format!(
                "map-trace-{name}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            match std::fs::create_dir(&dir) {
                Ok(()) => return Scratch(dir),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("creating {}: {e}", dir.display()),
            }
        }
    }

    /// Sets the directory's mode: 0o700 makes it root's own, like a service's private files.
    pub fn with_mode(self, mode: u32) -> Scratch {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {:o} {}: {e}", mode, self.0.display()));
        self
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
