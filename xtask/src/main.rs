//! Developer tasks: `cargo xtask setup | demo | test`.

mod demo;
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
    /// iptables+ipset) and `world` (compiling the whole world from every format).
    Bench {
        /// Which benchmarks to run (default: all).
        #[arg(value_parser = ["dataplane", "endtoend", "world"])]
        only: Vec<String>,
    },
    /// Rebuild the bundled country snapshot (blocker-userspace/data/countries.snapshot).
    Snapshot {
        /// A country-ip-blocks checkout (its `country/<cc>/ipv{4,6}-aggregated.txt`).
        #[arg(long, default_value = "../shared/data/country-ip-blocks")]
        from: PathBuf,
        /// The date of that data, shown by `blocker regions list`.
        #[arg(long, default_value = "2026-02-01")]
        date: String,
    },
    /// Build, then run every test (unit, BPF_PROG_TEST_RUN, network namespaces).
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
            for bench in ["dataplane", "endtoend", "world"] {
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
        Task::Test { args } => {
            setup::all()?;
            require_root("the tests")?;
            // `cargo test` also builds the `blocker` binary the namespace tests start
            // (blocker-userspace has integration tests).
            let mut test_args = vec!["test".to_owned()];
            test_args.extend(args);
            let refs: Vec<&str> = test_args.iter().map(String::as_str).collect();
            cargo_test(&refs)
        }
    }
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

/// Runs `cargo test`, passing its output through, and ends with one summary line
/// over all test binaries ("N passed, N failed").
fn cargo_test(args: &[&str]) -> Result<()> {
    use std::io::{BufRead as _, BufReader};
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut child = Command::new(&cargo)
        .args(args)
        .current_dir(workspace_root())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cargo}"))?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        // "test result: ok. 12 passed; 0 failed; 0 ignored; 0 measured; ..."
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(['.', ';']) {
                let mut words = part.split_whitespace();
                if let (Some(n), Some(what)) = (words.next().and_then(|n| n.parse::<u64>().ok()), words.next()) {
                    match what {
                        "passed" => passed += n,
                        "failed" => failed += n,
                        "ignored" => ignored += n,
                        _ => {}
                    }
                }
            }
        }
    }
    let status = child.wait()?;
    println!("tests: {passed} passed, {failed} failed, {ignored} skipped");
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    if passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}
