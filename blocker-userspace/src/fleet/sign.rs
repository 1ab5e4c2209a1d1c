//! Signatures of fleet bundles, in minisign's format, so that `minisign -V`
//! checks what blocker signs and blocker reads keys `minisign -G -W` makes.
//!
//! - Public key: `untrusted comment: ...` then base64 of `"Ed" || key id (8) ||
//!   Ed25519 public key (32)`.
//! - Secret key (unencrypted only): base64 of `"Ed" || kdf "\0\0" || "B2" ||
//!   salt (32) || opslimit (8) || memlimit (8) || key id (8) || Ed25519 secret
//!   key (64: seed and public key) || checksum (32: BLAKE2b-256 of `"Ed" || key
//!   id || secret key`)`.
//! - Signature: `untrusted comment`, base64 of `"ED" || key id || Ed25519
//!   signature of the BLAKE2b-512 hash of the data`, `trusted comment: TEXT`,
//!   base64 of the Ed25519 signature of `signature || TEXT` (the global
//!   signature, which binds the trusted comment).
//!
//! Encrypted secret keys (minisign's default, scrypt) are refused with what to
//! do: the signing host keeps its key as a file readable by its owner only.

use base64::{engine::general_purpose::STANDARD, Engine as _};
use blake2::{digest::consts::U32, Blake2b, Blake2b512, Digest as _};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};

/// The most bytes of a key or signature file (real ones are under 400).
pub const MAX_KEY_FILE_BYTES: u64 = 4096;

/// Why a key or a signature is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignError {
    #[error("not a minisign {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error(
        "the secret key is encrypted with a password: blocker reads unencrypted keys only; make one with \
         `blocker fleet keygen` (or `minisign -G -W`), kept readable by its owner only"
    )]
    Encrypted,
    #[error("the secret key's checksum does not match: the file is damaged")]
    Checksum,
    #[error("signed by key {signed_by}, not by the fleet's public key {expected}")]
    OtherKey { signed_by: String, expected: String },
    #[error("the signature does not match the data: it was changed after signing, or signed by another key")]
    BadSignature,
    #[error("the trusted comment's signature does not match: the comment was changed after signing")]
    BadCommentSignature,
    #[error("no random bytes for a new key: {0}")]
    Random(String),
}

fn malformed(what: &'static str, reason: impl Into<String>) -> SignError {
    SignError::Malformed { what, reason: reason.into() }
}

/// A key id as minisign prints it: the 8 bytes as a little-endian number, in hex.
fn key_id_text(id: &[u8; 8]) -> String {
    format!("{:016X}", u64::from_le_bytes(*id))
}

/// The base64 line of a minisign file: the first line that is not a comment.
fn payload<'a>(text: &'a str, what: &'static str) -> Result<(&'a str, Vec<u8>), SignError> {
    let mut lines = text.lines();
    let comment = lines.next().ok_or_else(|| malformed(what, "empty"))?;
    if !comment.starts_with("untrusted comment:") {
        return Err(malformed(what, "the first line is not an `untrusted comment:`"));
    }
    let line = lines.next().ok_or_else(|| malformed(what, "no second line"))?.trim();
    let bytes = STANDARD.decode(line).map_err(|e| malformed(what, format!("the second line is not base64: {e}")))?;
    Ok((comment, bytes))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    pub key_id: [u8; 8],
    key: VerifyingKey,
}

pub struct SecretKey {
    pub key_id: [u8; 8],
    key: SigningKey,
}

/// A new key pair from the system's random source.
pub fn generate() -> Result<(SecretKey, PublicKey), SignError> {
    let mut seed = [0u8; 32];
    let mut key_id = [0u8; 8];
    getrandom::fill(&mut seed).map_err(|e| SignError::Random(e.to_string()))?;
    getrandom::fill(&mut key_id).map_err(|e| SignError::Random(e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    let public = PublicKey { key_id, key: key.verifying_key() };
    Ok((SecretKey { key_id, key }, public))
}

impl PublicKey {
    /// A public key file's text, or the base64 line alone (as `minisign -P` takes it).
    pub fn parse(text: &str) -> Result<PublicKey, SignError> {
        const WHAT: &str = "public key";
        let bytes = if text.trim_start().starts_with("untrusted comment:") {
            payload(text, WHAT)?.1
        } else {
            STANDARD.decode(text.trim()).map_err(|e| malformed(WHAT, format!("not base64: {e}")))?
        };
        if bytes.len() != 42 || &bytes[..2] != b"Ed" {
            return Err(malformed(WHAT, format!("{} bytes, expected 42 starting with \"Ed\"", bytes.len())));
        }
        let key_id: [u8; 8] = bytes[2..10].try_into().expect("8 bytes");
        let raw: [u8; 32] = bytes[10..42].try_into().expect("32 bytes");
        let key = VerifyingKey::from_bytes(&raw).map_err(|e| malformed(WHAT, format!("not an Ed25519 point: {e}")))?;
        Ok(PublicKey { key_id, key })
    }

    pub fn id(&self) -> String {
        key_id_text(&self.key_id)
    }

    /// The key's file, as minisign writes it.
    pub fn to_file(&self) -> String {
        let mut bytes = b"Ed".to_vec();
        bytes.extend_from_slice(&self.key_id);
        bytes.extend_from_slice(self.key.as_bytes());
        format!("untrusted comment: minisign public key {}\n{}\n", self.id(), STANDARD.encode(bytes))
    }

    /// Checks a signature file against `data`; returns its trusted comment.
    pub fn verify(&self, data: &[u8], signature: &str) -> Result<String, SignError> {
        const WHAT: &str = "signature";
        let (_, bytes) = payload(signature, WHAT)?;
        if bytes.len() != 74 {
            return Err(malformed(WHAT, format!("{} bytes, expected 74", bytes.len())));
        }
        let prehashed = match &bytes[..2] {
            b"ED" => true,
            b"Ed" => false,
            other => return Err(malformed(WHAT, format!("unknown algorithm {:?}", String::from_utf8_lossy(other)))),
        };
        let key_id: [u8; 8] = bytes[2..10].try_into().expect("8 bytes");
        if key_id != self.key_id {
            return Err(SignError::OtherKey { signed_by: key_id_text(&key_id), expected: self.id() });
        }
        let sig = ed25519_dalek::Signature::from_bytes(bytes[10..74].try_into().expect("64 bytes"));
        let verified = if prehashed {
            self.key.verify_strict(&Blake2b512::digest(data), &sig)
        } else {
            self.key.verify_strict(data, &sig)
        };
        verified.map_err(|_| SignError::BadSignature)?;
        let mut lines = signature.lines().skip(2);
        let comment_line = lines.next().ok_or_else(|| malformed(WHAT, "no trusted comment"))?;
        let comment = comment_line
            .strip_prefix("trusted comment: ")
            .ok_or_else(|| malformed(WHAT, "the third line is not a `trusted comment: `"))?;
        let global = lines.next().ok_or_else(|| malformed(WHAT, "no global signature"))?.trim();
        let global = STANDARD.decode(global).map_err(|e| malformed(WHAT, format!("global signature: {e}")))?;
        let global: [u8; 64] =
            global.as_slice().try_into().map_err(|_| malformed(WHAT, "the global signature is not 64 bytes"))?;
        let mut signed = bytes[10..74].to_vec();
        signed.extend_from_slice(comment.as_bytes());
        self.key
            .verify_strict(&signed, &ed25519_dalek::Signature::from_bytes(&global))
            .map_err(|_| SignError::BadCommentSignature)?;
        Ok(comment.to_owned())
    }
}

type Blake2b256 = Blake2b<U32>;

impl SecretKey {
    /// An unencrypted minisign secret key file.
    pub fn parse(text: &str) -> Result<SecretKey, SignError> {
        const WHAT: &str = "secret key";
        let (_, bytes) = payload(text, WHAT)?;
        if bytes.len() != 158 || &bytes[..2] != b"Ed" || &bytes[4..6] != b"B2" {
            return Err(malformed(WHAT, format!("{} bytes, expected 158 starting with \"Ed\"", bytes.len())));
        }
        if bytes[2..4] != [0, 0] {
            return Err(SignError::Encrypted);
        }
        let key_id: [u8; 8] = bytes[54..62].try_into().expect("8 bytes");
        let secret: [u8; 64] = bytes[62..126].try_into().expect("64 bytes");
        let checksum = &bytes[126..158];
        // minisign 0.11 writes no checksum (zeros) in an unencrypted key.
        if checksum.iter().any(|b| *b != 0) && checksum != Self::checksum(&key_id, &secret).as_slice() {
            return Err(SignError::Checksum);
        }
        let key = SigningKey::from_keypair_bytes(&secret)
            .map_err(|e| malformed(WHAT, format!("the key pair does not match: {e}")))?;
        Ok(SecretKey { key_id, key })
    }

    fn checksum(key_id: &[u8; 8], secret: &[u8; 64]) -> [u8; 32] {
        let mut h = Blake2b256::new();
        h.update(b"Ed");
        h.update(key_id);
        h.update(secret);
        h.finalize().into()
    }

    pub fn public(&self) -> PublicKey {
        PublicKey { key_id: self.key_id, key: self.key.verifying_key() }
    }

    /// The key's file (unencrypted, with its checksum).
    pub fn to_file(&self) -> String {
        let secret = self.key.to_keypair_bytes();
        let mut bytes = b"Ed\0\0B2".to_vec();
        bytes.extend_from_slice(&[0u8; 48]); // salt, opslimit, memlimit: no KDF
        bytes.extend_from_slice(&self.key_id);
        bytes.extend_from_slice(&secret);
        bytes.extend_from_slice(&Self::checksum(&self.key_id, &secret));
        format!("untrusted comment: blocker fleet secret key (unencrypted)\n{}\n", STANDARD.encode(bytes))
    }

    /// A signature file for `data` (prehashed, as minisign signs by default),
    /// carrying `trusted_comment` (one line).
    pub fn sign(&self, data: &[u8], trusted_comment: &str) -> String {
        let comment = trusted_comment.replace(['\n', '\r'], " ");
        let sig = self.key.sign(&Blake2b512::digest(data)).to_bytes();
        let mut line = b"ED".to_vec();
        line.extend_from_slice(&self.key_id);
        line.extend_from_slice(&sig);
        let mut signed = sig.to_vec();
        signed.extend_from_slice(comment.as_bytes());
        let global = self.key.sign(&signed).to_bytes();
        format!(
            "untrusted comment: signature from blocker fleet key {}\n{}\ntrusted comment: {comment}\n{}\n",
            key_id_text(&self.key_id),
            STANDARD.encode(line),
            STANDARD.encode(global)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_any_change_is_refused() {
        let (secret, public) = generate().unwrap();
        let secret = SecretKey::parse(&secret.to_file()).unwrap();
        let public = PublicKey::parse(&public.to_file()).unwrap();
        assert_eq!(secret.public(), public);
        let sig = secret.sign(b"bundle 7", "fleet edge revision 7");
        assert_eq!(public.verify(b"bundle 7", &sig).unwrap(), "fleet edge revision 7");
        assert_eq!(public.verify(b"bundle 8", &sig), Err(SignError::BadSignature));
        let forged = sig.replace("revision 7", "revision 9");
        assert_eq!(public.verify(b"bundle 7", &forged), Err(SignError::BadCommentSignature));
        let (_, other) = generate().unwrap();
        assert!(matches!(other.verify(b"bundle 7", &sig), Err(SignError::OtherKey { .. })));
        assert!(matches!(public.verify(b"bundle 7", "nonsense"), Err(SignError::Malformed { .. })));
        // The base64 line alone is a public key too (minisign -P).
        let line = public.to_file().lines().nth(1).unwrap().to_owned();
        assert_eq!(PublicKey::parse(&line).unwrap(), public);
    }

    #[test]
    fn damaged_and_encrypted_secret_keys_are_refused() {
        let (secret, _) = generate().unwrap();
        let file = secret.to_file();
        let mut bytes = STANDARD.decode(file.lines().nth(1).unwrap()).unwrap();
        bytes[100] ^= 1;
        let damaged = format!("untrusted comment: x\n{}\n", STANDARD.encode(&bytes));
        assert!(matches!(SecretKey::parse(&damaged), Err(SignError::Checksum | SignError::Malformed { .. })));
        bytes[100] ^= 1;
        bytes[2..4].copy_from_slice(b"Sc");
        let encrypted = format!("untrusted comment: x\n{}\n", STANDARD.encode(&bytes));
        assert!(matches!(SecretKey::parse(&encrypted), Err(SignError::Encrypted)));
        assert!(SignError::Encrypted.to_string().contains("blocker fleet keygen"));
    }
}
