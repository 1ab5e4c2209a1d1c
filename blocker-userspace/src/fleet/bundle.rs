//! A fleet bundle: a policy (a config file's `[policy]`, `[[scope]]` and
//! `[outbound]` tables) plus every local file it names, at a revision. Its
//! manifest lists each file's size, chunk count and BLAKE2b-256 hash, and the
//! manifest alone is signed, so one signature covers everything; each file
//! travels in chunks of at most `CHUNK_BYTES` (under etcd's request limit).
//! URL sources stay URLs: every host fetches them itself.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use blake2::{digest::consts::U32, Blake2b, Digest as _};
use serde::{Deserialize, Serialize};

use super::sign::{PublicKey, SecretKey, SignError};
use crate::{
    config::{parse_policy_tables, ConfigError, PolicyTables},
    policy::Policy,
};

pub const FORMAT: u32 = 1;
/// The most bytes of one stored part: etcd refuses requests over 1.5 MiB.
pub const CHUNK_BYTES: usize = 1 << 20;
/// The most files and bytes a bundle may carry, and the largest manifest.
/// A host reads each file in one answer of at most 256 MiB of JSON (base64
/// takes a third more): 128 MiB a file. etcd's default quota is 2 GiB, and
/// old bundles stay until removed: 512 MiB a bundle. Larger data belongs in
/// URL sources, which each host fetches itself.
pub const MAX_FILES: usize = 256;
pub const MAX_FILE_BYTES: u64 = 128 << 20;
pub const MAX_BUNDLE_BYTES: u64 = 512 << 20;
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;

/// What a bundle holds, and what its signature covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub fleet: String,
    pub revision: u64,
    /// When it was published (RFC 3339).
    pub created: String,
    /// The policy tables as TOML, their paths as the publisher named them.
    pub config: String,
    pub files: Vec<FileEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// The path the config names.
    pub path: String,
    pub bytes: u64,
    pub chunks: u32,
    /// BLAKE2b-256 of the content, in hex.
    pub blake2b: String,
}

/// A bundle with its files' content, in the manifest's order.
#[derive(Clone, Debug)]
pub struct Bundle {
    pub manifest: Manifest,
    pub files: Vec<Vec<u8>>,
}

/// Why a bundle was not built, or is refused. Each names what and where.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{path}: a directory source cannot travel in a bundle: give its data as one file (csv, rir or mmdb)")]
    Directory { path: String },
    #[error(transparent)]
    Input(#[from] crate::source::input::InputError),
    #[error("the bundle would carry {what}, more than the {max} a bundle may")]
    TooLarge { what: String, max: String },
    #[error("the policy is refused as a host would refuse it: {0}")]
    Policy(String),
    #[error("bundle signature: {0}")]
    Signature(#[from] SignError),
    #[error("the bundle's manifest is not one: {0}")]
    Manifest(String),
    #[error("the bundle is for fleet {found:?}, not {expected:?}")]
    OtherFleet { found: String, expected: String },
    #[error(
        "revision {revision} is not newer than the applied revision {applied}: a host goes back only by \
         `blocker fleet rollback`"
    )]
    Older { revision: u64, applied: u64 },
    #[error("bundle file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("{path}: cannot write the bundle's files: {error}")]
    Write { path: String, error: std::io::Error },
}

type Blake2b256 = Blake2b<U32>;

fn hash_hex(bytes: &[u8]) -> String {
    Blake2b256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The trusted comment a bundle's signature carries: it names the fleet and
/// the revision, so a signature cannot be moved to another bundle unseen.
pub fn trusted_comment(fleet: &str, revision: u64) -> String {
    format!("blocker fleet {fleet} revision {revision}")
}

impl Bundle {
    /// Reads a config file's policy tables and every local file they name,
    /// and checks the policy as a host would (it compiles; URL sources are
    /// fetched as `check-config` fetches them).
    pub fn build(config: &Path, fleet: &str, revision: u64) -> Result<Bundle, BundleError> {
        let text = crate::source::input::read_text(config, 16 << 20)?;
        let tables = parse_policy_tables(config, &text, crate::source::fetch::DEFAULT_CACHE_DIR.into())?;
        let mut manifest = Manifest {
            format: FORMAT,
            fleet: fleet.to_owned(),
            revision,
            created: crate::clock::rfc3339_millis(std::time::SystemTime::now()),
            config: text,
            files: Vec::new(),
        };
        let mut files = Vec::new();
        let mut total = 0u64;
        let mut paths = tables.policy.local_sources();
        paths.sort();
        paths.dedup();
        for path in paths {
            let name = path.display().to_string();
            if path.is_dir() {
                return Err(BundleError::Directory { path: name });
            }
            if !path.exists() && is_optional(&tables.policy, &path) {
                continue; // the host skips it too, with a warning
            }
            if files.len() == MAX_FILES {
                return Err(BundleError::TooLarge { what: "more files".into(), max: format!("{MAX_FILES} files") });
            }
            let bytes = crate::source::input::read_file(&path, crate::source::input::MAX_SOURCE_BYTES)?;
            if bytes.len() as u64 > MAX_FILE_BYTES {
                return Err(BundleError::TooLarge {
                    what: format!("{name}, {} bytes", bytes.len()),
                    max: "128 MiB a file (give larger data as a URL source: each host fetches it itself)".into(),
                });
            }
            total += bytes.len() as u64;
            if total > MAX_BUNDLE_BYTES {
                return Err(BundleError::TooLarge { what: format!("{total} bytes"), max: "512 MiB".into() });
            }
            manifest.files.push(FileEntry {
                path: name,
                bytes: bytes.len() as u64,
                chunks: bytes.len().div_ceil(CHUNK_BYTES).max(1) as u32,
                blake2b: hash_hex(&bytes),
            });
            files.push(bytes);
        }
        let compiled =
            crate::compile::table::build_policy(&tables.policy).map_err(|e| BundleError::Policy(e.to_string()))?;
        crate::dataplane::maps::check_list_count(&compiled.view()).map_err(|e| BundleError::Policy(e.to_string()))?;
        Ok(Bundle { manifest, files })
    }

    /// The manifest as stored and signed.
    pub fn manifest_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.manifest).expect("a manifest serializes")
    }

    pub fn sign(&self, key: &SecretKey) -> String {
        key.sign(&self.manifest_bytes(), &trusted_comment(&self.manifest.fleet, self.manifest.revision))
    }

    /// File `i` in stored parts.
    pub fn chunks(&self, i: usize) -> impl Iterator<Item = &[u8]> {
        let f = &self.files[i];
        (0..f.len().div_ceil(CHUNK_BYTES).max(1))
            .map(move |c| &f[c * CHUNK_BYTES..((c + 1) * CHUNK_BYTES).min(f.len())])
    }
}

fn is_optional(policy: &Policy, path: &Path) -> bool {
    let lists = policy.lists().any(|s| s.optional && s.path == path);
    let regions = policy.country_source.iter().any(|s| s.optional && Path::new(&s.location) == path);
    let asns = policy.asn_source.iter().any(|s| s.optional && Path::new(&s.location) == path);
    lists || regions || asns
}

/// Checks a stored manifest against its signature, the fleet's key and name,
/// and the revision a host applied (`rollback`: an older one is asked for).
pub fn verify_manifest(
    bytes: &[u8],
    signature: &str,
    key: &PublicKey,
    fleet: &str,
    applied: Option<u64>,
    rollback: bool,
) -> Result<Manifest, BundleError> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(BundleError::Manifest(format!("{} bytes, more than {MAX_MANIFEST_BYTES}", bytes.len())));
    }
    let comment = key.verify(bytes, signature)?;
    let manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| BundleError::Manifest(e.to_string()))?;
    if manifest.format != FORMAT {
        return Err(BundleError::Manifest(format!("format {} (this blocker reads {FORMAT})", manifest.format)));
    }
    if manifest.fleet != fleet {
        return Err(BundleError::OtherFleet { found: manifest.fleet, expected: fleet.to_owned() });
    }
    if comment != trusted_comment(fleet, manifest.revision) {
        return Err(BundleError::Manifest(format!("the signed comment {comment:?} is not this bundle's")));
    }
    if manifest.files.len() > MAX_FILES {
        return Err(BundleError::Manifest(format!("{} files, more than {MAX_FILES}", manifest.files.len())));
    }
    // Sizes bound what a host allocates and fetches: checked before either.
    let mut total = 0u64;
    for f in &manifest.files {
        let chunks = f.bytes.div_ceil(CHUNK_BYTES as u64).max(1);
        if f.bytes > MAX_FILE_BYTES || u64::from(f.chunks) != chunks {
            return Err(BundleError::Manifest(format!(
                "{}: {} bytes in {} chunks (at most {MAX_FILE_BYTES} bytes, in chunks of {CHUNK_BYTES})",
                crate::source::input::quote(&f.path),
                f.bytes,
                f.chunks
            )));
        }
        total = total.saturating_add(f.bytes);
    }
    if total > MAX_BUNDLE_BYTES {
        return Err(BundleError::Manifest(format!("{total} bytes of files, more than {MAX_BUNDLE_BYTES}")));
    }
    if let Some(applied) = applied {
        if manifest.revision <= applied && !rollback {
            return Err(BundleError::Older { revision: manifest.revision, applied });
        }
    }
    Ok(manifest)
}

/// A name safe in a directory: the path's last part, other bytes replaced.
fn file_name(i: usize, path: &str) -> String {
    let base = Path::new(path).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let clean: String =
        base.chars().take(64).map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
    format!("{i:03}-{clean}")
}

/// Checks each file against the manifest and writes them under `dir` (made
/// whole or not at all: written beside it, then renamed). Returns the
/// bundle's policy, its local sources naming the files under `dir`.
pub fn unpack(
    manifest: &Manifest,
    files: &[Vec<u8>],
    dir: &Path,
    cache_dir: PathBuf,
) -> Result<PolicyTables, BundleError> {
    check_files(manifest, files)?;
    let mut tables = bundle_tables(manifest, cache_dir)?;
    let write_err = |path: &Path, error| BundleError::Write { path: path.display().to_string(), error };
    let staging = dir.with_extension("incoming");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| write_err(&staging, e))?;
    let mut moved: HashMap<String, PathBuf> = HashMap::new();
    for (i, (entry, content)) in manifest.files.iter().zip(files).enumerate() {
        let name = file_name(i, &entry.path);
        std::fs::write(staging.join(&name), content).map_err(|e| write_err(&staging.join(&name), e))?;
        moved.insert(entry.path.clone(), dir.join(&name));
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&staging, dir).map_err(|e| write_err(dir, e))?;
    relocate(&mut tables.policy, &moved, dir);
    Ok(tables)
}

/// Checks each file against the manifest: its size and its hash.
fn check_files(manifest: &Manifest, files: &[Vec<u8>]) -> Result<(), BundleError> {
    if files.len() != manifest.files.len() {
        return Err(BundleError::Manifest(format!("{} files for {} entries", files.len(), manifest.files.len())));
    }
    for (entry, content) in manifest.files.iter().zip(files) {
        let bad = |reason: String| BundleError::File { path: entry.path.clone(), reason };
        if content.len() as u64 != entry.bytes {
            return Err(bad(format!("{} bytes, the manifest says {}", content.len(), entry.bytes)));
        }
        if hash_hex(content) != entry.blake2b {
            return Err(bad("its content is not the one signed".into()));
        }
    }
    Ok(())
}

/// The policy tables of a manifest's config, named as the bundle's in errors.
fn bundle_tables(manifest: &Manifest, cache_dir: PathBuf) -> Result<PolicyTables, BundleError> {
    let name = format!("bundle of fleet {} revision {}", manifest.fleet, manifest.revision);
    Ok(parse_policy_tables(Path::new(&name), &manifest.config, cache_dir)?)
}

/// A bundle `unpack` wrote under `dir` earlier (the last good one, kept on
/// disk), its files checked again against the (verified) manifest: a file
/// changed or lost since is refused. Returns its policy, as `unpack` does.
pub fn open_unpacked(manifest: &Manifest, dir: &Path, cache_dir: PathBuf) -> Result<PolicyTables, BundleError> {
    let mut files = Vec::with_capacity(manifest.files.len());
    let mut moved: HashMap<String, PathBuf> = HashMap::new();
    for (i, entry) in manifest.files.iter().enumerate() {
        let path = dir.join(file_name(i, &entry.path));
        // One byte more than signed: a longer file is seen as one.
        let content = crate::source::input::read_file(&path, entry.bytes.saturating_add(1)).map_err(|e| {
            let reason = match e {
                crate::source::input::InputError::TooLarge { .. } => "longer than signed: it changed on disk".into(),
                other => other.to_string(),
            };
            BundleError::File { path: entry.path.clone(), reason }
        })?;
        files.push(content);
        moved.insert(entry.path.clone(), path);
    }
    check_files(manifest, &files)?;
    drop(files);
    let mut tables = bundle_tables(manifest, cache_dir)?;
    relocate(&mut tables.policy, &moved, dir);
    Ok(tables)
}

/// Points every local source of `policy` at its copy in the bundle; a source
/// the bundle does not carry (an optional file the publisher lacked) at a
/// name under `dir` that does not exist, so the host skips it as the
/// publisher did.
fn relocate(policy: &mut Policy, moved: &HashMap<String, PathBuf>, dir: &Path) {
    let place = |path: &str| moved.get(path).cloned().unwrap_or_else(|| dir.join("absent").join(file_name(0, path)));
    let scopes = policy.scopes.iter_mut().chain([&mut policy.outbound]);
    let mut lists: Vec<&mut crate::source::cidr_list::ListSource> = Vec::new();
    for s in scopes {
        lists.extend(s.deny.iter_mut().chain(&mut s.reject).chain(&mut s.allow).chain(&mut s.monitor_list));
    }
    lists.extend(
        policy.deny.iter_mut().chain(&mut policy.reject).chain(&mut policy.allow).chain(&mut policy.monitor_list),
    );
    for l in lists {
        if l.url().is_none() {
            l.path = place(&l.path.display().to_string());
        }
    }
    for s in policy.country_source.iter_mut().filter(|s| !s.is_url()) {
        s.location = place(&s.location).display().to_string();
    }
    for s in policy.asn_source.iter_mut().filter(|s| !s.is_url()) {
        s.location = place(&s.location).display().to_string();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::sign::generate;

    /// A config with a list, a country CSV and an ASN CSV of its own, and an
    /// optional list that does not exist.
    fn publisher(dir: &Path) -> PathBuf {
        std::fs::write(dir.join("attackers.txt"), "198.51.100.0/24\n2001:db8:bad::/48\n").unwrap();
        std::fs::write(dir.join("regions.csv"), "203.0.113.0,203.0.113.255,XA\n").unwrap();
        std::fs::write(dir.join("asn.csv"), "192.0.2.0,192.0.2.127,64500,\"Example, Inc.\"\n").unwrap();
        let config = dir.join("fleet.toml");
        let d = dir.display();
        std::fs::write(
            &config,
            format!(
                "[policy]\ndeny = [\"attackers={d}/attackers.txt\", \"optional:later={d}/later.txt\"]\n\
                 deny_countries = [\"XA\"]\ncountry_sources = [\"csv:{d}/regions.csv\"]\n\
                 deny_asns = [\"AS64500\"]\nasn_sources = [\"csv:{d}/asn.csv\"]\nnever_block = [\"10.0.0.0/8\"]\n\
                 [[scope]]\nname = \"api\"\nports = [\"tcp:443\"]\ndeny = [\"{d}/attackers.txt\"]\n"
            ),
        )
        .unwrap();
        config
    }

    #[test]
    fn a_bundle_travels_signed_and_unpacks_to_the_same_tables() {
        let tmp = tempfile::tempdir().unwrap();
        let config = publisher(tmp.path());
        let bundle = Bundle::build(&config, "edge", 7).unwrap();
        assert_eq!(bundle.manifest.files.len(), 3, "{:?}", bundle.manifest.files);
        let (secret, public) = generate().unwrap();
        let signature = bundle.sign(&secret);
        let bytes = bundle.manifest_bytes();
        let manifest = verify_manifest(&bytes, &signature, &public, "edge", Some(6), false).unwrap();
        // Reassembled from its stored parts.
        let files: Vec<Vec<u8>> =
            (0..bundle.files.len()).map(|i| bundle.chunks(i).flatten().copied().collect()).collect();
        let host = tempfile::tempdir().unwrap();
        let dir = host.path().join("rev-7");
        let tables = unpack(&manifest, &files, &dir, host.path().join("cache")).unwrap();
        let original = parse_policy_tables(&config, &std::fs::read_to_string(&config).unwrap(), "/x".into()).unwrap();
        let a = crate::compile::table::build_policy(&original.policy).unwrap();
        let b = crate::compile::table::build_policy(&tables.policy).unwrap();
        assert_eq!(a.scopes.len(), b.scopes.len());
        for (x, y) in a.scopes.iter().zip(&b.scopes) {
            assert_eq!((&x.table.lists, &x.table.v4, &x.table.v6), (&y.table.lists, &y.table.v4, &y.table.v6));
        }
        assert!(
            tables.policy.local_sources().iter().all(|p| p.starts_with(&dir)),
            "{:?}",
            tables.policy.local_sources()
        );
        assert!(!host.path().join("rev-7.incoming").exists());
    }

    #[test]
    fn a_changed_bundle_another_fleet_or_an_older_revision_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let bundle = Bundle::build(&publisher(tmp.path()), "edge", 7).unwrap();
        let (secret, public) = generate().unwrap();
        let signature = bundle.sign(&secret);
        let bytes = bundle.manifest_bytes();
        let mut changed = bundle.manifest.clone();
        changed.config.push_str("\n# changed\n");
        let changed = serde_json::to_vec(&changed).unwrap();
        let e = verify_manifest(&changed, &signature, &public, "edge", None, false).unwrap_err();
        assert!(matches!(e, BundleError::Signature(SignError::BadSignature)), "{e}");
        let e = verify_manifest(&bytes, &signature, &public, "core", None, false).unwrap_err();
        assert!(matches!(e, BundleError::OtherFleet { .. }), "{e}");
        let e = verify_manifest(&bytes, &signature, &public, "edge", Some(7), false).unwrap_err();
        assert!(e.to_string().contains("not newer than the applied revision 7") && e.to_string().contains("rollback"));
        verify_manifest(&bytes, &signature, &public, "edge", Some(9), true).unwrap();
        // A file changed in transit: refused, naming it, and nothing is written.
        let mut files = bundle.files.clone();
        let i = bundle.manifest.files.iter().position(|f| f.path.ends_with("attackers.txt")).unwrap();
        files[i][0] ^= 1;
        let host = tempfile::tempdir().unwrap();
        let e = unpack(&bundle.manifest, &files, &host.path().join("rev-7"), "/x".into()).unwrap_err();
        assert!(e.to_string().contains("attackers.txt: its content is not the one signed"), "{e}");
        assert!(!host.path().join("rev-7").exists());
    }

    #[test]
    fn what_a_bundle_cannot_carry_is_refused_at_publish() {
        let tmp = tempfile::tempdir().unwrap();
        let config = tmp.path().join("c.toml");
        std::fs::write(&config, "[[interface]]\nname = \"eth0\"\n[policy]\ndeny_countries = [\"CN\"]\n").unwrap();
        let e = Bundle::build(&config, "edge", 1).unwrap_err().to_string();
        assert!(e.contains("interface") && e.contains("each host's own"), "{e}");
        std::fs::create_dir(tmp.path().join("blocks")).unwrap();
        let d = tmp.path().display();
        std::fs::write(&config, format!("[policy]\ncountry_sources = [\"cidr-dir:{d}/blocks\"]\n")).unwrap();
        let e = Bundle::build(&config, "edge", 1).unwrap_err();
        assert!(matches!(e, BundleError::Directory { .. }), "{e}");
        std::fs::write(&config, "[policy]\ndeny_countries = [\"XY\"]\n").unwrap();
        let e = Bundle::build(&config, "edge", 1).unwrap_err().to_string();
        assert!(e.contains("refused as a host would refuse it") && e.contains("XY"), "{e}");
    }
}
