//! Developer tasks: `cargo xtask setup | demo | lint | test | bench | fuzz | snapshot`.

mod demo;
mod real_data;
mod setup;

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the build and the tests need (idempotent).
    Setup,
    /// Build, then show blocker dropping traffic between two throw-away namespaces.
    Demo,
    /// Benchmarks (need root): `dataplane` (per packet through BPF_PROG_TEST_RUN,
    /// against a bare XDP_DROP and the kernel LPM trie), `endtoend` (packets per
    /// second on a veth pair against XDP_DROP, the LPM trie, nftables and
    /// iptables+ipset; `BLOCKER_BENCH_PARTS=crowdsec` for the side by side with
    /// crowdsec-firewall-bouncer), `world` (compiling the whole world from every
    /// format), `metrics` (one Prometheus scrape of 300 lists on 4 interfaces),
    /// `bans` (ban to enforced, bulk bans) and `crowdsec` (a full pull of a
    /// million decisions: time and the daemon's memory).
    Bench {
        /// Which benchmarks to run (default: all).
        #[arg(value_parser = ["dataplane", "endtoend", "world", "metrics", "bans", "crowdsec", "fleet"])]
        only: Vec<String>,
    },
    /// Rebuild the bundled country snapshot (blocker-userspace/data/countries.snapshot).
    Snapshot {
        /// A country-ip-blocks checkout (its `country/<cc>/ipv{4,6}-aggregated.txt`).
        #[arg(long, default_value = "tests/data/country-ip-blocks")]
        from: PathBuf,
        /// The date of that data, shown by `blocker regions list`.
        #[arg(long, default_value = "2026-02-01")]
        date: String,
    },
    /// Rebuild the bundled ASN snapshot (blocker-userspace/data/asn.snapshot)
    /// from ip-location-db's `asn` npm package, downloaded into
    /// target/real-data (kept there: the ASN benchmark reads it too).
    SnapshotAsn {
        /// The package version; its date is the data's.
        #[arg(long, default_value = ASN_PACKAGE_VERSION)]
        version: String,
    },
    /// Run the cargo-fuzz targets (need root: `packet` runs the XDP program
    /// through BPF_PROG_TEST_RUN), each for a bounded time, from the seed corpus
    /// in fuzz/corpus/<target>. A crash is saved under target/fuzz/artifacts/.
    Fuzz {
        /// Which targets (default: all).
        #[arg(value_parser = FUZZ_TARGETS.to_vec())]
        only: Vec<String>,
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// libFuzzer sanitizer: none (fastest; Rust's own checks and debug
        /// assertions still apply) or address.
        #[arg(long, default_value = "none", value_parser = ["none", "address"])]
        sanitizer: String,
    },
    /// Formatting and clippy, warnings denied: the whole workspace on the host,
    /// and the eBPF crate again for its BPF target.
    Lint,
    /// Build, then run the unit tests as an unprivileged user, then every test that
    /// needs root (BPF_PROG_TEST_RUN, network namespaces), then each fuzz target for
    /// 10 seconds (the fuzzers are skipped when a test filter is given).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() {
    if let Err(e) = run() {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    match Cli::parse().command {
        Task::Setup => setup::all(),
        Task::Demo => {
            setup::all()?;
            require_root("the demo")?;
            cargo(&["build", "--bin", "blocker"])?;
            demo::run(&workspace_root())
        }
        Task::Bench { only } => {
            setup::bench()?;
            require_root("the benchmarks")?;
            for bench in ["dataplane", "endtoend", "world", "metrics", "bans", "crowdsec", "fleet"] {
                if only.is_empty() || only.iter().any(|o| o == bench) {
                    cargo(&["bench", "-p", "blocker-userspace", "--bench", bench])?;
                }
            }
            Ok(())
        }
        Task::Snapshot { from, date } => {
            setup::all()?;
            let from = from.canonicalize().with_context(|| format!("{}", from.display()))?;
            let out = workspace_root().join("blocker-userspace/data/countries.snapshot");
            let (from, out) = (from.to_string_lossy().into_owned(), out.to_string_lossy().into_owned());
            cargo(&[
                "run",
                "--quiet",
                "--bin",
                "blocker",
                "--",
                "regions",
                "build-snapshot",
                "--from",
                &from,
                "--date",
                &date,
                "--out",
                &out,
            ])?;
            // Rebuild so the binary embeds the new snapshot.
            cargo(&["build", "--bin", "blocker"])
        }
        Task::SnapshotAsn { version } => {
            let dir = real_data::asn_tables(&version)?;
            // 2.3.2026061719: the data of 2026-06-17.
            let stamp = version.rsplit('.').next().unwrap_or_default();
            let date = if stamp.len() >= 8 {
                format!("{}-{}-{}", &stamp[..4], &stamp[4..6], &stamp[6..8])
            } else {
                version.clone()
            };
            let out = workspace_root().join("blocker-userspace/data/asn.snapshot");
            let v4 = format!("csv:{}", dir.join("asn-ipv4.csv").display());
            let v6 = format!("csv:{}", dir.join("asn-ipv6.csv").display());
            let out = out.to_string_lossy().into_owned();
            cargo(&[
                "run",
                "--quiet",
                "--bin",
                "blocker",
                "--",
                "regions",
                "build-asn-snapshot",
                "--from",
                &v4,
                "--from",
                &v6,
                "--date",
                &date,
                "--out",
                &out,
            ])?;
            cargo(&["build", "--bin", "blocker"])
        }
        Task::Lint => {
            setup::lint()?;
            lint()
        }
        Task::Fuzz { only, seconds, sanitizer } => {
            setup::fuzz()?;
            require_root("the fuzzers")?;
            fuzz(&only, seconds, &sanitizer)
        }
        Task::Test { args } => {
            setup::fuzz()?;
            require_root("the tests")?;
            test_stages(&args)?;
            if !args.is_empty() {
                return Ok(());
            }
            // About a minute in all: enough for a panic on the seeds' neighbours to fail the run.
            fuzz(&[], 10, "none")
        }
    }
}

/// The lint gates (see `[workspace.lints]`), warnings denied.
fn lint() -> Result<()> {
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&["fmt", "--manifest-path", "fuzz/Cargo.toml", "--check"])?;
    // Every crate on the host (the eBPF crate builds there as a binary that does
    // nothing, so the workspace checks as one).
    cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])?;
    // The eBPF crate as it is built: for the BPF target, with nightly and a core
    // library of its own (its own target directory keeps the host builds intact).
    cargo_nightly(&[
        "clippy",
        "-p",
        "blocker-ebpf",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--target-dir",
        "target/ebpf-clippy",
        "--",
        "-D",
        "warnings",
    ])?;
    println!("lint: clean");
    Ok(())
}

const FUZZ_TARGETS: [&str; 8] =
    ["list_parser", "region_text", "mmdb", "config", "control", "packet", "crowdsec_stream", "asn_text"];

/// The ip-location-db `asn` package the bundled ASN snapshot comes from.
const ASN_PACKAGE_VERSION: &str = "2.3.2026061719";

/// Runs each fuzz target for `seconds`. New inputs go to target/fuzz/corpus
/// (the committed seeds in fuzz/corpus stay as they are); crashes and hangs
/// (over 10 s on one input) fail the run and are saved under target/fuzz/artifacts.
fn fuzz(only: &[String], seconds: u64, sanitizer: &str) -> Result<()> {
    let root = workspace_root();
    let target_dir = root.join("target/fuzz");
    let mut failed = Vec::new();
    for target in FUZZ_TARGETS {
        if !only.is_empty() && !only.iter().any(|o| o == target) {
            continue;
        }
        let work = target_dir.join("corpus").join(target);
        let artifacts = target_dir.join("artifacts").join(target);
        std::fs::create_dir_all(&work)?;
        std::fs::create_dir_all(&artifacts)?;
        eprintln!("xtask: fuzzing {target} for {seconds} s");
        let status = Command::new("cargo")
            .args(["+nightly", "fuzz", "run", "--fuzz-dir", "fuzz", "--sanitizer", sanitizer])
            .args(["--codegen-units", "16", "--target-dir"])
            .arg(&target_dir)
            .arg(target)
            .arg("--")
            .arg(&work)
            .arg(root.join("fuzz/corpus").join(target))
            .arg(format!("-max_total_time={seconds}"))
            .args(["-timeout=10", "-rss_limit_mb=4096", "-max_len=65536", "-print_final_stats=1"])
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            // The toolchain of the fuzz build, not xtask's own.
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO")
            .current_dir(&root)
            .status()
            .context("running cargo fuzz")?;
        if !status.success() {
            failed.push(target);
        }
    }
    // The packet target pins its maps under /sys/fs/bpf/blocker-fuzz-<pid>.
    if let Ok(entries) = std::fs::read_dir("/sys/fs/bpf") {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("blocker-fuzz-") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    if !failed.is_empty() {
        bail!("fuzz targets failed: {} (inputs under {})", failed.join(", "), target_dir.join("artifacts").display());
    }
    Ok(())
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn require_root(what: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("{what} load XDP programs and create network namespaces: run as root (sudo -E cargo xtask ...)");
    }
    Ok(())
}

pub fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("running {cargo}"))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// `cargo` of the nightly toolchain (through rustup: `$CARGO` is the stable one).
fn cargo_nightly(args: &[&str]) -> Result<()> {
    let status = Command::new("rustup")
        .args(["run", "nightly", "cargo"])
        .args(args)
        .current_dir(workspace_root())
        .status()
        .context("running rustup run nightly cargo")?;
    if !status.success() {
        bail!("cargo +nightly {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Tests that passed, failed and were ignored.
#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
    ignored: u64,
}

/// The test stages of `cargo xtask test`: the unit tests without privileges,
/// then the suite that needs root. `filter`: extra `cargo test` arguments.
fn test_stages(filter: &[String]) -> Result<()> {
    let mut tally = Tally::default();
    // The unit tests need no privilege: their binaries run as root without any
    // capability (an empty bounding set), so one that needs the kernel fails.
    let runner = format!("CARGO_TARGET_{}_RUNNER", host_triple()?.to_uppercase().replace('-', "_"));
    let unprivileged = [(runner.as_str(), "setpriv --bounding-set=-all --inh-caps=-all --ambient-caps=-all --")];
    let mut unit = vec!["test", "-p", "blocker-userspace", "--lib", "--bins"];
    unit.extend(filter.iter().map(String::as_str));
    let result = cargo_test(&unit, &unprivileged, &mut tally);
    // `cargo test` also builds the `blocker` binary the namespace tests start.
    let mut root = vec!["test", "-p", "blocker-userspace", "-p", "blocker-tests", "--test", "*"];
    root.extend(filter.iter().map(String::as_str));
    let result = result.and(cargo_test(&root, &[], &mut tally));
    println!("tests: {} passed, {} failed, {} skipped", tally.passed, tally.failed, tally.ignored);
    result?;
    if tally.passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

fn host_triple() -> Result<String> {
    let out = Command::new("rustc").arg("-vV").output().context("running rustc -vV")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .context("rustc -vV names no host")
}

/// Runs `cargo test` with `env`, passing its output through and counting the
/// results of every test binary into `tally`.
fn cargo_test(args: &[&str], env: &[(&str, &str)], tally: &mut Tally) -> Result<()> {
    use std::io::{BufRead as _, BufReader};
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut child = Command::new(&cargo)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(workspace_root())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cargo}"))?;
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        // "test result: ok. 12 passed; 0 failed; 0 ignored; 0 measured; ..."
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(['.', ';']) {
                let mut words = part.split_whitespace();
                if let (Some(n), Some(what)) = (words.next().and_then(|n| n.parse::<u64>().ok()), words.next()) {
                    match what {
                        "passed" => tally.passed += n,
                        "failed" => tally.failed += n,
                        "ignored" => tally.ignored += n,
                        _ => {}
                    }
                }
            }
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}
