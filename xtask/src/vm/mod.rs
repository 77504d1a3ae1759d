//! `cargo xtask vm-test`: map-trace end to end on other kernels and arm64, in emulated VMs.
//!
//! For each VM of the matrix (kernels.rs): a static map-trace for its arch, the Go scenario
//! fixtures of that arch, busybox and an `/init` (guest.rs) go into an initramfs
//! (initramfs.rs); qemu boots it under TCG with a hard deadline (qemu.rs); the guest reports
//! its outputs on the serial console (serial.rs), and the host judges every scenario run with
//! the checks live_scenarios.rs uses (verdict.rs). Everything a VM produced stays under
//! target/vm/<arch>-<kernel>/.

mod guest;
mod initramfs;
pub mod install;
pub mod kernels;
mod qemu;
mod serial;
mod verdict;

// The expectations and checks of the host scenario tests, shared rather than copied.
use test_support::scenarios;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;

use crate::{cmd, paths};
use guest::{GuestFixture, Plan};
pub use kernels::{Series, VmArch};
use kernels::{Vm, busybox_path};
use verdict::Outcome;

/// The Go builds (default variant) whose scenarios every VM runs: classic maps from the
/// oldest toolchain on, classic by GOEXPERIMENT, and Swiss maps.
const GO_CONFIGS: &[&str] = &[
    "go1.19.8",
    "go1.21.13",
    "go1.23.9",
    "go1.24.11-noswiss",
    "go1.26.6",
    "go1.27.3",
];
/// The Go builds a 6.1 VM runs: the oldest classic toolchain, classic by GOEXPERIMENT, and the
/// newest Swiss. The 6.1 VMs are there for the kernel (its verifier, perf-event uprobes instead
/// of uprobe_multi links, no fatal-error probe), which treats every Go build alike; the
/// per-release code on arm64 is run by the 6.12 VM on all of GO_CONFIGS (and read offline for
/// every release). Three instead of six saved about 5 minutes of emulation per test run.
const GO_CONFIGS_6_1: &[&str] = &["go1.19.8", "go1.24.11-noswiss", "go1.27.3"];
/// Also traced with `map-trace --pid --low-overhead`, on the last of GO_CONFIGS.
const PID_SCENARIO: &str = "cross_delete_u64";

/// Boot and attach, then each scenario run; generous for TCG (a run takes 0.2–2 s here), and
/// still far from hanging the whole test when a guest wedges. CI's machine ran the arm64 VMs
/// 1.5–1.8× slower than this one: a deadline with less slack than that killed a healthy VM there.
const BASE_DEADLINE: Duration = Duration::from_secs(240);
const PER_RUN_DEADLINE: Duration = Duration::from_secs(3);
/// Each attempt at a racy scenario: up to its two seconds of racing, more under TCG.
const PER_RACY_ATTEMPT_DEADLINE: Duration = Duration::from_secs(8);
/// From qemu's start to `/init`'s first mark: 4–9 s under TCG here. A kernel that has not
/// got there by this time is stuck (CI once waited out the whole deadline on one).
const BOOT_DEADLINE: Duration = Duration::from_secs(150);
/// Boots tried before the VM's scenarios are failed as "did not boot".
const BOOT_ATTEMPTS: u32 = 2;

#[derive(Deserialize)]
struct ManifestFixture {
    program: String,
    name: String,
    path: PathBuf,
    go_version: String,
    arch: String,
    variant: String,
    map_impl: String,
    source_dir: PathBuf,
}

#[derive(Deserialize)]
struct Manifest {
    fixtures: Vec<ManifestFixture>,
}

/// Per-scenario counts over every VM that ran.
#[derive(Default, Debug)]
pub struct Tally {
    pub passed: u64,
    pub failed: u64,
}

struct VmReport {
    name: String,
    kernel: String,
    outcomes: Vec<Outcome>,
    wall: f64,
    phases: String,
}

pub fn run(arch: Option<VmArch>, series: Option<Series>, manifest: &Path) -> Result<Tally> {
    let vms = kernels::select(arch, series);
    if vms.is_empty() {
        let all: Vec<String> = kernels::MATRIX.iter().map(Vm::name).collect();
        bail!(
            "no VM of the matrix matches --arch/--kernel; the matrix is {}",
            all.join(", ")
        );
    }
    for vm in &vms {
        for need in [vm.vmlinuz(), busybox_path(vm.arch)] {
            if !need.is_file() {
                bail!(
                    "{} is missing (VM {}); run `cargo xtask setup`",
                    need.display(),
                    vm.name()
                );
            }
        }
    }
    let fixtures = load_manifest(manifest)?;
    let mut daemons: BTreeMap<&str, PathBuf> = BTreeMap::new();
    for vm in &vms {
        if !daemons.contains_key(vm.arch.name()) {
            daemons.insert(vm.arch.name(), build_daemon(vm.arch)?);
        }
    }
    let mut reports = Vec::new();
    for vm in &vms {
        reports.push(run_vm(vm, &fixtures, &daemons[vm.arch.name()])?);
    }
    let mut tally = Tally::default();
    println!("vm-test:");
    for r in &reports {
        let failed = r.outcomes.iter().filter(|o| !o.passed()).count() as u64;
        let passed = r.outcomes.len() as u64 - failed;
        tally.passed += passed;
        tally.failed += failed;
        println!(
            "  {} ({}): {passed} passed, {failed} failed in {:.1}s ({})",
            r.name, r.kernel, r.wall, r.phases
        );
    }
    Ok(tally)
}

fn load_manifest(path: &Path) -> Result<Vec<ManifestFixture>> {
    let text = fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the fixture manifest {}; build it with `cargo xtask fixtures`",
            path.display()
        )
    })?;
    let m: Manifest =
        serde_json::from_str(&text).with_context(|| format!("{}: bad manifest", path.display()))?;
    Ok(m.fixtures)
}

/// Static, so the guest needs no libc; aya-build embeds the eBPF object built for this
/// arch's register layout.
fn build_daemon(arch: VmArch) -> Result<PathBuf> {
    let target = arch.rust_target();
    cmd::run(
        Command::new("cargo")
            .args(["build", "--release", "-p", "map-trace", "--target", target])
            .current_dir(paths::repo_root()),
        "fix the build errors above (`cargo xtask setup` adds the musl targets)",
    )?;
    Ok(paths::target_dir().join(target).join("release/map-trace"))
}

/// The scenario fixtures of `arch` for GO_CONFIGS; a missing one fails all its scenarios.
fn plan_for(arch: VmArch, series: Series, fixtures: &[ManifestFixture]) -> (Plan, Vec<Outcome>) {
    // map-trace reports Go's map fatal errors from 6.12 on (trace/kernel_features.rs): on 6.1
    // a crash yields no fatal_map_error, and the race that only a crash can name is not run.
    let fatal = series != Series::V6_1;
    let racy = move |r: &&scenarios::Racy| r.in_vms && (fatal || !r.dies_naming_writer);
    let mut plan = Plan {
        fixtures: Vec::new(),
        fatal,
        pid_run: (String::new(), PID_SCENARIO),
    };
    let mut missing = Vec::new();
    let configs = match series {
        Series::V6_1 => GO_CONFIGS_6_1,
        _ => GO_CONFIGS,
    };
    for config in configs {
        let name = format!("{config}-{}-default", arch.debian());
        let found = fixtures.iter().find(|f| {
            f.program == "scenarios"
                && f.variant == "default"
                && f.arch == arch.name()
                && f.name == name
                && f.path.is_file()
        });
        let Some(f) = found else {
            let minor = scenarios::go_minor(config.trim_start_matches("go"));
            missing.extend(
                scenarios::scenarios_for(minor)
                    .into_iter()
                    .map(|(s, _)| s)
                    .chain(scenarios::RACY.iter().filter(racy).map(|r| r.name))
                    .map(|s| Outcome {
                        label: format!("{name} {s}"),
                        problems: vec![format!(
                            "fixture scenarios/{name} is not built; run `cargo xtask fixtures`"
                        )],
                    }),
            );
            continue;
        };
        let minor = scenarios::go_minor(&f.go_version);
        plan.pid_run.0 = f.name.clone();
        plan.fixtures.push(GuestFixture {
            name: f.name.clone(),
            host_path: f.path.clone(),
            source_dir: f.source_dir.clone(),
            minor,
            scenarios: scenarios::scenarios_for(minor),
            racy: scenarios::RACY.iter().filter(racy).collect(),
            classic: f.map_impl == "classic",
        });
    }
    (plan, missing)
}

fn initramfs(plan: &Plan, arch: VmArch, daemon: &Path) -> Result<Vec<u8>> {
    let read = |p: &Path| fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    let mut a = initramfs::Archive::new();
    for d in ["bin", "dev", "fx", "proc", "sys", "tmp"] {
        a.dir(d);
    }
    a.char_device("dev/console", 0o600, 5, 1);
    a.file("init", 0o755, guest::render(plan).as_bytes());
    a.file("bin/busybox", 0o755, &read(&busybox_path(arch))?);
    a.file("bin/map-trace", 0o755, &read(daemon)?);
    for f in &plan.fixtures {
        a.file(
            guest::guest_path(&f.name).trim_start_matches('/'),
            0o755,
            &read(&f.host_path)?,
        );
    }
    Ok(a.finish())
}

fn run_vm(vm: &Vm, fixtures: &[ManifestFixture], daemon: &Path) -> Result<VmReport> {
    let name = vm.name();
    let dir = paths::target_dir().join("vm").join(&name);
    // Outputs of an earlier run must not pass for this one's.
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    fs::create_dir_all(dir.join("guest"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let (plan, mut outcomes) = plan_for(vm.arch, vm.series, fixtures);
    let runs: usize = plan.fixtures.iter().map(|f| f.scenarios.len()).sum();
    let initrd = dir.join("initramfs.cpio");
    fs::write(&initrd, initramfs(&plan, vm.arch, daemon)?)?;
    fs::write(dir.join("init"), guest::render(&plan))?;
    let package = fs::read_to_string(vm.package_file()).unwrap_or_default();
    let racy: usize = plan.fixtures.iter().map(|f| f.racy.len()).sum();
    let deadline = BASE_DEADLINE
        + PER_RUN_DEADLINE * runs as u32
        + PER_RACY_ATTEMPT_DEADLINE * (racy as u32 * guest::RACY_ATTEMPTS);
    println!(
        "==> VM {name} ({}): {runs} scenario runs and {racy} racy ones (up to {} attempts each) under one daemon + 2 --pid runs (low-overhead, sentinel), deadline {}s",
        package.trim(),
        guest::RACY_ATTEMPTS,
        deadline.as_secs()
    );
    let boot = boot_until_booted(vm, &initrd, &dir, deadline)?;
    let console = serial::parse(&boot.serial);
    for (file, data) in &console.files {
        fs::write(dir.join("guest").join(file), data)?;
    }
    let unfinished = match boot.ended {
        qemu::Ended::TimedOut => format!(
            "the VM did not finish within {}s and was killed (see {})",
            deadline.as_secs(),
            dir.join("serial.log").display()
        ),
        qemu::Ended::Exited(status) => format!(
            "the guest stopped before the end of its script (qemu: {status}; see {})",
            dir.join("serial.log").display()
        ),
        qemu::Ended::NoBoot => format!(
            "the kernel did not reach /init within {}s in {BOOT_ATTEMPTS} boots (see {})",
            BOOT_DEADLINE.as_secs(),
            dir.join("serial.log").display()
        ),
    };
    outcomes.extend(verdict::judge(&plan, &console, &unfinished));
    let mut results = String::new();
    for o in &outcomes {
        let line = if o.passed() {
            format!("ok   {name} {}", o.label)
        } else {
            format!(
                "FAIL {name} {}\n       {}",
                o.label,
                o.problems.join("\n       ")
            )
        };
        println!("{line}");
        results.push_str(&line);
        results.push('\n');
    }
    fs::write(dir.join("results.txt"), results)?;
    let kernel = console
        .mark_args("BOOTED")
        .and_then(|a| a.get(1).map(|k| k.to_string()))
        .unwrap_or_else(|| format!("{} (did not boot)", package.trim()));
    Ok(VmReport {
        name,
        kernel,
        outcomes,
        wall: boot.seconds,
        phases: phases(&console),
    })
}

/// Boots the VM; a boot that never reaches /init is retried (its console kept as
/// `serial-noboot-N.log`), after showing the kernel's last words.
fn boot_until_booted(vm: &Vm, initrd: &Path, dir: &Path, deadline: Duration) -> Result<qemu::Boot> {
    let log = dir.join("serial.log");
    let mut attempt = 1;
    loop {
        let boot = qemu::boot(
            qemu::command(vm, initrd),
            &log,
            deadline,
            ("@@MT:BOOTED", BOOT_DEADLINE),
            progress,
        )?;
        if !matches!(boot.ended, qemu::Ended::NoBoot) {
            return Ok(boot);
        }
        let kept = dir.join(format!("serial-noboot-{attempt}.log"));
        let _ = fs::copy(&log, &kept);
        println!(
            "    the kernel did not reach /init within {}s (boot {attempt} of {BOOT_ATTEMPTS}); its console ended with:",
            BOOT_DEADLINE.as_secs()
        );
        let lines: Vec<&str> = boot.serial.lines().collect();
        for l in &lines[lines.len().saturating_sub(15)..] {
            println!("      | {l}");
        }
        if attempt == BOOT_ATTEMPTS {
            return Ok(boot);
        }
        attempt += 1;
    }
}

/// Guest-side timings from the marks: boot to /init, attach, the scenario runs, the rest.
fn phases(c: &serial::Console) -> String {
    let t = |m: &str| c.mark_time(m);
    let span = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.1}s", b - a),
        _ => "-".into(),
    };
    format!(
        "boot {}, attach {}, scenarios {}, --pid run and output {}",
        t("BOOTED").map_or("-".into(), |b| format!("{b:.1}s")),
        span(t("BOOTED"), t("ATTACHED")),
        span(t("ATTACHED"), t("SCENARIOS-DONE")),
        span(t("SCENARIOS-DONE"), t("DONE")),
    )
}

/// Shows the guest's progress marks; scenario runs only when their target failed.
fn progress(line: &str) {
    let Some(at) = line.find("@@MT:") else { return };
    let mark = &line[at + 5..];
    let word = mark.split_whitespace().next().unwrap_or_default();
    match word {
        "FILE" | "B" | "END" => {}
        "RUN" if mark.ends_with("exit=0") => {}
        _ => println!("    guest: {mark}"),
    }
}
