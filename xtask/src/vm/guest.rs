//! What runs inside a VM: the plan (which fixtures, which scenarios) and the `/init` script
//! that carries it out with busybox and reports back over the serial console.
//!
//! One map-trace daemon (`--exe` per fixture) traces every scenario process: loading and
//! verifying the eBPF programs is what costs under emulation, so it is paid once per VM. Then
//! one `map-trace --pid --low-overhead` run covers that path and the low-overhead mode's end
//! sites on this architecture. Outputs stay in a tmpfs until everything has
//! run, then go out framed (serial.rs), so console noise cannot interleave with them.

use std::fmt::Write as _;
use std::path::PathBuf;

use super::scenarios::{Racy, racy_patterns};

/// Attempts at one racy scenario: each is a real race, which Go's own check wins some runs.
pub const RACY_ATTEMPTS: u32 = 4;

/// A Go scenarios binary and the scenarios to run on it.
pub struct GuestFixture {
    /// The manifest's name, e.g. `go1.27.3-arm64-default`; the file is `/fx/<name>`.
    pub name: String,
    pub host_path: PathBuf,
    /// The sources it was built from (their `want:` markers) and its Go minor.
    pub source_dir: PathBuf,
    pub minor: u32,
    /// Each scenario with the finding kinds it must produce.
    pub scenarios: Vec<(&'static str, &'static [&'static str])>,
    /// Real races (writes in progress, Go's map fatal errors), each run until complete.
    pub racy: Vec<&'static Racy>,
    /// Classic maps (growth is an evacuation that writes can overlap).
    pub classic: bool,
}

/// Traced with `map-trace --pid --mode sentinel` on the `pid_run` fixture: its range sees
/// another goroutine's insert, which the sentinel reports from the map's header.
pub const SENTINEL_SCENARIO: &str = "cross_insert_str";

pub struct Plan {
    pub fixtures: Vec<GuestFixture>,
    /// The kernel runs map-trace's fatal-error probe: a racy run that dies reports it.
    pub fatal: bool,
    /// (fixture name, scenario) traced with `map-trace --pid --low-overhead` after the daemon
    /// (the same fixture is also traced with `--mode sentinel` on `SENTINEL_SCENARIO`)
    /// stopped.
    pub pid_run: (String, &'static str),
}

/// Seconds a scenario process may take before busybox `timeout` kills it.
const TARGET_TIMEOUT: u32 = 120;
/// Tenths of a second to wait for the daemon's `probes attached` lines.
const ATTACH_WAIT: u32 = 3000;
/// Tenths of a second to wait for the daemon to say a target exited (its findings drained). An
/// emulated guest may keep the main loop busy for seconds after a big process exits.
pub(super) const EXIT_WAIT: u32 = 300;

pub fn guest_path(fixture: &str) -> String {
    format!("/fx/{fixture}")
}

/// The `/init` of the guest, timeouts not yet filled in. Every file under /tmp/out reaches the host; `runs` has one line
/// per scenario process: `n pid fixture scenario exit-code exited-seen start end target-end`.
fn init_script(plan: &Plan) -> String {
    let mut s = String::from(INIT_HEAD);
    let exes: Vec<String> = plan
        .fixtures
        .iter()
        .map(|f| format!("--exe {}", guest_path(&f.name)))
        .collect();
    let _ = writeln!(
        s,
        "# Slow main-loop turns are named: they explain a late \"pid N exited\".\nMAP_TRACE_DEBUG_LOOP=1 map-trace {} --format json --every-occurrence > $O/daemon.out 2> $O/daemon.err &\nMT=$!",
        exes.join(" ")
    );
    let _ = writeln!(
        s,
        "if await 'probes attached for every process' $O/daemon.err {} {ATTACH_WAIT} $MT; then",
        plan.fixtures.len()
    );
    s.push_str("  mark ATTACHED $(now)\n");
    let mut n = 0;
    for f in &plan.fixtures {
        for (scenario, _) in &f.scenarios {
            n += 1;
            let _ = writeln!(s, "  run {n} {} {scenario}", f.name);
        }
    }
    for f in &plan.fixtures {
        for racy in &f.racy {
            n += 1;
            // Single quotes: the patterns hold double quotes and brackets, never a single quote.
            let patterns: Vec<String> = racy_patterns(racy, f.classic)
                .iter()
                .map(|p| format!("'{p}'"))
                .collect();
            let _ = writeln!(
                s,
                "  racy {n} {} {} {RACY_ATTEMPTS} {}",
                f.name,
                racy.name,
                patterns.join(" ")
            );
        }
    }
    s.push_str("else\n  mark ATTACH-FAILED $(now)\nfi\n");
    s.push_str(STOP_DAEMON);
    let (fixture, scenario) = &plan.pid_run;
    let _ = writeln!(
        s,
        "pid_run {} {scenario} low-overhead pid",
        guest_path(fixture)
    );
    let _ = writeln!(
        s,
        "pid_run {} {SENTINEL_SCENARIO} sentinel sentinel",
        guest_path(fixture)
    );
    s.push_str(INIT_TAIL);
    s
}

const INIT_HEAD: &str = r#"#!/bin/busybox sh
# /init of a map-trace test VM, written by `cargo xtask vm-test`.
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox --install -s /bin
export PATH=/bin
# The correct patterns run a tenth of their host-sized loops: each probe hit costs ~50× more
# under TCG, and they took 9 of every 10 seconds of the scenario runs (testdata/go/scenarios).
export SCENARIO_SCALE=10
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
# Kernel messages on the console would land between the framed results.
echo 1 > /proc/sys/kernel/printk
mark() { echo "@@MT:$*"; }
now() { cut -d' ' -f1 /proc/uptime; }
# await PATTERN FILE COUNT TENTHS [PID]: until FILE has COUNT lines with PATTERN, or TENTHS
# pass, or the process PID (the daemon writing FILE) has exited: a daemon that failed would
# otherwise hold the guest for the whole wait, past its deadline, before it dumps what it said.
await() {
  i=0
  while :; do
    c=$(grep -c -- "$1" "$2" 2>/dev/null)
    [ "${c:-0}" -ge "$3" ] && return 0
    [ $i -ge "$4" ] && return 1
    [ -n "$5" ] && ! kill -0 "$5" 2>/dev/null && return 1
    sleep 0.1
    i=$((i+1))
  done
}
mark BOOTED $(now) $(uname -r)
O=/tmp/out
mkdir -p $O
uname -a > $O/uname
echo go > /tmp/go
# run N FIXTURE SCENARIO [RUNS]: the target reads "go" and runs at once; the daemon's probes
# are attached to its file already. timeout execs the target in its own pid, so $! is the pid
# findings carry. One line per run goes to $O/RUNS (default runs).
run() {
  t=$(now)
  timeout __TARGET_TIMEOUT__ /fx/$2 $3 < /tmp/go > $O/run-$2-$3.out 2> $O/run-$2-$3.err &
  p=$!
  wait $p
  rc=$?
  e=$(now)
  # Its findings are drained before the daemon says it exited.
  if await "pid $p exited" $O/daemon.err 1 __EXIT_WAIT__ $MT; then seen=1; else seen=0; fi
  echo "$1 $p $2 $3 $rc $seen $t $(now) $e" >> $O/${4:-runs}
  mark RUN $1 $2 $3 exit=$rc
}
# racy N FIXTURE SCENARIO ATTEMPTS PATTERN...: run a real race until some finding line of its
# pid contains each fixed-string PATTERN, at most ATTEMPTS times (lines go to $O/racy-runs; the
# outputs of the last attempt are kept).
racy() {
  n=$1; f=$2; sc=$3; a=$4
  shift 4
  i=0
  while [ $i -lt $a ]; do
    i=$((i+1))
    run $n $f $sc racy-runs
    p=$(tail -n 1 $O/racy-runs | cut -d' ' -f2)
    ok=1
    for pat in "$@"; do
      grep -F "\"pid\":$p," $O/daemon.out | grep -q -F -- "$pat" || ok=0
    done
    [ $ok = 1 ] && break
  done
}
# pid_run FIXTURE SCENARIO MODE NAME: map-trace --pid --mode MODE on a target that waits on a
# fifo until attached; its files are $O/NAME.*.
pid_run() {
  N=$4
  mkfifo /tmp/fifo
  t=$(now)
  # <> opens the fifo without blocking, so the target execs at once and blocks in read.
  timeout __TARGET_TIMEOUT__ $1 $2 <> /tmp/fifo > $O/$N-target.out 2> $O/$N-target.err &
  p=$!
  # Until timeout has exec'd the target, /proc/$p/exe is busybox: not a Go program.
  i=0
  while [ "$(readlink /proc/$p/exe)" != "$1" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
  timeout 300 map-trace --pid $p --mode $3 --format json --every-occurrence > $O/$N.out 2> $O/$N.err &
  m=$!
  if await 'probes attached' $O/$N.err 1 __ATTACH_WAIT__ $m; then
    echo go > /tmp/fifo
  else
    kill $p
  fi
  wait $p
  echo $? > $O/$N-target.rc
  wait $m
  echo $? > $O/$N.rc
  echo "$p $t $(now)" > $O/$N-run
  rm -f /tmp/fifo
  mark PIDRUN $1 $2 $3 exit=$(cat $O/$N-target.rc) map-trace=$(cat $O/$N.rc)
}
"#;

const STOP_DAEMON: &str = r#"mark SCENARIOS-DONE $(now)
kill -TERM $MT
# A daemon that ignores SIGTERM must not hold the VM until the host's deadline.
( sleep 60; kill -KILL $MT ) 2>/dev/null &
W=$!
wait $MT
echo $? > $O/daemon.rc
kill $W 2>/dev/null
mark DAEMON-STOPPED $(now) exit=$(cat $O/daemon.rc)
"#;

const INIT_TAIL: &str = r#"mark DUMP $(now)
for f in $O/*; do
  b=${f##*/}
  mark FILE $b $(wc -c < $f)
  base64 $f | sed 's/^/@@MT:B /'
  mark END $b
done
mark DONE $(now)
poweroff -f
"#;

/// The script with its timeouts filled in.
pub fn render(plan: &Plan) -> String {
    init_script(plan)
        .replace("__TARGET_TIMEOUT__", &TARGET_TIMEOUT.to_string())
        .replace("__EXIT_WAIT__", &EXIT_WAIT.to_string())
        .replace("__ATTACH_WAIT__", &ATTACH_WAIT.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_runs_every_scenario_once_under_one_daemon() {
        let plan = Plan {
            fixtures: vec![
                GuestFixture {
                    name: "go1.21.13-arm64-default".into(),
                    host_path: "/x".into(),
                    source_dir: "/s".into(),
                    minor: 21,
                    scenarios: vec![("self_insert", &[]), ("rwmutex", &[])],
                    racy: vec![],
                    classic: true,
                },
                GuestFixture {
                    name: "go1.27.3-arm64-default".into(),
                    host_path: "/y".into(),
                    source_dir: "/s".into(),
                    minor: 27,
                    scenarios: vec![("self_clear", &[])],
                    racy: super::super::scenarios::RACY
                        .iter()
                        .filter(|r| r.in_vms)
                        .collect(),
                    classic: false,
                },
            ],
            fatal: true,
            pid_run: ("go1.27.3-arm64-default".into(), "cross_delete_u64"),
        };
        let s = render(&plan);
        assert!(s.contains(
            "map-trace --exe /fx/go1.21.13-arm64-default --exe /fx/go1.27.3-arm64-default --format json"
        ));
        assert!(s.contains("process' $O/daemon.err 2 3000 $MT; then"));
        assert!(s.contains("  run 1 go1.21.13-arm64-default self_insert\n"));
        assert!(s.contains("  run 3 go1.27.3-arm64-default self_clear\n"));
        assert!(
            s.contains("pid_run /fx/go1.27.3-arm64-default cross_delete_u64 low-overhead pid\n")
        );
        assert!(
            s.contains("pid_run /fx/go1.27.3-arm64-default cross_insert_str sentinel sentinel\n")
        );
        // Racy scenarios after the others, each with the fixed strings a complete run shows.
        assert!(s.contains(
            "  racy 4 go1.27.3-arm64-default writers_clear_insert 4 '\"kind\":\"concurrent_writes\"'\n"
        ));
        assert!(s.contains(
            "  racy 6 go1.27.3-arm64-default read_during_write 4 '\"writes_in_progress\":[{'\n"
        ));
        assert!(!s.contains("__"), "a placeholder is left: {s}");
        assert!(s.trim_end().ends_with("poweroff -f"));
    }
}
