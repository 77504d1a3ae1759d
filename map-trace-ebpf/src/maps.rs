//! Every eBPF map, with what its key and value are. All bounded; a full table is counted.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::macros::map;
use aya_ebpf::maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf};
use map_trace_common::config::{MAX_BINARIES, ProcConfig, config_slot};
use map_trace_common::event::{MAX_REPEAT_KEYS, Repeats, counter};
use map_trace_common::fatal::Fatal;
use map_trace_common::stack::{STACK_TABLE_ENTRIES, UserStack};
use map_trace_common::state::{
    IterKey, IterState, MapKey, MapState, RECENT_CPUS, RECENT_PER_CPU, WRITER_SLOTS, WRITER_WAYS,
    Writer,
};
pub use map_trace_common::state::{live_hint_index, writer_group};

/// Binary id → runtime offsets of that executable, written by the daemon before attaching. The
/// id is each uprobe link's attach cookie: a probe shared by every process of one binary (`--exe`)
/// then needs no per-process entry, so a process is traced from its first instruction.
#[map]
pub static CONFIG: Array<ProcConfig> = Array::with_max_entries(MAX_BINARIES, 0);

/// The settings of binary `id` (a link's cookie), if the daemon configured it: an array slot
/// (no hashing, inlined by the verifier) whose owner is checked.
#[inline(always)]
pub fn config(id: u32) -> Option<&'static ProcConfig> {
    CONFIG
        .get(config_slot(id))
        .filter(|c| c.binary == id && id != 0)
}

/// (tgid, map) → write sequence and the last writes, for maps some goroutine ranges over.
#[map]
pub static MAPS: HashMap<MapKey, MapState> = HashMap::with_max_entries(16384, 0);

/// (tgid, goid, map) → one goroutine's iteration over one map.
#[map]
pub static ITERS: HashMap<IterKey, IterState> = HashMap::with_max_entries(16384, 0);

/// hash(tgid, map) → the latest write to begin on that map (`inprogress`). An array, not a
/// hash table: every write of every map stores here, and an array slot is plain stores with no
/// lock or allocation. A slot taken by another map's writer since is recognised by its key.
#[map]
pub static WRITERS: Array<Writer> = Array::with_max_entries(WRITER_SLOTS, 0);

/// `RECENT_PER_CPU` entries per CPU: the `WRITERS` slots (+1; 0 is empty) of the latest writes
/// to begin on that CPU, so the fatal-error probe reaches a write in progress within
/// microseconds (a scan of all of `WRITERS` took a millisecond, by when the writer had moved
/// on). Plain stores of the CPU's own entries; read only at a crash.
#[map]
pub static RECENT: Array<u32> = Array::with_max_entries(RECENT_CPUS * RECENT_PER_CPU, 0);

/// Where this CPU writes next in its `RECENT` entries.
#[map]
pub static RECENT_AT: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Per group of `WRITERS` slots (hash of tgid and map): the `ITERS` entries of maps of that
/// group the kernel inserted, less those it removed (atomic adds; only the kernel writes it).
/// Entries the daemon removes (stale, of exited processes) are counted in `LIVE_DEBT`, which
/// only the daemon writes, after each removal succeeded. `LIVE_HINT - LIVE_DEBT` is thus never
/// below the live entries of the group: when it is 0 no range over the map is in progress, and
/// a write to it skips the `MAPS` lookup.
#[map]
pub static LIVE_HINT: Array<u64> = Array::with_max_entries(WRITER_SLOTS / WRITER_WAYS, 0);

/// Per group: `ITERS` entries the daemon removed (see `LIVE_HINT`).
#[map]
pub static LIVE_DEBT: Array<u64> = Array::with_max_entries(WRITER_SLOTS / WRITER_WAYS, 0);

/// Per group (as `LIVE_HINT`): writes recorded on maps of that group, counted after each is in
/// its map's ring (`write`). A range step that finds its group's count unchanged since its last
/// full step knows no write overlapped it without looking up the map's entry (`iter_step`).
#[map]
pub static GROUP_WRITES: Array<u64> = Array::with_max_entries(WRITER_SLOTS / WRITER_WAYS, 0);

/// Group `index`'s `GROUP_WRITES` count (`u64::MAX` if out of range, which no step has seen).
#[inline(always)]
pub fn group_writes(index: u32) -> u64 {
    GROUP_WRITES.get(index).copied().unwrap_or(u64::MAX)
}

/// Counts a write recorded on a map of group `index`.
#[inline(always)]
pub fn note_group_write(index: u32) {
    if let Some(n) = GROUP_WRITES.get_ptr_mut(index) {
        // SAFETY: an array slot that writers on every CPU count into: a BPF atomic add.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(n, 1) };
    }
}

/// Whether a range over a map of group `index` may be in progress.
#[inline(always)]
pub fn may_be_ranged(index: u32) -> bool {
    let hint = LIVE_HINT.get(index).copied().unwrap_or(u64::MAX);
    let debt = LIVE_DEBT.get(index).copied().unwrap_or(0);
    hint > debt
}

/// Stack key → return addresses, for the daemon to symbolize. LRU: stacks no finding refers to
/// any more age out on their own.
#[map]
pub static STACKS: LruHashMap<u64, UserStack> =
    LruHashMap::with_max_entries(STACK_TABLE_ENTRIES, 0);

/// Where a stack is assembled before it is stored (too big for the 512-byte BPF stack).
#[map]
pub static STACK_SCRATCH: PerCpuArray<UserStack> = PerCpuArray::with_max_entries(1, 0);

/// Counters indexed by `map_trace_common::event::counter`, per CPU so hot paths take no lock.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Findings for the daemon, which polls it every 100 ms (no per-event wakeups). A record takes
/// 104 bytes (the 96-byte `Finding` and the ring's header), so 4 MiB holds about 40,000. A
/// finding repeated with the same stacks is folded into `REPEATS` instead (unless every
/// occurrence is asked for), so a hot bug takes one record; past the buffer's size, new findings
/// are dropped here and counted (`FINDINGS_DROPPED`), never blocking the traced program.
#[map]
pub static FINDINGS: RingBuf = RingBuf::with_byte_size(4 * 1024 * 1024, 0);

/// A sent finding's key (`Finding::repeat_key`) → its later occurrences, folded here rather
/// than sent (`map_trace_common::event::Repeats`); the daemon reads and deletes entries.
#[map]
pub static REPEATS: LruHashMap<u64, Repeats> = LruHashMap::with_max_entries(MAX_REPEAT_KEYS, 0);

/// The daemon's `CLOCK_MONOTONIC` in ns, written at load and at every 100 ms poll: what range
/// steps age their entries by (`Event::tick`), so that they read no clock of their own.
#[map]
pub static CLOCK: Array<u64> = Array::with_max_entries(1, 0);

/// Output settings the daemon writes once at load: `OUTPUT[0]` holds flags such as
/// `FOLD_REPEATS`.
#[map]
pub static OUTPUT: Array<u32> = Array::with_max_entries(1, 0);

/// Per `CONFIG` slot: ranges of that binary whose map changed between start and end, seen in
/// sentinel mode (`sentinel`); the daemon escalates a binary whose count rose.
#[map]
pub static CHANGES: Array<u64> = Array::with_max_entries(MAX_BINARIES, 0);

/// Go's map fatal errors (`fatal`): a crash each, so a few suffice; a full buffer drops the
/// record and counts it with the findings lost.
#[map]
pub static FATALS: RingBuf = RingBuf::with_byte_size(64 * 1024, 0);

/// Where a `Fatal` record is assembled (bigger than the 512-byte BPF stack allows comfortably).
#[map]
pub static FATAL_SCRATCH: PerCpuArray<Fatal> = PerCpuArray::with_max_entries(1, 0);

/// `map-trace run`: the id of the cgroup its command runs in (0: not running a command). An
/// exec in that cgroup is stopped and announced; one elsewhere is not announced at all.
#[map]
pub static RUN_CGROUP: Array<u64> = Array::with_max_entries(1, 0);

/// The tgid of every process that just exec'd, so the daemon can match `--exe` targets as they
/// start instead of polling /proc. Execs are rare next to map operations; each one wakes it.
#[map]
pub static EXECS: RingBuf = RingBuf::with_byte_size(64 * 1024, 0);

#[inline(always)]
pub fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, and programs are not preempted on their CPU.
        unsafe { *slot += 1 };
    }
}
