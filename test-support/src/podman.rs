//! Real containers, through Debian's podman: images built here (`FROM scratch` around a static
//! binary, or from the Debian image `cargo xtask setup` makes with debootstrap), never pulled
//! from a registry; every image and container a test makes is removed when its guard drops.
//!
//! The OCI runtime is runc, not podman's default crun: crun refuses hosts whose cgroups are
//! "hybrid" (v1 controllers, v2 at /sys/fs/cgroup/unified) and cannot set podman's default
//! rlimits without `CAP_SYS_RESOURCE`; the CI sandbox is both. map-trace sees processes,
//! cgroups and mount namespaces, never the runtime, so the choice does not change what is
//! tested.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The Debian image `cargo xtask setup` imports (debootstrap's minbase of the host's release).
pub const DEBIAN_IMAGE: &str = "localhost/map-trace-debian:bookworm";

/// `podman` with the runtime this module uses.
pub fn podman() -> Command {
    let mut c = Command::new("podman");
    c.args(["--runtime", "runc"]);
    c
}

/// What every `podman run` here adds: limits under the host's hard limits (podman's defaults
/// raise them, which needs `CAP_SYS_RESOURCE`).
pub const RUN_LIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=4096:4096",
];

/// Runs a podman command that must succeed; its stdout, trimmed.
pub fn output(args: &[&str]) -> String {
    let o = podman_output(args);
    assert!(
        o.status.success(),
        "podman {args:?} failed ({}): {}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn podman_output(args: &[&str]) -> Output {
    podman().args(args).output().unwrap_or_else(|e| {
        panic!("cannot run podman ({e}): the container tests need podman and runc; `cargo xtask setup` installs them")
    })
}

/// Fails the test, saying why, when the container tests cannot run here.
pub fn require() {
    for tool in ["podman", "runc"] {
        let ok = Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            ok,
            "`{tool} --version` failed: the container tests need podman and runc; `cargo xtask setup` installs them"
        );
    }
}

/// A local image, removed when dropped.
pub struct Image(pub String);

impl Image {
    /// Builds `containerfile` (its text) in `context` as `tag`.
    pub fn build(tag: &str, context: &Path, containerfile: &str) -> Image {
        let file = context.join("Containerfile.test");
        std::fs::write(&file, containerfile).unwrap();
        Image::build_file(tag, context, &file, &[])
    }

    /// Builds the Containerfile at `file` in `context` as `tag`, with `--build-arg`s.
    pub fn build_file(tag: &str, context: &Path, file: &Path, build_args: &[&str]) -> Image {
        let mut args = vec!["build", "-q", "-t", tag, "-f", file.to_str().unwrap()];
        for a in build_args {
            args.extend(["--build-arg", a]);
        }
        args.push(context.to_str().unwrap());
        output(&args);
        Image(tag.to_string())
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = podman_output(&["rmi", "-f", &self.0]);
    }
}

/// A container name, force-removed when dropped (so a failing test leaves none running).
pub struct Named(pub String);

impl Named {
    /// A name unique to this test process.
    pub fn new(what: &str) -> Named {
        Named(format!("map-trace-test-{what}-{}", std::process::id()))
    }

    /// The container's pid on the host, once it runs.
    pub fn pid(&self, limit: Duration) -> u32 {
        let deadline = Instant::now() + limit;
        loop {
            let o = podman_output(&["inspect", "--format", "{{.State.Pid}}", &self.0]);
            let pid: u32 = String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse()
                .unwrap_or(0);
            if pid != 0 {
                return pid;
            }
            assert!(
                Instant::now() < deadline,
                "container {} not running within {limit:?}",
                self.0
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The container's full id.
    pub fn id(&self) -> String {
        output(&["inspect", "--format", "{{.Id}}", &self.0])
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        let _ = podman_output(&["rm", "-f", "-t", "0", &self.0]);
    }
}
