//! The daemon's bans: the set, its expiry order, and the state file.
//!
//! The state file (`bans.jsonl` in the state directory) is a journal: one JSON
//! line per hold set or ended, each hold with its expiry as wall-clock Unix
//! milliseconds, appended before the kernel's maps are written, so that a ban
//! the daemon confirmed is never lost. It is read back at start (expired bans
//! skipped, a malformed line skipped and named), and rewritten whole when it
//! holds more than twice the live bans' lines.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap, HashMap},
    io::{BufRead as _, Read as _, Write as _},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{Ban, BanAction, BanError, MAX_ORIGINS};
use crate::{
    clock,
    net::{Family, Prefix},
};

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} the ban state file {path}: {error}; nothing was changed (see --state-dir)")]
pub struct StateFileError {
    pub action: &'static str,
    pub path: PathBuf,
    pub error: std::io::Error,
}

/// One line of the state file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Record {
    Ban {
        prefix: String,
        /// Wall-clock Unix milliseconds (None: never).
        until_ms: Option<u64>,
        origin: String,
        #[serde(default)]
        reason: String,
        #[serde(default)]
        action: BanAction,
    },
    /// Every origin's hold ended.
    Unban { prefix: String },
    /// One origin's hold ended.
    Release { prefix: String, origin: String },
}

/// The most bytes of one state-file line: longer ones are not ours.
const MAX_LINE_BYTES: usize = 2048;

/// What a batch of bans did to the bans in force.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddOutcome {
    /// New bans.
    pub added: usize,
    /// Bans that were there and now end later (or changed origin, reason or action).
    pub extended: usize,
    /// Bans that were there with a later expiry, which they keep.
    pub kept: usize,
}

/// What a change did to the bans the kernel must hold.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changed {
    /// Prefixes whose ban in force is new or changed: to write.
    pub put: Vec<Prefix>,
    /// Prefixes no longer banned: to remove.
    pub removed: Vec<Prefix>,
}

/// What installing one hold did to the ban in force of its prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Effect {
    Added,
    Changed,
    Unchanged,
    /// Its last hold ended.
    Removed,
}

/// The daemon's bans.
///
/// Several origins may hold the same prefix (an operator's ban and a CrowdSec
/// decision of one address): each holds it with its own expiry, reason and
/// action, and the hold that ends last is the ban in force, the one the
/// kernel's maps hold. Releasing one origin's hold leaves the others'.
pub struct Store {
    /// The ban in force of each prefix: its hold that ends last.
    bans: HashMap<Prefix, Ban>,
    /// The other holds of a prefix, by other origins (few prefixes have any).
    others: HashMap<Prefix, Vec<Ban>>,
    /// (expiry, prefix) of every hold, soonest first; entries of holds that
    /// changed since are skipped when they come up.
    expiry: BinaryHeap<Reverse<(u64, Prefix)>>,
    per_length: HashMap<(Family, u8), usize>,
    per_family: [usize; 2],
    /// Holds per origin.
    per_origin: HashMap<String, usize>,
    max: [u32; 2],
    path: PathBuf,
    /// Lines in the state file.
    lines: usize,
}

/// When a hold ends, as a number (never: the largest).
fn end(expires_ns: Option<u64>) -> u64 {
    expires_ns.unwrap_or(u64::MAX)
}

/// Drops the holds of `others` that have ended at `now`, counting them out
/// of their origins.
fn drop_ended(others: &mut Vec<Ban>, now: u64, per_origin: &mut HashMap<String, usize>) {
    others.retain(|o| {
        let live = end(o.expires_ns) > now;
        if !live {
            if let Some(n) = per_origin.get_mut(&o.origin) {
                *n -= 1;
            }
        }
        live
    });
    per_origin.retain(|_, n| *n > 0);
}

impl Store {
    /// The store of `state_dir`, as its state file left it (none: empty), with
    /// `max` bans per family. Returns it and what could not be read.
    pub fn open(state_dir: &Path, max: [u32; 2]) -> Result<(Store, Vec<String>), StateFileError> {
        let path = state_dir.join(super::STATE_FILE);
        let mut store = Store {
            bans: HashMap::new(),
            others: HashMap::new(),
            expiry: BinaryHeap::new(),
            per_length: HashMap::new(),
            per_family: [0; 2],
            per_origin: HashMap::new(),
            max,
            path,
            lines: 0,
        };
        let warnings = store.replay()?;
        Ok((store, warnings))
    }

    fn replay(&mut self) -> Result<Vec<String>, StateFileError> {
        let file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            // No file yet (or no directory: the first ban says why it cannot write one).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) => {
                return Ok(Vec::new())
            }
            Err(error) => return Err(StateFileError { action: "read", path: self.path.clone(), error }),
        };
        let (now_ns, now_ms) = (clock::boot_ns(), clock::wall_ms());
        let mut warnings = Vec::new();
        let mut bad = 0usize;
        let mut reader = std::io::BufReader::new(file);
        let mut line = Vec::new();
        let mut number = 0usize;
        loop {
            line.clear();
            let n = (&mut reader)
                .take(MAX_LINE_BYTES as u64 + 1)
                .read_until(b'\n', &mut line)
                .map_err(|error| StateFileError { action: "read", path: self.path.clone(), error })?;
            if n == 0 {
                break;
            }
            number += 1;
            self.lines += 1;
            if line.last() != Some(&b'\n') && n > MAX_LINE_BYTES {
                // Skip the rest of an overlong line.
                let mut rest = Vec::new();
                let _ = reader.read_until(b'\n', &mut rest);
            }
            match self.replay_line(&line, now_ns, now_ms) {
                Ok(()) => {}
                Err(why) => {
                    bad += 1;
                    if bad <= 5 {
                        warnings.push(format!("{} line {number}: {why}; skipped", self.path.display()));
                    }
                }
            }
        }
        if bad > 5 {
            warnings.push(format!("{}: {} more bad lines skipped", self.path.display(), bad - 5));
        }
        Ok(warnings)
    }

    fn replay_line(&mut self, line: &[u8], now_ns: u64, now_ms: u64) -> Result<(), String> {
        if line.len() > MAX_LINE_BYTES {
            return Err(format!("longer than {MAX_LINE_BYTES} bytes"));
        }
        let record: Record = serde_json::from_slice(line).map_err(|e| format!("not a ban record ({e})"))?;
        match record {
            Record::Ban { prefix, until_ms, origin, reason, action } => {
                let prefix = super::parse_target(&prefix).map_err(|e| e.to_string())?;
                super::check_origin(&origin).map_err(|e| e.to_string())?;
                let reason = super::clean_reason(&reason).map_err(|e| e.to_string())?;
                let expires_ns = match until_ms {
                    None => None,
                    Some(ms) if ms <= now_ms => {
                        // This hold has ended.
                        self.release_one(&prefix, &origin);
                        return Ok(());
                    }
                    Some(ms) => Some(now_ns.saturating_add((ms - now_ms).saturating_mul(1_000_000))),
                };
                self.install(Ban { prefix, expires_ns, origin, reason: reason.into(), action });
            }
            Record::Unban { prefix } => {
                let prefix = super::parse_target(&prefix).map_err(|e| e.to_string())?;
                self.forget(&prefix);
            }
            Record::Release { prefix, origin } => {
                let prefix = super::parse_target(&prefix).map_err(|e| e.to_string())?;
                self.release_one(&prefix, &origin);
            }
        }
        Ok(())
    }

    fn origin_came(&mut self, origin: &str) {
        match self.per_origin.get_mut(origin) {
            Some(n) => *n += 1,
            None => {
                self.per_origin.insert(origin.to_owned(), 1);
            }
        }
    }

    fn origin_left(&mut self, origin: &str) {
        if let Some(n) = self.per_origin.get_mut(origin) {
            *n -= 1;
            if *n == 0 {
                self.per_origin.remove(origin);
            }
        }
    }

    /// Sets the hold of `ban`'s origin on its prefix to `ban`, whether it ends
    /// sooner or later than before.
    fn install(&mut self, ban: Ban) -> Effect {
        let p = ban.prefix;
        if let Some(e) = ban.expires_ns {
            self.expiry.push(Reverse((e, p)));
        }
        let Some(current) = self.bans.get_mut(&p) else {
            self.origin_came(&ban.origin);
            self.bans.insert(p, ban);
            *self.per_length.entry((p.family, p.len)).or_default() += 1;
            self.per_family[p.family as usize] += 1;
            return Effect::Added;
        };
        if current.origin == ban.origin {
            *current = ban;
            // Ending sooner may hand the prefix to another origin's hold.
            self.promote(&p);
            return Effect::Changed;
        }
        let others = self.others.entry(p).or_default();
        match others.iter_mut().find(|o| o.origin == ban.origin) {
            Some(o) => *o = ban,
            None => {
                let origin = ban.origin.clone();
                others.push(ban);
                self.origin_came(&origin);
            }
        }
        if self.promote(&p) {
            Effect::Changed
        } else {
            Effect::Unchanged
        }
    }

    /// Makes the hold of `p` that ends last the ban in force; whether that
    /// changed it.
    fn promote(&mut self, p: &Prefix) -> bool {
        let (Some(current), Some(others)) = (self.bans.get_mut(p), self.others.get_mut(p)) else { return false };
        let Some((i, latest)) = others.iter().enumerate().max_by_key(|(_, o)| end(o.expires_ns)) else {
            return false;
        };
        if end(latest.expires_ns) <= end(current.expires_ns) {
            return false;
        }
        std::mem::swap(current, &mut others[i]);
        true
    }

    /// Ends `origin`'s hold of `p`.
    fn release_one(&mut self, p: &Prefix, origin: &str) -> Option<Effect> {
        let current = self.bans.get(p)?;
        if current.origin != origin {
            let others = self.others.get_mut(p)?;
            let i = others.iter().position(|o| o.origin == origin)?;
            others.swap_remove(i);
            if others.is_empty() {
                self.others.remove(p);
            }
            self.origin_left(origin);
            return Some(Effect::Unchanged);
        }
        let now = clock::boot_ns();
        let next = self.others.remove(p).and_then(|mut others| {
            // Holds that have ended are dropped, not put in force.
            drop_ended(&mut others, now, &mut self.per_origin);
            let i = others.iter().enumerate().max_by_key(|(_, o)| end(o.expires_ns))?.0;
            let next = others.swap_remove(i);
            if !others.is_empty() {
                self.others.insert(*p, others);
            }
            Some(next)
        });
        match next {
            Some(next) => {
                self.origin_left(origin);
                self.bans.insert(*p, next);
                Some(Effect::Changed)
            }
            None => {
                self.forget(p);
                Some(Effect::Removed)
            }
        }
    }

    /// Removes every hold of `p`.
    fn forget(&mut self, p: &Prefix) -> Option<Ban> {
        let ban = self.bans.remove(p)?;
        if let Some(n) = self.per_length.get_mut(&(p.family, p.len)) {
            *n -= 1;
            if *n == 0 {
                self.per_length.remove(&(p.family, p.len));
            }
        }
        self.per_family[p.family as usize] -= 1;
        self.origin_left(&ban.origin);
        for o in self.others.remove(p).unwrap_or_default() {
            self.origin_left(&o.origin);
        }
        Some(ban)
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Prefixes banned.
    pub fn len(&self) -> usize {
        self.bans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bans.is_empty()
    }

    /// The ban in force of `p`.
    pub fn get(&self, p: &Prefix) -> Option<&Ban> {
        self.bans.get(p)
    }

    /// Every hold of `p`, the one in force first.
    pub fn holds(&self, p: &Prefix) -> impl Iterator<Item = &Ban> {
        self.bans.get(p).into_iter().chain(self.others.get(p).into_iter().flatten())
    }

    /// The bans in force.
    pub fn iter(&self) -> impl Iterator<Item = &Ban> {
        self.bans.values()
    }

    /// Every hold, of every origin.
    pub fn iter_holds(&self) -> impl Iterator<Item = &Ban> {
        self.bans.values().chain(self.others.values().flatten())
    }

    /// The prefixes held (for `dataplane::bans::length_words`).
    pub fn prefixes(&self) -> impl Iterator<Item = &Prefix> {
        self.bans.keys()
    }

    /// The most bans of a family.
    pub fn max(&self, family: Family) -> u32 {
        self.max[family as usize]
    }

    pub fn count(&self, family: Family) -> usize {
        self.per_family[family as usize]
    }

    /// Holds per origin: a prefix that two origins hold counts for both.
    pub fn origins(&self) -> BTreeMap<String, usize> {
        self.per_origin.iter().map(|(o, n)| (o.clone(), *n)).collect()
    }

    /// The hold of `origin` on `p`.
    fn hold_of(&self, p: &Prefix, origin: &str) -> Option<&Ban> {
        self.holds(p).find(|b| b.origin == origin)
    }

    /// Checks that `batch` fits: the maps' room and the origins' count.
    fn check_room(&self, batch: &HashMap<(Prefix, String), Ban>) -> Result<(), BanError> {
        let mut new = [0usize; 2];
        let mut fresh: std::collections::HashSet<&Prefix> = std::collections::HashSet::new();
        let mut origins: std::collections::BTreeSet<&str> = self.per_origin.keys().map(String::as_str).collect();
        for b in batch.values() {
            if !self.bans.contains_key(&b.prefix) && fresh.insert(&b.prefix) {
                new[b.prefix.family as usize] += 1;
            }
            origins.insert(&b.origin);
        }
        if origins.len() > MAX_ORIGINS {
            return Err(BanError::TooManyOrigins { count: origins.len() - 1 });
        }
        for family in [Family::V4, Family::V6] {
            let needed = self.per_family[family as usize] + new[family as usize];
            if needed > self.max[family as usize] as usize {
                return Err(BanError::Full { family: family.name(), needed, max: self.max[family as usize] });
            }
        }
        Ok(())
    }

    /// Records `bans` (all or nothing): a ban of a prefix its origin holds
    /// already keeps the later expiry. Returns what changed, and the prefixes
    /// whose ban in force changed, for the kernel's maps. Refused, with nothing
    /// changed, when a family's map would overflow or the state file cannot be
    /// written.
    pub fn add(&mut self, bans: Vec<Ban>) -> Result<(AddOutcome, Vec<Prefix>), AddError> {
        // Later duplicates in one batch: the later expiry wins there too.
        let mut batch: HashMap<(Prefix, String), Ban> = HashMap::with_capacity(bans.len());
        for b in bans {
            match batch.get(&(b.prefix, b.origin.clone())) {
                Some(old) if later_or_same(old.expires_ns, b.expires_ns) => {}
                _ => {
                    batch.insert((b.prefix, b.origin.clone()), b);
                }
            }
        }
        self.check_room(&batch).map_err(AddError::Refused)?;
        let mut outcome = AddOutcome::default();
        let mut changed = Vec::new();
        for b in batch.into_values() {
            match self.hold_of(&b.prefix, &b.origin) {
                Some(old) if later_or_same(old.expires_ns, b.expires_ns) && old.expires_ns != b.expires_ns => {
                    outcome.kept += 1;
                }
                Some(old) if *old == b => outcome.kept += 1,
                _ => changed.push(b),
            }
        }
        self.append(changed.iter().map(record_of))?;
        let mut prefixes = Vec::with_capacity(changed.len());
        for b in changed {
            let p = b.prefix;
            match self.install(b) {
                Effect::Added => outcome.added += 1,
                Effect::Changed => outcome.extended += 1,
                Effect::Unchanged | Effect::Removed => {
                    outcome.kept += 1;
                    continue;
                }
            }
            prefixes.push(p);
        }
        Ok((outcome, prefixes))
    }

    /// Sets each ban's hold (of its prefix, by its origin) to exactly it, even
    /// where it ends sooner than before (a feed's decision that changed).
    /// All or nothing, like `add`. Returns the prefixes whose ban in force
    /// changed.
    pub fn set(&mut self, bans: Vec<Ban>) -> Result<Vec<Prefix>, AddError> {
        let mut batch: HashMap<(Prefix, String), Ban> = HashMap::with_capacity(bans.len());
        for b in bans {
            batch.insert((b.prefix, b.origin.clone()), b);
        }
        self.check_room(&batch).map_err(AddError::Refused)?;
        let changed: Vec<Ban> = batch.into_values().filter(|b| self.hold_of(&b.prefix, &b.origin) != Some(b)).collect();
        self.append(changed.iter().map(record_of))?;
        let mut prefixes = Vec::with_capacity(changed.len());
        for b in changed {
            let p = b.prefix;
            if matches!(self.install(b), Effect::Added | Effect::Changed) {
                prefixes.push(p);
            }
        }
        prefixes.sort_unstable();
        prefixes.dedup();
        Ok(prefixes)
    }

    /// Ends the holds of (prefix, origin) given; a prefix other origins hold
    /// stays banned by them.
    pub fn release(&mut self, holds: &[(Prefix, String)]) -> Result<Changed, StateFileError> {
        let present: Vec<&(Prefix, String)> = holds.iter().filter(|(p, o)| self.hold_of(p, o).is_some()).collect();
        self.append(present.iter().map(|(p, o)| Record::Release { prefix: p.to_string(), origin: o.clone() }))?;
        let mut out = Changed::default();
        for (p, o) in present {
            match self.release_one(p, o) {
                Some(Effect::Removed) => out.removed.push(*p),
                Some(Effect::Changed) => out.put.push(*p),
                _ => {}
            }
        }
        // A prefix released by two origins in one call is only removed.
        out.put.retain(|p| self.bans.contains_key(p));
        out.put.sort_unstable();
        out.put.dedup();
        Ok(out)
    }

    /// Removes bans, every origin's hold of them; returns those that were there.
    pub fn remove(&mut self, prefixes: &[Prefix]) -> Result<Vec<Prefix>, StateFileError> {
        let present: Vec<Prefix> = prefixes.iter().filter(|p| self.bans.contains_key(p)).copied().collect();
        self.append(present.iter().map(|p| Record::Unban { prefix: p.to_string() }))?;
        for p in &present {
            self.forget(p);
        }
        Ok(present)
    }

    /// Ends the holds whose time has come at boot-clock `now_ns` (the program
    /// ignores such bans already). Returns the prefixes no longer banned. The
    /// state file needs no line: a replay skips expired holds.
    pub fn expire(&mut self, now_ns: u64) -> Vec<Prefix> {
        let mut gone = Vec::new();
        while let Some(Reverse((at, p))) = self.expiry.peek().copied() {
            if at > now_ns {
                break;
            }
            self.expiry.pop();
            let Some(current) = self.bans.get(&p) else { continue };
            if end(current.expires_ns) <= now_ns {
                // The ban in force ends last: every other hold has ended too.
                self.forget(&p);
                gone.push(p);
            } else if let Some(mut others) = self.others.remove(&p) {
                drop_ended(&mut others, now_ns, &mut self.per_origin);
                if !others.is_empty() {
                    self.others.insert(p, others);
                }
            }
        }
        gone
    }

    fn append(&mut self, records: impl Iterator<Item = Record>) -> Result<(), StateFileError> {
        let mut text = String::new();
        let mut n = 0;
        for r in records {
            text.push_str(&serde_json::to_string(&r).expect("records always serialize"));
            text.push('\n');
            n += 1;
        }
        if n == 0 {
            return Ok(());
        }
        let holds = self.bans.len() + self.others.values().map(Vec::len).sum::<usize>();
        if self.lines + n > 2 * (holds + n) + 4096 {
            // Rewritten whole, with these records after the live holds.
            return self.rewrite(&text, n);
        }
        let err = |action| {
            let path = self.path.clone();
            move |error| StateFileError { action, path, error }
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(err("create the directory of"))?;
        }
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.path).map_err(err("open"))?;
        f.write_all(text.as_bytes()).map_err(err("write"))?;
        self.lines += n;
        Ok(())
    }

    /// Writes the live holds and `tail` to a new file, then renames it over the
    /// old one: a crash leaves one or the other whole.
    fn rewrite(&mut self, tail: &str, tail_lines: usize) -> Result<(), StateFileError> {
        let err = |action, path: &Path| {
            let path = path.to_owned();
            move |error| StateFileError { action, path, error }
        };
        let tmp = self.path.with_extension("jsonl.new");
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(err("create the directory of", &self.path))?;
        }
        let file = std::fs::File::create(&tmp).map_err(err("create", &tmp))?;
        let mut w = std::io::BufWriter::new(file);
        let mut lines = 0;
        for b in self.iter_holds() {
            let line = serde_json::to_string(&record_of(b)).expect("records always serialize");
            writeln!(w, "{line}").map_err(err("write", &tmp))?;
            lines += 1;
        }
        w.write_all(tail.as_bytes()).map_err(err("write", &tmp))?;
        let file = w.into_inner().map_err(|e| err("write", &tmp)(e.into_error()))?;
        file.sync_all().map_err(err("sync", &tmp))?;
        std::fs::rename(&tmp, &self.path).map_err(err("replace", &self.path))?;
        self.lines = lines + tail_lines;
        Ok(())
    }
}

/// Why `Store::add` refused a batch.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error(transparent)]
    Refused(BanError),
    #[error(transparent)]
    StateFile(#[from] StateFileError),
}

/// Whether expiry `a` is at or after `b` (None: never).
fn later_or_same(a: Option<u64>, b: Option<u64>) -> bool {
    match (a, b) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => a >= b,
    }
}

fn record_of(b: &Ban) -> Record {
    Record::Ban {
        prefix: b.prefix.to_string(),
        until_ms: b.expires_ns.map(clock::boot_ns_to_wall_ms),
        origin: b.origin.clone(),
        reason: b.reason.to_string(),
        action: b.action,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decisions::parse_target;

    fn ban(target: &str, secs: Option<u64>, origin: &str) -> Ban {
        Ban {
            prefix: parse_target(target).unwrap(),
            expires_ns: secs.map(|s| clock::boot_ns() + s * 1_000_000_000),
            origin: origin.into(),
            reason: "test".into(),
            action: BanAction::Drop,
        }
    }

    #[test]
    fn later_expiry_wins_and_bans_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, w) = Store::open(dir.path(), [10, 10]).unwrap();
        assert!(w.is_empty() && s.is_empty());
        let (o, changed) = s.add(vec![ban("192.0.2.1", Some(100), "a"), ban("2001:db8::/64", None, "b")]).unwrap();
        assert_eq!((o.added, changed.len()), (2, 2));
        // An earlier expiry is kept out; a later one replaces.
        let (o, changed) = s.add(vec![ban("192.0.2.1", Some(10), "a")]).unwrap();
        assert_eq!((o.kept, changed.len()), (1, 0));
        let (o, _) = s.add(vec![ban("192.0.2.1", Some(1000), "a")]).unwrap();
        assert_eq!(o.extended, 1);
        let until = s.get(&parse_target("192.0.2.1").unwrap()).unwrap().expires_ns.unwrap();
        s.remove(&[parse_target("2001:db8::/64").unwrap()]).unwrap();
        drop(s);
        let (s, w) = Store::open(dir.path(), [10, 10]).unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(s.len(), 1);
        let again = s.get(&parse_target("192.0.2.1").unwrap()).unwrap().expires_ns.unwrap();
        // Wall-clock milliseconds in the file: back within a few ms.
        assert!(again.abs_diff(until) < 50_000_000, "{again} vs {until}");
    }

    #[test]
    fn full_maps_refuse_the_whole_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Store::open(dir.path(), [2, 2]).unwrap();
        s.add(vec![ban("192.0.2.1", None, "a")]).unwrap();
        let e = s.add(vec![ban("192.0.2.2", None, "a"), ban("192.0.2.3", None, "a")]).unwrap_err();
        assert!(e.to_string().contains("3 IPv4 bans needed, the ban map holds 2"), "{e}");
        assert_eq!(s.len(), 1);
        // Re-banning what is there needs no room.
        s.add(vec![ban("192.0.2.1", Some(5), "a"), ban("192.0.2.2", None, "a")]).unwrap();
    }

    #[test]
    fn expiry_removes_in_order_and_bad_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Store::open(dir.path(), [10, 10]).unwrap();
        s.add(vec![ban("192.0.2.1", Some(1), "a"), ban("192.0.2.2", Some(5), "a"), ban("192.0.2.3", None, "a")])
            .unwrap();
        let now = clock::boot_ns();
        assert_eq!(s.expire(now + 2_000_000_000), vec![parse_target("192.0.2.1").unwrap()]);
        assert_eq!(s.len(), 2);
        let mut f = std::fs::OpenOptions::new().append(true).open(s.path()).unwrap();
        writeln!(f, "{{\"op\":\"ban\",\"prefix\":\"10.0.0.1/8\",\"until_ms\":null,\"origin\":\"x\"}}").unwrap();
        writeln!(f, "not json").unwrap();
        writeln!(f, "{{\"op\":\"ban\",\"prefix\":\"192.0.2.50/32\",\"until_ms\":1000,\"origin\":\"x\"}}").unwrap();
        drop(f);
        let (s2, w) = Store::open(dir.path(), [10, 10]).unwrap();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("line") && w[0].contains("10.0.0.0/8"), "{w:?}");
        // A ban whose time has come is not read back.
        assert!(s2.get(&parse_target("192.0.2.50").unwrap()).is_none());
        assert!(s2.get(&parse_target("192.0.2.3").unwrap()).is_some());
    }

    #[test]
    fn the_state_file_is_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Store::open(dir.path(), [100, 100]).unwrap();
        for i in 0..3000u64 {
            s.add(vec![ban("192.0.2.1", Some(10 + i), "a")]).unwrap();
        }
        let lines = std::fs::read_to_string(s.path()).unwrap().lines().count();
        assert!(lines <= 4096 + 3, "{lines}");
        let (s2, w) = Store::open(dir.path(), [100, 100]).unwrap();
        assert!(w.is_empty());
        assert_eq!(s2.len(), 1);
    }

    #[test]
    fn an_unwritable_state_file_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "").unwrap();
        // The state directory is a file: nothing can be created in it.
        let (mut s, _) = Store::open(&blocker, [10, 10]).unwrap();
        let e = s.add(vec![ban("192.0.2.1", None, "a")]).unwrap_err().to_string();
        assert!(e.contains("bans.jsonl") && e.contains("nothing was changed"), "{e}");
        assert!(s.is_empty());
    }

    #[test]
    fn origins_hold_a_prefix_each_and_the_latest_is_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Store::open(dir.path(), [10, 10]).unwrap();
        let p = parse_target("192.0.2.1").unwrap();
        s.add(vec![ban("192.0.2.1", Some(100), "ops")]).unwrap();
        let (o, changed) = s.add(vec![ban("192.0.2.1", Some(1000), "feed")]).unwrap();
        assert_eq!((o.extended, changed.len()), (1, 1));
        assert_eq!(s.get(&p).unwrap().origin, "feed");
        assert_eq!(s.origins(), BTreeMap::from([("feed".into(), 1), ("ops".into(), 1)]));
        // A sooner hold of another origin changes nothing in force.
        let (o, changed) = s.add(vec![ban("192.0.2.1", Some(10), "third")]).unwrap();
        assert_eq!((o.kept, changed.len()), (1, 0));
        // The feed's hold ends: the operator's, ending next, is in force.
        let c = s.release(&[(p, "feed".into())]).unwrap();
        assert_eq!(c, Changed { put: vec![p], removed: vec![] });
        assert_eq!(s.get(&p).unwrap().origin, "ops");
        // Read back from the state file as it is.
        drop(s);
        let (mut s, w) = Store::open(dir.path(), [10, 10]).unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(s.get(&p).unwrap().origin, "ops");
        assert_eq!(s.holds(&p).count(), 2);
        // An exact set may shorten a hold; the other one then wins.
        s.set(vec![ban("192.0.2.1", Some(5), "ops")]).unwrap();
        assert_eq!(s.get(&p).unwrap().origin, "third");
        // Expiry ends the holds whose time came, one by one.
        assert!(s.expire(clock::boot_ns() + 6_000_000_000).is_empty());
        assert_eq!(s.holds(&p).count(), 1);
        assert_eq!(s.expire(clock::boot_ns() + 20_000_000_000), vec![p]);
        assert!(s.is_empty() && s.origins().is_empty());
        // Unban (every origin) after two holds.
        s.add(vec![ban("192.0.2.1", Some(100), "a"), ban("192.0.2.1", Some(100), "b")]).unwrap();
        assert_eq!(s.remove(&[p]).unwrap(), vec![p]);
        assert!(s.origins().is_empty());
    }
}
