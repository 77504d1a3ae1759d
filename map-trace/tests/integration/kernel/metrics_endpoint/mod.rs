//! The Prometheus endpoint as an operator meets it: the live /metrics passes `promtool check
//! metrics`, a real Prometheus server scrapes it, and a query through Prometheus's HTTP API
//! shows the findings counter growing while a racy program runs.
//!
//! Needs root (eBPF) and Debian's prometheus package; fails (never skips) without them.

mod prometheus;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus::PrometheusServer;
use test_support::daemon::Daemon;

use crate::MAP_TRACE;

/// This module's group at the kernel tests' gate.
const GROUP: &str = "metrics_endpoint";

fn racy_fixture() -> test_support::Fixture {
    test_support::fixtures_of("scenarios")
        .into_iter()
        .find(|f| f.arch == "x86_64" && f.variant == "default" && f.go_version.starts_with("1.27"))
        .expect("go1.27 amd64 scenarios fixture")
}

/// `promtool check metrics` on a scrape; returns its complaints (empty when clean).
fn promtool_check(body: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("promtool: {e}; install it with `cargo xtask setup`"))?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    if o.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("promtool exit {}: {said}", o.status))
    }
}

/// Runs the racy scenario again and again until told to stop.
fn keep_racing(f: &test_support::Fixture, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u32> {
    let path = f.path.clone();
    std::thread::spawn(move || {
        let mut runs = 0;
        while !stop.load(Ordering::Relaxed) {
            let mut c = Command::new(&path)
                .arg("cross_delete_u64")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            let _ = c.stdin.take().unwrap().write_all(b"\n");
            assert!(c.wait().unwrap().success(), "the racy fixture failed");
            runs += 1;
            std::thread::sleep(Duration::from_millis(300));
        }
        runs
    })
}

#[test]
fn prometheus_scrapes_findings_and_promtool_accepts_the_endpoint() {
    let _gate = test_support::kernel_test(GROUP, "attaches uprobes");
    let f = racy_fixture();
    let mut d = Daemon::start(
        MAP_TRACE,
        &[
            "--exe",
            f.path.to_str().unwrap(),
            "--format",
            "json",
            "--every-occurrence",
        ],
        true,
    );
    d.wait_line("probes attached for every process", Duration::from_secs(60));
    let port = d.metrics_port.unwrap();

    // Liveness: healthy once the main loop has polled.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while d.get("/healthz").0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            d.get("/healthz")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(d.get("/nope").0, 404);
    promtool_check(&d.get("/metrics").1).unwrap();

    let prom = PrometheusServer::start(&format!("127.0.0.1:{port}"), Duration::from_secs(1));
    prom.wait_for("up", Duration::from_secs(30), |r| {
        r.len() == 1 && r[0].1 == 1.0
    });
    let info = prom.query("map_trace_build_info");
    assert_eq!(info.len(), 1, "{info:?}");
    assert_eq!(info[0].0["version"], env!("CARGO_PKG_VERSION"));

    let stop = Arc::new(AtomicBool::new(false));
    let racer = keep_racing(&f, stop.clone());
    let q =
        r#"sum(map_trace_findings_total{kind="concurrent_write_during_iteration",op="delete"})"#;
    let first = prom.wait_for(q, Duration::from_secs(60), |r| {
        r.len() == 1 && r[0].1 >= 1.0
    })[0]
        .1;
    let later = prom.wait_for(q, Duration::from_secs(60), |r| {
        r.len() == 1 && r[0].1 > first
    })[0]
        .1;
    // Prometheus's own arithmetic over the scraped series: the counter is rising.
    let rate = prom.wait_for(
        r#"sum(increase(map_trace_findings_total[20s]))"#,
        Duration::from_secs(30),
        |r| r.len() == 1 && r[0].1 > 0.0,
    );
    let attaches = prom.wait_for(
        "map_trace_process_attaches_total",
        Duration::from_secs(30),
        |r| r.len() == 1 && r[0].1 >= 2.0,
    );
    stop.store(true, Ordering::Relaxed);
    let runs = racer.join().unwrap();
    eprintln!(
        "findings {first} then {later}; increase {:?}; attaches {:?}; {runs} runs",
        rate[0].1, attaches[0].1
    );

    // With findings (and their labels) present, the endpoint is still clean.
    promtool_check(&d.get("/metrics").1).unwrap();
    let series = d.metrics();
    assert!(
        series
            .keys()
            .all(|k| !k.contains("pid=") && !k.contains("goid")),
        "unbounded labels: {series:?}"
    );
    let (health, err) = prom.target_health();
    assert_eq!(health, "up", "{err}");
    let (code, _, log) = d.terminate();
    assert_eq!(code, Some(0), "{log}");
}
