//! Idempotent installation of the build and test prerequisites. Each step checks
//! first and only installs what is missing, so a second run takes a moment.

use std::process::Command;

use anyhow::{bail, Context as _, Result};

/// The bpf-linker that works with the preinstalled nightly (LLVM 22); later
/// versions need a system LLVM the package registries here do not have.
const BPF_LINKER_VERSION: &str = "0.10.1";
/// The LLVM major version bpf-linker 0.10.1 loads with its default features
/// (`rust-llvm-22`: the LLVM inside the nightly toolchain, which must match).
const BPF_LINKER_LLVM_MAJOR: u32 = 22;

const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// (command the tests run, Debian package that provides it)
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("ping", "iputils-ping"),
    // TCP connections through scopes and rejects; GRO on a veth so that it
    // receives the XDP_TX answers of a reject.
    ("curl", "curl"),
    ("ethtool", "ethtool"),
    ("nsenter", "util-linux"),
    ("setpriv", "util-linux"),
    // systemd-analyze checks the shipped unit file.
    ("systemd-analyze", "systemd"),
    // The metrics tests scrape the daemon with a real Prometheus and check the
    // exposition and the shipped alert rules with promtool.
    ("prometheus", "prometheus"),
    ("promtool", "prometheus"),
    // `blocker top` is tested in a real terminal (send-keys, capture-pane).
    ("tmux", "tmux"),
    // An unprivileged local peer that holds the metrics endpoint's connections.
    ("/usr/bin/python3", "python3"),
    // The shipped fail2ban action is tested with a real fail2ban.
    ("fail2ban-client", "fail2ban"),
    // The CrowdSec bouncer is tested against a real LAPI (`crowdsec_offline`).
    ("crowdsec", "crowdsec"),
    ("cscli", "crowdsec"),
    // Certificates of a test's own for a LAPI served over TLS.
    ("openssl", "openssl"),
    // The fleet's bundle signatures are checked against the real minisign.
    ("minisign", "minisign"),
    // The fleet's store: a three-member etcd cluster on loopback.
    ("etcd", "etcd-server"),
    ("etcdctl", "etcd-client"),
];
/// What the benchmarks' baselines need besides.
const BENCH_PACKAGES: &[(&str, &str)] = &[
    ("nft", "nftables"),
    ("ipset", "ipset"),
    ("iptables", "iptables"),
    ("ethtool", "ethtool"),
    ("/usr/bin/time", "time"),
    // The CrowdSec side by side: the anchor bouncer in nftables mode.
    ("crowdsec-firewall-bouncer", "crowdsec-firewall-bouncer"),
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

pub(crate) fn all() -> Result<()> {
    nightly_rust_src()?;
    bpf_linker()?;
    llvm_versions_match()?;
    crowdsec_offline()?;
    debian_packages(DEBIAN_PACKAGES)?;
    kubernetes_tools()
}

/// Debian's crowdsec registers with CrowdSec's online API when it is
/// installed; offline that fails and leaves the package half-configured
/// (every later apt-get then fails). A non-empty credentials file written
/// first skips the step (the package's README.Debian); a half-configured
/// install is finished.
/// The Kubernetes base is rendered with kubectl's kustomize (kubectl 1.32 is
/// on these machines; Debian's kubernetes-client conflicts with it) and checked
/// against the Kubernetes schemas by kubernetes-validate, from PyPI.
fn kubernetes_tools() -> Result<()> {
    if output("sh", &["-c", "command -v kubectl"]).is_none() {
        bail!("kubectl is missing: install kubectl 1.32 or later (its kustomize renders dist/kubernetes)");
    }
    if output("sh", &["-c", "command -v kubernetes-validate"]).is_none() {
        run("python3", &["-m", "pip", "install", "--quiet", "kubernetes-validate"])?;
    }
    Ok(())
}

fn crowdsec_offline() -> Result<()> {
    let creds = std::path::Path::new("/etc/crowdsec/online_api_credentials.yaml");
    if !creds.exists() {
        std::fs::create_dir_all("/etc/crowdsec").context("creating /etc/crowdsec (needs root)")?;
        std::fs::write(creds, "# no Central API: blocker's tests run a private LAPI\n")
            .with_context(|| format!("writing {}", creds.display()))?;
    }
    let half = output("dpkg-query", &["-W", "-f=${Status}", "crowdsec"]).unwrap_or_default();
    if half.contains("half-configured") || half.contains("unpacked") {
        run("dpkg", &["--configure", "-a"])?;
    }
    Ok(())
}

/// What `cargo xtask lint` needs besides: clippy and rustfmt for the stable
/// toolchain (the nightly's are named in blocker-ebpf/rust-toolchain.toml).
pub(crate) fn lint() -> Result<()> {
    all()?;
    let installed = output("rustup", &["component", "list", "--installed"]).unwrap_or_default();
    for component in ["clippy", "rustfmt"] {
        if !installed.lines().any(|l| l.starts_with(component)) {
            run("rustup", &["component", "add", component])?;
        }
    }
    Ok(())
}

/// bpf-linker loads the LLVM inside the nightly toolchain: their major versions
/// must agree, or the eBPF object fails to link with errors that do not say why.
fn llvm_versions_match() -> Result<()> {
    let verbose = output("rustc", &["+nightly", "-vV"]).context("cannot run `rustc +nightly -vV`")?;
    let nightly = verbose
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next()?.trim().parse::<u32>().ok())
        .context("`rustc +nightly -vV` names no LLVM version")?;
    if nightly != BPF_LINKER_LLVM_MAJOR {
        bail!(
            "the nightly toolchain ships LLVM {nightly}, but bpf-linker {BPF_LINKER_VERSION} loads LLVM \
             {BPF_LINKER_LLVM_MAJOR}: install a nightly whose `rustc +nightly -vV` says LLVM \
             {BPF_LINKER_LLVM_MAJOR}, or a bpf-linker built for LLVM {nightly} \
             (`cargo install bpf-linker --no-default-features --features rust-llvm-{nightly}`) and change \
             BPF_LINKER_VERSION and BPF_LINKER_LLVM_MAJOR in xtask/src/setup.rs"
        );
    }
    Ok(())
}

/// The fuzzers: cargo-fuzz (libFuzzer), run with the nightly toolchain.
pub(crate) fn fuzz() -> Result<()> {
    all()?;
    if output("cargo", &["fuzz", "--version"]).is_none() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        run(&cargo, &["install", &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"), "--locked"])
            .context("installing cargo-fuzz (needs crates.io)")?;
    }
    Ok(())
}

pub(crate) fn bench() -> Result<()> {
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
