//! Attach: load the eBPF object, put each binary's probes in (`probes`), keep a registry of
//! the processes and binaries traced (`targets`), keep probes right when a watched file changes
//! on disk (`exec_guard`, `path_watch`), take them out off the main loop (`detach`), and clean
//! the kernel tables of stale and exited state (`sweep`). `kernel_features` says at start-up
//! what the kernel lacks.

mod detach;
pub mod exec_guard;
pub mod kernel_features;
mod multi;
pub mod path_watch;
pub mod probes;
pub mod sweep;
pub mod targets;

pub use probes::{AttachError, Bpf};
