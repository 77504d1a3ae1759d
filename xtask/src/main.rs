//! Developer tasks for map-trace, run as `cargo xtask <task>`.

mod bench;
mod cmd;
mod debian_image;
mod demo;
mod dist;
mod fixtures;
mod parallel;
mod paths;
mod setup;
mod test;
mod toolchains;
mod vm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Developer tasks for map-trace")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing (Debian packages, rustup components and targets, bpf-linker, Go
    /// toolchains, qemu with the VM tests' kernels and busybox). Needs root.
    Setup,
    /// Build the Go fixture matrix into target/fixtures and write target/fixtures/manifest.json.
    Fixtures {
        /// Only build fixtures whose `<program>/<name>` contains this (plus their default twins).
        #[arg(long, value_name = "SUBSTRING")]
        only: Option<String>,
    },
    /// The test command: setup, fixtures, fmt, clippy (host and eBPF), cargo test, VM tests. Needs root.
    Test {
        /// Passed to `cargo test`, e.g. `-- inspect` or `-p map-trace -- --nocapture`.
        #[arg(last = true)]
        cargo_test_args: Vec<String>,
    },
    /// Build a Go program with the newest toolchain, start it and run map-trace on it. Needs root.
    Demo,
    /// Boot emulated VMs (TCG) with Debian's kernels and run map-trace on the Go scenarios
    /// inside them: arm64 on 6.12 and 6.1, x86_64 on 6.1 unless narrowed. Outputs stay in
    /// target/vm/<arch>-<kernel>/. Needs `cargo xtask setup`; builds the Go fixtures that are
    /// missing or stale first (as `cargo xtask fixtures` does).
    VmTest {
        /// Only the VMs of this arch.
        #[arg(long)]
        arch: Option<vm::VmArch>,
        /// Only the VMs with this kernel series.
        #[arg(long)]
        kernel: Option<vm::Series>,
    },
    /// Measure map-trace's overhead (probe cost, traps per map call, cost to a service-like Go
    /// program vs -race, daemon CPU/RSS, attach time); writes target/bench/results.json. Needs root.
    Bench,
    /// Build the release artifacts into target/dist: static (musl) binaries for x86_64 and
    /// aarch64, a .deb of each (binary, systemd unit, example config, man page, bash/zsh/fish
    /// completions) and SHA256SUMS.
    Dist,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::run().map(|()| ExitCode::SUCCESS),
        Task::Fixtures { only } => fixtures::run(only.as_deref()).map(|_| ExitCode::SUCCESS),
        Task::Test { cargo_test_args } => test::run(&cargo_test_args).map(|()| ExitCode::SUCCESS),
        Task::Demo => demo::run(),
        Task::Bench => bench::run().map(|()| ExitCode::SUCCESS),
        Task::Dist => dist::run().map(|()| ExitCode::SUCCESS),
        // The scenarios run on the fixture matrix: a fresh checkout has none built yet.
        Task::VmTest { arch, kernel } => fixtures::run(None).and_then(|manifest| {
            vm::run(arch, kernel, &manifest).map(|t| {
                if t.failed == 0 {
                    ExitCode::SUCCESS
                } else {
                    eprintln!(
                        "xtask: {} of {} VM scenario runs failed",
                        t.failed,
                        t.failed + t.passed
                    );
                    ExitCode::FAILURE
                }
            })
        }),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            // `{:#}` keeps the whole context chain on the first line; a tool's own output
            // (such as go build errors) follows on the next lines.
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_args_pass_through() {
        let cli =
            Cli::try_parse_from(["xtask", "test", "--", "inspect", "--", "--nocapture"]).unwrap();
        let Task::Test { cargo_test_args } = cli.task else {
            panic!("not the test task")
        };
        assert_eq!(cargo_test_args, ["inspect", "--", "--nocapture"]);
    }

    #[test]
    fn vm_test_narrows_the_matrix() {
        let cli = Cli::try_parse_from(["xtask", "vm-test", "--arch", "aarch64", "--kernel", "6.1"])
            .unwrap();
        let Task::VmTest { arch, kernel } = cli.task else {
            panic!("not vm-test")
        };
        assert_eq!(arch, Some(vm::VmArch::Aarch64));
        assert_eq!(kernel, Some(vm::Series::V6_1));
        assert!(Cli::try_parse_from(["xtask", "vm-test", "--kernel", "5.15"]).is_err());
    }
}
