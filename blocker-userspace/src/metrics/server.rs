//! The metrics endpoint: `GET /metrics` over HTTP/1.1 (hyper), for Prometheus.
//! Every peer is bounded: a few connections at a time, a deadline for the
//! request head and for the whole connection, a small request buffer.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use http_body_util::Full;
use hyper::{
    body::{Bytes, Incoming},
    header::{HeaderValue, ACCEPT, ALLOW, CONTENT_TYPE},
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};

use super::{Format, Scrape, SharedFacts};

/// Connections served at once; more are closed at once (Prometheus scrapes
/// with one).
const MAX_CONNECTIONS: usize = 8;
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

/// Serves scrapes on a thread of its own, with its own runtime: a scrape is
/// answered even while the daemon's task is busy with a reload.
pub fn spawn(listener: std::net::TcpListener, facts: SharedFacts) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("metrics".into()).spawn(move || runtime.block_on(serve(listener, facts)))?;
    Ok(())
}

/// Serves scrapes until the runtime stops.
async fn serve(listener: std::net::TcpListener, facts: SharedFacts) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            log::error!("metrics endpoint: {e}; no metrics are served");
            return;
        }
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
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
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            log::debug!("metrics endpoint: {peer}: {MAX_CONNECTIONS} connections open; closed");
            continue;
        };
        let facts = facts.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| answer(request, facts.clone()));
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).max_buf_size(MAX_REQUEST_BUFFER);
            let connection = http.serve_connection(TokioIo::new(stream), service);
            if tokio::time::timeout(CONNECTION_TIMEOUT, connection).await.is_err() {
                log::debug!("metrics endpoint: {peer}: connection over {CONNECTION_TIMEOUT:?}; closed");
            }
            drop(slot);
        });
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
