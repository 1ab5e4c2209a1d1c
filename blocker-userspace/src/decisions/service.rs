//! The daemon's side of bans: the control requests (`ban`, `unban`, `bans`),
//! expiry, and the start that brings the pinned maps and the state file
//! together. Every change goes to the state file first, then to every
//! interface; a request is answered once every interface enforces it.

use std::path::Path;

use blocker_common::{bans::NEVER, LIST_SHIELDS_BANS};

use super::{
    enforce::{self, Target},
    store::{AddError, Store},
    Ban, BanAction, BanError, DEFAULT_ORIGIN,
};
use crate::{
    clock,
    control::protocol::{BanReply, BanRequest, BanStatus, BansReply, UnbanReply},
    dataplane::bans::BanKey,
    net::{Family, Prefix},
};

/// The daemon's bans and where they are enforced.
pub struct Bans {
    store: Store,
    /// What wins over bans in the policy in force (`set_shields`).
    shields: Shields,
    origin_ids: enforce::OriginIds,
    /// Bans refused because a map was full, since the start (a metric).
    pub refused_full: u64,
}

/// The store of `state_dir`, as its state file left it, with the maps' size.
pub fn open_store(state_dir: &Path) -> Result<(Store, Vec<String>), super::store::StateFileError> {
    Store::open(state_dir, [blocker_common::bans::DEFAULT_MAX_BANS; 2])
}

impl Bans {
    /// Reads the state file (opened before anything was attached, so that a
    /// bad one refuses the start with nothing changed: `open_store`) and makes
    /// every target's maps hold its bans; bans found only in the maps (a lost
    /// state file) are kept. Returns the service and what to log.
    pub fn start(opened: (Store, Vec<String>), targets: &mut [Target<'_>]) -> anyhow::Result<(Bans, Vec<String>)> {
        let (mut store, mut notes) = opened;
        let had_file = store.path().exists();
        for t in targets.iter_mut() {
            let first = enforce::reconcile(t, &store, !had_file)?;
            if !first.adopted.is_empty() {
                notes.push(format!(
                    "{}: {} bans found in the pinned maps and not in {} (lost?): kept, and written to it",
                    t.iface,
                    first.adopted.len(),
                    store.path().display()
                ));
                store.add(first.adopted).map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            let done = enforce::reconcile(t, &store, false)?;
            if done.removed > 0 || done.written > 0 {
                notes.push(format!(
                    "{}: bans brought in line with {}: {} written, {} removed (expired or unbanned)",
                    t.iface,
                    store.path().display(),
                    done.written,
                    done.removed + first.removed
                ));
            }
        }
        if !store.is_empty() {
            notes.push(format!("{} bans in force (state file {})", store.len(), store.path().display()));
        }
        Ok((Bans { store, shields: Shields::default(), origin_ids: enforce::OriginIds::new(), refused_full: 0 }, notes))
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The policy now in force (at start and after each reload).
    pub fn set_shields(&mut self, shields: Shields) {
        self.shields = shields;
    }

    /// `blocker ban`: all targets or none.
    pub fn ban(&mut self, req: BanRequest, targets: &mut [Target<'_>]) -> Result<BanReply, String> {
        if req.targets.is_empty() {
            return Err(BanError::Empty.to_string());
        }
        let origin = req.origin.clone().unwrap_or_else(|| DEFAULT_ORIGIN.into());
        super::check_origin(&origin).map_err(|e| e.to_string())?;
        let reason: std::sync::Arc<str> =
            super::clean_reason(req.reason.as_deref().unwrap_or("")).map_err(|e| e.to_string())?.into();
        let expires_ns = match req.for_secs {
            None => None,
            Some(s) if s == 0 || s > super::MAX_BAN.as_secs() => {
                return Err(BanError::BadDuration { secs: s }.to_string())
            }
            Some(s) => Some(clock::boot_ns().saturating_add(s.saturating_mul(1_000_000_000))),
        };
        let client = req.client.as_deref().and_then(|c| c.parse().ok());
        let mut bans = Vec::with_capacity(req.targets.len());
        for t in &req.targets {
            let prefix = super::parse_target(t).map_err(|e| e.to_string())?;
            if !req.force {
                super::check_lockout(&prefix, client).map_err(|e| e.to_string())?;
            }
            let action = if req.reject { BanAction::Reject } else { BanAction::Drop };
            bans.push(Ban { prefix, expires_ns, origin: origin.clone(), reason: reason.clone(), action });
        }
        let warnings = self.shields.warnings(&bans);
        let (outcome, changed) = match self.store.add(bans) {
            Ok(done) => done,
            Err(AddError::Refused(e @ BanError::Full { .. })) => {
                self.refused_full += 1;
                return Err(e.to_string());
            }
            Err(e) => return Err(e.to_string()),
        };
        if let Err(e) = enforce::put_with(targets, &self.store, &changed, &mut self.origin_ids) {
            // Undone where it can be: the new bans leave the store and the maps.
            let _ = self.store.remove(&changed);
            let _ = enforce::remove(targets, &self.store, &changed);
            return Err(format!("{e}; nothing was banned"));
        }
        Ok(BanReply { ok: true, outcome, interfaces: targets.iter().map(|t| t.iface.to_owned()).collect(), warnings })
    }

    /// `blocker unban`: every origin's bans of the targets given; or, with
    /// `origin`, only that origin's (of the targets, or all of them when no
    /// target is given: fail2ban's flush). A prefix another origin holds stays
    /// banned by it.
    pub fn unban(
        &mut self,
        given: &[String],
        origin: Option<&str>,
        targets: &mut [Target<'_>],
    ) -> Result<UnbanReply, String> {
        let mut prefixes = Vec::with_capacity(given.len());
        for t in given {
            prefixes.push(super::parse_target(t).map_err(|e| e.to_string())?);
        }
        let Some(o) = origin else {
            if prefixes.is_empty() {
                return Err("nothing to unban: give ADDR or CIDR arguments, or --origin NAME".into());
            }
            let removed = self.store.remove(&prefixes).map_err(|e| e.to_string())?;
            enforce::remove(targets, &self.store, &removed).map_err(|e| e.to_string())?;
            let not_banned =
                prefixes.iter().filter(|p| !removed.contains(p)).map(ToString::to_string).collect::<Vec<_>>();
            return Ok(UnbanReply { ok: true, removed: removed.len(), not_banned });
        };
        super::check_origin(o).map_err(|e| e.to_string())?;
        let holds: Vec<(Prefix, String)> = if prefixes.is_empty() {
            self.store.iter_holds().filter(|b| b.origin == o).map(|b| (b.prefix, o.to_owned())).collect()
        } else {
            prefixes.iter().map(|p| (*p, o.to_owned())).collect()
        };
        let not_banned: Vec<String> = holds
            .iter()
            .filter(|(p, _)| self.store.holds(p).all(|b| b.origin != o))
            .map(|(p, _)| p.to_string())
            .collect();
        self.release(&holds, targets)?;
        Ok(UnbanReply { ok: true, removed: holds.len() - not_banned.len(), not_banned })
    }

    /// Sets holds exactly (a feed's decisions: `Store::set`), in the store and
    /// the maps. Returns how many bans in force changed.
    pub fn set(&mut self, bans: Vec<Ban>, targets: &mut [Target<'_>]) -> Result<usize, AddError> {
        let changed = match self.store.set(bans) {
            Ok(changed) => changed,
            Err(e @ AddError::Refused(BanError::Full { .. })) => {
                self.refused_full += 1;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        if let Err(e) = enforce::put_with(targets, &self.store, &changed, &mut self.origin_ids) {
            // The maps follow the store at the next change or start; the
            // journal already holds these.
            log::error!("bans not written to the maps: {e}");
        }
        Ok(changed.len())
    }

    /// Ends the holds given (prefix, origin), in the store and the maps.
    pub fn release(
        &mut self,
        holds: &[(Prefix, String)],
        targets: &mut [Target<'_>],
    ) -> Result<super::store::Changed, String> {
        let changed = self.store.release(holds).map_err(|e| e.to_string())?;
        enforce::put_with(targets, &self.store, &changed.put, &mut self.origin_ids).map_err(|e| e.to_string())?;
        enforce::remove(targets, &self.store, &changed.removed).map_err(|e| e.to_string())?;
        Ok(changed)
    }

    /// Removes the bans whose time has come from the store and the maps (the
    /// program ignores them already). Returns how many.
    pub fn expire(&mut self, targets: &mut [Target<'_>]) -> Result<usize, String> {
        let gone = self.store.expire(clock::boot_ns());
        if gone.is_empty() {
            return Ok(0);
        }
        enforce::remove(targets, &self.store, &gone).map_err(|e| e.to_string())?;
        Ok(gone.len())
    }

    /// `blocker bans`: soonest expiry first, permanent bans last.
    pub fn list(&self, origin: Option<&str>, targets: &[Target<'_>]) -> BansReply {
        let now_ns = clock::boot_ns();
        let mut bans: Vec<&Ban> = self.store.iter().filter(|b| origin.is_none_or(|o| b.origin == o)).collect();
        bans.sort_by_key(|b| (b.expires_ns.unwrap_or(NEVER), b.prefix));
        let packets = |p: &Prefix| -> u64 {
            targets.iter().filter_map(|t| t.maps.bans().get(&BanKey::of(p))).map(|e| e.packets).sum()
        };
        BansReply {
            ok: true,
            bans: bans
                .into_iter()
                .map(|b| BanStatus {
                    target: b.prefix.to_string(),
                    remaining_seconds: b.expires_ns.map(|e| e.saturating_sub(now_ns).div_ceil(1_000_000_000)),
                    until: b.expires_ns.map(|e| clock::boot_ns_to_wall_ms(e) / 1000),
                    origin: b.origin.clone(),
                    reason: b.reason.to_string(),
                    action: b.action.name().into(),
                    packets: packets(&b.prefix),
                })
                .collect(),
            origins: self.store.origins(),
            max_ipv4: self.store.max(Family::V4),
            max_ipv6: self.store.max(Family::V6),
            state_file: self.store.path().display().to_string(),
        }
    }
}

/// The ranges of the policy in force whose pass wins over bans: never-block
/// ranges and allow lists, per inbound scope (sorted, disjoint, as the table
/// holds them). Kept from each load of the table, so that `blocker ban` says
/// what wins without reading the kernel's table.
#[derive(Default)]
pub struct Shields {
    scopes: Vec<(String, [Vec<Shield>; 2])>,
}

/// A range whose pass wins over bans: first and last address, and its list.
type Shield = (u128, u128, String);

impl Shields {
    pub fn of(policy: &crate::compile::table::CompiledPolicy) -> Shields {
        let scopes = policy
            .scopes
            .iter()
            .filter(|s| !s.outbound)
            .map(|s| {
                let t = &s.table;
                let shields = |family| -> Vec<Shield> {
                    t.entries(family)
                        .iter()
                        .filter(|r| t.lists[r.list].role.list_flags() & LIST_SHIELDS_BANS != 0)
                        .map(|r| (r.lo, r.hi, t.lists[r.list].name.clone()))
                        .collect()
                };
                (s.name.clone(), [shields(Family::V4), shields(Family::V6)])
            })
            .collect();
        Shields { scopes }
    }

    /// What wins over a ban of `p` somewhere in it, in words.
    fn covering(&self, p: &Prefix) -> Vec<String> {
        let (lo, hi) = p.range();
        let mut out: Vec<String> = Vec::new();
        for (scope, families) in &self.scopes {
            let ranges = &families[p.family as usize];
            let first = ranges.partition_point(|r| r.1 < lo);
            for (_, _, name) in ranges[first..].iter().take_while(|r| r.0 <= hi) {
                let what = if name == crate::policy::NEVER_BLOCK {
                    "the never-block ranges".to_string()
                } else {
                    format!("the allow list {name} (scope {scope})")
                };
                if !out.contains(&what) {
                    out.push(what);
                }
            }
        }
        out
    }

    /// For each ban that a never-block range or an allow list overlaps: what
    /// wins there (at most 100 lines).
    fn warnings(&self, bans: &[Ban]) -> Vec<String> {
        let mut out = Vec::new();
        for b in bans {
            let shields = self.covering(&b.prefix);
            if shields.is_empty() {
                continue;
            }
            let one = shields.len() == 1;
            out.push(format!(
                "{}: {} cover{} {} and win{} over bans: its packets there still pass",
                b.prefix,
                shields.join(" and "),
                if one { "s" } else { "" },
                if b.prefix.len == b.prefix.family.bits() { "it" } else { "part of it" },
                if one { "s" } else { "" },
            ));
            if out.len() == 100 {
                break;
            }
        }
        out
    }
}
