//! The `blocker` command: daemon (`run`) and CLI (`stats`, `detach`).

use std::{path::PathBuf, process::ExitCode};

use anyhow::Result;
use blocker::{
    daemon::{self, InterfaceOptions, RunOptions},
    formats::RegionSource,
    inspect,
    loader::{self, AttachMode},
    policy::Policy,
    regions::{self, RegionDb},
    stats,
};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "blocker", version, about = "Drop traffic from blocked address ranges in XDP")]
struct Cli {
    /// The daemon's control socket.
    #[arg(long, global = true, env = "BLOCKER_SOCKET", default_value = blocker::control::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// bpffs directory that holds blocker's pinned maps and links.
    #[arg(long, global = true, env = "BLOCKER_PIN_ROOT", default_value = loader::DEFAULT_PIN_ROOT)]
    pin_root: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attach to interfaces and enforce the policy until SIGINT/SIGTERM (SIGHUP reloads).
    Run {
        /// Interface to protect; repeat for several. Without --iface, the policy
        /// comes from the config file.
        #[arg(long = "iface")]
        interfaces: Vec<String>,
        /// TOML config file (default /etc/blocker/blocker.toml when no --iface is given).
        #[arg(long, conflicts_with = "interfaces")]
        config: Option<PathBuf>,
        #[command(flatten)]
        policy: Policy,
        /// Dry run: drop nothing, count what would have been dropped.
        #[arg(long)]
        monitor: bool,
        /// Detach from every interface on SIGINT/SIGTERM (default: the program stays
        /// attached and keeps blocking while no daemon runs).
        #[arg(long)]
        detach_on_exit: bool,
        #[arg(long, value_enum, default_value = "auto")]
        xdp_mode: AttachMode,
        /// aya-log level inside the XDP program (0 off .. 5 trace). Per-packet lines
        /// are at trace level: keep it off in production.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=5))]
        ebpf_log_level: u8,
        /// Do not reload when a source file changes on disk.
        #[arg(long)]
        no_watch: bool,
        /// How long a changed source file must stay unchanged before it is read
        /// (a file written in several steps is read once).
        #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = blocker::watch::parse_duration)]
        watch_debounce: std::time::Duration,
        /// The most kernel memory the classifier maps of a table may take, per
        /// interface; a larger table is refused and the running one kept.
        #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = blocker::config::parse_size)]
        table_memory: u64,
    },
    /// Validate and compile a config file without touching the kernel; print what
    /// would be loaded.
    CheckConfig {
        #[arg(long, default_value = blocker::config::DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Ask the running daemon for its state: interfaces, program ids, lists, last
    /// reload, age of each source.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Make the running daemon reload its lists (and config file) now; prints the
    /// result: success, or the error with nothing changed. A reload reads the
    /// cached copies of URL sources; it never waits for a server.
    Reload {
        /// First make the URL content held back (empty, or shrunk by more than
        /// half; see `blocker status`) the last good copy, then reload.
        #[arg(long)]
        accept_shrink: bool,
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
    /// What happens to these addresses: their regions, the verdict of the policy
    /// given (same options as `run`), and the verdict of the live maps.
    Lookup {
        #[arg(required = true, value_name = "ADDR")]
        addresses: Vec<std::net::IpAddr>,
        #[command(flatten)]
        policy: Policy,
        /// Only compare with this interface's live maps (default: all attached).
        #[arg(long)]
        iface: Option<String>,
    },
    /// The countries blocker knows and their prefixes.
    Regions {
        #[command(subcommand)]
        command: RegionsCommand,
    },
}

#[derive(Subcommand)]
enum RegionsCommand {
    /// One line per country: code, name, IPv4 and IPv6 prefix counts, source.
    List {
        #[command(flatten)]
        source: CountrySource,
    },
    /// A country's details and prefixes.
    Show {
        code: String,
        #[command(flatten)]
        source: CountrySource,
    },
    /// Rebuild the bundled snapshot from a country-ip-blocks directory
    /// (`cargo xtask snapshot` runs this).
    #[command(hide = true)]
    BuildSnapshot {
        #[arg(long)]
        from: PathBuf,
        /// Date of the data, shown by `regions list`.
        #[arg(long)]
        date: String,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(clap::Args)]
struct CountrySource {
    /// Region data to use instead of the bundled snapshot (see `run --help`).
    #[arg(long, value_name = "SOURCE")]
    country_source: Vec<RegionSource>,
    #[arg(long, env = "BLOCKER_CACHE_DIR", default_value = blocker::fetch::DEFAULT_CACHE_DIR)]
    cache_dir: PathBuf,
}

impl CountrySource {
    fn db(self) -> Result<RegionDb> {
        Policy { country_source: self.country_source, cache_dir: self.cache_dir, ..Default::default() }.region_db()
    }
}

/// The options of `run` given on the command line or through the environment
/// (not by default): with a config file they would be ignored, so they are refused.
fn run_options_given(matches: &clap::ArgMatches) -> Vec<String> {
    use clap::parser::ValueSource;
    let Some(("run", sub)) = matches.subcommand() else { return Vec::new() };
    let mut given: Vec<String> = sub
        .ids()
        // Argument groups (a flattened struct's name) are not options.
        .filter(|id| id.as_str() != "config" && !id.as_str().starts_with(char::is_uppercase))
        .filter(|id| matches!(sub.value_source(id.as_str()), Some(ValueSource::CommandLine | ValueSource::EnvVariable)))
        .map(|id| {
            let option = match id.as_str() {
                "interfaces" => "--iface".to_owned(),
                other => format!("--{}", other.replace('_', "-")),
            };
            match sub.value_source(id.as_str()) {
                Some(ValueSource::EnvVariable) => {
                    format!("{option} (set by BLOCKER_{})", id.as_str().to_ascii_uppercase())
                }
                _ => option,
            }
        })
        .collect();
    given.sort();
    given
}

fn main() -> ExitCode {
    use clap::{CommandFactory as _, FromArgMatches as _};
    let matches = Cli::command().get_matches();
    let given_with_config = run_options_given(&matches);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if !matches!(cli.command, Command::Run { .. }) {
        // `blocker regions list | head` should end quietly, as other CLI tools do.
        // SAFETY: restoring the default disposition of a signal.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    init_logging(&cli);
    match run(cli, &given_with_config) {
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
    if stderr_is_journal() {
        // journald stamps and ranks each line itself: "<N>" is the syslog priority
        // prefix it understands (sd-daemon(3)), so `journalctl -p warning` works.
        builder.format(|buf, record| {
            use std::io::Write as _;
            let priority = match record.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                log::Level::Debug | log::Level::Trace => 7,
            };
            writeln!(buf, "<{priority}>{}", record.args())
        });
    } else {
        builder.format_timestamp_secs().format_target(false);
    }
    builder.init();
}

/// Whether stderr is connected to the journal: systemd sets JOURNAL_STREAM to the
/// "device:inode" of the stream it gives the service (systemd.exec(5)).
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd as _;
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else { return false };
    let Ok(file) = std::io::stderr().as_fd().try_clone_to_owned().map(std::fs::File::from) else { return false };
    let Ok(meta) = file.metadata() else { return false };
    use std::os::unix::fs::MetadataExt as _;
    value.to_str() == Some(format!("{}:{}", meta.dev(), meta.ino()).as_str())
}

fn run(cli: Cli, run_options_given: &[String]) -> Result<()> {
    match cli.command {
        Command::Run {
            interfaces,
            config,
            policy,
            monitor,
            detach_on_exit,
            xdp_mode,
            ebpf_log_level,
            no_watch,
            watch_debounce,
            table_memory,
        } => {
            let opts = if interfaces.is_empty() {
                // With a config file every setting comes from the file: an option
                // given beside it would be ignored, so it is refused by name.
                if !run_options_given.is_empty() {
                    anyhow::bail!(
                        "{} given with a config file, which sets everything: put the setting in the file \
                         (see examples/blocker.toml), or give --iface to run without a file",
                        run_options_given.join(", ")
                    );
                }
                let _ =
                    (policy, monitor, detach_on_exit, xdp_mode, ebpf_log_level, no_watch, watch_debounce, table_memory);
                let path = config.unwrap_or_else(|| blocker::config::DEFAULT_CONFIG.into());
                blocker::config::load(&path)?
            } else {
                RunOptions {
                    interfaces: interfaces
                        .into_iter()
                        .map(|name| InterfaceOptions { name, attach_mode: xdp_mode, monitor })
                        .collect(),
                    policy,
                    detach_on_exit,
                    pin_root: cli.pin_root,
                    ebpf_log_level,
                    config: None,
                    socket: Some(cli.socket.clone()),
                    watch_debounce: (!no_watch).then_some(watch_debounce),
                    table_memory,
                }
            };
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let result = runtime.block_on(daemon::run(opts));
            // A URL refresh stalled on a server must not hold the exit for its
            // whole timeout: nothing it could still write matters now.
            runtime.shutdown_timeout(std::time::Duration::from_millis(500));
            result
        }
        Command::Status { json } => {
            let v = blocker::control::request(&cli.socket, blocker::control::Request::Status)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", inspect::status_text(&v));
            }
            Ok(())
        }
        Command::Reload { accept_shrink } => {
            let v = blocker::control::request(&cli.socket, blocker::control::Request::Reload { accept_shrink })?;
            match v["ok"].as_bool() {
                Some(true) => {
                    println!("reloaded: {}", v["summary"].as_str().unwrap_or(""));
                    Ok(())
                }
                _ => anyhow::bail!("{}", v["error"].as_str().unwrap_or("the daemon refused the reload")),
            }
        }
        Command::CheckConfig { config } => {
            let opts = blocker::config::load(&config)?;
            print!("{}", inspect::check_config(&opts)?);
            Ok(())
        }
        Command::Stats { iface, json } => {
            loader::check_privileges()?;
            let ifaces = match iface {
                Some(i) => vec![i],
                None => {
                    let all = loader::pinned_interfaces(&cli.pin_root)?;
                    if all.is_empty() {
                        anyhow::bail!("blocker is not attached anywhere (no pins under {})", cli.pin_root.display());
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
        Command::Lookup { addresses, policy, iface } => {
            print!("{}", inspect::lookup(&addresses, &policy, &cli.pin_root, iface.as_deref())?);
            Ok(())
        }
        Command::Regions { command } => match command {
            RegionsCommand::List { source } => {
                print!("{}", inspect::regions_list(&source.db()?));
                Ok(())
            }
            RegionsCommand::Show { code, source } => {
                print!("{}", inspect::region_show(&source.db()?, &code)?);
                Ok(())
            }
            RegionsCommand::BuildSnapshot { from, date, out } => {
                let db = RegionDb::from_cidr_dir(&from, "ipverse country-ip-blocks (CC0 1.0)")?;
                let bytes = regions::encode_snapshot(&db, "ipverse country-ip-blocks (CC0 1.0)", &date)?;
                std::fs::write(&out, &bytes)?;
                println!("{}: {} countries, {} bytes", out.display(), db.regions.len(), bytes.len());
                Ok(())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory as _;
        super::Cli::command().debug_assert();
    }
}
