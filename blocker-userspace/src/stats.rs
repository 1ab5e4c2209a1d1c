//! `blocker stats`: counters read straight from the pins, with or without a daemon.

use std::{fmt::Write as _, path::Path};

use anyhow::Result;
use blocker_common::counter;

use crate::{
    loader,
    maps::{Counters, DataplaneMaps},
};

pub fn read(pin_root: &Path, iface: &str) -> Result<Counters> {
    let dir = loader::iface_dir(pin_root, iface);
    if !dir.exists() {
        anyhow::bail!(
            "blocker is not attached to {iface}: no pins under {} (start it with `blocker run --iface {iface} ...`)",
            dir.display()
        );
    }
    let mut counters = DataplaneMaps::open(&dir)?.counters()?;
    // A checked fact, not the pins' word: the link must be on the device that
    // has the name here.
    counters.attached_here = Some(loader::attached_here(&dir, iface));
    Ok(counters)
}

pub fn to_text(iface: &str, c: &Counters) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{iface}: mode {}, program {}",
        if c.mode_monitor { "monitor (dry run)" } else { "enforce" },
        c.program_id.map_or("none".into(), |id| id.to_string())
    );
    if c.attached_here == Some(false) {
        let _ = writeln!(
            s,
            "  NOT ATTACHED to the device named {iface} here: its traffic is not filtered (see `blocker status`)"
        );
    }
    let totals: Vec<String> = counter::NAMES.iter().zip(c.global).map(|(name, v)| format!("{name} {v}")).collect();
    let _ = writeln!(s, "  totals (packets): {}", totals.join(", "));
    if c.lists.is_empty() {
        let _ = writeln!(s, "  no lists");
        return s;
    }
    let _ = writeln!(s, "  {:>4}  {:<8} {:>14} {:>16}  list", "id", "action", "packets", "bytes");
    for l in &c.lists {
        let action = l.action.map_or("?", |a| a.name());
        let _ = writeln!(
            s,
            "  {:>4}  {:<8} {:>14} {:>16}  {}{}",
            l.id,
            action,
            l.packets,
            l.bytes,
            l.name,
            if l.live { "" } else { " (retired)" }
        );
    }
    s
}

pub fn to_json(iface: &str, c: &Counters) -> serde_json::Value {
    let totals: serde_json::Map<String, serde_json::Value> =
        counter::NAMES.iter().zip(c.global).map(|(name, v)| (name.to_string(), v.into())).collect();
    serde_json::json!({
        "interface": iface,
        "mode": if c.mode_monitor { "monitor" } else { "enforce" },
        "program_id": c.program_id,
        "attached_here": c.attached_here,
        "totals": totals,
        "lists": c.lists.iter().map(|l| serde_json::json!({
            "id": l.id,
            "name": l.name,
            "action": l.action.map(|a| a.name()),
            "live": l.live,
            "packets": l.packets,
            "bytes": l.bytes,
        })).collect::<Vec<_>>(),
    })
}
