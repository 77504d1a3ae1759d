//! What `cargo xtask setup` installs for the VM tests: qemu, and (unpacked into VM_ROOT, never
//! installed) each kernel of the matrix and a static busybox per arch.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use super::kernels::{MATRIX, VM_ROOT, Vm, VmArch, busybox_path};
use crate::cmd;
use crate::setup::{apt_get, done, dpkg_installed, ok};

const QEMU: &[&str] = &["qemu-system-arm", "qemu-system-x86"];

/// This machine's qemu-utils comes from bookworm-backports, and bookworm's qemu-system-* 7.2
/// cannot be installed next to it (qemu-utils 10 breaks qemu-system-common < 8): take the
/// same release from backports. These are the packages that must come from there; the rest
/// of the dependencies come from bookworm.
const QEMU_FROM_BACKPORTS: &[&str] = &[
    "qemu-system-arm",
    "qemu-system-x86",
    "qemu-system-common",
    "qemu-system-data",
    "seabios",
    "libbrlapi0.8",
];
const BACKPORTS_SOURCE: &str = "/etc/apt/sources.list.d/map-trace-bookworm-backports.sources";

pub fn run() -> Result<()> {
    qemu()?;
    foreign_arch()?;
    for vm in MATRIX {
        kernel(vm)?;
    }
    for arch in [VmArch::Aarch64, VmArch::X86_64] {
        busybox(arch)?;
    }
    Ok(())
}

fn qemu() -> Result<()> {
    let installed = dpkg_installed(QEMU)?;
    if QEMU.iter().all(|p| installed.iter().any(|i| i == p)) {
        for p in QEMU {
            ok(&format!("apt {p}"));
        }
        return Ok(());
    }
    let utils = cmd::probe(Command::new("dpkg-query").args(["-W", "-f=${Version}", "qemu-utils"]))
        .unwrap_or_default();
    if utils.contains("~bpo12") {
        println!("qemu-utils {utils} is from bookworm-backports: taking qemu-system-* from there");
        backports_source()?;
        let specs: Vec<String> = QEMU_FROM_BACKPORTS
            .iter()
            .map(|p| format!("{p}/bookworm-backports"))
            .collect();
        apt_get(&["install", "-y", "--no-install-recommends"], &specs)?;
    } else {
        apt_get(&["install", "-y", "--no-install-recommends"], QEMU)?;
    }
    let installed = dpkg_installed(QEMU)?;
    for p in QEMU {
        if !installed.iter().any(|i| i == p) {
            bail!(
                "apt-get ran but {p} (the VM tests boot kernels with it) is still not installed; install it by hand"
            );
        }
        done(&format!("apt {p}"));
    }
    Ok(())
}

fn backports_source() -> Result<()> {
    let mut lists = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        lists.extend(dir.filter_map(Result::ok).map(|e| e.path()));
    }
    let configured = lists.iter().any(|p| {
        fs::read_to_string(p).is_ok_and(|s| {
            s.lines()
                .any(|l| !l.trim_start().starts_with('#') && l.contains("bookworm-backports"))
        })
    });
    if configured {
        ok("apt source bookworm-backports");
        return Ok(());
    }
    fs::write(
        BACKPORTS_SOURCE,
        "# Written by `cargo xtask setup` (map-trace): qemu-system-* must match qemu-utils,\n\
         # which comes from bookworm-backports on this machine.\n\
         Types: deb\n\
         URIs: http://deb.debian.org/debian\n\
         Suites: bookworm-backports\n\
         Components: main\n\
         Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
    )
    .with_context(|| format!("cannot write {BACKPORTS_SOURCE}"))?;
    apt_get(&["update"], &[] as &[&str])?;
    done(&format!(
        "apt source bookworm-backports ({BACKPORTS_SOURCE})"
    ));
    Ok(())
}

/// The arm64 kernels and busybox are arm64 packages: apt must know that architecture.
fn foreign_arch() -> Result<()> {
    let fix = "check dpkg; this setup supports Debian 12 only";
    let archs = cmd::output(
        Command::new("dpkg").arg("--print-foreign-architectures"),
        fix,
    )?;
    if archs.split_whitespace().any(|a| a == "arm64") {
        ok("dpkg architecture arm64");
        return Ok(());
    }
    cmd::run(
        Command::new("dpkg").args(["--add-architecture", "arm64"]),
        fix,
    )?;
    apt_get(&["update"], &[] as &[&str])?;
    done("dpkg architecture arm64 (package lists only; nothing arm64 is installed)");
    Ok(())
}

/// `Depends: linux-image-6.1.0-56-arm64:arm64` of the meta-package: the current kernel.
fn parse_depends(out: &str) -> Option<String> {
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-"))
        .map(|p| p.split(':').next().unwrap_or(p).to_string())
}

fn kernel(vm: &Vm) -> Result<()> {
    let meta = vm.meta_package();
    let out = cmd::output(
        Command::new("apt-cache").args(["depends", &meta]),
        "run `apt-get update` (the arm64 package lists may be missing) and rerun `cargo xtask setup`",
    )?;
    let package = parse_depends(&out)
        .with_context(|| format!("`apt-cache depends {meta}` names no linux-image package"))?;
    let item = format!("kernel {} ({package})", vm.name());
    let current = fs::read_to_string(vm.package_file()).unwrap_or_default();
    if current.trim() == package && vm.vmlinuz().is_file() {
        ok(&item);
        return Ok(());
    }
    let spec = format!("{package}:{}", vm.arch.debian());
    unpack(&spec, &vm.dir(), |root| {
        let boot = root.join("boot");
        let vmlinuz = fs::read_dir(&boot)
            .with_context(|| format!("{spec} has no /boot"))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
            })
            .with_context(|| format!("{spec} has no /boot/vmlinuz-*"))?;
        Ok(vec![(vmlinuz, "vmlinuz".into())])
    })?;
    fs::write(vm.package_file(), format!("{package}\n"))?;
    done(&item);
    Ok(())
}

fn busybox(arch: VmArch) -> Result<()> {
    let path = busybox_path(arch);
    let item = format!("busybox-static:{} ({})", arch.debian(), path.display());
    if path.is_file() {
        ok(&item);
        return Ok(());
    }
    let dir = path.parent().expect("busybox_path has a parent");
    unpack(&format!("busybox-static:{}", arch.debian()), dir, |root| {
        Ok(vec![(root.join("bin/busybox"), "busybox".into())])
    })?;
    done(&item);
    Ok(())
}

/// `apt-get download` + `dpkg-deb -x` into a scratch directory, then moves the files `pick`
/// chooses into `dest` (replacing it): nothing is installed, nothing lands in the repo.
fn unpack(
    spec: &str,
    dest: &Path,
    pick: impl FnOnce(&Path) -> Result<Vec<(PathBuf, String)>>,
) -> Result<()> {
    let scratch = PathBuf::from(VM_ROOT).join(format!(".unpack-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch).with_context(|| format!("cannot create {}", scratch.display()))?;
    let result = (|| {
        println!("downloading {spec}");
        cmd::output(
            Command::new("apt-get")
                .args(["download", spec])
                .current_dir(&scratch),
            "check the network and that `apt-cache policy` knows the package, then rerun `cargo xtask setup`",
        )?;
        let deb = fs::read_dir(&scratch)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .with_context(|| format!("apt-get download {spec} left no .deb"))?;
        let root = scratch.join("root");
        cmd::output(
            Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root),
            "the download may be corrupt; rerun `cargo xtask setup`",
        )?;
        let staged = scratch.join("staged");
        fs::create_dir_all(&staged)?;
        for (from, to) in pick(&root)? {
            fs::rename(&from, staged.join(&to))
                .with_context(|| format!("cannot move {}", from.display()))?;
        }
        if dest.exists() {
            fs::remove_dir_all(dest)
                .with_context(|| format!("cannot replace {}", dest.display()))?;
        }
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::rename(&staged, dest).with_context(|| format!("cannot create {}", dest.display()))?;
        Ok(())
    })();
    let _ = fs::remove_dir_all(&scratch);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_kernel_of_a_meta_package() {
        let out = "linux-image-arm64:arm64\n  Depends: linux-image-6.1.0-56-arm64:arm64\n";
        assert_eq!(
            parse_depends(out).as_deref(),
            Some("linux-image-6.1.0-56-arm64")
        );
        let amd = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n  Recommends: x\n";
        assert_eq!(
            parse_depends(amd).as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
        assert_eq!(parse_depends("linux-image-amd64\n"), None);
    }
}
