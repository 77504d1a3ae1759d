//! `--config` and `--check-config` as a user runs them: the shipped example validates, flags
//! override the file, and every mistake is one clear line with exit code 2.

use std::path::PathBuf;

use test_support::{Scratch, assert_fails};

use crate::MAP_TRACE;

fn shipped_config() -> PathBuf {
    test_support::repo_path("dist/config.toml")
}

fn write_config(dir: &Scratch, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn check(args: &[&str]) -> (i32, String, String) {
    let o = MAP_TRACE.run(args);
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn the_shipped_config_is_valid() {
    let p = shipped_config();
    let (code, out, err) = check(&["--config", p.to_str().unwrap(), "--check-config"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("configuration ok"), "{out}");
    // The service default: metrics on loopback only.
    assert!(
        out.contains("metrics: http://127.0.0.1:9464/metrics"),
        "{out}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn flags_override_the_file() {
    let dir = Scratch::new("config-cli-override");
    let p = write_config(
        &dir,
        "override.toml",
        "pid = [11]\nexe = [\"/usr/bin/env\"]\nformat = \"json\"\nduration = \"1m\"\n",
    );
    let (code, out, err) = check(&[
        "--config",
        p.to_str().unwrap(),
        "--pid",
        "22",
        "--format",
        "human",
        "--check-config",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("pid: 22\n"), "{out}");
    assert!(out.contains("exe: /usr/bin/env\n"), "{out}");
    assert!(out.contains("format: human\n"), "{out}");
    assert!(out.contains("duration: 1m\n"), "{out}");
    assert!(out.contains("metrics: off\n"), "{out}");
}

#[test]
fn mistakes_are_one_clear_line_and_exit_2() {
    let dir = Scratch::new("config-cli-mistakes");
    let typo = write_config(
        &dir,
        "typo.toml",
        "exe = [\"/x\"]\nmetric_addr = \"127.0.0.1:1\"\n",
    );
    assert_fails(
        &MAP_TRACE.run(&["--config", typo.to_str().unwrap(), "--check-config"]),
        2,
        "metric_addr",
    );
    let bad_addr = write_config(
        &dir,
        "addr.toml",
        "exe = [\"/x\"]\nmetrics_addr = \"0.0.0.0\"\n",
    );
    assert_fails(
        &MAP_TRACE.run(&["--config", bad_addr.to_str().unwrap()]),
        2,
        "metrics_addr = \"0.0.0.0\"",
    );
    let empty = write_config(&dir, "empty.toml", "format = \"json\"\n");
    assert_fails(
        &MAP_TRACE.run(&["--config", empty.to_str().unwrap()]),
        2,
        "nothing to trace",
    );
    assert_fails(
        &MAP_TRACE.run(&["--config", "/no/such/map-trace.toml"]),
        2,
        "/no/such/map-trace.toml",
    );
    assert_fails(&MAP_TRACE.run(&[]), 2, "nothing to trace");
}

#[test]
fn surprising_settings_are_warned_about() {
    let dir = Scratch::new("config-cli-warn");
    let p = write_config(
        &dir,
        "warn.toml",
        "exe = [\"/no/such/service\"]\nmetrics_addr = \"0.0.0.0:9464\"\n",
    );
    let (code, _, err) = check(&["--config", p.to_str().unwrap(), "--check-config"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("containers"), "{err}");
    assert!(err.contains("reachable from other hosts"), "{err}");
}
