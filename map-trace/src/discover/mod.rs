//! Discover the target: which processes run it, and what the daemon will attach to it.
//!
//! `process` finds the executable of a pid (containers included), `exe_match` tells which
//! processes an `--exe` names, and `analysis` turns a Go binary into the probes to attach: the
//! facts come from the `gobin` crate (everything read from the file), the choice of probes from
//! `plan`.

pub mod analysis;
pub mod exe_match;
pub mod process;
