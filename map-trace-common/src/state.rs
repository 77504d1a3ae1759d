//! Keys and values of the kernel-side correlation tables. Userspace reads them only to sweep
//! stale entries, but the layout is shared so it can.

/// Writes a map remembers for the iterations that have not stepped since.
pub const WRITE_RING: usize = 4;

/// A map of one process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MapKey {
    pub tgid: u32,
    pub _pad: u32,
    pub map: u64,
}

/// One write to a tracked map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteRecord {
    /// The map's write sequence number of this write (0: empty slot).
    pub seq: u64,
    pub goid: u64,
    /// The writer's `g`: compared with the iterating goroutine's (see `IterKey`).
    pub g: u64,
    pub ns: u64,
    /// The writer's stack (`STACKS` key; 0: not captured).
    pub stack: u64,
    pub op: u32,
    pub growing: u32,
}

/// A map that some goroutine has ranged over: its writes are recorded.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapState {
    /// Writes so far; iterations remember the value at their last step.
    pub write_seq: u64,
    /// Last iteration step on this map (for sweeping).
    pub last_step_ns: u64,
    /// Iterations of this map that may still be in progress (`ITERS` entries not known to have
    /// ended). While 0, writes are not recorded: no step can follow them. Only ever too high
    /// (the daemon's sweep removes iterations without lowering it), which costs time, not
    /// findings.
    pub live: u64,
    /// The iterator and goroutine (`g`) of the last step that continued an iteration, so any
    /// writer can check whether that iteration has since ended (0: none known).
    pub last_it: u64,
    pub last_g: u64,
    pub ring: [WriteRecord; WRITE_RING],
}

/// One goroutine's iteration over one map. Keyed by goroutine and map, not by iterator
/// address: iterators live on goroutine stacks, which move and reuse slots.
///
/// The goroutine is its `g` (a register), not its id: reading the id from `g` was a quarter of
/// a range step's cost. No two live goroutines share a `g`; a `g` reused by a new goroutine can
/// meet an entry its previous owner left (a range it left by `break`), but a range's first step
/// always starts its entry afresh (the iterator's key is nil then) and only steps report, so
/// such an entry never reports for the new goroutine. Ids are read where they are reported.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IterKey {
    pub tgid: u32,
    pub _pad: u32,
    pub g: u64,
    pub map: u64,
}

/// `IterState::flags`: what the iterating goroutine itself did since its last step.
pub const SELF_INSERTED: u32 = 1 << 0;
pub const SELF_DELETED_OTHER: u32 = 1 << 1;
pub const SELF_CLEARED: u32 = 1 << 2;
/// One of those writes grew the map.
pub const SELF_GREW: u32 = 1 << 3;
/// An assign by the iterating goroutine waits for the insert check (`IterState::pending`).
pub const ASSIGN_PENDING: u32 = 1 << 4;

/// The latest write of one kind by the iterating goroutine itself since its last step.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SelfWrite {
    pub ns: u64,
    /// `STACKS` key of the write's stack (0: not captured).
    pub stack: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IterState {
    /// Iterator address at the last step (for reading the visited key).
    pub it: u64,
    /// The map's `write_seq` at the last step: writes after it overlap the iteration.
    pub seen_seq: u64,
    pub last_step_ns: u64,
    pub inserted: SelfWrite,
    pub deleted_other: SelfWrite,
    pub cleared: SelfWrite,
    pub flags: u32,
    pub self_deletes_other: u32,
    /// Sentinel mode: the map's element count and growth field when the range began, valid
    /// when `snapshot` has `SNAPSHOT_TAKEN`.
    pub start_count: u64,
    pub start_growth: u64,
    pub snapshot: u32,
    /// Nonzero once a continuing step stored this iteration as its map's last
    /// (`MapState::last_it`, `last_g`), by which a writer can tell that it ended: only then may
    /// a step take the quiet path (`GROUP_WRITES`), which skips the map's entry.
    pub announced: u32,
    /// With `ASSIGN_PENDING`: the goroutine's latest assign to the map, and the map's count
    /// before it. Whether it inserted (the count grew) is settled at the goroutine's next step
    /// of this range or its next write to the map, whichever comes first. Kept here rather than
    /// in a table of its own keyed by goroutine, so that no step pays a second lookup for it.
    pub pending: SelfWrite,
    pub pending_count: u64,
    /// The map's group's `GROUP_WRITES` count, read before `seen_seq` at the last full step:
    /// while it is unchanged, no write to any map of the group has been recorded since.
    pub seen_group: u64,
}

/// How long a range may step on the quiet path (`IterState::quiet`) before a full step refreshes
/// its entries' ages: well inside the daemon's sweep of entries without one.
pub const QUIET_FOR_NS: u64 = 1_000_000_000;

impl IterState {
    /// Whether this iteration's next step, from iterator `it`, has nothing to examine in its
    /// map's `MAPS` entry and may skip looking it up (a hash lookup, a quarter of a step):
    /// - no write was recorded on any map of its group since its last full step (`group` is
    ///   the group's `GROUP_WRITES` count now, read before the map's sequence would be);
    /// - its own goroutine wrote nothing to the map meanwhile (`flags`: no insert check due);
    /// - a full step has stored it as the map's last iteration (`announced`), from the same
    ///   iterator address, so a writer can still tell when it has ended;
    /// - that was less than `QUIET_FOR_NS` ago by the daemon's clock (`tick`).
    #[inline(always)]
    pub fn quiet(&self, it: u64, group: u64, tick: u64) -> bool {
        self.flags == 0
            && self.seen_group == group
            && self.announced != 0
            && self.it == it
            && tick.wrapping_sub(self.last_step_ns) < QUIET_FOR_NS
    }
}

/// `IterState::snapshot`: the start's header was read.
pub const SNAPSHOT_TAKEN: u32 = 1 << 0;
/// Another goroutine's write was in progress (the map's writing flag set) when the range began.
pub const SNAPSHOT_BUSY: u32 = 1 << 1;

/// Slots of the `WRITERS` array: each map has four at `hash(tgid, map)`, one per writing
/// goroutine by a hash of its `g`.
pub const WRITER_SLOTS: u32 = 65536;
/// Slots per map in `WRITERS` (a group); `LIVE_HINT` and `LIVE_DEBT` have one entry per group.
pub const WRITER_WAYS: u32 = 4;

/// The first of the map's `WRITER_WAYS` slots in `WRITERS`.
#[inline(always)]
pub fn writer_group(tgid: u32, map: u64) -> u32 {
    // Map headers are 8-byte aligned heap objects: multiply so neighbours spread.
    let h = (map ^ ((tgid as u64) << 40)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((h >> 32) as u32) & (WRITER_SLOTS - 1) & !(WRITER_WAYS - 1)
}

/// The map's entry in `LIVE_HINT` and `LIVE_DEBT`: its group of `WRITERS` slots. The kernel
/// and the daemon must agree on it, hence one definition here.
#[inline(always)]
pub fn live_hint_index(tgid: u32, map: u64) -> u32 {
    writer_group(tgid, map) / WRITER_WAYS
}

/// CPUs whose latest writes are noted in `RECENT`, where the fatal-error probe looks; writes
/// on CPUs past this are not named at a crash.
pub const RECENT_CPUS: u32 = 256;
/// Latest writes noted per CPU (a power of two).
pub const RECENT_PER_CPU: u32 = 16;

/// The latest write of one goroutine to begin on a map, as its entry probe saw it: who, and
/// where its stack walk starts, taken from registers, and its call site (one stack read on
/// amd64). A later write or range step that finds the map's writing flag set names this
/// writer and walks its stack then, while it is still inside its write (its callers' frames
/// stay put). Plain stores from any CPU, no lock: `tgid` and `map` say whose the slot is now,
/// and the walk checks that `sp` still lies in the goroutine's stack (a stack that moved is
/// not walked).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Writer {
    pub map: u64,
    /// The map's type descriptor, for a write named when its process dies (`fatal`).
    pub map_type: u64,
    /// The writing goroutine's `g`, to read its id and stack bounds when it is named.
    pub g: u64,
    /// amd64: SP at the entry (where the return address is); arm64: LR (the return address).
    pub ret: u64,
    /// The first two return addresses, read at the entry (the second only when the map is
    /// shared; 0: not read): the write's call site (through a runtime wrapper, on Swiss
    /// deletes and clears), right even when the write has ended before its stack is walked.
    pub pcs: [u64; 2],
    pub fp: u64,
    pub ns: u64,
    pub tgid: u32,
    pub op: u32,
    /// Both implementations: a growth probe fired inside this write.
    pub growing: u32,
    pub _pad: u32,
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    fn continuing(it: u64, group: u64, tick: u64) -> IterState {
        IterState {
            it,
            seen_group: group,
            last_step_ns: tick,
            announced: 1,
            ..IterState::default()
        }
    }

    #[test]
    fn a_step_skips_the_map_only_when_nothing_can_have_changed() {
        let (it, group, tick) = (0xc000_1000, 7, 5_000_000_000);
        let st = continuing(it, group, tick);
        assert!(st.quiet(it, group, tick));
        assert!(st.quiet(it, group, tick + QUIET_FOR_NS - 1));
        // A write recorded anywhere in the group since.
        assert!(!st.quiet(it, group + 1, tick));
        // The goroutine's own write to the map (an insert check due, or a delete noted).
        for flag in [
            ASSIGN_PENDING,
            SELF_INSERTED,
            SELF_DELETED_OTHER,
            SELF_CLEARED,
            SELF_GREW,
        ] {
            assert!(!IterState { flags: flag, ..st }.quiet(it, group, tick));
        }
        // Not yet stored as the map's last iteration (its first continuing step).
        assert!(!IterState { announced: 0, ..st }.quiet(it, group, tick));
        // The iterator moved with its goroutine's stack.
        assert!(!st.quiet(it + 0x2000, group, tick));
        // Due for a full step that refreshes the entries' ages.
        assert!(!st.quiet(it, group, tick + QUIET_FOR_NS));
    }

    #[test]
    fn a_map_has_one_group_of_writer_slots_and_one_hint() {
        let groups = WRITER_SLOTS / WRITER_WAYS;
        let mut seen = std::collections::HashSet::new();
        for i in 0..10_000u64 {
            // Heap-like addresses: 8-byte aligned, close together.
            let (tgid, map) = ((i % 7) as u32 + 100, 0x00c0_0001_0000 + i * 48);
            let g = writer_group(tgid, map);
            assert_eq!(g % WRITER_WAYS, 0);
            assert!(g + WRITER_WAYS <= WRITER_SLOTS);
            assert_eq!(live_hint_index(tgid, map), g / WRITER_WAYS);
            assert_eq!(writer_group(tgid, map), g, "stable");
            seen.insert(g);
        }
        // Neighbouring maps spread over the groups instead of piling into a few.
        assert!(
            seen.len() > (groups as usize) / 4,
            "{} groups used",
            seen.len()
        );
    }
}
