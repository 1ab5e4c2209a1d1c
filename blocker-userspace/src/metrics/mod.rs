//! Prometheus metrics: what one scrape reads (the daemon's facts, and each
//! interface's counters from its pinned maps, at request time) and its
//! exposition in the OpenMetrics text format, written by prometheus-client.
//! The names and labels are a contract: docs/operations.md lists them, and `dist/`'s
//! dashboard and alert rules use them.

pub mod server;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use blocker_common::counter;
use prometheus_client::{
    encoding::{DescriptorEncoder, EncodeLabelValue, EncodeMetric, LabelValueEncoder},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
    registry::{Registry, Unit},
};

use crate::{
    clock::unix_secs,
    dataplane::{
        link,
        maps::{Counters, DataplaneMaps, Mode},
        pins,
    },
    source::{fetch, spec::is_url},
};

/// What the daemon knows that the kernel does not: its interfaces, the lists of
/// the table in force, its reloads and its sources. The daemon replaces it after
/// each change; a scrape reads a copy.
#[derive(Clone, Debug, Default)]
pub struct DaemonFacts {
    pub pin_root: PathBuf,
    pub cache_dir: PathBuf,
    /// Each interface with the mode its configuration gives.
    pub interfaces: Vec<(String, Mode)>,
    pub lists: Vec<ListFacts>,
    pub reloads_succeeded: u64,
    pub reloads_failed: u64,
    /// The last load of the table: the start's, then each reload's.
    pub last_load: Option<LoadFacts>,
    /// Every source of the policy (path or URL).
    pub sources: Vec<String>,
    /// Failed fetches since the start, by URL.
    pub fetch_failures: BTreeMap<String, u64>,
    /// What the endpoint did with the connections it could not keep.
    pub endpoint: Arc<server::EndpointCounts>,
    /// Active bans per origin (`decisions`).
    pub bans_active: BTreeMap<String, usize>,
    /// Bans refused because a ban map was full, since the start.
    pub bans_refused_full: u64,
    /// The CrowdSec feed, if one is configured.
    pub crowdsec: Option<crate::control::protocol::CrowdsecStatus>,
    pub fleet: Option<crate::control::protocol::FleetStatus>,
}

/// One list of the table in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListFacts {
    /// Its scope (`default` outside every scope).
    pub scope: String,
    pub name: String,
    /// The table's CIDRs of the list, IPv4 and IPv6.
    pub prefixes: (usize, usize),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoadFacts {
    /// Unix seconds, when it ended.
    pub at: f64,
    pub ok: bool,
    pub duration_seconds: f64,
}

/// The facts as the daemon shares them with the metrics server.
pub type SharedFacts = Arc<Mutex<DaemonFacts>>;

/// One scrape: the daemon's facts, each interface as its pinned maps and the
/// kernel's link say, and each source's last good content.
#[derive(Debug)]
pub struct Scrape {
    pub facts: DaemonFacts,
    pub interfaces: Vec<InterfaceScrape>,
    pub sources: Vec<SourceScrape>,
}

#[derive(Debug)]
pub struct InterfaceScrape {
    pub name: String,
    pub mode: Mode,
    /// The link is on the device with the name here (checked with the kernel).
    pub attached: bool,
    /// None: the pinned maps could not be read.
    pub counters: Option<Counters>,
    pub map_memory_bytes: Option<u64>,
}

#[derive(Debug)]
pub struct SourceScrape {
    pub source: String,
    /// Unix seconds of the content in force: a URL's last good fetch (an
    /// unchanged answer counts), a file's modification.
    pub last_success: Option<u64>,
    /// URL sources: failed fetches since the start.
    pub fetch_failures: Option<u64>,
}

impl Scrape {
    /// Reads every interface from its pins: blocking syscalls, a few per list.
    pub fn read(facts: DaemonFacts) -> Scrape {
        let interfaces = facts
            .interfaces
            .iter()
            .map(|(name, configured)| read_interface(&facts.pin_root, name, *configured))
            .collect();
        let sources = facts
            .sources
            .iter()
            .map(|source| SourceScrape {
                source: source.clone(),
                last_success: last_success(source, &facts.cache_dir),
                fetch_failures: is_url(source).then(|| facts.fetch_failures.get(source).copied().unwrap_or(0)),
            })
            .collect();
        Scrape { facts, interfaces, sources }
    }

    /// The exposition in the OpenMetrics text format.
    pub fn encode(self) -> String {
        self.encode_as(Format::OpenMetrics)
    }

    /// The exposition in `format`.
    pub fn encode_as(self, format: Format) -> String {
        let text = self.encode_openmetrics();
        match format {
            Format::OpenMetrics => text,
            Format::Classic => classic_text(&text),
        }
    }

    fn encode_openmetrics(self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }
}

/// The two text formats Prometheus reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0, which prometheus-client writes and Prometheus asks for.
    OpenMetrics,
    /// The Prometheus text format 0.0.4, for clients that do not ask for
    /// OpenMetrics (curl, promtool, older agents).
    Classic,
}

impl Format {
    pub const fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Classic => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// The same exposition in the Prometheus text format. The formats differ only
/// where a counter is named: OpenMetrics names the family without `_total` and
/// its samples with it, the classic format names both with it; and the classic
/// format has no `# UNIT` or `# EOF` lines. Samples, labels and their escaping
/// are the same, so they pass through as prometheus-client wrote them.
fn classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> =
        openmetrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|tag| {
            let rest = line.strip_prefix(tag)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{tag}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

fn read_interface(pin_root: &Path, name: &str, configured: Mode) -> InterfaceScrape {
    let dir = pins::iface_dir(pin_root, name);
    let maps = dir
        .exists()
        .then(|| DataplaneMaps::open(&dir))
        .and_then(|m| m.map_err(|e| log::debug!("metrics: {name}: cannot open the pinned maps: {e}")).ok());
    let counters =
        maps.as_ref().and_then(|m| m.counters().ok()).map(|c| crate::dataplane::maps::with_device_facts(c, &dir, name));
    InterfaceScrape {
        name: name.to_owned(),
        mode: counters.as_ref().map_or(configured, |c| c.mode),
        attached: link::attached_here(&dir, name),
        map_memory_bytes: maps.as_ref().and_then(|m| m.memory().ok()),
        counters,
    }
}

fn last_success(source: &str, cache_dir: &Path) -> Option<u64> {
    if is_url(source) {
        return fetch::last_good_fetch(source, cache_dir);
    }
    std::fs::metadata(source).and_then(|m| m.modified()).ok().map(unix_secs)
}

/// A label value as the text formats must carry it: prometheus-client writes
/// values as they are, and a list named by a path holding `"`, `\` or a line
/// break would end the value early and add series of its own.
struct Escaped<'a>(&'a str);

impl EncodeLabelValue for Escaped<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        use std::fmt::Write as _;
        let mut rest = self.0;
        while let Some(at) = rest.find(['\\', '"', '\n']) {
            encoder.write_str(&rest[..at])?;
            encoder.write_str(match rest.as_bytes()[at] {
                b'\\' => "\\\\",
                b'"' => "\\\"",
                _ => "\\n",
            })?;
            rest = &rest[at + 1..];
        }
        encoder.write_str(rest)
    }
}

/// One metric family: its descriptor, then its samples, each with its labels
/// (name, value), every value escaped.
fn family<'l, L: AsRef<[(&'l str, &'l str)]>, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    samples: impl IntoIterator<Item = (L, M)>,
    metric_type: prometheus_client::metrics::MetricType,
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, unit.as_ref(), metric_type)?;
    for (labels, value) in samples {
        let labels: Vec<(&str, Escaped<'_>)> = labels.as_ref().iter().map(|(k, v)| (*k, Escaped(v))).collect();
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counters<'l, L: AsRef<[(&'l str, &'l str)]>>(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, u64)>,
) -> std::fmt::Result {
    let samples = samples.into_iter().map(|(l, v)| (l, ConstCounter::new(v)));
    family(e, name, help, None, samples, prometheus_client::metrics::MetricType::Counter)
}

fn gauges<'l, L: AsRef<[(&'l str, &'l str)]>, V: prometheus_client::encoding::EncodeGaugeValue>(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    samples: impl IntoIterator<Item = (L, V)>,
) -> std::fmt::Result {
    let samples = samples.into_iter().map(|(l, v)| (l, ConstGauge::new(v)));
    family(e, name, help, unit, samples, prometheus_client::metrics::MetricType::Gauge)
}

/// A gauge without labels; without a value, only its descriptor.
fn gauge<V: prometheus_client::encoding::EncodeGaugeValue>(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    value: Option<V>,
) -> std::fmt::Result {
    let metric = e.encode_descriptor(name, help, unit.as_ref(), prometheus_client::metrics::MetricType::Gauge)?;
    match value {
        Some(v) => ConstGauge::new(v).encode(metric),
        None => Ok(()),
    }
}

impl prometheus_client::collector::Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
        let read: Vec<(&InterfaceScrape, &Counters)> =
            self.interfaces.iter().filter_map(|i| i.counters.as_ref().map(|c| (i, c))).collect();
        // Live lists only: a retired list's counters stay in the maps until its
        // id is reused, but its series ends with it.
        let list_samples = |value: fn(&crate::dataplane::maps::ListCounters) -> u64| {
            read.iter()
                .flat_map(|(i, c)| c.lists.iter().filter(|l| l.live).map(move |l| (i, l)))
                .map(move |(i, l)| {
                    let action = l.action.map_or("unknown", |a| a.name());
                    let labels = [
                        ("interface", i.name.as_str()),
                        ("direction", crate::policy::direction_of(&l.scope)),
                        ("scope", l.scope.as_str()),
                        ("list", l.name.as_str()),
                        ("action", action),
                    ];
                    (labels, value(l))
                })
                .collect::<Vec<_>>()
        };
        counters(
            &mut e,
            "blocker_list_packets",
            "Packets that hit a list (countries are lists named country:CC), by interface, the list's scope \
             (default outside every scope) and its action.",
            list_samples(|l| l.packets),
        )?;
        counters(
            &mut e,
            "blocker_list_bytes",
            "Bytes (whole frames) of the packets that hit a list.",
            list_samples(|l| l.bytes),
        )?;
        counters(
            &mut e,
            "blocker_packets",
            "Packets seen by the programs, by direction (inbound: XDP, judged by source; outbound: tc egress, \
             judged by destination) and verdict: passed, dropped, monitored (would have been dropped; passed), \
             non_ip, malformed, rejected (dropped and answered).",
            read.iter().flat_map(|(i, c)| {
                let inbound = counter::NAMES.iter().zip(c.global).map(|(verdict, v)| ("inbound", *verdict, v));
                let outbound = counter::NAMES.iter().zip(c.outbound).map(|(verdict, v)| ("outbound", *verdict, v));
                inbound.chain(outbound).map(|(direction, verdict, v)| {
                    ([("interface", i.name.as_str()), ("direction", direction), ("verdict", verdict)], v)
                })
            }),
        )?;
        counters(
            &mut e,
            "blocker_events",
            "Sampled drop events written to the interface's ring buffer (`blocker events`, `blocker top`).",
            read.iter().map(|(i, c)| ([("interface", i.name.as_str())], c.events.sent)),
        )?;
        counters(
            &mut e,
            "blocker_events_dropped",
            "Dropped or monitored packets that got no event, by reason: rate_limited (the per-CPU token bucket \
             of events_per_second was empty) or ring_full (the ring buffer was full: no reader, or a slow one).",
            read.iter().flat_map(|(i, c)| {
                [("rate_limited", c.events.rate_limited), ("ring_full", c.events.ring_full)]
                    .map(|(reason, v)| ([("interface", i.name.as_str()), ("reason", reason)], v))
            }),
        )?;
        gauges(
            &mut e,
            "blocker_table_prefixes",
            "CIDRs of each list in the table in force (its ranges as the fewest prefixes), by family.",
            None,
            self.facts.lists.iter().flat_map(|l| {
                [("ipv4", l.prefixes.0), ("ipv6", l.prefixes.1)].map(|(family, n)| {
                    ([("scope", l.scope.as_str()), ("list", l.name.as_str()), ("family", family)], n as u64)
                })
            }),
        )?;
        gauges(
            &mut e,
            "blocker_map_memory",
            "Kernel memory of the interface's BPF maps (the table's and the shared ones).",
            Some(Unit::Bytes),
            self.interfaces.iter().filter_map(|i| i.map_memory_bytes.map(|b| ([("interface", i.name.as_str())], b))),
        )?;
        gauges(
            &mut e,
            "blocker_egress_programs_before",
            "Programs that run before blocker's on the interface's tc egress (TCX), checked with the kernel: one \
             that passes a packet ends the chain, and the outbound lists never see it. blocker attaches first; \
             another program attached later with BPF_F_BEFORE goes ahead of it.",
            None,
            read.iter()
                .filter(|(_, c)| c.outbound_here.is_some())
                .map(|(i, c)| ([("interface", i.name.as_str())], c.outbound_ahead.len() as u64)),
        )?;
        counters(
            &mut e,
            "blocker_xdp_tx_sent",
            "Frames the interface's driver sent back with XDP_TX (the answers to rejected packets), as it counts \
             them since the device came up (only drivers that count them).",
            read.iter().filter_map(|(i, c)| Some(([("interface", i.name.as_str())], c.xdp_tx.as_ref()?.sent?))),
        )?;
        counters(
            &mut e,
            "blocker_xdp_tx_lost",
            "Frames the interface's driver could not send with XDP_TX (answers to rejected packets lost: veth's \
             xdp_tx_errors, a NIC's xdp_tx_err or xdp_tx_full), since the device came up. A veth loses them all \
             when its peer runs no XDP program (and has GRO off).",
            read.iter().filter_map(|(i, c)| Some(([("interface", i.name.as_str())], c.xdp_tx.as_ref()?.lost?))),
        )?;
        gauges(
            &mut e,
            "blocker_interface_attached",
            "1 if blocker's program is on the device with the interface's name (checked with the kernel), else 0.",
            None,
            self.interfaces
                .iter()
                .map(|i| ([("interface", i.name.as_str()), ("mode", i.mode.name())], u64::from(i.attached))),
        )?;
        counters(
            &mut e,
            "blocker_reloads",
            "Reloads since the start, by result (success, failure).",
            [
                ([("result", "success")], self.facts.reloads_succeeded),
                ([("result", "failure")], self.facts.reloads_failed),
            ],
        )?;
        let last = self.facts.last_load;
        gauge(
            &mut e,
            "blocker_last_reload_success",
            "1 if the last load of the table (the start's, then each reload's) succeeded, else 0.",
            None,
            last.map(|l| u64::from(l.ok)),
        )?;
        gauge(
            &mut e,
            "blocker_last_reload_timestamp",
            "When the last load of the table ended (Unix time).",
            Some(Unit::Seconds),
            last.map(|l| l.at),
        )?;
        gauge(
            &mut e,
            "blocker_last_reload_duration",
            "How long the last load of the table took.",
            Some(Unit::Seconds),
            last.map(|l| l.duration_seconds),
        )?;
        gauges(
            &mut e,
            "blocker_source_last_success_timestamp",
            "When the source's content in force was last had (Unix time): a URL's last good fetch (an unchanged \
             answer counts), a file's modification.",
            Some(Unit::Seconds),
            self.sources.iter().filter_map(|s| s.last_success.map(|t| ([("source", s.source.as_str())], t))),
        )?;
        counters(
            &mut e,
            "blocker_source_fetch_failures",
            "Failed fetches of a URL source since the start (the last good copy stays in use).",
            self.sources.iter().filter_map(|s| s.fetch_failures.map(|n| ([("source", s.source.as_str())], n))),
        )?;
        gauges(
            &mut e,
            "blocker_bans_active",
            "Bans in force, by origin (drops by origin: blocker_list_packets_total with scope=\"ban\").",
            None,
            self.facts.bans_active.iter().map(|(o, n)| ([("origin", o.as_str())], *n as u64)),
        )?;
        counters(
            &mut e,
            "blocker_bans_refused",
            "Bans refused since the start because a ban map was full (nothing is ever evicted).",
            [([("reason", "full")], self.facts.bans_refused_full)],
        )?;
        if let Some(c) = &self.facts.crowdsec {
            let lapi = [("lapi", c.lapi_url.as_str())];
            gauges(
                &mut e,
                "blocker_crowdsec_up",
                "Whether the last pull from the CrowdSec LAPI succeeded (its decisions stay in force when not).",
                None,
                [(lapi, u64::from(c.failing_since.is_none() && c.last_success.is_some()))],
            )?;
            gauges(
                &mut e,
                "blocker_crowdsec_last_success_timestamp",
                "When a pull from the CrowdSec LAPI last succeeded (Unix time).",
                Some(Unit::Seconds),
                c.last_success.map(|t| (lapi, t)),
            )?;
            gauges(
                &mut e,
                "blocker_crowdsec_decisions",
                "CrowdSec decisions in force (a country decision bans many prefixes).",
                None,
                [(lapi, c.decisions as u64)],
            )?;
            counters(
                &mut e,
                "blocker_crowdsec_pulls",
                "Pulls from the CrowdSec LAPI since the start, by result.",
                [
                    ([("lapi", c.lapi_url.as_str()), ("result", "ok")], c.pulls_ok),
                    ([("lapi", c.lapi_url.as_str()), ("result", "error")], c.pulls_failed),
                ],
            )?;
            counters(
                &mut e,
                "blocker_crowdsec_decisions_skipped",
                "CrowdSec decisions not enforced since the start, by reason (malformed, scope, type, filtered, \
                 expired, unknown_country, full).",
                c.skipped
                    .iter()
                    .map(|(r, n)| ([("lapi", c.lapi_url.as_str()), ("reason", r.as_str())], *n))
                    .chain([([("lapi", c.lapi_url.as_str()), ("reason", "full")], c.refused_full)]),
            )?;
        }
        if let Some(f) = &self.facts.fleet {
            let labels = [("fleet", f.fleet.as_str()), ("group", f.group.as_str())];
            gauges(
                &mut e,
                "blocker_fleet_revision",
                "The revision of the fleet's bundle in force on this host.",
                None,
                [(labels, f.revision)],
            )?;
            // Ages at the scrape, not at the last sync.
            let now = crate::clock::wall_ms() / 1000;
            let since = f.last_sync.map(|t| now.saturating_sub(t));
            gauges(
                &mut e,
                "blocker_fleet_last_sync_timestamp",
                "When the group's pointer was last read from etcd (Unix time).",
                Some(Unit::Seconds),
                f.last_sync.map(|t| (labels, t)),
            )?;
            gauges(
                &mut e,
                "blocker_fleet_seconds_since_sync",
                "Seconds since the group's pointer was last read from etcd.",
                None,
                since.map(|s| (labels, s)),
            )?;
            let stale = f.etcd_error.is_some() || since.is_none_or(|s| s > crate::fleet::host::STALE_AFTER.as_secs());
            gauges(
                &mut e,
                "blocker_fleet_stale",
                "1 when etcd cannot be read, or was not for a while: a newer bundle may exist (the one in force \
                 stays).",
                None,
                [(labels, u64::from(stale))],
            )?;
            gauges(
                &mut e,
                "blocker_fleet_bundle_refused",
                "1 when the last bundle offered was refused (its signature, its revision, or its config).",
                None,
                [(labels, u64::from(f.refused.is_some()))],
            )?;
        }
        counters(
            &mut e,
            "blocker_metrics_connections_closed",
            "Connections to this endpoint it could not keep, by reason: idle (open without a request while \
             every slot was taken: closed to make room for a new one) or busy (every slot was answering a \
             scrape: refused).",
            [
                ([("reason", "idle")], self.facts.endpoint.evicted.load(std::sync::atomic::Ordering::Relaxed)),
                ([("reason", "busy")], self.facts.endpoint.refused.load(std::sync::atomic::Ordering::Relaxed)),
            ],
        )?;
        gauges(
            &mut e,
            "blocker_build_info",
            "Always 1; the labels say which blocker runs.",
            None,
            [([("version", env!("CARGO_PKG_VERSION"))], 1u64)],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{dataplane::maps::ListCounters, policy::Action};

    fn scrape() -> Scrape {
        let counters = Counters {
            mode: Mode::Enforce,
            events_per_second: 100,
            events: crate::dataplane::maps::EventCounters { sent: 4, rate_limited: 6, ring_full: 1 },
            program_id: Some(7),
            global: [10, 5, 0, 2, 1, 3],
            outbound: [4, 1, 0, 0, 0, 2],
            lists: vec![
                ListCounters {
                    id: 0,
                    scope: "default".into(),
                    name: "country:DE".into(),
                    action: Some(Action::Drop),
                    live: true,
                    flags: 0,
                    packets: 5,
                    bytes: 320,
                },
                ListCounters {
                    id: 1,
                    scope: "default".into(),
                    name: "old".into(),
                    action: Some(Action::Drop),
                    live: false,
                    flags: 0,
                    packets: 9,
                    bytes: 9,
                },
            ],
            attached_here: Some(true),
            outbound_here: None,
            outbound_ahead: Vec::new(),
            xdp_tx: None,
        };
        Scrape {
            facts: DaemonFacts {
                lists: vec![ListFacts { scope: "default".into(), name: "country:DE".into(), prefixes: (3, 1) }],
                reloads_succeeded: 2,
                reloads_failed: 1,
                last_load: Some(LoadFacts { at: 1_700_000_000.5, ok: false, duration_seconds: 0.25 }),
                ..Default::default()
            },
            interfaces: vec![InterfaceScrape {
                name: "eth0".into(),
                mode: Mode::Enforce,
                attached: true,
                counters: Some(counters),
                map_memory_bytes: Some(4096),
            }],
            sources: vec![SourceScrape {
                source: "https://example.net/l.txt".into(),
                last_success: Some(1_700_000_000),
                fetch_failures: Some(3),
            }],
        }
    }

    #[test]
    fn the_exposition_holds_each_contracted_series() {
        let text = scrape().encode();
        for line in [
            r#"blocker_list_packets_total{interface="eth0",direction="inbound",scope="default",list="country:DE",action="drop"} 5"#,
            r#"blocker_list_bytes_total{interface="eth0",direction="inbound",scope="default",list="country:DE",action="drop"} 320"#,
            r#"blocker_packets_total{interface="eth0",direction="inbound",verdict="passed"} 10"#,
            r#"blocker_packets_total{interface="eth0",direction="inbound",verdict="malformed"} 1"#,
            r#"blocker_packets_total{interface="eth0",direction="inbound",verdict="rejected"} 3"#,
            r#"blocker_packets_total{interface="eth0",direction="outbound",verdict="passed"} 4"#,
            r#"blocker_packets_total{interface="eth0",direction="outbound",verdict="rejected"} 2"#,
            r#"blocker_events_total{interface="eth0"} 4"#,
            r#"blocker_events_dropped_total{interface="eth0",reason="rate_limited"} 6"#,
            r#"blocker_events_dropped_total{interface="eth0",reason="ring_full"} 1"#,
            r#"blocker_table_prefixes{scope="default",list="country:DE",family="ipv4"} 3"#,
            r#"blocker_table_prefixes{scope="default",list="country:DE",family="ipv6"} 1"#,
            r#"blocker_map_memory_bytes{interface="eth0"} 4096"#,
            r#"blocker_interface_attached{interface="eth0",mode="enforce"} 1"#,
            r#"blocker_reloads_total{result="success"} 2"#,
            r#"blocker_reloads_total{result="failure"} 1"#,
            "blocker_last_reload_success 0",
            "blocker_last_reload_timestamp_seconds 1700000000.5",
            "blocker_last_reload_duration_seconds 0.25",
            r#"blocker_source_last_success_timestamp_seconds{source="https://example.net/l.txt"} 1700000000"#,
            r#"blocker_source_fetch_failures_total{source="https://example.net/l.txt"} 3"#,
            &format!(r#"blocker_build_info{{version="{}"}} 1"#, env!("CARGO_PKG_VERSION")),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("list=\"old\""), "a retired list has no series:\n{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        let mut s = scrape();
        let evil = "evil\"} 1\nblocker_interface_attached{interface=\"evil\\";
        s.interfaces[0].counters.as_mut().unwrap().lists[0].name = evil.into();
        let text = s.encode();
        let escaped = r#"list="evil\"} 1\nblocker_interface_attached{interface=\"evil\\""#;
        assert!(text.contains(escaped), "{text}");
        assert_eq!(text.lines().filter(|l| l.starts_with("blocker_interface_attached")).count(), 1, "{text}");
    }

    #[test]
    fn the_classic_format_names_counters_with_total_and_keeps_every_sample() {
        let open = scrape().encode();
        let classic = scrape().encode_as(Format::Classic);
        assert!(classic.contains("# TYPE blocker_list_packets_total counter\n"), "{classic}");
        assert!(classic.contains("# HELP blocker_reloads_total Reloads since the start"), "{classic}");
        assert!(classic.contains("# TYPE blocker_map_memory_bytes gauge\n"), "{classic}");
        assert!(!classic.contains("# UNIT") && !classic.contains("# EOF"), "{classic}");
        let samples = |t: &str| t.lines().filter(|l| !l.starts_with('#')).map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(samples(&classic), samples(&open));
    }

    #[test]
    fn a_fleet_hosts_revision_sync_age_and_staleness_are_exposed() {
        let now = crate::clock::wall_ms() / 1000;
        let fleet = crate::control::protocol::FleetStatus {
            fleet: "edge".into(),
            group: "can\"ary".into(),
            revision: 7,
            last_sync: Some(now - 5),
            ..Default::default()
        };
        let with = |f: crate::control::protocol::FleetStatus| {
            let mut s = scrape();
            s.facts.fleet = Some(f);
            s.encode()
        };
        let text = with(fleet.clone());
        for line in [
            r#"blocker_fleet_revision{fleet="edge",group="can\"ary"} 7"#,
            r#"blocker_fleet_stale{fleet="edge",group="can\"ary"} 0"#,
            r#"blocker_fleet_bundle_refused{fleet="edge",group="can\"ary"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        let age = text
            .lines()
            .find_map(|l| l.strip_prefix(r#"blocker_fleet_seconds_since_sync{fleet="edge",group="can\"ary"} "#));
        assert!(age.is_some_and(|a| a.parse::<u64>().unwrap() >= 5), "{text}");
        // etcd failing, or no sync for long: stale.
        let stale = r#"blocker_fleet_stale{fleet="edge",group="can\"ary"} 1"#;
        let failing = crate::control::protocol::FleetStatus { etcd_error: Some("down".into()), ..fleet.clone() };
        assert!(with(failing).contains(stale));
        assert!(with(crate::control::protocol::FleetStatus { last_sync: Some(now - 3600), ..fleet }).contains(stale));
    }
}
