//! A host of a fleet: what it follows (`FleetOptions`, from `[fleet]` or the
//! command line), the last good bundle it keeps on disk (`Kept`), the bundle
//! it starts with (`starting_bundle`), and the two threads that run beside the
//! daemon: the follower, which watches its group's pointer and offers each
//! new bundle (verified and unpacked) to the daemon, and the reporter, which
//! keeps the host's state in etcd under a lease.
//!
//! Failing safe: etcd unreachable changes nothing that runs (the follower
//! retries with backoff and jitter); a bundle refused (its signature, an older
//! revision, a config that does not compile) leaves the running table and is
//! reported in the host's state; only a bundle that was put in force is kept
//! on disk as the last good one.
//!
//! On disk, under `STATE_DIR/fleet/FLEET/`: `rREVISION/` (the signed
//! manifest, its signature, and the files under `files/`) and `current` (the
//! revision in force, and when it was applied).

use std::{
    path::{Path, PathBuf},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use serde::{Deserialize, Serialize};

use super::{
    bundle::{self, BundleError, Manifest},
    etcd::{Etcd, EtcdError, Event},
    sign::PublicKey,
    store::{check_name, may_follow, FleetStore, HostState, Pointer, StoreError, DEFAULT_GROUP},
};
use crate::{config::PolicyTables, source::fetch, tls::Tls};

/// How long one request to etcd may take: a read or a write of a few bytes,
/// and the download of a bundle's file (a thousand hosts fetch at once).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
pub const BUNDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A watch streams for this long, then the pointer is read again (which also
/// proves etcd answers: the last sync).
pub const WATCH_ROUND: Duration = Duration::from_secs(20);
/// Without a sync for this long, the host says its bundle may be stale.
pub const STALE_AFTER: Duration = Duration::from_secs(3 * 20);
/// The host's lease: its `alive` key goes this long after the host does.
pub const LEASE_TTL_SECONDS: u64 = 15;
/// Retries after a failure wait 1 s, 2 s, 4 s ... up to this, with jitter.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// `[fleet]` as the config file gives it (and the command line).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetSection {
    /// The etcd endpoints: a list, or one comma-separated string.
    pub etcd: Option<Endpoints>,
    pub name: Option<String>,
    pub public_key: Option<PathBuf>,
    pub group: Option<String>,
    pub host_name: Option<String>,
    /// Start without a bundle, and wait for the first one before attaching.
    pub wait: Option<bool>,
    pub ca_cert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Endpoints {
    One(String),
    Many(Vec<String>),
}

impl Endpoints {
    fn list(&self) -> Vec<String> {
        let all = match self {
            Endpoints::One(s) => vec![s.clone()],
            Endpoints::Many(v) => v.clone(),
        };
        all.iter().flat_map(|s| s.split(',')).map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()
    }
}

/// What a host follows, checked: its key read, its names valid.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    pub endpoints: Vec<String>,
    pub fleet: String,
    pub public_key_path: PathBuf,
    pub public_key: PublicKey,
    pub group: String,
    pub host: String,
    pub wait: bool,
    pub tls: Tls,
}

/// Why `[fleet]` (or a `--fleet-*` option) was refused: the key, and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct FleetOptionError {
    pub key: String,
    pub reason: String,
}

impl FleetSection {
    /// Checks the section; `key` names each setting in errors (for the
    /// command line, its option).
    pub fn check(&self, key: impl Fn(&str) -> String) -> Result<FleetOptions, FleetOptionError> {
        let refuse = |name: &str, reason: String| FleetOptionError { key: key(name), reason };
        let endpoints = self.etcd.as_ref().map(Endpoints::list).unwrap_or_default();
        if endpoints.is_empty() {
            return Err(refuse(
                "etcd",
                "missing: the etcd endpoints, like http://10.0.0.1:2379,http://10.0.0.2:2379".into(),
            ));
        }
        let tls = Tls { ca_cert: self.ca_cert.clone(), cert: self.cert.clone(), key: self.key.clone() };
        tls.check().map_err(|e| refuse(e.key, e.reason))?;
        // The endpoints' form, and the TLS files' content.
        let tls_config = tls.config().map_err(|e| refuse(e.key, e.reason))?;
        Etcd::with_tls(&endpoints, REQUEST_TIMEOUT, WATCH_ROUND, tls_config)
            .map_err(|e| refuse("etcd", e.to_string()))?;
        if tls.is_set() && endpoints.iter().any(|e| !e.starts_with("https://")) {
            return Err(refuse("etcd", "certificates are given: use https:// endpoints".into()));
        }
        let fleet = self.name.clone().ok_or_else(|| refuse("name", "missing: the fleet's name".into()))?;
        check_name("fleet", &fleet).map_err(|e| refuse("name", e.to_string()))?;
        let group = self.group.clone().unwrap_or_else(|| DEFAULT_GROUP.to_owned());
        check_name("group", &group).map_err(|e| refuse("group", e.to_string()))?;
        let host = match &self.host_name {
            Some(h) => h.clone(),
            None => system_host_name().map_err(|e| refuse("host_name", e))?,
        };
        check_name("host", &host).map_err(|e| refuse("host_name", e.to_string()))?;
        let public_key_path = self
            .public_key
            .clone()
            .ok_or_else(|| refuse("public_key", "missing: the fleet's public key (`blocker fleet keygen`)".into()))?;
        let text = super::read_key_file(&public_key_path).map_err(|e| refuse("public_key", e.to_string()))?;
        let public_key =
            PublicKey::parse(&text).map_err(|e| refuse("public_key", format!("{}: {e}", public_key_path.display())))?;
        Ok(FleetOptions {
            endpoints,
            fleet,
            public_key_path,
            public_key,
            group,
            host,
            wait: self.wait.unwrap_or(false),
            tls,
        })
    }
}

/// This machine's host name (as `hostname` prints it).
fn system_host_name() -> Result<String, String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_err(|e| format!("cannot read the host name ({e}): give one"))?;
    let name = name.trim();
    // The first label: a fully qualified name may hold more than 64 bytes.
    Ok(if name.len() > 64 { name.split('.').next().unwrap_or(name) } else { name }.to_owned())
}

impl FleetOptions {
    /// A client of the fleet's etcd: each request within `timeout`, each
    /// watch for `watch_for`.
    pub fn etcd(&self, timeout: Duration, watch_for: Duration) -> Result<Etcd, String> {
        let tls = self.tls.config().map_err(|e| format!("{}: {}", e.key, e.reason))?;
        Etcd::with_tls(&self.endpoints, timeout, watch_for, tls).map_err(|e| e.to_string())
    }

    /// Where this fleet's bundles are kept on disk.
    pub fn base_dir(&self, state_dir: &Path) -> PathBuf {
        state_dir.join("fleet").join(&self.fleet)
    }
}

/// Why the fleet refused to start, or a bundle: each says where and what to do.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(
        "fleet {fleet}: no bundle to enforce ({why}), and none kept on disk from an earlier run. Once etcd \
         answers and holds one (`blocker fleet publish --fleet {fleet} ...`) start again, or start with \
         --fleet-wait (`wait = true` in [fleet]) to attach when one arrives"
    )]
    NoBundle { fleet: String, why: String },
    #[error("the last good bundle kept in {dir}: {reason}")]
    Kept { dir: String, reason: String },
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> HostError + '_ {
    move |error| HostError::Io { path: path.display().to_string(), error }
}

/// What `current` records.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Current {
    revision: u64,
    applied_at: String,
    /// The highest sequence followed (`store::may_follow`).
    #[serde(default)]
    sequence: u64,
}

fn revision_dir(base: &Path, revision: u64) -> PathBuf {
    base.join(format!("r{revision:020}"))
}

/// A bundle unpacked on disk: the last good one, or one offered.
#[derive(Clone, Debug)]
pub struct Unpacked {
    pub revision: u64,
    /// Its sequence: its revision, or the number of the rollback that brought it.
    pub sequence: u64,
    /// Its verified manifest (what its files are checked against again).
    pub manifest: Manifest,
    /// When it was published.
    pub created: String,
    /// Its policy, its local sources naming the files under `dir`.
    pub tables: PolicyTables,
    pub dir: PathBuf,
}

/// The last good bundle, as kept on disk.
#[derive(Clone, Debug)]
pub struct Kept {
    pub bundle: Unpacked,
    pub applied_at: String,
}

impl Kept {
    /// Reads the last good bundle, checked again: its manifest against the
    /// fleet's key, its files against the manifest. None: none was kept.
    pub fn load(opts: &FleetOptions, state_dir: &Path, cache_dir: &Path) -> Result<Option<Kept>, HostError> {
        let base = opts.base_dir(state_dir);
        let current_path = base.join("current");
        let text = match std::fs::read(&current_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&current_path)(e)),
        };
        let kept_err = |reason: String| HostError::Kept { dir: base.display().to_string(), reason };
        let current: Current = serde_json::from_slice(&text).map_err(|e| kept_err(format!("current: {e}")))?;
        let dir = revision_dir(&base, current.revision);
        let manifest_path = dir.join("manifest.json");
        let bytes = crate::source::input::read_file(&manifest_path, bundle::MAX_MANIFEST_BYTES as u64)
            .map_err(|e| kept_err(e.to_string()))?;
        let signature = super::read_key_file(&dir.join("manifest.minisig")).map_err(|e| kept_err(e.to_string()))?;
        let manifest = bundle::verify_manifest(&bytes, &signature, &opts.public_key, &opts.fleet, None, false)
            .map_err(|e| kept_err(e.to_string()))?;
        if manifest.revision != current.revision {
            return Err(kept_err(format!(
                "current names revision {}, its manifest {}",
                current.revision, manifest.revision
            )));
        }
        let tables = bundle::open_unpacked(&manifest, &dir.join("files"), cache_dir.to_owned())
            .map_err(|e| kept_err(e.to_string()))?;
        let sequence = current.sequence.max(manifest.revision);
        let bundle = Unpacked {
            revision: manifest.revision,
            sequence,
            created: manifest.created.clone(),
            manifest,
            tables,
            dir,
        };
        Ok(Some(Kept { bundle, applied_at: current.applied_at }))
    }
}

/// Records `bundle` as the last good one (it is in force), then removes every
/// other revision kept. Returns when it was applied.
pub fn commit(opts: &FleetOptions, state_dir: &Path, bundle: &Unpacked) -> Result<String, HostError> {
    let base = opts.base_dir(state_dir);
    let applied_at = crate::clock::rfc3339_millis(SystemTime::now());
    let current = Current { revision: bundle.revision, applied_at: applied_at.clone(), sequence: bundle.sequence };
    let path = base.join("current");
    let staged = base.join("current.incoming");
    let text = serde_json::to_vec(&current).expect("current serializes");
    write_synced(&staged, &text)?;
    std::fs::rename(&staged, &path).map_err(io_err(&path))?;
    let keep = revision_dir(&base, bundle.revision);
    if let Ok(entries) = std::fs::read_dir(&base) {
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p != keep && name.starts_with('r') && p.is_dir() {
                if let Err(e) = std::fs::remove_dir_all(&p) {
                    log::warn!("fleet: cannot remove the old bundle {}: {e}", p.display());
                }
            }
        }
    }
    Ok(applied_at)
}

/// Removes an unpacked bundle that was refused (never the one in force).
pub fn discard(bundle: &Unpacked) {
    let _ = std::fs::remove_dir_all(&bundle.dir);
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), HostError> {
    use std::io::Write as _;
    let mut f = std::fs::File::create(path).map_err(io_err(path))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(io_err(path))
}

/// Why a bundle was not offered: said in the host's state. A transient
/// refusal (etcd or a URL source failed meanwhile) is tried again; another
/// waits for the group's pointer to change.
#[derive(Clone, Debug)]
pub struct Refusal {
    pub reason: String,
    pub transient: bool,
}

impl Refusal {
    fn lasting(reason: impl Into<String>) -> Self {
        Refusal { reason: reason.into(), transient: false }
    }
}

/// Fetches, verifies and unpacks the bundle `pointer` names, for a host that
/// applied `applied`. None: nothing to do (the pointer is the applied revision).
#[allow(clippy::too_many_arguments)]
pub fn fetch_bundle(
    opts: &FleetOptions,
    store: &FleetStore<'_>,
    pointer: &Pointer,
    applied: Option<u64>,
    seen: u64,
    state_dir: &Path,
    cache_dir: &Path,
) -> Result<Option<Unpacked>, Refusal> {
    let (fleet, group, rev) = (&opts.fleet, &opts.group, pointer.revision);
    let follow = may_follow(pointer, fleet, group, applied, seen, &opts.public_key)
        .map_err(|e| Refusal::lasting(format!("group {group} points back at revision {rev}: {e}")))?;
    if !follow {
        let applied = applied.unwrap_or(0);
        if rev == applied {
            return Ok(None);
        }
        return Err(Refusal::lasting(match &pointer.rollback {
            None if rev < applied => format!(
                "group {group} points at revision {rev}, older than the applied {applied}: refused without a \
                 signed rollback (`blocker fleet rollback`)"
            ),
            None => format!(
                "group {group} points at revision {rev}, which a rollback (number {seen}) took back: publish it \
                 again to apply it"
            ),
            Some(_) => format!(
                "group {group}: the rollback to revision {rev} (number {}) is not newer than what this host \
                 followed ({seen}): refused as a replay (sign a new one with `blocker fleet rollback`)",
                pointer.published
            ),
        }));
    }
    // etcd down, or a revision whose bundle is not (yet) there: tried again.
    let etcd_refusal = |e: StoreError| match e {
        StoreError::Etcd(_) | StoreError::NoBundle { .. } => Refusal { reason: e.to_string(), transient: true },
        other => Refusal::lasting(other.to_string()),
    };
    let (bytes, signature) = store.bundle_head(rev).map_err(etcd_refusal)?;
    let rollback = applied.is_some_and(|a| rev <= a);
    let manifest = bundle::verify_manifest(&bytes, &signature, &opts.public_key, fleet, applied, rollback)
        .map_err(|e| Refusal::lasting(format!("revision {rev}: {e}")))?;
    if manifest.revision != rev {
        return Err(Refusal::lasting(format!(
            "group {group} points at revision {rev}, whose signed manifest is of revision {}",
            manifest.revision
        )));
    }
    let files = store.bundle_files(&manifest).map_err(etcd_refusal)?;
    let mut unpacked = unpack(opts, &manifest, &bytes, &signature, &files, state_dir, cache_dir)
        .map_err(|e| Refusal::lasting(format!("revision {rev}: {e}")))?;
    unpacked.sequence = if pointer.rollback.is_some() { pointer.published } else { rev };
    drop(files);
    // URL sources new to this host: fetched here, off the daemon's task, as
    // `check-config` fetches them (a reload reads cached copies only).
    for job in unpacked.tables.policy.url_jobs() {
        if fetch::cached_copy(&job.url, cache_dir).exists() {
            continue;
        }
        if let Err(e) = job.fetch() {
            if !job.optional {
                discard(&unpacked);
                return Err(Refusal { reason: format!("revision {rev}: {}: {e}", job.url), transient: true });
            }
        }
    }
    Ok(Some(unpacked))
}

/// Writes a verified bundle under its revision's directory: the files (each
/// checked against the manifest), then the manifest and its signature.
fn unpack(
    opts: &FleetOptions,
    manifest: &Manifest,
    manifest_bytes: &[u8],
    signature: &str,
    files: &[Vec<u8>],
    state_dir: &Path,
    cache_dir: &Path,
) -> Result<Unpacked, HostError> {
    let dir = revision_dir(&opts.base_dir(state_dir), manifest.revision);
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let tables = bundle::unpack(manifest, files, &dir.join("files"), cache_dir.to_owned())?;
    write_synced(&dir.join("manifest.json"), manifest_bytes)?;
    write_synced(&dir.join("manifest.minisig"), signature.as_bytes())?;
    Ok(Unpacked {
        revision: manifest.revision,
        sequence: manifest.revision,
        created: manifest.created.clone(),
        manifest: manifest.clone(),
        tables,
        dir,
    })
}

/// Where the bundle a host starts with came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartedFrom {
    /// Read from etcd now.
    Etcd,
    /// The last good bundle on disk: etcd had nothing newer, or could not be asked.
    Disk { why: String },
}

/// The bundle a host starts with.
#[derive(Debug)]
pub struct Start {
    pub bundle: Unpacked,
    pub from: StartedFrom,
    /// When it was applied (None: not yet, it comes from etcd now).
    pub applied_at: Option<String>,
    /// The last good bundle, when the start's comes from etcd: enforced instead
    /// if the new one does not compile here.
    pub kept: Option<Kept>,
    /// Why etcd's newer bundle was refused, if it was.
    pub refused: Option<String>,
}

/// The bundle to start with: the group's in etcd when it is newer than the
/// last good one kept on disk (and verifies), else the kept one. With none,
/// the start is refused, or waits (`wait`) until etcd has one.
pub fn starting_bundle(opts: &FleetOptions, state_dir: &Path, cache_dir: &Path) -> Result<Start, HostError> {
    let kept = match Kept::load(opts, state_dir, cache_dir) {
        Ok(k) => k,
        Err(e) => {
            log::error!("fleet {}: {e}; it is not used", opts.fleet);
            None
        }
    };
    let mut backoff = Backoff::default();
    loop {
        let asked = ask_etcd(opts, kept.as_ref(), state_dir, cache_dir);
        let (why, refused) = match asked {
            Ok(Some(bundle)) => {
                return Ok(Start { bundle, from: StartedFrom::Etcd, applied_at: None, kept, refused: None })
            }
            Ok(None) if kept.is_some() => ("etcd has nothing newer".to_owned(), None),
            Ok(None) => (format!("group {} has no bundle in etcd", opts.group), None),
            // etcd, or a URL source, did not answer: nothing was refused.
            Err(r) if r.transient => (r.reason, None),
            Err(r) => (format!("etcd's bundle was refused: {}", r.reason), Some(r.reason)),
        };
        if let Some(k) = kept {
            let applied_at = Some(k.applied_at.clone());
            return Ok(Start { bundle: k.bundle, from: StartedFrom::Disk { why }, applied_at, kept: None, refused });
        }
        if !opts.wait {
            return Err(HostError::NoBundle { fleet: opts.fleet.clone(), why });
        }
        let pause = backoff.next_wait();
        log::warn!("fleet {}: no bundle yet ({why}); asking again in {} s (--fleet-wait)", opts.fleet, pause.as_secs());
        std::thread::sleep(pause);
    }
}

/// The group's bundle from etcd if it is one to follow from `kept`.
fn ask_etcd(
    opts: &FleetOptions,
    kept: Option<&Kept>,
    state_dir: &Path,
    cache_dir: &Path,
) -> Result<Option<Unpacked>, Refusal> {
    // The pointer within a request's time (a hung etcd must not hold the
    // start for long); the bundle's files with the time they may need.
    let quick = opts.etcd(REQUEST_TIMEOUT, REQUEST_TIMEOUT).map_err(Refusal::lasting)?;
    let etcd = opts.etcd(BUNDLE_TIMEOUT, WATCH_ROUND).map_err(Refusal::lasting)?;
    let store = FleetStore::new(&etcd, &opts.fleet).map_err(|e| Refusal::lasting(e.to_string()))?;
    let unreachable = |e: StoreError| Refusal { reason: format!("etcd unreachable: {e}"), transient: true };
    let quick_store = FleetStore::new(&quick, &opts.fleet).map_err(|e| Refusal::lasting(e.to_string()))?;
    let (pointer, _) = quick_store.pointer_at(&opts.group).map_err(|e| match e {
        StoreError::Etcd(_) => unreachable(e),
        other => Refusal::lasting(other.to_string()),
    })?;
    let Some(pointer) = pointer else { return Ok(None) };
    let applied = kept.map(|k| k.bundle.revision);
    let seen = kept.map_or(0, |k| k.bundle.sequence);
    fetch_bundle(opts, &store, &pointer, applied, seen, state_dir, cache_dir)
}

/// Waits of 1 s, 2 s, 4 s ... up to `MAX_BACKOFF`, each cut by a random part
/// of up to a half: ten thousand hosts that lost etcd together come back spread.
#[derive(Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    pub fn next_wait(&mut self) -> Duration {
        let full = Duration::from_secs(1 << self.failures.min(5)).min(MAX_BACKOFF);
        self.failures = self.failures.saturating_add(1);
        let mut b = [0u8; 2];
        let _ = getrandom::fill(&mut b);
        let cut = f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX) / 2.0;
        full.mul_f64(1.0 - cut)
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// What the follower hands its findings to: the daemon (through its task), or
/// the benchmark's stand-in.
pub trait Host {
    /// Whether the group's pointer was just read from etcd (Ok), or why not.
    fn synced(&mut self, result: Result<(), String>);
    /// Puts a verified, unpacked bundle in force; Err: refused, nothing changed.
    fn offer(&mut self, bundle: Unpacked) -> Result<(), String>;
    /// A bundle was refused before it was offered (its signature, its
    /// revision); None: the group points at the revision in force again, so
    /// nothing stands refused.
    fn refused(&mut self, reason: Option<&str>);
}

/// Follows the group's pointer for ever: reads it, fetches and offers what is
/// newer (or a signed rollback), and watches from the read's revision for the
/// next change (after a compaction, or at the end of a round, it reads again).
pub struct Follower {
    pub opts: FleetOptions,
    pub state_dir: PathBuf,
    pub cache_dir: PathBuf,
    /// The revision in force, and the host's state as last reported.
    pub state: HostState,
    /// The highest sequence followed (`store::may_follow`).
    pub seen: u64,
    pub reporter: Reporter,
}

impl Follower {
    pub fn run(mut self, etcd: &Etcd, host: &mut impl Host) -> ! {
        let store = FleetStore::new(etcd, &self.opts.fleet).expect("the fleet's name was checked");
        let key = store.group_key(&self.opts.group);
        let mut backoff = Backoff::default();
        // Retries of a bundle that could not be fetched (etcd busy, a URL
        // source down): soon, spread, then less often.
        let mut retry = Backoff::default();
        // The pointer last refused, and whether it is tried again.
        let mut refused: Option<(Pointer, bool)> = None;
        // The pointer a watch event carried (its value and revision): no read needed.
        let mut seen: Option<(Option<Pointer>, i64)> = None;
        loop {
            let listed = match seen.take() {
                Some(v) => Ok(v),
                None => store.pointer_at(&self.opts.group),
            };
            let (pointer, at) = match listed {
                Ok(v) => v,
                // etcd answered, with a value that is not a pointer: refused
                // like a bad bundle, and read again later.
                Err(StoreError::Pointer { group, reason }) => {
                    host.synced(Ok(()));
                    let why = StoreError::Pointer { group, reason }.to_string();
                    if self.state.error.as_deref() != Some(why.as_str()) {
                        log::error!("fleet {}: {why}; the running table is unchanged", self.opts.fleet);
                        host.refused(Some(&why));
                        self.state.error = Some(why);
                        self.reporter.report(&self.state);
                    }
                    std::thread::sleep(retry.next_wait());
                    continue;
                }
                Err(e) => {
                    host.synced(Err(e.to_string()));
                    std::thread::sleep(backoff.next_wait());
                    continue;
                }
            };
            host.synced(Ok(()));
            backoff.reset();
            if let Some(p) = pointer {
                let skip = refused.as_ref().is_some_and(|(r, again)| *r == p && !again);
                if !skip {
                    refused = self.consider(&store, &p, host).err().map(|transient| (p, transient));
                    if matches!(refused, Some((_, true))) {
                        std::thread::sleep(retry.next_wait());
                        continue;
                    }
                    retry.reset();
                }
            }
            // The next change of the pointer; None: the round ended, or etcd
            // compacted the revision away: read again.
            let watched = etcd.watch(&key, at + 1, |events, last| {
                // The group's own key (the prefix also matches longer names).
                for e in events.iter().rev() {
                    match e {
                        Event::Put(kv) if kv.key == key => {
                            if let Ok(p) = serde_json::from_slice(&kv.value) {
                                seen = Some((Some(p), last));
                            }
                            return false;
                        }
                        Event::Delete { key: k, .. } if *k == key => {
                            seen = Some((None, last));
                            return false;
                        }
                        _ => {}
                    }
                }
                true
            });
            match watched {
                Ok(_) | Err(EtcdError::Compacted { .. }) => {}
                Err(e) => {
                    host.synced(Err(e.to_string()));
                    std::thread::sleep(backoff.next_wait());
                }
            }
        }
    }

    /// Fetches and offers what `pointer` names. Err(transient): refused.
    fn consider(&mut self, store: &FleetStore<'_>, pointer: &Pointer, host: &mut impl Host) -> Result<(), bool> {
        let fetched =
            fetch_bundle(&self.opts, store, pointer, self.state.revision, self.seen, &self.state_dir, &self.cache_dir);
        let error = match fetched {
            Ok(None) => {
                if self.state.error.take().is_some() {
                    host.refused(None);
                    self.reporter.report(&self.state);
                }
                return Ok(());
            }
            Ok(Some(bundle)) => {
                let (revision, sequence) = (bundle.revision, bundle.sequence);
                match host.offer(bundle) {
                    Ok(()) => {
                        self.seen = self.seen.max(sequence);
                        log::info!("fleet {}: revision {revision} applied", self.opts.fleet);
                        self.state.revision = Some(revision);
                        self.state.applied_at = Some(crate::clock::rfc3339_millis(SystemTime::now()));
                        self.state.error = None;
                        self.reporter.report(&self.state);
                        return Ok(());
                    }
                    Err(e) => Refusal::lasting(format!("revision {revision}: {e}")),
                }
            }
            Err(r) => r,
        };
        log::error!("fleet {}: {}; the running table is unchanged", self.opts.fleet, error.reason);
        host.refused(Some(&error.reason));
        self.state.error = Some(error.reason);
        self.reporter.report(&self.state);
        Err(error.transient)
    }
}

/// Keeps the host's state in etcd: written at each change, and its `alive`
/// key under a lease kept alive every third of its time (a new lease, and the
/// state written again, when the old one expired while etcd was away).
#[derive(Clone)]
pub struct Reporter {
    tx: mpsc::Sender<HostState>,
    /// What etcd last accepted, for `status` (None: not yet).
    pub reported: Arc<Mutex<Option<SystemTime>>>,
}

impl Reporter {
    pub fn spawn(opts: &FleetOptions, etcd: Etcd, first: HostState) -> std::io::Result<Reporter> {
        let (tx, rx) = mpsc::channel::<HostState>();
        let reported = Arc::new(Mutex::new(None));
        let fleet = opts.fleet.clone();
        let shared = reported.clone();
        std::thread::Builder::new().name("fleet-report".into()).spawn(move || {
            let store = FleetStore::new(&etcd, &fleet).expect("the fleet's name was checked");
            let mut state = first;
            let mut lease: Option<i64> = None;
            // Whether etcd has the state as it is now.
            let mut written = false;
            let every = Duration::from_secs(LEASE_TTL_SECONDS / 3);
            let mut next_keepalive = Instant::now();
            // Every sixth round, the state is read back: keys deleted by hand
            // (or lost with etcd's data) are written again.
            let mut rounds = 0u32;
            loop {
                if Instant::now() >= next_keepalive {
                    next_keepalive = Instant::now() + every;
                    rounds = rounds.wrapping_add(1);
                    if written && rounds.is_multiple_of(6) && !store.holds(&state).unwrap_or(true) {
                        written = false;
                    }
                    if let Some(id) = lease {
                        match etcd.keepalive(id) {
                            Ok(ttl) if ttl > 0 => {}
                            Ok(_) => {
                                lease = None;
                                written = false;
                            }
                            Err(e) => log::debug!("fleet: lease keep-alive failed: {e}"),
                        }
                    }
                    if lease.is_none() {
                        match etcd.grant(LEASE_TTL_SECONDS) {
                            Ok(id) => {
                                lease = Some(id);
                                written = false;
                            }
                            Err(e) => log::debug!("fleet: no lease: {e}"),
                        }
                    }
                }
                if !written {
                    match store.report(&state, lease) {
                        Ok(()) => {
                            written = lease.is_some();
                            *shared.lock().unwrap_or_else(|p| p.into_inner()) = Some(SystemTime::now());
                        }
                        Err(e) => log::debug!("fleet: state not reported: {e}"),
                    }
                }
                let wait = if written {
                    next_keepalive.saturating_duration_since(Instant::now())
                } else {
                    Duration::from_secs(1)
                };
                match rx.recv_timeout(wait) {
                    Ok(s) => {
                        state = s;
                        written = false;
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
        })?;
        Ok(Reporter { tx, reported })
    }

    pub fn report(&self, state: &HostState) {
        let _ = self.tx.send(state.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_names_are_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let (s, p) = (tmp.path().join("k"), tmp.path().join("k.pub"));
        crate::fleet::keygen(&s, &p).unwrap();
        let section = FleetSection {
            etcd: Some(Endpoints::One("http://a:2379, http://b:2379".into())),
            name: Some("edge".into()),
            public_key: Some(p.clone()),
            host_name: Some("web-1".into()),
            ..Default::default()
        };
        let o = section.check(|k| format!("fleet.{k}")).unwrap();
        assert_eq!(o.endpoints, ["http://a:2379", "http://b:2379"]);
        assert_eq!(o.group, "default");
        let bad = |s: FleetSection| s.check(|k| format!("fleet.{k}")).unwrap_err().to_string();
        assert!(bad(FleetSection { etcd: None, ..section.clone() }).starts_with("fleet.etcd: missing"));
        assert!(bad(FleetSection { name: Some("a/b".into()), ..section.clone() }).starts_with("fleet.name:"));
        assert!(bad(FleetSection { host_name: Some("a b".into()), ..section.clone() }).starts_with("fleet.host_name:"));
        let e = bad(FleetSection { public_key: Some(s), ..section.clone() });
        assert!(e.starts_with("fleet.public_key:"), "{e}");
        let e = bad(FleetSection { cert: Some(p.clone()), ..section.clone() });
        assert!(e.starts_with("fleet.key:"), "{e}");
        let e = bad(FleetSection { ca_cert: Some(p), ..section });
        assert!(e.contains("no PEM certificate"), "{e}");
    }

    #[test]
    fn the_last_good_bundle_is_kept_checked_again_and_refused_once_changed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::write(dir.join("attackers.txt"), "198.51.100.0/24\n").unwrap();
        let config = dir.join("fleet.toml");
        std::fs::write(&config, format!("[policy]\ndeny = [\"{}/attackers.txt\"]\n", dir.display())).unwrap();
        let (secret, public) = crate::fleet::sign::generate().unwrap();
        let opts = FleetOptions {
            endpoints: vec!["http://127.0.0.1:1".into()],
            fleet: "edge".into(),
            public_key_path: dir.join("fleet.pub"),
            public_key: public,
            group: "default".into(),
            host: "h".into(),
            wait: false,
            tls: Tls::default(),
        };
        let (state, cache) = (dir.join("state"), dir.join("cache"));
        assert!(Kept::load(&opts, &state, &cache).unwrap().is_none(), "nothing kept yet");
        let bundle = crate::fleet::bundle::Bundle::build(&config, "edge", 3).unwrap();
        let (bytes, sig) = (bundle.manifest_bytes(), bundle.sign(&secret));
        let unpacked = unpack(&opts, &bundle.manifest, &bytes, &sig, &bundle.files, &state, &cache).unwrap();
        let applied_at = commit(&opts, &state, &unpacked).unwrap();
        let kept = Kept::load(&opts, &state, &cache).unwrap().unwrap();
        assert_eq!((kept.bundle.revision, kept.applied_at), (3, applied_at));
        let table = crate::compile::table::build_table(&kept.bundle.tables.policy).unwrap();
        assert!(table.lookup(crate::net::Family::V4, 0xc633_6402).is_some(), "198.51.100.2 is denied");

        // A file changed on disk since: refused, naming why.
        let file = std::fs::read_dir(unpacked.dir.join("files")).unwrap().next().unwrap().unwrap().path();
        std::fs::write(&file, "198.51.100.0/25\n").unwrap();
        let e = Kept::load(&opts, &state, &cache).unwrap_err().to_string();
        assert!(e.contains("not the one signed"), "{e}");
        // Another fleet's key: refused.
        let (_, other) = crate::fleet::sign::generate().unwrap();
        let e = Kept::load(&FleetOptions { public_key: other, ..opts }, &state, &cache).unwrap_err().to_string();
        assert!(e.contains("signature") || e.contains("key"), "{e}");
    }

    #[test]
    fn backoff_grows_to_its_bound_with_jitter() {
        let mut b = Backoff::default();
        let waits: Vec<Duration> = (0..8).map(|_| b.next_wait()).collect();
        assert!(waits[0] >= Duration::from_millis(500) && waits[0] <= Duration::from_secs(1));
        assert!(waits[7] >= MAX_BACKOFF / 2 && waits[7] <= MAX_BACKOFF, "{waits:?}");
        b.reset();
        assert!(b.next_wait() <= Duration::from_secs(1));
    }
}
