//! `map-trace inspect` as a user runs it: JSON contract, `--pid`, and every error case by exit
//! code and message.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use test_support::{Fixture, Reaped, Scratch, assert_fails, exited_pid};

use crate::MAP_TRACE;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// An amd64 fixture of the given version and variant.
fn fixture(version_prefix: &str, variant: &str) -> Fixture {
    test_support::fixtures_of("mapops")
        .into_iter()
        .find(|f| {
            f.go_version.starts_with(version_prefix)
                && f.variant == variant
                && f.arch == "x86_64"
                && f.goexperiment.is_none()
        })
        .unwrap_or_else(|| panic!("no amd64 {variant} fixture of go{version_prefix}"))
}

/// A copy of `src` with `find` replaced by `replace` at its first occurrence in the build info
/// (the runtime keeps other copies of the version string elsewhere).
fn patched(src: &Path, dir: &Scratch, name: &str, find: &[u8], replace: &[u8]) -> PathBuf {
    use object::{Object as _, ObjectSection as _};
    let mut data = std::fs::read(src).unwrap();
    let (start, len) = {
        let file = object::File::parse(&*data).unwrap();
        let s = file
            .section_by_name(".go.buildinfo")
            .expect(".go.buildinfo");
        let (o, l) = s.file_range().unwrap();
        (o as usize, l as usize)
    };
    let at = start
        + data[start..start + len]
            .windows(find.len())
            .position(|w| w == find)
            .expect("pattern present in .go.buildinfo");
    data[at..at + replace.len()].copy_from_slice(replace);
    let out = dir.join(name);
    std::fs::write(&out, data).unwrap();
    out
}

fn spawn(cmd: &Path, args: &[&str]) -> Reaped {
    let child = Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    // Give the kernel a moment to finish exec, so /proc/PID/exe is the new image.
    std::thread::sleep(std::time::Duration::from_millis(200));
    Reaped(child)
}

#[test]
fn json_has_the_documented_fields() {
    let f = fixture("1.24", "default");
    let o = MAP_TRACE.run(&["inspect", "--json", f.path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).expect("stdout is one JSON object");
    for key in [
        "path",
        "go_version",
        "goexperiments",
        "arch",
        "map_impl",
        "stripped",
        "pie",
        "probes",
        "offsets",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(v["go_version"], format!("go{}", f.go_version));
    assert_eq!(v["arch"], "x86_64");
    assert_eq!(v["map_impl"], "swiss");
    let probes = v["probes"].as_array().unwrap();
    let roles: Vec<&str> = probes.iter().map(|p| p["role"].as_str().unwrap()).collect();
    for role in [
        "iter_start",
        "iter_step",
        "assign",
        "delete",
        "clear",
        "grow",
        "fatal",
    ] {
        assert!(roles.contains(&role), "no {role} probe in {roles:?}");
    }
    // runtime.fatal is nosplit: no stack-check prologue to skip, so the probe is at its entry.
    let fatal = probes.iter().find(|p| p["role"] == "fatal").unwrap();
    assert_eq!(fatal["symbol"], "runtime.fatal", "{fatal}");
    assert_eq!(fatal["attach_offset"], "0x0", "{fatal}");
    assert!(
        fatal["via"]
            .as_array()
            .is_some_and(|v| v.iter().any(|s| s == "internal/runtime/maps.fatal")),
        "{fatal}"
    );
    for p in probes {
        for key in ["symbol", "address", "file_offset", "attach_offset"] {
            let s = p[key]
                .as_str()
                .unwrap_or_else(|| panic!("{key} is a string in {p}"));
            assert!(s.starts_with("0x") || key == "symbol", "{key}={s} is hex");
        }
    }
    assert!(v["offsets"]["g_goid"].as_u64().is_some());
}

#[test]
fn human_output_names_the_essentials() {
    let f = fixture("1.19", "stripped");
    let o = MAP_TRACE.run(&["inspect", f.path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for needle in [
        "go1.19",
        "classic",
        "stripped: yes",
        "runtime.mapiternext",
        "symbols from: pclntab",
    ] {
        assert!(out.contains(needle), "{needle:?} not in:\n{out}");
    }
}

#[test]
fn inspects_a_running_process_by_pid() {
    let f = fixture("1.26", "pie");
    let child = spawn(&f.path, &["-sleep", "30s"]);
    let pid = child.0.id().to_string();
    let o = MAP_TRACE.run(&["inspect", "--json", "--pid", &pid]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["pid"].as_u64().map(|p| p.to_string()), Some(pid));
    assert_eq!(v["pie"], true);
    assert_eq!(Path::new(v["path"].as_str().unwrap()), f.path);
}

#[test]
fn missing_file() {
    assert_fails(
        &MAP_TRACE.run(&["inspect", "/nonexistent/go-program"]),
        3,
        "no such file",
    );
}

#[test]
fn not_elf() {
    let dir = Scratch::new("inspect-cli-not-elf");
    let p = dir.join("notes.txt");
    std::fs::write(&p, "just text\n").unwrap();
    assert_fails(
        &MAP_TRACE.run(&["inspect", p.to_str().unwrap()]),
        4,
        "not an ELF file",
    );
    let empty = dir.join("empty");
    std::fs::write(&empty, b"").unwrap();
    assert_fails(
        &MAP_TRACE.run(&["inspect", empty.to_str().unwrap()]),
        4,
        "not an ELF file",
    );
}

#[test]
fn elf_but_not_go() {
    // Not this test binary, which it was while it was a binary of its own: it now links gobin,
    // whose build-info magic bytes make it look like a malformed Go program (exit 11).
    let c_program = "/bin/true";
    assert_fails(
        &MAP_TRACE.run(&["inspect", c_program]),
        5,
        "not a Go program",
    );
}

#[test]
fn go_too_old() {
    // The same binary claiming an older toolchain in its build info.
    let f = fixture("1.19", "default");
    let dir = Scratch::new("inspect-cli-too-old");
    let p = patched(&f.path, &dir, "go116", b"go1.19.", b"go1.16.");
    assert_fails(
        &MAP_TRACE.run(&["inspect", p.to_str().unwrap()]),
        6,
        "register ABI",
    );
}

#[test]
fn unsupported_arch() {
    let f = fixture("1.22", "default");
    let mut data = std::fs::read(&f.path).unwrap();
    data[18..20].copy_from_slice(&243u16.to_le_bytes()); // EM_RISCV
    let dir = Scratch::new("inspect-cli-arch");
    let p = dir.join("riscv");
    std::fs::write(&p, &data).unwrap();
    assert_fails(
        &MAP_TRACE.run(&["inspect", p.to_str().unwrap()]),
        7,
        "unsupported architecture riscv",
    );
    data[4] = 1; // ELFCLASS32
    std::fs::write(&p, &data).unwrap();
    assert_fails(
        &MAP_TRACE.run(&["inspect", p.to_str().unwrap()]),
        7,
        "32-bit",
    );
}

#[test]
fn pid_missing() {
    // Above the kernel's PID_MAX_LIMIT (4194304), so never a live pid.
    assert_fails(
        &MAP_TRACE.run(&["inspect", "--pid", "2147483600"]),
        8,
        "no process with pid 2147483600",
    );
}

#[test]
fn exited_process() {
    let pid = exited_pid();
    assert_fails(
        &MAP_TRACE.run(&["inspect", "--pid", &pid]),
        8,
        "no process with pid",
    );
}

#[test]
fn non_go_process() {
    let child = spawn(Path::new("sleep"), &["30"]);
    let pid = child.0.id().to_string();
    assert_fails(
        &MAP_TRACE.run(&["inspect", "--pid", &pid]),
        5,
        "not a Go program",
    );
}

#[test]
fn usage_errors_exit_2() {
    let o = MAP_TRACE.run(&["inspect"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = MAP_TRACE.run(&["inspect", "/bin/true", "--pid", "1"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn newer_go_uses_the_nearest_known_layout_and_says_so() {
    // A stripped binary (no DWARF to read exactly) claiming a release newer than any measured.
    let f = fixture("1.27", "stripped");
    let dir = Scratch::new("inspect-cli-newer");
    let p = patched(&f.path, &dir, "go129", b"go1.27.", b"go1.29.");
    let o = MAP_TRACE.run(&["inspect", "--json", p.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["go_version"], "go1.29.3");
    assert_eq!(v["offsets_source"], "table:go1.27");
    let warnings = v["warnings"].to_string();
    assert!(
        warnings.contains("newer than every Go release"),
        "{warnings}"
    );
}
