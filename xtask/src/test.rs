//! `cargo xtask test`: the one test command (README and .ci/run call it). Runs each step in
//! order and stops at the first failure.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

use crate::toolchains::pins::EBPF_TOOLCHAIN;
use crate::{cmd, fixtures, paths, setup, vm};

/// Totals over every `test result:` line that cargo test printed.
#[derive(Default, Debug, PartialEq, Eq)]
struct Counts {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Counts {
    /// The plain `N passed, N failed` form that CI reads.
    fn summary(&self) -> String {
        format!(
            "summary: {} passed, {} failed, {} skipped",
            self.passed, self.failed, self.ignored
        )
    }

    /// `test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s`
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

/// The `cargo test` runs: everything but the kernel part of the integration tests, then that
/// part alone, so the CPU-heavy offline tests (the fixture matrix) never run beside the tracing
/// tests, whose timing they would disturb (as when they were separate binaries). Arguments
/// given to `cargo xtask test` make one run, as given.
fn test_runs(user: &[String]) -> Vec<Vec<String>> {
    if !user.is_empty() {
        return vec![user.to_vec()];
    }
    let owned = |a: &[&str]| a.iter().map(|s| s.to_string()).collect();
    vec![
        owned(&["--", "--skip", "kernel::"]),
        owned(&["-p", "map-trace", "--test", "integration", "--", "kernel::"]),
    ]
}

pub fn run(cargo_test_args: &[String]) -> Result<()> {
    cmd::require_root(
        "cargo xtask test",
        "the eBPF tests load programs and attach real uprobes",
    )?;
    let started = Instant::now();
    let root = paths::repo_root();
    let mut timings: Vec<(&str, f64)> = Vec::new();
    let mut step = |name: &'static str, f: &mut dyn FnMut() -> Result<()>| -> Result<()> {
        println!("==> {name}");
        let t = Instant::now();
        let result = f();
        // Said for a failed step too: CI's log is where its time budget is read.
        println!(
            "==> {name}: {} in {:.1}s",
            if result.is_ok() { "done" } else { "failed" },
            t.elapsed().as_secs_f64()
        );
        result.with_context(|| format!("step `{name}` failed"))?;
        timings.push((name, t.elapsed().as_secs_f64()));
        Ok(())
    };

    step("setup", &mut setup::run)?;
    let mut manifest = None;
    step("fixtures", &mut || {
        manifest = Some(fixtures::run(None)?);
        Ok(())
    })?;
    let manifest = manifest.expect("the fixtures step sets it");
    step("fmt", &mut || {
        cmd::run(
            Command::new("cargo")
                .args(["fmt", "--all", "--", "--check"])
                .current_dir(root),
            "run `cargo fmt --all` and commit the result",
        )
    })?;
    step("clippy", &mut || {
        cmd::run(
            Command::new("cargo")
                .args([
                    "clippy",
                    "-p",
                    "gobin",
                    "-p",
                    "map-trace",
                    "-p",
                    "map-trace-common",
                    "-p",
                    "test-support",
                    "-p",
                    "xtask",
                ])
                .args(["--all-targets", "--", "-D", "warnings"])
                .current_dir(root),
            "fix the clippy findings above",
        )
    })?;
    step("clippy-ebpf", &mut || {
        // aya-build passes the register layout as --cfg bpf_target_arch; lint both layouts the
        // probes read (x86_64 and aarch64), each in its own target dir so they stay cached.
        for arch in ["x86_64", "aarch64"] {
            cmd::run(
                Command::new("cargo")
                    .arg(format!("+{EBPF_TOOLCHAIN}"))
                    .args([
                        "clippy",
                        "--target",
                        "bpfel-unknown-none",
                        "-Z",
                        "build-std=core",
                        "--release",
                    ])
                    .arg("--target-dir")
                    .arg(paths::target_dir().join(format!("ebpf-clippy-{arch}")))
                    .args(["--", "-D", "warnings"])
                    .env(
                        "CARGO_ENCODED_RUSTFLAGS",
                        format!("--cfg=bpf_target_arch=\"{arch}\""),
                    )
                    .current_dir(root.join("map-trace-ebpf")),
                "fix the clippy findings above in map-trace-ebpf",
            )?;
        }
        Ok(())
    })?;
    // The release artifacts the packaging tests check; the VM step reuses the same static builds.
    step("dist", &mut crate::dist::run)?;
    let mut counts = Counts::default();
    step("cargo test", &mut || {
        for args in test_runs(cargo_test_args) {
            // No --workspace: the default members exclude map-trace-ebpf, which only builds
            // for bpf.
            let mut test = Command::new("cargo");
            test.arg("test")
                .args(&args)
                .env("MAP_TRACE_FIXTURES", &manifest)
                .current_dir(root);
            let status = cmd::run_tee(&mut test, "see the cargo output above", |l| {
                counts.add_line(l)
            })?;
            if !status.success() {
                println!("{}", counts.summary());
                bail!(
                    "`cargo test {}` failed ({status}): {} failed, {} passed; fix the failing tests above",
                    args.join(" "),
                    counts.failed,
                    counts.passed
                );
            }
        }
        Ok(())
    })?;
    step("vm", &mut || {
        let t = vm::run(None, None, &manifest)?;
        counts.passed += t.passed;
        counts.failed += t.failed;
        if t.failed > 0 {
            println!("{}", counts.summary());
            bail!(
                "{} of {} VM scenario runs failed; see the FAIL lines above and target/vm/",
                t.failed,
                t.failed + t.passed
            );
        }
        Ok(())
    })?;

    let steps: Vec<String> = timings
        .iter()
        .map(|(n, s)| format!("{n} {s:.1}s"))
        .collect();
    println!(
        "xtask test ok in {:.1}s ({})",
        started.elapsed().as_secs_f64(),
        steps.join(", ")
    );
    // Last line, so that CI finds the counts at the end.
    println!("{}", counts.summary());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_tests_run_apart_unless_told_otherwise() {
        let runs = test_runs(&[]);
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0], ["--", "--skip", "kernel::"]);
        assert_eq!(runs[1].last().map(String::as_str), Some("kernel::"));
        let mine = vec!["inspect".to_string(), "--".into(), "--nocapture".into()];
        assert_eq!(test_runs(&mine), vec![mine.clone()]);
    }

    #[test]
    fn counts_add_up() {
        let mut c = Counts::default();
        c.add_line("test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s");
        c.add_line("test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.00s");
        c.add_line("running 5 tests");
        assert_eq!(
            c,
            Counts {
                passed: 15,
                failed: 2,
                ignored: 1
            }
        );
    }
}
