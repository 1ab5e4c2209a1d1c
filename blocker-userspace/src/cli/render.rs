//! The text the CLI prints for what the daemon and the pins answer.

use std::fmt::Write as _;

use blocker::{
    clock::{age_text, unix_secs},
    control::{
        protocol::{BanReply, BansReply, InterfaceStats, StatusReply, UnbanReply},
        report::{AsnDetail, AsnList, ConfigReport, LookupReport, RegionDetail, RegionsList, Verdict},
    },
    events::Event,
};
use blocker_common::counter;

/// `blocker stats` for one interface.
pub(crate) fn stats_text(c: &InterfaceStats) -> String {
    let iface = &c.interface;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{iface}: mode {}, program {}",
        c.mode.description(),
        c.program_id.map_or("none".into(), |id| id.to_string())
    );
    if c.attached_here == Some(false) {
        let _ = writeln!(
            s,
            "  NOT ATTACHED to the device named {iface} here: its traffic is not filtered (see `blocker status`)"
        );
    }
    let totals: Vec<String> =
        counter::NAMES.iter().enumerate().map(|(i, name)| format!("{name} {}", c.total(i as u32))).collect();
    let _ = writeln!(s, "  totals (packets): {}", totals.join(", "));
    // Outbound (tc egress): shown once the policy has outbound lists, or counted any.
    if c.outbound_here.is_some() || c.outbound_totals.values().any(|v| *v > 0) {
        let totals: Vec<String> = counter::NAMES
            .iter()
            .enumerate()
            .map(|(i, name)| format!("{name} {}", c.outbound_total(i as u32)))
            .collect();
        let _ = writeln!(s, "  outbound totals (packets): {}", totals.join(", "));
        if c.outbound_here == Some(false) {
            let _ = writeln!(
                s,
                "  OUTBOUND NOT ATTACHED to the device named {iface} here: outbound lists are not enforced"
            );
        }
        if !c.outbound_ahead.is_empty() {
            let names: Vec<String> = c.outbound_ahead.iter().map(ToString::to_string).collect();
            let _ = writeln!(
                s,
                "  OUTBOUND NOT FIRST: {} program(s) run before blocker's on the tc egress and can pass packets \
                 around the outbound lists: {}",
                names.len(),
                names.join(", ")
            );
        }
    }
    if let Some(tx) = &c.xdp_tx {
        if c.total(counter::REJECTED) > 0 || tx.lost.is_some_and(|n| n > 0) {
            let count = |n: Option<u64>| n.map_or("not counted".into(), |n| n.to_string());
            let _ = writeln!(
                s,
                "  reject answers on the device ({} driver, since it came up): sent {}, lost {}{}",
                tx.driver,
                count(tx.sent),
                count(tx.lost),
                if tx.lost.is_some_and(|n| n > 0) { " (see `blocker status`)" } else { "" }
            );
        }
    }
    let e = &c.events;
    match c.events_per_second {
        0 => {
            let _ = writeln!(s, "  events: off");
        }
        rate => {
            let _ = writeln!(
                s,
                "  events ({rate}/s per CPU at most): {} sampled, {} not sampled (rate limit), {} lost (ring full)",
                e.sent, e.rate_limited, e.ring_full
            );
        }
    }
    if c.lists.is_empty() {
        let _ = writeln!(s, "  no lists");
        return s;
    }
    let _ = writeln!(s, "  {:>4}  {:<8} {:>14} {:>16}  list", "id", "action", "packets", "bytes");
    for l in &c.lists {
        let action = l.action.as_deref().unwrap_or("?");
        let _ = writeln!(
            s,
            "  {:>4}  {:<8} {:>14} {:>16}  {}{}{}",
            l.id,
            action,
            l.packets,
            l.bytes,
            l.name,
            blocker::policy::scope_suffix(&l.scope),
            if l.live { "" } else { " (retired)" }
        );
    }
    s
}

/// A data source as text: its name, and the date of its data when known.
fn source_text(src: &blocker::control::report::RegionDataSource) -> String {
    format!("{}{}", src.name, src.date.as_deref().map(|d| format!(", data of {d}")).unwrap_or_default())
}

pub(crate) fn regions_list(list: &RegionsList) -> String {
    let mut s = String::new();
    for src in &list.sources {
        let _ = writeln!(s, "# source: {}", source_text(src));
    }
    let _ = writeln!(s, "{:<4} {:<40} {:>8} {:>8}  source", "code", "name", "ipv4", "ipv6");
    for r in &list.regions {
        let _ = writeln!(
            s,
            "{:<4} {:<40} {:>8} {:>8}  {}",
            r.code,
            r.name.as_deref().unwrap_or("-"),
            r.ipv4_prefixes,
            r.ipv6_prefixes,
            r.sources.join(", ")
        );
    }
    s
}

/// `blocker fleet status` as text.
pub(crate) fn fleet_status(r: &super::commands::FleetReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "fleet {}: latest revision {}", r.fleet, r.latest);
    for (g, rev) in &r.groups {
        let _ = writeln!(s, "group {g}: revision {rev}");
    }
    if r.hosts.is_empty() && r.groups.is_empty() && r.latest == 0 {
        let _ = writeln!(s, "nothing of fleet {} is in etcd (no bundle, group or host): check its name", r.fleet);
    } else if r.hosts.is_empty() {
        let _ = writeln!(s, "no host has reported yet");
    }
    for h in &r.hosts {
        let _ = writeln!(
            s,
            "host {} (group {}): {}{}{}{}",
            h.host,
            h.group,
            h.revision.map_or("no revision applied".to_string(), |r| format!("revision {r}")),
            h.applied_at.as_deref().map(|t| format!(", applied {t}")).unwrap_or_default(),
            h.error.as_deref().map(|e| format!(", ERROR: {e}")).unwrap_or_default(),
            if h.alive { "" } else { " -- NOT ALIVE (its lease expired)" }
        );
    }
    s
}

/// `regions list --asn` as text: one line per system.
pub(crate) fn asn_list(list: &AsnList) -> String {
    let mut s = String::new();
    for src in &list.sources {
        let _ = writeln!(s, "# source: {}", source_text(src));
    }
    let _ =
        writeln!(s, "{:<12} {:>8} {:>8} {:>12} {:>14}  organisation", "asn", "ipv4", "ipv6", "ipv4 addrs", "ipv6 /64s");
    for a in &list.systems {
        let _ = writeln!(
            s,
            "{:<12} {:>8} {:>8} {:>12} {:>14}  {}",
            format!("AS{}", a.asn),
            a.ipv4_prefixes,
            a.ipv6_prefixes,
            a.ipv4_addresses,
            a.ipv6_nets64,
            a.org.as_deref().unwrap_or("-")
        );
    }
    s
}

pub(crate) fn asn_show(a: &AsnDetail) -> String {
    let mut s = String::new();
    let x = &a.summary;
    let _ = writeln!(s, "AS{} {}", x.asn, x.org.as_deref().unwrap_or(""));
    let _ = writeln!(
        s,
        "ipv4 prefixes: {} ({} addresses), ipv6 prefixes: {} ({} /64s)",
        x.ipv4_prefixes, x.ipv4_addresses, x.ipv6_prefixes, x.ipv6_nets64
    );
    let sources: Vec<String> = a.sources.iter().map(source_text).collect();
    let _ = writeln!(s, "source: {}", sources.join("; "));
    for p in &a.prefixes {
        let _ = writeln!(s, "{p}");
    }
    s
}

pub(crate) fn region_show(r: &RegionDetail) -> String {
    let mut s = String::new();
    let r0 = &r.summary;
    let _ = writeln!(s, "{} {}", r0.code, r0.name.as_deref().unwrap_or(""));
    let _ = writeln!(s, "ipv4 prefixes: {}, ipv6 prefixes: {}", r0.ipv4_prefixes, r0.ipv6_prefixes);
    let _ = writeln!(s, "source: {}", r0.sources.join(", "));
    for p in &r.prefixes {
        let _ = writeln!(s, "{p}");
    }
    s
}

/// `blocker lookup` as text.
pub(crate) fn lookup_text(report: &LookupReport) -> String {
    let mut s = String::new();
    let in_list = |v: &Verdict| v.list.as_deref().map_or("in no list".into(), |l| format!("list {l}"));
    for a in &report.addresses {
        let _ = writeln!(s, "{}", a.address);
        let regions: Vec<String> = a
            .regions
            .iter()
            .map(|r| format!("{}{}", r.code, r.name.as_deref().map(|n| format!(" ({n})")).unwrap_or_default()))
            .collect();
        let _ = writeln!(s, "  regions: {}", if regions.is_empty() { "none".into() } else { regions.join(", ") });
        let asns: Vec<String> = a
            .asns
            .iter()
            .map(|x| format!("AS{}{}", x.asn, x.org.as_deref().map(|o| format!(" ({o})")).unwrap_or_default()))
            .collect();
        let _ =
            writeln!(s, "  network: {}", if asns.is_empty() { "no AS announces it".into() } else { asns.join(", ") });
        if a.policy.is_empty() {
            let _ = writeln!(s, "  policy: none given (pass the options of `blocker run` to evaluate one)");
        }
        // One scope for all traffic reads as it did before scopes; the
        // outbound lists are named by their direction.
        let outbound = |d: &str| d == "outbound";
        let inbound_scopes = a.policy.iter().filter(|p| !outbound(&p.direction)).count();
        let scoped = inbound_scopes > 1 || a.policy.iter().any(|p| !outbound(&p.direction) && p.ports != "all traffic");
        for p in &a.policy {
            let scope = if outbound(&p.direction) {
                ", outbound (as a destination)".into()
            } else if scoped {
                format!(", scope {} ({})", p.scope, p.ports)
            } else {
                String::new()
            };
            let _ = writeln!(s, "  policy{scope}: {} -> {}", in_list(&p.verdict), p.verdict.action);
        }
        let live_scoped = a.live.iter().any(|l| l.scope != blocker::policy::DEFAULT_SCOPE && !outbound(&l.direction));
        for l in &a.live {
            let agrees = match l.agrees {
                Some(true) => " (agrees with the policy given)",
                Some(false) => " (DIFFERS from the policy given: reload the daemon?)",
                None => "",
            };
            let not_here = if l.attached_here {
                ""
            } else {
                " -- but NOT ATTACHED to the device named so here: its traffic passes"
            };
            let scope = if outbound(&l.direction) {
                ", outbound (as a destination)".into()
            } else if live_scoped {
                format!(", scope {}", l.scope)
            } else {
                String::new()
            };
            let monitored = if l.outcome == "monitor" && l.verdict.action != "monitor" {
                " (the interface is in monitor mode: counted as monitored, passed)"
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "  live on {}{scope}: {} -> {}{monitored}{agrees}{not_here}",
                l.interface,
                in_list(&l.verdict),
                l.verdict.action
            );
        }
        for b in &a.bans {
            let left = b.remaining_seconds.map_or("until unbanned".to_string(), |r| format!("{} left", remaining(r)));
            let wins = b
                .overridden_by
                .as_deref()
                .map_or(String::new(), |l| format!(" -- but list {l} wins over bans: it passes"));
            let _ =
                writeln!(s, "  banned on {}: {} by {}, {}, {left}{wins}", b.interface, b.target, b.origin, b.action);
        }
    }
    s
}

/// The scopes' lines of status and check-config, (name, traffic) in the order
/// they are tried, the outbound lists (if any) last and named by direction.
/// True: the inbound policy has scopes (lists are named with theirs).
fn scope_lines(s: &mut String, scopes: &[(&str, &str)]) -> bool {
    let outbound = |name: &str| name == blocker::policy::OUTBOUND_SCOPE;
    let inbound: Vec<&(&str, &str)> = scopes.iter().filter(|(n, _)| !outbound(n)).collect();
    let scoped = inbound.len() > 1 || inbound.iter().any(|(_, ports)| *ports != "all traffic");
    if scoped {
        for (i, (name, ports)) in inbound.iter().enumerate() {
            let _ = writeln!(s, "scope {name} (tried {}): {ports}", ordinal(i + 1));
        }
    }
    for (_, ports) in scopes.iter().filter(|(n, _)| outbound(n)) {
        let _ = writeln!(s, "outbound lists: {ports} (tc egress)");
    }
    scoped
}

/// What follows a list's name in status and check-config: its scope when the
/// inbound policy has scopes (`default` included), the outbound lists always.
fn list_suffix(scope: &str, scoped: bool) -> String {
    if scoped && scope == blocker::policy::DEFAULT_SCOPE {
        return format!(" (scope {scope})");
    }
    blocker::policy::scope_suffix(scope)
}

/// `blocker check-config` as text.
pub(crate) fn check_config_text(r: &ConfigReport) -> String {
    const MIB: f64 = (1u64 << 20) as f64;
    let mut s = String::new();
    let _ = writeln!(s, "{}: {}", r.config, if r.valid { "valid" } else { "NOT VALID" });
    for i in &r.interfaces {
        let here = if i.present_here {
            ""
        } else {
            " (no such interface on this host: `blocker run` would refuse to start here)"
        };
        let _ = writeln!(s, "interface {}: xdp mode {}, {}{here}", i.name, i.xdp_mode, i.mode.description());
    }
    let _ = writeln!(s, "pins under {}", r.pin_root);
    if let Some(socket) = &r.socket {
        let _ = writeln!(s, "control socket {socket}");
    }
    if let Some(f) = &r.fleet {
        let _ = writeln!(s, "fleet: {f}");
    }
    if let Some(c) = &r.crowdsec {
        let _ = writeln!(s, "crowdsec: {c}");
    }
    if let Some(a) = &r.asn_data {
        let _ = writeln!(s, "asn data: {a}");
    }
    let _ = match &r.metrics_listen {
        Some(addr) => writeln!(s, "metrics: http://{addr}/metrics"),
        None => writeln!(s, "metrics: off (daemon.metrics_listen)"),
    };
    let _ = match r.events_per_second {
        0 => writeln!(s, "events: off (daemon.events_per_second = 0)"),
        n => writeln!(s, "events: at most {n} per second and CPU on each interface"),
    };
    if r.lists.iter().any(|l| l.action == "reject") {
        let _ = match r.reject_per_second {
            0 => writeln!(s, "rejects: dropped, never answered (policy.reject_per_second = 0)"),
            n => writeln!(s, "rejects: answered, at most {n} per second on each interface"),
        };
    }
    let names: Vec<(&str, &str)> = r.scopes.iter().map(|sc| (sc.name.as_str(), sc.ports.as_str())).collect();
    let scoped = scope_lines(&mut s, &names);
    if scoped {
        let everything =
            names.iter().any(|(n, ports)| *n != blocker::policy::OUTBOUND_SCOPE && *ports == "all traffic");
        if !everything {
            let _ = writeln!(s, "other traffic: passes (no scope takes it)");
        }
        let _ = writeln!(
            s,
            "packets whose port cannot be read (later fragments, cut or long IPv6 header chains, AH, ESP): judged by \
             every scope that could take them, the strictest verdict"
        );
    }
    for src in &r.sources {
        let how = match (&src.refresh, src.watch_debounce_ms) {
            (Some(refresh), _) => format!("refreshed every {refresh}"),
            (None, Some(ms)) => format!("reloaded {ms} ms after it changes"),
            (None, None) => "not watched (reload with SIGHUP or `blocker reload`)".into(),
        };
        let _ = writeln!(s, "source {}: {how}", src.source);
    }
    for n in &r.never_block {
        let _ = writeln!(s, "never blocked: {} ({})", n.prefix, n.why);
    }
    for l in &r.lists {
        let scope = list_suffix(&l.scope, scoped);
        let _ = writeln!(
            s,
            "list {}{scope}: {} -> {} IPv4 + {} IPv6 ranges in the table",
            l.name, l.action, l.ipv4_ranges, l.ipv6_ranges
        );
    }
    let t = &r.table;
    let _ = writeln!(
        s,
        "table: {} IPv4 + {} IPv6 ranges; classifier maps {:.1} MiB of the {:.1} MiB budget (table_memory)",
        t.ipv4_ranges,
        t.ipv6_ranges,
        t.classifier_bytes as f64 / MIB,
        t.budget_bytes as f64 / MIB,
    );
    for w in &r.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    s
}

/// "1st", "2nd", "3rd", "4th", ...
fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (1, 11) | (2, 12) | (3, 13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// `blocker status` as text.
pub(crate) fn status_text(v: &StatusReply) -> String {
    const MIB: f64 = (1u64 << 20) as f64;
    let mut s = String::new();
    if let Some(c) = &v.config {
        let _ = writeln!(s, "config: {c}");
    }
    for i in &v.interfaces {
        let _ = writeln!(
            s,
            "interface {}: {}, program id {}, mode {}, table {:.1} MiB, maps {:.1} MiB of kernel memory",
            i.name,
            i.attached,
            i.program_id.map_or("null".into(), |id| id.to_string()),
            i.mode.name(),
            i.table_bytes.unwrap_or(0) as f64 / MIB,
            i.map_memory_bytes.unwrap_or(0) as f64 / MIB
        );
        if let Some(outbound) = &i.outbound {
            let _ = writeln!(s, "interface {} outbound: {outbound}", i.name);
        }
        if let Some(answers) = &i.answers {
            let _ = writeln!(s, "interface {} reject answers: {answers}", i.name);
        }
    }
    let names: Vec<(&str, &str)> = v.scopes.iter().map(|sc| (sc.name.as_str(), sc.ports.as_str())).collect();
    let scoped = scope_lines(&mut s, &names);
    for l in &v.lists {
        let scope = list_suffix(&l.scope, scoped);
        let _ = writeln!(
            s,
            "list {}{scope}: {} ({} IPv4 + {} IPv6 ranges)",
            l.name, l.action, l.ipv4_ranges, l.ipv6_ranges
        );
    }
    for src in &v.sources {
        let age = src.age_seconds.map_or("unknown".to_string(), age_text);
        let how = match (src.watched, src.refresh.as_deref()) {
            (Some(true), _) => ", reloaded when it changes".to_string(),
            (_, Some("off")) => ", not refreshed".to_string(),
            (_, Some(r)) => format!(", refreshed every {r}"),
            _ => String::new(),
        };
        let _ = writeln!(s, "source {}: last changed {age} ago{how}", src.source);
        if let Some(held) = &src.held {
            let _ = writeln!(s, "  HELD: {held}");
        }
    }
    let bans: usize = v.bans.values().sum();
    if bans > 0 {
        let by: Vec<String> = v.bans.iter().map(|(o, n)| format!("{o} {n}")).collect();
        let _ = writeln!(s, "bans: {bans} in force ({}); `blocker bans` lists them", by.join(", "));
    } else {
        let _ = writeln!(s, "bans: none");
    }
    if let Some(c) = &v.crowdsec {
        let _ = writeln!(s, "{}", crowdsec_line(c, blocker::clock::wall_ms() / 1000));
    }
    if let Some(f) = &v.fleet {
        let _ = writeln!(s, "{}", fleet_line(f));
    }
    let events = &v.events;
    let _ = match (&events.error, events.events_per_second) {
        (Some(e), _) => writeln!(s, "events: NOT READ: {e}"),
        (None, 0) => writeln!(s, "events: off (events_per_second = 0)"),
        (None, rate) => writeln!(s, "events: sampled, at most {rate} per second and CPU on each interface"),
    };
    match &v.last_reload {
        None => {
            let _ = writeln!(s, "last reload: none since start");
        }
        Some(r) => {
            let ago = age_text(unix_secs(std::time::SystemTime::now()).saturating_sub(r.at));
            let when = format!("{ago} ago, on {}", r.trigger);
            if r.ok {
                let _ = writeln!(s, "last reload: ok ({when}): {}", r.summary.as_deref().unwrap_or(""));
            } else {
                let _ = writeln!(s, "last reload: FAILED ({when}): {}", r.error.as_deref().unwrap_or(""));
            }
        }
    }
    s
}

/// One event of `blocker events`, as a line of text.
pub(crate) fn event_line(e: &Event) -> String {
    let list = e.list.clone().unwrap_or_else(|| format!("id {}", e.list_id));
    let l4 = match (e.dst_port, &e.l4) {
        (Some(port), _) => format!("{}/{port}", e.protocol_name),
        (None, Some(why)) => format!("{} ({why})", e.protocol_name),
        (None, None) => e.protocol_name.clone(),
    };
    format!("{} {} {} {} list {list} {l4} {} bytes", e.time, e.interface, e.verdict, e.source, e.frame_len)
}

/// `blocker ban`: what the bans did, and what wins over them.
pub(crate) fn ban_text(replies: &Vec<BanReply>) -> String {
    let mut s = String::new();
    let (mut added, mut extended, mut kept) = (0, 0, 0);
    for r in replies {
        added += r.outcome.added;
        extended += r.outcome.extended;
        kept += r.outcome.kept;
    }
    let interfaces = replies.last().map(|r| r.interfaces.join(", ")).unwrap_or_default();
    let _ =
        writeln!(s, "banned: {added} new, {extended} extended, {kept} already banned longer; enforced on {interfaces}");
    for w in replies.iter().flat_map(|r| &r.warnings) {
        let _ = writeln!(s, "note: {w}");
    }
    s
}

pub(crate) fn unban_text(r: &UnbanReply) -> String {
    let mut s = format!("unbanned: {}\n", r.removed);
    if !r.not_banned.is_empty() {
        let shown: Vec<&str> = r.not_banned.iter().take(10).map(String::as_str).collect();
        let more = r.not_banned.len().saturating_sub(10);
        let _ = write!(s, "not banned: {}", shown.join(", "));
        if more > 0 {
            let _ = write!(s, " and {more} more");
        }
        s.push('\n');
    }
    s
}

/// `blocker bans`: a table, soonest expiry first.
pub(crate) fn bans_text(r: &BansReply) -> String {
    let mut s = String::new();
    let origins: Vec<String> = r.origins.iter().map(|(o, n)| format!("{o} {n}")).collect();
    let total: usize = r.origins.values().sum();
    let _ = writeln!(
        s,
        "{total} bans in force{}; at most {} IPv4 and {} IPv6; state file {}",
        if origins.is_empty() { String::new() } else { format!(" ({})", origins.join(", ")) },
        r.max_ipv4,
        r.max_ipv6,
        r.state_file
    );
    if r.bans.is_empty() {
        return s;
    }
    let _ =
        writeln!(s, "{:<43} {:>10} {:<7} {:>10}  {:<16} REASON", "TARGET", "REMAINING", "ACTION", "PACKETS", "ORIGIN");
    for b in &r.bans {
        let remaining = match b.remaining_seconds {
            None => "never".to_string(),
            Some(secs) => remaining(secs),
        };
        let _ = writeln!(
            s,
            "{:<43} {:>10} {:<7} {:>10}  {:<16} {}",
            b.target, remaining, b.action, b.packets, b.origin, b.reason
        );
    }
    s
}

/// Seconds left, in the largest unit that keeps it short.
fn remaining(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 172_800 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// `status`'s lines about the fleet.
pub(crate) fn fleet_line(f: &blocker::control::protocol::FleetStatus) -> String {
    let mut line = format!(
        "fleet: {} group {} as host {}: revision {} (published {}, applied {}, from {})",
        f.fleet, f.group, f.host, f.revision, f.published, f.applied_at, f.source
    );
    let since = f
        .seconds_since_sync
        .map_or("never since the start".to_owned(), |s| format!("{} ago", blocker::clock::age_text(s)));
    if f.stale {
        let why = f.etcd_error.as_deref().unwrap_or("no sync for a while");
        line.push_str(&format!(
            "\n  STALE: last sync with etcd {since} ({why}); revision {} stays in force, a newer one may exist",
            f.revision
        ));
    } else {
        line.push_str(&format!("\n  in sync with etcd ({}), last sync {since}", f.etcd.join(",")));
    }
    if let Some(r) = &f.refused {
        line.push_str(&format!("\n  REFUSED: {r}; revision {} stays in force", f.revision));
    }
    line
}

/// `status`'s line about the CrowdSec feed, at Unix time `now`.
pub(crate) fn crowdsec_line(c: &blocker::control::protocol::CrowdsecStatus, now: u64) -> String {
    let ago = |t: u64| format!("{} ago", blocker::clock::age_text(now.saturating_sub(t)));
    let mut line = match (c.failing_since, c.last_success) {
        (None, Some(t)) => {
            format!("crowdsec: LAPI {}: in sync, last pull {}; {} decisions in force", c.lapi_url, ago(t), c.decisions)
        }
        (None, None) => format!("crowdsec: LAPI {}: first pull under way", c.lapi_url),
        (Some(since), last) => format!(
            "crowdsec: LAPI {}: STALE: pulls fail since {} ({}); the {} decisions in force stay and expire on time; \
             last good pull: {}",
            c.lapi_url,
            ago(since),
            c.last_error.as_deref().unwrap_or("?"),
            c.decisions,
            last.map_or("never since the start".to_string(), ago)
        ),
    };
    let skipped: Vec<String> = c.skipped.iter().filter(|(_, n)| **n > 0).map(|(r, n)| format!("{r} {n}")).collect();
    if !skipped.is_empty() {
        line.push_str(&format!("; not enforced: {}", skipped.join(", ")));
    }
    if c.refused_full > 0 {
        line.push_str(&format!("; {} REFUSED: the ban map is full", c.refused_full));
    }
    if let Some(u) = &c.usage_metrics {
        line.push_str(&format!("\n  usage metrics: {u}"));
    }
    line
}
