//! Discover: which processes run a target, and what each runs.
//!
//! `process` finds the executable of a pid (containers included) and `exe_match` tells which
//! processes an `--exe` names. What a binary file holds is read by the `gobin` crate; the probes
//! planned on it are `plan`'s.

pub mod exe_match;
pub mod location;
pub mod process;
