//! Reading local input files with bounds: every list, region file, cached copy and
//! config file goes through `read_file`. A source is a regular file of at most
//! `MAX_SOURCE_BYTES`; pipes, devices and directories are refused without
//! blocking (a FIFO is opened non-blocking and then refused), and a file that
//! grows past the cap while it is read is refused too.

use std::{
    fs::OpenOptions,
    io::Read as _,
    os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

/// The most bytes blocker reads from one source: the same cap as a URL's body.
pub const MAX_SOURCE_BYTES: u64 = 512 << 20;

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: cannot read: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("{path}: is {kind}, not a regular file: give a file (blocker never reads pipes, devices or sockets)")]
    NotAFile { path: PathBuf, kind: &'static str },
    #[error("{path}: over the {cap} byte cap for one source ({size} bytes or more): split it or check the path")]
    TooLarge { path: PathBuf, size: u64, cap: u64 },
    #[error("{path}: not UTF-8 text (byte {offset}): give a text list")]
    NotText { path: PathBuf, offset: usize },
}

/// The content of the regular file at `path`, at most `cap` bytes.
pub fn read_file(path: &Path, cap: u64) -> Result<Vec<u8>, InputError> {
    let io = |error| InputError::Io { path: path.to_owned(), error };
    // Non-blocking: opening a FIFO without a writer would otherwise wait forever.
    let file = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path).map_err(io)?;
    // fstat of what was opened, not of the path: no window for a swap.
    let meta = file.metadata().map_err(io)?;
    let t = meta.file_type();
    if !t.is_file() {
        let kind = if t.is_dir() {
            "a directory"
        } else if t.is_fifo() {
            "a FIFO"
        } else if t.is_char_device() {
            "a character device"
        } else if t.is_block_device() {
            "a block device"
        } else if t.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(InputError::NotAFile { path: path.to_owned(), kind });
    }
    if meta.len() > cap {
        return Err(InputError::TooLarge { path: path.to_owned(), size: meta.len(), cap });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(cap + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > cap {
        return Err(InputError::TooLarge { path: path.to_owned(), size: bytes.len() as u64, cap });
    }
    Ok(bytes)
}

/// `read_file` for text.
pub fn read_text(path: &Path, cap: u64) -> Result<String, InputError> {
    String::from_utf8(read_file(path, cap)?)
        .map_err(|e| InputError::NotText { path: path.to_owned(), offset: e.utf8_error().valid_up_to() })
}

/// An offending piece of input for a message: quoted, escaped, and cut to about
/// 80 bytes as printed.
pub fn quote(text: &str) -> String {
    // Bytes of the escaped text: escapes (`\u{7f}`) count at their printed size.
    const QUOTE_BYTES: usize = 80;
    let mut out = String::from("\"");
    for c in text.chars() {
        let escaped: String = if c == '\'' { c.to_string() } else { c.escape_debug().collect() };
        if out.len() + escaped.len() > QUOTE_BYTES {
            out.push_str("...");
            break;
        }
        out.push_str(&escaped);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// A directory of its own, removed when the test ends (even by a panic).
    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn regular_files_are_read_whole() {
        let tmp = dir();
        let d = tmp.path();
        std::fs::write(d.join("l.txt"), "192.0.2.0/24\n").unwrap();
        assert_eq!(read_text(&d.join("l.txt"), 100).unwrap(), "192.0.2.0/24\n");
    }

    #[test]
    fn fifos_devices_and_directories_are_refused_at_once() {
        let tmp = dir();
        let d = tmp.path();
        let fifo = d.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo on a path of our own temporary directory.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let started = Instant::now();
        let e = read_file(&fifo, 100).unwrap_err().to_string();
        assert!(e.contains("is a FIFO, not a regular file"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(1), "opening a FIFO must not block");
        let e = read_file(Path::new("/dev/zero"), 100).unwrap_err().to_string();
        assert!(e.contains("/dev/zero: is a character device"), "{e}");
        let e = read_file(d, 100).unwrap_err().to_string();
        assert!(e.contains("is a directory"), "{e}");
        let e = read_file(&d.join("missing"), 100).unwrap_err().to_string();
        assert!(e.contains("missing: cannot read"), "{e}");
    }

    #[test]
    fn files_over_the_cap_are_refused() {
        let tmp = dir();
        let d = tmp.path();
        std::fs::write(d.join("big"), vec![b'1'; 101]).unwrap();
        let e = read_file(&d.join("big"), 100).unwrap_err().to_string();
        assert!(e.contains("over the 100 byte cap"), "{e}");
        std::fs::write(d.join("bin"), [b'1', 0xff, b'2']).unwrap();
        let e = read_text(&d.join("bin"), 100).unwrap_err().to_string();
        assert!(e.contains("not UTF-8 text (byte 1)"), "{e}");
    }
}
