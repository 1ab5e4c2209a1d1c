//! The control socket: a Unix stream socket (root-only, mode 0600) on which the
//! daemon answers one JSON request per line with one JSON line:
//! `{"command":"status"}`, `{"command":"reload"}` (optionally with
//! `"accept_shrink":true`), `{"command":"stats"}`.
//! The client half is used by `blocker status`, `blocker reload`.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::{
        fs::{FileTypeExt as _, PermissionsExt as _},
        net::UnixStream,
    },
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _, Result};

pub const DEFAULT_SOCKET: &str = "/run/blocker/blocker.sock";

/// One control request, as the daemon understands it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    Status,
    /// Reload; with `accept_shrink`, first accept the URL content held back.
    Reload {
        accept_shrink: bool,
    },
    Stats,
}

impl Request {
    /// Parses one request line. The error is the answer to send back; it quotes
    /// at most a bounded piece of the request.
    pub fn parse(line: &str) -> Result<Request, String> {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| format!("not a JSON request ({e}): send {{\"command\":\"status\"}}"))?;
        let command = v.get("command").and_then(|c| c.as_str()).ok_or("the request has no \"command\" string")?;
        let flag = |key: &str| -> Result<bool, String> {
            match v.get(key) {
                None | Some(serde_json::Value::Null) => Ok(false),
                Some(serde_json::Value::Bool(b)) => Ok(*b),
                Some(_) => Err(format!("{key:?} must be true or false")),
            }
        };
        match command {
            "status" => Ok(Request::Status),
            "reload" => Ok(Request::Reload { accept_shrink: flag("accept_shrink")? }),
            "stats" => Ok(Request::Stats),
            other => {
                let other = crate::lists::quote(other);
                Err(format!("unknown command {other} (status, reload, stats)"))
            }
        }
    }

    /// The request line (without its newline).
    pub fn to_line(self) -> String {
        match self {
            Request::Status => serde_json::json!({ "command": "status" }),
            Request::Reload { accept_shrink } => {
                serde_json::json!({ "command": "reload", "accept_shrink": accept_shrink })
            }
            Request::Stats => serde_json::json!({ "command": "stats" }),
        }
        .to_string()
    }
}

/// Binds the socket, replacing a stale one (a socket no daemon answers on). Any
/// other file at the path is refused, never deleted. The socket is created with
/// its final mode (0600): there is no window in which others could connect.
/// Refuses a socket path where a file that is not a socket exists (blocker never
/// deletes one). `check-config` applies it too.
pub fn check_socket_path(path: &Path) -> Result<()> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            bail!(
                "{}: exists and is not a socket; blocker does not delete it: give another --socket \
                 path, or remove the file yourself",
                path.display()
            );
        }
    }
    Ok(())
}

pub fn bind(path: &Path) -> Result<tokio::net::UnixListener> {
    check_socket_path(path)?;
    match std::fs::symlink_metadata(path) {
        Ok(_) => {
            if UnixStream::connect(path).is_ok() {
                bail!("another blocker daemon answers on {}; stop it first", path.display());
            }
            std::fs::remove_file(path).with_context(|| format!("cannot remove stale socket {}", path.display()))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(anyhow!(e).context(format!("cannot inspect {}", path.display()))),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // The umask applies to bind(2)'s socket file. It is process-wide, but this
    // runs at start-up, before the daemon creates any other file.
    // SAFETY: umask has no preconditions.
    let old = unsafe { libc::umask(0o177) };
    let bound = tokio::net::UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let listener = bound.with_context(|| format!("cannot bind {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Sends one request and returns the daemon's JSON answer.
pub fn request(path: &Path, request: Request) -> Result<serde_json::Value> {
    let mut stream = UnixStream::connect(path).map_err(|e| {
        anyhow!(
            "no blocker daemon answers on {} ({e}); start one with `blocker run`, or point --socket at its socket",
            path.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    writeln!(stream, "{}", request.to_line())?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).context("reading the daemon's answer")?;
    serde_json::from_str(&line).with_context(|| format!("bad answer from the daemon: {line:?}"))
}

pub fn socket_path(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| DEFAULT_SOCKET.into())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    #[test]
    fn requests_round_trip_and_bad_ones_are_named() {
        for r in [
            Request::Status,
            Request::Stats,
            Request::Reload { accept_shrink: false },
            Request::Reload { accept_shrink: true },
        ] {
            assert_eq!(Request::parse(&r.to_line()), Ok(r));
        }
        assert_eq!(Request::parse(r#"{"command":"reload"}"#), Ok(Request::Reload { accept_shrink: false }));
        assert!(Request::parse("status").unwrap_err().contains("not a JSON request"));
        assert!(Request::parse("{}").unwrap_err().contains("no \"command\""));
        assert!(Request::parse(r#"{"command":"reload","accept_shrink":1}"#).unwrap_err().contains("true or false"));
        let long = format!(r#"{{"command":"{}"}}"#, "x".repeat(3000));
        let e = Request::parse(&long).unwrap_err();
        assert!(e.contains("unknown command") && e.len() < 200, "{e}");
        // Found by the control fuzzer: escapes used to count as one character each.
        let escaped = format!("{{\"command\":\"bo{}gus\"}}", "\u{7f}".repeat(100));
        let e = Request::parse(&escaped).unwrap_err();
        assert!(e.len() < 200, "{} bytes: {e}", e.len());
    }

    #[test]
    fn other_files_are_never_replaced_and_the_socket_is_private() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap();
        let dir = std::env::temp_dir().join(format!("blocker-control-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("precious");
        std::fs::write(&file, "data").unwrap();
        let e = rt.block_on(async { bind(&file) }).unwrap_err().to_string();
        assert!(e.contains("exists and is not a socket"), "{e}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "data");

        let sock = dir.join("s.sock");
        rt.block_on(async {
            let listener = bind(&sock).unwrap();
            assert_eq!(std::fs::metadata(&sock).unwrap().mode() & 0o777, 0o600);
            let e = bind(&sock).unwrap_err().to_string();
            assert!(e.contains("another blocker daemon answers"), "{e}");
            drop(listener);
            // A stale socket (nobody answers) is replaced.
            bind(&sock).unwrap();
        });
        let _ = std::fs::remove_dir_all(&dir);
    }
}
