//! Nobody who can connect to the metrics port can silence it: with 500 connections that say
//! nothing and 20 that send a request line a byte at a time — each reopened as soon as the
//! daemon closes it, so the flood never lets up — a scraper still gets every /metrics and
//! /healthz answered within 2 s.
//!
//! Runs the real daemon (root: it loads eBPF). Everything is on 127.0.0.1, so attackers and
//! scraper are one peer to the daemon: the hardest case for its per-peer limits.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use test_support::daemon::Daemon;

use crate::MAP_TRACE;

/// This module's group at the kernel tests' gate.
const GROUP: &str = "metrics_flood";

const SILENT: usize = 500;
const DRIPPING: usize = 20;
const SCRAPES: usize = 20;
/// What a liveness probe or a scrape may take, at most.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);
/// The attackers stop by themselves after this, whatever happens to the test.
const ATTACK_FOR_AT_MOST: Duration = Duration::from_secs(120);
/// The request line the drippers send, never finishing the head.
const PARTIAL: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";

/// The test itself holds more sockets than a default soft limit of 1024 might allow.
fn raise_fd_limit(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a valid struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
    assert!(lim.rlim_cur >= want, "RLIMIT_NOFILE hard limit too low");
}

/// A connection that is open, non-blocking, or None while it could not be made (tried again
/// at the next sweep).
fn connect(addr: SocketAddr) -> Option<TcpStream> {
    // Short: a connect whose SYN meets one of the daemon's TIME_WAIT sockets for the same
    // ports is retried by the kernel only after 1 s, and must not stall the whole sweep.
    let s = TcpStream::connect_timeout(&addr, Duration::from_millis(100)).ok()?;
    s.set_nonblocking(true).ok()?;
    Some(s)
}

/// Whether the daemon has closed `s` (end of file, reset), without blocking.
fn closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 512];
    match s.read(&mut buf) {
        Ok(0) => true,
        // A dripper may be told 408 before the close; either way it goes.
        Ok(_) => false,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

/// `n` connections kept open until `stop` (reopened whenever the daemon closes one); each
/// sweep, a dripper sends its next byte. Returns how many times the daemon closed one.
fn attack(
    addr: SocketAddr,
    n: usize,
    drip: bool,
    stop: Arc<AtomicBool>,
    opened: Arc<AtomicUsize>,
) -> JoinHandle<usize> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut conns: Vec<(Option<TcpStream>, usize)> = Vec::with_capacity(n);
        for _ in 0..n {
            conns.push((connect(addr), 0));
            opened.fetch_add(1, Ordering::Relaxed);
        }
        let mut closed_by_daemon = 0;
        while !stop.load(Ordering::Relaxed) && started.elapsed() < ATTACK_FOR_AT_MOST {
            for (conn, sent) in &mut conns {
                let gone = match conn {
                    Some(s) => {
                        let mut gone = closed(s);
                        if drip && !gone {
                            let byte = &PARTIAL[*sent % PARTIAL.len()..][..1];
                            match s.write(byte) {
                                Ok(_) => *sent += 1,
                                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                                Err(_) => gone = true,
                            }
                        }
                        if gone {
                            closed_by_daemon += 1;
                        }
                        gone
                    }
                    None => true,
                };
                if gone {
                    *conn = connect(addr);
                    *sent = 0;
                }
            }
            std::thread::sleep(Duration::from_millis(if drip { 200 } else { 20 }));
        }
        closed_by_daemon
    })
}

/// One GET on a fresh connection, as Prometheus and a kubelet probe make it; its status, or
/// why it failed, within [`ANSWER_WITHIN`].
fn get(addr: SocketAddr, path: &str) -> Result<u16, String> {
    let t = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, ANSWER_WITHIN).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(ANSWER_WITHIN)).unwrap();
    s.set_write_timeout(Some(ANSWER_WITHIN)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("after {:?}: {e}", t.elapsed()))?;
    if t.elapsed() > ANSWER_WITHIN {
        return Err(format!("answered only after {:?}", t.elapsed()));
    }
    let head = String::from_utf8_lossy(&raw);
    head.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {head:?}"))
}

#[test]
fn idle_and_slow_connections_cannot_silence_metrics_or_health() {
    let _gate = test_support::kernel_test(GROUP, "runs the daemon, which loads eBPF");
    raise_fd_limit(4096);
    // A path on no file here: the daemon runs as a service would, tracing nothing yet.
    let mut d = Daemon::start(
        MAP_TRACE,
        &["--exe", "/nonexistent/map-trace-flood-target"],
        true,
    );
    d.wait_line("serving metrics on", Duration::from_secs(60));
    let addr = SocketAddr::from(([127, 0, 0, 1], d.metrics_port.unwrap()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(addr, "/healthz") != Ok(200) {
        assert!(Instant::now() < deadline, "/healthz never became 200");
        std::thread::sleep(Duration::from_millis(100));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicUsize::new(0));
    let silent = attack(addr, SILENT, false, stop.clone(), opened.clone());
    let dripping = attack(addr, DRIPPING, true, stop.clone(), opened.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    while opened.load(Ordering::Relaxed) < SILENT + DRIPPING {
        assert!(Instant::now() < deadline, "could not open the connections");
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut failures = Vec::new();
    let mut slowest = Duration::ZERO;
    for i in 0..SCRAPES {
        let path = if i % 2 == 0 { "/metrics" } else { "/healthz" };
        let t = Instant::now();
        match get(addr, path) {
            Ok(200) => slowest = slowest.max(t.elapsed()),
            other => failures.push(format!("scrape {i} {path}: {other:?}")),
        }
        // Scrapes are spaced out so the drippers get to send several bytes in between.
        std::thread::sleep(Duration::from_millis(250));
    }
    stop.store(true, Ordering::Relaxed);
    let (silent_closed, dripping_closed) = (silent.join().unwrap(), dripping.join().unwrap());
    eprintln!(
        "the daemon closed {silent_closed} silent and {dripping_closed} dripping connections; \
         slowest answer {slowest:?}"
    );
    assert!(failures.is_empty(), "{failures:#?}");
    // The flood was real: the daemon had to make room, and the drippers were cut off.
    assert!(silent_closed >= SILENT - 64, "{silent_closed}");
    assert!(dripping_closed > 0, "{dripping_closed}");

    let (code, _, log) = d.terminate();
    assert_eq!(code, Some(0), "{log}");
}
