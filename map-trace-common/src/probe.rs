//! Probe roles: which Go runtime function a uprobe sits on. The numbering is part of the
//! kernel/user contract (it indexes the per-CPU hit counters), so never renumber.

/// What a probed Go runtime function does to a map.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// An iteration begins (`mapiterinit`, Swiss `(*Iter).Init`).
    IterStart = 0,
    /// An iterator takes a step (`mapiternext`, Swiss `(*Iter).Next`).
    IterStep = 1,
    /// A key is inserted or updated (`mapassign*`).
    Assign = 2,
    /// A key is deleted (`mapdelete*`, Swiss `(*Map).Delete`).
    Delete = 3,
    /// The map is cleared (`mapclear`, Swiss `(*Map).Clear`).
    Clear = 4,
    /// The map starts to grow (`hashGrow`) or a Swiss table grows or splits.
    Grow = 5,
    /// An iteration runs to its end: the step function's "finished" exits (low-overhead mode).
    IterEnd = 6,
    /// The runtime's fatal-error function (`runtime.fatal`): Go is about to die of a map
    /// misuse it detected (or of another fatal error, which is not reported).
    Fatal = 7,
}

impl Role {
    pub const COUNT: usize = 8;
    pub const ALL: [Role; Role::COUNT] = [
        Role::IterStart,
        Role::IterStep,
        Role::Assign,
        Role::Delete,
        Role::Clear,
        Role::Grow,
        Role::IterEnd,
        Role::Fatal,
    ];

    /// Stable name used in JSON output and metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            Role::IterStart => "iter_start",
            Role::IterStep => "iter_step",
            Role::Assign => "assign",
            Role::Delete => "delete",
            Role::Clear => "clear",
            Role::Grow => "grow",
            Role::IterEnd => "iter_end",
            Role::Fatal => "fatal",
        }
    }
}
