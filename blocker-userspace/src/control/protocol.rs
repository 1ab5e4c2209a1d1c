//! The control protocol: one JSON request per line, answered with one JSON line.
//! Requests: `{"command":"status"}`, `{"command":"reload"}` (optionally with
//! `"accept_shrink":true`), `{"command":"stats"}`, and `{"command":"events"}`
//! (optionally with `"iface"` and `"list"`), whose answer is followed by one
//! line per event (`StreamItem`) until either side closes. Every answer has
//! `"ok"`; a refused request is answered `{"ok":false,"error":"..."}`.
//!
//! The types here are the protocol: the server builds them, the client and the
//! CLI's renderers read them, and the tests wait on them.

use std::{collections::BTreeMap, path::PathBuf};

use blocker_common::counter;
use serde::{Deserialize, Serialize};

use crate::{
    dataplane::maps::{EventCounters, Mode},
    events::{Event, EventFilter},
    source::input::quote,
};

pub const DEFAULT_SOCKET: &str = "/run/blocker/blocker.sock";

pub fn socket_path(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| DEFAULT_SOCKET.into())
}

/// One control request, as the daemon understands it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase")]
pub enum Request {
    Status,
    /// Reload; with `accept_shrink`, first accept the URL content held back.
    Reload {
        #[serde(default, deserialize_with = "null_as_false")]
        accept_shrink: bool,
    },
    Stats,
    /// Stream the sampled drop events that pass the filter.
    Events {
        #[serde(flatten)]
        filter: EventFilter,
    },
    /// Ban addresses or prefixes (`decisions`); answered once every interface
    /// enforces them.
    Ban(BanRequest),
    /// Remove bans: the targets, or with `origin` and no targets, every ban
    /// of that origin.
    Unban {
        targets: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        origin: Option<String>,
    },
    /// The bans held, with their packets (optionally of one origin).
    Bans {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        origin: Option<String>,
    },
}

/// A `ban` request: every target gets the same expiry, origin and reason.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanRequest {
    pub targets: Vec<String>,
    /// Seconds from now (None: until unbanned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    #[serde(default)]
    pub reject: bool,
    /// Ban even a /0, or the SSH client the command runs from.
    #[serde(default)]
    pub force: bool,
    /// The SSH client the command runs from, as its environment says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

/// The answer to `ban`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanReply {
    pub ok: bool,
    #[serde(flatten)]
    pub outcome: crate::decisions::store::AddOutcome,
    /// The interfaces that enforce the bans now.
    pub interfaces: Vec<String>,
    /// Targets that a never-block range or an allow list covers: banned, but
    /// that list wins where it applies.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// The answer to `unban`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnbanReply {
    pub ok: bool,
    pub removed: usize,
    /// Targets that were not banned.
    pub not_banned: Vec<String>,
}

/// The answer to `bans`: every ban, soonest expiry first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BansReply {
    pub ok: bool,
    pub bans: Vec<BanStatus>,
    /// Active bans per origin (all origins, whatever the filter).
    pub origins: BTreeMap<String, usize>,
    /// The most bans of each family.
    pub max_ipv4: u32,
    pub max_ipv6: u32,
    /// The state file.
    pub state_file: String,
}

/// One ban of `bans`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanStatus {
    pub target: String,
    /// Seconds left (None: until unbanned).
    pub remaining_seconds: Option<u64>,
    /// When it ends, Unix seconds (None: never).
    pub until: Option<u64>,
    pub origin: String,
    pub reason: String,
    pub action: String,
    /// Packets it matched, summed over the interfaces.
    pub packets: u64,
}

/// The commands, as the wire names them.
const COMMANDS: [&str; 7] = ["status", "reload", "stats", "events", "ban", "unban", "bans"];
/// The most bytes of a name in an events filter (a list's name is a path or URL).
const MAX_FILTER_BYTES: usize = 1024;

fn null_as_false<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(false))
}

/// Why a request line was refused. Its text is the answer sent back, and quotes
/// at most a bounded piece of the request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("not a JSON request ({reason}): send {{\"command\":\"status\"}}")]
    NotJson { reason: String },
    #[error("the request has no \"command\" string")]
    NoCommand,
    #[error("unknown command {command} (status, reload, stats, events, ban, unban, bans)")]
    UnknownCommand { command: String },
    #[error("{field:?} must be true or false")]
    NotABool { field: &'static str },
    #[error("{field:?} must be a string of at most {max} bytes")]
    NotAName { field: &'static str, max: usize },
    #[error("bad request: {reason}")]
    Bad { reason: String },
}

impl Request {
    /// Parses one request line.
    pub fn parse(line: &str) -> Result<Request, RequestError> {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| RequestError::NotJson { reason: e.to_string() })?;
        let command = v.get("command").and_then(|c| c.as_str()).ok_or(RequestError::NoCommand)?;
        if !COMMANDS.contains(&command) {
            return Err(RequestError::UnknownCommand { command: quote(command) });
        }
        // Checked here rather than by serde, whose message would quote the value whole.
        if !matches!(v.get("accept_shrink"), None | Some(serde_json::Value::Null | serde_json::Value::Bool(_))) {
            return Err(RequestError::NotABool { field: "accept_shrink" });
        }
        for field in ["iface", "list"] {
            match v.get(field) {
                None | Some(serde_json::Value::Null) => {}
                Some(serde_json::Value::String(s)) if s.len() <= MAX_FILTER_BYTES => {}
                Some(_) => return Err(RequestError::NotAName { field, max: MAX_FILTER_BYTES }),
            }
        }
        serde_json::from_value(v).map_err(|e| RequestError::Bad { reason: quote(&e.to_string()) })
    }

    /// The request line (without its newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(&self).expect("a request always serializes")
    }
}

/// The answer to a request the daemon refused (or could not read).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub ok: bool,
    pub error: String,
}

impl Refusal {
    pub fn new(error: impl Into<String>) -> Self {
        Refusal { ok: false, error: error.into() }
    }
}

/// A reply as its JSON line (without the newline).
pub fn reply_line(reply: &impl Serialize) -> String {
    // Replies are plain strings and numbers, so encoding cannot fail; were it
    // to, the client still reads a refusal, never a broken line.
    serde_json::to_string(reply).unwrap_or_else(|e| {
        serde_json::to_string(&Refusal::new(format!("cannot encode the reply: {e}"))).unwrap_or_default()
    })
}

/// The answer to `status`: the daemon's interfaces, lists, sources and last reload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReply {
    pub ok: bool,
    /// When the daemon started (Unix seconds).
    pub started: u64,
    /// The config file it runs from, if any.
    pub config: Option<String>,
    pub interfaces: Vec<InterfaceStatus>,
    /// The scopes in the order they are tried (one, `default` for all traffic,
    /// without `[[scope]]`s).
    pub scopes: Vec<ScopeStatus>,
    pub lists: Vec<ListStatus>,
    pub sources: Vec<SourceStatus>,
    /// Bans in force, by origin (`blocker bans` lists them).
    #[serde(default)]
    pub bans: BTreeMap<String, usize>,
    /// The CrowdSec feed, if one is configured.
    #[serde(default)]
    pub crowdsec: Option<CrowdsecStatus>,
    /// The fleet this host follows, if any.
    #[serde(default)]
    pub fleet: Option<FleetStatus>,
    /// Reloads tried since the start, whatever their outcome: a client that saw
    /// N waits for N + 1 to see the outcome of the reload it caused.
    pub reloads: u64,
    /// The last of them.
    pub last_reload: Option<LastReload>,
    pub events: EventsStatus,
}

/// The fleet a host follows, in `status` (and the metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetStatus {
    pub fleet: String,
    pub group: String,
    pub host: String,
    /// The etcd endpoints.
    pub etcd: Vec<String>,
    /// The bundle in force: its revision, when it was published, when this
    /// host applied it (RFC 3339), and where it came from.
    pub revision: u64,
    pub published: String,
    pub applied_at: String,
    pub source: String,
    /// When the group's pointer was last read from etcd (Unix seconds).
    pub last_sync: Option<u64>,
    pub seconds_since_sync: Option<u64>,
    /// etcd cannot be read, or was not for a while: a newer bundle may exist.
    pub stale: bool,
    /// Why etcd cannot be read, and since when (Unix seconds).
    pub etcd_error: Option<String>,
    pub failing_since: Option<u64>,
    /// Why the last bundle was refused (the one in force stays).
    pub refused: Option<String>,
    /// When etcd last took this host's state (Unix seconds).
    pub reported: Option<u64>,
}

/// The CrowdSec feed in `status` (and the metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrowdsecStatus {
    pub lapi_url: String,
    pub update_frequency_ms: u64,
    /// Decisions held (each may ban many prefixes: a country).
    pub decisions: usize,
    /// When a pull last succeeded (Unix seconds; None: never since the start).
    pub last_success: Option<u64>,
    /// Since when pulls fail (Unix seconds; None: the last one succeeded).
    pub failing_since: Option<u64>,
    /// Why the last pull failed, while they fail.
    pub last_error: Option<String>,
    pub pulls_ok: u64,
    pub pulls_failed: u64,
    /// Decisions not enforced since the start, by reason (malformed, scope,
    /// type, filtered, expired, unknown_country).
    pub skipped: BTreeMap<String, u64>,
    /// Decisions refused because a ban map was full, since the start.
    pub refused_full: u64,
    /// What became of the usage-metrics reports (None: none made yet).
    #[serde(default)]
    pub usage_metrics: Option<String>,
}

/// One interface of `status`, as the kernel says it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceStatus {
    pub name: String,
    /// Whether a device has the name here (None: the lookup failed).
    pub present: Option<bool>,
    /// Where the program is, in words ("attached (native)", "NOT ATTACHED: ...").
    pub attached: String,
    /// The program is on the device with the name (and, with outbound lists,
    /// the egress program too), and the mode is enforce.
    pub enforcing: bool,
    /// The egress program (outbound lists), in words, checked like `attached`
    /// (None: the policy has no outbound lists).
    #[serde(default)]
    pub outbound: Option<String>,
    /// The answers to rejected packets, in words: whether the device can send
    /// them and what its driver says it lost (None: the policy rejects nothing).
    #[serde(default)]
    pub answers: Option<String>,
    pub program_id: Option<u32>,
    pub mode: Mode,
    /// Bytes of the live table's classifier maps (None: no table).
    pub table_bytes: Option<u64>,
    /// Kernel memory of every map of the interface (None: unreadable).
    pub map_memory_bytes: Option<u64>,
}

/// One scope of the policy in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeStatus {
    pub name: String,
    /// The traffic it takes: "all traffic", or rules like "tcp:443 udp:443".
    pub ports: String,
}

/// One list of the live table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListStatus {
    /// Its scope (`default` outside every scope).
    pub scope: String,
    pub name: String,
    /// "allow", "drop" or "monitor".
    pub action: String,
    pub ipv4_ranges: usize,
    pub ipv6_ranges: usize,
}

/// One source of the policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStatus {
    /// Its path or URL.
    pub source: String,
    /// Seconds since it last changed: a file's mtime, a URL's last good fetch.
    pub age_seconds: Option<u64>,
    /// Local sources: whether changes reload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watched: Option<bool>,
    /// URL sources: how often it is fetched ("off", or seconds like "21600s").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<String>,
    /// URL sources: content held back (empty or shrunk), in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

/// The last reload: when, why, and how it ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastReload {
    /// Unix seconds.
    pub at: u64,
    pub trigger: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The answer to `reload`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReply {
    pub ok: bool,
    /// What is in force now.
    pub summary: String,
    /// With `accept_shrink`: the URLs whose held content was accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<Vec<String>>,
}

/// The answer to `events`, before the stream: what it will carry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsReply {
    pub ok: bool,
    /// The rate limit of each CPU on each interface.
    pub events_per_second: u32,
    /// The interfaces whose events are read.
    pub interfaces: Vec<String>,
}

/// One line of an event stream after its `EventsReply`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StreamItem {
    Event(Box<Event>),
    /// The client read too slowly: this many events were not sent to it.
    Missed {
        missed: u64,
    },
}

/// Whether the event reader runs, for `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsStatus {
    pub events_per_second: u32,
    /// The daemon reads the interfaces' ring buffers.
    pub reading: bool,
    /// Why it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The answer to `stats`, and the output of `blocker stats --json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReply {
    pub ok: bool,
    pub interfaces: Vec<InterfaceStats>,
    /// Interfaces whose counters could not be read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<InterfaceError>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceError {
    pub interface: String,
    pub error: String,
}

/// The counters of one interface, summed over CPUs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceStats {
    pub interface: String,
    pub mode: Mode,
    pub program_id: Option<u32>,
    /// Whether the link is on the device with the name here (None: not checked).
    pub attached_here: Option<bool>,
    /// Packets by outcome, keyed by `blocker_common::counter::NAMES`: the
    /// interface's inbound packets (XDP, judged by source).
    pub totals: BTreeMap<String, u64>,
    /// The same for its outbound packets (tc egress, judged by destination).
    #[serde(default)]
    pub outbound_totals: BTreeMap<String, u64>,
    /// Whether the egress program is on the device with the name here (None:
    /// not checked, or no egress link: the policy has no outbound lists).
    #[serde(default)]
    pub outbound_here: Option<bool>,
    /// Programs that run before blocker's egress program on the device (a
    /// program there that passes a packet ends the chain before ours).
    #[serde(default)]
    pub outbound_ahead: Vec<crate::dataplane::egress::ProgramBrief>,
    /// The device driver's count of the frames sent back with XDP_TX (reject
    /// answers) and of those it lost (None: the driver counts none).
    #[serde(default)]
    pub xdp_tx: Option<crate::dataplane::device::XdpTxCounters>,
    pub lists: Vec<ListStats>,
    /// The interface's event rate limit (per second and CPU; 0: off) and
    /// what became of the packets it saw.
    pub events_per_second: u32,
    pub events: EventCounters,
}

impl InterfaceStats {
    /// The total of `counter` (one of `blocker_common::counter::*`).
    pub fn total(&self, counter: u32) -> u64 {
        counter::NAMES.get(counter as usize).and_then(|name| self.totals.get(*name)).copied().unwrap_or(0)
    }

    /// The outbound total of `counter`.
    pub fn outbound_total(&self, counter: u32) -> u64 {
        counter::NAMES.get(counter as usize).and_then(|name| self.outbound_totals.get(*name)).copied().unwrap_or(0)
    }

    /// The counters of the list named `name`.
    pub fn list(&self, name: &str) -> Option<&ListStats> {
        self.lists.iter().find(|l| l.name == name)
    }
}

/// The counters of one list id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListStats {
    pub id: u32,
    /// Its scope (`default` outside every scope, `outbound` for the outbound lists).
    pub scope: String,
    /// "inbound" (judged by source) or "outbound" (by destination).
    #[serde(default)]
    pub direction: String,
    pub name: String,
    /// "allow", "drop" or "monitor" (None: an action this version does not know).
    pub action: Option<String>,
    /// In the live policy; false: retired, kept for its counters.
    pub live: bool,
    pub packets: u64,
    pub bytes: u64,
}

impl InterfaceStats {
    pub fn new(interface: &str, c: &crate::dataplane::maps::Counters) -> Self {
        InterfaceStats {
            interface: interface.to_owned(),
            mode: c.mode,
            program_id: c.program_id,
            attached_here: c.attached_here,
            totals: counter::NAMES.iter().zip(c.global).map(|(name, v)| (name.to_string(), v)).collect(),
            outbound_totals: counter::NAMES.iter().zip(c.outbound).map(|(name, v)| (name.to_string(), v)).collect(),
            outbound_here: c.outbound_here,
            outbound_ahead: c.outbound_ahead.clone(),
            xdp_tx: c.xdp_tx.clone(),
            events_per_second: c.events_per_second,
            events: c.events,
            lists: c
                .lists
                .iter()
                .map(|l| ListStats {
                    id: l.id,
                    scope: l.scope.clone(),
                    direction: crate::policy::direction_of(&l.scope).to_owned(),
                    name: l.name.clone(),
                    action: l.action.map(|a| a.name().to_owned()),
                    live: l.live,
                    packets: l.packets,
                    bytes: l.bytes,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_bad_ones_are_named() {
        for r in [
            Request::Status,
            Request::Stats,
            Request::Reload { accept_shrink: false },
            Request::Reload { accept_shrink: true },
            Request::Events { filter: EventFilter::default() },
            Request::Events { filter: EventFilter { iface: Some("eth0".into()), list: Some("country:CN".into()) } },
        ] {
            assert_eq!(Request::parse(&r.to_line()), Ok(r));
        }
        assert_eq!(
            Request::Events { filter: EventFilter { iface: Some("eth0".into()), list: None } }.to_line(),
            r#"{"command":"events","iface":"eth0"}"#
        );
        assert_eq!(
            Request::parse(r#"{"command":"events","list":7}"#),
            Err(RequestError::NotAName { field: "list", max: MAX_FILTER_BYTES })
        );
        let long = format!(r#"{{"command":"events","iface":"{}"}}"#, "x".repeat(2000));
        assert_eq!(Request::parse(&long), Err(RequestError::NotAName { field: "iface", max: MAX_FILTER_BYTES }));
        assert_eq!(Request::parse(r#"{"command":"reload"}"#), Ok(Request::Reload { accept_shrink: false }));
        assert_eq!(
            Request::parse(r#"{"command":"reload","accept_shrink":null}"#),
            Ok(Request::Reload { accept_shrink: false })
        );
        // The wire format: what clients of earlier versions send.
        assert_eq!(Request::Status.to_line(), r#"{"command":"status"}"#);
        assert_eq!(Request::Reload { accept_shrink: true }.to_line(), r#"{"command":"reload","accept_shrink":true}"#);
        assert!(matches!(Request::parse("status"), Err(RequestError::NotJson { .. })));
        assert_eq!(Request::parse("{}"), Err(RequestError::NoCommand));
        assert_eq!(Request::parse(r#"{"command":7}"#), Err(RequestError::NoCommand));
        assert_eq!(
            Request::parse(r#"{"command":"reload","accept_shrink":1}"#),
            Err(RequestError::NotABool { field: "accept_shrink" })
        );
        let long = format!(r#"{{"command":"{}"}}"#, "x".repeat(3000));
        let e = Request::parse(&long).unwrap_err();
        assert!(matches!(e, RequestError::UnknownCommand { .. }) && e.to_string().len() < 200, "{e}");
        // Found by the control fuzzer: escapes used to count as one character each.
        let escaped = format!("{{\"command\":\"bo{}gus\"}}", "\u{7f}".repeat(100));
        let e = Request::parse(&escaped).unwrap_err().to_string();
        assert!(e.len() < 200, "{} bytes: {e}", e.len());
    }
}
