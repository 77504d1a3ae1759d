//! The eBPF programs by name: the daemon attaches each by this name, which is the name of its
//! function in `map-trace-ebpf/src/main.rs`. A typed list instead of string literals, so a
//! program renamed on one side only fails a test without root (which opens the built object and
//! looks for every name), not a run.

/// An eBPF program of the map-trace object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Program {
    IterStartClassic,
    IterStartSwiss,
    IterStep,
    IterEnd,
    Assign,
    DeleteClassic,
    DeleteFast32,
    DeleteFast64,
    DeleteFaststr,
    DeleteSwiss,
    ClearClassic,
    ClearSwiss,
    GrowClassic,
    GrowSwissMap,
    GrowSwissTable,
    FatalError,
    /// The `sched_process_exec` raw tracepoint that tells the daemon about new processes.
    ExecNotify,
    /// An empty uprobe, for `cargo xtask bench`'s baseline.
    BenchEmpty,
}

impl Program {
    pub const ALL: [Program; 18] = [
        Program::IterStartClassic,
        Program::IterStartSwiss,
        Program::IterStep,
        Program::IterEnd,
        Program::Assign,
        Program::DeleteClassic,
        Program::DeleteFast32,
        Program::DeleteFast64,
        Program::DeleteFaststr,
        Program::DeleteSwiss,
        Program::ClearClassic,
        Program::ClearSwiss,
        Program::GrowClassic,
        Program::GrowSwissMap,
        Program::GrowSwissTable,
        Program::FatalError,
        Program::ExecNotify,
        Program::BenchEmpty,
    ];

    /// The program's name in the object: its function's name.
    pub const fn name(self) -> &'static str {
        match self {
            Program::IterStartClassic => "iter_start_classic",
            Program::IterStartSwiss => "iter_start_swiss",
            Program::IterStep => "iter_step",
            Program::IterEnd => "iter_end",
            Program::Assign => "assign",
            Program::DeleteClassic => "delete_classic",
            Program::DeleteFast32 => "delete_fast32",
            Program::DeleteFast64 => "delete_fast64",
            Program::DeleteFaststr => "delete_faststr",
            Program::DeleteSwiss => "delete_swiss",
            Program::ClearClassic => "clear_classic",
            Program::ClearSwiss => "clear_swiss",
            Program::GrowClassic => "grow_classic",
            Program::GrowSwissMap => "grow_swiss_map",
            Program::GrowSwissTable => "grow_swiss_table",
            Program::FatalError => "fatal_error",
            Program::ExecNotify => "exec_notify",
            Program::BenchEmpty => "bench_empty",
        }
    }
}

/// The eBPF maps the daemon opens, by their names in the object (the statics of
/// `map-trace-ebpf/src/maps.rs`).
pub mod map {
    pub const CONFIG: &str = "CONFIG";
    pub const MAPS: &str = "MAPS";
    pub const ITERS: &str = "ITERS";
    pub const STACKS: &str = "STACKS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const FINDINGS: &str = "FINDINGS";
    pub const FATALS: &str = "FATALS";
    pub const EXECS: &str = "EXECS";
    pub const LIVE_DEBT: &str = "LIVE_DEBT";
    pub const REPEATS: &str = "REPEATS";
    pub const OUTPUT: &str = "OUTPUT";
    pub const CHANGES: &str = "CHANGES";
    pub const RUN_CGROUP: &str = "RUN_CGROUP";
    pub const CLOCK: &str = "CLOCK";

    /// Every map the daemon opens by name.
    pub const ALL: [&str; 14] = [
        CONFIG, MAPS, ITERS, STACKS, COUNTERS, FINDINGS, FATALS, EXECS, LIVE_DEBT, REPEATS, OUTPUT,
        CHANGES, RUN_CGROUP, CLOCK,
    ];
}
