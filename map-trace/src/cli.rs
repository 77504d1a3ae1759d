//! Command-line interface.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{DEFAULT_METRICS_ADDR, DutyCycle, Flags, Mode, parse_addr};
use crate::daemon::command::FailOn;
use crate::output::Format;

#[derive(Debug, Parser)]
#[command(
    name = "map-trace",
    version,
    about = "Find Go map writes that overlap a map iteration or map growth, in running unmodified Go programs",
    long_about = "Attaches eBPF uprobes to the Go runtime's map functions of running processes and reports \
writes that overlap an iteration: another goroutine writing while one ranges (a data race), and a \
goroutine inserting, deleting other keys or clearing during its own range; and writes that begin \
while another goroutine's write to the same map is in progress (concurrent_writes). When Go dies \
of a map error (concurrent map writes, concurrent map read and map write, ...) it reports the \
runtime's message, the goroutine Go names and every write in progress Go does not name \
(fatal_map_error). Each finding names \
the map type and both sides' stacks as function (file:line), stripped binaries included; \
repeats of one finding are grouped under a stable finding_id with a count.\n\n\
Examples:\n  sudo map-trace --pid 4242\n  sudo map-trace --exe /usr/local/bin/api --metrics-addr\n  \
sudo map-trace --config /etc/map-trace/config.toml\n  \
sudo map-trace run -- go test ./...\n  sudo map-trace --all --mode sentinel --format json\n\n\
Environment:\n  MAP_TRACE_UPROBE_LINKS=perf|multi  force perf-event uprobes, or require uprobe_multi \
links (default: uprobe_multi links on Linux 6.10+, which need CAP_BPF and CAP_PERFMON but not \
CAP_SYS_ADMIN)",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub trace: TraceArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what map-trace reads from a Go binary: version, map implementation, probe targets
    /// and their attach offsets, and the runtime struct offsets the probes use.
    Inspect(InspectArgs),
    /// Run CMD and trace every Go program it and its descendants run, each from its first
    /// instruction (e.g. `sudo map-trace run -- go test ./...`). Exits with CMD's status, or 66
    /// when findings at or above --fail-on were reported. CMD runs as the user who invoked sudo.
    Run(Box<RunArgs>),
    /// Print a shell completion script for map-trace (bash: save it as
    /// /usr/share/bash-completion/completions/map-trace; zsh: as _map-trace on $fpath; fish:
    /// as ~/.config/fish/completions/map-trace.fish).
    Completions {
        #[arg(value_enum)]
        shell: CompletionShell,
    },
    /// Print map-trace's man page (roff), as the packages install it.
    Manpage,
}

/// The shells `completions` writes for.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

impl CompletionShell {
    pub fn shell(self) -> clap_complete::Shell {
        match self {
            CompletionShell::Bash => clap_complete::Shell::Bash,
            CompletionShell::Zsh => clap_complete::Shell::Zsh,
            CompletionShell::Fish => clap_complete::Shell::Fish,
        }
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub trace: TraceArgs,
    /// The least severity that makes `run` exit 66 (the race detector's status):
    /// error, warning, notice, or never (CMD's own status whatever was found).
    #[arg(long, value_enum, default_value = "error", value_name = "SEVERITY")]
    pub fail_on: FailOn,
    /// Run CMD as root even when invoked through sudo (default: as SUDO_UID/SUDO_GID).
    #[arg(long)]
    pub as_root: bool,
    /// Trace the Go toolchain's own commands too (go, compile, link, vet, …), not only the
    /// programs they build.
    #[arg(long)]
    pub trace_toolchain: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<std::ffi::OsString>,
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Trace this Go process (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Trace every process that runs this Go executable: those running now and those started
    /// later, in containers too (matched by file, or by this path inside the process's own
    /// root); each is detached when it exits (repeatable). Runs until stopped. The path is
    /// followed anew whenever it changes: a symlink traces the file it points to now, and a
    /// file deployed under this name (cp over it, mv, install, a symlink flip) is analysed
    /// again before its first process runs.
    #[arg(long = "exe", value_name = "PATH")]
    pub exes: Vec<PathBuf>,
    /// Trace every Go process on this host, present and future (containers included), each
    /// with probes of its own while it runs; non-Go programs cost one cached check per file.
    #[arg(long)]
    pub all: bool,
    /// With --all: trace only executables whose path (as the process sees it) matches this
    /// shell pattern (`*` matches `/` too; repeatable).
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// With --all: never trace executables whose path matches this shell pattern (repeatable;
    /// wins over --include).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// With --all: binaries traced at once at most; processes of more are skipped and counted
    /// [default: 256].
    #[arg(long, value_name = "N")]
    pub max_binaries: Option<usize>,
    /// Stop after this long (e.g. 30s, 5m); default: until interrupted or the --pid targets exit.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Output format for findings: human (a block per new finding group, then rate-limited
    /// "seen N×" lines), or json (one "finding" object per new group, with its stacks, then
    /// rate-limited "update" objects with its count) [default: human].
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Serve Prometheus metrics at http://ADDR/metrics and liveness at /healthz. Without a
    /// value: 127.0.0.1:9464 (loopback only).
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = DEFAULT_METRICS_ADDR, value_parser = parse_addr)]
    pub metrics_addr: Option<SocketAddr>,
    /// Attach the probes only ON out of every PERIOD (e.g. 1s/10s) and detach them the rest of
    /// the time, for always-on production use: the traced programs pay nothing while detached,
    /// and a race that keeps happening is still found within about one PERIOD.
    #[arg(long, value_name = "ON/PERIOD", value_parser = DutyCycle::parse)]
    pub duty_cycle: Option<DutyCycle>,
    /// How much to probe [default: full]. full: every range step and every write, both sides
    /// of every overlap named. low-overhead: range starts and ends and every write, no trap per
    /// step; writes inside a range are reported when it finishes, ranges left early (break,
    /// return, panic) never. sentinel: range starts and ends only, compared by the map's
    /// header (a map that gained elements during a range is reported, without its writer);
    /// any change attaches the full probes to that executable for --escalate-for, to name the
    /// writer next time. The mode to leave on in production.
    #[arg(long, value_enum, value_name = "MODE")]
    pub mode: Option<Mode>,
    /// Same as --mode low-overhead.
    #[arg(long, conflicts_with = "mode")]
    pub low_overhead: bool,
    /// Sentinel mode: how long an executable keeps the full probes after a change [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub escalate_for: Option<Duration>,
    /// Sentinel mode: least time between two escalations of one executable [default: 1m].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub escalate_every: Option<Duration>,
    /// Print every occurrence in full (JSON: one "finding" object each), not one per finding
    /// group followed by rate-limited updates. A bug that fires in a hot loop then writes a line
    /// per occurrence.
    #[arg(long)]
    pub every_occurrence: bool,
    /// At exit, write the finding groups as a SARIF 2.1.0 log to FILE (one result per group:
    /// rule = kind, the writer's and the other side's first frames as locations, both stacks
    /// as thread flows), for code scanning and CI. Refused at start if FILE cannot be written.
    #[arg(long, value_name = "FILE")]
    pub sarif: Option<PathBuf>,
    /// SARIF paths under DIR are written relative to it [default: the working directory].
    #[arg(long, value_name = "DIR")]
    pub source_root: Option<PathBuf>,
    /// Read settings from this TOML file (keys: pid, exe, duration, format, metrics_addr, duty_cycle,
    /// all, include, exclude, max_binaries, mode, low_overhead, escalate_for, escalate_every,
    /// every_occurrence, sarif, source_root);
    /// flags given on the command line override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Check the settings (the --config file merged with the flags), print them, and exit:
    /// 0 when valid, 2 otherwise.
    #[arg(long)]
    pub check_config: bool,
}

impl TraceArgs {
    pub fn flags(&self) -> Flags {
        Flags {
            pids: self.pids.clone(),
            exes: self.exes.clone(),
            duration: self.duration,
            format: self.format,
            metrics_addr: self.metrics_addr,
            duty_cycle: self.duty_cycle,
            mode: self.mode.or(self.low_overhead.then_some(Mode::LowOverhead)),
            all: self.all.then_some(true),
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            max_binaries: self.max_binaries,
            escalate_for: self.escalate_for,
            escalate_every: self.escalate_every,
            every_occurrence: self.every_occurrence.then_some(true),
            sarif: self.sarif.clone(),
            source_root: self.source_root.clone(),
            command: None,
        }
    }
}

impl RunArgs {
    pub fn flags(&self) -> Flags {
        Flags {
            command: Some(crate::config::RunCommand {
                argv: self.command.clone(),
                fail_on: self.fail_on,
                keep_root: self.as_root,
                toolchain: self.trace_toolchain,
            }),
            ..self.trace.flags()
        }
    }
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Path of a Go executable.
    #[arg(required_unless_present = "pid", conflicts_with = "pid")]
    pub path: Option<PathBuf>,
    /// Inspect the executable of this running process (containers included).
    #[arg(long)]
    pub pid: Option<u32>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}
