//! The fresh Debian the container test installs the .deb in: debootstrap's minbase of Debian
//! 12 from the Debian mirror (a package registry, reachable where registries of container
//! images are not), imported into podman once per machine.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

use crate::cmd;
use crate::setup::{done, ok};

/// The name the tests look for.
use test_support::podman::DEBIAN_IMAGE as IMAGE;
const SUITE: &str = "bookworm";

pub fn ensure() -> Result<()> {
    let item = format!("podman image {IMAGE}");
    let exists = Command::new("podman")
        .args(["image", "exists", IMAGE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if exists {
        ok(&item);
        return Ok(());
    }
    let root = Path::new("/var/tmp/map-trace-debian-rootfs");
    if root.exists() {
        std::fs::remove_dir_all(root)
            .with_context(|| format!("cannot remove the old {}", root.display()))?;
    }
    println!("making {IMAGE} with debootstrap (about a minute)");
    cmd::run(
        Command::new("debootstrap")
            .args(["--variant=minbase", SUITE])
            .arg(root)
            .arg(mirror()),
        "check access to the Debian mirror, then rerun `cargo xtask setup`",
    )?;
    // `tar | podman import -`: the rootfs as the image's one layer.
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(root)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run tar")?;
    let status = Command::new("podman")
        .args(["import", "-", IMAGE])
        .stdin(tar.stdout.take().expect("piped"))
        .stdout(Stdio::null())
        .status()
        .context("cannot run podman")?;
    let tar_status = tar.wait()?;
    let _ = std::fs::remove_dir_all(root);
    if !status.success() || !tar_status.success() {
        bail!("`podman import` of the Debian rootfs failed ({status}, tar {tar_status})");
    }
    done(&item);
    Ok(())
}

/// The host's own Debian mirror (deb822 sources), else deb.debian.org.
fn mirror() -> String {
    std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources")
        .ok()
        .and_then(|s| {
            s.lines()
                .filter_map(|l| l.strip_prefix("URIs:"))
                .map(str::trim)
                .find(|u| u.ends_with("/debian"))
                .map(str::to_string)
        })
        .unwrap_or_else(|| "http://deb.debian.org/debian".into())
}
