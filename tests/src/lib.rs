//! Test harness shared by blocker's integration tests and `cargo xtask demo`.
//!
//! - [`netns`]: two throw-away network namespaces joined by a veth pair, with
//!   documentation-range addresses (RFC 5737 / RFC 3849) assigned inside them.
//! - [`crowdsec`]: a private CrowdSec LAPI, for the bouncer.
//! - [`daemon`]: `blocker run` as a child process inside a namespace.
//! - [`frames`]: crafted Ethernet frames for BPF_PROG_TEST_RUN.
//! - [`http`]: a scripted HTTP server on loopback, for URL sources.
//! - [`mmdb`]: a small MaxMind DB writer, for the MMDB reader.
//! - [`tables`]: generators of large realistic tables (threat lists, geo tables).
//! - [`foreign`]: programs of the test's own on blocker's hooks (tc egress, XDP).
// The dev-dependencies are the integration tests'.
#![cfg_attr(test, allow(unused_crate_dependencies))]

pub mod certs;
pub mod crowdsec;
pub mod daemon;
pub mod etcd;
pub mod foreign;
pub mod frames;
pub mod http;
pub mod mmdb;
pub mod netns;
pub mod tables;

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

/// The real data the tests read (tests/data: country-ip-blocks, an RIR
/// delegation file; see its README for sources and licences). It ships with the
/// repository, so a fresh clone runs every test.
pub fn test_data() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
}

/// The workspace's root (its target/ holds downloads off the default test path).
pub fn workspace_root() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// A short name unique to this process and call: interface names must stay
/// within 15 bytes, and tests running in parallel must never collide.
pub fn unique_tag() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{}{n}", std::process::id() % 100_000)
}

/// The extensions of the files in `dir`, sorted: what kinds of files a cache
/// directory holds (`["data", "meta"]`).
pub fn file_kinds(dir: &std::path::Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path().extension().map(|x| x.to_string_lossy().into_owned()).unwrap_or_default())
        .collect();
    out.sort();
    out
}

/// Runs a command, failing with its output when it does not succeed.
pub fn sh(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new(program).args(args).output()?;
    if !out.status.success() {
        anyhow::bail!(
            "{program} {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A small deterministic xorshift generator for tests and benchmarks (no extra crate,
/// the same sequence on every run).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value in lo..=hi (inclusive; the whole u128 space allowed).
    pub fn in_range(&mut self, lo: u128, hi: u128) -> u128 {
        let span = hi - lo;
        lo + if span == u128::MAX { self.below(span) } else { self.below(span + 1) }
    }

    /// A value in 0..n (n > 0), from 128 random bits.
    pub fn below(&mut self, n: u128) -> u128 {
        ((u128::from(self.next_u64()) << 64) | u128::from(self.next_u64())) % n
    }
}

/// Polls `f` every 100 ms until it holds or `limit` passes; whether it held.
pub fn wait_until(limit: std::time::Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}

/// A KiB figure of `/proc/PID/status` (`VmRSS:`, `VmHWM:`).
pub fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}
