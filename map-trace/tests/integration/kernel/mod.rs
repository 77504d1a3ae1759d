//! The tests that load eBPF, attach uprobes, run the daemon against live processes or drop
//! privileges: root only. One module per former test binary; each test calls
//! `test_support::kernel_test(GROUP, why)` first with its module's `GROUP`, which fails it
//! loudly without root and keeps tests of different modules from overlapping (see main.rs).

mod all_processes;
mod attach_offsets;
mod containers;
mod daemon_exe;
mod deploy;
mod hot_findings;
mod live_scenarios;
mod metrics_endpoint;
mod metrics_flood;
mod no_buildinfo;
mod run_command;
mod sarif;
mod sentinel;
mod systemd_unit;
mod writes_in_progress;
