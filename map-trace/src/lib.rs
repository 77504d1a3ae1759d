//! map-trace: find Go map writes that overlap a map iteration or map growth.
//!
//! Data path: `discover` (the processes, and the Go binary analysed: its facts read by the
//! `gobin` crate) → `plan` (which probes, where) → attach → events → correlate → report. Pure
//! logic lives outside the I/O so it is testable without a kernel; everything read from a Go
//! binary file is in `gobin`, which has no eBPF or async dependency.

pub mod cli;
pub mod config;
pub mod discover;
pub mod ebpf;
pub mod error;
pub mod group;
pub mod inspect;
pub mod metrics;
pub mod plan;
pub mod report;
pub mod symbolize;
pub mod trace;
