//! `blocker run`: attach to interfaces, keep the tables current, stop on signal.

mod fleet;
mod notify;
pub mod triggers;

use std::{
    collections::{BTreeMap, HashSet},
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::Ebpf;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
};

use self::triggers::{FileWatch, UrlSchedule};
use crate::{
    clock::unix_secs,
    compile::table::{build_policy, build_policy_with, CompiledPolicy},
    config::{check_interface_names, InterfaceOptions, RunOptions},
    control::{
        protocol::{
            reply_line, EventsReply, EventsStatus, InterfaceError, InterfaceStats, InterfaceStatus, LastReload,
            ListStatus, Refusal, ReloadReply, Request, RequestError, ScopeStatus, SourceStatus, StatsReply,
            StatusReply,
        },
        server::{accept, control_client, ControlRequest},
    },
    dataplane::{
        device, link,
        maps::{DataplaneMaps, Mode},
        object,
        pins::{self, PinLock},
    },
    decisions::enforce::Target,
    events::{reader::Reader, EventFilter, EventHub},
    metrics::{DaemonFacts, ListFacts, LoadFacts, SharedFacts},
    policy::Policy,
    source::{fetch, input::quote, spec::Refresh},
};

/// How often the daemon looks at its interfaces, source files and URL schedule.
const TICK: Duration = Duration::from_millis(500);
/// How often systemd's status line is sent again besides after each reload.
const STATUS_EVERY: Duration = Duration::from_secs(60);
/// What every refused reload says.
const ABORTED: &str = "reload aborted, the running tables are unchanged";
/// How often a reload that waits for the first copy of a URL is tried again.
const RELOAD_RETRY: Duration = Duration::from_secs(30);
/// The options a reload puts in force (from the config file read again).
struct Reloaded {
    policy: Policy,
    interfaces: Vec<InterfaceOptions>,
    table_memory: u64,
    detach_on_exit: bool,
    events_per_second: u32,
    reject_per_second: u32,
}

/// What `blocker status` reports besides the live maps.
struct State {
    started: SystemTime,
    /// What status shows of the live table, not the table itself: a table of
    /// millions of ranges would double the daemon's memory between reloads.
    lists: Vec<ListSummary>,
    /// The scopes of the policy in force, in the order they are tried.
    scopes: Vec<ScopeStatus>,
    /// When, why (the trigger) and with what result the tables were last reloaded.
    last_reload: Option<(SystemTime, String, Result<String, String>)>,
    /// Reloads tried since the start (whatever their outcome).
    reloads: u64,
    /// Of them, those that failed.
    reloads_failed: u64,
    /// The last load of the table: the start's, then each reload's.
    last_load: LoadFacts,
    /// Failed fetches since the start, by URL.
    fetch_failures: BTreeMap<String, u64>,
    /// Where the metrics endpoint reads the daemon's facts (None: no endpoint).
    facts: Option<SharedFacts>,
    /// Active bans per origin.
    bans: BTreeMap<String, usize>,
    /// Bans refused because a map was full.
    bans_refused_full: u64,
    /// The CrowdSec feed's figures.
    crowdsec: Option<crate::control::protocol::CrowdsecStatus>,
    /// The fleet's, as of the last change (ages are computed when read).
    fleet: Option<crate::control::protocol::FleetStatus>,
}

/// One list of the live table, for status and metrics.
struct ListSummary {
    /// Its scope (`default` outside every scope).
    scope: String,
    name: String,
    action: &'static str,
    v4_ranges: usize,
    v6_ranges: usize,
    /// The table's CIDRs of the list, IPv4 and IPv6.
    prefixes: (usize, usize),
}

fn scope_summaries(policy: &CompiledPolicy) -> Vec<ScopeStatus> {
    policy.scopes.iter().map(|s| ScopeStatus { name: s.name.clone(), ports: CompiledPolicy::describe(s) }).collect()
}

fn list_summaries(policy: &CompiledPolicy) -> Vec<ListSummary> {
    let mut out = Vec::new();
    for scope in &policy.scopes {
        let table = &scope.table;
        out.extend(table.lists.iter().zip(table.ranges_per_list()).zip(table.prefixes_per_list()).map(
            |((l, (v4_ranges, v6_ranges)), prefixes)| ListSummary {
                scope: scope.name.clone(),
                name: l.name.clone(),
                action: l.action.name(),
                v4_ranges,
                v6_ranges,
                prefixes,
            },
        ));
    }
    out
}

/// The end of a load of the table that began at `started`.
fn load_facts(started: Instant, ok: bool) -> LoadFacts {
    let at = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    LoadFacts { at, ok, duration_seconds: started.elapsed().as_secs_f64() }
}

/// What a finished URL refresh reports to the daemon's task.
struct Refreshed {
    url: String,
    /// Whether the copy changed; Err: the fetch failed with no copy to use.
    result: Result<bool, String>,
    /// The fetch failed (a last good copy, if any, stays in use).
    failed: bool,
}

impl State {
    /// Gives the metrics endpoint the daemon's facts as they are now.
    fn publish(&self, opts: &RunOptions) {
        let Some(shared) = &self.facts else { return };
        let mut sources: Vec<String> =
            opts.policy.local_sources().into_iter().map(|p| p.display().to_string()).collect();
        sources.extend(opts.policy.url_sources().into_iter().map(|(url, _)| url));
        let facts = DaemonFacts {
            pin_root: opts.pin_root.clone(),
            cache_dir: opts.policy.cache_dir.clone(),
            interfaces: opts.interfaces.iter().map(|i| (i.name.clone(), i.mode)).collect(),
            lists: self
                .lists
                .iter()
                .map(|l| ListFacts { scope: l.scope.clone(), name: l.name.clone(), prefixes: l.prefixes })
                .collect(),
            reloads_succeeded: self.reloads - self.reloads_failed,
            reloads_failed: self.reloads_failed,
            last_load: Some(self.last_load),
            sources,
            fetch_failures: self.fetch_failures.clone(),
            // The endpoint's own counts go on.
            endpoint: Default::default(),
            bans_active: self.bans.clone(),
            bans_refused_full: self.bans_refused_full,
            crowdsec: self.crowdsec.clone(),
            fleet: self.fleet.clone(),
        };
        let mut f = shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *f = DaemonFacts { endpoint: f.endpoint.clone(), ..facts };
    }

    fn status(&self, opts: &RunOptions, managed: &[Managed], reader: &Result<Reader, String>) -> StatusReply {
        let lists = self
            .lists
            .iter()
            .map(|l| ListStatus {
                scope: l.scope.clone(),
                name: l.name.clone(),
                action: l.action.to_owned(),
                ipv4_ranges: l.v4_ranges,
                ipv6_ranges: l.v6_ranges,
            })
            .collect();
        let interfaces = opts
            .interfaces
            .iter()
            .zip(managed)
            .map(|(spec, m)| {
                let (attached, how) = m.attachment_fact();
                let outbound = m.egress_fact(opts.policy.has_outbound());
                let rejects =
                    self.lists.iter().any(|l| l.action == "reject" && l.scope != crate::policy::OUTBOUND_SCOPE);
                InterfaceStatus {
                    answers: m.answers_fact(rejects),
                    name: m.iface.clone(),
                    present: device::find_interface(&m.iface).ok().map(|i| i.is_some()),
                    attached: how,
                    enforcing: attached && outbound.as_ref().is_none_or(|(on, _)| *on) && spec.mode == Mode::Enforce,
                    outbound: outbound.map(|(_, text)| text),
                    program_id: link::linked_program_id(&m.maps.dir).ok().flatten(),
                    mode: spec.mode,
                    table_bytes: m.maps.table_bytes(),
                    map_memory_bytes: m.maps.memory().ok(),
                }
            })
            .collect();
        let mut sources: Vec<SourceStatus> = opts
            .policy
            .local_sources()
            .into_iter()
            .map(|path| {
                let source = path.display().to_string();
                SourceStatus {
                    age_seconds: source_age(&opts.policy.cache_dir, &source),
                    source,
                    watched: Some(opts.watch_debounce.is_some()),
                    refresh: None,
                    held: None,
                }
            })
            .collect();
        sources.extend(opts.policy.url_sources().into_iter().map(|(url, refresh)| SourceStatus {
            age_seconds: source_age(&opts.policy.cache_dir, &url),
            watched: None,
            refresh: Some(refresh.to_string()),
            held: fetch::held(&url, &opts.policy.cache_dir).map(|h| h.to_string()),
            source: url,
        }));
        StatusReply {
            ok: true,
            started: unix_secs(self.started),
            config: opts.config.as_ref().map(|p| p.display().to_string()),
            interfaces,
            scopes: self.scopes.clone(),
            lists,
            sources,
            bans: self.bans.clone(),
            crowdsec: self.crowdsec.clone(),
            fleet: self.fleet.clone(),
            reloads: self.reloads,
            last_reload: self.last_reload.as_ref().map(|(t, trigger, r)| LastReload {
                at: unix_secs(*t),
                trigger: trigger.clone(),
                ok: r.is_ok(),
                summary: r.as_ref().ok().cloned(),
                error: r.as_ref().err().cloned(),
            }),
            events: EventsStatus {
                events_per_second: opts.events_per_second,
                reading: reader.is_ok(),
                error: reader.as_ref().err().cloned(),
            },
        }
    }
}

/// Seconds since a source last changed: the file's mtime, or a URL's last good fetch.
fn source_age(cache_dir: &std::path::Path, location: &str) -> Option<u64> {
    let path = if crate::source::spec::is_url(location) {
        fetch::cached_copy(location, cache_dir)
    } else {
        PathBuf::from(location)
    };
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    modified.elapsed().ok().map(|d| d.as_secs())
}

/// One interface under this daemon's control.
struct Managed {
    iface: String,
    maps: DataplaneMaps,
    /// The interface's index when the program was attached; None while it is gone.
    ifindex: Option<u32>,
    /// How the program got onto the interface (for status).
    attached: String,
    /// The last attach at `ifindex` failed (logged once, not on every tick).
    attach_failed: bool,
    /// The last lookup of the interface failed (logged once).
    lookup_failed: bool,
    /// The device driver's count of lost XDP_TX frames when blocker attached.
    xdp_tx_lost_at_start: Option<u64>,
    /// Held for the daemon's lifetime: the lock keeps other blocker processes away.
    _lock: PinLock,
}

/// Lists that a reload empties, or that lose more than half of their ranges:
/// applied (a local file is the operator's own), but never in silence.
fn shrink_warnings(before: &[ListSummary], policy: &CompiledPolicy) -> Vec<String> {
    let mut out = Vec::new();
    for after in list_summaries(policy) {
        let Some(old) = before.iter().find(|b| b.name == after.name && b.scope == after.scope) else { continue };
        let (was, now) = (old.v4_ranges + old.v6_ranges, after.v4_ranges + after.v6_ranges);
        if was > 0 && now == 0 {
            out.push(format!("list {} is now empty (it had {was} ranges): nothing of it is blocked", after.name));
        } else if now < was.div_ceil(2) {
            out.push(format!("list {} shrank from {was} to {now} ranges", after.name));
        }
    }
    out
}

/// Config keys that differ between the running options and a reloaded config
/// file, and that only a restart applies.
fn keys_needing_restart(running: &RunOptions, fresh: &RunOptions) -> Vec<String> {
    let mut keys = Vec::new();
    if fresh.ebpf_log_level != running.ebpf_log_level {
        keys.push("daemon.ebpf_log_level".to_string());
    }
    if fresh.state_dir != running.state_dir {
        keys.push("daemon.state_dir".to_string());
    }
    if fresh.crowdsec != running.crowdsec {
        keys.push("crowdsec".to_string());
    }
    let fleet_of = |o: &RunOptions| {
        o.fleet.as_ref().map(|f| {
            (f.endpoints.clone(), f.fleet.clone(), f.group.clone(), f.host.clone(), f.public_key.clone(), f.tls.clone())
        })
    };
    if fleet_of(fresh) != fleet_of(running) {
        keys.push("fleet".to_string());
    }
    if fresh.socket != running.socket {
        keys.push("daemon.socket".to_string());
    }
    if fresh.metrics_listen != running.metrics_listen {
        keys.push("daemon.metrics_listen".to_string());
    }
    if fresh.watch_debounce.is_some() != running.watch_debounce.is_some() {
        keys.push("daemon.watch_files".to_string());
    } else if fresh.watch_debounce != running.watch_debounce {
        keys.push("daemon.watch_debounce".to_string());
    }
    for (new, old) in fresh.interfaces.iter().zip(&running.interfaces) {
        if new.attach_mode != old.attach_mode {
            keys.push(format!("interface {}: xdp_mode", new.name));
        }
    }
    keys
}

fn table_summary(policy: &CompiledPolicy) -> String {
    let (v4, v6) = policy.ranges();
    let scopes = match policy.scopes.len() {
        1 if policy.scopes[0].ports.is_everything() => String::new(),
        n => format!(" in {n} scopes"),
    };
    format!("{v4} IPv4 + {v6} IPv6 ranges from {} lists{scopes}", policy.list_count())
}

/// Logs why the device may drop the answers to rejected packets, if it may.
fn warn_xdp_tx_risk(iface: &str) {
    if let Some(risk) = device::xdp_tx_risk(iface) {
        log::warn!("{risk}");
    }
}

fn memory_text(bytes: u64) -> String {
    format!("classifier maps {:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// An interface on its way up: its pin directory secured and locked, its maps
/// loaded and the table prepared in a new instance, nothing running changed yet.
struct Opening {
    iface: String,
    lock: PinLock,
    maps: DataplaneMaps,
    prepared: crate::dataplane::maps::Prepared,
}

/// First half of a start, done for every interface before any is changed:
/// whatever may be refused here (another blocker holding the lock, a table over
/// the budget, the verifier) leaves every earlier attachment as it was.
fn open_interface(
    opts: &RunOptions,
    spec: &InterfaceOptions,
    table: &CompiledPolicy,
    created: &mut Created,
) -> Result<Opening> {
    let iface = spec.name.as_str();
    let existed = pins::iface_dir(&opts.pin_root, iface).exists();
    let dir = pins::secure_pin_dir(&opts.pin_root, iface)?;
    let lock = PinLock::acquire(&dir, iface)?;
    if !existed {
        created.interface_dirs.push((dir.clone(), lock.try_clone()?));
    }
    let mut maps = DataplaneMaps::load(&dir, opts.ebpf_log_level)?;
    if opts.ebpf_log_level > 0 {
        spawn_ebpf_logger(maps.ebpf_mut()?, iface);
    }
    let prepared = maps.prepare(&table.view(), opts.table_memory, None)?;
    Ok(Opening { iface: iface.into(), lock, maps, prepared })
}

/// Second half: the table in force, the mode, then the program on the link (it
/// filters from its first packet; a link an earlier run pinned gets the new
/// program in the commit already).
fn finish_interface(opts: &RunOptions, spec: &InterfaceOptions, table: &CompiledPolicy, o: Opening) -> Result<Managed> {
    let Opening { iface, lock, mut maps, prepared } = o;
    let report = maps.commit(&table.view(), prepared)?;
    maps.set_mode(spec.mode)?;
    maps.set_events_per_second(opts.events_per_second)?;
    maps.set_reject_per_second(opts.reject_per_second)?;
    let ifindex = device::ifindex(&iface)?;
    let how = link::attach(maps.ebpf_mut()?, &opts.pin_root, &iface, spec.attach_mode)?;
    if table.rejects_inbound() {
        warn_xdp_tx_risk(&iface);
    }
    let xdp_tx_lost_at_start = device::xdp_tx_counters(&iface).ok().and_then(|t| t.lost);
    log::info!(
        "{iface}: {how}; {}, {}; mode {}",
        table_summary(table),
        memory_text(report.table_bytes),
        spec.mode.description()
    );
    Ok(Managed {
        iface,
        maps,
        ifindex: Some(ifindex),
        attached: how.to_string(),
        attach_failed: false,
        lookup_failed: false,
        xdp_tx_lost_at_start,
        _lock: lock,
    })
}

impl Managed {
    /// Keeps the device that has the configured name protected. It checks the
    /// kernel's link, not a remembered index: the device may go and come back (a
    /// new device, a new index), be renamed while another takes its name, or lose
    /// the program to someone else's BPF_LINK_DETACH. The kernel drops an XDP link
    /// with its device, so blocker attaches again, with the maps (tables,
    /// counters) it already has.
    fn check_presence(&mut self, spec: &InterfaceOptions, pin_root: &std::path::Path) {
        let now = match device::find_interface(&self.iface) {
            Ok(now) => {
                self.lookup_failed = false;
                now
            }
            Err(e) => {
                // Not "gone": the lookup itself failed (out of file descriptors?).
                if !std::mem::replace(&mut self.lookup_failed, true) {
                    log::error!("{}: cannot look the interface up ({e}); checking again every tick", self.iface);
                }
                return;
            }
        };
        let at = link::link_at(&self.maps.dir).unwrap_or(link::LinkAt::NoPin);
        let on = match at {
            link::LinkAt::Device(i) => Some(i),
            _ => None,
        };
        let Some(index) = now else {
            if self.ifindex.take().is_some() {
                match at {
                    link::LinkAt::Device(_) | link::LinkAt::Elsewhere(_) => log::warn!(
                        "{}: no interface has that name now; the program stays on {} (renamed or moved?) \
                         until a device named {} appears, then moves to it",
                        self.iface,
                        link::link_place_text(at),
                        self.iface
                    ),
                    _ => log::warn!("{}: interface is gone; blocker attaches again when it comes back", self.iface),
                }
            }
            return;
        };
        if on == Some(index) {
            self.ifindex = Some(index);
            self.attach_failed = false;
            return;
        }
        if self.attach_failed && self.ifindex == Some(index) {
            return; // logged once; `blocker status` shows it
        }
        let why = match self.ifindex {
            None => format!("interface is back (index {index})"),
            Some(old) if old != index => format!("interface is back (index {index})"),
            Some(_) => format!(
                "the program is no longer on the device named {} (index {index}): moved to another namespace, \
                 or detached by something else",
                self.iface
            ),
        };
        self.ifindex = Some(index);
        self.xdp_tx_lost_at_start = device::xdp_tx_counters(&self.iface).ok().and_then(|t| t.lost);
        let attached = self
            .maps
            .ebpf_mut()
            .map_err(anyhow::Error::from)
            .and_then(|ebpf| Ok(link::attach(ebpf, pin_root, &self.iface, spec.attach_mode)?));
        match attached {
            Ok(how) => {
                log::warn!("{}: {why}: {how}", self.iface);
                self.attached = how.to_string();
                self.attach_failed = false;
            }
            Err(e) => {
                log::error!("{}: {why} but attaching failed: {e:#}; restart blocker to retry", self.iface);
                self.attach_failed = true;
            }
        }
    }

    /// What status says of the answers to rejected packets when the policy
    /// rejects (`wanted`): what the device's driver says it lost since blocker
    /// attached, or why the device may drop them.
    fn answers_fact(&self, wanted: bool) -> Option<String> {
        if !wanted {
            return None;
        }
        let risk = device::xdp_tx_risk(&self.iface);
        let tx = device::xdp_tx_counters(&self.iface).ok();
        let lost = tx.as_ref().and_then(|t| t.lost);
        let since_start = lost.map(|n| n.saturating_sub(self.xdp_tx_lost_at_start.unwrap_or(0)));
        Some(match (since_start, risk) {
            (Some(n), risk) if n > 0 => format!(
                "ANSWERS LOST: the driver could not send {n} of them (XDP_TX) since blocker attached; rejected \
                 clients wait for a timeout{}",
                risk.map(|r| format!(" ({r})")).unwrap_or_default()
            ),
            (_, Some(risk)) => format!("AT RISK: {risk}"),
            (Some(_), None) => "sent with XDP_TX; the driver lost none".into(),
            (None, None) => "sent with XDP_TX (the driver does not count lost ones)".into(),
        })
    }

    /// What status says of the egress program when the policy has outbound
    /// lists (`wanted`), checked against the kernel now like the XDP link.
    fn egress_fact(&self, wanted: bool) -> Option<(bool, String)> {
        use crate::dataplane::egress::{egress_at, EgressAt};
        if !wanted {
            return None;
        }
        let here = device::find_interface(&self.iface).ok().flatten();
        Some(match egress_at(&self.maps.dir) {
            Ok(EgressAt::Device { ifindex, ahead, .. }) if Some(ifindex) == here && ahead.is_empty() => {
                (true, "attached (tc egress, TCX), first".into())
            }
            Ok(EgressAt::Device { ifindex, ahead, .. }) if Some(ifindex) == here => {
                let names: Vec<String> = ahead.iter().map(ToString::to_string).collect();
                (
                    false,
                    format!(
                        "NOT FIRST: attached (tc egress, TCX), but {} program(s) run before it and can pass packets \
                         around the outbound lists: {}; the next reload attaches blocker's first again",
                        names.len(),
                        names.join(", ")
                    ),
                )
            }
            Ok(EgressAt::NoPin) => (false, "NOT ATTACHED: no egress program; outbound lists are not enforced".into()),
            Ok(EgressAt::DeviceGone) => (false, "NOT ATTACHED: the egress link's device is gone".into()),
            Ok(EgressAt::Device { ifindex, .. } | EgressAt::Elsewhere(ifindex)) => {
                (false, format!("NOT ATTACHED: the egress program is on index {ifindex}, not on this device"))
            }
            Err(e) => (false, format!("NOT ATTACHED: cannot read the egress link: {e:#}")),
        })
    }

    /// What status says of the attachment, checked against the kernel now: the
    /// pinned link must be on the device that has the configured name.
    fn attachment_fact(&self) -> (bool, String) {
        use link::LinkAt;
        let now = match device::find_interface(&self.iface) {
            Ok(now) => now,
            Err(e) => return (false, format!("UNKNOWN: cannot look the interface up: {e}")),
        };
        match (now, link::link_at(&self.maps.dir)) {
            (Some(i), Ok(LinkAt::Device(l))) if i == l => (true, self.attached.clone()),
            (None, Ok(at @ (LinkAt::Device(_) | LinkAt::Elsewhere(_)))) => (
                false,
                format!(
                    "interface gone; the program stays on {} until a device named {} appears",
                    link::link_place_text(at),
                    self.iface
                ),
            ),
            (None, _) => (false, "interface gone: re-attached when it comes back".into()),
            (Some(i), Ok(at @ (LinkAt::Device(_) | LinkAt::Elsewhere(_)))) => (
                false,
                format!(
                    "NOT ATTACHED: the program is on {}, not on this device (index {i})",
                    link::link_place_text(at)
                ),
            ),
            (Some(_), Ok(LinkAt::NoPin | LinkAt::DeviceGone)) => {
                (false, "NOT ATTACHED: no program on the interface".into())
            }
            (Some(_), Err(e)) => (false, format!("NOT ATTACHED: cannot read the pinned link: {e:#}")),
        }
    }
}

fn spawn_ebpf_logger(ebpf: &mut Ebpf, iface: &str) {
    let logger = match aya_log::EbpfLogger::init(ebpf) {
        Ok(l) => l,
        Err(e) => {
            log::warn!("{iface}: eBPF logs unavailable: {e}");
            return;
        }
    };
    // SAFETY: the logger owns its ring buffer fd for as long as it lives, and the
    // AsyncFd owns the logger.
    let registered = unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            log::warn!("{iface}: eBPF logs unavailable: {e}");
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            let Ok(mut guard) = fd.readable_mut().await else { return };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
}

/// A running daemon: its options, interfaces, and what triggers reloads.
struct Daemon {
    opts: RunOptions,
    managed: Vec<Managed>,
    state: State,
    files: Option<FileWatch>,
    urls: UrlSchedule,
    /// URL refreshes run off the daemon's task (a slow server must not stall the
    /// control socket); each reports here whether its content changed.
    refreshed_tx: tokio::sync::mpsc::UnboundedSender<Refreshed>,
    refreshing: HashSet<String>,
    /// When to try again a reload that waits for the first copy of a URL.
    retry_reload_at: Option<Instant>,
    /// When systemd's status line is due again (its "ago" ages).
    next_status: Instant,
    /// Where the event reader hands events to the streams.
    hub: EventHub,
    /// The event reader (Err: why the rings are not read).
    reader: Result<Reader, String>,
    /// Live decisions: bans, enforced on every interface.
    bans: crate::decisions::service::Bans,
    /// The CrowdSec feed, if one is configured.
    crowdsec: Option<CrowdsecRun>,
    /// The fleet this host follows, if any: its bundle is the policy.
    fleet: Option<fleet::FleetRun>,
}

/// The daemon's side of a CrowdSec feed: its decisions, and the region and
/// ASN data for country and AS decisions (each loaded at the first such
/// decision, from the policy's sources).
struct CrowdsecRun {
    feed: crate::decisions::crowdsec::feed::Feed,
    regions: Option<std::sync::Arc<crate::source::region::db::RegionDb>>,
    asns: Option<std::sync::Arc<crate::source::asn::db::AsnDb>>,
    /// Usage-metrics reports, for the pull thread to send.
    usage_tx: std::sync::mpsc::Sender<serde_json::Value>,
}

/// The region and ASN data of CrowdSec's country and AS decisions, loaded from
/// the policy's sources (cached copies only) at the first decision that needs it.
struct FeedData<'a> {
    policy: &'a Policy,
    regions: &'a mut Option<std::sync::Arc<crate::source::region::db::RegionDb>>,
    asns: &'a mut Option<std::sync::Arc<crate::source::asn::db::AsnDb>>,
}

impl crate::decisions::crowdsec::feed::RegionData for FeedData<'_> {
    fn regions(&mut self) -> Option<std::sync::Arc<crate::source::region::db::RegionDb>> {
        if self.regions.is_none() {
            match self.policy.region_db_cached() {
                Ok(db) => *self.regions = Some(std::sync::Arc::new(db)),
                Err(e) => log::warn!("CrowdSec country decisions: no region data ({e:#})"),
            }
        }
        self.regions.clone()
    }

    fn asns(&mut self) -> Option<std::sync::Arc<crate::source::asn::db::AsnDb>> {
        if self.asns.is_none() {
            match self.policy.asn_db_cached() {
                Ok(db) => *self.asns = Some(std::sync::Arc::new(db)),
                Err(e) => log::warn!("CrowdSec AS decisions: no ASN data ({e:#})"),
            }
        }
        self.asns.clone()
    }
}

impl Daemon {
    /// systemd's status line: what is in force where, and the last reload.
    fn status_line(&self) -> String {
        // What is blocked: the prefixes of the lists that drop.
        let drop = crate::policy::Action::Drop.name();
        let prefixes = self.state.lists.iter().filter(|l| l.action == drop).map(|l| l.prefixes.0 + l.prefixes.1).sum();
        let interfaces: Vec<notify::InterfaceLine<'_>> = self
            .managed
            .iter()
            .zip(&self.opts.interfaces)
            .map(|(m, spec)| notify::InterfaceLine {
                name: &m.iface,
                attached: m.attachment_fact().0
                    && m.egress_fact(self.opts.policy.has_outbound()).is_none_or(|(on, _)| on),
                monitor: spec.mode == Mode::Monitor,
            })
            .collect();
        let last = self.state.last_reload.as_ref().map(|(at, _, result)| (*at, result.is_ok()));
        notify::status_line(prefixes, &interfaces, last)
    }

    /// Re-reads the policy (and the config file, if any) and applies it everywhere;
    /// records the result for `status`. Errors leave the running tables unchanged.
    fn reload(&mut self, trigger: &str) -> Result<String, String> {
        log::info!("reloading ({trigger})");
        self.retry_reload_at = None;
        let sources_before = self.opts.policy.url_sources();
        // Files are stamped before they are read: a change during the reload is
        // seen on the next tick.
        if let Some(w) = &mut self.files {
            w.rebase(&self.opts.policy);
        }
        let started = Instant::now();
        let result = self.try_reload().map_err(|e| format!("{e:#}"));
        if let Err(e) = &result {
            log::error!("{e}");
        }
        if let Some(w) = &mut self.files {
            // A reloaded config file may name other files.
            if self.opts.policy.local_sources() != w.paths() {
                w.rebase(&self.opts.policy);
            }
        }
        if self.opts.policy.url_sources() != sources_before {
            self.urls = UrlSchedule::new(&self.opts.policy, Instant::now());
        }
        self.state.last_reload = Some((SystemTime::now(), trigger.to_owned(), result.clone()));
        self.state.reloads += 1;
        self.state.reloads_failed += u64::from(result.is_err());
        self.state.last_load = load_facts(started, result.is_ok());
        self.state.publish(&self.opts);
        notify::status(&self.status_line());
        result
    }

    fn try_reload(&mut self) -> Result<String> {
        let started = Instant::now();
        // The new options are adopted only once they are applied, so `status`
        // never describes a configuration that is not running.
        let (fresh, restart_keys) = self.reloaded_options()?;
        self.check_cached_copies(&fresh.policy)?;
        let table = build_policy_with(&fresh.policy, fetch::UrlAccess::CachedOnly).context(ABORTED)?;
        let mut warnings = shrink_warnings(&self.state.lists, &table);
        warnings.extend(table.warnings());
        if !restart_keys.is_empty() {
            warnings.push(format!(
                "changed in the config but not applied until blocker restarts: {}",
                restart_keys.join(", ")
            ));
        }
        self.apply_everywhere(&table, &fresh, started)?;
        for w in &warnings {
            log::warn!("{w}");
        }
        let mut summary = table_summary(&table);
        if !warnings.is_empty() {
            summary = format!("{summary}; WARNING: {}", warnings.join("; "));
        }
        self.opts.policy = fresh.policy;
        self.opts.interfaces = fresh.interfaces;
        self.opts.table_memory = fresh.table_memory;
        self.opts.detach_on_exit = fresh.detach_on_exit;
        self.opts.events_per_second = fresh.events_per_second;
        self.opts.reject_per_second = fresh.reject_per_second;
        self.state.lists = list_summaries(&table);
        self.state.scopes = scope_summaries(&table);
        drop(table);
        release_free_memory();
        Ok(summary)
    }

    /// The options a reload applies: the config file read again (what only a
    /// restart can change keeps its running value, and is named), or the running
    /// options when there is no file.
    fn reloaded_options(&self) -> Result<(Reloaded, Vec<String>)> {
        let (mut reloaded, restart_keys) = self.reloaded_local_options()?;
        // A fleet's host enforces the bundle in force (or the one offered),
        // its files checked again against the signed manifest: bytes changed
        // on disk since are never enforced.
        if let Some(f) = &self.fleet {
            let cache_dir = reloaded.policy.cache_dir.clone();
            let files = f.bundle.dir.join("files");
            let tables =
                crate::fleet::bundle::open_unpacked(&f.bundle.manifest, &files, cache_dir.clone()).map_err(|e| {
                    anyhow!(
                        "{ABORTED}: fleet {} revision {}: the bundle's files in {} are not those signed ({e}); \
                         the running table stays (a restart takes the bundle from etcd again)",
                        f.opts.fleet,
                        f.bundle.revision,
                        files.display()
                    )
                })?;
            reloaded.policy = tables.policy;
            reloaded.policy.cache_dir = cache_dir;
            reloaded.reject_per_second = tables.reject_per_second;
        }
        Ok((reloaded, restart_keys))
    }

    fn reloaded_local_options(&self) -> Result<(Reloaded, Vec<String>)> {
        let Some(path) = self.opts.config.clone() else {
            let o = &self.opts;
            let same = Reloaded {
                policy: o.policy.clone(),
                interfaces: o.interfaces.clone(),
                table_memory: o.table_memory,
                detach_on_exit: o.detach_on_exit,
                events_per_second: o.events_per_second,
                reject_per_second: o.reject_per_second,
            };
            return Ok((same, Vec::new()));
        };
        let fresh = crate::config::load(&path).context(ABORTED)?;
        let names = |o: &[InterfaceOptions]| o.iter().map(|i| i.name.clone()).collect::<Vec<_>>();
        if fresh.fleet.is_some() != self.opts.fleet.is_some() {
            bail!(
                "{ABORTED}: [fleet] was added to or removed from {}: where the policy comes from changes only \
                 when blocker restarts",
                path.display()
            );
        }
        if names(&fresh.interfaces) != names(&self.opts.interfaces) || fresh.pin_root != self.opts.pin_root {
            bail!(
                "{ABORTED}: the interfaces or the pin root changed in {}; restart blocker to apply that",
                path.display()
            );
        }
        let restart_keys = keys_needing_restart(&self.opts, &fresh);
        let mut interfaces = fresh.interfaces;
        for (new, old) in interfaces.iter_mut().zip(&self.opts.interfaces) {
            new.attach_mode = old.attach_mode;
        }
        let reloaded = Reloaded {
            policy: fresh.policy,
            interfaces,
            table_memory: fresh.table_memory,
            detach_on_exit: fresh.detach_on_exit,
            events_per_second: fresh.events_per_second,
            reject_per_second: fresh.reject_per_second,
        };
        Ok((reloaded, restart_keys))
    }

    /// A reload reads cached copies only; a URL without one yet (new in the
    /// config) is fetched in the background, and its arrival reloads again. An
    /// optional one is skipped until it arrives; a required one aborts the reload.
    fn check_cached_copies(&mut self, policy: &Policy) -> Result<()> {
        let (missing, missing_optional): (Vec<_>, Vec<_>) = policy
            .url_jobs()
            .into_iter()
            .filter(|j| !fetch::cached_copy(&j.url, &policy.cache_dir).exists())
            .partition(|j| !j.optional);
        self.spawn_fetches(missing_optional);
        if missing.is_empty() {
            return Ok(());
        }
        let urls: Vec<String> = missing.iter().map(|j| j.url.clone()).collect();
        self.spawn_fetches(missing);
        self.retry_reload_at = Some(Instant::now() + RELOAD_RETRY);
        bail!(
            "{ABORTED}: no cached copy yet of {}; fetching in the background: the reload runs again when it \
             arrives, and is retried every {} s until then",
            urls.join(", "),
            RELOAD_RETRY.as_secs()
        );
    }

    /// Puts `table` in force on every interface, with each interface's mode. Every
    /// interface's instance is prepared before any is put in force: a refusal on
    /// the second interface leaves the first as it was. A commit (one
    /// BPF_LINK_UPDATE) that still fails leaves that interface on its previous
    /// table; the others go on, and the error names it.
    fn apply_everywhere(&mut self, table: &CompiledPolicy, fresh: &Reloaded, started: Instant) -> Result<()> {
        let mut prepared = Vec::new();
        for m in &mut self.managed {
            let p = m
                .maps
                .prepare(&table.view(), fresh.table_memory, None)
                .with_context(|| format!("{}: {ABORTED}", m.iface))?;
            prepared.push(p);
        }
        let mut kept_previous = Vec::new();
        // List ids may change their names: the event reader reads them again.
        let _names_changed = ListsChanged(self.reader.as_ref().ok());
        for ((m, spec), prepared) in self.managed.iter_mut().zip(&fresh.interfaces).zip(prepared) {
            let report = match m.maps.commit(&table.view(), prepared) {
                Ok(report) => report,
                Err(e) => {
                    log::error!("{}: the new table could not be put in force: {e:#}", m.iface);
                    kept_previous.push(format!("{} ({e:#})", m.iface));
                    continue;
                }
            };
            m.maps.set_mode(spec.mode)?;
            m.maps.set_events_per_second(fresh.events_per_second)?;
            m.maps.set_reject_per_second(fresh.reject_per_second)?;
            if table.rejects_inbound() && !self.state.lists.iter().any(|l| l.action == "reject") {
                warn_xdp_tx_risk(&m.iface);
            }
            log::info!(
                "{}: reloaded {} ({}, program {}) in {} ms",
                m.iface,
                table_summary(table),
                memory_text(report.table_bytes),
                report.program_id,
                started.elapsed().as_millis()
            );
        }
        // What wins over bans now (in part, where some interfaces kept the
        // previous table: the newer policy is the one status shows too).
        self.bans.set_shields(crate::decisions::service::Shields::of(table));
        // The region data may have changed: country decisions to come read it again.
        if let Some(c) = &mut self.crowdsec {
            c.regions = None;
            c.asns = None;
            c.feed.forget_region_data();
        }
        if !kept_previous.is_empty() {
            self.state.lists = list_summaries(table);
            self.state.scopes = scope_summaries(table);
            bail!(
                "reload applied only in part: {} kept the previous table; every other interface runs the new one",
                kept_previous.join(", ")
            );
        }
        Ok(())
    }

    /// Runs on every tick: interfaces that went or came back, source files that
    /// changed, URLs due for a refresh.
    fn tick(&mut self, now: Instant) {
        let (bans, mut targets) = self.bans_and_targets();
        match bans.expire(&mut targets) {
            Ok(0) => {}
            Ok(n) => {
                log::info!("{n} bans expired");
                self.publish_bans();
            }
            Err(e) => log::warn!("expired bans not removed from the maps: {e} (the program ignores them already)"),
        }
        for (m, spec) in self.managed.iter_mut().zip(&self.opts.interfaces) {
            m.check_presence(spec, &self.opts.pin_root);
        }
        if now >= self.next_status {
            notify::status(&self.status_line());
            self.next_status = now + STATUS_EVERY;
        }
        if let Some(changed) = self.files.as_mut().and_then(|w| w.poll(now)) {
            // A refreshed data directory can change hundreds of files: name a few.
            let mut names: Vec<String> = changed.iter().take(3).map(|p| p.display().to_string()).collect();
            if changed.len() > 3 {
                names.push(format!("and {} more", changed.len() - 3));
            }
            let _ = self.reload(&format!("changed on disk: {}", names.join(", ")));
        }
        if self.retry_reload_at.is_some_and(|at| at <= now) {
            let _ = self.reload("retry: waiting for the first copy of a URL source");
        }
        let due = self.urls.take_due(now);
        if !due.is_empty() {
            let jobs = self.opts.policy.url_jobs().into_iter().filter(|j| due.contains(&j.url));
            self.spawn_fetches(jobs.collect());
        }
    }

    /// Fetches URL sources off the daemon's task (a slow server must not stall
    /// reloads or the control socket); each reports to `refreshed`.
    fn spawn_fetches(&mut self, jobs: Vec<crate::policy::UrlJob>) {
        for job in jobs {
            if !self.refreshing.insert(job.url.clone()) {
                continue;
            }
            let tx = self.refreshed_tx.clone();
            tokio::task::spawn_blocking(move || {
                let fetched = job.fetch();
                // A stale copy without held content: the fetch itself failed.
                let failed = fetched.as_ref().map_or(true, |f| f.stale && f.held.is_none());
                let result = fetched.map(|f| f.changed).map_err(|e| format!("{e:#}"));
                let _ = tx.send(Refreshed { url: job.url, result, failed });
            });
        }
    }

    /// A URL refresh finished: reload when its content changed.
    fn refreshed(&mut self, refreshed: Refreshed) {
        let Refreshed { url, result, failed } = refreshed;
        self.refreshing.remove(&url);
        if failed {
            *self.state.fetch_failures.entry(url.clone()).or_insert(0) += 1;
            self.state.publish(&self.opts);
        }
        match result {
            Ok(true) => {
                let _ = self.reload(&format!("refresh of {url}: content changed"));
            }
            Ok(false) => log::debug!("refresh of {url}: unchanged"),
            Err(e) => log::warn!("refresh of {url} failed: {e}; the running tables are unchanged"),
        }
    }

    /// Answers one control request (see `control`). Requests are answered one at
    /// a time on the daemon's task, so a reload never races another change; each
    /// client's reading and writing happens in its own task (`control_client`).
    fn answer(&mut self, request: Result<Request, RequestError>) -> String {
        let answer = match request {
            Err(error) => reply_line(&Refusal::new(error.to_string())),
            Ok(Request::Status) => {
                // Its ages as of now.
                self.state.fleet = self.fleet.as_ref().map(fleet::FleetRun::status);
                reply_line(&self.state.status(&self.opts, &self.managed, &self.reader))
            }
            Ok(Request::Events { filter }) => match self.events_refusal(&filter) {
                Some(why) => reply_line(&Refusal::new(why)),
                None => reply_line(&EventsReply {
                    ok: true,
                    events_per_second: self.opts.events_per_second,
                    interfaces: self.managed.iter().map(|m| m.iface.clone()).collect(),
                }),
            },
            Ok(Request::Reload { accept_shrink: true }) => self.reload_accepting_held(),
            Ok(Request::Reload { accept_shrink: false }) => match self.reload("blocker reload") {
                Ok(summary) => reply_line(&ReloadReply { ok: true, summary, accepted: None }),
                Err(e) => reply_line(&Refusal::new(e)),
            },
            Ok(Request::Ban(req)) => {
                let (bans, mut targets) = self.bans_and_targets();
                match bans.ban(req, &mut targets) {
                    Ok(r) => {
                        let o = &r.outcome;
                        log::info!(
                            "banned: {} new, {} extended, {} kept their later expiry",
                            o.added,
                            o.extended,
                            o.kept
                        );
                        self.publish_bans();
                        reply_line(&r)
                    }
                    Err(e) => {
                        log::warn!("ban refused: {e}");
                        self.publish_bans();
                        reply_line(&Refusal::new(e))
                    }
                }
            }
            Ok(Request::Unban { targets: given, origin }) => {
                let (bans, mut targets) = self.bans_and_targets();
                let r = bans.unban(&given, origin.as_deref(), &mut targets);
                self.publish_bans();
                match r {
                    Ok(r) => {
                        log::info!("unbanned: {}", r.removed);
                        reply_line(&r)
                    }
                    Err(e) => reply_line(&Refusal::new(e)),
                }
            }
            Ok(Request::Bans { origin }) => {
                let (bans, targets) = self.bans_and_targets();
                reply_line(&bans.list(origin.as_deref(), &targets))
            }
            Ok(Request::Stats) => {
                let mut reply = StatsReply { ok: true, interfaces: Vec::new(), errors: Vec::new() };
                for m in &self.managed {
                    match m.maps.counters() {
                        Ok(c) => {
                            let c = crate::dataplane::maps::with_device_facts(c, &m.maps.dir, &m.iface);
                            reply.interfaces.push(InterfaceStats::new(&m.iface, &c))
                        }
                        Err(e) => {
                            reply.errors.push(InterfaceError { interface: m.iface.clone(), error: format!("{e:#}") })
                        }
                    }
                }
                reply_line(&reply)
            }
        };
        answer
    }

    /// The bans, and every interface's maps to enforce them in.
    /// What the fleet's follower reports: a sync, or a bundle to put in force
    /// (through the same reload as a local config: all or nothing).
    fn fleet_message(&mut self, msg: fleet::FleetMessage) {
        let Some(f) = &mut self.fleet else { return };
        match msg {
            fleet::FleetMessage::Synced(result) => f.synced(result),
            fleet::FleetMessage::Refused(why) => f.refused(why.as_deref()),
            fleet::FleetMessage::Offer(bundle, reply) => {
                let (name, revision) = (f.opts.fleet.clone(), bundle.revision);
                let previous = std::mem::replace(&mut f.bundle, *bundle);
                let result = self.reload(&format!("fleet {name}: revision {revision}"));
                let f = self.fleet.as_mut().expect("the fleet runs");
                match &result {
                    Ok(_) => f.applied(&self.opts.state_dir),
                    Err(e) => {
                        let offered = std::mem::replace(&mut f.bundle, previous);
                        crate::fleet::host::discard(&offered);
                        f.refused(Some(e));
                    }
                }
                let _ = reply.send(result.map(drop));
            }
        }
        self.state.fleet = self.fleet.as_ref().map(fleet::FleetRun::status);
        self.state.publish(&self.opts);
    }

    fn bans_and_targets(&mut self) -> (&mut crate::decisions::service::Bans, Vec<Target<'_>>) {
        let targets = self.managed.iter_mut().map(|m| Target { iface: &m.iface, maps: &mut m.maps }).collect();
        (&mut self.bans, targets)
    }

    /// The bans' figures for status and the metrics.
    fn publish_bans(&mut self) {
        self.state.bans = self.bans.store().origins();
        self.state.bans_refused_full = self.bans.refused_full;
        self.state.crowdsec = self.crowdsec.as_ref().map(|c| c.feed.status.clone());
        self.state.publish(&self.opts);
    }

    /// The CrowdSec pull thread is gone (it never ends on its own): its
    /// decisions stay in force and expire; status says so.
    fn crowdsec_lost(&mut self) {
        let Some(run) = &mut self.crowdsec else { return };
        log::error!(
            "CrowdSec: the pull thread stopped; the decisions in force stay and expire on time; restart blocker"
        );
        let now = crate::clock::wall_ms() / 1000;
        run.feed.status.failing_since.get_or_insert(now);
        run.feed.status.last_error = Some("the pull thread stopped: restart blocker".into());
        self.publish_bans();
    }

    /// A message of the CrowdSec pull thread.
    fn crowdsec_message(&mut self, msg: crate::decisions::crowdsec::client::FeedMessage) {
        let Some(run) = &mut self.crowdsec else { return };
        let mut load = FeedData { policy: &self.opts.policy, regions: &mut run.regions, asns: &mut run.asns };
        let mut targets: Vec<Target<'_>> =
            self.managed.iter_mut().map(|m| Target { iface: &m.iface, maps: &mut m.maps }).collect();
        let full_pull_ended = matches!(&msg, crate::decisions::crowdsec::client::FeedMessage::End(r) if r.startup);
        let changed = run.feed.handle(msg, &mut self.bans, &mut targets, &mut load);
        drop(targets);
        if full_pull_ended {
            // A full pull's batches and journal lines are freed: give them back.
            release_free_memory();
        }
        // Packets dropped per ban origin, from every interface's counters.
        let mut dropped: BTreeMap<String, u64> = BTreeMap::new();
        for m in self.managed.iter().filter(|_| run.feed.usage_is_due()) {
            for l in m.maps.counters().map(|c| c.lists).unwrap_or_default() {
                if l.scope == crate::dataplane::maps::ORIGIN_SCOPE {
                    *dropped.entry(l.name).or_default() += l.packets;
                }
            }
        }
        let started = unix_secs(self.state.started);
        if let Some(report) = run.feed.usage_report(started, &dropped, &self.bans.store().origins()) {
            let _ = run.usage_tx.send(report);
        }
        if changed {
            self.publish_bans();
        }
    }

    /// Why an event stream with `filter` cannot be had, if it cannot.
    fn events_refusal(&self, filter: &EventFilter) -> Option<String> {
        if let Err(e) = &self.reader {
            return Some(format!("the daemon does not read events: {e}"));
        }
        if self.opts.events_per_second == 0 {
            return Some(
                "events are off (events_per_second = 0): set [daemon] events_per_second or \
                 --events-per-second above 0, then reload"
                    .into(),
            );
        }
        let names = |v: Vec<&str>| v.join(", ");
        if let Some(iface) = &filter.iface {
            if !self.managed.iter().any(|m| m.iface == *iface) {
                let ifaces = names(self.managed.iter().map(|m| m.iface.as_str()).collect());
                return Some(format!("no interface {} under this daemon (it runs on {ifaces})", quote(iface)));
            }
        }
        if let Some(list) = &filter.list {
            // A list of the policy, or the origin of bans in force.
            let origin = self.bans.store().origins().contains_key(list.as_str());
            if !origin && !self.state.lists.iter().any(|l| l.name == *list) {
                let mut known: Vec<&str> = self.state.lists.iter().map(|l| l.name.as_str()).take(10).collect();
                if self.state.lists.len() > 10 {
                    known.push("...");
                }
                let origins: Vec<String> = self.bans.store().origins().into_keys().take(10).collect();
                let origins =
                    if origins.is_empty() { String::new() } else { format!("; ban origins: {}", origins.join(", ")) };
                return Some(format!(
                    "no list {} in the policy in force (lists: {}{origins})",
                    quote(list),
                    names(known)
                ));
            }
        }
        None
    }

    /// `reload --accept-shrink`: the held content of every URL becomes its last
    /// good copy, then the reload; if the reload fails, the content is held again.
    fn reload_accepting_held(&mut self) -> String {
        let mut accepted = Vec::new();
        for job in self.opts.policy.url_jobs() {
            match fetch::accept_held(&job.url, &self.opts.policy.cache_dir) {
                Ok(Some(a)) => accepted.push((job.url, a)),
                Ok(None) => {}
                Err(e) => {
                    for (_, a) in accepted {
                        let _ = a.rollback();
                    }
                    return reply_line(&Refusal::new(format!("{e:#}")));
                }
            }
        }
        let names: Vec<String> = accepted.iter().map(|(u, a)| format!("{u} ({} prefixes)", a.prefixes)).collect();
        match self.reload("blocker reload --accept-shrink") {
            Ok(summary) => {
                log::warn!(
                    "accepted held content (--accept-shrink): {}",
                    if names.is_empty() { "none was held".into() } else { names.join(", ") }
                );
                for (_, a) in accepted {
                    a.commit();
                }
                reply_line(&ReloadReply { ok: true, summary, accepted: Some(names) })
            }
            Err(e) => {
                // Nothing is accepted by a reload that did not apply.
                for (url, a) in accepted {
                    if let Err(re) = a.rollback() {
                        log::error!("{url}: cannot put the held content back: {re:#}");
                    }
                }
                reply_line(&Refusal::new(format!("{e}; the held content stays held")))
            }
        }
    }
}

/// Tells the event reader, when dropped, that list ids may have new names:
/// after every commit, whichever way the reload ends.
struct ListsChanged<'a>(Option<&'a Reader>);

impl Drop for ListsChanged<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.0 {
            r.lists_changed();
        }
    }
}

/// The daemon builds tables of hundreds of MiB and then idles for hours: large
/// buffers must go back to the system when they are freed. glibc raises its mmap
/// threshold after each large free, so without a fixed threshold the next
/// table's vectors come from the heap and stay resident.
#[cfg(target_env = "gnu")]
fn fix_malloc_threshold() {
    // SAFETY: mallopt only changes the allocator's tuning.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024) };
}

/// Returns the heap's free pages to the system (after a table is built).
#[cfg(target_env = "gnu")]
fn release_free_memory() {
    // SAFETY: malloc_trim only releases memory that is free.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(not(target_env = "gnu"))]
fn fix_malloc_threshold() {}
#[cfg(not(target_env = "gnu"))]
fn release_free_memory() {}

/// What a start creates (pin directories, the control socket), recorded so that
/// a start that fails leaves nothing behind. Pins that were there before (an
/// attachment from an earlier run, still enforcing) are never touched, and an
/// interface directory counts as ours only once we hold its lock: a second
/// blocker starting at the same moment never removes the first one's.
struct Created {
    /// Levels above the interfaces that did not exist before the start, deepest first.
    dirs: Vec<PathBuf>,
    /// Interface directories this start created, with a handle on their lock.
    interface_dirs: Vec<(PathBuf, PinLock)>,
    socket: Option<PathBuf>,
}

impl Created {
    fn before_start(opts: &RunOptions) -> Self {
        let layout = pins::layout_dir(&opts.pin_root);
        let dirs = [layout, opts.pin_root.clone()].into_iter().filter(|d| !d.exists()).collect();
        Created { dirs, interface_dirs: Vec::new(), socket: None }
    }

    /// Removes what the failed start created: unpinning a link it attached
    /// detaches the program; unpinned maps are freed with their last fd.
    fn remove(self) {
        for (dir, _lock) in &self.interface_dirs {
            if dir.exists() {
                if let Err(e) = pins::remove_pins(dir) {
                    log::error!("the failed start left {}: {e:#}; remove it (rm -r)", dir.display());
                }
            }
        }
        drop(self.interface_dirs);
        for dir in &self.dirs {
            let _ = std::fs::remove_dir(dir); // only if empty
        }
        if let Some(path) = &self.socket {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Runs the daemon until SIGINT/SIGTERM: validate, start, announce, the event
/// loop, then the shutdown.
pub async fn run(mut opts: RunOptions) -> Result<()> {
    fix_malloc_threshold();
    let load_started = Instant::now();
    // A fleet's host: the bundle to start with is the policy.
    let mut fleet_start = match &opts.fleet {
        None => None,
        Some(f) => {
            if f.wait {
                // Waiting for the first bundle: a reload has nothing to reload
                // yet, and SIGHUP's default action would end the daemon.
                // SAFETY: setting a signal's disposition to ignore.
                unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
            }
            let start = crate::fleet::host::starting_bundle(f, &opts.state_dir, &opts.policy.cache_dir)?;
            fleet::adopt(&mut opts, &start.bundle);
            Some(start)
        }
    };
    let (table, pin_life) = match validate(&opts) {
        Ok(v) => v,
        // etcd's newer bundle does not compile here: the last good one does.
        Err(e) => match fleet_start.as_mut().and_then(|s| s.kept.take().map(|k| (s, k))) {
            None => return Err(e),
            Some((start, kept)) => {
                let why = format!("revision {}: {e:#}", start.bundle.revision);
                log::error!("fleet: {why}; the last good bundle is enforced instead");
                crate::fleet::host::discard(&start.bundle);
                start.bundle = kept.bundle;
                start.applied_at = Some(kept.applied_at);
                start.from = crate::fleet::host::StartedFrom::Disk { why: "etcd's bundle was refused".into() };
                start.refused = Some(why);
                fleet::adopt(&mut opts, &start.bundle);
                validate(&opts)?
            }
        },
    };
    // The bans' state file, read before anything is attached: a bad one
    // refuses the start with nothing changed.
    let store = crate::decisions::service::open_store(&opts.state_dir)?;
    // The CrowdSec client's TLS files, read before anything is attached.
    let crowdsec_agent =
        opts.crowdsec.as_ref().map(|c| crate::decisions::crowdsec::client::agent(c, "crowdsec.")).transpose()?;
    // Bound before anything is attached: a taken port changes nothing.
    let metrics = opts.metrics_listen.map(crate::metrics::server::bind).transpose()?;
    let (mut managed, listener) = start(&opts, &table)?;
    // The bans: the state file and the pinned maps brought together before
    // anyone can ask for more.
    let mut targets: Vec<Target<'_>> =
        managed.iter_mut().map(|m| Target { iface: &m.iface, maps: &mut m.maps }).collect();
    let (bans, notes) = crate::decisions::service::Bans::start(store, &mut targets)?;
    drop(targets);
    for n in notes {
        log::info!("{n}");
    }
    // A fleet's bundle files are not watched: they change only with a bundle,
    // and a change on disk is checked against the signed manifest at reload.
    let files = opts.watch_debounce.filter(|_| opts.fleet.is_none()).map(|d| FileWatch::new(&opts.policy, d));
    let urls = UrlSchedule::new(&opts.policy, Instant::now());
    // Handlers first: whoever acts on "ready" may signal at once, and SIGHUP's
    // default action would end the daemon.
    let signals = Signals::install()?;
    let (refreshed_tx, refreshed_rx) = tokio::sync::mpsc::unbounded_channel();
    let state = State {
        started: SystemTime::now(),
        lists: list_summaries(&table),
        scopes: scope_summaries(&table),
        last_reload: None,
        reloads: 0,
        reloads_failed: 0,
        last_load: load_facts(load_started, true),
        fetch_failures: BTreeMap::new(),
        facts: metrics.as_ref().map(|_| SharedFacts::default()),
        bans: BTreeMap::new(),
        bans_refused_full: 0,
        crowdsec: None,
        fleet: None,
    };
    // The fleet's threads start once the bundle is in force.
    let (fleet_run, fleet_rx) = match (&opts.fleet, fleet_start) {
        (Some(f), Some(start)) => {
            let (run, rx) = fleet::FleetRun::started(f, &opts.state_dir, &opts.policy.cache_dir, start)?;
            (Some(run), Some(rx))
        }
        _ => (None, None),
    };
    let mut state = state;
    state.fleet = fleet_run.as_ref().map(fleet::FleetRun::status);
    state.publish(&opts);
    if let (Some(listener), Some(facts)) = (metrics, &state.facts) {
        crate::metrics::server::spawn(listener, facts.clone())?;
        if let Some(addr) = opts.metrics_listen {
            log::info!("metrics: http://{addr}/metrics");
        }
    }
    announce(&opts, files.as_ref());
    let hub = EventHub::default();
    let rings: Vec<(String, PathBuf)> = managed.iter().map(|m| (m.iface.clone(), m.maps.dir.clone())).collect();
    // Events serve observation only: without them the daemon still enforces,
    // and status says why there are none.
    let reader = Reader::spawn(&rings, hub.clone()).map_err(|e| {
        log::error!("drop events unavailable: {e}");
        e.to_string()
    });
    let mut daemon = Daemon {
        state,
        opts,
        managed,
        files,
        urls,
        refreshed_tx,
        refreshing: HashSet::new(),
        retry_reload_at: None,
        next_status: Instant::now() + STATUS_EVERY,
        hub,
        reader,
        bans,
        crowdsec: None,
        fleet: fleet_run,
    };
    let mut crowdsec_rx = None;
    if let (Some(c), Some(agent)) = (&daemon.opts.crowdsec, crowdsec_agent) {
        use crate::decisions::crowdsec::{client, feed::Feed};
        let resync = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Small: the pull thread waits while the daemon applies a batch.
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let (usage_tx, usage_rx) = std::sync::mpsc::channel();
        client::spawn(std::sync::Arc::new(c.clone()), agent, tx, resync.clone(), usage_rx)?;
        log::info!("CrowdSec: pulling decisions from {} every {:?}", c.lapi_url, c.update_frequency);
        daemon.crowdsec = Some(CrowdsecRun {
            feed: Feed::new(&c.lapi_url, c.update_frequency, resync),
            regions: None,
            asns: None,
            usage_tx,
        });
        crowdsec_rx = Some(rx);
    }
    daemon.bans.set_shields(crate::decisions::service::Shields::of(&table));
    daemon.publish_bans();
    // Every interface is attached with its table: systemd may go on.
    notify::ready(&daemon.status_line());
    // Only its summary is kept (see `State`).
    drop(table);
    release_free_memory();
    let daemon = event_loop(daemon, signals, listener, refreshed_rx, crowdsec_rx, fleet_rx).await;
    shutdown(daemon, &pin_life)
}

/// Everything that can be checked before the kernel is touched: the options,
/// the privileges, the lists (read and compiled), the pin root and the interfaces.
fn validate(opts: &RunOptions) -> Result<(CompiledPolicy, pins::PinLife)> {
    if opts.interfaces.is_empty() {
        bail!("no interface given: pass --iface IF");
    }
    check_interface_names(opts.interfaces.iter().map(|i| i.name.as_str())).map_err(|e| anyhow!(e))?;
    object::check_privileges()?;
    // Bad lists fail here, before the kernel is touched.
    let table = build_policy(&opts.policy)?;
    crate::dataplane::maps::check_list_count(&table.view())?;
    if !opts.policy.has_rules() {
        log::warn!("no lists given: every packet passes (see --deny, --deny-country, --allow-country, --deny-asn)");
    }
    for w in table.warnings() {
        log::warn!("{w}");
    }
    for (p, why) in opts.policy.never_block_ranges()? {
        log::info!("never blocked: {p} ({why})");
    }
    if opts.policy.uses_asns() {
        log::info!("ASN data: {}", crate::source::asn::describe_data(&opts.policy.asn_source, &opts.policy.cache_dir));
    }
    pins::ensure_bpffs(&opts.pin_root)?;
    let pin_life = pins::check_pin_life(&opts.pin_root, opts.detach_on_exit)?;
    for iface in &opts.interfaces {
        device::ifindex(&iface.name)?;
    }
    Ok((table, pin_life))
}

/// Binds the control socket and puts `table` in force on every interface. Every
/// interface is opened (locked, loaded, its table prepared) before any is
/// changed. Then interfaces attached afresh come first, those that take over an
/// earlier run's attachment last: an attach that fails leaves the earlier
/// attachments exactly as they were (their tables, their mode). A start that
/// fails removes what it created.
fn start(opts: &RunOptions, table: &CompiledPolicy) -> Result<(Vec<Managed>, Option<tokio::net::UnixListener>)> {
    let mut created = Created::before_start(opts);
    let listener = match &opts.socket {
        Some(path) => Some(crate::control::server::bind(path)?),
        None => None,
    };
    created.socket = opts.socket.clone();
    let mut opening = Vec::new();
    for spec in &opts.interfaces {
        match open_interface(opts, spec, table, &mut created) {
            Ok(o) => opening.push(Some(o)),
            Err(e) => {
                drop(opening);
                drop(listener);
                created.remove();
                return Err(e);
            }
        }
    }
    let mut order: Vec<usize> = (0..opts.interfaces.len()).collect();
    order.sort_by_key(|&i| pins::has_pinned_link(&opts.pin_root, &opts.interfaces[i].name));
    let mut started: Vec<Option<Managed>> = opts.interfaces.iter().map(|_| None).collect();
    for i in order {
        let o = opening[i].take().expect("opened once");
        match finish_interface(opts, &opts.interfaces[i], table, o) {
            Ok(m) => started[i] = Some(m),
            Err(e) => {
                drop(opening);
                drop(started);
                drop(listener);
                created.remove();
                return Err(e);
            }
        }
    }
    // Started: nothing to undo, and its handles on the interface locks must not
    // outlive the daemon's own (detach-on-exit takes them again).
    drop(created);
    Ok((started.into_iter().flatten().collect(), listener))
}

/// The signals the daemon acts on.
struct Signals {
    hup: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self> {
        Ok(Signals {
            hup: signal(SignalKind::hangup())?,
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }
}

/// The ready line: what reloads the lists, and what stopping does.
fn announce(opts: &RunOptions, files: Option<&FileWatch>) {
    let mut triggers = vec!["SIGHUP".to_string()];
    if let Some(p) = &opts.socket {
        triggers.push(format!("`blocker reload` (socket {})", p.display()));
    }
    if let (Some(w), Some(d)) = (files, opts.watch_debounce) {
        if !w.paths().is_empty() {
            triggers.push(format!("a change to a source file ({} ms debounce)", d.as_millis()));
        }
    }
    let refreshes = opts.policy.url_sources().into_iter().filter(|(_, r)| *r != Refresh::Never).count();
    if refreshes > 0 {
        triggers.push(format!("the refresh of {refreshes} URL source(s)"));
    }
    let on_stop = if opts.detach_on_exit {
        "detaches and stops (--detach-on-exit)"
    } else {
        "stops (the program stays attached)"
    };
    log::info!("ready: {} reload the lists; SIGINT/SIGTERM {on_stop}", triggers.join(", "));
}

/// Serves signals, control clients, the tick and finished URL refreshes until
/// SIGINT or SIGTERM.
async fn event_loop(
    mut daemon: Daemon,
    mut signals: Signals,
    listener: Option<tokio::net::UnixListener>,
    mut refreshed_rx: tokio::sync::mpsc::UnboundedReceiver<Refreshed>,
    mut crowdsec_rx: Option<tokio::sync::mpsc::Receiver<crate::decisions::crowdsec::client::FeedMessage>>,
    mut fleet_rx: Option<tokio::sync::mpsc::Receiver<fleet::FleetMessage>>,
) -> Daemon {
    let (control_tx, mut control_rx) = tokio::sync::mpsc::channel::<ControlRequest>(64);
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = signals.hup.recv() => {
                let _ = daemon.reload("SIGHUP");
            }
            conn = accept(&listener) => {
                if let Ok(stream) = conn {
                    tokio::spawn(control_client(stream, control_tx.clone(), daemon.hub.clone()));
                }
            }
            Some((request, reply)) = control_rx.recv() => {
                let _ = reply.send(daemon.answer(request));
            }
            at = ticks.tick() => daemon.tick(at.into_std()),
            Some(refreshed) = refreshed_rx.recv() => daemon.refreshed(refreshed),
            msg = next_of(&mut crowdsec_rx) => match msg {
                Some(msg) => daemon.crowdsec_message(msg),
                // The pull thread ended: said, not left to look like a quiet LAPI.
                None => {
                    crowdsec_rx = None;
                    daemon.crowdsec_lost();
                }
            },
            msg = next_of(&mut fleet_rx) => match msg {
                Some(msg) => daemon.fleet_message(msg),
                // The follower ended (a bug): said, not left to look like a quiet etcd.
                None => {
                    fleet_rx = None;
                    daemon.fleet_message(fleet::FleetMessage::Synced(Err(
                        "the fleet's follower stopped (see the log); restart blocker to follow the fleet again".into(),
                    )));
                }
            },
            _ = signals.int.recv() => break,
            _ = signals.term.recv() => break,
        }
    }
    if let Some(path) = &daemon.opts.socket {
        let _ = std::fs::remove_file(path);
    }
    daemon
}

/// The next message of an optional channel (none: never).
async fn next_of<T>(rx: &mut Option<tokio::sync::mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Detaches (with --detach-on-exit) or says how the program stays attached.
fn shutdown(daemon: Daemon, pin_life: &pins::PinLife) -> Result<()> {
    notify::stopping();
    let Daemon { opts, managed, .. } = daemon;
    if opts.detach_on_exit {
        let ifaces: Vec<String> = managed.iter().map(|m| m.iface.clone()).collect();
        // Release the locks first: detach takes them itself.
        drop(managed);
        for iface in ifaces {
            link::detach(&opts.pin_root, &iface)?;
            log::info!("{iface}: stopping; detached (--detach-on-exit): traffic is no longer filtered");
        }
        return Ok(());
    }
    for m in &managed {
        match pin_life {
            pins::PinLife::Unknown { .. } => log::info!(
                "{}: stopping; the program stays attached and blocking for as long as the bpffs at {} stays \
                 mounted. `blocker detach --iface {}` removes it",
                m.iface,
                opts.pin_root.display(),
                m.iface
            ),
            _ => log::info!(
                "{}: stopping; the program stays attached and blocking. `blocker detach --iface {}` removes it",
                m.iface,
                m.iface
            ),
        }
    }
    Ok(())
}
