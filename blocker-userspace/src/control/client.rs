//! The client half, used by `blocker status`, `blocker reload` and the tests.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use anyhow::{anyhow, Context as _, Result};
use serde::de::DeserializeOwned;

use super::protocol::{ReloadReply, Request, StatsReply, StatusReply};

/// How long the client waits for an answer: a reload of a large table takes a while.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// The daemon refused a request; the text is its reason.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct Refused {
    pub reason: String,
}

/// Sends one request and reads the daemon's answer as `T`. A refusal is an
/// error (`Refused`) carrying the daemon's reason.
pub fn request<T: DeserializeOwned>(path: &Path, request: Request) -> Result<T> {
    let mut stream = UnixStream::connect(path).map_err(|e| {
        anyhow!(
            "no blocker daemon answers on {} ({e}); start one with `blocker run`, or point --socket at its socket",
            path.display()
        )
    })?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    writeln!(stream, "{}", request.to_line())?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).context("reading the daemon's answer")?;
    let bad = || format!("bad answer from the daemon: {}", crate::source::input::quote(&line));
    let v: serde_json::Value = serde_json::from_str(&line).with_context(bad)?;
    if v.get("ok").and_then(|ok| ok.as_bool()) != Some(true) {
        let reason = v.get("error").and_then(|e| e.as_str()).unwrap_or("the daemon refused the request");
        return Err(Refused { reason: reason.to_owned() }.into());
    }
    serde_json::from_value(v).with_context(bad)
}

pub fn status(path: &Path) -> Result<StatusReply> {
    request(path, Request::Status)
}

pub fn stats(path: &Path) -> Result<StatsReply> {
    request(path, Request::Stats)
}

pub fn reload(path: &Path, accept_shrink: bool) -> Result<ReloadReply> {
    request(path, Request::Reload { accept_shrink })
}
