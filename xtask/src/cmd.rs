//! Running external commands so that every failure says which command failed and how to fix it.
//! Standard input is always closed: a tool that would prompt fails instead of waiting forever.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};

use anyhow::{Result, anyhow, bail};

/// The command as a shell line, for messages.
pub fn display(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        let arg = arg.to_string_lossy();
        line.push(' ');
        if arg.is_empty() || arg.contains([' ', '\'', '"']) {
            line.push_str(&format!("'{arg}'"));
        } else {
            line.push_str(&arg);
        }
    }
    line
}

fn spawn_error(cmd: &Command, err: std::io::Error, fix: &str) -> anyhow::Error {
    anyhow!("could not start `{}`: {err}; {fix}", display(cmd))
}

fn status_error(cmd: &Command, status: ExitStatus, fix: &str) -> anyhow::Error {
    anyhow!("`{}` failed ({status}); {fix}", display(cmd))
}

/// Runs with the output shown to the user.
pub fn run(cmd: &mut Command, fix: &str) -> Result<()> {
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .map_err(|e| spawn_error(cmd, e, fix))?;
    if !status.success() {
        return Err(status_error(cmd, status, fix));
    }
    Ok(())
}

/// Runs quietly and returns stdout; on failure the error ends with the command's stderr.
pub fn output(cmd: &mut Command, fix: &str) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| spawn_error(cmd, e, fix))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stderr = stderr.trim_end();
        let err = status_error(cmd, out.status, fix);
        if stderr.is_empty() {
            return Err(err);
        }
        return Err(anyhow!("{err}\n{stderr}"));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// For detection only: stdout when the command exists and succeeds, `None` otherwise.
pub fn probe(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs with stdout passed through line by line to `on_line` (and printed), so that callers
/// can read results such as test counts without hiding the output.
pub fn run_tee(cmd: &mut Command, fix: &str, mut on_line: impl FnMut(&str)) -> Result<ExitStatus> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_error(cmd, e, fix))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        println!("{line}");
        on_line(&line);
    }
    child.wait().map_err(|e| spawn_error(cmd, e, fix))
}

/// Starts a background process. `stdin` is explicit: a piped stdin that is never written keeps
/// a program that waits for input alive without a terminal.
pub fn spawn(cmd: &mut Command, stdin: Stdio, fix: &str) -> Result<Child> {
    cmd.stdin(stdin)
        .spawn()
        .map_err(|e| spawn_error(cmd, e, fix))
}

/// The real (effective) user decides what apt-get, rustup into /root and uprobes can do.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

pub fn require_root(what: &str, why: &str) -> Result<()> {
    if !is_root() {
        bail!("`{what}` must run as root ({why}); rerun it as root, e.g. `sudo -E {what}`");
    }
    Ok(())
}
