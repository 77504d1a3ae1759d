//! From a pid to the executable to read and to attach to, including processes in containers.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::error::TargetError;

/// The executable of a running process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessExe {
    pub pid: u32,
    /// The path as the process sees it (inside its own mount namespace).
    pub exe: PathBuf,
    /// A path that reaches the same file from here: through `/proc/PID/root` for processes in
    /// another root (containers), or `/proc/PID/exe` when the file was deleted or replaced.
    pub host_path: PathBuf,
}

pub fn resolve(pid: u32) -> Result<ProcessExe, TargetError> {
    resolve_in(Path::new("/proc"), pid)
}

/// `resolve` against another procfs mount, so tests can use a fake one.
pub fn resolve_in(proc: &Path, pid: u32) -> Result<ProcessExe, TargetError> {
    let dir = proc.join(pid.to_string());
    if !dir.exists() {
        return Err(TargetError::PidMissing { pid });
    }
    let exe_link = dir.join("exe");
    let exe = match std::fs::read_link(&exe_link) {
        Ok(p) => p,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            // The directory was there a moment ago: either it exited since, or it has no mm.
            return Err(if dir.exists() {
                TargetError::NoExecutable { pid }
            } else {
                TargetError::PidMissing { pid }
            });
        }
        Err(e) => return Err(TargetError::from_io(exe_link, e)),
    };
    let exe_str = exe.to_string_lossy();
    let host_path = if exe_str.ends_with(" (deleted)") {
        // The magic link still reaches the old inode, which is what the process runs.
        exe_link
    } else {
        let root = std::fs::read_link(dir.join("root")).unwrap_or_else(|_| PathBuf::from("/"));
        if root == Path::new("/") {
            exe.clone()
        } else {
            // A process in another mount namespace: its paths are relative to its root.
            dir.join("root").join(exe.strip_prefix("/").unwrap_or(&exe))
        }
    };
    Ok(ProcessExe {
        pid,
        exe,
        host_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_pid_is_reported_as_such() {
        let fake = std::env::temp_dir().join(format!("map-trace-fakeproc-{}", std::process::id()));
        std::fs::create_dir_all(&fake).unwrap();
        assert!(matches!(
            resolve_in(&fake, 4242),
            Err(TargetError::PidMissing { pid: 4242 })
        ));
    }

    #[test]
    fn container_process_is_reached_through_its_root() {
        let fake = std::env::temp_dir().join(format!("map-trace-fakeproc2-{}", std::process::id()));
        let pid_dir = fake.join("77");
        let _ = std::fs::remove_dir_all(&fake);
        std::fs::create_dir_all(&pid_dir).unwrap();
        std::os::unix::fs::symlink("/usr/bin/app", pid_dir.join("exe")).unwrap();
        std::os::unix::fs::symlink("/var/lib/containers/x/rootfs", pid_dir.join("root")).unwrap();
        let p = resolve_in(&fake, 77).unwrap();
        assert_eq!(p.exe, PathBuf::from("/usr/bin/app"));
        assert_eq!(p.host_path, pid_dir.join("root/usr/bin/app"));
        std::fs::remove_dir_all(&fake).unwrap();
    }

    #[test]
    fn own_process_resolves_to_its_executable() {
        let p = resolve(std::process::id()).unwrap();
        assert_eq!(p.host_path, std::env::current_exe().unwrap());
    }
}
