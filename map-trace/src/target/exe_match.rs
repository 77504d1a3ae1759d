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

/// One `--exe PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExeSpec {
    pub path: PathBuf,
    /// The file at that path on this host, if there is one now.
    pub file: Option<FileId>,
}

impl ExeSpec {
    /// A relative path that exists is made absolute, so it also matches by path.
    pub fn new(path: PathBuf) -> ExeSpec {
        let path = match path.is_relative() {
            true => std::fs::canonicalize(&path).unwrap_or(path),
            false => path,
        };
        let file = FileId::of(&path).ok();
        ExeSpec { path, file }
    }

    /// Whether a process runs this target. `seen_as` is its executable's path in its own mount
    /// namespace (`/proc/PID/exe`), `file` the file it runs. A path match catches containers
    /// and a binary replaced on disk after the process started (" (deleted)").
    pub fn matches(&self, seen_as: &Path, file: FileId) -> bool {
        if self.file == Some(file) {
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

    fn spec(path: &str, file: Option<FileId>) -> ExeSpec {
        ExeSpec {
            path: path.into(),
            file,
        }
    }

    #[test]
    fn same_file_matches_whatever_the_path() {
        assert!(spec("/usr/bin/api", Some(F)).matches(Path::new("/opt/link-to-api"), F));
    }

    #[test]
    fn same_path_in_a_container_or_after_a_deploy_matches() {
        let s = spec("/app/server", None);
        assert!(s.matches(Path::new("/app/server"), OTHER));
        assert!(s.matches(Path::new("/app/server (deleted)"), OTHER));
        assert!(!s.matches(Path::new("/app/server2"), OTHER));
        assert!(!s.matches(Path::new("/app"), OTHER));
    }

    #[test]
    fn another_file_at_another_path_does_not() {
        assert!(!spec("/usr/bin/api", Some(F)).matches(Path::new("/usr/bin/other"), OTHER));
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
