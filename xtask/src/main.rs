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
        Task::Test { args } => {
            setup::all()?;
            require_root("the tests")?;
            // The integration tests start the `blocker` binary as a daemon.
            cargo(&["build", "--bins"])?;
            let mut test_args = vec!["test".to_owned()];
            test_args.extend(args);
            let refs: Vec<&str> = test_args.iter().map(String::as_str).collect();
            cargo(&refs)
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
