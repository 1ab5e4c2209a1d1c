//! The CLI's answers that compute: `blocker lookup` and `blocker check-config`.

use std::{fmt::Write as _, net::IpAddr, path::Path};

use anyhow::Result;

use blocker::{
    compile::table::build_table,
    config::RunOptions,
    dataplane::{device, link, maps::DataplaneMaps, pins},
    net::ip_to_u128,
    policy::Policy,
};

pub(crate) fn lookup(addresses: &[IpAddr], policy: &Policy, pin_root: &Path, iface: Option<&str>) -> Result<String> {
    let db = policy.region_db()?;
    let table = if policy.has_rules() { Some(build_table(policy)?) } else { None };
    let ifaces = match iface {
        Some(i) => vec![i.to_owned()],
        None => pins::pinned_interfaces(pin_root).unwrap_or_default(),
    };
    let mut live = Vec::new();
    for i in ifaces {
        let dir = pins::iface_dir(pin_root, &i);
        match DataplaneMaps::open(&dir) {
            Ok(m) => live.push((i, m.counters().map(|c| c.lists).unwrap_or_default(), m)),
            Err(e) if iface.is_some() => return Err(e.into()),
            Err(_) => {}
        }
    }
    let mut s = String::new();
    for addr in addresses {
        let (family, value) = ip_to_u128(*addr);
        let _ = writeln!(s, "{addr}");
        let regions: Vec<String> = db
            .containing(family, value)
            .iter()
            .map(|r| format!("{}{}", r.code, r.name.as_deref().map(|n| format!(" ({n})")).unwrap_or_default()))
            .collect();
        let _ = writeln!(s, "  regions: {}", if regions.is_empty() { "none".into() } else { regions.join(", ") });
        let expected = table.as_ref().map(|t| match t.lookup(family, value) {
            Some(i) => (Some(t.lists[i].name.clone()), t.lists[i].action.name()),
            None => (None, "pass"),
        });
        match &expected {
            Some((list, action)) => {
                let _ = writeln!(
                    s,
                    "  policy: {} -> {action}",
                    list.as_deref().map_or("in no list".into(), |l| format!("list {l}"))
                );
            }
            None => {
                let _ = writeln!(s, "  policy: none given (pass the options of `blocker run` to evaluate one)");
            }
        }
        for (iface, lists, maps) in &live {
            let (list, action) = match maps.lookup(family, value)? {
                Some((id, action)) => {
                    (lists.iter().find(|l| l.id == id).map(|l| l.name.clone()), action.map_or("pass", |a| a.name()))
                }
                None => (None, "pass"),
            };
            let verdict = match &expected {
                Some((el, ea)) if *el == list && *ea == action => " (agrees with the policy given)",
                Some(_) => " (DIFFERS from the policy given: reload the daemon?)",
                None => "",
            };
            // What the live table says counts only if its program is on the device
            // with the name here.
            let here = link::attached_here(&pins::iface_dir(pin_root, iface), iface);
            let not_here =
                if here { "" } else { " -- but NOT ATTACHED to the device named so here: its traffic passes" };
            let _ = writeln!(
                s,
                "  live on {iface}: {} -> {action}{verdict}{not_here}",
                list.as_deref().map_or("in no list".into(), |l| format!("list {l}"))
            );
        }
    }
    Ok(s)
}

/// What `blocker check-config` prints: the run a config file describes, compiled.
pub(crate) fn check_config(opts: &RunOptions) -> Result<String> {
    // What `run` would refuse, refused here too.
    pins::check_pin_root(&opts.pin_root)?;
    if let Some(socket) = &opts.socket {
        blocker::control::server::check_socket_path(socket)?;
    }
    let table = build_table(&opts.policy)?;
    blocker::dataplane::maps::check_list_count(&table)?;
    let mut s = String::new();
    let path = opts.config.as_deref().map(|p| p.display().to_string()).unwrap_or_default();
    let _ = writeln!(s, "{path}: valid");
    for i in &opts.interfaces {
        // A config is often checked on another host than the one it is for:
        // a missing interface is said, not refused.
        let here = match device::ifindex(&i.name) {
            Ok(_) => "",
            Err(_) => " (no such interface on this host: `blocker run` would refuse to start here)",
        };
        let _ = writeln!(s, "interface {}: xdp mode {}, {}{here}", i.name, i.attach_mode.name(), i.mode.description());
    }
    let _ = writeln!(s, "pins under {}", opts.pin_root.display());
    for path in opts.policy.local_sources() {
        let how = match opts.watch_debounce {
            Some(d) => format!("reloaded {} ms after it changes", d.as_millis()),
            None => "not watched (reload with SIGHUP or `blocker reload`)".into(),
        };
        let _ = writeln!(s, "source {}: {how}", path.display());
    }
    for (url, refresh) in opts.policy.url_sources() {
        let _ = writeln!(s, "source {url}: refreshed every {refresh}");
    }
    for (p, why) in opts.policy.never_block_ranges()? {
        let _ = writeln!(s, "never blocked: {p} ({why})");
    }
    for (l, (v4, v6)) in table.lists.iter().zip(table.ranges_per_list()) {
        let _ = writeln!(s, "list {}: {} -> {v4} IPv4 + {v6} IPv6 ranges in the table", l.name, l.action.name());
    }
    // The same build and budget check as the daemon's reload (list ids in order).
    let image = blocker::compile::classifier::Image::build_for_budget(
        &table.v4,
        &table.v6,
        |l| blocker_common::classifier::leaf(table.lists[l].action.code(), l as u32),
        opts.table_memory,
    )?;
    let _ = writeln!(
        s,
        "table: {} IPv4 + {} IPv6 ranges; classifier maps {:.1} MiB of the {:.1} MiB budget (table_memory)",
        table.v4.len(),
        table.v6.len(),
        image.bytes() as f64 / f64::from(1 << 20),
        opts.table_memory as f64 / f64::from(1 << 20),
    );
    if image.bytes() > opts.table_memory {
        anyhow::bail!("{s}the table is over the table memory budget: raise daemon.table_memory or shorten the lists");
    }
    Ok(s)
}
