//! The client half, used by `blocker status`, `blocker reload` and the tests.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::de::DeserializeOwned;

use super::protocol::{
    BanReply, BanRequest, BansReply, EventsReply, ReloadReply, Request, StatsReply, StatusReply, StreamItem, UnbanReply,
};
use crate::events::EventFilter;

/// How long the client waits for an answer: a reload of a large table takes a while.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a request got no answer of the type asked for.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no blocker daemon answers on {socket} ({error}); start one with `blocker run`, or point --socket at its \
         socket"
    )]
    NoDaemon { socket: PathBuf, error: std::io::Error },
    #[error("the daemon on {socket}: cannot {action}: {error}")]
    Io { socket: PathBuf, action: &'static str, error: std::io::Error },
    #[error("bad answer from the daemon: {answer} ({reason})")]
    BadAnswer { answer: String, reason: String },
    /// The daemon refused the request; `reason` is its own.
    #[error("{reason}")]
    Refused { reason: String },
}

/// Sends one request and reads the daemon's answer as `T`. A refusal is
/// `ClientError::Refused`, carrying the daemon's reason.
pub fn request<T: DeserializeOwned>(path: &Path, request: Request) -> Result<T, ClientError> {
    Ok(send(path, &request)?.0)
}

/// Sends `request` and reads the first answer line as `T`; returns it with the
/// connection, positioned after that line.
fn send<T: DeserializeOwned>(path: &Path, request: &Request) -> Result<(T, BufReader<UnixStream>), ClientError> {
    let io = |action| move |error| ClientError::Io { socket: path.to_owned(), action, error };
    let mut stream =
        UnixStream::connect(path).map_err(|error| ClientError::NoDaemon { socket: path.to_owned(), error })?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(io("set a timeout"))?;
    writeln!(stream, "{}", request.to_line()).map_err(io("send the request"))?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(io("read the answer"))?;
    let bad = |e: serde_json::Error| ClientError::BadAnswer {
        answer: crate::source::input::quote(&line),
        reason: e.to_string(),
    };
    let v: serde_json::Value = serde_json::from_str(&line).map_err(bad)?;
    if v.get("ok").and_then(|ok| ok.as_bool()) != Some(true) {
        let reason = v.get("error").and_then(|e| e.as_str()).unwrap_or("the daemon refused the request");
        return Err(ClientError::Refused { reason: reason.to_owned() });
    }
    Ok((serde_json::from_value(v).map_err(bad)?, reader))
}

/// An open event stream: what the daemon said it carries, then its items.
pub struct EventStream {
    pub header: EventsReply,
    socket: std::path::PathBuf,
    reader: BufReader<UnixStream>,
}

/// Opens an event stream (`blocker events`). Events may be rare: reading waits
/// without a timeout; the stream ends when the daemon closes it.
pub fn events(path: &Path, filter: &EventFilter) -> Result<EventStream, ClientError> {
    let (header, reader) = send::<EventsReply>(path, &Request::Events { filter: filter.clone() })?;
    reader.get_ref().set_read_timeout(None).map_err(|error| ClientError::Io {
        socket: path.to_owned(),
        action: "set a timeout",
        error,
    })?;
    Ok(EventStream { header, socket: path.to_owned(), reader })
}

impl Iterator for EventStream {
    type Item = Result<StreamItem, ClientError>;

    /// The next item; None once the daemon has closed the stream.
    fn next(&mut self) -> Option<Self::Item> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => Some(serde_json::from_str(&line).map_err(|e| ClientError::BadAnswer {
                answer: crate::source::input::quote(&line),
                reason: e.to_string(),
            })),
            Err(error) => Some(Err(ClientError::Io { socket: self.socket.clone(), action: "read events", error })),
        }
    }
}

pub fn status(path: &Path) -> Result<StatusReply, ClientError> {
    request(path, Request::Status)
}

pub fn stats(path: &Path) -> Result<StatsReply, ClientError> {
    request(path, Request::Stats)
}

pub fn reload(path: &Path, accept_shrink: bool) -> Result<ReloadReply, ClientError> {
    request(path, Request::Reload { accept_shrink })
}

/// The most bytes of one `ban` request the client sends: more targets go in
/// further requests (the daemon takes up to 32 MiB).
pub const MAX_BAN_REQUEST_BYTES: usize = 8 << 20;

/// Bans `ban.targets`, in as many requests as their size needs; each returns
/// once every interface enforces its bans. Returns the replies in order: a
/// refused request stops there, and the error says how many went in before.
pub fn ban(path: &Path, ban: BanRequest) -> Result<Vec<BanReply>, ClientError> {
    let mut replies = Vec::new();
    let mut chunk = BanRequest { targets: Vec::new(), ..ban.clone() };
    let mut bytes = 0;
    let mut done = 0usize;
    let targets = ban.targets.len();
    for (i, t) in ban.targets.into_iter().enumerate() {
        bytes += t.len() + 3;
        chunk.targets.push(t);
        if bytes >= MAX_BAN_REQUEST_BYTES || i + 1 == targets {
            let n = chunk.targets.len();
            let send = std::mem::take(&mut chunk.targets);
            match request(path, Request::Ban(BanRequest { targets: send, ..chunk.clone() })) {
                Ok(r) => replies.push(r),
                Err(ClientError::Refused { reason }) if done > 0 => {
                    return Err(ClientError::Refused {
                        reason: format!("{reason} (the first {done} of {targets} targets were banned)"),
                    })
                }
                Err(e) => return Err(e),
            }
            done += n;
            bytes = 0;
        }
    }
    Ok(replies)
}

pub fn unban(path: &Path, targets: Vec<String>, origin: Option<String>) -> Result<UnbanReply, ClientError> {
    request(path, Request::Unban { targets, origin })
}

pub fn bans(path: &Path, origin: Option<String>) -> Result<BansReply, ClientError> {
    request(path, Request::Bans { origin })
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    /// A daemon stand-in that answers one request with `answer`.
    fn answering(dir: &Path, answer: &'static str) -> PathBuf {
        let path = dir.join(format!("s{}.sock", answer.len()));
        let listener = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut request = String::new();
            BufReader::new(&stream).read_line(&mut request).unwrap();
            writeln!(&stream, "{answer}").unwrap();
        });
        path
    }

    #[test]
    fn each_way_a_request_fails_is_its_own_variant() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("none.sock");
        let e = status(&missing).unwrap_err();
        assert!(matches!(&e, ClientError::NoDaemon { socket, .. } if *socket == missing), "{e}");
        assert!(e.to_string().contains("blocker run"), "says what to do: {e}");

        let refusing = answering(tmp.path(), r#"{"ok":false,"error":"reload already running"}"#);
        let e = reload(&refusing, false).unwrap_err();
        assert!(matches!(&e, ClientError::Refused { reason } if reason == "reload already running"), "{e}");

        let garbled = answering(tmp.path(), "HTTP/1.1 400 Bad Request");
        assert!(matches!(stats(&garbled).unwrap_err(), ClientError::BadAnswer { .. }));
        // Well-formed, but not the shape asked for.
        let other = answering(tmp.path(), r#"{"ok":true}"#);
        assert!(matches!(status(&other).unwrap_err(), ClientError::BadAnswer { .. }));
    }
}
