//! The settings of a tracing session: a TOML file (e.g. `/etc/map-trace/config.toml`) for a
//! service, command-line flags for a person, and flags win. Pure: reading the file is the only
//! I/O, so every rule is unit-tested.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gobin::input::{self, InputError};
use serde::Deserialize;

mod mode;

pub use mode::{Escalation, Mode};

use crate::output::Format;
use crate::plan::IterationMode;

/// Where `--metrics-addr` with no value serves: loopback, never all interfaces.
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9464";

/// The file's keys, the same settings as the flags. Unknown keys are errors: a misspelt key
/// silently ignored would be a service that traces nothing.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub pid: Vec<u32>,
    #[serde(default)]
    pub exe: Vec<PathBuf>,
    /// e.g. "30s", "10m".
    pub duration: Option<String>,
    pub format: Option<Format>,
    pub metrics_addr: Option<String>,
    /// e.g. "1s/10s".
    pub duty_cycle: Option<String>,
    /// "full", "low-overhead" or "sentinel" (`--mode`).
    pub mode: Option<Mode>,
    /// The older spelling of `mode = "low-overhead"` (`--low-overhead`).
    pub low_overhead: Option<bool>,
    /// Every Go process on the host, present and future (`--all`).
    pub all: Option<bool>,
    /// With `all`: shell patterns on executable paths to trace only / never (`--include`,
    /// `--exclude`).
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    /// With `all`: binaries traced at once at most (`--max-binaries`).
    pub max_binaries: Option<usize>,
    /// Sentinel mode: how long the full probes stay after a change, e.g. "10s".
    pub escalate_for: Option<String>,
    /// Sentinel mode: least time between two escalations of one binary, e.g. "1m".
    pub escalate_every: Option<String>,
    /// Print every occurrence in full, not one per finding group (`--every-occurrence`).
    pub every_occurrence: Option<bool>,
    /// Write the finding groups as a SARIF 2.1.0 log here at exit (`--sarif`).
    pub sarif: Option<PathBuf>,
    /// SARIF paths under this directory are relative to it (`--source-root`).
    pub source_root: Option<PathBuf>,
}

/// What the command line said; None/empty where it said nothing.
#[derive(Debug, Default)]
pub struct Flags {
    pub pids: Vec<u32>,
    pub exes: Vec<PathBuf>,
    pub duration: Option<Duration>,
    pub format: Option<Format>,
    pub metrics_addr: Option<SocketAddr>,
    pub duty_cycle: Option<DutyCycle>,
    pub mode: Option<Mode>,
    pub all: Option<bool>,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub max_binaries: Option<usize>,
    pub escalate_for: Option<Duration>,
    pub escalate_every: Option<Duration>,
    pub every_occurrence: Option<bool>,
    pub sarif: Option<PathBuf>,
    pub source_root: Option<PathBuf>,
    /// `map-trace run`.
    pub command: Option<RunCommand>,
}

/// Probes attached for `on` out of every `period`, detached the rest of the time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DutyCycle {
    pub on: Duration,
    pub period: Duration,
}

impl DutyCycle {
    /// `ON/PERIOD`, each a duration such as `1s` or `500ms`.
    pub fn parse(s: &str) -> Result<DutyCycle, String> {
        let usage = "expected ON/PERIOD, e.g. 1s/10s (probes attached 1 s of every 10 s)";
        let (on, period) = s.split_once('/').ok_or(usage)?;
        let d = |v: &str| {
            humantime::parse_duration(v.trim()).map_err(|e| format!("{v:?}: {e}; {usage}"))
        };
        let (on, period) = (d(on)?, d(period)?);
        if on.is_zero() || on >= period {
            return Err(format!(
                "ON must be more than 0 and less than PERIOD; {usage}"
            ));
        }
        if on < Duration::from_millis(100) {
            return Err(format!(
                "ON must be at least 100ms, or attaching costs more than it observes; {usage}"
            ));
        }
        Ok(DutyCycle { on, period })
    }

    /// Share of the time the probes are attached.
    pub fn fraction(&self) -> f64 {
        self.on.as_secs_f64() / self.period.as_secs_f64()
    }
}

/// The settings a session runs with.
#[derive(Debug, PartialEq)]
pub struct Settings {
    pub pids: Vec<u32>,
    pub exes: Vec<PathBuf>,
    pub duration: Option<Duration>,
    pub format: Format,
    pub metrics_addr: Option<SocketAddr>,
    pub duty_cycle: Option<DutyCycle>,
    pub mode: IterationMode,
    /// Sentinel mode's escalations (unused in the other modes).
    pub escalation: Escalation,
    /// Every occurrence in full instead of one per group and rate-limited updates.
    pub every_occurrence: bool,
    /// Where the SARIF log goes at exit, if anywhere.
    pub sarif: Option<PathBuf>,
    /// The directory SARIF paths are relative to (default: the working directory).
    pub source_root: Option<PathBuf>,
    /// `map-trace run`: the command to start and follow.
    pub command: Option<RunCommand>,
    /// `--all`: every Go process on the host, as filtered and capped here.
    pub all: Option<AllProcesses>,
}

/// `--all`'s settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllProcesses {
    /// Shell patterns on executable paths: trace only these (empty: all) …
    pub include: Vec<String>,
    /// … and never these.
    pub exclude: Vec<String>,
    pub max_binaries: usize,
}

/// Binaries `--all` traces at once unless `max_binaries` says otherwise.
pub const DEFAULT_MAX_BINARIES: usize = 256;

/// What `map-trace run` starts, and how it ends.
#[derive(Debug, Clone, PartialEq)]
pub struct RunCommand {
    pub argv: Vec<std::ffi::OsString>,
    pub fail_on: crate::daemon::command::FailOn,
    /// Run it as root even under sudo.
    pub keep_root: bool,
    /// Trace the Go toolchain's own commands too.
    pub toolchain: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {why}", .path.display())]
    Read { path: PathBuf, why: String },
    /// Where and what, without toml's excerpt of the offending text: that can be the whole
    /// (up to 1 MiB) line.
    #[error("{}: {where_}{message}", .path.display())]
    Parse {
        path: PathBuf,
        /// "line L, column C: ", or empty when toml gives no position.
        where_: String,
        message: String,
    },
    #[error("{}: {key} = {value:?}: {why}", .path.display())]
    Value {
        path: PathBuf,
        key: &'static str,
        value: String,
        why: String,
    },
    #[error(
        "nothing to trace: give --pid PID, --exe PATH or --all, or a config file with pid = [...], exe = [...] or all = true"
    )]
    NoTargets,
    #[error("pid 0 is not a process")]
    PidZero,
    #[error(
        "map-trace run traces what its command starts: --pid, --exe and --all (or pid, exe and all in the config file) do not go with it"
    )]
    RunWithTargets,
    #[error(
        "max_binaries = {0}: must be 1 to {max}",
        max = map_trace_common::config::MAX_BINARIES
    )]
    MaxBinaries(usize),
    #[error("include and exclude patterns apply to --all only")]
    FilterWithoutAll,
    #[error(
        "mode sentinel and duty_cycle do not go together: the sentinel is the always-on mode (it attaches the full probes only after a change); choose one"
    )]
    SentinelDuty,
    #[error("{0}")]
    Escalation(String),
}

impl ConfigError {
    /// A bad configuration is a usage error, like a bad flag.
    pub fn exit_code(&self) -> u8 {
        2
    }
}

/// Reads and parses a config file: a regular file of at most [`input::MAX_CONFIG_BYTES`], so
/// `--config /dev/zero` or a FIFO is refused at once instead of hanging or filling memory.
pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
    let read = |why: String| ConfigError::Read {
        path: path.to_path_buf(),
        why,
    };
    let bytes = input::read_regular(path, input::MAX_CONFIG_BYTES).map_err(|e| {
        read(match e {
            InputError::NotRegular(kind) => format!("not a regular file but a {kind}"),
            InputError::TooLarge { size, limit } => format!(
                "{size} bytes, more than the {} a config file may have",
                input::bytes(limit)
            ),
            InputError::Io(e) => input::describe_io(&e),
        })
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        read(format!(
            "not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ))
    })?;
    parse(path, &text)
}

pub fn parse(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        where_: e.span().map_or(String::new(), |span| {
            let (line, column) = line_column(text, span.start);
            format!("line {line}, column {column}: ")
        }),
        message: e.message().trim_end().replace('\n', " "),
    })
}

/// 1-based line and column (in characters) of byte offset `at` in `text`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let before = text.get(..at).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// The file's settings overridden by the flags: a flag given replaces that key of the file
/// (lists included: `--pid` on the command line means exactly those pids).
pub fn merge(file: Option<(&Path, FileConfig)>, flags: Flags) -> Result<Settings, ConfigError> {
    let (path, file) = match file {
        Some((p, f)) => (p.to_path_buf(), f),
        None => (PathBuf::new(), FileConfig::default()),
    };
    let bad = |key: &'static str, value: &str, why: String| ConfigError::Value {
        path: path.clone(),
        key,
        value: value.to_string(),
        why,
    };
    let file_duration = match &file.duration {
        Some(d) => {
            Some(humantime::parse_duration(d).map_err(|e| bad("duration", d, e.to_string()))?)
        }
        None => None,
    };
    let file_addr = match &file.metrics_addr {
        Some(a) => Some(parse_addr(a).map_err(|why| bad("metrics_addr", a, why))?),
        None => None,
    };
    let file_duty = match &file.duty_cycle {
        Some(v) => Some(DutyCycle::parse(v).map_err(|why| bad("duty_cycle", v, why))?),
        None => None,
    };
    let file_mode = match (file.mode, file.low_overhead) {
        (Some(m), None) => Some(m),
        (None, Some(true)) => Some(Mode::LowOverhead),
        (None, Some(false)) => Some(Mode::Full),
        (None, None) => None,
        (Some(m), Some(_)) => {
            return Err(bad(
                "low_overhead",
                "set",
                format!(
                    "mode = \"{}\" is given too: keep one (low_overhead = true is mode = \"low-overhead\")",
                    m.iteration_mode().name()
                ),
            ));
        }
    };
    let file_time = |key: &'static str, v: &Option<String>| match v {
        Some(v) => humantime::parse_duration(v)
            .map(Some)
            .map_err(|e| bad(key, v, e.to_string())),
        None => Ok(None),
    };
    let default = Escalation::default();
    let window = flags
        .escalate_for
        .or(file_time("escalate_for", &file.escalate_for)?)
        .unwrap_or(default.window);
    let every = flags
        .escalate_every
        .or(file_time("escalate_every", &file.escalate_every)?)
        .unwrap_or(default.every);
    let escalation = Escalation::new(window, every).map_err(ConfigError::Escalation)?;
    let mode = flags.mode.or(file_mode).unwrap_or(Mode::Full);
    let duty_cycle = flags.duty_cycle.or(file_duty);
    if mode == Mode::Sentinel && duty_cycle.is_some() {
        return Err(ConfigError::SentinelDuty);
    }
    let settings = Settings {
        pids: if flags.pids.is_empty() {
            file.pid
        } else {
            flags.pids
        },
        exes: if flags.exes.is_empty() {
            file.exe
        } else {
            flags.exes
        },
        duration: flags.duration.or(file_duration),
        format: flags.format.or(file.format).unwrap_or(Format::Human),
        metrics_addr: flags.metrics_addr.or(file_addr),
        duty_cycle,
        mode: mode.iteration_mode(),
        escalation,
        every_occurrence: flags
            .every_occurrence
            .or(file.every_occurrence)
            .unwrap_or(false),
        sarif: flags.sarif.or(file.sarif),
        source_root: flags.source_root.or(file.source_root),
        command: flags.command,
        all: None,
    };
    let mut settings = settings;
    let include = if flags.include.is_empty() {
        file.include
    } else {
        flags.include
    };
    let exclude = if flags.exclude.is_empty() {
        file.exclude
    } else {
        flags.exclude
    };
    let max_binaries = flags
        .max_binaries
        .or(file.max_binaries)
        .unwrap_or(DEFAULT_MAX_BINARIES);
    if !(1..=map_trace_common::config::MAX_BINARIES as usize).contains(&max_binaries) {
        return Err(ConfigError::MaxBinaries(max_binaries));
    }
    if flags.all.or(file.all).unwrap_or(false) {
        settings.all = Some(AllProcesses {
            include,
            exclude,
            max_binaries,
        });
    } else if !include.is_empty() || !exclude.is_empty() {
        return Err(ConfigError::FilterWithoutAll);
    }
    if settings.pids.contains(&0) {
        return Err(ConfigError::PidZero);
    }
    if settings.command.is_some() {
        if !(settings.pids.is_empty() && settings.exes.is_empty() && settings.all.is_none()) {
            return Err(ConfigError::RunWithTargets);
        }
        return Ok(settings);
    }
    if settings.pids.is_empty() && settings.exes.is_empty() && settings.all.is_none() {
        return Err(ConfigError::NoTargets);
    }
    Ok(settings)
}

/// A listen address: `host:port` with an IP host.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .map_err(|_| "expected IP:PORT, e.g. 127.0.0.1:9464 (loopback) or [::1]:9464".to_string())
}

impl Settings {
    /// What `--check-config` prints: the effective settings, one per line, and a warning for
    /// each thing that will not work as the user may expect.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let list = |v: Vec<String>| {
            if v.is_empty() {
                "(none)".to_string()
            } else {
                v.join(", ")
            }
        };
        s.push_str(&format!(
            "pid: {}\n",
            list(self.pids.iter().map(u32::to_string).collect())
        ));
        s.push_str(&format!(
            "exe: {}\n",
            list(self.exes.iter().map(|p| p.display().to_string()).collect())
        ));
        if let Some(a) = &self.all {
            s.push_str(&format!(
                "all: every Go process on this host, at most {} binaries at once; include {}; exclude {}\n",
                a.max_binaries,
                list(a.include.clone()),
                list(a.exclude.clone())
            ));
        }
        s.push_str(&format!(
            "duration: {}\n",
            self.duration
                .map_or("until stopped".into(), |d| humantime::format_duration(d)
                    .to_string())
        ));
        s.push_str(&format!(
            "format: {}\n",
            match self.format {
                Format::Human => "human",
                Format::Json => "json",
            }
        ));
        s.push_str(&format!(
            "occurrences: {}\n",
            if self.every_occurrence {
                "every one printed in full"
            } else {
                "the first of each finding group in full, then its count at most every 5s"
            }
        ));
        s.push_str(&format!(
            "sarif: {}\n",
            self.sarif.as_ref().map_or("off".into(), |p| format!(
                "{} at exit, paths relative to {}",
                p.display(),
                self.source_root
                    .as_ref()
                    .map_or("the working directory".into(), |r| r.display().to_string())
            ))
        ));
        s.push_str(&format!(
            "duty cycle: {}\n",
            self.duty_cycle
                .map_or("off (probes always attached)".into(), |d| format!(
                    "probes attached {} of every {} ({:.0}% of the time)",
                    humantime::format_duration(d.on),
                    humantime::format_duration(d.period),
                    d.fraction() * 100.0
                ))
        ));
        s.push_str(&format!(
            "iterations: {}\n",
            mode::describe(self.mode, self.escalation)
        ));
        s.push_str(&format!(
            "metrics: {}\n",
            self.metrics_addr
                .map_or("off".into(), |a| format!("http://{a}/metrics"))
        ));
        s
    }

    /// Things that are valid but probably not meant.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        for exe in &self.exes {
            // Only a path that names nothing here may name a file inside containers; a
            // symlink loop or a FIFO is a mistake to point out, not "no such file".
            let problem = match std::fs::metadata(exe) {
                Ok(m) if m.is_file() => continue,
                Ok(m) => {
                    w.push(format!(
                        "exe {}: not a regular file but a {}; tracing it will fail",
                        exe.display(),
                        input::kind_name(&m.file_type())
                    ));
                    continue;
                }
                Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                    input::describe_io(&e)
                }
                Err(e) => {
                    w.push(format!(
                        "exe {}: {}; tracing it will fail",
                        exe.display(),
                        input::describe_io(&e)
                    ));
                    continue;
                }
            };
            if !exe.is_absolute() {
                w.push(format!(
                    "exe {}: {problem}, and a relative path cannot name a file inside containers",
                    exe.display()
                ));
            } else {
                w.push(format!(
                    "exe {}: {problem} on this host; only processes that run it inside their own root (containers) will be traced",
                    exe.display()
                ));
            }
        }
        if let Some(a) = self.metrics_addr
            && !a.ip().is_loopback()
        {
            w.push(format!(
                "metrics_addr {a} is reachable from other hosts; use a loopback address unless that is intended"
            ));
        }
        w
    }
}

#[cfg(test)]
mod tests;
