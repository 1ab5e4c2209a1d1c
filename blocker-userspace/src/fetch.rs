//! URL sources: HTTP/HTTPS with a local cache, conditional requests (ETag /
//! Last-Modified), timeouts and a size cap. A failed fetch falls back to the last
//! good copy and says how old it is; with no copy it is an error.
//!
//! Cache layout: `<cache_dir>/<key>.data` (the body) and `<key>.meta` (JSON:
//! url, etag, last_modified, fetched_at), the key a hash of the URL.

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{anyhow, bail, Context as _, Result};

pub const DEFAULT_CACHE_DIR: &str = "/var/lib/blocker/cache";

#[derive(Clone, Debug)]
pub struct FetchOptions {
    /// For the whole request, connection to last byte.
    pub timeout: Duration,
    pub max_bytes: u64,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions { timeout: Duration::from_secs(60), max_bytes: 512 << 20 }
    }
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
}

#[derive(Debug, Default)]
struct Meta {
    etag: Option<String>,
    last_modified: Option<String>,
    fetched_at: u64,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn cache_paths(url: &str, dir: &Path) -> (PathBuf, PathBuf) {
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
    (dir.join(format!("{key}.data")), dir.join(format!("{key}.meta")))
}

fn read_meta(path: &Path) -> Option<Meta> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    Some(Meta {
        etag: v["etag"].as_str().map(str::to_owned),
        last_modified: v["last_modified"].as_str().map(str::to_owned),
        fetched_at: v["fetched_at"].as_u64().unwrap_or(0),
    })
}

fn write_meta(path: &Path, url: &str, m: &Meta) -> Result<()> {
    let v =
        serde_json::json!({ "url": url, "etag": m.etag, "last_modified": m.last_modified, "fetched_at": m.fetched_at });
    write_atomically(path, &serde_json::to_vec_pretty(&v)?)
}

/// Write-then-rename, through a name of this process and thread: a crash never
/// leaves a truncated copy, and a refresh running beside a reload never mixes two.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(
        format!("tmp-{}-{:?}", std::process::id(), std::thread::current().id()).replace(['(', ')'], ""),
    );
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

pub fn age_text(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

/// Where the cached copy of `url` lives (it may not exist).
pub fn cached_copy(url: &str, cache_dir: &Path) -> PathBuf {
    cache_paths(url, cache_dir).0
}

pub fn fetch(url: &str, cache_dir: &Path) -> Result<Fetched> {
    fetch_with(url, cache_dir, &FetchOptions::default())
}

pub fn fetch_with(url: &str, cache_dir: &Path, opts: &FetchOptions) -> Result<Fetched> {
    std::fs::create_dir_all(cache_dir)
        .with_context(|| format!("cannot create cache directory {}", cache_dir.display()))?;
    let (data, meta_path) = cache_paths(url, cache_dir);
    let cached = data.exists().then(|| read_meta(&meta_path).unwrap_or_default());
    match download(url, &data, &meta_path, cached.as_ref(), opts) {
        Ok((note, changed)) => Ok(Fetched { path: data, note: Some(note), stale: false, changed }),
        Err(e) => match cached {
            Some(m) => {
                let age = age_text(now().saturating_sub(m.fetched_at));
                log::warn!("{url}: fetch failed ({e:#}); using the last good copy, {age} old");
                Ok(Fetched {
                    path: data,
                    note: Some(format!("fetch failed, last good copy {age} old")),
                    stale: true,
                    changed: false,
                })
            }
            None => Err(e.context(format!("{url}: fetch failed and there is no cached copy"))),
        },
    }
}

/// Fetches `url` into the cache: (what happened, whether the content changed).
fn download(
    url: &str,
    data: &Path,
    meta_path: &Path,
    cached: Option<&Meta>,
    opts: &FetchOptions,
) -> Result<(String, bool)> {
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
    let mut resp = req.call().map_err(|e| anyhow!("{e}"))?;
    let status = resp.status().as_u16();
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    if status == 304 && cached.is_some() {
        let mut m = read_meta(meta_path).unwrap_or_default();
        m.fetched_at = now();
        write_meta(meta_path, url, &m)?;
        return Ok(("not modified since the cached copy".into(), false));
    }
    if status != 200 {
        bail!("HTTP status {status}");
    }
    let (etag, last_modified) = (header("etag"), header("last-modified"));
    if let Some(len) = resp.body().content_length() {
        if len > opts.max_bytes {
            bail!("response of {len} bytes is over the {} byte cap", opts.max_bytes);
        }
    }
    let mut body = Vec::new();
    resp.body_mut().as_reader().take(opts.max_bytes + 1).read_to_end(&mut body).context("reading the response")?;
    if body.len() as u64 > opts.max_bytes {
        bail!("response is over the {} byte cap", opts.max_bytes);
    }
    let changed = std::fs::read(data).map_or(true, |old| old != body);
    // Unchanged content keeps its file (and mtime: `status` shows when it changed).
    if changed {
        write_atomically(data, &body)?;
    }
    write_meta(meta_path, url, &Meta { etag, last_modified, fetched_at: now() })?;
    Ok((format!("fetched {} bytes", body.len()), changed))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use blocker_tests::http::{serve, Script};

    use super::*;

    fn cache(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("blocker-cache-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn conditional_requests_cache_and_stale_fallback() {
        let script = Arc::new(Mutex::new(Script::default()));
        let base = serve(script.clone());
        let url = format!("{base}/list.txt");
        let dir = cache("cond");
        script.lock().unwrap().responses.push((
            200,
            vec![("ETag".into(), "\"v1\"".into()), ("Last-Modified".into(), "Wed, 21 Oct 2026 07:28:00 GMT".into())],
            b"192.0.2.0/24\n".to_vec(),
        ));
        let f = fetch(&url, &dir).unwrap();
        assert_eq!(std::fs::read(&f.path).unwrap(), b"192.0.2.0/24\n");
        assert!(!f.stale && f.changed);

        // Second fetch is conditional; 304 keeps the cached copy.
        script.lock().unwrap().responses.push((304, vec![], vec![]));
        let f = fetch(&url, &dir).unwrap();
        let req = script.lock().unwrap().requests[1].to_ascii_lowercase();
        assert!(req.contains("if-none-match: \"v1\""), "{req}");
        assert!(req.contains("if-modified-since: wed, 21 oct 2026"), "{req}");
        assert_eq!(f.note.as_deref(), Some("not modified since the cached copy"));
        assert!(!f.changed);
        assert_eq!(std::fs::read(&f.path).unwrap(), b"192.0.2.0/24\n");

        // A server error falls back to the last good copy and says how old it is.
        script.lock().unwrap().responses.push((500, vec![], vec![]));
        let f = fetch(&url, &dir).unwrap();
        assert!(f.stale && !f.changed);
        assert!(
            f.note.as_deref().unwrap().contains("last good copy") && f.note.as_deref().unwrap().contains(" s old"),
            "{:?}",
            f.note
        );
        assert_eq!(std::fs::read(&f.path).unwrap(), b"192.0.2.0/24\n");

        // New content replaces the copy.
        script.lock().unwrap().responses.push((200, vec![], b"198.51.100.0/24\n".to_vec()));
        let f = fetch(&url, &dir).unwrap();
        assert_eq!(std::fs::read(&f.path).unwrap(), b"198.51.100.0/24\n");
        assert!(f.changed);
        // The same body again (a server without conditional requests): not a change.
        script.lock().unwrap().responses.push((200, vec![], b"198.51.100.0/24\n".to_vec()));
        let modified = || std::fs::metadata(&f.path).unwrap().modified().unwrap();
        let before = modified();
        std::thread::sleep(Duration::from_millis(20));
        assert!(!fetch(&url, &dir).unwrap().changed);
        assert_eq!(modified(), before, "unchanged content keeps its mtime (status shows when it changed)");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn size_cap_timeout_and_no_copy() {
        let script = Arc::new(Mutex::new(Script::default()));
        let base = serve(script.clone());
        let dir = cache("cap");
        let small = FetchOptions { timeout: Duration::from_secs(1), max_bytes: 10 };
        script.lock().unwrap().responses.push((200, vec![], vec![b'x'; 11]));
        let e = fetch_with(&format!("{base}/big"), &dir, &small).unwrap_err();
        assert!(format!("{e:#}").contains("byte cap") && format!("{e:#}").contains("no cached copy"), "{e:#}");

        script.lock().unwrap().responses.push((404, vec![], vec![]));
        let e = fetch_with(&format!("{base}/missing"), &dir, &small).unwrap_err();
        assert!(format!("{e:#}").contains("HTTP status 404"), "{e:#}");

        script.lock().unwrap().stall = true;
        let started = std::time::Instant::now();
        let e = fetch_with(&format!("{base}/slow"), &dir, &small).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3), "timed out in time");
        assert!(format!("{e:#}").contains("no cached copy"), "{e:#}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
