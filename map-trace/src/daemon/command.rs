//! `map-trace run -- CMD`: the command and everything it starts run in a cgroup of their own,
//! so the exec tracepoint can tell its descendants from the rest of the host (one id compare in
//! the kernel) and stop each of them before its first instruction; the daemon resumes each once
//! its probes are attached (a non-Go program at once). The command runs as the user who invoked
//! sudo, unless asked to keep root.

use std::ffi::OsString;
use std::io::Write as _;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::PathBuf;
use std::process::ExitStatus;

use map_trace_common::event::FindingKind;

/// `--fail-on`: the least severity that makes `run` exit `FINDINGS_EXIT`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum FailOn {
    Notice,
    Warning,
    Error,
    /// Never: the command's own exit status, whatever was found.
    Never,
}

/// `run`'s exit status when findings at or above `--fail-on` were reported: the race detector's
/// (`GORACE=exitcode=66`), so CI scripts that know `-race` know this one.
pub const FINDINGS_EXIT: u8 = 66;

impl FailOn {
    fn rank(severity: &str) -> FailOn {
        match severity {
            "error" => FailOn::Error,
            "warning" => FailOn::Warning,
            _ => FailOn::Notice,
        }
    }

    /// Whether a finding of `kind` fails the run.
    pub fn fails(self, kind: FindingKind) -> bool {
        self != FailOn::Never && FailOn::rank(kind.severity()) >= self
    }
}

/// What `run` exits with: `FINDINGS_EXIT` when a finding fails the run, else the command's
/// status (128 + the signal's number when a signal ended it, as shells say).
pub fn exit_code(status: ExitStatus, fail_on: FailOn, kinds: &[FindingKind]) -> u8 {
    if kinds.iter().any(|&k| fail_on.fails(k)) {
        return FINDINGS_EXIT;
    }
    match (status.code(), status.signal()) {
        (Some(c), _) => c as u8,
        (None, Some(sig)) => 128u8.wrapping_add(sig as u8),
        (None, None) => 1,
    }
}

/// Who the command runs as: the user behind `sudo` (`SUDO_UID`, `SUDO_GID`), else whoever ran
/// map-trace.
pub fn invoking_user(keep_root: bool) -> Option<(u32, u32)> {
    if keep_root {
        return None;
    }
    let id = |k| std::env::var(k).ok()?.parse::<u32>().ok();
    Some((id("SUDO_UID")?, id("SUDO_GID")?))
}

/// The command's own cgroup, removed when dropped (once nothing runs in it).
pub struct RunCgroup {
    pub path: PathBuf,
    /// Its id, as `bpf_get_current_cgroup_id` gives it: the directory's inode number.
    pub id: u64,
}

impl RunCgroup {
    /// A new cgroup v2 leaf at the root of the cgroup v2 mount (`/sys/fs/cgroup`, or
    /// `/sys/fs/cgroup/unified` on hosts that mount v1 controllers there): the exec tracepoint's
    /// `bpf_get_current_cgroup_id` names v2 cgroups whichever controllers v1 holds.
    pub fn create() -> Result<RunCgroup, String> {
        use std::os::unix::fs::MetadataExt as _;
        let root = cgroup2_mount().ok_or("no cgroup v2 hierarchy is mounted")?;
        let path = root.join(format!("map-trace-run-{}", std::process::id()));
        std::fs::create_dir(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        let id = std::fs::metadata(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .ino();
        Ok(RunCgroup { path, id })
    }

    /// The processes in it now.
    pub fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.path.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

/// Where the cgroup v2 hierarchy is mounted, from /proc/self/mountinfo.
fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = procfs::process::Process::myself().ok()?.mountinfo().ok()?;
    mounts
        .into_iter()
        .find(|m| m.fs_type == "cgroup2" && m.root == "/")
        .map(|m| m.mount_point)
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        // Processes just killed leave it within moments; one the command left running keeps
        // it (then it stays, empty once that process ends, to be removed by hand).
        for _ in 0..20 {
            if self.pids().is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        if std::fs::remove_dir(&self.path).is_err() {
            eprintln!(
                "map-trace: warning: {} processes the command started still run; their cgroup {} stays",
                self.pids().len(),
                self.path.display()
            );
        }
    }
}

/// Starts `argv` in `cgroup` (joined before the exec, so the exec itself is stopped and
/// announced), as `user` if given.
pub fn spawn(
    argv: &[OsString],
    cgroup: Option<&RunCgroup>,
    user: Option<(u32, u32)>,
) -> std::io::Result<tokio::process::Child> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| std::io::Error::other("no command given"))?;
    let procs = match cgroup {
        Some(c) => Some(
            std::fs::OpenOptions::new()
                .write(true)
                .open(c.path.join("cgroup.procs"))?,
        ),
        None => None,
    };
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    // SAFETY: only async-signal-safe calls (write, setgroups, setgid, setuid) between fork and
    // exec.
    unsafe {
        cmd.pre_exec(move || {
            use std::os::fd::AsRawFd as _;
            if let Some(f) = &procs {
                // "0": the writing process. Checked with the opener's (root's) credentials.
                if libc::write(f.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some((uid, gid)) = user
                && (libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let _ = std::io::stderr().flush();
    tokio::process::Command::from(cmd).spawn()
}

/// Lets a process the exec tracepoint stopped go on (harmless if it is not stopped).
pub fn resume(pid: u32) {
    // SAFETY: a plain kill(2).
    unsafe {
        libc::kill(pid as i32, libc::SIGCONT);
    }
}

/// Kills the command and everything in its cgroup (`cgroup.kill`, Linux 5.14+), or the command
/// alone where that is not available.
pub fn kill(child: &mut tokio::process::Child, cgroup: Option<&RunCgroup>) {
    let all = cgroup.is_some_and(|c| std::fs::write(c.path.join("cgroup.kill"), "1").is_ok());
    if !all {
        let _ = child.start_kill();
    }
}

/// Sends `sig` to the command.
pub fn forward(pid: u32, sig: i32) {
    // SAFETY: a plain kill(2).
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// Creates the command's cgroup and names it to the exec tracepoint, or says why not: then
/// every exec is announced, the command's descendants are told apart by their parents, and
/// they are traced from when their notice is read, not from their first instruction.
pub fn prepare(ebpf: &mut aya::Ebpf) -> Option<RunCgroup> {
    let why = match RunCgroup::create() {
        Ok(c) => match crate::attach::probes::set_run_cgroup(ebpf, c.id) {
            Ok(()) => return Some(c),
            Err(e) => e.to_string(),
        },
        Err(e) => e,
    };
    eprintln!(
        "map-trace: warning: cannot give the command a cgroup of its own ({why}): its programs are traced from when map-trace sees them start, so their first instructions go untraced"
    );
    None
}

/// Starts the command, said on stderr.
pub fn start(
    c: &crate::config::RunCommand,
    cgroup: Option<&RunCgroup>,
) -> Result<tokio::process::Child, crate::error::TraceError> {
    let user = invoking_user(c.keep_root);
    let child = spawn(&c.argv, cgroup, user).map_err(|e| {
        crate::error::TraceError::Other(format!(
            "starting {}: {e}",
            c.argv.first().map_or("".into(), |a| a.to_string_lossy())
        ))
    })?;
    let who = match user {
        Some((uid, gid)) => format!("uid {uid}, gid {gid}"),
        None => "root".into(),
    };
    eprintln!(
        "map-trace: running {:?} as {who}, pid {}",
        c.argv,
        child.id().unwrap_or(0)
    );
    Ok(child)
}

/// The command's exit; never, without one.
pub async fn wait(child: &mut Option<tokio::process::Child>) -> ExitStatus {
    match child {
        Some(c) => match c.wait().await {
            Ok(s) => s,
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// A SIGINT or SIGTERM: passed to the command, which decides (the run ends when it exits).
/// The third one stops tracing instead. False: stop now.
pub fn forward_or_stop(child: Option<u32>, sig: i32, forwarded: &mut u32) -> bool {
    let Some(pid) = child else {
        return false;
    };
    *forwarded += 1;
    if *forwarded > 2 {
        return false;
    }
    forward(pid, sig);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    #[test]
    fn the_commands_status_unless_a_finding_fails_the_run() {
        use FindingKind::*;
        assert_eq!(exit_code(exited(0), FailOn::Error, &[]), 0);
        assert_eq!(exit_code(exited(3), FailOn::Error, &[Insert]), 3);
        assert_eq!(exit_code(exited(0), FailOn::Error, &[ConcurrentWrite]), 66);
        assert_eq!(exit_code(exited(1), FailOn::Error, &[FatalMapError]), 66);
        assert_eq!(exit_code(exited(0), FailOn::Warning, &[MapChanged]), 66);
        assert_eq!(exit_code(exited(0), FailOn::Warning, &[DeleteOther]), 0);
        assert_eq!(exit_code(exited(0), FailOn::Notice, &[DeleteOther]), 66);
        assert_eq!(exit_code(exited(0), FailOn::Never, &[ConcurrentWrites]), 0);
        // Killed by SIGKILL: 128 + 9, as a shell says.
        assert_eq!(exit_code(ExitStatus::from_raw(9), FailOn::Error, &[]), 137);
    }

    #[test]
    fn the_sudo_user_unless_root_is_kept() {
        // Read from the environment of this test process: only the shape is checked here;
        // the kernel test runs a command through sudo's variables.
        assert_eq!(invoking_user(true), None);
    }
}
