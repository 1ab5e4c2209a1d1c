//! The CLI's answers that compute: `blocker lookup` and `blocker check-config`,
//! as the typed reports of `control::report` (printed as text or JSON).

use std::{net::IpAddr, path::Path};

use anyhow::Result;
use blocker_common::classifier::leaf;

use blocker::{
    compile::{
        classifier::build_policy_image,
        table::{build_policy, CompiledPolicy},
    },
    config::RunOptions,
    control::report::{
        AddressLookup, AsnName, ConfigInterface, ConfigList, ConfigReport, ConfigScope, ConfigSource, ConfigTable,
        LiveBan, LiveVerdict, LookupReport, NeverBlocked, RegionName, ScopeVerdict, Verdict,
    },
    dataplane::{
        device, link,
        maps::{DataplaneMaps, Mode},
        pins,
    },
    net::ip_to_u128,
    policy::Policy,
};

pub(crate) fn lookup(
    addresses: &[IpAddr],
    policy: &Policy,
    pin_root: &Path,
    iface: Option<&str>,
) -> Result<LookupReport> {
    let db = policy.region_db()?;
    let asn_db = policy.asn_db()?;
    let compiled = if policy.has_rules() { Some(build_policy(policy)?) } else { None };
    let ifaces = match iface {
        Some(i) => vec![i.to_owned()],
        None => pins::pinned_interfaces(pin_root).unwrap_or_default(),
    };
    let mut live = Vec::new();
    for i in ifaces {
        let dir = pins::iface_dir(pin_root, &i);
        match DataplaneMaps::open(&dir) {
            Ok(m) => {
                let (lists, mode) = m.counters().map(|c| (c.lists, c.mode)).unwrap_or_default();
                // What the live table says counts only if its program is on the
                // device with the name here.
                let here = link::attached_here(&dir, &i);
                let outbound_here = blocker::dataplane::egress::egress_here(&dir, &i).unwrap_or(false);
                let bans = blocker::dataplane::bans::BanMaps::open(&dir).ok();
                live.push((i, lists, mode, m.live_table()?, here && outbound_here, here, bans));
            }
            Err(e) if iface.is_some() => return Err(e.into()),
            Err(_) => {}
        }
    }
    let mut report = LookupReport { addresses: Vec::new() };
    for addr in addresses {
        let (family, value) = ip_to_u128(*addr);
        let regions = db
            .containing(family, value)
            .iter()
            .map(|r| RegionName { code: r.code.clone(), name: r.name.clone() })
            .collect();
        let asns =
            asn_db.containing(family, value).iter().map(|s| AsnName { asn: s.asn.0, org: s.org.clone() }).collect();
        let policy: Vec<ScopeVerdict> = compiled
            .iter()
            .flat_map(|c| &c.scopes)
            .map(|s| {
                let t = &s.table;
                let verdict = match t.lookup(family, value) {
                    Some(i) => Verdict { list: Some(t.lists[i].name.clone()), action: t.lists[i].action.name().into() },
                    None => Verdict { list: None, action: "pass".into() },
                };
                let direction = blocker::policy::direction_of(&s.name).into();
                ScopeVerdict { scope: s.name.clone(), direction, ports: CompiledPolicy::describe(s), verdict }
            })
            .collect();
        let mut verdicts = Vec::new();
        let mut bans = Vec::new();
        for (interface, lists, _, table, _, _, ban_maps) in &live {
            let Some(maps) = ban_maps else { continue };
            let (family, value) = blocker::decisions::unmapped(family, value);
            let now = blocker::clock::boot_ns();
            let Some((prefix, e)) = maps.find(family, value, now) else { continue };
            let overridden_by = table.lookup_in(0, family, value).and_then(|(id, _)| {
                lists
                    .iter()
                    .find(|l| l.id == id && l.flags & blocker_common::LIST_SHIELDS_BANS != 0)
                    .map(|l| l.name.clone())
            });
            bans.push(LiveBan {
                interface: interface.clone(),
                target: prefix.to_string(),
                origin: lists.iter().find(|l| l.id == e.list_id).map_or_else(|| "?".into(), |l| l.name.clone()),
                action: if e.action == blocker_common::ACTION_REJECT { "reject" } else { "drop" }.into(),
                remaining_seconds: (e.expires_ns != blocker_common::bans::NEVER)
                    .then(|| e.expires_ns.saturating_sub(now).div_ceil(1_000_000_000)),
                overridden_by,
            });
        }
        for (interface, lists, mode, table, outbound_here, inbound_here, _) in &live {
            for (i, scope) in table.scopes().iter().enumerate() {
                let outbound = table.outbound() == Some(i as u32);
                let verdict = match table.lookup_in(i as u32, family, value) {
                    Some((id, action)) => Verdict {
                        list: lists.iter().find(|l| l.id == id).map(|l| l.name.clone()),
                        action: action.map_or("pass", |a| a.name()).into(),
                    },
                    None => Verdict { list: None, action: "pass".into() },
                };
                let given = policy.iter().find(|p| p.scope == *scope).map(|p| &p.verdict);
                let refused = matches!(verdict.action.as_str(), "drop" | "reject");
                let outcome = if refused && *mode == Mode::Monitor { "monitor" } else { verdict.action.as_str() };
                verdicts.push(LiveVerdict {
                    mode: *mode,
                    outcome: outcome.to_owned(),
                    interface: interface.clone(),
                    scope: scope.clone(),
                    direction: if outbound { "outbound" } else { "inbound" }.into(),
                    agrees: (!policy.is_empty()).then(|| given == Some(&verdict)),
                    verdict,
                    attached_here: if outbound { *outbound_here } else { *inbound_here },
                });
            }
        }
        report.addresses.push(AddressLookup { address: *addr, regions, asns, policy, live: verdicts, bans });
    }
    Ok(report)
}

/// What `blocker check-config` reports: the run a config file describes,
/// compiled. Err: `run` would refuse the file outright.
pub(crate) fn check_config(opts: &RunOptions) -> Result<ConfigReport> {
    // What `run` would refuse, refused here too.
    pins::check_pin_root(&opts.pin_root)?;
    if let Some(socket) = &opts.socket {
        blocker::control::server::check_socket_path(socket)?;
    }
    let compiled = build_policy(&opts.policy)?;
    blocker::dataplane::maps::check_list_count(&compiled.view())?;
    let interfaces = opts
        .interfaces
        .iter()
        .map(|i| ConfigInterface {
            name: i.name.clone(),
            xdp_mode: i.attach_mode.name().into(),
            mode: i.mode,
            // A config is often checked on another host than the one it is for:
            // a missing interface is said, not refused.
            present_here: device::ifindex(&i.name).is_ok(),
        })
        .collect();
    let mut sources: Vec<ConfigSource> = opts
        .policy
        .local_sources()
        .into_iter()
        .map(|p| ConfigSource {
            source: p.display().to_string(),
            watch_debounce_ms: opts.watch_debounce.map(|d| d.as_millis() as u64),
            refresh: None,
        })
        .collect();
    sources.extend(opts.policy.url_sources().into_iter().map(|(url, refresh)| ConfigSource {
        source: url,
        watch_debounce_ms: None,
        refresh: Some(refresh.to_string()),
    }));
    let never_block = opts
        .policy
        .never_block_ranges()?
        .into_iter()
        .map(|(p, why)| NeverBlocked { prefix: p.to_string(), why: why.into() })
        .collect();
    let scopes = compiled
        .scopes
        .iter()
        .map(|s| ConfigScope { name: s.name.clone(), ports: CompiledPolicy::describe(s) })
        .collect();
    let mut lists = Vec::new();
    for s in &compiled.scopes {
        lists.extend(s.table.lists.iter().zip(s.table.ranges_per_list()).map(|(l, (v4, v6))| ConfigList {
            scope: s.name.clone(),
            name: l.name.clone(),
            action: l.action.name().into(),
            ipv4_ranges: v4,
            ipv6_ranges: v6,
        }));
    }
    // The same build and budget check as the daemon's reload (list ids in order).
    let view = compiled.view();
    let actions: Vec<u32> = view.iter().flat_map(|s| s.table.lists.iter().map(|l| l.action.code())).collect();
    let built = build_policy_image(&view, |i| leaf(actions[i], i as u32), opts.table_memory, None)?;
    let classifier_bytes = built.bytes();
    let over = classifier_bytes > opts.table_memory;
    let (v4_ranges, v6_ranges) = compiled.ranges();
    Ok(ConfigReport {
        config: opts.config.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
        valid: !over,
        error: over.then(|| {
            "the table is over the table memory budget: raise daemon.table_memory or shorten the lists".to_owned()
        }),
        interfaces,
        pin_root: opts.pin_root.display().to_string(),
        socket: opts.socket.as_deref().map(|p| p.display().to_string()),
        metrics_listen: opts.metrics_listen.map(|a| a.to_string()),
        events_per_second: opts.events_per_second,
        reject_per_second: opts.reject_per_second,
        scopes,
        sources,
        never_block,
        lists,
        table: ConfigTable {
            ipv4_ranges: v4_ranges,
            ipv6_ranges: v6_ranges,
            classifier_bytes,
            budget_bytes: opts.table_memory,
        },
        warnings: compiled.warnings(),
        asn_data: (opts.policy.uses_asns()
            || opts.crowdsec.as_ref().is_some_and(|c| c.scopes.contains(&blocker::decisions::crowdsec::Scope::As)))
        .then(|| blocker::source::asn::describe_data(&opts.policy.asn_source, &opts.policy.cache_dir)),
        fleet: opts.fleet.as_ref().map(|f| {
            format!(
                "{} (group {}, host {}), from etcd {}; bundles signed by key {} ({}): the policy is the fleet's \
                 bundle, kept on disk under {}",
                f.fleet,
                f.group,
                f.host,
                f.endpoints.join(","),
                f.public_key.id(),
                f.public_key_path.display(),
                f.base_dir(&opts.state_dir).display()
            )
        }),
        crowdsec: opts.crowdsec.as_ref().map(|c| {
            let scopes: Vec<&str> = c.scopes.iter().map(|s| s.name()).collect();
            let actions: Vec<String> = c.actions.iter().map(|(t, a)| format!("{t} -> {}", a.name())).collect();
            let auth = match (&c.api_key, &c.tls.cert) {
                (Some(_), _) => "an API key",
                (None, Some(_)) => "a client certificate",
                (None, None) => "nothing",
            };
            format!(
                "LAPI {} with {auth}, pulled every {:?} (in full every {}); scopes {}; {}; bans go to the state \
                 directory {}",
                c.lapi_url,
                c.update_frequency,
                c.full_pull_every.map_or("never but at start and after errors".to_string(), |d| format!("{d:?}")),
                scopes.join(", "),
                if actions.is_empty() { "every type ignored".to_string() } else { actions.join(", ") },
                opts.state_dir.display()
            )
        }),
    })
}
