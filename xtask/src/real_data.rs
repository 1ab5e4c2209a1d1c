//! Real data downloaded for the snapshot builders and the benchmarks, kept in
//! target/real-data: off the default test path, which needs no network.

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context as _, Result};

use crate::workspace_root;

/// ip-location-db's `asn` tables (asn-ipv4.csv, asn-ipv6.csv) of `version`,
/// from the npm registry; a directory that has them already is used as it is.
pub(crate) fn asn_tables(version: &str) -> Result<PathBuf> {
    let root = workspace_root().join("target/real-data");
    let dir = root.join(format!("ip-location-db-asn-{version}"));
    let package = dir.join("package");
    if package.join("asn-ipv4.csv").is_file() && package.join("asn-ipv6.csv").is_file() {
        return Ok(package);
    }
    std::fs::create_dir_all(&dir)?;
    eprintln!("xtask: downloading @ip-location-db/asn@{version} into {}", dir.display());
    let out = Command::new("npm")
        .args(["pack", &format!("@ip-location-db/asn@{version}"), "--pack-destination"])
        .arg(&dir)
        .output()
        .context("running npm (Debian's nodejs and npm)")?;
    if !out.status.success() {
        bail!("npm pack failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let tarball = dir.join(format!("ip-location-db-asn-{version}.tgz"));
    let status = Command::new("tar").arg("xzf").arg(&tarball).arg("-C").arg(&dir).status()?;
    if !status.success() {
        bail!("cannot unpack {}", tarball.display());
    }
    let _ = std::fs::remove_file(&tarball);
    Ok(package)
}
