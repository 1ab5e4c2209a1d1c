//! The TOML configuration file (default /etc/blocker/blocker.toml). Unknown keys
//! are errors; every key is documented in docs/usage.md and in
//! examples/blocker.toml. The file describes the same run as the command line.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use crate::{
    dataplane::{link::AttachMode, maps::Mode, pins::DEFAULT_PIN_ROOT},
    policy::{
        ports::{PortRule, Ports},
        Policy, Scope,
    },
    source::{
        asn::{Asn, AsnSource},
        cidr_list::ListSource,
        region::RegionSource,
    },
};

pub const DEFAULT_CONFIG: &str = "/etc/blocker/blocker.toml";

/// Why a configuration file was refused: each names the file, and the key where
/// there is one.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{error}; give another file with --config, or use command-line options")]
    Read { error: crate::source::input::InputError },
    /// Not TOML, or not the file's schema (an unknown key, a wrong type).
    #[error("{path}: {reason}")]
    Syntax { path: PathBuf, reason: String },
    #[error("{path}: no [[interface]] section: name at least one interface")]
    NoInterface { path: PathBuf },
    #[error("{path}: {reason}")]
    InterfaceName { path: PathBuf, reason: String },
    /// A key whose value is not one blocker can use.
    #[error("{path}: {key}: {reason}")]
    Key { path: PathBuf, key: String, reason: String },
}

impl ConfigError {
    fn key(path: &Path, key: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        ConfigError::Key { path: path.to_owned(), key: key.into(), reason: reason.to_string() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    daemon: DaemonSection,
    #[serde(default, rename = "interface")]
    interfaces: Vec<InterfaceSection>,
    #[serde(default)]
    policy: PolicySection,
    /// Scopes, tried in the order of the file before `[policy]`'s own lists.
    #[serde(default, rename = "scope")]
    scopes: Vec<ScopeSection>,
    /// Destinations this host's outgoing packets may not reach.
    #[serde(default)]
    outbound: OutboundSection,
    /// A CrowdSec LAPI whose decisions are enforced as bans.
    crowdsec: Option<crate::decisions::crowdsec::CrowdsecSection>,
    /// A fleet whose signed policy (in etcd) this host enforces.
    fleet: Option<crate::fleet::host::FleetSection>,
}

/// `[outbound]`: lists and countries of destinations (tc egress).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutboundSection {
    #[serde(default)]
    deny: Vec<String>,
    #[serde(default)]
    reject: Vec<String>,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    monitor: Vec<String>,
    #[serde(default)]
    deny_countries: Vec<String>,
    #[serde(default)]
    reject_countries: Vec<String>,
    #[serde(default)]
    deny_asns: Vec<AsnItem>,
    #[serde(default)]
    reject_asns: Vec<AsnItem>,
    #[serde(default)]
    allow_asns: Vec<AsnItem>,
}

/// `[[scope]]`: lists and countries for the traffic its ports name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeSection {
    name: String,
    ports: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
    #[serde(default)]
    reject: Vec<String>,
    #[serde(default)]
    reject_countries: Vec<String>,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    monitor: Vec<String>,
    #[serde(default)]
    deny_countries: Vec<String>,
    #[serde(default)]
    allow_countries: Vec<String>,
    #[serde(default)]
    deny_asns: Vec<AsnItem>,
    #[serde(default)]
    reject_asns: Vec<AsnItem>,
    #[serde(default)]
    allow_asns: Vec<AsnItem>,
    #[serde(default)]
    allow_only_asns: Vec<AsnItem>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DaemonSection {
    pin_root: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    ebpf_log_level: Option<u8>,
    detach_on_exit: Option<bool>,
    socket: Option<PathBuf>,
    watch_files: Option<bool>,
    watch_debounce: Option<String>,
    table_memory: Option<String>,
    metrics_listen: Option<String>,
    events_per_second: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InterfaceSection {
    name: String,
    #[serde(default)]
    xdp_mode: Option<String>,
    #[serde(default)]
    mode: Mode,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicySection {
    #[serde(default)]
    deny: Vec<String>,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    monitor: Vec<String>,
    #[serde(default)]
    deny_countries: Vec<String>,
    #[serde(default)]
    allow_countries: Vec<String>,
    #[serde(default)]
    reject: Vec<String>,
    #[serde(default)]
    reject_countries: Vec<String>,
    #[serde(default)]
    deny_asns: Vec<AsnItem>,
    #[serde(default)]
    reject_asns: Vec<AsnItem>,
    #[serde(default)]
    allow_asns: Vec<AsnItem>,
    #[serde(default)]
    allow_only_asns: Vec<AsnItem>,
    #[serde(default)]
    asn_sources: Vec<String>,
    /// Answers to rejected packets per second on each interface.
    reject_per_second: Option<u32>,
    #[serde(default)]
    country_sources: Vec<String>,
    #[serde(default)]
    never_block: Vec<String>,
    #[serde(default)]
    no_default_never_block: bool,
    #[serde(default)]
    confirm_allowlist_without_never_block: bool,
    url_refresh: Option<String>,
    /// Apply URL content that is empty or lost more than half of its prefixes.
    #[serde(default)]
    accept_shrink: bool,
    /// The traffic `[policy]`'s own lists apply to (none: all that no scope takes).
    #[serde(default)]
    ports: Vec<String>,
}

/// An AS number as the file writes it: `"AS4134"`, `"4134"` or `4134`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum AsnItem {
    Text(String),
    Number(i64),
}

/// The AS numbers of a key, each read as `--deny-asn` reads it.
fn asns(path: &Path, key: &str, items: &[AsnItem]) -> Result<Vec<Asn>, ConfigError> {
    let texts: Vec<String> = items
        .iter()
        .map(|i| match i {
            AsnItem::Text(t) => t.clone(),
            AsnItem::Number(n) => n.to_string(),
        })
        .collect();
    parse_all::<Asn, _>(path, key, &texts)
}

fn parse_all<T: std::str::FromStr<Err = E>, E: std::fmt::Display>(
    path: &Path,
    key: &str,
    items: &[String],
) -> Result<Vec<T>, ConfigError> {
    items
        .iter()
        .enumerate()
        .map(|(i, s)| s.parse::<T>().map_err(|e| ConfigError::key(path, format!("{key}[{i}]"), e)))
        .collect()
}

/// The `[[scope]]` sections, in order, their names and ports checked.
fn scopes(path: &Path, sections: &[ScopeSection]) -> Result<Vec<Scope>, ConfigError> {
    let mut out: Vec<Scope> = Vec::new();
    for (i, s) in sections.iter().enumerate() {
        let at = |key: &str| format!("scope[{i}].{key}");
        crate::policy::check_scope_name(&s.name).map_err(|e| ConfigError::key(path, at("name"), e))?;
        if out.iter().any(|o| o.name == s.name) {
            return Err(ConfigError::key(path, at("name"), format!("scope {} is given twice", s.name)));
        }
        if s.ports.is_empty() {
            return Err(ConfigError::key(
                path,
                at("ports"),
                "a scope takes the traffic its ports name: give at least one, like \"tcp:443\"",
            ));
        }
        out.push(Scope {
            name: s.name.clone(),
            ports: Ports(parse_all::<PortRule, _>(path, &at("ports"), &s.ports)?),
            deny: parse_all::<ListSource, _>(path, &at("deny"), &s.deny)?,
            reject: parse_all::<ListSource, _>(path, &at("reject"), &s.reject)?,
            reject_country: s.reject_countries.clone(),
            allow: parse_all::<ListSource, _>(path, &at("allow"), &s.allow)?,
            monitor_list: parse_all::<ListSource, _>(path, &at("monitor"), &s.monitor)?,
            deny_country: s.deny_countries.clone(),
            allow_country: s.allow_countries.clone(),
            deny_asn: asns(path, &at("deny_asns"), &s.deny_asns)?,
            reject_asn: asns(path, &at("reject_asns"), &s.reject_asns)?,
            allow_asn: asns(path, &at("allow_asns"), &s.allow_asns)?,
            allow_only_asn: asns(path, &at("allow_only_asns"), &s.allow_only_asns)?,
        });
    }
    Ok(out)
}

fn outbound(path: &Path, o: &OutboundSection) -> Result<Scope, ConfigError> {
    let at = |key: &str| format!("outbound.{key}");
    Ok(Scope {
        name: crate::policy::OUTBOUND_SCOPE.into(),
        ports: Ports::default(),
        deny: parse_all::<ListSource, _>(path, &at("deny"), &o.deny)?,
        reject: parse_all::<ListSource, _>(path, &at("reject"), &o.reject)?,
        reject_country: o.reject_countries.clone(),
        allow: parse_all::<ListSource, _>(path, &at("allow"), &o.allow)?,
        monitor_list: parse_all::<ListSource, _>(path, &at("monitor"), &o.monitor)?,
        deny_country: o.deny_countries.clone(),
        allow_country: vec![],
        deny_asn: asns(path, &at("deny_asns"), &o.deny_asns)?,
        reject_asn: asns(path, &at("reject_asns"), &o.reject_asns)?,
        allow_asn: asns(path, &at("allow_asns"), &o.allow_asns)?,
        allow_only_asn: vec![],
    })
}

/// Reads and validates a configuration file (no kernel access).
pub fn load(path: &Path) -> Result<RunOptions, ConfigError> {
    // A config file is small: 16 MiB is far past any real one.
    let text = crate::source::input::read_text(path, 16 << 20).map_err(|error| ConfigError::Read { error })?;
    parse(path, &text)
}

/// The policy tables of a config file (`[policy]`, `[[scope]]`, `[outbound]`):
/// what a fleet bundle carries; interfaces and daemon settings are each host's own.
#[derive(Clone, Debug)]
pub struct PolicyTables {
    pub policy: Policy,
    /// `[policy] reject_per_second`.
    pub reject_per_second: u32,
}

fn policy_tables(
    path: &Path,
    p: &PolicySection,
    scope_sections: &[ScopeSection],
    outbound_section: &OutboundSection,
    cache_dir: PathBuf,
) -> Result<PolicyTables, ConfigError> {
    let url_refresh = match &p.url_refresh {
        None => crate::policy::DEFAULT_URL_REFRESH,
        Some(text) => text.parse().map_err(|e: String| ConfigError::key(path, "policy.url_refresh", e))?,
    };
    let reject_per_second = p.reject_per_second.unwrap_or(crate::dataplane::maps::DEFAULT_REJECT_PER_SECOND);
    if reject_per_second > crate::dataplane::maps::MAX_REJECT_PER_SECOND {
        return Err(ConfigError::key(
            path,
            "policy.reject_per_second",
            format!("must be 0 (no answers) to {}", crate::dataplane::maps::MAX_REJECT_PER_SECOND),
        ));
    }
    let policy = Policy {
        deny: parse_all::<ListSource, _>(path, "policy.deny", &p.deny)?,
        allow: parse_all::<ListSource, _>(path, "policy.allow", &p.allow)?,
        monitor_list: parse_all::<ListSource, _>(path, "policy.monitor", &p.monitor)?,
        deny_country: p.deny_countries.clone(),
        allow_country: p.allow_countries.clone(),
        reject: parse_all::<ListSource, _>(path, "policy.reject", &p.reject)?,
        reject_country: p.reject_countries.clone(),
        country_source: parse_all::<RegionSource, _>(path, "policy.country_sources", &p.country_sources)?,
        deny_asn: asns(path, "policy.deny_asns", &p.deny_asns)?,
        reject_asn: asns(path, "policy.reject_asns", &p.reject_asns)?,
        allow_asn: asns(path, "policy.allow_asns", &p.allow_asns)?,
        allow_only_asn: asns(path, "policy.allow_only_asns", &p.allow_only_asns)?,
        asn_source: parse_all::<AsnSource, _>(path, "policy.asn_sources", &p.asn_sources)?,
        ports: Ports(parse_all::<PortRule, _>(path, "policy.ports", &p.ports)?),
        scopes: scopes(path, scope_sections)?,
        outbound: outbound(path, outbound_section)?,
        never_block: p.never_block.clone(),
        no_default_never_block: p.no_default_never_block,
        confirm_allowlist_without_never_block: p.confirm_allowlist_without_never_block,
        url_refresh,
        cache_dir,
        accept_shrink: p.accept_shrink,
    };
    Ok(PolicyTables { policy, reject_per_second })
}

/// The tables a fleet bundle's config may hold.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BundleFile {
    #[serde(default)]
    policy: PolicySection,
    #[serde(default, rename = "scope")]
    scopes: Vec<ScopeSection>,
    #[serde(default)]
    outbound: OutboundSection,
}

/// A fleet bundle's config: `[policy]`, `[[scope]]` and `[outbound]` only
/// (another table is refused, naming it: interfaces, daemon settings and a
/// CrowdSec feed are each host's own). `cache_dir` is the host's.
pub fn parse_policy_tables(path: &Path, text: &str, cache_dir: PathBuf) -> Result<PolicyTables, ConfigError> {
    let value: toml::Table =
        toml::from_str(text).map_err(|e| ConfigError::Syntax { path: path.to_owned(), reason: e.to_string() })?;
    if let Some(other) = value.keys().find(|k| !["policy", "scope", "outbound"].contains(&k.as_str())) {
        return Err(ConfigError::key(
            path,
            other,
            "a fleet bundle holds [policy], [[scope]] and [outbound] only: interfaces, [daemon] and [crowdsec] \
             are each host's own (its local config file)",
        ));
    }
    let file: BundleFile =
        toml::from_str(text).map_err(|e| ConfigError::Syntax { path: path.to_owned(), reason: e.to_string() })?;
    policy_tables(path, &file.policy, &file.scopes, &file.outbound, cache_dir)
}

pub fn parse(path: &Path, text: &str) -> Result<RunOptions, ConfigError> {
    let file: ConfigFile =
        toml::from_str(text).map_err(|e| ConfigError::Syntax { path: path.to_owned(), reason: e.to_string() })?;
    let fleet = match &file.fleet {
        None => None,
        Some(f) => Some(f.check(|k| format!("fleet.{k}")).map_err(|e| ConfigError::key(path, e.key, e.reason))?),
    };
    if fleet.is_some() {
        // Two sources of one policy would leave the reader guessing which runs.
        let value: toml::Table = toml::from_str(text).unwrap_or_default();
        if let Some(local) = ["policy", "scope", "outbound"].into_iter().find(|k| value.contains_key(*k)) {
            return Err(ConfigError::key(
                path,
                local,
                "with [fleet], the policy is the fleet's bundle: move [policy], [[scope]] and [outbound] into the \
                 config you publish (`blocker fleet publish --config FILE`)",
            ));
        }
    }
    if file.interfaces.is_empty() {
        return Err(ConfigError::NoInterface { path: path.to_owned() });
    }
    check_interface_names(file.interfaces.iter().map(|s| s.name.as_str()))
        .map_err(|reason| ConfigError::InterfaceName { path: path.to_owned(), reason })?;
    let mut interfaces = Vec::new();
    for (i, s) in file.interfaces.iter().enumerate() {
        let attach_mode = match s.xdp_mode.as_deref() {
            None => AttachMode::Auto,
            Some(name) => {
                name.parse().map_err(|e| ConfigError::key(path, format!("interface[{i}] ({})", s.name), e))?
            }
        };
        interfaces.push(InterfaceOptions { name: s.name.clone(), attach_mode, mode: s.mode });
    }
    let d = &file.daemon;
    if d.ebpf_log_level.is_some_and(|l| l > 5) {
        return Err(ConfigError::key(path, "daemon.ebpf_log_level", "must be 0 to 5"));
    }
    let watch_debounce = match &d.watch_debounce {
        None => crate::config::DEFAULT_WATCH_DEBOUNCE,
        Some(text) => {
            crate::clock::parse_duration(text).map_err(|e| ConfigError::key(path, "daemon.watch_debounce", e))?
        }
    };
    let events_per_second = d.events_per_second.unwrap_or(crate::events::DEFAULT_EVENTS_PER_SECOND);
    if events_per_second > crate::dataplane::maps::MAX_EVENTS_PER_SECOND {
        return Err(ConfigError::key(
            path,
            "daemon.events_per_second",
            format!("must be 0 (off) to {}", crate::dataplane::maps::MAX_EVENTS_PER_SECOND),
        ));
    }
    let table_memory = match &d.table_memory {
        None => crate::dataplane::maps::DEFAULT_TABLE_MEMORY,
        Some(text) => parse_size(text).map_err(|e| ConfigError::key(path, "daemon.table_memory", e))?,
    };
    let cache_dir = d.cache_dir.clone().unwrap_or_else(|| crate::source::fetch::DEFAULT_CACHE_DIR.into());
    let PolicyTables { policy, reject_per_second } =
        policy_tables(path, &file.policy, &file.scopes, &file.outbound, cache_dir)?;
    let crowdsec = match &file.crowdsec {
        None => None,
        Some(c) => Some(c.check("crowdsec.").map_err(|e| ConfigError::key(path, e.key, e.reason))?),
    };
    Ok(RunOptions {
        fleet,
        crowdsec,
        interfaces,
        policy,
        detach_on_exit: d.detach_on_exit.unwrap_or(false),
        pin_root: d.pin_root.clone().unwrap_or_else(|| DEFAULT_PIN_ROOT.into()),
        state_dir: d.state_dir.clone().unwrap_or_else(|| crate::decisions::DEFAULT_STATE_DIR.into()),
        ebpf_log_level: d.ebpf_log_level.unwrap_or(0),
        config: Some(path.to_owned()),
        socket: Some(d.socket.clone().unwrap_or_else(|| crate::control::protocol::DEFAULT_SOCKET.into())),
        watch_debounce: d.watch_files.unwrap_or(true).then_some(watch_debounce),
        table_memory,
        events_per_second,
        reject_per_second,
        metrics_listen: d
            .metrics_listen
            .as_deref()
            .map(crate::metrics::server::parse_listen)
            .transpose()
            .map_err(|e| ConfigError::key(path, "daemon.metrics_listen", e))?,
    })
}

/// A size such as `256MiB`, `1GiB`, `300M`, `65536` (bytes; K/M/G are binary).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let n: u64 = number.parse().map_err(|_| format!("{text:?} is not a size (e.g. 256MiB, 1GiB)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => return Err(format!("unknown unit {other:?} in {text:?} (use KiB, MiB or GiB)")),
    };
    n.checked_mul(1 << shift).filter(|b| *b > 0).ok_or_else(|| format!("{text:?} is out of range"))
}

pub const DEFAULT_WATCH_DEBOUNCE: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceOptions {
    pub name: String,
    pub attach_mode: AttachMode,
    /// Dry run on this interface: nothing dropped, would-be drops counted.
    pub mode: Mode,
}

/// Refuses interface names that no interface can have (the kernel's rules:
/// 1 to 15 bytes, no '/', no whitespace or ':', not "." or "..") and names given
/// twice. `run` and `check-config` both apply it, so they agree.
pub fn check_interface_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
    let mut seen = HashSet::new();
    for name in names {
        let shown = crate::source::input::quote(name);
        if name.is_empty() || name.len() > 15 {
            return Err(format!("interface name {shown}: an interface name has 1 to 15 bytes"));
        }
        if name == "."
            || name == ".."
            || name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
        {
            return Err(format!("interface name {shown}: not a possible interface name (see `ip link`)"));
        }
        if !seen.insert(name) {
            return Err(format!("interface {name} is given twice"));
        }
    }
    Ok(())
}

/// Everything a daemon run needs: from the command line or a config file.
#[derive(Debug)]
pub struct RunOptions {
    pub interfaces: Vec<InterfaceOptions>,
    pub policy: Policy,
    pub detach_on_exit: bool,
    pub pin_root: PathBuf,
    /// Where the bans' state file is kept (`decisions`).
    pub state_dir: PathBuf,
    /// aya-log level compiled into the program: 0 = off (no cost), 5 = trace.
    pub ebpf_log_level: u8,
    /// The config file this came from: a reload reads it again.
    pub config: Option<PathBuf>,
    /// Control socket (None: no socket).
    pub socket: Option<PathBuf>,
    /// Reload when a local source file changes, once it has been stable this long
    /// (None: files are not watched).
    pub watch_debounce: Option<Duration>,
    /// The most bytes of classifier maps a table may take, per interface.
    pub table_memory: u64,
    /// Where `GET /metrics` is served (None: no metrics endpoint).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Drop events each CPU may sample per second, per interface (0: none).
    pub events_per_second: u32,
    /// Answers to rejected packets per second, per interface (0: none).
    pub reject_per_second: u32,
    /// The CrowdSec LAPI whose decisions are enforced (None: none).
    pub crowdsec: Option<crate::decisions::crowdsec::CrowdsecOptions>,
    /// The fleet whose bundle is the policy (None: the policy is local).
    pub fleet: Option<crate::fleet::host::FleetOptions>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::spec::Refresh;

    fn p(text: &str) -> Result<RunOptions, ConfigError> {
        parse(Path::new("/etc/blocker/blocker.toml"), text)
    }

    #[test]
    fn full_example_parses() {
        let text =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/blocker.toml")).unwrap();
        let o = p(&text).unwrap();
        assert_eq!(o.interfaces.len(), 2);
        assert_eq!(o.interfaces[1].attach_mode, AttachMode::Generic);
        assert_eq!(o.interfaces[1].mode, Mode::Monitor);
        assert_eq!(o.policy.deny_country, ["CN", "RU"]);
        assert_eq!(o.policy.deny[0].name, "attackers");
        assert!(o.policy.deny[0].optional);
        assert_eq!(o.watch_debounce, Some(std::time::Duration::from_secs(2)));
        assert_eq!(o.metrics_listen, Some("127.0.0.1:9187".parse().unwrap()));
        assert_eq!(o.policy.url_refresh, Refresh::Every(std::time::Duration::from_secs(6 * 3600)));
    }

    #[test]
    fn scopes_read_in_order_with_their_ports_and_lists() {
        let o = p("[[interface]]\nname = \"eth0\"\n[policy]\ndeny = [\"/etc/d.txt\"]\nports = [\"udp:53\"]\n\
                   [[scope]]\nname = \"api\"\nports = [\"tcp:443,8443\", \"udp:443\"]\nallow_countries = [\"US\"]\n\
                   [[scope]]\nname = \"ssh\"\nports = [\"tcp:22\"]\ndeny = [\"bad=/etc/bad.txt\"]\n")
        .unwrap();
        let s = &o.policy.scopes;
        assert_eq!(s.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["api", "ssh"]);
        assert_eq!(s[0].ports.describe(), "tcp:443,8443 udp:443");
        assert_eq!(s[0].allow_country, ["US"]);
        assert_eq!(s[1].deny[0].name, "bad");
        assert_eq!(o.policy.ports.describe(), "udp:53");
    }

    #[test]
    fn reject_lists_countries_and_rate_read_and_bad_ones_name_their_key() {
        let o = p("[[interface]]\nname = \"eth0\"\n[policy]\nreject = [\"r=/etc/r.txt\"]\nreject_countries = [\"CN\"]\n\
                   reject_per_second = 50\n[[scope]]\nname = \"api\"\nports = [\"tcp:443\"]\nreject = [\"/etc/a.txt\"]\n")
        .unwrap();
        assert_eq!(
            (o.policy.reject[0].name.as_str(), o.policy.reject_country.as_slice()),
            ("r", &["CN".to_string()][..])
        );
        assert_eq!(o.reject_per_second, 50);
        assert_eq!(o.policy.scopes[0].reject.len(), 1);
        let o = p("[[interface]]\nname = \"eth0\"\n").unwrap();
        assert_eq!(o.reject_per_second, crate::dataplane::maps::DEFAULT_REJECT_PER_SECOND);
        assert_eq!(
            refused_key("[[interface]]\nname = \"eth0\"\n[policy]\nreject_per_second = 2000000\n"),
            "policy.reject_per_second"
        );
        assert_eq!(refused_key("[[interface]]\nname = \"eth0\"\n[policy]\nreject = [\"\"]\n"), "policy.reject[0]");
    }

    #[test]
    fn outbound_lists_read_and_bad_ones_name_their_key() {
        let o = p("[[interface]]\nname = \"eth0\"\n[outbound]\ndeny = [\"bad=/etc/bad.txt\"]\n\
                   reject = [\"/etc/r.txt\"]\nallow = [\"/etc/ok.txt\"]\ndeny_countries = [\"KP\"]\n\
                   reject_countries = [\"IR\"]\n")
        .unwrap();
        let out = &o.policy.outbound;
        assert_eq!(out.name, crate::policy::OUTBOUND_SCOPE);
        assert_eq!((out.deny[0].name.as_str(), out.reject.len(), out.allow.len()), ("bad", 1, 1));
        assert_eq!(
            (out.deny_country.as_slice(), out.reject_country.as_slice()),
            (&["KP".into()][..], &["IR".into()][..])
        );
        assert!(o.policy.has_outbound() && o.policy.deny.is_empty());
        assert!(!p("[[interface]]\nname = \"eth0\"\n").unwrap().policy.has_outbound());
        assert_eq!(refused_key("[[interface]]\nname = \"eth0\"\n[outbound]\nreject = [\"\"]\n"), "outbound.reject[0]");
        let e = syntax_error("[[interface]]\nname = \"eth0\"\n[outbound]\nallow_countries = [\"US\"]\n");
        assert!(e.contains("unknown field `allow_countries`"), "{e}");
        let scope = "[[interface]]\nname = \"eth0\"\n[[scope]]\nname = \"outbound\"\nports = [\"tcp\"]\n";
        assert_eq!(refused_key(scope), "scope[0].name");
    }

    #[test]
    fn bad_scopes_name_their_key() {
        let scope = |body: &str| format!("[[interface]]\nname = \"eth0\"\n[[scope]]\n{body}\n");
        assert_eq!(refused_key(&scope("name = \"api\"\nports = [\"tcp:99999\"]")), "scope[0].ports[0]");
        assert_eq!(refused_key(&scope("name = \"api\"\nports = []")), "scope[0].ports");
        assert_eq!(refused_key(&scope("name = \"a/b\"\nports = [\"tcp\"]")), "scope[0].name");
        assert_eq!(refused_key(&scope("name = \"default\"\nports = [\"tcp\"]")), "scope[0].name");
        assert_eq!(refused_key(&scope("name = \"api\"\nports = [\"tcp\"]\ndeny = [\"\"]")), "scope[0].deny[0]");
        let twice =
            format!("{}[[scope]]\nname = \"api\"\nports = [\"udp\"]\n", scope("name = \"api\"\nports = [\"tcp\"]"));
        assert_eq!(refused_key(&twice), "scope[1].name");
        assert!(syntax_error(&scope("name = \"api\"\nport = [\"tcp\"]")).contains("unknown field `port`"));
        assert_eq!(refused_key("[[interface]]\nname = \"eth0\"\n[policy]\nports = [\"icmp\"]\n"), "policy.ports[0]");
    }

    /// The key a refusal names.
    fn refused_key(text: &str) -> String {
        match p(text) {
            Err(ConfigError::Key { path, key, .. }) => {
                assert_eq!(path, Path::new("/etc/blocker/blocker.toml"));
                key
            }
            other => panic!("expected a refused key, got {other:?}"),
        }
    }

    /// The reason of a refusal for the file's syntax or schema.
    fn syntax_error(text: &str) -> String {
        match p(text) {
            Err(ConfigError::Syntax { reason, .. }) => reason,
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_file_and_key() {
        assert!(syntax_error("[[interface]]\nname = \"eth0\"\nmod = \"monitor\"\n").contains("unknown field `mod`"));
        assert!(syntax_error("[[interface]]\nname = \"eth0\"\nmode = \"dry\"\n").contains("unknown variant `dry`"));
        assert!(syntax_error("[daemon]\npin_rot = \"/x\"\n[[interface]]\nname = \"eth0\"\n")
            .contains("unknown field `pin_rot`"));
        assert!(syntax_error("[[interface]]\nname = \"eth0\"\n[policy]\ndeny_countries = \"CN\"\n")
            .contains("invalid type"));
        assert!(matches!(p("[policy]\ndeny_countries = [\"CN\"]\n"), Err(ConfigError::NoInterface { .. })));
        for (names, why) in [
            ("\"eth0\", \"eth0\"", "interface eth0 is given twice"),
            ("\"\"", "an interface name has 1 to 15 bytes"),
            ("\"a-name-that-is-too-long\"", "an interface name has 1 to 15 bytes"),
            ("\"../eth0\"", "not a possible interface name"),
        ] {
            let text: String =
                names.split(", ").map(|n| format!("[[interface]]\nname = {n}\n")).collect::<Vec<_>>().join("");
            match p(&text) {
                Err(e @ ConfigError::InterfaceName { .. }) => {
                    let e = e.to_string();
                    assert!(e.starts_with("/etc/blocker/blocker.toml: ") && e.contains(why), "{e}");
                }
                other => panic!("{names}: {other:?}"),
            }
        }
        assert_eq!(refused_key("[[interface]]\nname = \"eth0\"\n[policy]\ndeny = [\"\"]\n"), "policy.deny[0]");
        assert_eq!(refused_key("[[interface]]\nname = \"eth0\"\nxdp_mode = \"fast\"\n"), "interface[0] (eth0)");
        assert_eq!(
            refused_key("[daemon]\nwatch_debounce = \"2 seconds\"\n[[interface]]\nname = \"eth0\"\n"),
            "daemon.watch_debounce"
        );
        assert_eq!(
            refused_key("[[interface]]\nname = \"eth0\"\n[policy]\nurl_refresh = \"soon\"\n"),
            "policy.url_refresh"
        );
        assert_eq!(
            refused_key("[daemon]\nebpf_log_level = 6\n[[interface]]\nname = \"eth0\"\n"),
            "daemon.ebpf_log_level"
        );
        assert_eq!(
            refused_key("[daemon]\ntable_memory = \"lots\"\n[[interface]]\nname = \"eth0\"\n"),
            "daemon.table_memory"
        );
        assert_eq!(
            refused_key("[daemon]\nevents_per_second = 2000000\n[[interface]]\nname = \"eth0\"\n"),
            "daemon.events_per_second"
        );
        assert!(syntax_error("[daemon]\nevents_per_second = -1\n[[interface]]\nname = \"eth0\"\n")
            .contains("events_per_second"));
        let e = p("[[interface]]\nname = \"eth0\"\n[policy]\ndeny = [\"refresh=1h:/etc/x.txt\"]\n").unwrap_err();
        assert!(
            matches!(&e, ConfigError::Key { key, reason, .. } if key == "policy.deny[0]" && reason.contains("URL sources only")),
            "{e}"
        );
        let e = p("[daemon]\nmetrics_listen = \"localhost:9187\"\n[[interface]]\nname = \"eth0\"\n").unwrap_err();
        assert!(matches!(&e, ConfigError::Key { key, .. } if key == "daemon.metrics_listen"), "{e}");
        // The text names the file and the key.
        let e = p("[[interface]]\nname = \"eth0\"\nxdp_mode = \"fast\"\n").unwrap_err().to_string();
        assert_eq!(
            e,
            "/etc/blocker/blocker.toml: interface[0] (eth0): xdp_mode \"fast\" is not one of auto, native, generic"
        );
    }

    #[test]
    fn a_crowdsec_section_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "abc123\n").unwrap();
        let o = p(&format!(
            "[[interface]]\nname = \"eth0\"\n[crowdsec]\nlapi_url = \"http://127.0.0.1:8080/\"\napi_key_file = \"{}\"\n\
             update_frequency = \"2s\"\nscopes = [\"Ip\", \"range\"]\norigins = [\"crowdsec\"]\nactions = {{ ban = \"reject\" }}\n",
            key.display()
        ))
        .unwrap();
        let c = o.crowdsec.unwrap();
        assert_eq!(c.api_key.unwrap().0, "abc123");
        assert_eq!(c.update_frequency, Duration::from_secs(2));
        assert_eq!(c.scopes.len(), 2);
        assert_eq!(c.actions["ban"], crate::decisions::BanAction::Reject);
        assert_eq!(
            refused_key("[[interface]]\nname = \"eth0\"\n[crowdsec]\nlapi_url = \"http://x/\"\napi_key = \"k\"\nscopes = [\"asn\"]\n"),
            "crowdsec.scopes"
        );
        assert_eq!(
            refused_key("[[interface]]\nname = \"eth0\"\n[crowdsec]\nlapi_url = \"http://x/\"\napi_key_file = \"/nonexistent/k\"\n"),
            "crowdsec.api_key_file"
        );
        // Unknown keys are refused like everywhere in the file.
        let e =
            p("[[interface]]\nname = \"eth0\"\n[crowdsec]\nlapi_url = \"http://x/\"\napi_kye = \"k\"\n").unwrap_err();
        assert!(e.to_string().contains("api_kye"), "{e}");
    }

    #[test]
    fn a_fleet_host_example_parses_and_a_local_policy_beside_fleet_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (secret, public) = (tmp.path().join("fleet.key"), tmp.path().join("fleet.pub"));
        crate::fleet::keygen(&secret, &public).unwrap();
        let text =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fleet-host.toml")).unwrap();
        let text = text.replace("/etc/blocker/fleet.pub", public.to_str().unwrap());
        let o = p(&text).unwrap();
        let f = o.fleet.as_ref().unwrap();
        assert_eq!((f.fleet.as_str(), f.group.as_str(), f.endpoints.len(), f.wait), ("edge", "canary", 3, false));
        assert!(!o.policy.names_anything());
        for local in ["[policy]\ndeny_countries = [\"CN\"]\n", "[[scope]]\nname = \"web\"\nports = [\"tcp:443\"]\n"] {
            let e = p(&format!("{text}\n{local}")).unwrap_err().to_string();
            assert!(e.contains("with [fleet], the policy is the fleet's bundle"), "{e}");
        }
        let e = p(&text.replace("name = \"edge\"", "name = \"ed/ge\"")).unwrap_err().to_string();
        assert!(e.contains("fleet.name"), "{e}");
        let e = p(&text.replace("group = \"canary\"", "group = \"canary\"\ncolour = 1")).unwrap_err().to_string();
        assert!(e.contains("colour"), "{e}");
    }
}
