//! map-trace: find Go map writes that overlap a map iteration or map growth.
//!
//! The data path, one folder per stage (docs/architecture.md draws it):
//! `discover` (processes, and each Go binary analysed; what a binary file holds is read by the
//! `gobin` crate) → `plan` (which probes, where) → `attach` (load, uprobes, the registry of
//! processes and binaries, keeping probes right across redeploys) → the eBPF programs correlate
//! in the kernel → `events` (ring buffers drained and decoded) → `resolve` (stacks and type
//! names) → `output` (findings, grouping, summary, formats, the inspect document) and `metrics`.
//! `daemon` owns the loop that drives them. Pure logic lives outside the I/O so it is testable
//! without a kernel; `gobin` has no eBPF or async dependency.

pub mod attach;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod discover;
pub mod ebpf;
pub mod error;
pub mod events;
pub mod metrics;
pub mod output;
pub mod plan;
pub mod resolve;
