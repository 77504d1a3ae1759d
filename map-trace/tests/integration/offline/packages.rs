//! `cargo xtask dist`'s artifacts (target/dist, made by the test command's `dist` step): the
//! sums check, the binaries are static for both arches, the .deb installs with dpkg itself
//! into a scratch root and its binary runs `--version` and `inspect`, and the man page and
//! completions it ships are what the binary generates and what groff and each shell accept.

use std::path::{Path, PathBuf};
use std::process::Command;

use test_support::Scratch;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn dist() -> PathBuf {
    test_support::dist_dir()
}

fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn the_binaries_are_static_and_their_sums_check() {
    let d = dist();
    run(Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(&d));
    for (arch, file_says) in [("x86_64", "x86-64"), ("aarch64", "ARM aarch64")] {
        let bin = d.join(format!("map-trace-{VERSION}-{arch}"));
        let what = run(Command::new("file").arg(&bin));
        assert!(what.contains(file_says), "{what}");
        assert!(
            what.contains("statically linked") || what.contains("static-pie"),
            "{what}"
        );
    }
    let sums = std::fs::read_to_string(d.join("SHA256SUMS")).unwrap();
    for name in [
        format!("map-trace-{VERSION}-x86_64"),
        format!("map-trace-{VERSION}-aarch64"),
        format!("map-trace_{VERSION}_amd64.deb"),
        format!("map-trace_{VERSION}_arm64.deb"),
    ] {
        assert!(sums.contains(&name), "{name} not summed: {sums}");
    }
}

/// Installs the host's .deb with dpkg into a scratch root (its own dpkg database), then runs
/// what it installed.
#[test]
fn the_deb_installs_and_what_it_installs_works() {
    if !cfg!(target_arch = "x86_64") {
        eprintln!(
            "the .deb install test runs on x86_64 hosts (the arm64 package is checked by contents)"
        );
    }
    let d = dist();
    let root = Scratch::new("deb-root");
    let admin = root.join("var/lib/dpkg");
    std::fs::create_dir_all(admin.join("updates")).unwrap();
    std::fs::create_dir_all(admin.join("info")).unwrap();
    std::fs::write(admin.join("status"), "").unwrap();
    let deb = d.join(format!("map-trace_{VERSION}_amd64.deb"));
    let info = run(Command::new("dpkg-deb").arg("--info").arg(&deb));
    assert!(
        info.contains(&format!("Version: {VERSION}")) && info.contains("Architecture: amd64"),
        "{info}"
    );
    run(Command::new("dpkg")
        .arg(format!("--root={}", root.path().display()))
        .args([
            "--force-not-root",
            "--force-depends",
            "--force-script-chrootless",
            "--log=/dev/null",
            "-i",
        ])
        .arg(&deb));
    let status = std::fs::read_to_string(admin.join("status")).unwrap();
    assert!(
        status.contains("Package: map-trace") && status.contains("Status: install ok installed"),
        "{status}"
    );
    assert!(
        status.contains("/etc/map-trace/config.toml"),
        "the config is no conffile: {status}"
    );
    let bin = root.join("usr/bin/map-trace");
    let v = run(Command::new(&bin).arg("--version"));
    assert_eq!(v.trim(), format!("map-trace {VERSION}"));
    let f = test_support::host_fixture("scenarios", "1.26.6");
    let inspect = run(Command::new(&bin).args(["inspect", "--json"]).arg(&f.path));
    let doc: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(doc["go_version"], "go1.26.6");
    // The unit points at the package's binary; the config it reads is valid.
    let unit =
        std::fs::read_to_string(root.join("usr/lib/systemd/system/map-trace.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/bin/map-trace --config /etc/map-trace/config.toml"),
        "{unit}"
    );
    let config = root.join("etc/map-trace/config.toml");
    let o = Command::new(&bin)
        .args(["--check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Man page and completions: as the binary generates them, and accepted by their readers.
    check_docs(root.path(), &bin);
}

fn check_docs(root: &Path, bin: &Path) {
    let man = root.join("usr/share/man/man1/map-trace.1.gz");
    let text = run(Command::new("gzip").args(["-dc"]).arg(&man));
    assert_eq!(text, run(Command::new(bin).arg("manpage")));
    for needle in [
        ".TH map-trace 1",
        "inspect",
        "run",
        "\\-\\-mode",
        "sentinel",
    ] {
        assert!(text.contains(needle), "man page lacks {needle}");
    }
    // groff with every warning, through preconv as man(1) reads a UTF-8 page (`×` in the
    // help text): nothing to say.
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -dc {} | groff -k -man -ww -z", man.display()))
        .output()
        .unwrap();
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "groff: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    for (shell, rel, check) in [
        (
            "bash",
            "usr/share/bash-completion/completions/map-trace",
            Some(("bash", "-n")),
        ),
        ("zsh", "usr/share/zsh/vendor-completions/_map-trace", None),
        (
            "fish",
            "usr/share/fish/vendor_completions.d/map-trace.fish",
            None,
        ),
    ] {
        let shipped = std::fs::read_to_string(root.join(rel)).unwrap();
        assert_eq!(shipped, run(Command::new(bin).args(["completions", shell])));
        assert!(
            shipped.contains("sentinel") && shipped.contains("--fail-on"),
            "{shell}"
        );
        if let Some((sh, flag)) = check {
            run(Command::new(sh).arg(flag).arg(root.join(rel)));
        }
    }
}

#[test]
fn the_arm64_deb_holds_the_same_files() {
    let d = dist();
    let list = |arch: &str| {
        let out = run(Command::new("dpkg-deb")
            .arg("--contents")
            .arg(d.join(format!("map-trace_{VERSION}_{arch}.deb"))));
        let mut files: Vec<String> = out
            .lines()
            .filter_map(|l| l.split_whitespace().last().map(str::to_string))
            .collect();
        files.sort();
        files
    };
    assert_eq!(list("amd64"), list("arm64"));
    let info = run(Command::new("dpkg-deb")
        .arg("--field")
        .arg(d.join(format!("map-trace_{VERSION}_arm64.deb")))
        .arg("Architecture"));
    assert_eq!(info.trim(), "arm64");
}
