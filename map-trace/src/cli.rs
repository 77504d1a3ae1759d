//! Command-line interface.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::trace::Format;

#[derive(Debug, Parser)]
#[command(
    name = "map-trace",
    version,
    about = "Find Go map writes that overlap a map iteration or map growth, in running unmodified Go programs",
    long_about = "Attaches eBPF uprobes to the Go runtime's map functions of running processes and reports \
writes that overlap an iteration: another goroutine writing while one ranges (a data race), and a \
goroutine inserting, deleting other keys or clearing during its own range. Each finding names \
the map type and both sides' stacks as function (file:line), stripped binaries included; \
repeats of one finding are grouped under a stable finding_id with a count.\n\n\
Example: sudo map-trace --pid 4242",
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
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Trace this Go process (repeatable).
    #[arg(long = "pid", value_name = "PID", required = true)]
    pub pids: Vec<u32>,
    /// Stop after this long (e.g. 30s, 5m); default: until interrupted or the targets exit.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Output format for findings: human (a block per new finding group, then rate-limited
    /// "seen N×" lines), or json (one object per occurrence, with finding_id and count).
    #[arg(long, value_enum, default_value = "human")]
    pub format: Format,
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
