//! The endpoint served on a real socket, as clients see it.

use super::*;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::mpsc;

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One request on its own connection; HTTP/1.0 so the body is never chunked.
fn request(addr: SocketAddr, method: &str, path: &str) -> Response {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("complete response");
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap();
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    Response {
        status: status.parse().unwrap(),
        headers,
        body: body.to_owned(),
    }
}

/// The endpoint on its own current-thread runtime, as in the daemon, so these tests can
/// make blocking requests from the test thread.
struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: mpsc::Receiver<std::io::Result<()>>,
}

impl Server {
    fn start(metrics: Arc<Metrics>, health: Arc<Health>, stale_after: Duration) -> Server {
        Self::start_with(Policy::default(), metrics, health, stale_after)
    }

    fn start_with(
        policy: Policy,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        stale_after: Duration,
    ) -> Server {
        let (addr_tx, addr_rx) = mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done) = mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let r = rt.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                // Spawned, as the daemon does, which needs the future to be Send.
                let stop = async {
                    let _ = stop_rx.await;
                };
                tokio::spawn(serve_with(
                    policy,
                    listener,
                    metrics,
                    health,
                    stale_after,
                    stop,
                ))
                .await
                .unwrap()
            });
            let _ = done_tx.send(r);
        });
        Server {
            addr: addr_rx.recv().unwrap(),
            stop: Some(stop),
            done,
        }
    }

    fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.done
            .recv_timeout(DRAIN + Duration::from_secs(5))
            .expect("serve returns after shutdown")
            .expect("serve returns Ok");
    }
}

#[test]
fn serves_metrics_and_health_and_stops_on_shutdown() {
    let metrics = Arc::new(Metrics::new("9.8.7"));
    metrics.probe_links.set(3);
    let health = Arc::new(Health::new());
    let stale = Duration::from_millis(300);
    let server = Server::start(metrics, health.clone(), stale);
    let addr = server.addr;

    let r = request(addr, "GET", "/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(
        r.body
            .contains("map_trace_build_info{version=\"9.8.7\"} 1\n"),
        "{}",
        r.body
    );
    assert!(r.body.contains("\nmap_trace_probe_links 3\n"), "{}", r.body);

    let r = request(addr, "HEAD", "/metrics");
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty(), "HEAD has no body: {:?}", r.body);

    let r = request(addr, "GET", "/healthz");
    assert_eq!(
        (r.status, r.body.as_str()),
        (503, "main loop has not run yet\n")
    );

    health.beat();
    let r = request(addr, "GET", "/healthz");
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));

    std::thread::sleep(stale + Duration::from_millis(200));
    let r = request(addr, "GET", "/healthz");
    assert_eq!(r.status, 503);
    assert!(
        r.body.starts_with("main loop last ran ") && r.body.ends_with("(limit 0.3s)\n"),
        "{:?}",
        r.body
    );
    assert_eq!(r.body.lines().count(), 1);

    health.beat();
    assert_eq!(request(addr, "GET", "/healthz?verbose=1").status, 200);

    let r = request(addr, "GET", "/");
    assert_eq!(r.status, 404);
    assert_eq!(request(addr, "GET", "/metrics/extra").status, 404);
    assert_eq!(request(addr, "POST", "/nope").status, 404);

    for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let r = request(addr, method, "/metrics");
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
    }
    assert_eq!(request(addr, "POST", "/healthz").status, 405);

    server.stop();
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the listener is closed once serve returns"
    );
}

#[test]
fn bad_and_stalled_clients_do_not_block_scrapes() {
    let server = Server::start(
        Arc::new(Metrics::new("1")),
        Arc::new(Health::new()),
        Duration::from_secs(1),
    );
    let addr = server.addr;

    let mut garbage = std::net::TcpStream::connect(addr).unwrap();
    garbage.write_all(b"\x00\x01 NOT HTTP\r\n\r\n").unwrap();
    garbage
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reply = Vec::new();
    let _ = garbage.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 400"),
        "{reply:?}"
    );

    // Half a request line, never finished: must not hold up other clients.
    let mut stalled = std::net::TcpStream::connect(addr).unwrap();
    stalled.write_all(b"GET /met").unwrap();
    let idle = std::net::TcpStream::connect(addr).unwrap();

    let r = request(addr, "GET", "/metrics");
    assert_eq!(r.status, 200);

    // Shutdown is not held up by them either.
    let t = Instant::now();
    server.stop();
    assert!(
        t.elapsed() < DRAIN + Duration::from_secs(1),
        "{:?}",
        t.elapsed()
    );
    drop((stalled, idle));
}

#[test]
fn keep_alive_connections_are_served_repeatedly() {
    let server = Server::start(
        Arc::new(Metrics::new("1")),
        Arc::new(Health::new()),
        Duration::from_secs(1),
    );
    let mut s = std::net::TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for _ in 0..3 {
        write!(s, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        while !reply.ends_with(b"\r\n\r\nmain loop has not run yet\n") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&reply));
            reply.extend_from_slice(&buf[..n]);
        }
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("HTTP/1.1 503"), "{reply:?}");
    }
    server.stop();
}

/// Whether the server has closed `s`: a read sees end of file or a reset, not a timeout.
fn closed_by_server(s: &mut std::net::TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

fn small_policy() -> Policy {
    Policy {
        limits: Limits {
            total: 4,
            per_peer: 2,
        },
        ..Policy::default()
    }
}

#[test]
fn when_full_the_longest_silent_connection_makes_room() {
    let server = Server::start_with(
        small_policy(),
        Arc::new(Metrics::new("1")),
        Arc::new(Health::new()),
        Duration::from_secs(1),
    );
    // Both from 127.0.0.1, which may hold 2.
    let mut first = std::net::TcpStream::connect(server.addr).unwrap();
    let second = std::net::TcpStream::connect(server.addr).unwrap();
    // A scrape gets in, and the connection silent for longest is the one closed.
    assert_eq!(request(server.addr, "GET", "/metrics").status, 200);
    assert!(closed_by_server(&mut first));
    drop(second);
    server.stop();
}

#[test]
fn answered_connections_outlast_silent_ones() {
    let server = Server::start_with(
        small_policy(),
        Arc::new(Metrics::new("1")),
        Arc::new(Health::new()),
        Duration::from_secs(1),
    );
    // The older connection has asked and been answered; the newer one said nothing.
    let mut asked = std::net::TcpStream::connect(server.addr).unwrap();
    write!(asked, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    asked
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reply = [0u8; 12];
    asked.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"HTTP/1.1 503");
    let mut silent = std::net::TcpStream::connect(server.addr).unwrap();
    let newcomer = std::net::TcpStream::connect(server.addr).unwrap();
    assert!(closed_by_server(&mut silent));
    // The answered one is still served on the same connection.
    write!(asked, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"HTTP/1.1 404") {
        asked.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    drop(newcomer);
    server.stop();
}

#[test]
fn connections_that_never_finish_a_request_are_closed() {
    let server = Server::start_with(
        Policy {
            header_read_timeout: Duration::from_millis(200),
            ..Policy::default()
        },
        Arc::new(Metrics::new("1")),
        Arc::new(Health::new()),
        Duration::from_secs(1),
    );
    let mut silent = std::net::TcpStream::connect(server.addr).unwrap();
    let mut partial = std::net::TcpStream::connect(server.addr).unwrap();
    partial.write_all(b"GET /metr").unwrap();
    assert!(closed_by_server(&mut silent));
    assert!(closed_by_server(&mut partial));
    server.stop();
}
