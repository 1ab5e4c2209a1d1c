//! The metrics endpoint: `GET /metrics` over HTTP/1.1 (hyper), for Prometheus.
//! Every peer is bounded: a few connections at a time, a deadline for the
//! request head and for the whole connection, a small request buffer. A peer
//! that holds a connection without asking anything never locks scrapes out:
//! when every slot is taken, the connection idle the longest is closed to make
//! room, and those closed or refused are counted (metrics, a log line at most
//! once a minute).

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use http_body_util::Full;
use hyper::{
    body::{Bytes, Incoming},
    header::{HeaderValue, ACCEPT, ALLOW, CONTENT_TYPE},
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};

use super::{Format, Scrape, SharedFacts};

/// Connections served at once (Prometheus scrapes with one); past it the one
/// idle the longest is closed.
const MAX_CONNECTIONS: usize = 16;
/// For the request head to arrive.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// For a whole connection, keep-alive included.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Request head bytes: a scrape's is a few hundred.
const MAX_REQUEST_BUFFER: usize = 16 << 10;

/// Why the endpoint's address is not usable.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("{text:?} is {reason}: give ADDR:PORT (127.0.0.1:9187, [::1]:9187, 0.0.0.0:9187) or a port")]
    Syntax { text: String, reason: &'static str },
    #[error(
        "cannot listen on {addr} for metrics: {error}; give another --metrics-listen address, or stop what uses it"
    )]
    Bind { addr: SocketAddr, error: std::io::Error },
}

/// `ADDR:PORT`, `:PORT` or `PORT`; without a host, loopback (metrics are for
/// a local Prometheus or an agent unless the operator opens them).
pub fn parse_listen(text: &str) -> Result<SocketAddr, ListenError> {
    let syntax = |reason| ListenError::Syntax { text: text.to_owned(), reason };
    let port_only = text.strip_prefix(':').unwrap_or(text);
    if let Ok(port) = port_only.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if port_only.bytes().all(|b| b.is_ascii_digit()) && !port_only.is_empty() {
        return Err(syntax("a port over 65535"));
    }
    text.parse::<SocketAddr>().map_err(|_| syntax("not an address with a port"))
}

/// Binds the endpoint (at the start, so a taken port is refused before anything
/// is attached).
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, ListenError> {
    let listener = std::net::TcpListener::bind(addr).map_err(|error| ListenError::Bind { addr, error })?;
    listener.set_nonblocking(true).map_err(|error| ListenError::Bind { addr, error })?;
    Ok(listener)
}

/// What the endpoint did with the connections it could not keep: those it
/// closed while idle to make room, and those it refused because every slot
/// was answering a scrape.
#[derive(Debug, Default)]
pub struct EndpointCounts {
    pub evicted: AtomicU64,
    pub refused: AtomicU64,
}

/// Serves scrapes on a thread of its own, with its own runtime: a scrape is
/// answered even while the daemon's task is busy with a reload.
pub fn spawn(listener: std::net::TcpListener, facts: SharedFacts) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("metrics".into()).spawn(move || runtime.block_on(serve(listener, facts)))?;
    Ok(())
}

/// One open connection: whether a request is being answered on it, when it
/// last was (or opened), and how to close it.
struct Open {
    id: u64,
    busy: Arc<AtomicBool>,
    idle_since: Arc<Mutex<Instant>>,
    close: tokio::sync::oneshot::Sender<()>,
}

/// The connections open now, at most `MAX_CONNECTIONS`.
#[derive(Default)]
struct Connections {
    open: Vec<Open>,
    next_id: u64,
}

impl Connections {
    /// Makes room for one more: closes the connection idle the longest if
    /// every slot is taken. False: every one is answering a request.
    fn make_room(&mut self) -> Option<bool> {
        if self.open.len() < MAX_CONNECTIONS {
            return Some(false);
        }
        let idle_since = |o: &Open| *o.idle_since.lock().unwrap_or_else(|p| p.into_inner());
        let oldest = (0..self.open.len())
            .filter(|&i| !self.open[i].busy.load(Ordering::Acquire))
            .min_by_key(|&i| idle_since(&self.open[i]))?;
        let _ = self.open.swap_remove(oldest).close.send(());
        Some(true)
    }
}

/// The pause after closing an idle connection to make room.
const EVICT_PAUSE: Duration = Duration::from_millis(10);

/// A log line about closed or refused peers at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Serves scrapes until the runtime stops.
async fn serve(listener: std::net::TcpListener, facts: SharedFacts) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            log::error!("metrics endpoint: {e}; no metrics are served");
            return;
        }
    };
    let counts = facts.lock().map(|f| f.endpoint.clone()).unwrap_or_else(|p| p.into_inner().endpoint.clone());
    let connections = Arc::new(Mutex::new(Connections::default()));
    let mut last_log: Option<Instant> = None;
    let (mut evicted_since, mut refused_since) = (0u64, 0u64);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin.
                log::warn!("metrics endpoint: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let room = connections.lock().unwrap_or_else(|p| p.into_inner()).make_room();
        match room {
            Some(true) => {
                counts.evicted.fetch_add(1, Ordering::Relaxed);
                evicted_since += 1;
                // One connection closed to make room per pause: peers that
                // reconnect at once queue in the listen backlog behind those
                // that came first, so a scrape waits its turn (its request
                // already read by the kernel) and is never the one closed.
                tokio::time::sleep(EVICT_PAUSE).await;
            }
            Some(false) => {}
            None => {
                counts.refused.fetch_add(1, Ordering::Relaxed);
                refused_since += 1;
            }
        }
        if (evicted_since + refused_since) > 0 && last_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            log::warn!(
                "metrics endpoint: {MAX_CONNECTIONS} connections open: {evicted_since} idle closed to make room, \
                 {refused_since} refused (every connection busy) since the last such line; the last from {peer}"
            );
            (evicted_since, refused_since, last_log) = (0, 0, Some(Instant::now()));
        }
        if room.is_none() {
            continue;
        }
        let busy = Arc::new(AtomicBool::new(false));
        let idle_since = Arc::new(Mutex::new(Instant::now()));
        let (close, closed) = tokio::sync::oneshot::channel::<()>();
        let id = {
            let mut c = connections.lock().unwrap_or_else(|p| p.into_inner());
            let id = c.next_id;
            c.next_id += 1;
            c.open.push(Open { id, busy: busy.clone(), idle_since: idle_since.clone(), close });
            id
        };
        let (facts, connections) = (facts.clone(), connections.clone());
        let task = tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let (facts, busy, idle_since) = (facts.clone(), busy.clone(), idle_since.clone());
                async move {
                    busy.store(true, Ordering::Release);
                    let response = answer(request, facts).await;
                    *idle_since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
                    busy.store(false, Ordering::Release);
                    response
                }
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).max_buf_size(MAX_REQUEST_BUFFER);
            let connection = http.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                done = tokio::time::timeout(CONNECTION_TIMEOUT, connection) => if done.is_err() {
                    log::debug!("metrics endpoint: {peer}: connection over {CONNECTION_TIMEOUT:?}; closed");
                },
                _ = closed => log::debug!("metrics endpoint: {peer}: idle, closed to make room"),
            }
            connections.lock().unwrap_or_else(|p| p.into_inner()).open.retain(|o| o.id != id);
        });
        drop(task);
        // Let the new connection read its request before the next accept: a
        // scrape whose request is there is busy, not idle, when a flood of
        // connections would otherwise close it first.
        tokio::task::yield_now().await;
    }
}

async fn answer(request: Request<Incoming>, facts: SharedFacts) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let reply = |status: StatusCode, content_type: &'static str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut r = reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only GET\n".into());
        r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(r);
    }
    if request.uri().path() != "/metrics" {
        return Ok(reply(StatusCode::NOT_FOUND, "text/plain", "blocker serves its metrics at /metrics\n".into()));
    }
    // Prometheus asks for OpenMetrics; curl and promtool get the classic format.
    let accepts = |h: &HeaderValue| h.to_str().is_ok_and(|v| v.contains("application/openmetrics-text"));
    let format =
        if request.headers().get_all(ACCEPT).iter().any(accepts) { Format::OpenMetrics } else { Format::Classic };
    let facts = facts.lock().map(|f| f.clone()).unwrap_or_else(|poisoned| poisoned.into_inner().clone());
    // Reading the maps is syscalls: off the async threads.
    match tokio::task::spawn_blocking(move || Scrape::read(facts).encode_as(format)).await {
        Ok(text) => Ok(reply(StatusCode::OK, format.content_type(), text)),
        Err(e) => Ok(reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("scrape failed: {e}\n"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_default_to_loopback() {
        assert_eq!(parse_listen("9187").unwrap(), "127.0.0.1:9187".parse().unwrap());
        assert_eq!(parse_listen(":9187").unwrap(), "127.0.0.1:9187".parse().unwrap());
        assert_eq!(parse_listen("0.0.0.0:9187").unwrap(), "0.0.0.0:9187".parse().unwrap());
        assert_eq!(parse_listen("[::1]:9187").unwrap(), "[::1]:9187".parse().unwrap());
        for bad in ["", "70000", "localhost:9187", "127.0.0.1", "::1:9187", "9187x"] {
            assert!(matches!(parse_listen(bad), Err(ListenError::Syntax { .. })), "{bad:?}");
        }
    }
}
