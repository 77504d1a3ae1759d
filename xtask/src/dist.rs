//! `cargo xtask dist`: what a release ships, in target/dist/:
//! - `map-trace-VERSION-ARCH`: a static (musl) binary for x86_64 and aarch64, the eBPF object
//!   embedded (the build script builds it for the target arch);
//! - `map-trace_VERSION_DEBARCH.deb`: that binary as /usr/bin/map-trace, the systemd unit, the
//!   example config (a conffile), the man page and bash, zsh and fish completions, all generated
//!   from the clap definitions by the binary itself;
//! - `SHA256SUMS` of all of them.
//!
//! Cross-linking aarch64 needs no C toolchain: the musl targets link self-contained with the
//! rust-lld that rustup ships (.cargo/config.toml); the VM tests run these same builds.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::cmd;
use crate::paths::{repo_root, target_dir};

/// The workspace version (map-trace's `version.workspace = true`).
fn version() -> Result<String> {
    let toml = std::fs::read_to_string(repo_root().join("Cargo.toml"))?;
    toml.lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .map(str::to_string)
        .context("no version in the workspace Cargo.toml")
}

struct Arch {
    triple: &'static str,
    name: &'static str,
    deb: &'static str,
}

const ARCHES: [Arch; 2] = [
    Arch {
        triple: "x86_64-unknown-linux-musl",
        name: "x86_64",
        deb: "amd64",
    },
    Arch {
        triple: "aarch64-unknown-linux-musl",
        name: "aarch64",
        deb: "arm64",
    },
];

pub fn run() -> Result<()> {
    let version = version()?;
    let out = target_dir().join("dist");
    std::fs::create_dir_all(&out)?;
    let mut made = Vec::new();
    for a in &ARCHES {
        println!("==> building map-trace {version} for {}", a.triple);
        // The same static build the VM tests run in their guests (.cargo/config.toml links
        // aarch64 with rust-lld).
        cmd::run(
            Command::new("cargo").current_dir(repo_root()).args([
                "build",
                "--release",
                "-p",
                "map-trace",
                "--bin",
                "map-trace",
                "--target",
                a.triple,
            ]),
            "`cargo xtask setup` adds the musl targets",
        )?;
        let built = target_dir().join(a.triple).join("release/map-trace");
        let bin = out.join(format!("map-trace-{version}-{}", a.name));
        std::fs::copy(&built, &bin).with_context(|| format!("copying {}", built.display()))?;
        made.push(bin.clone());
        made.push(deb(&out, &version, a, &bin)?);
    }
    let sums = made
        .iter()
        .map(|p| {
            let o = cmd::output(
                Command::new("sha256sum")
                    .arg(p.file_name().unwrap())
                    .current_dir(&out),
                "coreutils' sha256sum",
            )?;
            Ok(o)
        })
        .collect::<Result<String>>()?;
    std::fs::write(out.join("SHA256SUMS"), sums)?;
    println!("==> {}:", out.display());
    for p in &made {
        println!("    {}", p.file_name().unwrap().to_string_lossy());
    }
    println!("    SHA256SUMS");
    Ok(())
}

/// The binary generates its own man page and completions; an aarch64 binary cannot run here,
/// so they come from this host's build of the same sources (identical clap definitions).
fn generated(version: &str, what: &[&str]) -> Result<Vec<u8>> {
    let host = target_dir()
        .join("dist")
        .join(format!("map-trace-{version}-{}", std::env::consts::ARCH));
    let o = Command::new(&host)
        .args(what)
        .output()
        .with_context(|| format!("running {}", host.display()))?;
    if !o.status.success() {
        bail!(
            "{} {what:?} failed: {}",
            host.display(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(o.stdout)
}

fn deb(out: &Path, version: &str, a: &Arch, bin: &Path) -> Result<PathBuf> {
    let root = out.join(format!("deb-{}", a.deb));
    let _ = std::fs::remove_dir_all(&root);
    let put = |rel: &str, bytes: &[u8], mode: u32| -> Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap())?;
        std::fs::write(&p, bytes)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    put("usr/bin/map-trace", &std::fs::read(bin)?, 0o755)?;
    // The unit names /usr/local/bin (a source install); the package's binary is in /usr/bin.
    let unit = std::fs::read_to_string(repo_root().join("dist/systemd/map-trace.service"))?
        .replace("/usr/local/bin/map-trace", "/usr/bin/map-trace");
    put(
        "usr/lib/systemd/system/map-trace.service",
        unit.as_bytes(),
        0o644,
    )?;
    // Not installed as a drop-in: it adds CAP_SYS_ADMIN, wanted only on kernels before 6.10 or
    // for --exe's exec guard (see the unit's comments).
    put(
        "usr/share/doc/map-trace/examples/perf-uprobes.conf",
        &std::fs::read(repo_root().join("dist/systemd/perf-uprobes.conf"))?,
        0o644,
    )?;
    put(
        "etc/map-trace/config.toml",
        &std::fs::read(repo_root().join("dist/config.toml"))?,
        0o644,
    )?;
    let man = generated(version, &["manpage"])?;
    let mut gz = Vec::new();
    {
        // gzip -9n: no name or time stamp, so the package is reproducible.
        let mut c = Command::new("gzip")
            .args(["-9n", "-c"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("gzip")?;
        use std::io::Write as _;
        c.stdin.take().unwrap().write_all(&man)?;
        let o = c.wait_with_output()?;
        gz.extend(o.stdout);
    }
    put("usr/share/man/man1/map-trace.1.gz", &gz, 0o644)?;
    for (shell, rel) in [
        ("bash", "usr/share/bash-completion/completions/map-trace"),
        ("zsh", "usr/share/zsh/vendor-completions/_map-trace"),
        ("fish", "usr/share/fish/vendor_completions.d/map-trace.fish"),
    ] {
        put(rel, &generated(version, &["completions", shell])?, 0o644)?;
    }
    let copyright = format!(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: map-trace\n\nFiles: *\nCopyright: the map-trace authors\nLicense: {}\n",
        license()?
    );
    put(
        "usr/share/doc/map-trace/copyright",
        copyright.as_bytes(),
        0o644,
    )?;
    let size_kb = dir_size(&root)? / 1024;
    // No Depends: the binary is static, and the unit file is inert where systemd is absent (a
    // container, a DaemonSet image); a dependency on an init system made `dpkg -i` fail there.
    let control = format!(
        "Package: map-trace\nVersion: {version}\nArchitecture: {}\nMaintainer: map-trace authors <map-trace@example.org>\nInstalled-Size: {size_kb}\nSection: devel\nPriority: optional\nDescription: report Go map writes that overlap a map iteration (eBPF)\n map-trace watches running, unmodified Go programs with eBPF uprobes and reports\n map writes that overlap a map iteration, map growth or another write, naming\n the goroutines and source lines of both sides.\n",
        a.deb
    );
    put("DEBIAN/control", control.as_bytes(), 0o644)?;
    put("DEBIAN/conffiles", b"/etc/map-trace/config.toml\n", 0o644)?;
    let deb = out.join(format!("map-trace_{version}_{}.deb", a.deb));
    cmd::run(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&root)
            .arg(&deb),
        "install dpkg (Debian's dpkg-deb)",
    )?;
    Ok(deb)
}

fn license() -> Result<String> {
    let toml = std::fs::read_to_string(repo_root().join("Cargo.toml"))?;
    Ok(toml
        .lines()
        .find_map(|l| l.strip_prefix("license = \""))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or("see the source repository")
        .to_string())
}

fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let m = e.metadata()?;
        total += if m.is_dir() {
            dir_size(&e.path())?
        } else {
            m.len()
        };
    }
    Ok(total)
}
