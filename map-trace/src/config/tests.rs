use super::*;

fn file(text: &str) -> Result<FileConfig, ConfigError> {
    parse(Path::new("/etc/map-trace/config.toml"), text)
}

fn merged(text: &str, flags: Flags) -> Result<Settings, ConfigError> {
    let p = Path::new("/etc/map-trace/config.toml");
    merge(Some((p, file(text)?)), flags)
}

#[test]
fn a_full_file_is_read() {
    let s = merged(
        r#"
pid = [10, 20]
exe = ["/usr/local/bin/api"]
duration = "5m"
format = "json"
metrics_addr = "127.0.0.1:9464"
duty_cycle = "1s/10s"
low_overhead = true
every_occurrence = true
"#,
        Flags::default(),
    )
    .unwrap();
    assert_eq!(
        s,
        Settings {
            pids: vec![10, 20],
            exes: vec!["/usr/local/bin/api".into()],
            duration: Some(Duration::from_secs(300)),
            format: Format::Json,
            metrics_addr: Some("127.0.0.1:9464".parse().unwrap()),
            duty_cycle: Some(DutyCycle {
                on: Duration::from_secs(1),
                period: Duration::from_secs(10),
            }),
            mode: IterationMode::Ends,
            escalation: Escalation::default(),
            every_occurrence: true,
            sarif: None,
            source_root: None,
            command: None,
            all: None,
        }
    );
}

#[test]
fn flags_override_the_file_key_by_key() {
    let flags = Flags {
        pids: vec![7],
        format: Some(Format::Human),
        metrics_addr: Some("[::1]:9000".parse().unwrap()),
        ..Flags::default()
    };
    let s = merged(
        "pid = [10]\nexe = [\"/bin/x\"]\nformat = \"json\"\nmetrics_addr = \"127.0.0.1:1\"\nduration = \"1s\"",
        flags,
    )
    .unwrap();
    assert_eq!(s.pids, [7], "a --pid replaces the file's list");
    assert_eq!(s.exes, [PathBuf::from("/bin/x")], "untouched keys stay");
    assert_eq!(s.format, Format::Human);
    assert_eq!(s.metrics_addr, Some("[::1]:9000".parse().unwrap()));
    assert_eq!(s.duration, Some(Duration::from_secs(1)));
}

#[test]
fn defaults_without_a_file() {
    let s = merge(
        None,
        Flags {
            pids: vec![1],
            ..Flags::default()
        },
    )
    .unwrap();
    assert_eq!(s.format, Format::Human);
    assert_eq!(s.metrics_addr, None, "no endpoint unless asked for");
    assert_eq!(s.duration, None);
}

#[test]
fn errors_name_the_file_the_key_and_the_value() {
    let e = merged(
        "exe = [\"/x\"]\nmetrics_addr = \"localhost\"",
        Flags::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("/etc/map-trace/config.toml"), "{e}");
    assert!(e.contains("metrics_addr = \"localhost\""), "{e}");
    let e = merged("exe = [\"/x\"]\nduration = \"soon\"", Flags::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("duration = \"soon\""), "{e}");
}

#[test]
fn unknown_keys_and_bad_types_are_rejected_with_their_line() {
    let e = file("exe = [\"/x\"]\nmetrics-addr = \"127.0.0.1:1\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("metrics-addr") && e.contains("line 2"), "{e}");
    let e = file("pid = \"42\"").unwrap_err().to_string();
    assert!(e.contains("line 1"), "{e}");
    let e = file("format = \"yaml\"").unwrap_err().to_string();
    assert!(e.contains("yaml"), "{e}");
    assert!(!e.contains('\n'), "one line: {e}");
}

#[test]
fn parse_errors_say_where_without_quoting_the_text() {
    let text = format!("exe = [\"/x\"]\nbogus = \"{}\"\n", "y".repeat(100_000));
    let e = file(&text).unwrap_err().to_string();
    assert!(e.len() < 500, "{} chars", e.len());
    assert!(e.contains("line 2, column 1: unknown field `bogus`"), "{e}");
    assert_eq!(line_column("a\nbé\nc", 5), (2, 3));
}

#[test]
fn duty_cycles_are_checked() {
    let d = DutyCycle::parse("500ms/5s").unwrap();
    assert_eq!(d.on, Duration::from_millis(500));
    assert!((d.fraction() - 0.1).abs() < 1e-9);
    for bad in ["1s", "10s/1s", "1s/1s", "0s/1s", "10ms/1s", "x/1s"] {
        assert!(DutyCycle::parse(bad).is_err(), "{bad}");
    }
    let e = merged("exe = [\"/x\"]\nduty_cycle = \"2s/1s\"", Flags::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("duty_cycle = \"2s/1s\""), "{e}");
}

#[test]
fn nothing_to_trace_is_an_error() {
    assert!(matches!(
        merged("format = \"json\"", Flags::default()),
        Err(ConfigError::NoTargets)
    ));
    assert!(matches!(
        merged("pid = [0]", Flags::default()),
        Err(ConfigError::PidZero)
    ));
}

#[test]
fn warnings_for_valid_but_surprising_settings() {
    let s = merge(
        None,
        Flags {
            exes: vec!["relative/bin".into(), "/no/such/map-trace-binary".into()],
            metrics_addr: Some("0.0.0.0:9464".parse().unwrap()),
            ..Flags::default()
        },
    )
    .unwrap();
    let w = s.warnings().join("\n");
    assert!(w.contains("relative path"), "{w}");
    assert!(w.contains("containers"), "{w}");
    assert!(w.contains("other hosts"), "{w}");
    assert!(
        s.describe()
            .contains("metrics: http://0.0.0.0:9464/metrics")
    );
}

#[test]
fn the_mode_is_one_setting_with_the_old_flag_as_an_alias() {
    let s = merged("exe = [\"/a\"]\nmode = \"sentinel\"\n", Flags::default()).unwrap();
    assert_eq!(s.mode, IterationMode::Sentinel);
    assert_eq!(s.escalation, Escalation::default());
    assert!(
        s.describe()
            .contains("sentinel: range start and end compared"),
        "{}",
        s.describe()
    );
    // A flag wins over the file.
    let flags = Flags {
        mode: Some(Mode::Full),
        ..Flags::default()
    };
    let s = merged("exe = [\"/a\"]\nmode = \"sentinel\"\n", flags).unwrap();
    assert_eq!(s.mode, IterationMode::Steps);
    let s = merged("exe = [\"/a\"]\nlow_overhead = true\n", Flags::default()).unwrap();
    assert_eq!(s.mode, IterationMode::Ends);
    let e = merged(
        "exe = [\"/a\"]\nmode = \"full\"\nlow_overhead = true\n",
        Flags::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("keep one"), "{e}");
    let e = file("mode = \"fast\"\n").unwrap_err().to_string();
    assert!(e.contains("sentinel"), "{e}");
}

#[test]
fn the_sentinel_escalation_is_bounded_and_never_duty_cycled() {
    let s = merged(
        "exe = [\"/a\"]\nmode = \"sentinel\"\nescalate_for = \"5s\"\nescalate_every = \"30s\"\n",
        Flags::default(),
    )
    .unwrap();
    assert_eq!(
        s.escalation,
        Escalation {
            window: Duration::from_secs(5),
            every: Duration::from_secs(30)
        }
    );
    let e = merged(
        "exe = [\"/a\"]\nmode = \"sentinel\"\nescalate_for = \"5m\"\n",
        Flags::default(),
    )
    .unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("at least escalate_for"), "{e}");
    let e = merged(
        "exe = [\"/a\"]\nmode = \"sentinel\"\nduty_cycle = \"1s/10s\"\n",
        Flags::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("do not go together"), "{e}");
    let e = merged(
        "exe = [\"/a\"]\nescalate_for = \"soon\"\n",
        Flags::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("escalate_for = \"soon\""), "{e}");
}
