//! Certificates of a test's own, made with openssl: a CA, and certificates
//! it signs (P-256 keys, valid two days), each written as NAME.pem and NAME.key.

use std::{path::Path, process::Command};

use anyhow::{bail, Context as _, Result};

const EC: [&str; 5] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl").current_dir(dir).args(args).output().context("cannot run openssl")?;
    if !out.status.success() {
        bail!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A CA in `dir`: ca.pem and ca.key.
pub fn make_ca(dir: &Path, subject: &str) -> Result<()> {
    let mut ca = vec!["req", "-x509"];
    ca.extend(EC);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", subject]);
    openssl(dir, &ca)
}

/// A certificate `name` for `subject`, signed by the CA in `dir`, with the
/// extensions `ext` (openssl's extfile lines).
pub fn make_cert(dir: &Path, name: &str, subject: &str, ext: &str) -> Result<()> {
    let (key, csr, pem, extfile) =
        (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
    let mut req = vec!["req"];
    req.extend(EC);
    req.extend(["-keyout", &key, "-out", &csr, "-subj", subject]);
    openssl(dir, &req)?;
    std::fs::write(dir.join(&extfile), ext)?;
    let sign = ["x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"];
    let mut args = sign.to_vec();
    args.extend(["-out", &pem, "-days", "2", "-extfile", &extfile]);
    openssl(dir, &args)
}
