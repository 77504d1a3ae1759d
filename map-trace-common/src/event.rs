//! What crosses from the kernel to the daemon: findings (ring buffer) and counters (per-CPU array).

/// Kinds of finding. The names (see `name`) are part of the JSON output contract.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FindingKind {
    /// Another goroutine assigned, deleted or cleared the map between two steps of an iteration.
    ConcurrentWrite = 0,
    /// The iterating goroutine added keys during its own range.
    Insert = 1,
    /// The iterating goroutine deleted a key other than the one being visited.
    DeleteOther = 2,
    /// The iterating goroutine cleared the map during its own range.
    Clear = 3,
    /// A write began while another goroutine's write to the same map was in progress (the
    /// map's own writing flag was set): Go's `fatal error: concurrent map writes`.
    ConcurrentWrites = 4,
    /// Go died of a map fatal error (`concurrent map writes`, `concurrent map read and map
    /// write`, …): the runtime's message, the goroutine that noticed and every write in progress
    /// in the process then. Carried by a `Fatal` record, not a `Finding`.
    FatalMapError = 5,
    /// Sentinel mode: the map gained elements (or grew) between the start and the end of a
    /// range, seen from its header alone. Someone inserted during the range: the ranging
    /// goroutine itself (the range may or may not produce the new key) or another goroutine (a
    /// data race). The writer is not known; the binary's full probes are attached for a while
    /// to name it at the next occurrence.
    MapChanged = 6,
}

impl FindingKind {
    pub const COUNT: usize = 7;
    pub const ALL: [FindingKind; FindingKind::COUNT] = [
        FindingKind::ConcurrentWrite,
        FindingKind::Insert,
        FindingKind::DeleteOther,
        FindingKind::Clear,
        FindingKind::ConcurrentWrites,
        FindingKind::FatalMapError,
        FindingKind::MapChanged,
    ];

    pub fn from_u32(v: u32) -> Option<Self> {
        Self::ALL.get(v as usize).copied()
    }

    pub const fn name(self) -> &'static str {
        match self {
            FindingKind::ConcurrentWrite => "concurrent_write_during_iteration",
            FindingKind::Insert => "insert_during_iteration",
            FindingKind::DeleteOther => "delete_other_during_iteration",
            FindingKind::Clear => "clear_during_iteration",
            FindingKind::ConcurrentWrites => "concurrent_writes",
            FindingKind::FatalMapError => "fatal_map_error",
            FindingKind::MapChanged => "map_changed_during_iteration",
        }
    }

    pub const fn severity(self) -> &'static str {
        match self {
            FindingKind::ConcurrentWrite
            | FindingKind::ConcurrentWrites
            | FindingKind::FatalMapError => "error",
            FindingKind::Insert | FindingKind::Clear | FindingKind::MapChanged => "warning",
            FindingKind::DeleteOther => "notice",
        }
    }
}

/// The write operation of a finding.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    Assign = 0,
    Delete = 1,
    Clear = 2,
}

impl Op {
    pub const COUNT: usize = 3;
    pub const ALL: [Op; Op::COUNT] = [Op::Assign, Op::Delete, Op::Clear];

    pub fn from_u32(v: u32) -> Option<Self> {
        Self::ALL.get(v as usize).copied()
    }

    pub const fn name(self) -> &'static str {
        match self {
            Op::Assign => "assign",
            Op::Delete => "delete",
            Op::Clear => "clear",
        }
    }
}

/// A write that overlapped an iteration, confirmed when the iteration took its next step; or,
/// for `ConcurrentWrites`, a write that began while another goroutine's write was in progress:
/// then the `writer_*` fields are the write that found the map busy and the `iterator_*` fields
/// the write in progress (`other_op`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Finding {
    /// `bpf_ktime_get_ns` of the write.
    pub write_ns: u64,
    /// `bpf_ktime_get_ns` of the step that confirmed the overlap.
    pub step_ns: u64,
    /// Map header address in the target.
    pub map: u64,
    /// The map's type descriptor (`*maptype` / `*abi.SwissMapType`), for its name.
    pub map_type: u64,
    /// Keys of the `STACKS` table (0: not captured): the writer's stack at the write, and the
    /// iterating goroutine's at the step that confirmed the overlap.
    pub writer_stack: u64,
    pub iterator_stack: u64,
    pub writer_goid: u64,
    pub iterator_goid: u64,
    /// The key of this finding's entry in `REPEATS` when later occurrences with the same key
    /// are folded there instead of sent (0: not folded; see [`Repeats`]).
    pub repeat_key: u64,
    pub tgid: u32,
    /// `FindingKind as u32`.
    pub kind: u32,
    /// `Op as u32`.
    pub op: u32,
    /// Classic: evacuation was in progress at the write; Swiss: the write grew or split a table.
    pub growing: u32,
    /// Overlapping writes of this kind folded into this finding (since the previous step).
    pub writes: u32,
    /// The id of the executable whose probe reported it (its links' cookie), so a finding of
    /// a process that exited before the daemon met it still finds that binary's symbols.
    pub binary: u32,
    /// `ConcurrentWrites`: the write in progress, `Op as u32`.
    pub other_op: u32,
    pub _pad: u32,
}

/// Occurrences folded in the kernel: a finding whose kind, op, map type, process and both
/// stacks (their `STACKS` keys, which hash every frame) equal an earlier one's is counted in the
/// `REPEATS` entry under the earlier one's `Finding::repeat_key` instead of being sent again. A
/// hot bug then costs one ring record per process and stack pair, and the daemon reads the
/// counts to keep its groups' totals.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Repeats {
    /// Occurrences after the first.
    pub count: u64,
    /// `bpf_ktime_get_ns` of the latest.
    pub last_ns: u64,
}

/// A process that just exec'd (the `EXECS` ring buffer).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecNotice {
    pub tgid: u32,
    /// `map-trace run`: the process was stopped (SIGSTOP from the tracepoint, before its first
    /// instruction) and waits for the daemon's SIGCONT.
    pub held: u32,
}

/// Entries of `REPEATS` (an LRU table: the coldest go first; the daemon stops reading one it
/// cannot find).
pub const MAX_REPEAT_KEYS: u32 = 4096;

/// `OUTPUT[0]`, set by the daemon at load: fold repeats in the kernel (`Repeats`). Off with
/// `--every-occurrence`, which sends every occurrence.
pub const FOLD_REPEATS: u32 = 1;

/// Indexes of the per-CPU `COUNTERS` array.
pub mod counter {
    use crate::probe::Role;

    /// Probe hits: `HITS + role`.
    pub const HITS: u32 = 0;
    /// Findings lost because the ring buffer was full.
    pub const FINDINGS_DROPPED: u32 = HITS + Role::COUNT as u32;
    /// Iterations not tracked because the iteration table was full.
    pub const ITERS_FULL: u32 = FINDINGS_DROPPED + 1;
    /// Maps not tracked because the map table was full.
    pub const MAPS_FULL: u32 = ITERS_FULL + 1;
    /// Writes to a growing map (classic: evacuation in progress; Swiss: the write grew a table).
    pub const WRITES_DURING_GROWTH: u32 = MAPS_FULL + 1;
    /// Writes that fell out of a map's write ring before an iteration step could examine them.
    pub const WRITES_UNSEEN: u32 = WRITES_DURING_GROWTH + 1;
    /// Stacks walked.
    pub const STACKS: u32 = WRITES_UNSEEN + 1;
    /// Stacks deeper than `MAX_STACK_DEPTH`: their outermost frames are lost.
    pub const STACKS_TRUNCATED: u32 = STACKS + 1;
    /// Stacks not captured: the first return address was unreadable.
    pub const STACKS_UNREADABLE: u32 = STACKS_TRUNCATED + 1;
    /// Exec notices lost because their ring buffer was full (`--exe` only).
    pub const EXECS_DROPPED: u32 = STACKS_UNREADABLE + 1;
    /// Writes in progress seen but not reported: the write ended before its stack could be read
    /// and its call site had not been kept (its map was not yet seen shared at its start).
    pub const IN_PROGRESS_UNNAMED: u32 = EXECS_DROPPED + 1;
    /// Findings emitted, by kind: `FINDINGS + kind`.
    pub const FINDINGS: u32 = IN_PROGRESS_UNNAMED + 1;
    /// Findings folded into `REPEATS` rather than sent (also counted in `FINDINGS + kind`).
    pub const REPEATS_FOLDED: u32 = FINDINGS + crate::event::FindingKind::COUNT as u32;
    /// Fatal errors sent with a message the probe could not read (`Fatal::message_addr`): not
    /// counted as findings until the daemon has read it and found it a map's.
    pub const FATALS_UNREAD: u32 = REPEATS_FOLDED + 1;
    pub const COUNT: u32 = FATALS_UNREAD + 1;
}
