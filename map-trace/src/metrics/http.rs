//! The /metrics and /healthz endpoint.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
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
use tokio::task::{AbortHandle, JoinSet};

use super::Metrics;
use super::connections::{self, Activity, Limits, Peer};
use super::health::Health;

const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";
/// Bounds the tasks and sockets a flood of connections can pin; Prometheus needs one or two.
/// Per peer, so one host cannot push out the others (see [`connections`]).
const LIMITS: Limits = Limits {
    total: 64,
    per_peer: 16,
};
/// A request head must be complete this long after the connection opened or its previous
/// request was answered; also closes idle keep-alive connections. Scrapers send their request
/// at once, so this is generous for them and short for a client holding a slot by saying
/// nothing, or a byte at a time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(3);
/// Connections are retired after this, so a client that never reads its response (which no
/// read timeout covers) cannot hold a slot for ever.
const MAX_CONNECTION_AGE: Duration = Duration::from_secs(300);
/// How long a connection being closed may take to finish the response it is sending.
const DRAIN: Duration = Duration::from_secs(2);
/// Back-off after an accept error such as EMFILE, which would otherwise repeat at once.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How the endpoint treats connections; [`Policy::default`] in the daemon, shorter in tests.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub limits: Limits,
    pub header_read_timeout: Duration,
    pub max_connection_age: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            limits: LIMITS,
            header_read_timeout: HEADER_READ_TIMEOUT,
            max_connection_age: MAX_CONNECTION_AGE,
        }
    }
}

/// A connection being served, as the accept loop keeps it.
struct Slot {
    peer: Peer,
    activity: Arc<Activity>,
    task: AbortHandle,
}

/// Serves GET /metrics (text format, correct Content-Type `text/plain; version=0.0.4; charset=utf-8`),
/// GET /healthz (200 "ok\n" while the main loop has beaten within `stale_after`; 503 with a one-line
/// reason otherwise), 404 for other paths, 405 for non-GET/HEAD. Runs until `shutdown` resolves, then stops accepting
/// and returns.
///
/// Idle or slow clients cannot lock scrapers out: a connection must complete each request
/// head within 3 s, and when 64 connections (16 from one peer) are open a newcomer is let
/// in by closing the connection doing least (see [`connections`]), never refused.
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
    let policy = Policy::default();
    serve_with(policy, listener, metrics, health, stale_after, shutdown).await
}

/// [`serve`] with another [`Policy`].
pub async fn serve_with(
    policy: Policy,
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    stale_after: Duration,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut open: HashMap<u64, Slot> = HashMap::new();
    let mut next_id = 0u64;
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    let peer = Peer::of(addr.ip());
                    // A newcomer always gets in: when full, the connection doing least
                    // makes room (see `connections`), so silent clients cannot lock out a
                    // scraper.
                    let waiting: Vec<_> = open
                        .iter()
                        .map(|(id, s)| (*id, s.peer, s.activity.get()))
                        .collect();
                    if let Some(v) = connections::victim(policy.limits, peer, &waiting)
                        && let Some(slot) = open.remove(&v)
                    {
                        slot.task.abort();
                    }
                    let id = next_id;
                    next_id += 1;
                    let activity = Arc::new(Activity::accepted(Instant::now()));
                    let task = conns.spawn(connection(
                        id,
                        stream,
                        policy,
                        Served {
                            metrics: metrics.clone(),
                            health: health.clone(),
                            stale_after,
                            activity: activity.clone(),
                        },
                        stop_rx.clone(),
                    ));
                    open.insert(id, Slot { peer, activity, task });
                    // Let the new connection read its request before the next accept, so a
                    // burst of connections waiting to be accepted cannot push it out before
                    // it has had a chance to say what it wants.
                    tokio::task::yield_now().await;
                }
                Err(_) => {
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    }
                }
            },
            // Reaps finished connections so `open` holds only live ones.
            Some(done) = conns.join_next(), if !conns.is_empty() => match done {
                Ok(id) => {
                    open.remove(&id);
                }
                // Closed to make room (already removed), or panicked.
                Err(_) => open.retain(|_, s| !s.task.is_finished()),
            },
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(DRAIN, async { while conns.join_next().await.is_some() {} }).await;
    conns.shutdown().await;
    Ok(())
}

/// What a connection answers with, and where it records its requests.
struct Served {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    stale_after: Duration,
    activity: Arc<Activity>,
}

/// Serves one connection until it closes, times out, is too old or the server stops; returns
/// its id so the accept loop can forget it.
async fn connection(
    id: u64,
    stream: TcpStream,
    policy: Policy,
    served: Served,
    mut stop: watch::Receiver<bool>,
) -> u64 {
    let service = service_fn(move |req: Request<Incoming>| {
        served.activity.request(Instant::now());
        let resp = respond(&req, &served.metrics, &served.health, served.stale_after);
        async move { Ok::<_, Infallible>(resp) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(policy.header_read_timeout);
    let mut conn = pin!(builder.serve_connection(TokioIo::new(stream), service));
    tokio::select! {
        // Errors are the client's (reset, malformed request, timeout) and concern only it.
        _ = conn.as_mut() => return id,
        // An error means the sender is gone, which also means stop.
        _ = stop.wait_for(|stop| *stop) => {}
        () = tokio::time::sleep(policy.max_connection_age) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(DRAIN, conn).await;
    id
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
mod tests;
