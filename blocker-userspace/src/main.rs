//! The `blocker` command: daemon (`run`) and CLI (`stats`, `detach`).

use std::{path::PathBuf, process::ExitCode};

use anyhow::Result;
use blocker::{
    daemon::{self, Policy, RunOptions},
    lists::ListSource,
    loader::{self, AttachMode},
    stats,
};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "blocker", version, about = "Drop traffic from blocked address ranges in XDP")]
struct Cli {
    /// bpffs directory that holds blocker's pinned maps and links.
    #[arg(long, global = true, env = "BLOCKER_PIN_ROOT", default_value = loader::DEFAULT_PIN_ROOT)]
    pin_root: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attach to interfaces and enforce the lists until SIGINT/SIGTERM (SIGHUP reloads).
    Run {
        /// Interface to protect; repeat for several.
        #[arg(long = "iface", required = true)]
        interfaces: Vec<String>,
        /// CIDR list whose sources are dropped: FILE or NAME=FILE.
        #[arg(long, value_name = "[NAME=]FILE")]
        deny: Vec<ListSource>,
        /// CIDR list of exceptions that pass even inside denied ranges.
        #[arg(long, value_name = "[NAME=]FILE")]
        allow: Vec<ListSource>,
        /// CIDR list counted as would-be drops but passed.
        #[arg(long = "monitor-list", value_name = "[NAME=]FILE")]
        monitor_list: Vec<ListSource>,
        /// Dry run: drop nothing, count what would have been dropped.
        #[arg(long)]
        monitor: bool,
        #[arg(long, value_enum, default_value = "auto")]
        xdp_mode: AttachMode,
        /// aya-log level inside the XDP program (0 off .. 5 trace). Per-packet lines
        /// are at trace level: keep it off in production.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=5))]
        ebpf_log_level: u8,
    },
    /// Show drop counters per list, read from the pins (no daemon needed).
    Stats {
        /// Only this interface (default: every interface blocker is attached to).
        #[arg(long)]
        iface: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove the program, its link and its pins from an interface.
    Detach {
        #[arg(long)]
        iface: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("blocker: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(cli: &Cli) {
    // aya::bpf=error: aya warns on every load that the object's BTF is refused
    // (aya-log's MaybeUninit<u8> type name, aya issue #1490); nothing here needs BTF.
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info,aya::bpf=error"));
    if let Command::Run { ebpf_log_level: level @ 1.., .. } = cli.command {
        // Let the records the program was loaded to emit through.
        let filter = ["off", "error", "warn", "info", "debug", "trace"][usize::from(level)];
        builder.parse_filters(&format!("{}={filter}", blocker_common::EBPF_LOG_TARGET));
    }
    builder.format_timestamp(None).format_target(false).init();
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run { interfaces, deny, allow, monitor_list, monitor, xdp_mode, ebpf_log_level } => {
            let opts = RunOptions {
                interfaces,
                policy: Policy { deny, allow, monitor: monitor_list },
                monitor_mode: monitor,
                attach_mode: xdp_mode,
                pin_root: cli.pin_root,
                ebpf_log_level,
            };
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(daemon::run(opts))
        }
        Command::Stats { iface, json } => {
            loader::check_privileges()?;
            let ifaces = match iface {
                Some(i) => vec![i],
                None => {
                    let all = loader::pinned_interfaces(&cli.pin_root)?;
                    if all.is_empty() {
                        anyhow::bail!(
                            "blocker is not attached anywhere (no pins under {})",
                            cli.pin_root.display()
                        );
                    }
                    all
                }
            };
            let mut out = Vec::new();
            for i in &ifaces {
                let c = stats::read(&cli.pin_root, i)?;
                if json {
                    out.push(stats::to_json(i, &c));
                } else {
                    print!("{}", stats::to_text(i, &c));
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "interfaces": out }))?);
            }
            Ok(())
        }
        Command::Detach { iface } => {
            loader::check_privileges()?;
            loader::detach(&cli.pin_root, &iface)?;
            println!("{iface}: detached; program, link and pins removed");
            Ok(())
        }
    }
}
