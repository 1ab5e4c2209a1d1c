//! Automatic reload triggers: local source files that change on disk (debounced,
//! so a file written in several steps is read once, when it has settled) and URL
//! sources that are due for their refresh. The daemon polls both on its timer;
//! polling a few `stat`s per tick survives editors that replace files by rename
//! and directories that are re-created, which inotify watches do not.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::{Duration, Instant, UNIX_EPOCH},
};

use crate::{policy::Policy, source::spec::Refresh};

/// What identifies a file's content cheaply: (mtime ns, size, inode), None if missing.
type Stamp = Option<(u128, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    let mtime = m.modified().ok()?.duration_since(UNIX_EPOCH).ok()?.as_nanos();
    Some((mtime, m.len(), m.ino()))
}

/// The most entries the watch stamps on a tick, and how deep it looks: a
/// cidr-dir source (`country/<cc>/*.txt`) has about 750; a path such as `/`
/// given by mistake must not have the daemon walk the whole filesystem twice
/// a second.
const MAX_WATCHED_ENTRIES: usize = 20_000;
const MAX_WATCH_DEPTH: u32 = 3;

/// The stamps of every file a path stands for: the file, or every file under a
/// directory (a cidr-dir source nests `country/<cc>/*.txt`), in a stable order,
/// within the bounds above.
fn stamps(path: &Path, out: &mut Vec<(PathBuf, Stamp)>) {
    stamps_within(path, out, MAX_WATCH_DEPTH);
}

fn stamps_within(path: &Path, out: &mut Vec<(PathBuf, Stamp)>, depth: u32) {
    out.push((path.to_owned(), stamp(path)));
    if depth == 0 || out.len() >= MAX_WATCHED_ENTRIES {
        return;
    }
    let Ok(rd) = std::fs::read_dir(path) else { return };
    let mut children: Vec<PathBuf> = rd.take(MAX_WATCHED_ENTRIES).filter_map(|e| e.ok().map(|e| e.path())).collect();
    children.sort();
    for child in children {
        if out.len() >= MAX_WATCHED_ENTRIES {
            return;
        }
        // Symlinked directories are followed by metadata() but not recursed into,
        // so a link loop cannot stall the daemon.
        let is_dir = std::fs::symlink_metadata(&child).is_ok_and(|m| m.is_dir());
        if is_dir {
            stamps_within(&child, out, depth - 1);
        } else {
            let s = stamp(&child);
            out.push((child, s));
        }
    }
}

/// Watches the policy's local source files for changes.
pub struct FileWatch {
    paths: Vec<PathBuf>,
    /// The stamps when the running tables were last built (or last tried).
    applied: Vec<(PathBuf, Stamp)>,
    /// Stamps seen changing, and when they last changed.
    pending: Option<(Vec<(PathBuf, Stamp)>, Instant)>,
    debounce: Duration,
}

impl FileWatch {
    pub fn new(policy: &Policy, debounce: Duration) -> Self {
        let paths = policy.local_sources();
        let applied = Self::read(&paths);
        FileWatch { paths, applied, pending: None, debounce }
    }

    /// The files and directories watched.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    fn read(paths: &[PathBuf]) -> Vec<(PathBuf, Stamp)> {
        let mut out = Vec::new();
        for p in paths {
            stamps(p, &mut out);
        }
        out
    }

    /// Called on every tick. Returns the changed files once they have been stable
    /// for the debounce time: the caller reloads, then calls `rebase`.
    pub fn poll(&mut self, now: Instant) -> Option<Vec<PathBuf>> {
        if self.paths.is_empty() {
            return None;
        }
        let current = Self::read(&self.paths);
        if current == self.applied {
            self.pending = None;
            return None;
        }
        match &self.pending {
            Some((seen, since)) if *seen == current => {
                if now.duration_since(*since) < self.debounce {
                    return None;
                }
            }
            _ => {
                self.pending = Some((current, now));
                return None;
            }
        }
        let old: HashMap<&PathBuf, &Stamp> = self.applied.iter().map(|(p, s)| (p, s)).collect();
        let changed = current.iter().filter(|(p, s)| old.get(p) != Some(&s)).map(|(p, _)| p.clone());
        let mut changed: Vec<PathBuf> = changed.collect();
        let new: Vec<&PathBuf> = current.iter().map(|(p, _)| p).collect();
        changed.extend(self.applied.iter().filter(|(p, _)| !new.contains(&p)).map(|(p, _)| p.clone()));
        Some(changed)
    }

    /// After a reload attempt (successful or not): watch the policy's files as they
    /// are now, so a failed reload is retried only when a file changes again.
    pub fn rebase(&mut self, policy: &Policy) {
        self.paths = policy.local_sources();
        self.applied = Self::read(&self.paths);
        self.pending = None;
    }
}

/// When each URL source is next due.
pub struct UrlSchedule {
    due: Vec<(String, Duration, Instant)>,
}

impl UrlSchedule {
    pub fn new(policy: &Policy, now: Instant) -> Self {
        let due = policy
            .url_sources()
            .into_iter()
            .filter_map(|(url, r)| match r {
                Refresh::Never => None,
                Refresh::Every(d) => Some((url, d, now + d)),
            })
            .collect();
        UrlSchedule { due }
    }

    /// URLs due now; each is scheduled again one interval later.
    pub fn take_due(&mut self, now: Instant) -> Vec<String> {
        let mut out = Vec::new();
        for (url, every, next) in &mut self.due {
            if *next <= now {
                out.push(url.clone());
                *next = now + *every;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_changes_are_debounced_and_reported_once() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        std::fs::create_dir_all(dir.join("cidr/country/de")).unwrap();
        let list = dir.join("deny.txt");
        std::fs::write(&list, "192.0.2.0/24\n").unwrap();
        std::fs::write(dir.join("cidr/de.cidr"), "198.51.100.0/24\n").unwrap();
        let nested = dir.join("cidr/country/de/ipv4-aggregated.txt");
        std::fs::write(&nested, "198.51.100.0/24\n").unwrap();
        let policy = Policy {
            deny: vec![list.to_str().unwrap().parse().unwrap()],
            country_source: vec![format!("cidr-dir:{}", dir.join("cidr").display()).parse().unwrap()],
            ..Policy::default()
        };
        let debounce = Duration::from_secs(2);
        let mut w = FileWatch::new(&policy, debounce);
        let t0 = Instant::now();
        assert_eq!(w.poll(t0), None, "nothing changed");

        // Each write changes the size: mtimes may tick coarser than the writes.
        std::fs::write(&list, "192.0.2.0/25\n# v2\n").unwrap();
        assert_eq!(w.poll(t0), None, "change seen, debounce starts");
        assert_eq!(w.poll(t0 + Duration::from_secs(1)), None, "still settling");
        // Another write restarts the debounce.
        std::fs::write(&list, "192.0.2.0/26\n# version 3\n").unwrap();
        assert_eq!(w.poll(t0 + Duration::from_secs(1)), None);
        assert_eq!(w.poll(t0 + Duration::from_millis(2500)), None, "restarted at 1 s");
        assert_eq!(w.poll(t0 + Duration::from_secs(3)), Some(vec![list.clone()]));
        w.rebase(&policy);
        assert_eq!(w.poll(t0 + Duration::from_secs(10)), None, "reported once");

        // A new file in a watched directory, and a removed one.
        std::fs::write(dir.join("cidr/fr.cidr"), "203.0.113.0/24\n").unwrap();
        std::fs::remove_file(dir.join("cidr/de.cidr")).unwrap();
        assert_eq!(w.poll(t0), None);
        let mut changed = w.poll(t0 + debounce).unwrap();
        changed.sort();
        assert!(
            changed.contains(&dir.join("cidr/fr.cidr")) && changed.contains(&dir.join("cidr/de.cidr")),
            "{changed:?}"
        );
        w.rebase(&policy);

        // A file nested in a country directory, rewritten in place (the directories'
        // own mtimes do not change).
        std::fs::write(&nested, "198.51.100.0/24\n203.0.113.0/24\n").unwrap();
        assert_eq!(w.poll(t0), None);
        assert_eq!(w.poll(t0 + debounce), Some(vec![nested.clone()]));
    }

    #[test]
    fn url_schedule() {
        let policy = Policy {
            deny: vec!["refresh=10s:a=http://192.0.2.1/a".parse().unwrap(), "b=http://192.0.2.1/b".parse().unwrap()],
            allow: vec!["refresh=off:http://192.0.2.1/c".parse().unwrap()],
            url_refresh: Refresh::Every(Duration::from_secs(60)),
            ..Policy::default()
        };
        let t0 = Instant::now();
        let mut s = UrlSchedule::new(&policy, t0);
        assert!(s.take_due(t0 + Duration::from_secs(9)).is_empty());
        assert_eq!(s.take_due(t0 + Duration::from_secs(10)), ["http://192.0.2.1/a"]);
        assert!(s.take_due(t0 + Duration::from_secs(11)).is_empty());
        assert_eq!(s.take_due(t0 + Duration::from_secs(60)), ["http://192.0.2.1/a", "http://192.0.2.1/b"]);
    }
}
