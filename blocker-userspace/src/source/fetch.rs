//! URL sources: HTTP/HTTPS with a local cache, conditional requests (ETag /
//! Last-Modified), timeouts and a size cap. New content is validated (parsed)
//! before it replaces the last good copy, atomically; content that is empty or
//! lost more than half of its prefixes is held aside until the operator accepts
//! it. A failed fetch falls back to the last good copy and says how old it is;
//! with no copy it is an error.
//!
//! Only the start and the daemon's refresh tasks fetch. A reload reads the cached
//! copies (`cached`): a slow server never stalls it.
//!
//! Cache layout: `<cache_dir>/<key>.data` (the last good copy), `<key>.meta`
//! (JSON: url, etag, last_modified, fetched_at, prefixes, held_prefixes) and
//! `<key>.held` (content held back), the key a hash of the URL.

use std::{
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use crate::clock::{age_text, unix_secs};

/// Why a URL's content could not be had. With a last good copy, a failed fetch is
/// not an error: the copy is used (and `Fetched` says so).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The cache could not be written or read (a full disk, permissions).
    #[error("cannot {action} {path}: {error}")]
    Cache { action: String, path: PathBuf, error: std::io::Error },
    /// No answer: no connection, a timeout, TLS.
    #[error("{reason}")]
    Request { reason: String },
    #[error("HTTP status {status}")]
    Status { status: u16 },
    /// Larger than the cap (`length` when the server said it in advance).
    #[error("response{} is over the {cap} byte cap", length.map_or(String::new(), |l| format!(" of {l} bytes")))]
    TooLarge { length: Option<u64>, cap: u64 },
    /// New content that the source's own parser refused.
    #[error("the new content is not valid{}", if *had_copy { "; the last good copy is kept" } else { "" })]
    Invalid {
        had_copy: bool,
        #[source]
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "the content holds no prefix and there is no earlier copy to keep; to accept empty content, set \
         accept_shrink = true (or --accept-shrink)"
    )]
    EmptyWithoutCopy,
    #[error(
        "{url}: no cached copy yet (a reload reads cached copies only; the daemon fetches it in the background \
         and reloads when it arrives)"
    )]
    NotCachedYet { url: String },
    #[error("{url}: fetch failed and there is no cached copy")]
    NoCopy {
        url: String,
        #[source]
        cause: Box<FetchError>,
    },
}

impl FetchError {
    fn cache(action: &str, path: &Path, error: std::io::Error) -> Self {
        FetchError::Cache { action: action.to_owned(), path: path.to_owned(), error }
    }
}

/// An error with its causes, as `{:#}` prints an anyhow chain.
fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

pub const DEFAULT_CACHE_DIR: &str = "/var/lib/blocker/cache";

#[derive(Clone, Debug)]
pub struct FetchOptions {
    /// For the whole request, connection to last byte.
    pub timeout: Duration,
    pub max_bytes: u64,
    /// Apply content that is empty or lost more than half of its prefixes,
    /// instead of holding it.
    pub accept_shrink: bool,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            timeout: Duration::from_secs(60),
            max_bytes: crate::source::input::MAX_SOURCE_BYTES,
            accept_shrink: false,
        }
    }
}

/// Validates fetched content, given as the path of a file that holds it:
/// parses it as the source's format and returns how many prefixes it holds.
pub type Check<'a> = &'a (dyn Fn(&Path) -> Result<usize, CheckError> + Sync);

/// Why a source's parser refused fetched content (it names the source).
pub type CheckError = Box<dyn std::error::Error + Send + Sync>;

/// Why `obtain_parsed` has no value: the fetch failed, or the source's parser
/// (`E`) refused the copy.
#[derive(Debug, thiserror::Error)]
pub enum ObtainError<E> {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Parse(E),
}

/// A local copy of a URL's content.
#[derive(Debug)]
pub struct Fetched {
    pub path: PathBuf,
    /// What happened, for status output: fresh, not modified, or stale and why.
    pub note: Option<String>,
    pub stale: bool,
    /// Whether the content differs from the copy cached before this fetch.
    pub changed: bool,
    /// New content that was held back (empty, or shrunk by more than half).
    pub held: Option<Held>,
}

/// Content held back instead of replacing the last good copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub prefixes: usize,
    /// The last good copy's prefixes (None: there is no good copy).
    pub was: Option<usize>,
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.was {
            Some(was) => write!(
                f,
                "new content held back: {} prefixes where the last good copy has {was}; \
                 `blocker reload --accept-shrink` applies it",
                self.prefixes
            ),
            None => write!(
                f,
                "new content held back: it holds no prefix; `blocker reload --accept-shrink` (or \
                 accept_shrink = true) applies it"
            ),
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Meta {
    etag: Option<String>,
    last_modified: Option<String>,
    fetched_at: u64,
    /// Prefixes of the last good copy (None in caches of older versions).
    prefixes: Option<usize>,
    /// Prefixes of the held copy, if one is held.
    held_prefixes: Option<usize>,
}

fn now() -> u64 {
    unix_secs(SystemTime::now())
}

#[derive(Debug)]
struct CachePaths {
    data: PathBuf,
    meta: PathBuf,
    held: PathBuf,
    /// Where a download is written and validated before it is renamed.
    incoming: PathBuf,
}

fn cache_paths(url: &str, dir: &Path) -> CachePaths {
    // FNV-1a: stable across Rust versions, unlike DefaultHasher.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in url.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
    }
    let safe: String = url
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' })
        .take(60)
        .collect();
    let key = format!("{safe}-{h:016x}");
    // A name of this process and thread: a refresh running beside another never
    // mixes two downloads.
    let incoming =
        format!("{key}.incoming-{}-{:?}", std::process::id(), std::thread::current().id()).replace(['(', ')'], "");
    CachePaths {
        data: dir.join(format!("{key}.data")),
        meta: dir.join(format!("{key}.meta")),
        held: dir.join(format!("{key}.held")),
        incoming: dir.join(incoming),
    }
}

fn read_meta(path: &Path) -> Option<Meta> {
    let bytes = crate::source::input::read_file(path, 1 << 20).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let count = |k: &str| v[k].as_u64().and_then(|n| usize::try_from(n).ok());
    Some(Meta {
        etag: v["etag"].as_str().map(str::to_owned),
        last_modified: v["last_modified"].as_str().map(str::to_owned),
        fetched_at: v["fetched_at"].as_u64().unwrap_or(0),
        prefixes: count("prefixes"),
        held_prefixes: count("held_prefixes"),
    })
}

fn write_meta(path: &Path, url: &str, m: &Meta) -> Result<(), FetchError> {
    let v = serde_json::json!({
        "url": url,
        "etag": m.etag,
        "last_modified": m.last_modified,
        "fetched_at": m.fetched_at,
        "prefixes": m.prefixes,
        "held_prefixes": m.held_prefixes,
    });
    // A JSON value always serializes.
    let bytes = serde_json::to_vec_pretty(&v).unwrap_or_else(|_| v.to_string().into_bytes());
    write_atomically(path, &bytes)
}

/// Writes `bytes` to `path` and syncs it; a failed write (a full disk) leaves
/// no file behind.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), FetchError> {
    let written = std::fs::File::create(path).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(path);
        return Err(FetchError::cache("write", path, e));
    }
    Ok(())
}

/// Write-then-rename: a crash or a full disk never leaves a truncated copy, and
/// the old one stays until the new one is whole.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), FetchError> {
    let tmp = path.with_extension(
        format!("tmp-{}-{:?}", std::process::id(), std::thread::current().id()).replace(['(', ')'], ""),
    );
    write_synced(&tmp, bytes)?;
    rename(&tmp, path)
}

fn rename(from: &Path, to: &Path) -> Result<(), FetchError> {
    std::fs::rename(from, to).map_err(|e| {
        let _ = std::fs::remove_file(from);
        FetchError::cache(&format!("rename {} to", from.display()), to, e)
    })
}

/// Where the cached copy of `url` lives (it may not exist).
pub fn cached_copy(url: &str, cache_dir: &Path) -> PathBuf {
    cache_paths(url, cache_dir).data
}

/// When the last good copy of `url` was fetched (Unix seconds; an unchanged
/// answer counts), if there is a copy.
pub fn last_good_fetch(url: &str, cache_dir: &Path) -> Option<u64> {
    let paths = cache_paths(url, cache_dir);
    match read_meta(&paths.meta).map(|m| m.fetched_at) {
        Some(t) if t > 0 && paths.data.exists() => Some(t),
        // Without readable metadata, the copy's own mtime.
        _ => std::fs::metadata(&paths.data).and_then(|d| d.modified()).ok().map(unix_secs),
    }
}

/// The content held back for `url`, if any (for status).
pub fn held(url: &str, cache_dir: &Path) -> Option<Held> {
    let paths = cache_paths(url, cache_dir);
    if !paths.held.exists() {
        return None;
    }
    let meta = read_meta(&paths.meta).unwrap_or_default();
    Some(Held { prefixes: meta.held_prefixes.unwrap_or(0), was: meta.prefixes.filter(|_| paths.data.exists()) })
}

/// The last good copy of `url`, without touching the network (reloads).
pub fn cached(url: &str, cache_dir: &Path) -> Result<Fetched, FetchError> {
    let paths = cache_paths(url, cache_dir);
    if !paths.data.exists() {
        return Err(FetchError::NotCachedYet { url: url.to_owned() });
    }
    Ok(Fetched { path: paths.data, note: Some("cached copy".into()), stale: false, changed: false, held: None })
}

/// Held content made the last good copy, until `commit` (the reload that
/// applies it worked) or `rollback` (it did not: the old copy and the held
/// content are put back as they were).
#[derive(Debug)]
pub struct Accepted {
    url: String,
    paths: CachePaths,
    previous: Option<PathBuf>,
    meta_before: Meta,
    pub prefixes: usize,
}

impl Accepted {
    pub fn commit(self) {
        if let Some(prev) = &self.previous {
            let _ = std::fs::remove_file(prev);
        }
    }

    pub fn rollback(self) -> Result<(), FetchError> {
        rename(&self.paths.data, &self.paths.held)?;
        if let Some(prev) = &self.previous {
            rename(prev, &self.paths.data)?;
        }
        write_meta(&self.paths.meta, &self.url, &self.meta_before)
    }
}

/// Makes the held content of `url` its last good copy (`blocker reload
/// --accept-shrink`), keeping the old copy aside until the caller commits or
/// rolls back. None if nothing was held.
pub fn accept_held(url: &str, cache_dir: &Path) -> Result<Option<Accepted>, FetchError> {
    let paths = cache_paths(url, cache_dir);
    if !paths.held.exists() {
        return Ok(None);
    }
    let meta_before = read_meta(&paths.meta).unwrap_or_default();
    let previous = paths.data.exists().then(|| paths.data.with_extension("previous"));
    if let Some(prev) = &previous {
        rename(&paths.data, prev)?;
    }
    rename(&paths.held, &paths.data)?;
    let prefixes = meta_before.held_prefixes.unwrap_or(0);
    let meta = Meta { prefixes: Some(prefixes), held_prefixes: None, ..meta_before.clone() };
    write_meta(&paths.meta, url, &meta)?;
    Ok(Some(Accepted { url: url.to_owned(), paths, previous, meta_before, prefixes }))
}

/// Whether reading a URL source may use the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UrlAccess {
    /// Fetch (the start, `check-config`, the daemon's refresh tasks).
    Fetch,
    /// The last good copy only (reloads: a slow server must not stall them).
    CachedOnly,
}

/// The content of `url`: fetched, or the cached copy, as `access` says.
pub fn obtain(
    url: &str,
    cache_dir: &Path,
    access: UrlAccess,
    check: Check<'_>,
    opts: &FetchOptions,
) -> Result<Fetched, FetchError> {
    match access {
        UrlAccess::Fetch => fetch_with(url, cache_dir, check, opts),
        UrlAccess::CachedOnly => cached(url, cache_dir),
    }
}

/// `obtain`, with the content parsed once: when new content was validated by
/// `parse` and became the copy, that parse is the one returned; otherwise (not
/// modified, held back, failed, cached only) the copy is parsed.
pub fn obtain_parsed<T: Send, E: std::error::Error + Send + Sync + 'static>(
    url: &str,
    cache_dir: &Path,
    access: UrlAccess,
    opts: &FetchOptions,
    parse: impl Fn(&Path) -> Result<T, E> + Sync,
    prefixes: impl Fn(&T) -> usize + Sync,
) -> Result<(T, Fetched), ObtainError<E>> {
    let validated = std::sync::Mutex::new(None);
    let check = |path: &Path| -> Result<usize, CheckError> {
        let value = parse(path)?;
        let n = prefixes(&value);
        if let Ok(mut slot) = validated.lock() {
            *slot = Some(value);
        }
        Ok(n)
    };
    let fetched = obtain(url, cache_dir, access, &check, opts)?;
    let value = match validated.into_inner().ok().flatten() {
        Some(value) if fetched.changed => value,
        _ => parse(&fetched.path).map_err(ObtainError::Parse)?,
    };
    Ok((value, fetched))
}

pub fn fetch(url: &str, cache_dir: &Path, check: Check<'_>) -> Result<Fetched, FetchError> {
    fetch_with(url, cache_dir, check, &FetchOptions::default())
}

pub fn fetch_with(url: &str, cache_dir: &Path, check: Check<'_>, opts: &FetchOptions) -> Result<Fetched, FetchError> {
    std::fs::create_dir_all(cache_dir).map_err(|e| FetchError::cache("create the cache directory", cache_dir, e))?;
    let paths = cache_paths(url, cache_dir);
    let cached = paths.data.exists().then(|| read_meta(&paths.meta).unwrap_or_default());
    let result = download(url, &paths, cached.as_ref(), check, opts);
    // Whatever happened, no half-written download stays.
    let _ = std::fs::remove_file(&paths.incoming);
    match result {
        Ok(Downloaded::Replaced { note, changed }) => {
            Ok(Fetched { path: paths.data, note: Some(note), stale: false, changed, held: None })
        }
        Ok(Downloaded::Held(held)) => {
            log::warn!("{url}: {held}; the last good copy stays in use");
            Ok(Fetched {
                path: paths.data,
                note: Some(held.to_string()),
                stale: true,
                changed: false,
                held: Some(held),
            })
        }
        Err(e) => match cached {
            Some(m) => {
                // Without readable metadata, the copy's own mtime says its age.
                let fetched_at = match m.fetched_at {
                    0 => std::fs::metadata(&paths.data).and_then(|d| d.modified()).map_or(0, unix_secs),
                    t => t,
                };
                let age = age_text(now().saturating_sub(fetched_at));
                log::warn!("{url}: fetch failed ({}); using the last good copy, {age} old", chain_text(&e));
                Ok(Fetched {
                    path: paths.data,
                    note: Some(format!("fetch failed, last good copy {age} old")),
                    stale: true,
                    changed: false,
                    held: None,
                })
            }
            None => Err(FetchError::NoCopy { url: url.to_owned(), cause: Box::new(e) }),
        },
    }
}

enum Downloaded {
    Replaced { note: String, changed: bool },
    Held(Held),
}

/// Fetches `url`; new content is written aside, validated by `check`, and only
/// then renamed over the last good copy (or held back if it shrank).
fn download(
    url: &str,
    paths: &CachePaths,
    cached: Option<&Meta>,
    check: Check<'_>,
    opts: &FetchOptions,
) -> Result<Downloaded, FetchError> {
    let agent: ureq::Agent =
        ureq::Agent::config_builder().timeout_global(Some(opts.timeout)).http_status_as_error(false).build().into();
    let mut req = agent.get(url);
    if let Some(m) = cached {
        if let Some(etag) = &m.etag {
            req = req.header("If-None-Match", etag);
        }
        if let Some(lm) = &m.last_modified {
            req = req.header("If-Modified-Since", lm);
        }
    }
    let mut resp = req.call().map_err(|e| FetchError::Request { reason: e.to_string() })?;
    let status = resp.status().as_u16();
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    if status == 304 && cached.is_some() {
        let mut m = read_meta(&paths.meta).unwrap_or_default();
        m.fetched_at = now();
        // The server is back to the last good copy: nothing is held any more.
        m.held_prefixes = None;
        let _ = std::fs::remove_file(&paths.held);
        write_meta(&paths.meta, url, &m)?;
        return Ok(Downloaded::Replaced { note: "not modified since the cached copy".into(), changed: false });
    }
    if status != 200 {
        return Err(FetchError::Status { status });
    }
    let (etag, last_modified) = (header("etag"), header("last-modified"));
    if let Some(len) = resp.body().content_length() {
        if len > opts.max_bytes {
            return Err(FetchError::TooLarge { length: Some(len), cap: opts.max_bytes });
        }
    }
    let mut body = Vec::new();
    resp.body_mut()
        .as_reader()
        .take(opts.max_bytes + 1)
        .read_to_end(&mut body)
        .map_err(|e| FetchError::Request { reason: format!("reading the response: {e}") })?;
    if body.len() as u64 > opts.max_bytes {
        return Err(FetchError::TooLarge { length: None, cap: opts.max_bytes });
    }
    let old = cached.and_then(|_| std::fs::read(&paths.data).ok());
    if old.as_deref() == Some(body.as_slice()) {
        // Unchanged content keeps its file (and mtime: `status` shows when it changed).
        let mut m = read_meta(&paths.meta).unwrap_or_default();
        (m.etag, m.last_modified, m.fetched_at) = (etag, last_modified, now());
        m.held_prefixes = None;
        let _ = std::fs::remove_file(&paths.held);
        write_meta(&paths.meta, url, &m)?;
        return Ok(Downloaded::Replaced { note: format!("fetched {} bytes, unchanged", body.len()), changed: false });
    }
    drop(old);
    write_synced(&paths.incoming, &body)?;
    let prefixes = check(&paths.incoming).map_err(|cause| FetchError::Invalid { had_copy: cached.is_some(), cause })?;
    let was = cached.and_then(|m| m.prefixes);
    let shrank = prefixes == 0 || was.is_some_and(|w| prefixes < w.div_ceil(2));
    let mut meta = cached.map(|_| read_meta(&paths.meta).unwrap_or_default()).unwrap_or_default();
    if shrank && !opts.accept_shrink && cached.is_none() {
        return Err(FetchError::EmptyWithoutCopy);
    }
    if shrank && !opts.accept_shrink {
        rename(&paths.incoming, &paths.held)?;
        meta.held_prefixes = Some(prefixes);
        write_meta(&paths.meta, url, &meta)?;
        return Ok(Downloaded::Held(Held { prefixes, was }));
    }
    rename(&paths.incoming, &paths.data)?;
    let _ = std::fs::remove_file(&paths.held);
    write_meta(
        &paths.meta,
        url,
        &Meta { etag, last_modified, fetched_at: now(), prefixes: Some(prefixes), held_prefixes: None },
    )?;
    Ok(Downloaded::Replaced { note: format!("fetched {} bytes, {prefixes} prefixes", body.len()), changed: true })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use blocker_tests::{
        file_kinds as files,
        http::{serve, Script},
    };

    use super::*;

    fn list_check(path: &Path) -> Result<usize, CheckError> {
        Ok(crate::source::cidr_list::read_list(path)?.len())
    }

    #[test]
    fn content_is_validated_before_it_replaces_the_copy_and_shrinking_content_is_held() {
        let script = Arc::new(Mutex::new(Script::default()));
        let base = serve(script.clone());
        let url = format!("{base}/list.txt");
        let (_tmp, dir) = cache();
        let four = b"192.0.2.0/24\n198.51.100.0/24\n203.0.113.0/24\n2001:db8::/32\n".to_vec();
        let serve_next = |body: &[u8]| script.lock().unwrap().responses.push((200, vec![], body.to_vec()));
        serve_next(&four);
        assert!(fetch(&url, &dir, &list_check).unwrap().changed);

        // An HTML error page served with 200: refused, the copy kept, nothing left over.
        serve_next(b"<html><body>Service unavailable</body></html>\n");
        let f = fetch(&url, &dir, &list_check).unwrap();
        assert!(f.stale && !f.changed && f.held.is_none(), "{f:?}");
        assert_eq!(std::fs::read(&f.path).unwrap(), four);
        assert_eq!(files(&dir), ["data", "meta"]);

        // Empty content, then content that lost more than half: held, the copy kept.
        for shrunk in [&b""[..], b"192.0.2.0/24\n"] {
            serve_next(shrunk);
            let f = fetch(&url, &dir, &list_check).unwrap();
            let prefixes = shrunk.iter().filter(|b| **b == b'\n').count();
            assert_eq!(f.held, Some(Held { prefixes, was: Some(4) }));
            assert!(f.stale && !f.changed);
            assert_eq!(std::fs::read(&f.path).unwrap(), four, "the last good copy stays");
            assert_eq!(held(&url, &dir), Some(Held { prefixes, was: Some(4) }), "status sees it");
            assert_eq!(cached(&url, &dir).unwrap().path, f.path, "reloads read the good copy");
        }
        // Accepted: the held copy becomes the good copy, and the baseline.
        // A rollback (the reload failed) puts both back.
        accept_held(&url, &dir).unwrap().unwrap().rollback().unwrap();
        assert_eq!(std::fs::read(cached_copy(&url, &dir)).unwrap(), four);
        assert_eq!(held(&url, &dir), Some(Held { prefixes: 1, was: Some(4) }));
        let accepted = accept_held(&url, &dir).unwrap().unwrap();
        assert_eq!(accepted.prefixes, 1);
        accepted.commit();
        assert_eq!(std::fs::read(cached_copy(&url, &dir)).unwrap(), b"192.0.2.0/24\n");
        assert_eq!(held(&url, &dir), None);
        assert!(accept_held(&url, &dir).unwrap().is_none());
        assert_eq!(files(&dir), ["data", "meta"]);
        // Held content is dropped when the server is back to the good copy.
        serve_next(b"");
        assert!(fetch(&url, &dir, &list_check).unwrap().held.is_some());
        serve_next(b"192.0.2.0/24\n");
        assert!(!fetch(&url, &dir, &list_check).unwrap().changed);
        assert_eq!(held(&url, &dir), None);
        assert_eq!(files(&dir), ["data", "meta"]);
        // Losing exactly half is not a collapse.
        serve_next(b"192.0.2.0/24\n198.51.100.0/24\n");
        assert!(fetch(&url, &dir, &list_check).unwrap().changed);
        serve_next(b"192.0.2.0/24\n");
        assert!(fetch(&url, &dir, &list_check).unwrap().changed);
        // With accept_shrink, empty content applies at once.
        serve_next(b"");
        let opts = FetchOptions { accept_shrink: true, ..FetchOptions::default() };
        let f = fetch_with(&url, &dir, &list_check, &opts).unwrap();
        assert!(f.changed && f.held.is_none());
        assert_eq!(std::fs::read(&f.path).unwrap(), b"");

        // Empty content with no good copy at all is an error, like a failed fetch.
        serve_next(b"");
        let e = fetch(&format!("{base}/other.txt"), &dir, &list_check).unwrap_err();
        assert!(
            matches!(&e, FetchError::NoCopy { cause, .. } if matches!(**cause, FetchError::EmptyWithoutCopy)),
            "{e}"
        );
        assert!(
            chain_text(&e).contains("no earlier copy to keep") && chain_text(&e).contains("accept_shrink"),
            "{e:#}"
        );
    }

    /// A cache directory that does not exist yet, in a directory of the test's
    /// own that is removed when the test ends (even by a panic).
    fn cache() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        (tmp, dir)
    }

    #[test]
    fn conditional_requests_cache_and_stale_fallback() {
        let script = Arc::new(Mutex::new(Script::default()));
        let base = serve(script.clone());
        let url = format!("{base}/list.txt");
        let (_tmp, dir) = cache();
        script.lock().unwrap().responses.push((
            200,
            vec![("ETag".into(), "\"v1\"".into()), ("Last-Modified".into(), "Wed, 21 Oct 2026 07:28:00 GMT".into())],
            b"192.0.2.0/24\n".to_vec(),
        ));
        let f = fetch(&url, &dir, &list_check).unwrap();
        assert_eq!(std::fs::read(&f.path).unwrap(), b"192.0.2.0/24\n");
        assert!(!f.stale && f.changed);

        // Second fetch is conditional; 304 keeps the cached copy.
        script.lock().unwrap().responses.push((304, vec![], vec![]));
        let f = fetch(&url, &dir, &list_check).unwrap();
        let req = script.lock().unwrap().requests[1].to_ascii_lowercase();
        assert!(req.contains("if-none-match: \"v1\""), "{req}");
        assert!(req.contains("if-modified-since: wed, 21 oct 2026"), "{req}");
        assert_eq!(f.note.as_deref(), Some("not modified since the cached copy"));
        assert!(!f.changed);
        assert_eq!(std::fs::read(&f.path).unwrap(), b"192.0.2.0/24\n");

        // A server error falls back to the last good copy and says how old it is.
        script.lock().unwrap().responses.push((500, vec![], vec![]));
        let f = fetch(&url, &dir, &list_check).unwrap();
        assert!(f.stale && !f.changed);
        assert!(
            f.note.as_deref().unwrap().contains("last good copy") && f.note.as_deref().unwrap().contains(" s old"),
            "{:?}",
            f.note
        );
        assert_eq!(std::fs::read(&f.path).unwrap(), b"192.0.2.0/24\n");

        // New content replaces the copy.
        script.lock().unwrap().responses.push((200, vec![], b"198.51.100.0/24\n".to_vec()));
        let f = fetch(&url, &dir, &list_check).unwrap();
        assert_eq!(std::fs::read(&f.path).unwrap(), b"198.51.100.0/24\n");
        assert!(f.changed);
        // The same body again (a server without conditional requests): not a change.
        script.lock().unwrap().responses.push((200, vec![], b"198.51.100.0/24\n".to_vec()));
        let modified = || std::fs::metadata(&f.path).unwrap().modified().unwrap();
        let before = modified();
        std::thread::sleep(Duration::from_millis(20));
        assert!(!fetch(&url, &dir, &list_check).unwrap().changed);
        assert_eq!(modified(), before, "unchanged content keeps its mtime (status shows when it changed)");
    }

    #[test]
    fn size_cap_timeout_and_no_copy() {
        let script = Arc::new(Mutex::new(Script::default()));
        let base = serve(script.clone());
        let (_tmp, dir) = cache();
        let small = FetchOptions { timeout: Duration::from_secs(1), max_bytes: 10, accept_shrink: false };
        script.lock().unwrap().responses.push((200, vec![], vec![b'x'; 11]));
        let e = fetch_with(&format!("{base}/big"), &dir, &list_check, &small).unwrap_err();
        assert!(
            matches!(&e, FetchError::NoCopy { cause, .. } if matches!(**cause, FetchError::TooLarge { .. })),
            "{e}"
        );
        assert!(chain_text(&e).contains("byte cap"), "{}", chain_text(&e));

        script.lock().unwrap().responses.push((404, vec![], vec![]));
        let e = fetch_with(&format!("{base}/missing"), &dir, &list_check, &small).unwrap_err();
        assert!(
            matches!(&e, FetchError::NoCopy { cause, .. } if matches!(**cause, FetchError::Status { status: 404 })),
            "{e}"
        );

        script.lock().unwrap().stall = true;
        let started = std::time::Instant::now();
        let e = fetch_with(&format!("{base}/slow"), &dir, &list_check, &small).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3), "timed out in time");
        assert!(matches!(&e, FetchError::NoCopy { cause, .. } if matches!(**cause, FetchError::Request { .. })), "{e}");
    }
}
