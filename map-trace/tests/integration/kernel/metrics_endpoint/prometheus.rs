//! A real Prometheus server (Debian's /usr/bin/prometheus, override with $PROMETHEUS) for tests
//! that check what an actual scraper makes of the daemon's /metrics endpoint.
//!
//! The server is killed and reaped when [`PrometheusServer`] is dropped, including when a test
//! panics, and also when the test thread dies without unwinding (it gets SIGKILL when the
//! thread that started it exits). So keep a server in the test that started it, not in a static
//! shared between tests.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use test_support::Scratch;
use test_support::http::{free_port, http_get};

/// Generous: on a loaded two-core machine Prometheus can take several seconds to open its TSDB.
const READY_DEADLINE: Duration = Duration::from_secs(60);
const READY_LINE: &str = "Server is ready to receive web requests.";
/// Another process can take the port between our probe bind and Prometheus's own.
const PORT_ATTEMPTS: usize = 3;

pub type Sample = (BTreeMap<String, String>, f64);

pub struct PrometheusServer {
    child: Child,
    port: u16,
    /// Its config, log and storage; removed after the server is killed (fields drop last).
    dir: Scratch,
}

impl PrometheusServer {
    /// Starts /usr/bin/prometheus on 127.0.0.1:<free port> with a fresh storage dir and a scrape config
    /// scraping `target` ("127.0.0.1:PORT", metrics_path /metrics) every `interval` (e.g. 1s); waits until ready (/-/ready) with a deadline, failing with its log on timeout.
    pub fn start(target: &str, interval: Duration) -> PrometheusServer {
        assert!(
            interval >= Duration::from_millis(1),
            "scrape interval {interval:?} is below Prometheus's resolution"
        );
        let mut last_log = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let dir = Scratch::new("prometheus");
            let config = scrape_config(target, interval);
            fs::write(dir.join("prometheus.yml"), config).expect("write prometheus.yml");
            let mut server = PrometheusServer {
                child: spawn(dir.path(), port),
                port,
                dir,
            };
            match server.wait_ready() {
                Ok(()) => return server,
                Err(log) if log.contains("address already in use") => last_log = log,
                Err(log) => panic!("Prometheus did not become ready; its log:\n{log}"),
            }
        }
        panic!("Prometheus found its port taken {PORT_ATTEMPTS} times; last log:\n{last_log}")
    }

    /// Err(log) if it exits or is not ready within [`READY_DEADLINE`].
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("(it exited: {status})\n{}", self.log()));
            }
            // The log line tells our server from whichever process may have taken the port.
            if self.log().contains(READY_LINE)
                && matches!(http_get(self.port, "/-/ready"), Ok((200, _)))
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "(not ready after {READY_DEADLINE:?})\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Prometheus's own output so far, for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// Instant query via the HTTP API /api/v1/query; returns the result vector as (labels map, value f64).
    ///
    /// A scalar result comes back as one sample without labels.
    pub fn query(&self, promql: &str) -> Vec<Sample> {
        let data = self.api(&format!("/api/v1/query?query={}", url_encode(promql)));
        let result = &data["result"];
        match data["resultType"].as_str() {
            Some("vector") => result
                .as_array()
                .expect("vector result is an array")
                .iter()
                .map(|s| (labels(&s["metric"]), sample_value(&s["value"])))
                .collect(),
            Some("scalar") => vec![(BTreeMap::new(), sample_value(result))],
            other => panic!("query {promql:?}: unsupported result type {other:?}: {data}"),
        }
    }

    /// Polls `query` until `pred` holds on the result or `limit` passes; returns the last result or panics with it.
    pub fn wait_for(
        &self,
        promql: &str,
        limit: Duration,
        pred: impl Fn(&[Sample]) -> bool,
    ) -> Vec<Sample> {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.query(promql);
            if pred(&got) {
                return got;
            }
            if Instant::now() > deadline {
                let (health, error) = self.target_health();
                panic!(
                    "after {limit:?}, {promql:?} still gives {got:?}; scrape target is {health} \
                     (last error: {error:?})"
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The scrape target's health as Prometheus sees it (api/v1/targets): "up"/"down"/"unknown", with lastError.
    ///
    /// "unknown" with an explanatory error also when service discovery has not listed the
    /// target yet.
    pub fn target_health(&self) -> (String, String) {
        let data = self.api("/api/v1/targets?state=active");
        let Some(t) = data["activeTargets"].as_array().and_then(|a| a.first()) else {
            return ("unknown".into(), "not among the active targets yet".into());
        };
        let s = |k: &str| t[k].as_str().unwrap_or_default().to_owned();
        (s("health"), s("lastError"))
    }

    /// The `data` of a successful API response.
    fn api(&self, path_and_query: &str) -> Value {
        let (status, body) = http_get(self.port, path_and_query)
            .unwrap_or_else(|e| panic!("GET {path_and_query} from Prometheus: {e}"));
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| {
            panic!("GET {path_and_query}: HTTP {status}, not JSON ({e}): {body}")
        });
        assert!(
            status == 200 && v["status"] == "success",
            "GET {path_and_query}: HTTP {status}: {body}"
        );
        v["data"].clone()
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn scrape_config(target: &str, interval: Duration) -> String {
    // Prometheus rejects a scrape timeout longer than the interval, and the default is 10s.
    let every = format!("{}ms", interval.as_millis());
    format!(
        "global:\n  scrape_interval: {every}\n  scrape_timeout: {every}\n\
         scrape_configs:\n  - job_name: map-trace\n    metrics_path: /metrics\n    \
         static_configs:\n      - targets: ['{target}']\n"
    )
}

fn spawn(dir: &Path, port: u16) -> Child {
    let bin = std::env::var("PROMETHEUS").unwrap_or_else(|_| "/usr/bin/prometheus".into());
    let log = fs::File::create(dir.join("prometheus.log")).expect("create prometheus.log");
    let parent = std::process::id();
    let mut cmd = Command::new(&bin);
    cmd.arg(format!(
        "--config.file={}",
        dir.join("prometheus.yml").display()
    ))
    .arg(format!(
        "--storage.tsdb.path={}",
        dir.join("data").display()
    ))
    .arg(format!("--web.listen-address=127.0.0.1:{port}"))
    .stdin(Stdio::null())
    .stdout(log.try_clone().expect("dup log fd"))
    .stderr(log);
    // SAFETY: only async-signal-safe calls (prctl, getppid) and no allocation between fork and
    // exec. Drop cannot run if the test process is killed outright; the kernel then kills
    // Prometheus for us.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    cmd.spawn().unwrap_or_else(|e| {
        panic!("starting {bin}: {e}; install it with `apt-get install prometheus`")
    })
}

fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn labels(metric: &Value) -> BTreeMap<String, String> {
    metric
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// A `[unix_time, "value"]` pair; the value is a string so that NaN and ±Inf survive JSON.
fn sample_value(pair: &Value) -> f64 {
    let v = pair[1]
        .as_str()
        .unwrap_or_else(|| panic!("sample {pair} has no string value"));
    v.parse()
        .unwrap_or_else(|e| panic!("sample value {v:?}: {e}"))
}
