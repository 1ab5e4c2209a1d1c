//! The control socket: a Unix stream socket (root-only, mode 0600) on which the
//! daemon answers one JSON request per line with one JSON line:
//! `{"command":"status"}`, `{"command":"reload"}`, `{"command":"stats"}`.
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

/// Binds the socket, replacing a stale one (a socket no daemon answers on). Any
/// other file at the path is refused, never deleted. The socket is created with
/// its final mode (0600): there is no window in which others could connect.
pub fn bind(path: &Path) -> Result<tokio::net::UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            if !meta.file_type().is_socket() {
                bail!(
                    "{}: exists and is not a socket; blocker does not delete it: give another --socket \
                     path, or remove the file yourself",
                    path.display()
                );
            }
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
pub fn request(path: &Path, command: &str) -> Result<serde_json::Value> {
    request_json(path, &serde_json::json!({ "command": command }))
}

/// Sends one request (`{"command": ..., options}`) and returns the daemon's answer.
pub fn request_json(path: &Path, request: &serde_json::Value) -> Result<serde_json::Value> {
    let mut stream = UnixStream::connect(path).map_err(|e| {
        anyhow!(
            "no blocker daemon answers on {} ({e}); start one with `blocker run`, or point --socket at its socket",
            path.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    writeln!(stream, "{request}")?;
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
