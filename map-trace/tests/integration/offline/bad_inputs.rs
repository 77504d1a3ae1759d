//! Files no one should hand map-trace, handed to it: `/dev/zero`, a FIFO, a directory, a
//! symlink loop and a file over the size limit, as `--exe`, `inspect` and `--config`. Each must
//! end within a second with one line on stderr and its documented exit code — never hang,
//! never read without end.
//!
//! A bad `--exe` is refused before any eBPF is loaded, so none of this needs root.

use std::path::{Path, PathBuf};
use std::time::Duration;

use test_support::{Scratch, assert_fails};

use crate::MAP_TRACE;

/// Long enough for a loaded machine to start a process; far shorter than any hang.
const LIMIT: Duration = Duration::from_secs(1);
/// `input::MAX_BINARY_BYTES` and `MAX_CONFIG_BYTES`, as the README states them.
const BINARY_LIMIT: u64 = 1 << 30;
const CONFIG_LIMIT: u64 = 1 << 20;

/// The bad files, by name, in `dir`: (case, path).
fn bad_files(dir: &Scratch) -> Vec<(&'static str, PathBuf)> {
    let fifo = dir.join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let (a, b) = (dir.join("loop-a"), dir.join("loop-b"));
    std::os::unix::fs::symlink(&b, &a).unwrap();
    std::os::unix::fs::symlink(&a, &b).unwrap();
    let sub = dir.join("a-directory");
    std::fs::create_dir(&sub).unwrap();
    vec![
        ("/dev/zero", PathBuf::from("/dev/zero")),
        ("fifo", fifo),
        ("directory", sub),
        ("symlink loop", a),
    ]
}

/// A sparse file one byte over `limit`: no disk space, but its size is what counts. In the
/// test's own directory, removed when it ends: still 1 GiB to anyone who lists it.
fn oversize(dir: &Scratch, name: &str, limit: u64) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p)
        .unwrap()
        .set_len(limit + 1)
        .unwrap();
    p
}

/// What each bad file must produce for a binary (`--exe`, `inspect`): (exit code, words).
fn binary_verdict(case: &str) -> (i32, &'static str) {
    match case {
        "/dev/zero" => (15, "not a regular file but a character device"),
        "fifo" => (15, "not a regular file but a FIFO"),
        "directory" => (15, "not a regular file but a directory"),
        "symlink loop" => (3, "symlink loop"),
        other => panic!("no verdict for {other}"),
    }
}

fn check(args: &[&str], code: i32, needle: &str) {
    let o = MAP_TRACE.run_within(args, LIMIT);
    assert_fails(&o, code, needle);
    let err = String::from_utf8_lossy(&o.stderr);
    // The path itself is named, so the user knows which of several files is meant.
    assert!(err.contains(args.last().unwrap()), "{args:?}: {err}");
}

#[test]
fn inspect_refuses_what_is_not_a_program_file() {
    let scratch = Scratch::new("bad-inputs-inspect");
    for (case, path) in bad_files(&scratch) {
        let (code, needle) = binary_verdict(case);
        check(&["inspect", path.to_str().unwrap()], code, needle);
    }
    let big = oversize(&scratch, "big-binary", BINARY_LIMIT);
    check(
        &["inspect", big.to_str().unwrap()],
        16,
        "more than the 1 GiB map-trace reads from a binary",
    );
}

#[test]
fn exe_refuses_what_is_not_a_program_file_before_loading_ebpf() {
    let scratch = Scratch::new("bad-inputs-exe");
    for (case, path) in bad_files(&scratch) {
        let (code, needle) = binary_verdict(case);
        check(&["--exe", path.to_str().unwrap()], code, needle);
    }
    let big = oversize(&scratch, "big-exe", BINARY_LIMIT);
    check(&["--exe", big.to_str().unwrap()], 16, "more than the 1 GiB");
    let text = scratch.join("not-elf");
    std::fs::write(&text, "#!/bin/sh\n").unwrap();
    check(&["--exe", text.to_str().unwrap()], 4, "not an ELF file");
}

#[test]
fn config_refuses_what_is_not_a_config_file() {
    let scratch = Scratch::new("bad-inputs-config");
    for (case, path) in bad_files(&scratch) {
        let needle = match case {
            "/dev/zero" => "not a regular file but a character device",
            "fifo" => "not a regular file but a FIFO",
            "directory" => "not a regular file but a directory",
            "symlink loop" => "symlink loop",
            other => panic!("no verdict for {other}"),
        };
        check(&["--config", path.to_str().unwrap()], 2, needle);
    }
    let big = oversize(&scratch, "big.toml", CONFIG_LIMIT);
    check(
        &["--config", big.to_str().unwrap()],
        2,
        "more than the 1 MiB a config file may have",
    );
}

#[test]
fn a_long_bad_line_in_a_config_is_not_quoted_back() {
    // Within the size limit, one line of almost a MiB that toml cannot parse.
    let scratch = Scratch::new("bad-inputs-long-line");
    let p = scratch.join("long-line.toml");
    std::fs::write(&p, format!("exe = [\"/x\"]\n{}\n", "z".repeat(900_000))).unwrap();
    let o = MAP_TRACE.run_within(&["--config", p.to_str().unwrap()], LIMIT);
    assert_fails(&o, 2, "line 2, column");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.chars().count() < 400, "{} chars: {err}", err.len());
}

#[test]
fn check_config_warns_about_exe_paths_with_their_real_problem() {
    let missing = "/no/such/map-trace-target";
    assert!(
        Path::new(missing).symlink_metadata().is_err(),
        "{missing} exists"
    );
    let scratch = Scratch::new("bad-inputs-check-config");
    let files = bad_files(&scratch);
    let path = |case: &str| files.iter().find(|f| f.0 == case).unwrap().1.clone();
    for (exe, needle) in [
        // The one bad-looking name that is fine: processes may run it inside their own root.
        (PathBuf::from(missing), "no such file on this host"),
        (
            path("fifo"),
            "not a regular file but a FIFO (named pipe); tracing it will fail",
        ),
        (
            path("symlink loop"),
            "symlink loop (too many levels of symbolic links); tracing",
        ),
    ] {
        let o = MAP_TRACE.run_within(&["--exe", exe.to_str().unwrap(), "--check-config"], LIMIT);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{err}");
        assert!(err.contains(needle), "{needle:?} not in {err:?}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}
