//! Idempotent installation of the build and test prerequisites. Each step checks
//! first and only installs what is missing, so a second run takes a moment.

use std::process::Command;

use anyhow::{bail, Context as _, Result};

/// The bpf-linker that works with the preinstalled nightly (LLVM 22); later
/// versions need a system LLVM the package registries here do not have.
const BPF_LINKER_VERSION: &str = "0.10.1";

const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// (command the tests run, Debian package that provides it)
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("ping", "iputils-ping"),
    ("nsenter", "util-linux"),
    ("setpriv", "util-linux"),
    // systemd-analyze checks the shipped unit file.
    ("systemd-analyze", "systemd"),
];
/// What the benchmarks' baselines need besides.
const BENCH_PACKAGES: &[(&str, &str)] = &[
    ("nft", "nftables"),
    ("ipset", "ipset"),
    ("iptables", "iptables"),
    ("ethtool", "ethtool"),
    ("/usr/bin/time", "time"),
];

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    eprintln!("xtask: {program} {}", args.join(" "));
    let status = Command::new(program).args(args).status().with_context(|| format!("cannot run {program}"))?;
    if !status.success() {
        bail!("{program} {} failed ({status})", args.join(" "));
    }
    Ok(())
}

pub fn all() -> Result<()> {
    nightly_rust_src()?;
    bpf_linker()?;
    debian_packages(DEBIAN_PACKAGES)
}

/// The fuzzers: cargo-fuzz (libFuzzer), run with the nightly toolchain.
pub fn fuzz() -> Result<()> {
    all()?;
    if output("cargo", &["fuzz", "--version"]).is_none() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        run(&cargo, &["install", &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"), "--locked"])
            .context("installing cargo-fuzz (needs crates.io)")?;
    }
    Ok(())
}

pub fn bench() -> Result<()> {
    all()?;
    debian_packages(BENCH_PACKAGES)
}

fn nightly_rust_src() -> Result<()> {
    let Some(installed) = output("rustup", &["component", "list", "--toolchain", "nightly", "--installed"]) else {
        bail!(
            "the eBPF program builds with rustup's `nightly` toolchain, which is missing: \
             install it with `rustup toolchain install nightly --component rust-src`"
        );
    };
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        run("rustup", &["component", "add", "rust-src", "--toolchain", "nightly"])?;
    }
    Ok(())
}

fn bpf_linker() -> Result<()> {
    let have = output("bpf-linker", &["--version"]).unwrap_or_default();
    if !have.contains(BPF_LINKER_VERSION) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        run(&cargo, &["install", &format!("bpf-linker@{BPF_LINKER_VERSION}"), "--locked", "--force"])
            .context("installing bpf-linker (needs crates.io)")?;
    }
    Ok(())
}

fn debian_packages(wanted: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(cmd, _)| output("sh", &["-c", &format!("command -v {cmd}")]).is_none())
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if output("sh", &["-c", "command -v apt-get"]).is_none() {
        bail!("missing packages {missing:?} and no apt-get: install them with your package manager");
    }
    run("apt-get", &["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(&missing);
    run("apt-get", &args).context("installing Debian packages (needs root)")
}
