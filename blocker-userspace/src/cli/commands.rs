//! One function per subcommand.

use std::path::Path;

use anyhow::{bail, Result};
use blocker::{
    config::{InterfaceOptions, RunOptions, DEFAULT_CONFIG},
    control::{
        client,
        protocol::{InterfaceStats, StatsReply, StreamItem},
        report::{AsnDetail, AsnList, ConfigRefusal, RegionDetail, RegionsList},
    },
    dataplane::{
        link,
        maps::{read_pinned_counters, Mode},
        object, pins,
    },
    events::EventFilter,
    source::{
        asn::Asn,
        region::{db::RegionDb, snapshot},
    },
};

use super::{
    args::{BanArgs, Cli, Command, FleetCommand, RegionsCommand, RunArgs},
    inspect, render,
};

pub(crate) fn run(cli: Cli, run_options_given: &[String]) -> Result<()> {
    let Cli { socket, pin_root, command } = cli;
    match command {
        Command::Run(args) => run_daemon(args, &socket, &pin_root, run_options_given),
        Command::Status { json } => status(&socket, json),
        Command::Reload { accept_shrink } => reload(&socket, accept_shrink),
        Command::CheckConfig { config, json } => check_config(&config, json),
        Command::Stats { iface, json } => stats(&pin_root, iface, json),
        Command::Events { json, iface, list } => events(&socket, EventFilter { iface, list }, json),
        Command::Top { iface } => super::top::run(&socket, &pin_root, iface),
        Command::Detach { iface } => {
            object::check_privileges()?;
            link::detach(&pin_root, &iface)?;
            println!("{iface}: detached; program, link and pins removed");
            Ok(())
        }
        Command::Lookup { addresses, policy, iface, json } => {
            let report = inspect::lookup(&addresses, &policy.into(), &pin_root, iface.as_deref())?;
            print_as(json, &report, render::lookup_text)
        }
        Command::Regions { command } => regions(command),
        Command::Fleet { command } => fleet(command),
        Command::Ban(args) => ban(&socket, args),
        Command::Unban { targets, origin, json } => {
            let reply = client::unban(&socket, targets, origin)?;
            print_as(json, &reply, render::unban_text)
        }
        Command::Bans { origin, json } => {
            let reply = client::bans(&socket, origin)?;
            print_as(json, &reply, render::bans_text)
        }
    }
}

/// `blocker ban`: the targets given and those of `--from`, sent in requests
/// of bounded size.
fn ban(socket: &Path, args: BanArgs) -> Result<()> {
    let mut targets = args.targets;
    if let Some(path) = &args.from {
        targets.extend(ban_file_targets(path)?);
    }
    if targets.is_empty() {
        bail!("{}", blocker::decisions::BanError::Empty);
    }
    let request = blocker::control::protocol::BanRequest {
        targets,
        for_secs: args.duration.map(|d| d.as_secs().max(1)),
        reason: args.reason,
        origin: Some(args.origin),
        reject: args.reject,
        force: args.force,
        client: blocker::decisions::ssh_client().map(|c| c.to_string()),
    };
    let replies = client::ban(socket, request)?;
    print_as(args.json, &replies, render::ban_text)
}

/// The targets of a `--from` file: one per line, comments and blanks skipped,
/// each checked here so that an error names its line.
fn ban_file_targets(path: &Path) -> Result<Vec<String>> {
    use std::io::Read as _;
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let body = line.split(['#', ';']).next().unwrap_or("").trim();
        if body.is_empty() {
            continue;
        }
        let target = body.split_whitespace().next().unwrap_or(body);
        blocker::decisions::parse_target(target)
            .map_err(|e| anyhow::anyhow!("{} line {}: {e}; nothing was banned", path.display(), i + 1))?;
        out.push(target.to_owned());
    }
    Ok(out)
}

fn run_daemon(args: RunArgs, socket: &Path, pin_root: &Path, run_options_given: &[String]) -> Result<()> {
    let opts = if args.interfaces.is_empty() {
        // With a config file every setting comes from the file: an option given
        // beside it would be ignored, so it is refused by name.
        if !run_options_given.is_empty() {
            bail!(
                "{} given with a config file, which sets everything: put the setting in the file \
                 (see examples/blocker.toml), or give --iface to run without a file",
                run_options_given.join(", ")
            );
        }
        let path = args.config.unwrap_or_else(|| DEFAULT_CONFIG.into());
        blocker::config::load(&path)?
    } else {
        let mode = if args.monitor { Mode::Monitor } else { Mode::Enforce };
        let crowdsec = match &args.crowdsec_lapi_url {
            None => None,
            Some(url) => Some(
                blocker::decisions::crowdsec::CrowdsecSection {
                    lapi_url: Some(url.clone()),
                    api_key_file: args.crowdsec_api_key_file.clone(),
                    update_frequency: args.crowdsec_update_frequency.clone(),
                    full_pull_every: args.crowdsec_full_pull_every.clone(),
                    ..Default::default()
                }
                .check("--crowdsec-")
                .map_err(|e| anyhow::anyhow!("{}: {}", e.key.replace('_', "-"), e.reason))?,
            ),
        };
        let fleet = match &args.fleet_etcd {
            None => None,
            Some(urls) => {
                let section = blocker::fleet::host::FleetSection {
                    etcd: Some(blocker::fleet::host::Endpoints::One(urls.clone())),
                    name: args.fleet.clone(),
                    public_key: args.fleet_public_key.clone(),
                    group: args.fleet_group.clone(),
                    host_name: args.host_name.clone(),
                    wait: Some(args.fleet_wait),
                    ca_cert: args.fleet_etcd_ca_cert.clone(),
                    cert: args.fleet_etcd_cert.clone(),
                    key: args.fleet_etcd_key.clone(),
                };
                let option = |k: &str| match k {
                    "etcd" => "--fleet-etcd".to_owned(),
                    "name" => "--fleet".to_owned(),
                    "host_name" => "--host-name".to_owned(),
                    "group" => "--fleet-group".to_owned(),
                    "public_key" => "--fleet-public-key".to_owned(),
                    other => format!("--fleet-etcd-{}", other.replace('_', "-")),
                };
                Some(section.check(option)?)
            }
        };
        let policy: blocker::policy::Policy = args.policy.into();
        if fleet.is_some() && policy.names_anything() {
            bail!(
                "with --fleet-etcd the policy is the fleet's bundle: drop the policy options (--deny, \
                 --deny-country, ...) and publish them (`blocker fleet publish --config FILE`)"
            );
        }
        RunOptions {
            fleet,
            crowdsec,
            interfaces: args
                .interfaces
                .into_iter()
                .map(|name| InterfaceOptions { name, attach_mode: args.xdp_mode, mode })
                .collect(),
            policy,
            detach_on_exit: args.detach_on_exit,
            pin_root: pin_root.to_owned(),
            state_dir: args.state_dir,
            ebpf_log_level: args.ebpf_log_level,
            config: None,
            socket: Some(socket.to_owned()),
            watch_debounce: (!args.no_watch).then_some(args.watch_debounce),
            table_memory: args.table_memory,
            metrics_listen: args.metrics_listen,
            events_per_second: args.events_per_second,
            reject_per_second: args.reject_per_second,
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let result = runtime.block_on(blocker::daemon::run(opts));
    // A URL refresh stalled on a server must not hold the exit for its whole
    // timeout: nothing it could still write matters now.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    result
}

fn status(socket: &Path, json: bool) -> Result<()> {
    let reply = client::status(socket)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
    } else {
        print!("{}", render::status_text(&reply));
    }
    Ok(())
}

fn reload(socket: &Path, accept_shrink: bool) -> Result<()> {
    let reply = client::reload(socket, accept_shrink)?;
    println!("reloaded: {}", reply.summary);
    Ok(())
}

/// The interface given, or every interface blocker has pins for.
pub(crate) fn interfaces_to_read(pin_root: &Path, iface: Option<String>) -> Result<Vec<String>> {
    if let Some(i) = iface {
        return Ok(vec![i]);
    }
    let all = pins::pinned_interfaces(pin_root)?;
    if all.is_empty() {
        bail!("blocker is not attached anywhere (no pins under {})", pin_root.display());
    }
    Ok(all)
}

/// Counters read from the pins: no daemon needed.
fn stats(pin_root: &Path, iface: Option<String>, json: bool) -> Result<()> {
    object::check_privileges()?;
    let ifaces = interfaces_to_read(pin_root, iface)?;
    let mut reply = StatsReply { ok: true, interfaces: Vec::new(), errors: Vec::new() };
    for i in &ifaces {
        let stats = InterfaceStats::new(i, &read_pinned_counters(pin_root, i)?);
        if !json {
            print!("{}", render::stats_text(&stats));
        }
        reply.interfaces.push(stats);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
    }
    Ok(())
}

/// Streams events until the daemon ends the stream or the reader goes away.
fn events(socket: &Path, filter: EventFilter, json: bool) -> Result<()> {
    use std::io::Write as _;
    let mut stream = client::events(socket, &filter)?;
    let header = stream.header.clone();
    let scope = match &filter.iface {
        Some(i) => i.clone(),
        None => header.interfaces.join(", "),
    };
    eprintln!(
        "blocker: streaming drop events from {scope} (sampled: at most {} per second and CPU on each interface); \
         Ctrl-C stops",
        header.events_per_second
    );
    let mut out = std::io::stdout().lock();
    for item in stream.by_ref() {
        match item? {
            StreamItem::Event(e) => {
                if json {
                    writeln!(out, "{}", serde_json::to_string(&e)?)?;
                } else {
                    writeln!(out, "{}", render::event_line(&e))?;
                }
                out.flush()?;
            }
            StreamItem::Missed { missed } => {
                eprintln!("blocker: {missed} events missed: this terminal read them too slowly");
            }
        }
    }
    bail!("the daemon ended the event stream (it stopped?)")
}

/// Prints `report` as pretty JSON, or as `text` renders it.
fn print_as<T: serde::Serialize>(json: bool, report: &T, text: impl Fn(&T) -> String) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", text(report));
    }
    Ok(())
}

/// `check-config`: the report, and an exit status that says whether `run`
/// would start with the file.
fn check_config(path: &Path, json: bool) -> Result<()> {
    let report = blocker::config::load(path).map_err(anyhow::Error::from).and_then(|opts| inspect::check_config(&opts));
    match report {
        Ok(report) => {
            print_as(json, &report, render::check_config_text)?;
            match &report.error {
                Some(e) => bail!("{e}"),
                None => Ok(()),
            }
        }
        Err(e) if json => {
            let refusal = ConfigRefusal { config: path.display().to_string(), valid: false, error: format!("{e:#}") };
            println!("{}", serde_json::to_string_pretty(&refusal)?);
            Err(e)
        }
        Err(e) => Err(e),
    }
}

fn fleet(command: FleetCommand) -> Result<()> {
    match command {
        FleetCommand::Keygen { secret_key, public_key } => {
            let id = blocker::fleet::keygen(&secret_key, &public_key)?;
            println!(
                "key {id}: secret key {} (keep it on the publishing host), public key {} (for every host)",
                secret_key.display(),
                public_key.display()
            );
        }
        FleetCommand::Publish { at, config, secret_key, group } => {
            use blocker::fleet::{bundle::Bundle, sign::SecretKey, store};
            let key = SecretKey::parse(&blocker::fleet::read_key_file(&secret_key)?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", secret_key.display()))?;
            if let Some(g) = &group {
                store::check_name("group", g)?;
            }
            // Built and checked before anything is stored: a refused config
            // takes no revision. The revision is set once it is reserved.
            let mut bundle = Bundle::build(&config, &at.fleet, 0)?;
            let etcd = fleet_etcd(&at)?;
            let fleet = store::FleetStore::new(&etcd, &at.fleet)?;
            let revision = fleet.reserve_revision()?;
            bundle.manifest.revision = revision;
            fleet.store_bundle(&bundle, &bundle.sign(&key))?;
            let groups: Vec<String> = match group {
                Some(g) => vec![g],
                None => {
                    let mut all: Vec<String> = fleet.groups()?.into_iter().map(|(g, _)| g).collect();
                    if !all.iter().any(|g| g == store::DEFAULT_GROUP) {
                        all.push(store::DEFAULT_GROUP.into());
                    }
                    all
                }
            };
            for g in &groups {
                fleet.point(g, &store::Pointer { revision, rollback: None, published: revision })?;
            }
            println!(
                "fleet {} revision {revision}: {} files, signed by key {}; groups {} point at it",
                at.fleet,
                bundle.manifest.files.len(),
                key.public().id(),
                groups.join(", ")
            );
        }
        FleetCommand::Promote { at, revision, group } => {
            let etcd = fleet_etcd(&at)?;
            let fleet = blocker::fleet::store::FleetStore::new(&etcd, &at.fleet)?;
            fleet.bundle_head(revision)?;
            let pointer_now = fleet.pointer(&group)?.map(|(p, _)| p);
            if let Some(p) = pointer_now.as_ref().filter(|p| p.rollback.is_some() && revision <= p.published) {
                bail!(
                    "group {group} was rolled back to revision {} (rollback number {}): its hosts refuse revision \
                     {revision} now; publish it again (`blocker fleet publish`) to move them forward",
                    p.revision,
                    p.published
                );
            }
            let current = pointer_now.map(|p| p.revision);
            if current.is_some_and(|c| c > revision) {
                bail!(
                    "group {group} is at revision {}, newer than {revision}: going back is `blocker fleet rollback`",
                    current.unwrap_or_default()
                );
            }
            let pointer = blocker::fleet::store::Pointer { revision, rollback: None, published: fleet.latest()? };
            fleet.point(&group, &pointer)?;
            println!("fleet {} group {group}: revision {revision}", at.fleet);
        }
        FleetCommand::Rollback { at, revision, group, secret_key } => {
            let key = blocker::fleet::sign::SecretKey::parse(&blocker::fleet::read_key_file(&secret_key)?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", secret_key.display()))?;
            let etcd = fleet_etcd(&at)?;
            let fleet = blocker::fleet::store::FleetStore::new(&etcd, &at.fleet)?;
            fleet.rollback(&group, revision, &key)?;
            println!("fleet {} group {group}: rolled back to revision {revision} (signed)", at.fleet);
        }
        FleetCommand::Status { at, json } => {
            let etcd = fleet_etcd(&at)?;
            let fleet = blocker::fleet::store::FleetStore::new(&etcd, &at.fleet)?;
            let report = FleetReport {
                fleet: at.fleet.clone(),
                latest: fleet.latest()?,
                groups: fleet.groups()?.into_iter().map(|(g, p)| (g, p.revision)).collect(),
                hosts: fleet
                    .hosts()?
                    .into_iter()
                    .map(|(s, alive)| FleetHost {
                        host: s.host,
                        group: s.group,
                        revision: s.revision,
                        applied_at: s.applied_at,
                        error: s.error,
                        alive,
                    })
                    .collect(),
            };
            print_as(json, &report, render::fleet_status)?;
        }
    }
    Ok(())
}

/// `blocker fleet status`.
#[derive(serde::Serialize)]
pub(crate) struct FleetReport {
    pub(crate) fleet: String,
    pub(crate) latest: u64,
    pub(crate) groups: std::collections::BTreeMap<String, u64>,
    pub(crate) hosts: Vec<FleetHost>,
}

#[derive(serde::Serialize)]
pub(crate) struct FleetHost {
    pub(crate) host: String,
    pub(crate) group: String,
    pub(crate) revision: Option<u64>,
    pub(crate) applied_at: Option<String>,
    pub(crate) error: Option<String>,
    pub(crate) alive: bool,
}

fn fleet_etcd(at: &super::args::FleetAt) -> Result<blocker::fleet::etcd::Etcd> {
    blocker::fleet::store::check_name("fleet", &at.fleet)?;
    let t = std::time::Duration::from_secs(10);
    let tls =
        blocker::tls::Tls { ca_cert: at.etcd_ca_cert.clone(), cert: at.etcd_cert.clone(), key: at.etcd_key.clone() };
    let refuse = |e: blocker::tls::TlsFileError| anyhow::anyhow!("--etcd-{}: {}", e.key.replace('_', "-"), e.reason);
    tls.check().map_err(refuse)?;
    Ok(blocker::fleet::etcd::Etcd::with_tls(&at.etcd, t, t, tls.config().map_err(refuse)?)?)
}

/// `AS…` (more than two letters) or digits: an AS number, whose errors say
/// what an AS number is; letters alone: a country.
fn looks_like_asn(code: &str) -> bool {
    let c = code.trim();
    (c.len() > 2 && c.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("as"))) || c.bytes().all(|b| b.is_ascii_digit())
}

fn regions(command: RegionsCommand) -> Result<()> {
    match command {
        RegionsCommand::List { source, asn: true, json } => {
            print_as(json, &AsnList::of(&source.asn_db()?), render::asn_list)?;
        }
        RegionsCommand::List { source, asn: false, json } => {
            print_as(json, &RegionsList::of(&source.db()?), render::regions_list)?;
        }
        // AS4134 (or a bare number) names a system; letters a country.
        RegionsCommand::Show { code, source, json } if looks_like_asn(&code) => {
            let db = source.asn_db()?;
            let system = db.get(code.parse::<Asn>().map_err(anyhow::Error::msg)?)?;
            print_as(json, &AsnDetail::of(&db, system), render::asn_show)?;
        }
        RegionsCommand::Show { code, source, json } => {
            let db = source.db()?;
            print_as(json, &RegionDetail::of(db.get(&code)?), render::region_show)?;
        }
        RegionsCommand::BuildSnapshot { from, date, out } => {
            const SOURCE: &str = "ipverse country-ip-blocks (CC0 1.0)";
            let db = RegionDb::from_cidr_dir(&from, SOURCE)?;
            let bytes = snapshot::encode_snapshot(&db, SOURCE, &date)?;
            std::fs::write(&out, &bytes)?;
            println!("{}: {} countries, {} bytes", out.display(), db.regions.len(), bytes.len());
        }
        RegionsCommand::BuildAsnSnapshot { from, date, out } => {
            let opts = blocker::source::fetch::FetchOptions::default();
            let db = blocker::source::asn::load_all(
                &from,
                Path::new("/nonexistent"),
                blocker::source::fetch::UrlAccess::CachedOnly,
                &opts,
            )?;
            let bytes =
                blocker::source::asn::snapshot::encode(&db, blocker::source::asn::snapshot::DATA_SOURCE, &date)?;
            std::fs::write(&out, &bytes)?;
            println!(
                "{}: {} systems, {} prefixes, {} bytes",
                out.display(),
                db.systems.len(),
                db.prefix_count(),
                bytes.len()
            );
        }
    }
    Ok(())
}
