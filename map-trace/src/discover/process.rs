//! From a pid to the executable to read and to attach to, including processes in containers.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use procfs::ProcError;
use procfs::process::{MemoryMap, Process};

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

/// True when `pid` no longer runs a program: exited (reaped or a zombie) or never there.
pub fn is_gone(pid: u32) -> bool {
    matches!(
        resolve(pid),
        Err(TargetError::PidMissing { .. } | TargetError::NoExecutable { .. })
    )
}

/// Whether `pid` is `root` or one of its descendants, by the parent chain in /proc (a process
/// whose parent exited was re-parented and is not found).
pub fn descends_from(pid: u32, root: u32) -> bool {
    let mut at = pid;
    for _ in 0..64 {
        if at == root {
            return true;
        }
        match Process::new(at as i32).and_then(|p| p.stat()) {
            Ok(stat) if stat.ppid > 1 => at = stat.ppid as u32,
            _ => return false,
        }
    }
    false
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
        let through_root = dir.join("root").join(exe.strip_prefix("/").unwrap_or(&exe));
        match same_file_as(&exe_link, [&exe, &through_root]) {
            Some(p) => p.clone(),
            // The link itself is unreadable here: guess from where the process's root is.
            None => {
                let root =
                    std::fs::read_link(dir.join("root")).unwrap_or_else(|_| PathBuf::from("/"));
                if root == Path::new("/") {
                    exe.clone()
                } else {
                    through_root
                }
            }
        }
    };
    Ok(ProcessExe {
        pid,
        exe,
        host_path,
    })
}

/// The first candidate path that reaches the file `link` points to. The exe path as the process
/// sees it is right for processes of our own mount namespace and for chroots (the kernel
/// prints it from our root); a container's is only reachable through `/proc/PID/root`, whose
/// own link reads "/" from here, so its text cannot tell the two cases apart, but the files can.
fn same_file_as<'a>(link: &Path, candidates: [&'a PathBuf; 2]) -> Option<&'a PathBuf> {
    use std::os::unix::fs::MetadataExt as _;
    let id = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let target = id(link)?;
    candidates.into_iter().find(|c| id(c) == Some(target))
}

/// How far the process loaded its executable from the link-time addresses (0 unless PIE):
/// runtime addresses the probes report minus this are what the binary's tables describe.
/// `vaddr_of_offset` maps a file offset to its link-time address (see `ElfImage`).
pub fn load_bias(
    maps: &[MemoryMap],
    inode: u64,
    vaddr_of_offset: impl Fn(u64) -> Option<u64>,
) -> Option<u64> {
    let first = maps
        .iter()
        .filter(|m| m.inode == inode)
        .min_by_key(|m| m.offset)?;
    first.address.0.checked_sub(vaddr_of_offset(first.offset)?)
}

/// `load_bias` of a running process whose executable is reachable at `host_path`.
pub fn process_load_bias(
    pid: u32,
    host_path: &Path,
    vaddr_of_offset: impl Fn(u64) -> Option<u64>,
) -> Result<u64, TargetError> {
    use std::os::unix::fs::MetadataExt as _;
    let inode = std::fs::metadata(host_path)
        .map_err(|e| TargetError::from_io(host_path, e))?
        .ino();
    let maps = Process::new(pid as i32)
        .and_then(|p| p.maps())
        .map_err(|e| proc_error(pid, "maps", e))?;
    load_bias(&maps.0, inode, vaddr_of_offset).ok_or_else(|| TargetError::Malformed {
        path: host_path.to_path_buf(),
        detail: format!("pid {pid} does not map this executable at a known segment"),
    })
}

/// What reading `/proc/PID/<file>` failed with, as a target error.
fn proc_error(pid: u32, file: &str, e: ProcError) -> TargetError {
    let path = PathBuf::from(format!("/proc/{pid}/{file}"));
    match e {
        ProcError::NotFound(_) => TargetError::PidMissing { pid },
        ProcError::PermissionDenied(_) => {
            TargetError::from_io(path, std::io::Error::from(ErrorKind::PermissionDenied))
        }
        ProcError::Io(e, _) => TargetError::from_io(path, e),
        other => TargetError::Malformed {
            path,
            detail: other.to_string(),
        },
    }
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
    fn an_exited_child_is_gone_zombie_or_reaped() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Until it is waited for it is a zombie: no program, still a /proc entry.
        while Path::new(&format!("/proc/{pid}/exe")).read_link().is_ok() {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(is_gone(pid));
        child.wait().unwrap();
        assert!(is_gone(pid));
        assert!(!is_gone(std::process::id()));
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

    fn parse_maps(text: &str) -> Vec<MemoryMap> {
        use procfs::FromBufRead as _;
        procfs::process::MemoryMaps::from_buf_read(text.as_bytes())
            .unwrap()
            .0
    }

    #[test]
    fn pie_bias_is_the_first_mapping_minus_its_link_address() {
        // As the kernel prints it: an anonymous mapping's line ends in a space.
        let text = "\
55d0c0a00000-55d0c0b00000 r--p 00000000 fd:01 4242 /app
55d0c0b00000-55d0c0c00000 r-xp 00100000 fd:01 4242 /app
7f0000000000-7f0000001000 rw-p 00000000 00:00 0\x20
7f0000001000-7f0000002000 r--p 00000000 fd:01 77 /lib/libc.so
";
        let maps = parse_maps(text);
        assert_eq!(maps.len(), 4);
        // Go's internal-link PIE: the first PT_LOAD is linked at 0x400000, file offset 0.
        let bias = load_bias(&maps, 4242, |off| Some(0x400000 + off)).unwrap();
        assert_eq!(bias, 0x55d0c0a00000 - 0x400000);
        // A non-PIE binary is mapped at its link address.
        let exec = parse_maps("00400000-00500000 r-xp 00000000 fd:01 9 /bin/x\n");
        assert_eq!(load_bias(&exec, 9, |off| Some(0x400000 + off)), Some(0));
        assert_eq!(load_bias(&exec, 10, Some), None);
    }

    #[test]
    fn own_process_resolves_to_its_executable() {
        let p = resolve(std::process::id()).unwrap();
        assert_eq!(p.host_path, std::env::current_exe().unwrap());
    }
}
