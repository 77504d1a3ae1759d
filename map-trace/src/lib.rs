//! map-trace: find Go map writes that overlap a map iteration or map growth.
//!
//! Data path: `target` (discover and analyse the Go binary) → `plan` (which probes, where) →
//! attach → events → correlate → report. Pure logic lives outside the I/O so it is testable
//! without a kernel.

pub mod cli;
pub mod config;
pub mod ebpf;
pub mod error;
pub mod group;
pub mod input;
pub mod inspect;
pub mod metrics;
pub mod plan;
pub mod report;
pub mod symbolize;
pub mod target;
pub mod trace;
