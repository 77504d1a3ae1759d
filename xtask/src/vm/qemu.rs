//! Boots one VM under qemu (TCG) with a hard deadline, keeping its serial console.

use std::fs::File;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use super::kernels::Vm;

pub enum Ended {
    /// qemu exited by itself (it exits 0 on any clean poweroff: the result is in the log).
    Exited(std::process::ExitStatus),
    /// Still running at the deadline: killed.
    TimedOut,
    /// No `booted` line within the boot deadline: killed. The kernel never reached /init
    /// (seen once in CI under TCG), which a second boot may not repeat.
    NoBoot,
}

pub struct Boot {
    pub ended: Ended,
    /// The serial console, `\r` removed.
    pub serial: String,
    pub seconds: f64,
}

pub fn command(vm: &Vm, initramfs: &Path) -> Command {
    let mut c = Command::new(vm.arch.qemu());
    c.args(vm.arch.machine_args())
        .args(["-accel", vm.arch.accel(), "-m", "2048", "-smp", "2"])
        .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
        .arg("-no-reboot")
        .arg("-kernel")
        .arg(vm.vmlinuz())
        .arg("-initrd")
        .arg(initramfs)
        // panic=-1 and oops=panic: a kernel that dies ends the VM at once instead of at the
        // deadline. Warnings and errors during boot reach the console (a boot that stalls
        // explains itself); /init lowers the level before any framed result is printed.
        .arg("-append")
        .arg(format!(
            "console={} rdinit=/init panic=-1 oops=panic loglevel=4",
            vm.arch.console()
        ));
    c
}

/// Runs `cmd` until it exits or `deadline` passes (then kills it), writing every console
/// line to `log` as it comes and handing it to `on_line` (progress). A console that shows no
/// line containing `booted` within `boot_deadline` is killed early (`Ended::NoBoot`).
pub fn boot(
    mut cmd: Command,
    log: &Path,
    deadline: Duration,
    (booted, boot_deadline): (&str, Duration),
    mut on_line: impl FnMut(&str),
) -> Result<Boot> {
    let started = Instant::now();
    let mut file = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!(
                "could not start `{}`; run `cargo xtask setup` (it installs qemu)",
                crate::cmd::display(&cmd)
            )
        })?;
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let err_tx = tx.clone();
    // qemu's own complaints go to the same log, marked, so a failed boot explains itself.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = err_tx.send(format!("[qemu] {line}"));
        }
    });
    std::thread::spawn(move || {
        // Lossy: a kernel message may carry bytes that are not UTF-8.
        let mut reader = BufReader::new(stdout);
        let mut raw = Vec::new();
        while reader.read_until(b'\n', &mut raw).is_ok_and(|n| n > 0) {
            let line = String::from_utf8_lossy(&raw);
            let _ = tx.send(line.trim_end_matches(['\n', '\r']).replace('\r', ""));
            raw.clear();
        }
    });
    let mut serial = String::new();
    let mut has_booted = false;
    let ended = loop {
        let left = deadline.saturating_sub(started.elapsed());
        match rx.recv_timeout(left.min(Duration::from_millis(200))) {
            Ok(line) => {
                let _ = writeln!(file, "{line}");
                has_booted |= line.contains(booted);
                on_line(&line);
                serial.push_str(&line);
                serial.push('\n');
                continue;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // Both readers are done: qemu closed its output, so it is exiting.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break Ended::Exited(child.wait().context("waiting for qemu")?);
            }
        }
        if let Some(status) = child.try_wait().context("waiting for qemu")? {
            // Whatever it printed last is still in the channel.
            for line in rx.try_iter() {
                let _ = writeln!(file, "{line}");
                serial.push_str(&line);
                serial.push('\n');
            }
            break Ended::Exited(status);
        }
        if !has_booted && started.elapsed() >= boot_deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = writeln!(
                file,
                "[xtask] killed qemu: no {booted:?} after {boot_deadline:?}"
            );
            break Ended::NoBoot;
        }
        if started.elapsed() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = writeln!(file, "[xtask] killed qemu after {deadline:?}");
            break Ended::TimedOut;
        }
    };
    Ok(Boot {
        ended,
        serial,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn a_console_without_the_boot_mark_is_killed_at_the_boot_deadline() {
        let dir = std::env::temp_dir().join(format!("xtask-qemu-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("noboot.log");
        let started = Instant::now();
        let b = boot(
            sh("echo 'kernel: stuck'; sleep 30"),
            &log,
            Duration::from_secs(60),
            ("@@MT:BOOTED", Duration::from_millis(500)),
            |_| {},
        )
        .unwrap();
        assert!(matches!(b.ended, Ended::NoBoot));
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(b.serial.contains("kernel: stuck"));
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            text.contains("[xtask] killed qemu: no \"@@MT:BOOTED\""),
            "{text}"
        );

        // Booted in time: the boot deadline no longer applies, only the run's own.
        let b = boot(
            sh("echo '@@MT:BOOTED 1.0 6.1'; sleep 1; echo done"),
            &dir.join("booted.log"),
            Duration::from_secs(60),
            ("@@MT:BOOTED", Duration::from_millis(500)),
            |_| {},
        )
        .unwrap();
        assert!(matches!(b.ended, Ended::Exited(s) if s.success()));
        assert!(b.serial.contains("done"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
