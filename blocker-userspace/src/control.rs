//! The control socket: a Unix stream socket (root-only, mode 0600) on which the
//! daemon answers one JSON request per line with one JSON line:
//! `{"command":"status"}`, `{"command":"reload"}`, `{"command":"stats"}`.
//! The client half is used by `blocker status`, `blocker reload`.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::{fs::PermissionsExt as _, net::UnixStream},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _, Result};

pub const DEFAULT_SOCKET: &str = "/run/blocker/blocker.sock";

/// Binds the socket, replacing a stale one (no daemon answering on it).
pub fn bind(path: &Path) -> Result<tokio::net::UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            bail!("another blocker daemon answers on {}; stop it first", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("cannot remove stale socket {}", path.display()))?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(path).with_context(|| format!("cannot bind {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Sends one request and returns the daemon's JSON answer.
pub fn request(path: &Path, command: &str) -> Result<serde_json::Value> {
    let mut stream = UnixStream::connect(path).map_err(|e| {
        anyhow!(
            "no blocker daemon answers on {} ({e}); start one with `blocker run`, or point --socket at its socket",
            path.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    writeln!(stream, "{}", serde_json::json!({ "command": command }))?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).context("reading the daemon's answer")?;
    serde_json::from_str(&line).with_context(|| format!("bad answer from the daemon: {line:?}"))
}

pub fn socket_path(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| DEFAULT_SOCKET.into())
}
