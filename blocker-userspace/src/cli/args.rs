//! The command line: its arguments, as clap reads them.

use std::path::PathBuf;

use anyhow::Result;
use blocker::source::region::db::RegionDb;
use blocker::{
    control::protocol::DEFAULT_SOCKET,
    dataplane::{link::AttachMode, pins::DEFAULT_PIN_ROOT},
    policy::{
        ports::{PortRule, Ports},
        Policy,
    },
    source::{
        asn::{Asn, AsnSource},
        cidr_list::ListSource,
        region::RegionSource,
        spec::Refresh,
    },
};
use clap::{
    builder::{PossibleValuesParser, TypedValueParser as _},
    Parser, Subcommand,
};

#[derive(Parser)]
#[command(name = "blocker", version, about = "Drop traffic from blocked address ranges in XDP")]
pub(crate) struct Cli {
    /// The daemon's control socket.
    #[arg(long, global = true, env = "BLOCKER_SOCKET", default_value = DEFAULT_SOCKET)]
    pub(crate) socket: PathBuf,
    /// bpffs directory that holds blocker's pinned maps and links.
    #[arg(long, global = true, env = "BLOCKER_PIN_ROOT", default_value = DEFAULT_PIN_ROOT)]
    pub(crate) pin_root: PathBuf,
    #[command(subcommand)]
    pub(crate) command: Command,
}

// Parsed once per process: the size of its largest variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub(crate) enum Command {
    /// Attach to interfaces and enforce the policy until SIGINT/SIGTERM (SIGHUP reloads).
    Run(RunArgs),
    /// Validate and compile a config file without touching the kernel; print what
    /// would be loaded.
    CheckConfig {
        #[arg(long, default_value = blocker::config::DEFAULT_CONFIG)]
        config: PathBuf,
        /// The report as JSON (a refused file: `{"valid":false,"error":...}`).
        #[arg(long)]
        json: bool,
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
    /// Stream the sampled drop events live from the running daemon: time,
    /// interface, source, list, verdict, protocol and port, frame length.
    Events {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Only this interface's events.
        #[arg(long)]
        iface: Option<String>,
        /// Only the events of the list with this name (countries: country:CC).
        #[arg(long)]
        list: Option<String>,
    },
    /// A live view, refreshed every second: drop and pass rates per interface,
    /// the top lists and countries, the top sources and their /24 or /48 from
    /// the sampled events. `q` quits. Not on a terminal: one snapshot.
    Top {
        /// Only this interface (default: every interface blocker is attached to).
        #[arg(long)]
        iface: Option<String>,
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
        policy: PolicyArgs,
        /// Only compare with this interface's live maps (default: all attached).
        #[arg(long)]
        iface: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Ban addresses or ranges now, for a time or until unbanned, without
    /// reloading the lists; returns once every interface enforces the bans.
    Ban(BanArgs),
    /// Remove bans: the targets given (every origin's), or only one origin's
    /// bans (with --origin: of the targets given, or all of them).
    Unban {
        #[arg(value_name = "ADDR|CIDR", required_unless_present = "origin")]
        targets: Vec<String>,
        /// Only this origin's bans: of the targets given, or every one of them
        /// (fail2ban's flush). Another origin's ban of the same target stays.
        #[arg(long, value_name = "NAME")]
        origin: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The bans in force: each with its remaining time, origin, reason and packets.
    Bans {
        /// Only the bans of this origin.
        #[arg(long, value_name = "NAME")]
        origin: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The countries blocker knows and their prefixes.
    Regions {
        #[command(subcommand)]
        command: RegionsCommand,
    },
    /// One signed policy for a fleet of hosts.
    Fleet {
        #[command(subcommand)]
        command: FleetCommand,
    },
}

#[derive(Subcommand)]
pub(crate) enum FleetCommand {
    /// Make the fleet's key pair (minisign's format, unencrypted): the secret
    /// key signs bundles (keep it on the publishing host, readable by its owner
    /// only), the public key goes to every host. Never overwrites a file.
    Keygen {
        #[arg(long, value_name = "FILE")]
        secret_key: PathBuf,
        #[arg(long, value_name = "FILE")]
        public_key: PathBuf,
    },
    /// Check a config as `check-config` does, store it with every local file it
    /// names as the next revision, signed, and point GROUP (default: every
    /// group, and `default`) at it. Prints the revision.
    Publish {
        #[command(flatten)]
        at: FleetAt,
        /// The policy: a config file with [policy], [[scope]] and [outbound] only.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        #[arg(long, value_name = "FILE")]
        secret_key: PathBuf,
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
    },
    /// Point GROUP at a published revision (a staged rollout: canary first).
    Promote {
        #[command(flatten)]
        at: FleetAt,
        #[arg(long)]
        revision: u64,
        #[arg(long, value_name = "GROUP")]
        group: String,
    },
    /// Point GROUP back at an older revision, with a rollback signed by the
    /// fleet's key (hosts refuse an older revision otherwise).
    Rollback {
        #[command(flatten)]
        at: FleetAt,
        #[arg(long)]
        revision: u64,
        #[arg(long, value_name = "GROUP")]
        group: String,
        #[arg(long, value_name = "FILE")]
        secret_key: PathBuf,
    },
    /// The groups' revisions and every host: its group, applied revision,
    /// when, its error, and whether it is alive (its lease holds).
    Status {
        #[command(flatten)]
        at: FleetAt,
        #[arg(long)]
        json: bool,
    },
}

/// Where a fleet lives.
#[derive(clap::Args)]
pub(crate) struct FleetAt {
    /// etcd client URLs, comma-separated (http://HOST:PORT or HOST:PORT).
    #[arg(long, value_name = "URLS", value_delimiter = ',', required = true)]
    pub(crate) etcd: Vec<String>,
    #[arg(long, value_name = "NAME")]
    pub(crate) fleet: String,
    /// A CA certificate to trust for https:// endpoints.
    #[arg(long, value_name = "FILE")]
    pub(crate) etcd_ca_cert: Option<PathBuf>,
    /// A client certificate for etcd (with --etcd-key).
    #[arg(long, value_name = "FILE", requires = "etcd_key")]
    pub(crate) etcd_cert: Option<PathBuf>,
    #[arg(long, value_name = "FILE", requires = "etcd_cert")]
    pub(crate) etcd_key: Option<PathBuf>,
}

/// The options of `blocker run`.
#[derive(clap::Args)]
pub(crate) struct RunArgs {
    /// Interface to protect; repeat for several. Without --iface, the policy
    /// comes from the config file.
    #[arg(long = "iface")]
    pub(crate) interfaces: Vec<String>,
    /// TOML config file (default /etc/blocker/blocker.toml when no --iface is given).
    #[arg(long, conflicts_with = "interfaces")]
    pub(crate) config: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) policy: PolicyArgs,
    /// Dry run: drop nothing, count what would have been dropped.
    #[arg(long)]
    pub(crate) monitor: bool,
    /// Detach from every interface on SIGINT/SIGTERM (default: the program stays
    /// attached and keeps blocking while no daemon runs).
    #[arg(long)]
    pub(crate) detach_on_exit: bool,
    #[arg(
        long,
        default_value = "auto",
        value_parser = PossibleValuesParser::new(AttachMode::NAMES).try_map(|s| s.parse::<AttachMode>())
    )]
    pub(crate) xdp_mode: AttachMode,
    /// aya-log level inside the XDP program (0 off .. 5 trace). Per-packet lines
    /// are at trace level: keep it off in production.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=5))]
    pub(crate) ebpf_log_level: u8,
    /// Do not reload when a source file changes on disk.
    #[arg(long)]
    pub(crate) no_watch: bool,
    /// How long a changed source file must stay unchanged before it is read
    /// (a file written in several steps is read once).
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = blocker::clock::parse_duration)]
    pub(crate) watch_debounce: std::time::Duration,
    /// The most kernel memory the classifier maps of a table may take, per
    /// interface; a larger table is refused and the running one kept.
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = blocker::config::parse_size)]
    pub(crate) table_memory: u64,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (a port alone:
    /// loopback). Off by default.
    #[arg(long, value_name = "[ADDR:]PORT", value_parser = |s: &str| blocker::metrics::server::parse_listen(s).map_err(|e| e.to_string()))]
    pub(crate) metrics_listen: Option<std::net::SocketAddr>,
    /// Sample at most this many dropped or monitored packets per second and CPU,
    /// per interface, as events for `blocker events` and `blocker top` (0: off).
    #[arg(long, value_name = "N", default_value_t = blocker::events::DEFAULT_EVENTS_PER_SECOND,
          value_parser = clap::value_parser!(u32).range(0..=i64::from(blocker::dataplane::maps::MAX_EVENTS_PER_SECOND)))]
    pub(crate) events_per_second: u32,
    /// Answer at most this many rejected packets per second on each interface
    /// (TCP RST, ICMP unreachable); past it they are dropped unanswered (0: none).
    #[arg(long, value_name = "N", default_value_t = blocker::dataplane::maps::DEFAULT_REJECT_PER_SECOND,
          value_parser = clap::value_parser!(u32).range(0..=i64::from(blocker::dataplane::maps::MAX_REJECT_PER_SECOND)))]
    pub(crate) reject_per_second: u32,
    /// Where the bans' state file is kept: it carries bans across a reboot.
    #[arg(long, value_name = "DIR", env = "BLOCKER_STATE_DIR", default_value = blocker::decisions::DEFAULT_STATE_DIR)]
    pub(crate) state_dir: PathBuf,
    /// Enforce a CrowdSec LAPI's decisions (a bouncer): its URL, like
    /// http://127.0.0.1:8080/. The config file's [crowdsec] has every setting.
    #[arg(long, value_name = "URL", requires = "crowdsec_api_key_file")]
    pub(crate) crowdsec_lapi_url: Option<String>,
    /// The file holding the bouncer's API key (`cscli bouncers add blocker`).
    #[arg(long, value_name = "FILE", requires = "crowdsec_lapi_url")]
    pub(crate) crowdsec_api_key_file: Option<PathBuf>,
    /// How often the LAPI is asked for new decisions.
    #[arg(long, value_name = "DURATION", requires = "crowdsec_lapi_url")]
    pub(crate) crowdsec_update_frequency: Option<String>,
    /// How often every decision is pulled again, which brings those the
    /// LAPI's deltas missed (default 5m; 0: never).
    #[arg(long, value_name = "DURATION", requires = "crowdsec_lapi_url")]
    pub(crate) crowdsec_full_pull_every: Option<String>,
    /// Enforce a fleet's signed policy, kept in etcd: the etcd endpoints
    /// (comma-separated). The policy options are then refused: the bundle is
    /// the policy. The config file's [fleet] has every setting.
    #[arg(long, value_name = "URLS", requires_all = ["fleet", "fleet_public_key"])]
    pub(crate) fleet_etcd: Option<String>,
    /// The fleet's name (as `blocker fleet publish --fleet` gave it).
    #[arg(long, value_name = "NAME", requires = "fleet_etcd")]
    pub(crate) fleet: Option<String>,
    /// The fleet's public key (`blocker fleet keygen`): bundles it did not sign are refused.
    #[arg(long, value_name = "FILE", requires = "fleet_etcd")]
    pub(crate) fleet_public_key: Option<PathBuf>,
    /// The group whose pointer this host follows (canary first, then the rest).
    #[arg(long, value_name = "GROUP", requires = "fleet_etcd")]
    pub(crate) fleet_group: Option<String>,
    /// This host's name in the fleet's status (default: the system's host name).
    #[arg(long, value_name = "NAME", requires = "fleet_etcd")]
    pub(crate) host_name: Option<String>,
    /// With no bundle yet (none kept on disk, none in etcd or etcd down),
    /// wait for the first one before attaching, instead of refusing to start.
    #[arg(long, requires = "fleet_etcd")]
    pub(crate) fleet_wait: bool,
    /// A CA certificate to trust for https:// etcd endpoints.
    #[arg(long, value_name = "FILE", requires = "fleet_etcd")]
    pub(crate) fleet_etcd_ca_cert: Option<PathBuf>,
    /// A client certificate for etcd (with --fleet-etcd-key).
    #[arg(long, value_name = "FILE", requires = "fleet_etcd_key")]
    pub(crate) fleet_etcd_cert: Option<PathBuf>,
    #[arg(long, value_name = "FILE", requires = "fleet_etcd_cert")]
    pub(crate) fleet_etcd_key: Option<PathBuf>,
}

/// The options of `blocker ban`.
#[derive(clap::Args)]
pub(crate) struct BanArgs {
    /// Addresses or CIDRs to ban.
    #[arg(value_name = "ADDR|CIDR", required_unless_present = "from")]
    pub(crate) targets: Vec<String>,
    /// More targets, one per line (`#` and `;` start comments; `-`: standard input).
    #[arg(long, value_name = "FILE")]
    pub(crate) from: Option<PathBuf>,
    /// How long the ban holds (like 90s, 15m, 4h, 7d; a bare number is
    /// seconds). Without it, until `blocker unban`.
    #[arg(long = "for", value_name = "DURATION", value_parser = blocker::clock::parse_duration)]
    pub(crate) duration: Option<std::time::Duration>,
    /// Why, shown by `blocker bans`.
    #[arg(long, value_name = "TEXT")]
    pub(crate) reason: Option<String>,
    /// Who decided (counted per origin in stats and the metrics).
    #[arg(long, value_name = "NAME", default_value = blocker::decisions::DEFAULT_ORIGIN)]
    pub(crate) origin: String,
    /// Answer the banned sources' packets (TCP RST, ICMP unreachable) instead
    /// of dropping them in silence.
    #[arg(long)]
    pub(crate) reject: bool,
    /// Ban even 0.0.0.0/0 or ::/0, or a range that holds the SSH client this
    /// command runs from.
    #[arg(long)]
    pub(crate) force: bool,
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Subcommand)]
pub(crate) enum RegionsCommand {
    /// One line per country: code, name, IPv4 and IPv6 prefix counts, source.
    /// With --asn, one line per autonomous system: number, prefix counts, size,
    /// organisation.
    List {
        #[command(flatten)]
        source: CountrySource,
        /// List the autonomous systems of the ASN data instead of the countries.
        #[arg(long)]
        asn: bool,
        #[arg(long)]
        json: bool,
    },
    /// A country's details and prefixes (`DE`), or an autonomous system's (`AS4134`).
    Show {
        #[arg(value_name = "CC|ASN")]
        code: String,
        #[command(flatten)]
        source: CountrySource,
        #[arg(long)]
        json: bool,
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
    /// Rebuild the bundled ASN snapshot from ASN sources (`cargo xtask
    /// snapshot-asn` runs this).
    #[command(hide = true)]
    BuildAsnSnapshot {
        #[arg(long, required = true)]
        from: Vec<blocker::source::asn::AsnSource>,
        /// Date of the data, shown by `regions list --asn` and `check-config`.
        #[arg(long)]
        date: String,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(clap::Args)]
pub(crate) struct CountrySource {
    /// Region data to use instead of the bundled snapshot (see `run --help`).
    #[arg(long, value_name = "SOURCE")]
    pub(crate) country_source: Vec<RegionSource>,
    /// ASN data to use instead of the bundled snapshot (see `run --help`).
    #[arg(long, value_name = "SOURCE")]
    pub(crate) asn_source: Vec<AsnSource>,
    #[arg(long, env = "BLOCKER_CACHE_DIR", default_value = blocker::source::fetch::DEFAULT_CACHE_DIR)]
    pub(crate) cache_dir: PathBuf,
}

impl CountrySource {
    fn policy(self) -> Policy {
        Policy {
            country_source: self.country_source,
            asn_source: self.asn_source,
            cache_dir: self.cache_dir,
            ..Default::default()
        }
    }

    pub(crate) fn db(self) -> Result<RegionDb> {
        Ok(self.policy().region_db()?)
    }

    pub(crate) fn asn_db(self) -> Result<blocker::source::asn::db::AsnDb> {
        Ok(self.policy().asn_db()?)
    }
}

/// The options of `run` given on the command line or through the environment
/// (not by default): with a config file they would be ignored, so they are refused.
pub(crate) fn run_options_given(matches: &clap::ArgMatches) -> Vec<String> {
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

/// Policy options shared by `blocker run` and `blocker lookup`.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct PolicyArgs {
    /// CIDR list whose sources are dropped: FILE or NAME=FILE.
    #[arg(long, value_name = "[NAME=]FILE")]
    pub(crate) deny: Vec<ListSource>,
    /// CIDR list whose sources are rejected: dropped and answered (TCP RST,
    /// ICMP administratively prohibited), so clients fail at once.
    #[arg(long, value_name = "[NAME=]FILE")]
    pub(crate) reject: Vec<ListSource>,
    /// CIDR list of exceptions that pass even inside denied ranges or countries.
    #[arg(long, value_name = "[NAME=]FILE")]
    pub(crate) allow: Vec<ListSource>,
    /// CIDR list counted as would-be drops but passed.
    #[arg(long = "monitor-list", value_name = "[NAME=]FILE")]
    pub(crate) monitor_list: Vec<ListSource>,
    /// Countries whose addresses are dropped (ISO codes, comma-separated).
    #[arg(long, value_name = "CC,CC", value_delimiter = ',')]
    pub(crate) deny_country: Vec<String>,
    /// Allowlist mode: only these countries pass; every other source is dropped
    /// (allow exceptions still pass, deny lists still drop).
    #[arg(long, value_name = "CC,CC", value_delimiter = ',')]
    pub(crate) allow_country: Vec<String>,
    /// Countries whose addresses are rejected (dropped and answered).
    #[arg(long, value_name = "CC,CC", value_delimiter = ',')]
    pub(crate) reject_country: Vec<String>,
    /// Autonomous systems whose addresses are dropped (AS4134 or 4134, comma-separated).
    #[arg(long, value_name = "ASN,ASN", value_delimiter = ',')]
    pub(crate) deny_asn: Vec<Asn>,
    /// Autonomous systems whose addresses are rejected (dropped and answered).
    #[arg(long, value_name = "ASN,ASN", value_delimiter = ',')]
    pub(crate) reject_asn: Vec<Asn>,
    /// Autonomous systems whose addresses pass even inside denied ranges,
    /// countries or systems (exceptions, like --allow).
    #[arg(long, value_name = "ASN,ASN", value_delimiter = ',')]
    pub(crate) allow_asn: Vec<Asn>,
    /// Allowlist mode by network: only these systems (and any --allow-country)
    /// pass; every other source is dropped. Needs --never-block, like --allow-country.
    #[arg(long, value_name = "ASN,ASN", value_delimiter = ',')]
    pub(crate) allow_only_asn: Vec<Asn>,
    /// Where ASN data comes from instead of the bundled snapshot:
    /// `[optional:][refresh=DURATION:][mmdb:|csv:|tsv:]PATH|URL` (format detected
    /// when not given). Repeat to merge several.
    #[arg(long, value_name = "SOURCE")]
    pub(crate) asn_source: Vec<AsnSource>,
    /// Systems this host's outgoing packets are dropped to.
    #[arg(long, value_name = "ASN,ASN", value_delimiter = ',')]
    pub(crate) deny_asn_outbound: Vec<Asn>,
    /// Systems this host's outgoing packets are rejected to.
    #[arg(long, value_name = "ASN,ASN", value_delimiter = ',')]
    pub(crate) reject_asn_outbound: Vec<Asn>,
    /// Systems that stay reachable inside outbound-denied ranges, countries or systems.
    #[arg(long, value_name = "ASN,ASN", value_delimiter = ',')]
    pub(crate) allow_asn_outbound: Vec<Asn>,
    /// CIDR list of destinations this host's outgoing packets are dropped to
    /// (tc egress): FILE or NAME=FILE.
    #[arg(long, value_name = "[NAME=]FILE")]
    pub(crate) deny_outbound: Vec<ListSource>,
    /// CIDR list of destinations this host's outgoing packets are rejected to:
    /// a local `connect` fails at once with "connection refused".
    #[arg(long, value_name = "[NAME=]FILE")]
    pub(crate) reject_outbound: Vec<ListSource>,
    /// CIDR list of destinations that stay reachable inside outbound-denied
    /// ranges or countries.
    #[arg(long, value_name = "[NAME=]FILE")]
    pub(crate) allow_outbound: Vec<ListSource>,
    /// Countries this host's outgoing packets are dropped to.
    #[arg(long, value_name = "CC,CC", value_delimiter = ',')]
    pub(crate) deny_country_outbound: Vec<String>,
    /// Countries this host's outgoing packets are rejected to.
    #[arg(long, value_name = "CC,CC", value_delimiter = ',')]
    pub(crate) reject_country_outbound: Vec<String>,
    /// Where country prefixes come from instead of the bundled snapshot:
    /// `[optional:][refresh=DURATION:][rir:|csv:|mmdb:|cidr-dir:]PATH|URL` (format detected when not
    /// given). Repeat to merge several.
    #[arg(long, value_name = "SOURCE")]
    pub(crate) country_source: Vec<RegionSource>,
    /// Ranges never dropped, whatever the lists say (management networks). Loopback,
    /// link-local and the SSH client address of the session that starts blocker
    /// are added unless --no-default-never-block.
    #[arg(long, value_name = "CIDR,CIDR", value_delimiter = ',')]
    pub(crate) never_block: Vec<String>,
    /// Do not add loopback, link-local and the SSH client to the never-block ranges.
    #[arg(long)]
    pub(crate) no_default_never_block: bool,
    /// Allowlist mode (--allow-country) drops everything else, including a remote
    /// operator: it refuses to start without --never-block unless this is given.
    #[arg(long)]
    pub(crate) confirm_allowlist_without_never_block: bool,
    /// How often the daemon fetches URL sources again ("off", or like 30m, 6h, 1d);
    /// a source can set its own with a `refresh=DURATION:` prefix. Content that did
    /// not change triggers no reload.
    #[arg(long, value_name = "DURATION", default_value = "6h")]
    pub(crate) url_refresh: Refresh,
    /// Where downloaded lists and databases are cached (last good copies).
    #[arg(long, env = "BLOCKER_CACHE_DIR", default_value = blocker::source::fetch::DEFAULT_CACHE_DIR)]
    pub(crate) cache_dir: PathBuf,
    /// Apply fetched URL content even when it is empty or lost more than half of
    /// its prefixes (by default it is held back, and the last good copy used,
    /// until `blocker reload --accept-shrink`).
    #[arg(long)]
    pub(crate) accept_shrink: bool,
    /// Apply the policy only to this traffic: `tcp:443,8443`, `udp:53`,
    /// `tcp:all-except:22`, `sctp` (every port). Repeat for several; other traffic
    /// passes, counted as passed. The config file can hold several scopes.
    #[arg(long, value_name = "PROTO[:PORTS|:all-except:PORTS]")]
    pub(crate) ports: Vec<PortRule>,
}

impl From<PolicyArgs> for Policy {
    fn from(a: PolicyArgs) -> Policy {
        Policy {
            deny: a.deny,
            reject: a.reject,
            reject_country: a.reject_country,
            allow: a.allow,
            monitor_list: a.monitor_list,
            deny_country: a.deny_country,
            allow_country: a.allow_country,
            deny_asn: a.deny_asn,
            reject_asn: a.reject_asn,
            allow_asn: a.allow_asn,
            allow_only_asn: a.allow_only_asn,
            asn_source: a.asn_source,
            country_source: a.country_source,
            never_block: a.never_block,
            no_default_never_block: a.no_default_never_block,
            confirm_allowlist_without_never_block: a.confirm_allowlist_without_never_block,
            url_refresh: a.url_refresh,
            cache_dir: a.cache_dir,
            accept_shrink: a.accept_shrink,
            ports: Ports(a.ports),
            scopes: Vec::new(),
            outbound: blocker::policy::Scope {
                name: blocker::policy::OUTBOUND_SCOPE.into(),
                deny: a.deny_outbound,
                reject: a.reject_outbound,
                allow: a.allow_outbound,
                deny_country: a.deny_country_outbound,
                reject_country: a.reject_country_outbound,
                deny_asn: a.deny_asn_outbound,
                reject_asn: a.reject_asn_outbound,
                allow_asn: a.allow_asn_outbound,
                ..Default::default()
            },
        }
    }
}
