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
    let file = std::fs::File::open(format!("/run/netns/{ns}"))?;
    let handle = std::thread::spawn(move || -> anyhow::Result<String> {
        // SAFETY: setns on this thread only; the file is a network namespace.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            anyhow::bail!("setns: {}", std::io::Error::last_os_error());
        }
        // The listener keeps the namespace of the thread that created it.
        Ok(serve(script))
    });
    handle.join().map_err(|_| anyhow::anyhow!("server thread panicked"))?
}
