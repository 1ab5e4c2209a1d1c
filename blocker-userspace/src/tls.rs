//! TLS to a server blocker is a client of (a CrowdSec LAPI, etcd): a CA to
//! trust instead of the system's, and a client certificate with its key for
//! servers that authenticate clients by certificate.

use std::path::PathBuf;

use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tls {
    pub ca_cert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// Why a TLS file was refused: the key that names it (`ca_cert`, `cert`,
/// `key`), and what is wrong.
#[derive(Debug)]
pub struct TlsFileError {
    pub key: &'static str,
    pub reason: String,
}

impl Tls {
    /// Whether any file is given.
    pub fn is_set(&self) -> bool {
        self.ca_cert.is_some() || self.cert.is_some()
    }

    /// Checks what can be checked without reading: a certificate goes with a
    /// key, and every file named exists.
    pub fn check(&self) -> Result<(), TlsFileError> {
        if self.cert.is_some() != self.key.is_some() {
            let key = if self.cert.is_some() { "key" } else { "cert" };
            return Err(TlsFileError { key, reason: "a client certificate needs both cert and key".into() });
        }
        for (key, path) in [("ca_cert", &self.ca_cert), ("cert", &self.cert), ("key", &self.key)] {
            if let Some(p) = path {
                if !p.is_file() {
                    return Err(TlsFileError { key, reason: format!("{}: no such file", p.display()) });
                }
            }
        }
        Ok(())
    }

    /// The files read into ureq's TLS settings (bounded reads; each error
    /// names the file and its key).
    pub fn config(&self) -> Result<TlsConfig, TlsFileError> {
        let read = |key: &'static str, path: &std::path::Path| -> Result<Vec<u8>, TlsFileError> {
            crate::source::input::read_file(path, 1 << 20).map_err(|e| TlsFileError { key, reason: e.to_string() })
        };
        let certs = |key: &'static str, path: &std::path::Path| -> Result<Vec<Certificate<'static>>, TlsFileError> {
            let pem = read(key, path)?;
            let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|i| match i {
                    Ok(PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(TlsFileError { key, reason: format!("{}: no PEM certificate in it", path.display()) });
            }
            Ok(certs)
        };
        let mut tls = TlsConfig::builder();
        if let Some(ca) = &self.ca_cert {
            tls = tls.root_certs(RootCerts::new_with_certs(&certs("ca_cert", ca)?));
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            let chain = certs("cert", cert)?;
            let pem = read("key", key)?;
            let key = PrivateKey::from_pem(&pem).map_err(|e| TlsFileError {
                key: "key",
                reason: format!("{}: not a PEM private key ({e})", key.display()),
            })?;
            tls = tls.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
        }
        Ok(tls.build())
    }
}
