//! The daemon's bans: the set, its expiry order, and the state file.
//!
//! The state file (`bans.jsonl` in the state directory) is a journal: one JSON
//! line per ban or unban, each ban with its expiry as wall-clock Unix
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
    Unban {
        prefix: String,
    },
}

/// The most bytes of one state-file line: longer ones are not ours.
const MAX_LINE_BYTES: usize = 2048;

/// What a batch of bans did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddOutcome {
    /// New bans.
    pub added: usize,
    /// Bans that were there and now end later (or changed origin, reason or action).
    pub extended: usize,
    /// Bans that were there with a later expiry, which they keep.
    pub kept: usize,
}

/// The daemon's bans.
pub struct Store {
    bans: HashMap<Prefix, Ban>,
    /// (expiry, prefix), soonest first; an entry whose ban changed since is
    /// skipped when it comes up.
    expiry: BinaryHeap<Reverse<(u64, Prefix)>>,
    per_length: HashMap<(Family, u8), usize>,
    per_family: [usize; 2],
    per_origin: HashMap<String, usize>,
    max: [u32; 2],
    path: PathBuf,
    /// Lines in the state file.
    lines: usize,
}

impl Store {
    /// The store of `state_dir`, as its state file left it (none: empty), with
    /// `max` bans per family. Returns it and what could not be read.
    pub fn open(state_dir: &Path, max: [u32; 2]) -> Result<(Store, Vec<String>), StateFileError> {
        let path = state_dir.join(super::STATE_FILE);
        let mut store = Store {
            bans: HashMap::new(),
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
                        self.forget(&prefix);
                        return Ok(());
                    }
                    Some(ms) => Some(now_ns.saturating_add((ms - now_ms).saturating_mul(1_000_000))),
                };
                self.insert(Ban { prefix, expires_ns, origin, reason, action });
            }
            Record::Unban { prefix } => {
                let prefix = super::parse_target(&prefix).map_err(|e| e.to_string())?;
                self.forget(&prefix);
            }
        }
        Ok(())
    }

    fn insert(&mut self, ban: Ban) {
        let p = ban.prefix;
        if let Some(e) = ban.expires_ns {
            self.expiry.push(Reverse((e, p)));
        }
        *self.per_origin.entry(ban.origin.clone()).or_default() += 1;
        match self.bans.insert(p, ban) {
            None => {
                *self.per_length.entry((p.family, p.len)).or_default() += 1;
                self.per_family[p.family as usize] += 1;
            }
            Some(old) => self.origin_left(&old.origin),
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
        Some(ban)
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.bans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bans.is_empty()
    }

    pub fn get(&self, p: &Prefix) -> Option<&Ban> {
        self.bans.get(p)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Ban> {
        self.bans.values()
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

    /// Active bans per origin.
    pub fn origins(&self) -> BTreeMap<String, usize> {
        self.per_origin.iter().map(|(o, n)| (o.clone(), *n)).collect()
    }

    /// Records `bans` (all or nothing): a ban of a prefix already banned keeps
    /// the later expiry. Returns what changed, for the kernel's maps. Refused,
    /// with nothing changed, when a family's map would overflow or the state
    /// file cannot be written.
    pub fn add(&mut self, bans: Vec<Ban>) -> Result<(AddOutcome, Vec<Prefix>), AddError> {
        // Later duplicates in one batch: the later expiry wins there too.
        let mut batch: HashMap<Prefix, Ban> = HashMap::with_capacity(bans.len());
        for b in bans {
            match batch.get(&b.prefix) {
                Some(old) if later_or_same(old.expires_ns, b.expires_ns) => {}
                _ => {
                    batch.insert(b.prefix, b);
                }
            }
        }
        let mut new = [0usize; 2];
        let mut origins: std::collections::BTreeSet<&str> = self.per_origin.keys().map(String::as_str).collect();
        for b in batch.values() {
            if !self.bans.contains_key(&b.prefix) {
                new[b.prefix.family as usize] += 1;
            }
            origins.insert(&b.origin);
        }
        if origins.len() > MAX_ORIGINS {
            return Err(AddError::Refused(BanError::TooManyOrigins { count: origins.len() - 1 }));
        }
        for family in [Family::V4, Family::V6] {
            let needed = self.per_family[family as usize] + new[family as usize];
            if needed > self.max[family as usize] as usize {
                return Err(AddError::Refused(BanError::Full {
                    family: family.name(),
                    needed,
                    max: self.max[family as usize],
                }));
            }
        }
        let mut outcome = AddOutcome::default();
        let mut changed = Vec::new();
        for b in batch.into_values() {
            match self.bans.get(&b.prefix) {
                None => {
                    outcome.added += 1;
                    changed.push(b);
                }
                Some(old) if later_or_same(old.expires_ns, b.expires_ns) && old.expires_ns != b.expires_ns => {
                    outcome.kept += 1;
                }
                Some(old) if *old == b => outcome.kept += 1,
                Some(_) => {
                    outcome.extended += 1;
                    changed.push(b);
                }
            }
        }
        self.append(changed.iter().map(record_of))?;
        let prefixes = changed.iter().map(|b| b.prefix).collect();
        for b in changed {
            self.insert(b);
        }
        Ok((outcome, prefixes))
    }

    /// Removes bans; returns those that were there.
    pub fn remove(&mut self, prefixes: &[Prefix]) -> Result<Vec<Prefix>, StateFileError> {
        let present: Vec<Prefix> = prefixes.iter().filter(|p| self.bans.contains_key(p)).copied().collect();
        self.append(present.iter().map(|p| Record::Unban { prefix: p.to_string() }))?;
        for p in &present {
            self.forget(p);
        }
        Ok(present)
    }

    /// Removes the bans whose time has come at boot-clock `now_ns` (the
    /// program ignores them already). The state file needs no line: a
    /// replay skips expired bans.
    pub fn expire(&mut self, now_ns: u64) -> Vec<Prefix> {
        let mut gone = Vec::new();
        while let Some(Reverse((at, p))) = self.expiry.peek().copied() {
            if at > now_ns {
                break;
            }
            self.expiry.pop();
            if self.bans.get(&p).is_some_and(|b| b.expires_ns == Some(at)) {
                self.forget(&p);
                gone.push(p);
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
        if self.lines + n > 2 * (self.bans.len() + n) + 4096 {
            // Rewritten whole, with these records after the live bans.
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

    /// Writes the live bans and `tail` to a new file, then renames it over the
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
        for b in self.bans.values() {
            let line = serde_json::to_string(&record_of(b)).expect("records always serialize");
            writeln!(w, "{line}").map_err(err("write", &tmp))?;
        }
        w.write_all(tail.as_bytes()).map_err(err("write", &tmp))?;
        let file = w.into_inner().map_err(|e| err("write", &tmp)(e.into_error()))?;
        file.sync_all().map_err(err("sync", &tmp))?;
        std::fs::rename(&tmp, &self.path).map_err(err("replace", &self.path))?;
        self.lines = self.bans.len() + tail_lines;
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
        reason: b.reason.clone(),
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
}
