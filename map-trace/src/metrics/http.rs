//! The /metrics and /healthz endpoint.

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::Metrics;

const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";
/// Bounds the tasks and sockets a flood of connections can pin; Prometheus needs one or two.
const MAX_CONNECTIONS: usize = 64;
/// Also applies between keep-alive requests, so idle connections are closed after it.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections are retired after this, so a client that never reads its response (which no
/// read timeout covers) cannot hold a slot for ever.
const MAX_CONNECTION_AGE: Duration = Duration::from_secs(300);
/// How long a connection being closed may take to finish the response it is sending.
const DRAIN: Duration = Duration::from_secs(2);
/// Back-off after an accept error such as EMFILE, which would otherwise repeat at once.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The main loop's heartbeat, which /healthz reports on.
pub struct Health {
    /// Monotonic, so a wall-clock step cannot make the daemon look stale or fresh.
    start: Instant,
    /// Milliseconds since `start` of the last beat, plus one; 0 until the first beat.
    last: AtomicU64,
}

impl Health {
    /// Not healthy until the first [`Health::beat`]: the main loop has not run yet.
    pub fn new() -> Self {
        Health {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    pub fn beat(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.last.store(ms + 1, Ordering::Relaxed);
    }

    /// Ok while the last beat is at most `stale_after` old; otherwise why not, in one line.
    pub fn check(&self, stale_after: Duration) -> Result<(), String> {
        let last = self.last.load(Ordering::Relaxed);
        if last == 0 {
            return Err("main loop has not run yet".into());
        }
        let beat = self.start + Duration::from_millis(last - 1);
        let age = Instant::now().saturating_duration_since(beat);
        if age <= stale_after {
            Ok(())
        } else {
            Err(format!(
                "main loop last ran {:.1}s ago (limit {:.1}s)",
                age.as_secs_f64(),
                stale_after.as_secs_f64()
            ))
        }
    }
}

impl Default for Health {
    fn default() -> Self {
        Health::new()
    }
}

/// Serves GET /metrics (text format, correct Content-Type `text/plain; version=0.0.4; charset=utf-8`),
/// GET /healthz (200 "ok\n" while the main loop has beaten within `stale_after`; 503 with a one-line
/// reason otherwise), 404 for other paths, 405 for non-GET/HEAD. Runs until `shutdown` resolves, then stops accepting
/// and returns.
///
/// Each connection is its own task, so a slow client delays only itself. On shutdown, open
/// connections get [`DRAIN`] to finish the response in flight and are then dropped; no task
/// outlives this call. Accept errors (e.g. out of file descriptors) are retried, never
/// returned, so a transient condition cannot take the endpoint down for the daemon's lifetime.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    stale_after: Duration,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    if conns.len() >= MAX_CONNECTIONS {
                        // Closing at once tells the client to retry; queueing it would
                        // let a flood delay Prometheus's scrape.
                        drop(stream);
                        continue;
                    }
                    conns.spawn(connection(
                        stream,
                        metrics.clone(),
                        health.clone(),
                        stale_after,
                        stop_rx.clone(),
                    ));
                }
                Err(_) => {
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    }
                }
            },
            // Reaps finished connections so `len` counts only live ones.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(DRAIN, async { while conns.join_next().await.is_some() {} }).await;
    conns.shutdown().await;
    Ok(())
}

async fn connection(
    stream: TcpStream,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    stale_after: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let service = service_fn(move |req: Request<Incoming>| {
        let resp = respond(&req, &metrics, &health, stale_after);
        async move { Ok::<_, Infallible>(resp) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let mut conn = pin!(builder.serve_connection(TokioIo::new(stream), service));
    tokio::select! {
        // Errors are the client's (reset, malformed request, timeout) and concern only it.
        _ = conn.as_mut() => return,
        // An error means the sender is gone, which also means stop.
        _ = stop.wait_for(|stop| *stop) => {}
        () = tokio::time::sleep(MAX_CONNECTION_AGE) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(DRAIN, conn).await;
}

fn respond(
    req: &Request<Incoming>,
    metrics: &Metrics,
    health: &Health,
    stale_after: Duration,
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if path != "/metrics" && path != "/healthz" {
        return text(
            StatusCode::NOT_FOUND,
            "not found; try /metrics or /healthz\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    if path == "/metrics" {
        let mut resp = Response::new(Full::new(Bytes::from(metrics.render())));
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
        return resp;
    }
    match health.check(stale_after) {
        Ok(()) => text(StatusCode::OK, "ok\n"),
        Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_CONTENT_TYPE));
    resp
}

#[cfg(test)]
mod tests {
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
                    tokio::spawn(serve(listener, metrics, health, stale_after, async {
                        let _ = stop_rx.await;
                    }))
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
}
