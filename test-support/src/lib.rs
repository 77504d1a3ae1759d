//! What map-trace's test binaries and `cargo xtask vm-test` share, so that each exists once:
//! the expectations and checks of the scenario programs (`markers`, `scenarios`), by which
//! xtask also judges the runs it makes in VMs.

pub mod markers;
pub mod scenarios;
