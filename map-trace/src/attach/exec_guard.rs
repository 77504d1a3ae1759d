//! Holds every exec of a watched executable until its probes match its content.
//!
//! Uprobes belong to an inode and a file offset. When a file is rewritten in place (`cp` over
//! it, `install`, a config-management tool), the inode stays and the kernel keeps the old
//! breakpoints and the old saved instructions: the next process of the file gets breakpoints in
//! the middle of other instructions and dies (SIGSEGV, SIGILL). Noticing the change afterwards
//! (inotify) is a race the new process can win. A fanotify *permission* event closes it: the
//! kernel asks us at `execve`'s open of the file, before the file is mapped, and waits for our
//! answer. A writer cannot be running the file meanwhile (an executable open for writing cannot
//! be exec'd: ETXTBSY), so the content we check is the content that will run.
//!
//! The marks: each binary whose probes stay attached while nothing runs it (an inode mark) and
//! the directory of each `--exe` path and of the file it resolves to (directory marks, so a file
//! moved or copied in under that name is analysed and attached before its first instruction).
//!
//! Each held binary's inode is also marked for every open (`FAN_OPEN_PERM`), which the kernel
//! asks about before an `O_TRUNC` open truncates: the main loop first reads the findings still
//! in the ring buffer, so they are symbolized from the content that produced them (the tables
//! are ranges of the file's mapping; a `cp` over it would otherwise leave them unreadable).
//!
//! Unrelated execs in those directories and execs of unchanged files are answered by this
//! thread at once; only a changed or newly deployed watched file waits for the main loop. If
//! the daemon dies, the kernel allows every held exec; if the main loop does not answer within
//! [`ANSWER_WITHIN`], a changed file's exec is denied (EPERM: visible, never a crash) and a new
//! one is allowed untraced. Both are counted.

use std::collections::HashMap;
use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::fanotify::{
    EventFFlags, Fanotify, FanotifyResponse, InitFlags, MarkFlags, MaskFlags, Response,
};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::discover::exe_match::FileId;

/// How long an exec may be held for the main loop (analysis of a 100 MB binary takes ~1 s).
pub const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// What changes when a file's content does: checked at every exec of a watched file. A write
/// always moves ctime (which no user can set back), and `cp` also changes the size; but a
/// file system with one-second timestamps (ext4 with 128-byte inodes, FAT, some network file
/// systems) can show a same-size rewrite within that second with every time unchanged. So the
/// Go build ID is part of it too: its content hash changes with any change of the code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    /// A hash of the file's Go build ID; 0 where it has none (a non-Go file, `-buildid=`).
    pub content: u64,
}

impl Fingerprint {
    /// The stamp of the open file `f` whose metadata is `m`.
    pub fn of(f: &std::fs::File, m: &std::fs::Metadata) -> Fingerprint {
        Fingerprint::with_content(m, content_of(f))
    }

    fn with_content(m: &std::fs::Metadata, content: u64) -> Fingerprint {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Fingerprint {
            size: m.size(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
            content,
        }
    }
}

/// A hash of the Go build ID of `f`, 0 where it has none.
fn content_of(f: &std::fs::File) -> u64 {
    gobin::buildid::go_build_id(f).map_or(0, |id| fnv1a(id.as_bytes()))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A file's identity.
pub fn file_id(m: &std::fs::Metadata) -> FileId {
    FileId {
        dev: m.dev(),
        ino: m.ino(),
    }
}

/// The identity and content stamp of the file at `path` (opened to read its build ID; a file
/// that cannot be opened gets the stamp of its metadata alone). Never on the guard's thread:
/// an open of a marked file there would wait for the answer only that thread can give.
pub fn stamp(path: &Path, m: &std::fs::Metadata) -> (FileId, Fingerprint) {
    let content = std::fs::File::open(path).map_or(0, |f| content_of(&f));
    (file_id(m), Fingerprint::with_content(m, content))
}

/// The stamp of the file an event's `fd` refers to, read through a copy of that descriptor:
/// no new open, so no new event for the guard's own thread to wait on.
fn stamp_fd(fd: BorrowedFd<'_>) -> Option<(FileId, Fingerprint)> {
    let f = std::fs::File::from(fd.try_clone_to_owned().ok()?);
    let m = f.metadata().ok()?;
    Some((file_id(&m), Fingerprint::of(&f, &m)))
}

/// An exec (or an open of a held binary) the main loop must settle before it may go on.
pub struct Held {
    /// An exec of the file; false: an open, which waits only for pending findings to be read.
    pub exec: bool,
    pub file: FileId,
    pub fingerprint: Fingerprint,
    /// The file being exec'd, reachable for as long as the exec is held (`/proc/self/fd/N`).
    pub path: PathBuf,
    /// Where the file sits by name, for messages and for matching `--exe` paths.
    pub name: PathBuf,
    answer: std::sync::mpsc::SyncSender<()>,
}

impl Held {
    /// Lets the exec go on; the probes now match the content (or the file is not traced).
    pub fn release(self) {
        let _ = self.answer.try_send(());
    }
}

/// Which files the main loop has settled, and at which content: shared with the guard thread.
#[derive(Default)]
struct Known {
    files: HashMap<FileId, Fingerprint>,
    /// `--exe` paths as the user named them.
    names: Vec<PathBuf>,
}

/// Counts for the metrics.
#[derive(Default)]
pub struct GuardCounts {
    /// Execs of a changed file whose old probes were detached before they went on.
    pub redeploys_held: AtomicU64,
    /// Execs denied because the main loop did not answer in time for a changed file.
    pub denied: AtomicU64,
    /// Execs of a new watched file allowed untraced after the main loop did not answer.
    pub unanswered: AtomicU64,
    /// Other processes' opens of a held binary let go after `DRAIN_WITHIN` without the main
    /// loop having read the findings first (a main loop that was stalled).
    pub opens_unanswered: AtomicU64,
}

pub struct ExecGuard {
    fan: Arc<Fanotify>,
    known: Arc<Mutex<Known>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Lets other processes' opens of held binaries go on (`open_waiter`); ends after `thread`.
    waiter: Option<std::thread::JoinHandle<()>>,
    /// Directory marks now set, with an fd each so a mark can be removed after a rename.
    dirs: HashMap<PathBuf, std::fs::File>,
    /// Directories that could not be marked, said once each.
    failed: std::collections::HashSet<PathBuf>,
    pub counts: Arc<GuardCounts>,
}

impl ExecGuard {
    /// Starts the guard thread. Err when fanotify permission events are not to be had here
    /// (no CAP_SYS_ADMIN, a kernel without CONFIG_FANOTIFY_ACCESS_PERMISSIONS).
    pub fn start(names: Vec<PathBuf>) -> Result<(ExecGuard, UnboundedReceiver<Held>), String> {
        let fan = Fanotify::init(
            InitFlags::FAN_CLASS_CONTENT | InitFlags::FAN_CLOEXEC | InitFlags::FAN_NONBLOCK,
            EventFFlags::O_RDONLY | EventFFlags::O_CLOEXEC | EventFFlags::O_LARGEFILE,
        )
        .map_err(|e| format!("fanotify_init: {}", e.desc()))?;
        let fan = Arc::new(fan);
        let known = Arc::new(Mutex::new(Known {
            files: HashMap::new(),
            names,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(GuardCounts::default());
        let (tx, rx) = unbounded_channel();
        let (opens_tx, opens_rx) = std::sync::mpsc::channel();
        let waiter = {
            let (fan, counts) = (fan.clone(), counts.clone());
            std::thread::Builder::new()
                .name("exec-guard-opens".into())
                .spawn(move || open_waiter(&fan, &opens_rx, &counts))
                .map_err(|e| format!("starting the exec guard thread: {e}"))?
        };
        let thread = {
            let (fan, known, stop, counts) =
                (fan.clone(), known.clone(), stop.clone(), counts.clone());
            std::thread::Builder::new()
                .name("exec-guard".into())
                .spawn(move || guard_loop(&fan, &known, &stop, &counts, &tx, &opens_tx))
                .map_err(|e| format!("starting the exec guard thread: {e}"))?
        };
        Ok((
            ExecGuard {
                fan,
                known,
                stop,
                thread: Some(thread),
                waiter: Some(waiter),
                dirs: HashMap::new(),
                failed: Default::default(),
                counts,
            },
            rx,
        ))
    }

    /// Records the files the main loop has settled and at which content (probes attached for
    /// it, or found untraceable); an exec of any other content of them is held.
    pub fn settle_all(&self, files: HashMap<FileId, Fingerprint>) {
        lock(&self.known).files = files;
    }

    /// Holds execs and opens of the file open at `fd` (an inode mark).
    pub fn mark_file(&self, fd: BorrowedFd<'_>) -> Result<(), String> {
        self.fan
            .mark::<_, Path>(MarkFlags::FAN_MARK_ADD, file_mask(), fd, None)
            .map_err(|e| format!("fanotify mark: {}", e.desc()))
    }

    pub fn unmark_file(&self, fd: BorrowedFd<'_>) {
        let _ = self
            .fan
            .mark::<_, Path>(MarkFlags::FAN_MARK_REMOVE, file_mask(), fd, None);
    }

    /// Makes the directory marks exactly `wanted`: execs of any file in them are checked.
    /// Returns the directories that could not be marked, each once.
    pub fn mark_dirs(&mut self, wanted: &[PathBuf]) -> Vec<String> {
        let mut errors = Vec::new();
        self.dirs.retain(|d, fd| {
            let keep = wanted.contains(d);
            if !keep {
                let _ = self.fan.mark::<_, Path>(
                    MarkFlags::FAN_MARK_REMOVE,
                    MaskFlags::FAN_OPEN_EXEC_PERM | MaskFlags::FAN_EVENT_ON_CHILD,
                    fd.as_fd(),
                    None,
                );
            }
            keep
        });
        for d in wanted {
            if self.dirs.contains_key(d) {
                continue;
            }
            let marked = std::fs::File::open(d)
                .map_err(|e| e.to_string())
                .and_then(|fd| {
                    self.fan
                        .mark::<_, Path>(
                            MarkFlags::FAN_MARK_ADD | MarkFlags::FAN_MARK_ONLYDIR,
                            MaskFlags::FAN_OPEN_EXEC_PERM | MaskFlags::FAN_EVENT_ON_CHILD,
                            fd.as_fd(),
                            None,
                        )
                        .map(|()| fd)
                        .map_err(|e| format!("fanotify mark: {}", e.desc()))
                });
            match marked {
                Ok(fd) => {
                    self.failed.remove(d);
                    self.dirs.insert(d.clone(), fd);
                }
                Err(e) => {
                    if self.failed.insert(d.clone()) {
                        errors.push(format!("{}: {e}", d.display()));
                    }
                }
            }
        }
        errors
    }
}

impl Drop for ExecGuard {
    /// Execs held now are allowed by the kernel when the group's fd closes; the caller drops
    /// the guard only after every probe is detached, so none of them can meet a stale one.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // The guard loop has ended, and with it the waiter's channel.
        if let Some(t) = self.waiter.take() {
            let _ = t.join();
        }
    }
}

fn file_mask() -> MaskFlags {
    MaskFlags::FAN_OPEN_EXEC_PERM | MaskFlags::FAN_OPEN_PERM
}

/// How long an open of a held binary may wait for the findings to be read.
const DRAIN_WITHIN: Duration = Duration::from_secs(2);

fn lock(m: &Mutex<Known>) -> std::sync::MutexGuard<'_, Known> {
    // A panic while holding it leaves plain data behind, still usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What to do with one exec.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// The main loop must look first; `changed`: its probes are stale.
    Ask {
        changed: bool,
    },
}

/// Decides from what is known, without I/O beyond `name_of` (the current file of a name).
pub fn verdict(
    file: FileId,
    fp: Fingerprint,
    name: &Path,
    known: &HashMap<FileId, Fingerprint>,
    names: &[PathBuf],
    name_of: impl Fn(&Path) -> Option<FileId>,
) -> Verdict {
    match known.get(&file) {
        Some(k) if *k == fp => Verdict::Allow,
        Some(_) => Verdict::Ask { changed: true },
        None if names.iter().any(|n| n == name || name_of(n) == Some(file)) => {
            Verdict::Ask { changed: false }
        }
        None => Verdict::Allow,
    }
}

fn guard_loop(
    fan: &Fanotify,
    known: &Mutex<Known>,
    stop: &AtomicBool,
    counts: &GuardCounts,
    main: &UnboundedSender<Held>,
    opens: &std::sync::mpsc::Sender<WaitingOpen>,
) {
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [PollFd::new(fan.as_fd(), PollFlags::POLLIN)];
        // Wakes up now and then to see `stop`; events wake it at once.
        if poll(&mut fds, PollTimeout::from(200u16)).unwrap_or(0) <= 0 {
            continue;
        }
        let Ok(events) = fan.read_events() else {
            continue;
        };
        for ev in events {
            let Some(fd) = ev.fd() else { continue };
            if ev.mask().contains(MaskFlags::FAN_OPEN_EXEC_PERM) {
                let response = answer(fd, known, counts, main);
                let _ = fan.write_response(FanotifyResponse::new(fd, response));
                continue;
            }
            let Some(drained) = before_open(fd, ev.pid(), main) else {
                let _ = fan.write_response(FanotifyResponse::new(fd, Response::FAN_ALLOW));
                continue;
            };
            // Waited for on the open waiter's thread: this one must stay free to let the
            // daemon's own opens through at once. Another process that opens a held binary
            // (another tracer checking the file, a scanner) while the main loop opens it too
            // would otherwise hold the main loop for all of `DRAIN_WITHIN`, its own open
            // queued behind the one that waits for it.
            let deadline = std::time::Instant::now() + DRAIN_WITHIN;
            if let Err(std::sync::mpsc::SendError((ev, _, _))) = opens.send((ev, drained, deadline))
                && let Some(fd) = ev.fd()
            {
                let _ = fan.write_response(FanotifyResponse::new(fd, Response::FAN_ALLOW));
            }
        }
    }
}

/// An open of a held binary by another process, the channel on which the main loop says its
/// findings have been read, and until when to wait for that.
type WaitingOpen = (
    nix::sys::fanotify::FanotifyEvent,
    std::sync::mpsc::Receiver<()>,
    std::time::Instant,
);

/// Lets each waiting open go on once the main loop has read the findings, or at its deadline.
/// Returns when the guard loop has ended.
fn open_waiter(
    fan: &Fanotify,
    opens: &std::sync::mpsc::Receiver<WaitingOpen>,
    counts: &GuardCounts,
) {
    while let Ok((ev, drained, deadline)) = opens.recv() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = drained.recv_timeout(left) {
            counts.opens_unanswered.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(fd) = ev.fd() {
            let _ = fan.write_response(FanotifyResponse::new(fd, Response::FAN_ALLOW));
        }
    }
}

/// An open of a held binary, which may truncate it: the findings still waiting are to be read
/// first, and the main loop says on the channel returned when they have been. None: the open
/// may go on at once (the daemon's own, whose main loop may be the one opening; a file that
/// cannot be read; a main loop that has ended).
fn before_open(
    fd: BorrowedFd<'_>,
    pid: i32,
    main: &UnboundedSender<Held>,
) -> Option<std::sync::mpsc::Receiver<()>> {
    if u32::try_from(pid).ok() == Some(std::process::id()) {
        return None;
    }
    let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let (file, fingerprint) = stamp_fd(fd)?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let held = Held {
        exec: false,
        file,
        fingerprint,
        name: PathBuf::new(),
        path,
        answer: tx,
    };
    main.send(held).ok().map(|()| rx)
}

fn answer(
    fd: BorrowedFd<'_>,
    known: &Mutex<Known>,
    counts: &GuardCounts,
    main: &UnboundedSender<Held>,
) -> Response {
    let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    // fstat and read through the fd: the very file being exec'd.
    let Some((file, fp)) = stamp_fd(fd) else {
        return Response::FAN_ALLOW;
    };
    let name = std::fs::read_link(&path).unwrap_or_default();
    let v = {
        let k = lock(known);
        verdict(file, fp, &name, &k.files, &k.names, |n| {
            std::fs::metadata(n).ok().map(|m| file_id(&m))
        })
    };
    let Verdict::Ask { changed } = v else {
        return Response::FAN_ALLOW;
    };
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let held = Held {
        exec: true,
        file,
        fingerprint: fp,
        path,
        name,
        answer: tx,
    };
    if main.send(held).is_err() {
        // The main loop has ended: every probe is detached by now.
        return Response::FAN_ALLOW;
    }
    match rx.recv_timeout(ANSWER_WITHIN) {
        Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            if changed {
                counts.redeploys_held.fetch_add(1, Ordering::Relaxed);
            }
            Response::FAN_ALLOW
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) if changed => {
            counts.denied.fetch_add(1, Ordering::Relaxed);
            Response::FAN_DENY
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            counts.unanswered.fetch_add(1, Ordering::Relaxed);
            Response::FAN_ALLOW
        }
    }
}

/// Sibling directories of a symlink's target marked at most, per `--exe` path.
const MAX_RELEASE_DIRS: usize = 64;

/// The directories to mark for `--exe` paths: each path's own directory, and the directory of
/// the file it resolves to now (a symlink's target), so a file put there under that name is
/// checked at its first exec. For a path that goes through a symlink, also the target
/// directory's siblings: the usual layout flips `current` from `releases/N` to `releases/N+1`,
/// and the new release directory exists (and is marked on its creation) before the flip.
pub fn dirs_for(names: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut add = |d: &Path| {
        if d.is_dir() && !dirs.iter().any(|x| x == d) {
            dirs.push(d.to_path_buf());
        }
    };
    for n in names {
        if let Some(d) = n.parent() {
            add(d);
        }
        let Ok(real) = std::fs::canonicalize(n) else {
            continue;
        };
        let Some(target_dir) = real.parent() else {
            continue;
        };
        add(target_dir);
        let through_symlink = n.parent().and_then(|d| std::fs::canonicalize(d).ok())
            != Some(target_dir.to_path_buf());
        if let (true, Some(releases)) = (through_symlink, target_dir.parent()) {
            let mut siblings: Vec<PathBuf> = std::fs::read_dir(releases)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect();
            // The newest names first, where the next release is.
            siblings.sort_by(|a, b| b.cmp(a));
            for d in siblings.iter().take(MAX_RELEASE_DIRS) {
                add(d);
            }
        }
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: FileId = FileId { dev: 1, ino: 2 };
    const G: FileId = FileId { dev: 1, ino: 3 };
    const FP: Fingerprint = Fingerprint {
        size: 10,
        mtime_ns: 5,
        ctime_ns: 6,
        content: 77,
    };

    fn known(f: FileId, fp: Fingerprint) -> HashMap<FileId, Fingerprint> {
        HashMap::from([(f, fp)])
    }

    #[test]
    fn an_unchanged_settled_file_goes_on_at_once() {
        let v = verdict(F, FP, Path::new("/a"), &known(F, FP), &[], |_| None);
        assert_eq!(v, Verdict::Allow);
    }

    #[test]
    fn a_file_changed_in_place_waits_for_its_probes() {
        // `cp` over the file: same inode, new ctime and size.
        let fp = Fingerprint {
            size: 11,
            ctime_ns: 7,
            ..FP
        };
        let v = verdict(F, fp, Path::new("/a"), &known(F, FP), &[], |_| None);
        assert_eq!(v, Verdict::Ask { changed: true });
        // `touch` alone moves the times: checked again, never assumed the same.
        let fp = Fingerprint { mtime_ns: 9, ..FP };
        let v = verdict(F, fp, Path::new("/a"), &known(F, FP), &[], |_| None);
        assert_eq!(v, Verdict::Ask { changed: true });
        // A same-size rewrite within one tick of a coarse clock: only the build ID differs.
        let fp = Fingerprint { content: 78, ..FP };
        let v = verdict(F, fp, Path::new("/a"), &known(F, FP), &[], |_| None);
        assert_eq!(v, Verdict::Ask { changed: true });
    }

    #[test]
    fn the_stamp_reads_the_go_build_id() {
        let exe = std::env::current_exe().unwrap();
        let (_, fp) = stamp(&exe, &std::fs::metadata(&exe).unwrap());
        // This test binary is Rust: no Go build ID.
        assert_eq!(fp.content, 0);
        assert_ne!(fnv1a(b"a/b"), fnv1a(b"a/c"));
    }

    #[test]
    fn a_new_file_under_a_watched_name_waits_to_be_attached() {
        let names = [PathBuf::from("/srv/app")];
        // By name (moved in), or as the file a watched symlink now points to.
        let v = verdict(G, FP, Path::new("/srv/app"), &known(F, FP), &names, |_| {
            None
        });
        assert_eq!(v, Verdict::Ask { changed: false });
        let v = verdict(
            G,
            FP,
            Path::new("/srv/r2/app"),
            &HashMap::new(),
            &names,
            |_| Some(G),
        );
        assert_eq!(v, Verdict::Ask { changed: false });
    }

    #[test]
    fn other_files_in_a_marked_directory_go_on_at_once() {
        let names = [PathBuf::from("/srv/app")];
        let v = verdict(G, FP, Path::new("/srv/tool"), &known(F, FP), &names, |_| {
            Some(F)
        });
        assert_eq!(v, Verdict::Allow);
    }

    #[test]
    fn dirs_cover_the_name_and_what_it_resolves_to() {
        let d = std::env::temp_dir().join(format!("mt-guard-dirs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("r1")).unwrap();
        std::fs::write(d.join("r1/app"), b"x").unwrap();
        std::os::unix::fs::symlink("r1/app", d.join("app")).unwrap();
        std::fs::create_dir_all(d.join("r2")).unwrap();
        let d = std::fs::canonicalize(&d).unwrap();
        let got = dirs_for(&[d.join("app"), d.join("missing-dir/x")]);
        // The link's directory, its target's, and the target's siblings (the next release).
        assert_eq!(got, [d.clone(), d.join("r1"), d.join("r2")]);
        let plain = dirs_for(&[d.join("r1/app")]);
        assert_eq!(plain, [d.join("r1")]);
        let _ = std::fs::remove_dir_all(&d);
    }
}
