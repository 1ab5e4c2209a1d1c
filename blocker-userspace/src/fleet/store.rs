//! Where a fleet lives in etcd, under `blocker/FLEET/`:
//!
//! - `latest`: the highest revision published (a counter, moved by compare-and-put);
//! - `bundles/REV/files/FILE/CHUNK`: a bundle's files, in chunks of at most 1 MiB;
//! - `bundles/REV/signature`, then `bundles/REV/manifest`: written last, so a
//!   bundle whose manifest is there is whole;
//! - `bundles/REV/rollback`: the statement of the rollback that took REV as
//!   its number (no bundle has it);
//! - `groups/GROUP`: the revision a group's hosts apply (`Pointer`);
//! - `hosts/HOST/state`: what a host applied, and when, and its error;
//! - `hosts/HOST/alive`: under the host's lease: gone when the host is.
//!
//! Revisions are zero-padded in keys, so keys sort as numbers.

use serde::{Deserialize, Serialize};

use super::{
    bundle::{Bundle, Manifest, CHUNK_BYTES, MAX_BUNDLE_BYTES},
    etcd::{Etcd, EtcdError},
    sign::{PublicKey, SecretKey, SignError},
};

/// The group of hosts that name none.
pub const DEFAULT_GROUP: &str = "default";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error("{what} {name}: 1 to 64 letters, digits, '-', '_' or '.'")]
    Name { what: &'static str, name: String },
    #[error("fleet {fleet} has no bundle of revision {revision} in etcd: `blocker fleet status` lists what is there")]
    NoBundle { fleet: String, revision: u64 },
    #[error("bundle {revision}: {reason}")]
    Damaged { revision: u64, reason: String },
    #[error(
        "fleet {fleet}: `latest` holds {value}, not a revision: put the highest revision there (etcdctl put \
         blocker/{fleet}/latest N) before publishing"
    )]
    Latest { fleet: String, value: String },
    #[error("another publisher moved `latest` meanwhile; try again")]
    Busy,
    #[error("the pointer of group {group} is not one: {reason}; point it again with `blocker fleet promote`")]
    Pointer { group: String, reason: String },
    #[error("rollback: {0}")]
    Rollback(#[from] SignError),
}

/// Checks a fleet, group or host name.
pub fn check_name(what: &'static str, name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(StoreError::Name { what, name: crate::source::input::quote(name) })
    }
}

/// The revision a group applies. A pointer to an older revision than a host
/// applied carries a signed rollback statement (`rollback_statement`): hosts
/// refuse to go back without one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pointer {
    pub revision: u64,
    /// The signature of the rollback statement (None: a forward pointer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<String>,
    /// The highest revision published when the rollback was signed: a host
    /// that applied a later one ignores this (old) rollback.
    #[serde(default)]
    pub published: u64,
}

/// What a rollback's signature covers.
pub fn rollback_statement(fleet: &str, group: &str, revision: u64, published: u64) -> String {
    format!("blocker fleet {fleet} group {group} rollback to revision {revision} (latest published {published})")
}

/// What a host reports about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostState {
    pub host: String,
    pub group: String,
    /// The revision it enforces (None: none yet).
    pub revision: Option<u64>,
    /// When it applied it (RFC 3339).
    pub applied_at: Option<String>,
    /// Why the last bundle was refused (None: it was not).
    pub error: Option<String>,
}

pub struct FleetStore<'a> {
    etcd: &'a Etcd,
    fleet: String,
}

impl<'a> FleetStore<'a> {
    pub fn new(etcd: &'a Etcd, fleet: &str) -> Result<FleetStore<'a>, StoreError> {
        check_name("fleet", fleet)?;
        Ok(FleetStore { etcd, fleet: fleet.to_owned() })
    }

    pub fn fleet(&self) -> &str {
        &self.fleet
    }

    fn key(&self, rest: &str) -> String {
        format!("blocker/{}/{rest}", self.fleet)
    }

    fn bundle_key(&self, revision: u64, rest: &str) -> String {
        self.key(&format!("bundles/{revision:020}/{rest}"))
    }

    /// The highest revision published (0: none).
    pub fn latest(&self) -> Result<u64, StoreError> {
        Ok(self.latest_kv()?.0)
    }

    /// `latest` and its key's revision. A `latest` that is not a number is
    /// refused; a missing one (deleted) counts from the highest bundle stored,
    /// so a revision is never taken twice.
    fn latest_kv(&self) -> Result<(u64, i64), StoreError> {
        let (kv, _) = self.etcd.get(&self.key("latest"))?;
        let highest = self.highest_bundle()?;
        Ok(match kv {
            Some(kv) => {
                let text = String::from_utf8_lossy(&kv.value);
                let n: u64 = text.trim().parse().map_err(|_| StoreError::Latest {
                    fleet: self.fleet.clone(),
                    value: crate::source::input::quote(&text),
                })?;
                (n.max(highest), kv.mod_revision)
            }
            None => (highest, 0),
        })
    }

    /// The highest revision with something stored under `bundles/` (0: none).
    fn highest_bundle(&self) -> Result<u64, StoreError> {
        let prefix = self.key("bundles/");
        let last = self.etcd.last_key(&prefix)?;
        Ok(last.and_then(|k| k.strip_prefix(&prefix)?.split('/').next()?.parse().ok()).unwrap_or(0))
    }

    /// Takes the next revision (compare-and-put on `latest`).
    pub fn reserve_revision(&self) -> Result<u64, StoreError> {
        for _ in 0..5 {
            let (latest, at) = self.latest_kv()?;
            let next = latest + 1;
            if self.etcd.put_if(&self.key("latest"), next.to_string().as_bytes(), at)? {
                return Ok(next);
            }
        }
        Err(StoreError::Busy)
    }

    /// Stores a bundle: its files, its signature, then its manifest.
    pub fn store_bundle(&self, bundle: &Bundle, signature: &str) -> Result<(), StoreError> {
        let rev = bundle.manifest.revision;
        for i in 0..bundle.files.len() {
            for (c, chunk) in bundle.chunks(i).enumerate() {
                self.etcd.put(&self.bundle_key(rev, &format!("files/{i:04}/{c:06}")), chunk, None)?;
            }
        }
        self.etcd.put(&self.bundle_key(rev, "signature"), signature.as_bytes(), None)?;
        self.etcd.put(&self.bundle_key(rev, "manifest"), &bundle.manifest_bytes(), None)?;
        Ok(())
    }

    /// A bundle's manifest and signature, as stored (to verify before anything
    /// else), in one read: `manifest` and `signature` sort next to each other.
    pub fn bundle_head(&self, revision: u64) -> Result<(Vec<u8>, String), StoreError> {
        let no = || StoreError::NoBundle { fleet: self.fleet.clone(), revision };
        let (manifest_key, signature_key) =
            (self.bundle_key(revision, "manifest"), self.bundle_key(revision, "signature"));
        let mut end = signature_key.clone().into_bytes();
        end.push(0);
        let (kvs, _) = self.etcd.range(manifest_key.as_bytes(), &end)?;
        let value = |key: &str| kvs.iter().find(|kv| kv.key == key).map(|kv| kv.value.clone());
        let manifest = value(&manifest_key).ok_or_else(no)?;
        let signature = value(&signature_key).ok_or_else(no)?;
        Ok((manifest, String::from_utf8_lossy(&signature).into_owned()))
    }

    /// A verified manifest's files, each reassembled from its chunks and held
    /// to the manifest's size (the hashes are checked by `bundle::unpack`).
    pub fn bundle_files(&self, manifest: &Manifest) -> Result<Vec<Vec<u8>>, StoreError> {
        let rev = manifest.revision;
        // (`verify_manifest` bounds each size; this holds whatever the caller.)
        let total = manifest.files.iter().fold(0u64, |t, f| t.saturating_add(f.bytes));
        if total > MAX_BUNDLE_BYTES {
            return Err(StoreError::Damaged { revision: rev, reason: format!("{total} bytes of files") });
        }
        let mut out = Vec::with_capacity(manifest.files.len());
        for (i, entry) in manifest.files.iter().enumerate() {
            let (chunks, _) = self.etcd.range_prefix(&self.bundle_key(rev, &format!("files/{i:04}/")))?;
            if chunks.len() != entry.chunks as usize {
                let reason = format!("{}: {} chunks stored, {} signed", entry.path, chunks.len(), entry.chunks);
                return Err(StoreError::Damaged { revision: rev, reason });
            }
            let mut content = Vec::with_capacity(entry.bytes.min(MAX_BUNDLE_BYTES) as usize);
            for c in chunks {
                if c.value.len() > CHUNK_BYTES || content.len() + c.value.len() > entry.bytes as usize {
                    return Err(StoreError::Damaged { revision: rev, reason: format!("{}: too long", entry.path) });
                }
                content.extend_from_slice(&c.value);
            }
            out.push(content);
        }
        Ok(out)
    }

    pub fn point(&self, group: &str, pointer: &Pointer) -> Result<(), StoreError> {
        check_name("group", group)?;
        let value = serde_json::to_vec(pointer).expect("a pointer serializes");
        self.etcd.put(&self.key(&format!("groups/{group}")), &value, None)?;
        Ok(())
    }

    /// A group's pointer (None: the group has none), and the key's revision.
    pub fn pointer(&self, group: &str) -> Result<Option<(Pointer, i64)>, StoreError> {
        let (kv, _) = self.etcd.get(&self.key(&format!("groups/{group}")))?;
        Ok(kv.and_then(|kv| serde_json::from_slice(&kv.value).ok().map(|p| (p, kv.mod_revision))))
    }

    /// The key of a group's pointer (what its hosts watch).
    pub fn group_key(&self, group: &str) -> String {
        self.key(&format!("groups/{group}"))
    }

    /// A group's pointer as a host reads it: None when the group has none, an
    /// error when its value is not a pointer; and the store's revision at the
    /// read, from which a watch goes on (plus one).
    pub fn pointer_at(&self, group: &str) -> Result<(Option<Pointer>, i64), StoreError> {
        let (kv, at) = self.etcd.get(&self.group_key(group))?;
        let Some(kv) = kv else { return Ok((None, at)) };
        let pointer = serde_json::from_slice(&kv.value).map_err(|e| StoreError::Pointer {
            group: group.to_owned(),
            reason: format!("{e} in {}", crate::source::input::quote(&String::from_utf8_lossy(&kv.value))),
        })?;
        Ok((Some(pointer), at))
    }

    /// Every group that has a pointer.
    pub fn groups(&self) -> Result<Vec<(String, Pointer)>, StoreError> {
        let prefix = self.key("groups/");
        let (kvs, _) = self.etcd.range_prefix(&prefix)?;
        Ok(kvs
            .into_iter()
            .filter_map(|kv| {
                let name = kv.key.strip_prefix(&prefix)?.to_owned();
                serde_json::from_slice(&kv.value).ok().map(|p| (name, p))
            })
            .collect())
    }

    /// A signed pointer back to an older revision. It takes a revision
    /// number of its own (no bundle has it), so each rollback is new to the
    /// hosts, and a replayed one is not.
    pub fn rollback(&self, group: &str, revision: u64, key: &SecretKey) -> Result<Pointer, StoreError> {
        check_name("group", group)?;
        self.bundle_head(revision)?;
        let published = self.reserve_revision()?;
        let statement = rollback_statement(&self.fleet, group, revision, published);
        // Its number is taken for good: kept where a lost `latest` is counted from.
        self.etcd.put(&self.bundle_key(published, "rollback"), statement.as_bytes(), None)?;
        let pointer = Pointer { revision, rollback: Some(key.sign(statement.as_bytes(), &statement)), published };
        self.point(group, &pointer)?;
        Ok(pointer)
    }

    /// Writes a host's state (and its liveness under `lease`).
    pub fn report(&self, state: &HostState, lease: Option<i64>) -> Result<(), StoreError> {
        check_name("host", &state.host)?;
        let value = serde_json::to_vec(state).expect("a state serializes");
        self.etcd.put(&self.key(&format!("hosts/{}/state", state.host)), &value, None)?;
        if let Some(lease) = lease {
            self.etcd.put(&self.key(&format!("hosts/{}/alive", state.host)), b"1", Some(lease))?;
        }
        Ok(())
    }

    /// Whether etcd holds `state` as this host's, with its `alive` key.
    pub fn holds(&self, state: &HostState) -> Result<bool, StoreError> {
        let (kv, _) = self.etcd.get(&self.key(&format!("hosts/{}/state", state.host)))?;
        let same = kv.is_some_and(|kv| serde_json::from_slice::<HostState>(&kv.value).ok().as_ref() == Some(state));
        Ok(same && self.etcd.get(&self.key(&format!("hosts/{}/alive", state.host)))?.0.is_some())
    }

    /// Every host's state, and whether its lease holds.
    pub fn hosts(&self) -> Result<Vec<(HostState, bool)>, StoreError> {
        let prefix = self.key("hosts/");
        let (kvs, _) = self.etcd.range_prefix(&prefix)?;
        let alive: std::collections::HashSet<&str> =
            kvs.iter().filter_map(|kv| kv.key.strip_prefix(&prefix)?.strip_suffix("/alive")).collect();
        // The host is the one its key names, whatever its value says.
        Ok(kvs
            .iter()
            .filter_map(|kv| {
                let name = kv.key.strip_prefix(&prefix)?.strip_suffix("/state")?;
                let mut s = serde_json::from_slice::<HostState>(&kv.value).unwrap_or_else(|e| HostState {
                    host: String::new(),
                    group: "?".into(),
                    revision: None,
                    applied_at: None,
                    error: Some(format!("its state in etcd is not one: {e}")),
                });
                s.host = name.to_owned();
                Some((s, alive.contains(name)))
            })
            .collect())
    }
}

/// Whether a host that applied `applied` may follow `pointer` of `group`.
/// `seen` is the highest sequence the host followed: the revisions it
/// applied, and the numbers its rollbacks took (each rollback takes a
/// revision number of its own, with no bundle). Forward only past `seen`: a
/// revision rolled back is not applied again unless published again. Back
/// only with a rollback signed by the fleet's key whose number is past
/// `seen`: a rollback is followed once, never replayed.
pub fn may_follow(
    pointer: &Pointer,
    fleet: &str,
    group: &str,
    applied: Option<u64>,
    seen: u64,
    key: &PublicKey,
) -> Result<bool, StoreError> {
    let Some(applied) = applied else { return Ok(true) };
    if pointer.revision == applied {
        return Ok(false); // nothing to do
    }
    if pointer.revision > applied && pointer.rollback.is_none() {
        return Ok(pointer.revision > seen);
    }
    let Some(sig) = &pointer.rollback else { return Ok(false) };
    let statement = rollback_statement(fleet, group, pointer.revision, pointer.published);
    key.verify(statement.as_bytes(), sig)?;
    Ok(pointer.published > seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        check_name("fleet", "edge-eu.1").unwrap();
        for bad in ["", "a/b", "..", &"x".repeat(65), "a b"] {
            assert!(check_name("fleet", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hosts_go_back_only_with_a_fresh_signed_rollback() {
        let (secret, public) = crate::fleet::sign::generate().unwrap();
        let fwd = Pointer { revision: 5, rollback: None, published: 0 };
        assert!(may_follow(&fwd, "edge", "canary", Some(4), 4, &public).unwrap());
        assert!(!may_follow(&fwd, "edge", "canary", Some(5), 5, &public).unwrap());
        assert!(!may_follow(&Pointer { revision: 3, ..fwd.clone() }, "edge", "canary", Some(5), 5, &public).unwrap());
        let statement = rollback_statement("edge", "canary", 3, 6);
        let back = Pointer { revision: 3, rollback: Some(secret.sign(statement.as_bytes(), &statement)), published: 6 };
        assert!(may_follow(&back, "edge", "canary", Some(5), 5, &public).unwrap());
        // Replayed after the host moved on to 7: ignored.
        assert!(!may_follow(&back, "edge", "canary", Some(7), 7, &public).unwrap());
        // Moved to another group, or forged: refused.
        assert!(may_follow(&back, "edge", "all", Some(5), 5, &public).is_err());
        let forged = Pointer { published: 9, ..back.clone() };
        assert!(may_follow(&forged, "edge", "canary", Some(8), 8, &public).is_err());
        // Followed once (seen 5 -> 5): replayed after the group went forward
        // to 5 again, refused; so is 5 itself (rolled back) until published anew.
        assert!(!may_follow(&back, "edge", "canary", Some(5), 6, &public).unwrap());
        assert!(!may_follow(&fwd, "edge", "canary", Some(3), 6, &public).unwrap());
        assert!(may_follow(&Pointer { revision: 7, ..fwd.clone() }, "edge", "canary", Some(3), 6, &public).unwrap());
    }
}
