//! What the CLI's reading commands answer, as typed data: `lookup`, `regions
//! list`, `regions show` and `check-config`. The CLI computes them and prints
//! either their text or, with `--json`, these structs as they are (the JSON
//! shapes are a contract, like the control protocol's replies).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::{
    dataplane::maps::Mode,
    net::Family,
    source::{
        asn::db::{AsnDb, AutonomousSystem},
        region::db::{Region, RegionDb},
    },
};

/// `blocker lookup ADDR...`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupReport {
    pub addresses: Vec<AddressLookup>,
}

/// One address: its regions, what each scope of the policy given does with
/// it, and what each scope of each interface's live maps does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressLookup {
    pub address: IpAddr,
    pub regions: Vec<RegionName>,
    /// The autonomous systems whose prefixes hold it, most specific first.
    #[serde(default)]
    pub asns: Vec<AsnName>,
    /// Empty: no policy was given to evaluate.
    pub policy: Vec<ScopeVerdict>,
    pub live: Vec<LiveVerdict>,
    /// The bans that hold the address on each interface (`blocker bans`).
    #[serde(default)]
    pub bans: Vec<LiveBan>,
}

/// A ban that holds an address in an interface's pinned maps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveBan {
    pub interface: String,
    /// The banned prefix (the longest that holds the address).
    pub target: String,
    pub origin: String,
    /// "drop" or "reject".
    pub action: String,
    /// Seconds left (None: until unbanned).
    pub remaining_seconds: Option<u64>,
    /// A list whose pass wins over bans there (never-block, an allow list),
    /// as the first inbound scope's live table finds it.
    pub overridden_by: Option<String>,
}

/// A scope's verdict: the scope (`default` outside every scope), the traffic
/// it takes, and the list and action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeVerdict {
    pub scope: String,
    /// "inbound": the address as a source (XDP); "outbound": as a
    /// destination of this host's packets (tc egress).
    #[serde(default)]
    pub direction: String,
    pub ports: String,
    #[serde(flatten)]
    pub verdict: Verdict,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionName {
    pub code: String,
    pub name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsnName {
    /// The number (4134).
    pub asn: u32,
    pub org: Option<String>,
}

/// The list an address falls in (None: none) and that list's action: "drop",
/// "monitor", "allow", or "pass" for an address in no list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub list: Option<String>,
    pub action: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveVerdict {
    pub interface: String,
    pub scope: String,
    /// As in `ScopeVerdict`.
    #[serde(default)]
    pub direction: String,
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Whether it is the policy's verdict (None: no policy given).
    pub agrees: Option<bool>,
    /// The interface's program is on the device with the name here: if not,
    /// the live maps judge nothing and its traffic passes.
    pub attached_here: bool,
    /// The interface's mode, as its pinned maps hold it.
    #[serde(default)]
    pub mode: crate::dataplane::maps::Mode,
    /// What the program does with such a packet: `verdict.action`, but for a
    /// drop or a reject in monitor mode, `monitor` (counted, passed).
    #[serde(default)]
    pub outcome: String,
}

/// `blocker regions list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionsList {
    pub sources: Vec<RegionDataSource>,
    pub regions: Vec<RegionSummary>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionDataSource {
    pub name: String,
    /// The date of the data, when the source says.
    pub date: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionSummary {
    pub code: String,
    pub name: Option<String>,
    pub ipv4_prefixes: usize,
    pub ipv6_prefixes: usize,
    pub sources: Vec<String>,
}

/// `blocker regions show CC`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionDetail {
    #[serde(flatten)]
    pub summary: RegionSummary,
    pub prefixes: Vec<String>,
}

impl RegionSummary {
    pub fn of(r: &Region) -> RegionSummary {
        RegionSummary {
            code: r.code.clone(),
            name: r.name.clone(),
            ipv4_prefixes: r.count(Family::V4),
            ipv6_prefixes: r.count(Family::V6),
            sources: r.sources.clone(),
        }
    }
}

impl RegionsList {
    pub fn of(db: &RegionDb) -> RegionsList {
        RegionsList {
            sources: db
                .sources
                .iter()
                .map(|s| RegionDataSource { name: s.name.clone(), date: s.date.clone() })
                .collect(),
            regions: db.regions.values().map(RegionSummary::of).collect(),
        }
    }
}

impl RegionDetail {
    pub fn of(r: &Region) -> RegionDetail {
        RegionDetail { summary: RegionSummary::of(r), prefixes: r.prefixes.iter().map(|p| p.to_string()).collect() }
    }
}

/// `blocker regions list --asn`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsnList {
    pub sources: Vec<RegionDataSource>,
    pub systems: Vec<AsnSummary>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsnSummary {
    pub asn: u32,
    pub org: Option<String>,
    pub ipv4_prefixes: usize,
    pub ipv6_prefixes: usize,
    /// IPv4 addresses it holds.
    pub ipv4_addresses: u64,
    /// IPv6 /64 networks it holds (saturating at 2^64).
    pub ipv6_nets64: u64,
}

/// `blocker regions show AS4134`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsnDetail {
    #[serde(flatten)]
    pub summary: AsnSummary,
    pub sources: Vec<RegionDataSource>,
    pub prefixes: Vec<String>,
}

impl AsnSummary {
    pub fn of(s: &AutonomousSystem) -> AsnSummary {
        let size = |f| u64::try_from(s.size(f)).unwrap_or(u64::MAX);
        AsnSummary {
            asn: s.asn.0,
            org: s.org.clone(),
            ipv4_prefixes: s.count(Family::V4),
            ipv6_prefixes: s.count(Family::V6),
            ipv4_addresses: size(Family::V4),
            ipv6_nets64: size(Family::V6),
        }
    }
}

fn data_sources(sources: &[crate::source::region::db::SourceInfo]) -> Vec<RegionDataSource> {
    sources.iter().map(|s| RegionDataSource { name: s.name.clone(), date: s.date.clone() }).collect()
}

impl AsnList {
    pub fn of(db: &AsnDb) -> AsnList {
        AsnList { sources: data_sources(&db.sources), systems: db.systems.values().map(AsnSummary::of).collect() }
    }
}

impl AsnDetail {
    pub fn of(db: &AsnDb, s: &AutonomousSystem) -> AsnDetail {
        AsnDetail {
            summary: AsnSummary::of(s),
            sources: data_sources(&db.sources),
            prefixes: s.prefixes.iter().map(|p| p.to_string()).collect(),
        }
    }
}

/// `blocker check-config`: the run a config file describes, compiled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigReport {
    pub config: String,
    /// Whether `blocker run` would start with it (the table fits its budget).
    pub valid: bool,
    /// Why not, when it would not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub interfaces: Vec<ConfigInterface>,
    pub pin_root: String,
    pub socket: Option<String>,
    pub metrics_listen: Option<String>,
    pub events_per_second: u32,
    /// Answers to rejected packets per second on each interface.
    pub reject_per_second: u32,
    /// The scopes in the order they are tried.
    pub scopes: Vec<ConfigScope>,
    pub sources: Vec<ConfigSource>,
    pub never_block: Vec<NeverBlocked>,
    pub lists: Vec<ConfigList>,
    pub table: ConfigTable,
    /// What the operator should know (a scope that takes no packet, ...).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The ASN data an ASN policy or the CrowdSec feed uses, and how old it
    /// is, in words (None: nothing names systems).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asn_data: Option<String>,
    /// The fleet whose bundle is the policy, in words (None: the policy is local).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<String>,
    /// The CrowdSec feed, in words (None: none configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crowdsec: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigInterface {
    pub name: String,
    pub xdp_mode: String,
    pub mode: Mode,
    /// A device has the name on this host (a config is often checked elsewhere).
    pub present_here: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigSource {
    /// Its path or URL.
    pub source: String,
    /// Files: reloaded this long after they change (None: not watched).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch_debounce_ms: Option<u64>,
    /// URLs: how often they are fetched ("off", or like "21600s").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeverBlocked {
    pub prefix: String,
    /// "configured", "loopback", "link-local", "ssh client", ...
    pub why: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigScope {
    pub name: String,
    /// "all traffic", or rules like "tcp:443 udp:443".
    pub ports: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigList {
    pub scope: String,
    pub name: String,
    pub action: String,
    pub ipv4_ranges: usize,
    pub ipv6_ranges: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigTable {
    pub ipv4_ranges: usize,
    pub ipv6_ranges: usize,
    /// Bytes of classifier maps the table takes, and the budget (table_memory).
    pub classifier_bytes: u64,
    pub budget_bytes: u64,
}

/// `blocker check-config --json` for a file `run` would refuse outright (it
/// cannot be read, a list is bad, the pin root is off bpffs, ...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigRefusal {
    pub config: String,
    pub valid: bool,
    pub error: String,
}
