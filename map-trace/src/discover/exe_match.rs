//! Which running processes an `--exe` target names: the same file, or the same path inside the
//! process's own root (a container running that binary from its image).

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// The identity of an executable file, which is what uprobes attach to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    /// The file at `path` (symlinks followed, as exec does).
    pub fn of(path: &Path) -> std::io::Result<FileId> {
        let m = std::fs::metadata(path)?;
        Ok(FileId {
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

/// One `--exe PATH`. The path is what the user named: the file it leads to is looked up
/// again at every use, so a symlink re-pointed or a file replaced under that name is followed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExeSpec {
    pub path: PathBuf,
}

impl ExeSpec {
    /// A relative path is made absolute against the working directory (not resolved: a
    /// symlink in it stays a symlink to follow later), so it also matches by path.
    pub fn new(path: PathBuf) -> ExeSpec {
        let path = match path.is_relative() {
            true => std::env::current_dir().map_or(path.clone(), |d| d.join(&path)),
            false => path,
        };
        ExeSpec { path }
    }

    /// The file the path leads to now on this host, if any.
    pub fn file(&self) -> Option<FileId> {
        FileId::of(&self.path).ok()
    }

    /// Whether a process runs this target. `seen_as` is its executable's path in its own mount
    /// namespace (`/proc/PID/exe`), `file` the file it runs. A path match catches containers
    /// and a binary replaced on disk after the process started (" (deleted)").
    pub fn matches(&self, seen_as: &Path, file: FileId) -> bool {
        self.matches_with(seen_as, file, self.file())
    }

    fn matches_with(&self, seen_as: &Path, file: FileId, now: Option<FileId>) -> bool {
        if now == Some(file) {
            return true;
        }
        let seen = seen_as.to_string_lossy();
        let seen = seen.strip_suffix(" (deleted)").unwrap_or(&seen);
        Path::new(seen) == self.path
    }
}

/// Every process id under a procfs mount, in no particular order.
pub fn pids(proc: &Path) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir(proc) else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: FileId = FileId { dev: 1, ino: 2 };
    const OTHER: FileId = FileId { dev: 1, ino: 3 };

    fn spec(path: &str) -> ExeSpec {
        ExeSpec { path: path.into() }
    }

    #[test]
    fn same_file_matches_whatever_the_path() {
        let s = spec("/usr/bin/api");
        assert!(s.matches_with(Path::new("/opt/link-to-api"), F, Some(F)));
    }

    #[test]
    fn same_path_in_a_container_or_after_a_deploy_matches() {
        let s = spec("/app/server");
        assert!(s.matches_with(Path::new("/app/server"), OTHER, None));
        assert!(s.matches_with(Path::new("/app/server (deleted)"), OTHER, None));
        assert!(!s.matches_with(Path::new("/app/server2"), OTHER, None));
        assert!(!s.matches_with(Path::new("/app"), OTHER, None));
    }

    #[test]
    fn another_file_at_another_path_does_not() {
        let s = spec("/usr/bin/api");
        assert!(!s.matches_with(Path::new("/usr/bin/other"), OTHER, Some(F)));
    }

    #[test]
    fn a_symlink_is_followed_to_what_it_points_to_now() {
        let d = std::env::temp_dir().join(format!("mt-exe-match-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("r1"), b"1").unwrap();
        std::fs::write(d.join("r2"), b"2").unwrap();
        std::os::unix::fs::symlink("r1", d.join("cur")).unwrap();
        let s = ExeSpec::new(d.join("cur"));
        let r2 = FileId::of(&d.join("r2")).unwrap();
        assert!(!s.matches(&d.join("r2"), r2));
        std::fs::remove_file(d.join("cur")).unwrap();
        std::os::unix::fs::symlink("r2", d.join("cur")).unwrap();
        assert!(s.matches(&d.join("r2"), r2));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn pids_lists_numeric_entries_only() {
        let dir = std::env::temp_dir().join(format!("map-trace-pids-{}", std::process::id()));
        for d in ["1", "42", "self", "sys"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let mut got = pids(&dir);
        got.sort();
        assert_eq!(got, [1, 42]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
