//! The daemon's half: the socket (root-only, mode 0600) and one task per client.

use std::{
    os::unix::{
        fs::{FileTypeExt as _, PermissionsExt as _},
        net::UnixStream,
    },
    path::{Path, PathBuf},
    time::Duration,
};

use super::protocol::{reply_line, EventsReply, Refusal, Request, RequestError, StreamItem};
use crate::events::{EventFilter, EventHub, MAX_STREAMS};

/// Why the control socket cannot be bound.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error(
        "{path}: exists and is not a socket; blocker does not delete it: give another --socket path, or remove \
         the file yourself"
    )]
    NotASocket { path: PathBuf },
    #[error("another blocker daemon answers on {path}; stop it first")]
    InUse { path: PathBuf },
    #[error("cannot {action} {path}: {error}")]
    Io { action: &'static str, path: PathBuf, error: std::io::Error },
}

impl SocketError {
    fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SocketError + 'a {
        move |error| SocketError::Io { action, path: path.to_owned(), error }
    }
}

/// Binds the socket, replacing a stale one (a socket no daemon answers on). Any
/// other file at the path is refused, never deleted. The socket is created with
/// its final mode (0600): there is no window in which others could connect.
/// Refuses a socket path where a file that is not a socket exists (blocker never
/// deletes one). `check-config` applies it too.
pub fn check_socket_path(path: &Path) -> Result<(), SocketError> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(SocketError::NotASocket { path: path.to_owned() });
        }
    }
    Ok(())
}

pub fn bind(path: &Path) -> Result<tokio::net::UnixListener, SocketError> {
    check_socket_path(path)?;
    match std::fs::symlink_metadata(path) {
        Ok(_) => {
            if UnixStream::connect(path).is_ok() {
                return Err(SocketError::InUse { path: path.to_owned() });
            }
            std::fs::remove_file(path).map_err(SocketError::io("remove the stale socket", path))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(SocketError::io("inspect", path)(e)),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(SocketError::io("create", dir))?;
    }
    // The umask applies to bind(2)'s socket file. It is process-wide, but this
    // runs at start-up, before the daemon creates any other file.
    // SAFETY: umask has no preconditions.
    let old = unsafe { libc::umask(0o177) };
    let bound = tokio::net::UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let listener = bound.map_err(SocketError::io("bind", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(SocketError::io("make private", path))?;
    Ok(listener)
}

/// The most bytes of one control request (one JSON line): `blocker ban --from`
/// sends its bans in requests of up to `client::MAX_BAN_REQUEST_BYTES`.
const MAX_REQUEST_BYTES: u64 = 32 << 20;
/// How long a client may take to send its request, and to read the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// A control request for the daemon's task, and where its answer goes.
pub type ControlRequest = (Result<Request, RequestError>, tokio::sync::oneshot::Sender<String>);

/// One control client, in a task of its own: a client that stalls holds only
/// this task, never the daemon. It reads one bounded request line, passes the
/// command to the daemon's task and writes the answer back, each with a timeout.
/// An accepted `events` request then streams the hub's events to the client.
pub async fn control_client(
    stream: tokio::net::UnixStream,
    daemon: tokio::sync::mpsc::Sender<ControlRequest>,
    hub: EventHub,
) {
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST_BYTES));
    match tokio::time::timeout(CLIENT_TIMEOUT, reader.read_line(&mut line)).await {
        Ok(Ok(_)) => {}
        _ => return, // silent, stalled or not UTF-8
    }
    let mut events = None;
    let answer = if !line.ends_with('\n') && line.len() as u64 >= MAX_REQUEST_BYTES {
        reply_line(&Refusal::new(format!("request over {MAX_REQUEST_BYTES} bytes")))
    } else {
        let request = Request::parse(&line);
        // Subscribed before the daemon answers, so no event between the answer
        // and the stream is missed.
        if let Ok(Request::Events { filter }) = &request {
            match hub.subscribe() {
                Some(stream) => events = Some((stream, filter.clone())),
                None => {
                    let refusal = Refusal::new(format!("{MAX_STREAMS} event streams are open already; close one"));
                    let line = format!("{}\n", reply_line(&refusal));
                    let _ = tokio::time::timeout(CLIENT_TIMEOUT, write.write_all(line.as_bytes())).await;
                    return;
                }
            }
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        if daemon.send((request, reply)).await.is_err() {
            return; // the daemon is stopping
        }
        match answer.await {
            Ok(a) => a,
            Err(_) => return,
        }
    };
    let written = tokio::time::timeout(CLIENT_TIMEOUT, write.write_all(format!("{answer}\n").as_bytes())).await;
    let Some((stream, filter)) = events else { return };
    if !matches!(written, Ok(Ok(()))) || serde_json::from_str::<EventsReply>(&answer).is_err() {
        return; // refused, or the client is gone
    }
    stream_events(stream, &filter, reader.into_inner().into_inner(), write).await;
}

/// Writes each event that passes `filter` as a line, until the client closes
/// its end or stops reading for `CLIENT_TIMEOUT`, or the daemon stops.
async fn stream_events(
    mut stream: crate::events::Stream,
    filter: &EventFilter,
    mut read: tokio::net::unix::OwnedReadHalf,
    mut write: tokio::net::unix::OwnedWriteHalf,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::sync::broadcast::error::RecvError;
    let mut scratch = [0u8; 256];
    loop {
        let item = tokio::select! {
            received = stream.receiver.recv() => match received {
                Ok(event) if filter.matches(&event) => StreamItem::Event(Box::new((*event).clone())),
                Ok(_) => continue,
                Err(RecvError::Lagged(missed)) => StreamItem::Missed { missed },
                Err(RecvError::Closed) => return,
            },
            // Anything the client sends after its request, or its end closing,
            // ends the stream.
            _ = read.read(&mut scratch) => return,
        };
        let line = format!("{}\n", reply_line(&item));
        match tokio::time::timeout(CLIENT_TIMEOUT, write.write_all(line.as_bytes())).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}

pub async fn accept(listener: &Option<tokio::net::UnixListener>) -> std::io::Result<tokio::net::UnixStream> {
    match listener {
        Some(l) => l.accept().await.map(|(s, _)| s),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    #[test]
    fn other_files_are_never_replaced_and_the_socket_is_private() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let file = dir.join("precious");
        std::fs::write(&file, "data").unwrap();
        let e = rt.block_on(async { bind(&file) }).unwrap_err();
        assert!(matches!(&e, SocketError::NotASocket { path } if *path == file), "{e}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "data");

        let sock = dir.join("s.sock");
        rt.block_on(async {
            let listener = bind(&sock).unwrap();
            assert_eq!(std::fs::metadata(&sock).unwrap().mode() & 0o777, 0o600);
            let e = bind(&sock).unwrap_err();
            assert!(matches!(&e, SocketError::InUse { path } if *path == sock), "{e}");
            drop(listener);
            // A stale socket (nobody answers) is replaced.
            bind(&sock).unwrap();
        });
    }
}
