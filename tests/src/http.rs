//! A scripted HTTP/1.1 server on 127.0.0.1 (optionally inside a network namespace),
//! for testing URL sources. It only ever listens on loopback.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::TcpListener,
    os::fd::AsRawFd,
    sync::{Arc, Mutex},
    time::Duration,
};

/// One scripted answer: status, headers, body.
pub type Response = (u16, Vec<(String, String)>, Vec<u8>);

/// What the server answers next (status, headers, body; 500 when empty), and
/// the request heads it saw.
#[derive(Default)]
pub struct Script {
    pub responses: Vec<Response>,
    /// Answer every request with this (status 200) when `responses` is empty.
    pub fallback: Option<Vec<u8>>,
    pub requests: Vec<String>,
    /// Accept and then say nothing (to provoke a timeout).
    pub stall: bool,
}

/// Serves on 127.0.0.1 of the calling thread's network namespace; returns the base URL.
pub fn serve(script: Arc<Mutex<Script>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let mut s = script.lock().expect("lock");
            s.requests.push(head);
            if s.stall {
                drop(s);
                std::thread::sleep(Duration::from_secs(3));
                continue;
            }
            let (status, headers, body) = if !s.responses.is_empty() {
                s.responses.remove(0)
            } else if let Some(body) = &s.fallback {
                (200, vec![], body.clone())
            } else {
                (500, vec![], vec![])
            };
            let mut out = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
            for (k, v) in headers {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str("\r\n");
            let _ = stream.write_all(out.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    format!("http://{addr}")
}

/// Serves on 127.0.0.1 inside network namespace `ns` (bound from a thread that
/// entered it), so a daemon running there can reach it.
pub fn serve_in_netns(ns: &str, script: Arc<Mutex<Script>>) -> anyhow::Result<String> {
    // The listener keeps the namespace of the thread that created it.
    in_netns(ns, move || serve(script))
}

/// Runs `f` on a thread that entered network namespace `ns` (connections it
/// makes start from there).
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
    let file = std::fs::File::open(format!("/run/netns/{ns}"))?;
    let handle = std::thread::spawn(move || -> anyhow::Result<T> {
        // SAFETY: setns on this thread only; the file is a network namespace.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            anyhow::bail!("setns: {}", std::io::Error::last_os_error());
        }
        Ok(f())
    });
    handle.join().map_err(|_| anyhow::anyhow!("thread in {ns} panicked"))?
}

/// An HTTP/1.0 answer: status, headers (lower-case names) and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// `METHOD path` to `addr` (host:port) from network namespace `ns`, HTTP/1.0 so
/// the server closes when done; at most 10 s.
pub fn request_in_netns(ns: &str, addr: &str, method: &str, path: &str) -> anyhow::Result<Answer> {
    request_in_netns_with(ns, addr, method, path, &[])
}

/// `request_in_netns` with extra request headers.
pub fn request_in_netns_with(
    ns: &str,
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Answer> {
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let (addr, head) = (addr.to_owned(), format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{extra}\r\n"));
    in_netns(ns, move || -> anyhow::Result<Answer> {
        use std::io::Read as _;
        let mut stream = std::net::TcpStream::connect(&addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.write_all(head.as_bytes())?;
        let mut raw = String::new();
        stream.read_to_string(&mut raw)?;
        let (head, body) = raw.split_once("\r\n\r\n").ok_or_else(|| anyhow::anyhow!("no header end: {raw:?}"))?;
        let mut lines = head.lines();
        let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok());
        let status = status.ok_or_else(|| anyhow::anyhow!("no status line: {head:?}"))?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Ok(Answer { status, headers, body: body.to_owned() })
    })?
}

/// `s` for a URL's query string: everything but unreserved characters
/// percent-encoded.
pub fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
