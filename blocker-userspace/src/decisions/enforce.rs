//! The store's bans in the kernel: every interface's pinned ban maps
//! (`dataplane::bans`) hold what the store holds. The prefix lengths the
//! program probes are widened before bans are written and narrowed after
//! they are removed, so that no ban is ever written where the program would
//! not look for it.

use std::collections::HashMap;

use blocker_common::bans::{BanEntry, NEVER};

use super::{store::Store, Ban};
use crate::{
    clock,
    dataplane::{
        bans::{length_words, BanKey, BanMapError},
        maps::{DataplaneMaps, MapsError},
    },
    net::Prefix,
};

/// Why the kernel's maps could not follow the store.
#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    #[error("{iface}: {error}")]
    Map { iface: String, error: BanMapError },
    #[error("{iface}: {error}")]
    Maps { iface: String, error: Box<MapsError> },
}

/// One interface's maps, by name.
pub struct Target<'a> {
    pub iface: &'a str,
    pub maps: &'a mut DataplaneMaps,
}

fn entry(ban: &Ban, list_id: u32) -> BanEntry {
    BanEntry { expires_ns: ban.expires_ns.unwrap_or(NEVER), packets: 0, list_id, action: ban.action.code() }
}

/// The list ids of origins, per interface: an origin keeps its id for good
/// (reloads never retire it), so it is looked up in the pins once.
pub type OriginIds = HashMap<(String, String), u32>;

/// Writes the store's bans of `prefixes` into every target's maps.
pub fn put(targets: &mut [Target<'_>], store: &Store, prefixes: &[Prefix]) -> Result<(), EnforceError> {
    put_with(targets, store, prefixes, &mut OriginIds::new())
}

/// `put`, with origin ids remembered in `ids` across calls.
pub fn put_with(
    targets: &mut [Target<'_>],
    store: &Store,
    prefixes: &[Prefix],
    ids: &mut OriginIds,
) -> Result<(), EnforceError> {
    let words = length_words(store.prefixes());
    for t in targets.iter_mut() {
        let iface = t.iface.to_owned();
        let map_err = |error| EnforceError::Map { iface: iface.clone(), error };
        let bans = t.maps.bans_mut();
        // Widen first: the old lengths and the new.
        let old = bans.lengths();
        let wide: Vec<u64> = old.iter().zip(&words).map(|(a, b)| a | b).collect();
        bans.set_lengths(wide.try_into().expect("same length")).map_err(&map_err)?;
        // The filter bits first: the program looks a ban up only where its bit is set.
        let bans = t.maps.bans_mut();
        for p in prefixes {
            bans.filter_add(p);
        }
        for p in prefixes {
            let Some(ban) = store.get(p) else { continue };
            let key = (iface.clone(), ban.origin.clone());
            let id = match ids.get(&key) {
                Some(id) => *id,
                None => {
                    let id = t
                        .maps
                        .origin_id(&ban.origin)
                        .map_err(|error| EnforceError::Maps { iface: iface.clone(), error: Box::new(error) })?;
                    ids.insert(key, id);
                    id
                }
            };
            t.maps.bans_mut().put(&BanKey::of(p), entry(ban, id)).map_err(&map_err)?;
        }
        t.maps.bans_mut().set_lengths(words).map_err(&map_err)?;
    }
    Ok(())
}

/// Removes `prefixes` (no longer in the store) from every target's maps.
pub fn remove(targets: &mut [Target<'_>], store: &Store, prefixes: &[Prefix]) -> Result<(), EnforceError> {
    let words = length_words(store.prefixes());
    for t in targets.iter_mut() {
        let iface = t.iface.to_owned();
        let map_err = |error| EnforceError::Map { iface: iface.clone(), error };
        let bans = t.maps.bans_mut();
        for p in prefixes {
            bans.remove(&BanKey::of(p)).map_err(&map_err)?;
        }
        bans.set_lengths(words).map_err(&map_err)?;
        // Removed bans leave their filter bits set (a wasted lookup, never a
        // miss) until enough of them make a rebuild worth its 2 MiB.
        bans.stale_bits += prefixes.len();
        if bans.stale_bits > store.len() / 4 + 4096 {
            bans.filter_rebuild(store.prefixes());
        }
    }
    Ok(())
}

/// What `reconcile` found in an interface's maps.
#[derive(Debug, Default)]
pub struct Reconciled {
    /// Bans the maps held that the store did not (a lost state file): kept.
    pub adopted: Vec<Ban>,
    /// Bans the maps held that the store had removed, or that had expired.
    pub removed: usize,
    /// Bans of the store written into the maps.
    pub written: usize,
}

/// At start: makes `target`'s maps hold what the store holds. With
/// `adopt`, bans found in the maps and not in the store (its state file was
/// lost) are returned, with nothing changed, to be added to the store before
/// a second call: never dropped.
pub fn reconcile(target: &mut Target<'_>, store: &Store, adopt: bool) -> Result<Reconciled, EnforceError> {
    let iface = target.iface.to_owned();
    let map_err = |error| EnforceError::Map { iface: iface.clone(), error };
    let now = clock::boot_ns();
    let mut out = Reconciled::default();
    let names: HashMap<u32, String> = match crate::dataplane::maps::ListDirectory::open(&target.maps.dir) {
        Ok(d) => d.entries().unwrap_or_default().into_iter().map(|e| (e.id, e.name)).collect(),
        Err(_) => HashMap::new(),
    };
    let found = target.maps.bans().entries();
    let mut held: HashMap<Prefix, BanEntry> = HashMap::new();
    for (key, e) in found {
        let p = key.prefix();
        let live = e.holds_at(now);
        match store.get(&p) {
            None if adopt && live => out.adopted.push(Ban {
                prefix: p,
                expires_ns: (e.expires_ns != NEVER).then_some(e.expires_ns),
                origin: names.get(&e.list_id).cloned().unwrap_or_else(|| super::DEFAULT_ORIGIN.into()),
                reason: "found in the pinned maps (the state file was lost)".into(),
                action: if e.action == blocker_common::ACTION_REJECT {
                    super::BanAction::Reject
                } else {
                    super::BanAction::Drop
                },
            }),
            None => {
                target.maps.bans_mut().remove(&key).map_err(&map_err)?;
                out.removed += 1;
            }
            Some(_) => {
                held.insert(p, e);
            }
        }
    }
    if !out.adopted.is_empty() {
        return Ok(out);
    }
    let stale: Vec<Prefix> = store
        .iter()
        .filter(|b| {
            held.get(&b.prefix)
                .is_none_or(|e| e.expires_ns != b.expires_ns.unwrap_or(NEVER) || e.action != b.action.code())
        })
        .map(|b| b.prefix)
        .collect();
    out.written = stale.len();
    target.maps.bans_mut().filter_rebuild(store.prefixes());
    put(std::slice::from_mut(target), store, &stale)?;
    Ok(out)
}
