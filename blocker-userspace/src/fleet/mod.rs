//! A fleet of edge hosts sharing one signed policy: the bundle (`bundle`: a
//! policy and its files, at a revision), its signatures (`sign`, minisign's
//! format), the etcd client (`etcd`) and the key files of `blocker fleet keygen`.

pub mod bundle;
pub mod etcd;
pub mod host;
pub mod sign;
pub mod store;

use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _, path::Path};

/// Why `blocker fleet keygen` wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum KeygenError {
    #[error("{path}: exists already: blocker never overwrites a key; move it away or name another file")]
    Exists { path: String },
    #[error("{path}: cannot write: {error}")]
    Write { path: String, error: std::io::Error },
    #[error(transparent)]
    Sign(#[from] sign::SignError),
}

/// Makes a key pair: the secret key readable by its owner only (0600), the
/// public key for every host. Neither file may exist; on any failure neither
/// is left behind. Returns the key id.
pub fn keygen(secret_path: &Path, public_path: &Path) -> Result<String, KeygenError> {
    for p in [secret_path, public_path] {
        if p.exists() {
            return Err(KeygenError::Exists { path: p.display().to_string() });
        }
    }
    let (secret, public) = sign::generate()?;
    write_new(secret_path, secret.to_file().as_bytes(), 0o600)?;
    if let Err(e) = write_new(public_path, public.to_file().as_bytes(), 0o644) {
        let _ = std::fs::remove_file(secret_path);
        return Err(e);
    }
    Ok(public.id())
}

/// Writes a file that must not exist yet (O_EXCL), with `mode`.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeygenError> {
    let err = |error: std::io::Error| match error.kind() {
        std::io::ErrorKind::AlreadyExists => KeygenError::Exists { path: path.display().to_string() },
        _ => KeygenError::Write { path: path.display().to_string(), error },
    };
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(err)?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(|error| {
        let _ = std::fs::remove_file(path);
        KeygenError::Write { path: path.display().to_string(), error }
    })
}

/// Reads a key or signature file, bounded.
pub fn read_key_file(path: &Path) -> Result<String, crate::source::input::InputError> {
    crate::source::input::read_text(path, sign::MAX_KEY_FILE_BYTES)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn keygen_writes_a_private_secret_key_and_never_overwrites() {
        let tmp = tempfile::tempdir().unwrap();
        let (s, p) = (tmp.path().join("fleet.key"), tmp.path().join("fleet.pub"));
        let id = keygen(&s, &p).unwrap();
        assert_eq!(std::fs::metadata(&s).unwrap().permissions().mode() & 0o777, 0o600);
        let public = sign::PublicKey::parse(&read_key_file(&p).unwrap()).unwrap();
        assert_eq!(public.id(), id);
        let secret = sign::SecretKey::parse(&read_key_file(&s).unwrap()).unwrap();
        assert_eq!(secret.public(), public);
        let before = std::fs::read(&s).unwrap();
        let e = keygen(&s, &tmp.path().join("other.pub")).unwrap_err();
        assert!(e.to_string().contains("exists already"), "{e}");
        assert_eq!(std::fs::read(&s).unwrap(), before);
        assert!(!tmp.path().join("other.pub").exists());
    }
}
