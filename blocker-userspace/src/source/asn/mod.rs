//! Networks by owner: autonomous systems (ASN), their organisation and their
//! prefixes, from the bundled snapshot or from `--asn-source` data.
//!
//! `[optional:][refresh=DURATION:][FORMAT:]LOCATION` where FORMAT is `mmdb`
//! (MaxMind GeoLite2-ASN layout), `csv` (`start,end,asn[,organisation]`: DB-IP,
//! ip-location-db) or `tsv` (iptoasn: `start end asn country description`),
//! detected from the content when omitted; LOCATION a path or an http(s) URL.

pub mod db;
pub mod ranges;
pub mod snapshot;

use std::{path::Path, str::FromStr};

use self::db::AsnDb;
use crate::source::{
    fetch::{CheckError, FetchError, FetchOptions, Fetched, UrlAccess},
    region::{db::SourceInfo, RegionError},
    spec::Refresh,
};

/// An autonomous system number, written `AS4134` (or `4134`) by users.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Asn(pub u32);

impl FromStr for Asn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let digits =
            t.strip_prefix("AS").or_else(|| t.strip_prefix("as")).or_else(|| t.strip_prefix("As")).unwrap_or(t);
        match digits.parse::<u32>() {
            Ok(0) => {
                Err(format!("{}: AS0 is reserved for unrouted space, not an owner", crate::source::input::quote(s)))
            }
            Ok(n) if digits.bytes().all(|b| b.is_ascii_digit()) => Ok(Asn(n)),
            _ => Err(format!(
                "{}: not an AS number (like AS4134 or 4134, up to {})",
                crate::source::input::quote(s),
                u32::MAX
            )),
        }
    }
}

impl std::fmt::Display for Asn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AS{}", self.0)
    }
}

impl Asn {
    /// The name its drops are counted under (`asn:4134`).
    pub fn list_name(self) -> String {
        format!("asn:{}", self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// MaxMind DB, GeoLite2-ASN layout.
    Mmdb,
    /// `start,end,asn[,organisation]`.
    Csv,
    /// iptoasn: `start<TAB>end<TAB>asn<TAB>country<TAB>description`.
    Tsv,
}

const FORMAT_NAMES: [&str; 3] = ["mmdb", "csv", "tsv"];

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "mmdb" => Format::Mmdb,
            "csv" => Format::Csv,
            "tsv" => Format::Tsv,
            other => return Err(format!("unknown ASN format {other:?} ({})", FORMAT_NAMES.join(", "))),
        })
    }
}

/// One `--asn-source`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AsnSource {
    pub optional: bool,
    pub format: Option<Format>,
    pub location: String,
    pub refresh: Option<Refresh>,
}

impl FromStr for AsnSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (modifiers, format, rest) = crate::source::spec::split_source(s, &FORMAT_NAMES)?;
        Ok(AsnSource {
            optional: modifiers.optional,
            format: format.map(str::parse).transpose()?,
            location: rest.to_owned(),
            refresh: modifiers.refresh,
        })
    }
}

impl AsnSource {
    pub fn is_url(&self) -> bool {
        crate::source::spec::is_url(&self.location)
    }
}

/// Loads one source (a file, or a URL through the cache).
pub fn load(
    source: &AsnSource,
    cache_dir: &Path,
    access: UrlAccess,
    opts: &FetchOptions,
) -> Result<AsnDb, RegionError> {
    let (mut db, note) = crate::source::region::read_located(
        &source.location,
        cache_dir,
        access,
        opts,
        |path| load_path(source, path),
        AsnDb::prefix_count,
    )?;
    db.sources = vec![SourceInfo { name: source.location.clone(), date: note }];
    Ok(db)
}

/// Fetches a URL source into the cache, validated as its format.
pub fn fetch(source: &AsnSource, cache_dir: &Path, opts: &FetchOptions) -> Result<Fetched, FetchError> {
    let check = |path: &Path| -> Result<usize, CheckError> { Ok(load_path(source, path)?.prefix_count()) };
    crate::source::fetch::fetch_with(&source.location, cache_dir, &check, opts)
}

fn load_path(source: &AsnSource, path: &Path) -> Result<AsnDb, RegionError> {
    let name = source.location.as_str();
    let bytes = crate::source::input::read_file(path, crate::source::input::MAX_SOURCE_BYTES)?;
    let format = match source.format {
        Some(f) => f,
        None => detect(&bytes).ok_or_else(|| RegionError::Mmdb {
            source_name: name.to_owned(),
            reason: "cannot tell the format; prefix the source with mmdb:, csv: or tsv:".into(),
        })?,
    };
    let mut db = AsnDb::default();
    match format {
        Format::Mmdb => ranges::read_mmdb(&bytes, name, &mut db)?,
        Format::Csv | Format::Tsv => {
            let text = std::str::from_utf8(&bytes).map_err(|e| crate::source::input::InputError::NotText {
                path: path.to_owned(),
                offset: e.valid_up_to(),
            })?;
            if format == Format::Csv {
                ranges::parse_csv(name, text, &mut db)?;
            } else {
                ranges::parse_tsv(name, text, &mut db)?;
            }
        }
    }
    db.normalize();
    Ok(db)
}

/// Guesses the format from the content: an MMDB marker, else the separator of
/// the first line that is not a comment.
pub fn detect(bytes: &[u8]) -> Option<Format> {
    if crate::source::region::mmdb::looks_like_mmdb(bytes) {
        return Some(Format::Mmdb);
    }
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(64 * 1024)]);
    let first = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#'))?;
    if first.contains('\t') {
        Some(Format::Tsv)
    } else if first.contains(',') {
        Some(Format::Csv)
    } else {
        None
    }
}

/// Loads and merges ASN sources (the bundled snapshot when none is given);
/// optional ones that fail are skipped with a warning.
pub fn load_all(
    sources: &[AsnSource],
    cache_dir: &Path,
    access: UrlAccess,
    opts: &FetchOptions,
) -> Result<AsnDb, RegionError> {
    if sources.is_empty() {
        return Ok(AsnDb::bundled()?);
    }
    let mut db = AsnDb::default();
    for s in sources {
        match load(s, cache_dir, access, opts) {
            Ok(part) => db.merge(part),
            Err(e) if s.optional => log::warn!("optional ASN source {} skipped: {e:#}", s.location),
            Err(e) => return Err(RegionError::AsnSourceFailed { location: s.location.clone(), cause: Box::new(e) }),
        }
    }
    if db.systems.is_empty() {
        let names: Vec<String> = sources.iter().map(|s| crate::source::input::quote(&s.location)).collect();
        return Err(RegionError::NoAsnData { sources: names.join(", ") });
    }
    Ok(db)
}

/// Which ASN data a policy uses and how old it is, in words (for
/// `check-config` and the daemon's start): the bundled snapshot's date, a
/// file's modification time, a URL's last good fetch. Reads no data.
pub fn describe_data(sources: &[AsnSource], cache_dir: &Path) -> String {
    let now = crate::clock::unix_secs(std::time::SystemTime::now());
    let age = |t: u64| crate::clock::age_text(now.saturating_sub(t));
    if sources.is_empty() {
        return match AsnDb::bundled_date() {
            Ok(date) => {
                let old = crate::clock::date_to_unix(&date).map(|t| format!(", {} old", age(t))).unwrap_or_default();
                format!("the bundled snapshot of {} (data of {date}{old})", snapshot::DATA_SOURCE)
            }
            Err(e) => format!("the bundled snapshot, which is unreadable: {e}"),
        };
    }
    let parts: Vec<String> = sources
        .iter()
        .map(|s| {
            let when = if s.is_url() {
                match crate::source::fetch::last_good_fetch(&s.location, cache_dir) {
                    Some(t) => format!("last fetched {} ago", age(t)),
                    None => "no copy yet: fetched at start".into(),
                }
            } else {
                match std::fs::metadata(&s.location).and_then(|m| m.modified()) {
                    Ok(t) => format!("modified {} ago", age(crate::clock::unix_secs(t))),
                    Err(e) => format!("unreadable: {e}"),
                }
            };
            format!("{} ({when})", crate::source::input::quote(&s.location))
        })
        .collect();
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asn_syntax() {
        assert_eq!("AS4134".parse::<Asn>().unwrap(), Asn(4134));
        assert_eq!(" as13335 ".parse::<Asn>().unwrap(), Asn(13335));
        assert_eq!("4294967295".parse::<Asn>().unwrap(), Asn(u32::MAX));
        assert!("AS0".parse::<Asn>().unwrap_err().contains("reserved"));
        assert!("AS4294967296".parse::<Asn>().unwrap_err().contains("not an AS number"));
        assert!("AS+5".parse::<Asn>().is_err());
        assert!("ASN5".parse::<Asn>().is_err());
        assert_eq!(Asn(4134).to_string(), "AS4134");
        assert_eq!(Asn(4134).list_name(), "asn:4134");
    }

    /// A URL source: fetched into the cache with its ETag, asked again
    /// conditionally, and kept when the server later sends something that does
    /// not parse or fails.
    #[test]
    fn url_sources_are_cached_asked_conditionally_and_kept_when_bad() {
        use blocker_tests::http::{serve, Script};
        let script = std::sync::Arc::new(std::sync::Mutex::new(Script::default()));
        let base = serve(script.clone());
        let tmp = tempfile::tempdir().unwrap();
        let source: AsnSource = format!("{base}/asn.csv").parse().unwrap();
        let opts = FetchOptions::default();
        let respond = |status: u16, etag: Option<&str>, body: &str| {
            let headers = etag.map(|e| vec![("ETag".to_string(), e.to_string())]).unwrap_or_default();
            script.lock().unwrap().responses.push((status, headers, body.into()));
        };
        let asn64500 = |db: &AsnDb| db.get(Asn(64500)).map(|s| s.prefixes.len()).ok();

        respond(200, Some("\"v1\""), "192.0.2.0,192.0.2.255,64500,\"Example, Inc.\"\n");
        let db = load(&source, tmp.path(), UrlAccess::Fetch, &opts).unwrap();
        assert_eq!(asn64500(&db), Some(1));
        // Unchanged: a conditional request, answered 304, and the cached copy used.
        respond(304, None, "");
        let db = load(&source, tmp.path(), UrlAccess::Fetch, &opts).unwrap();
        assert_eq!(asn64500(&db), Some(1));
        let second = script.lock().unwrap().requests[1].to_ascii_lowercase();
        assert!(second.contains("if-none-match: \"v1\""), "{second}");
        // A bad record: refused; the last good copy stays in use.
        respond(200, Some("\"v2\""), "192.0.2.0,192.0.2.255,64500\n192.0.3.0,192.0.2.0,5\n");
        let f = fetch(&source, tmp.path(), &opts).unwrap();
        assert!(f.stale && !f.changed, "the bad content is not taken: {f:?}");
        let db = load(&source, tmp.path(), UrlAccess::CachedOnly, &opts).unwrap();
        assert_eq!(asn64500(&db), Some(1));
        // The server gone: the cached copy still serves.
        respond(500, None, "");
        let db = load(&source, tmp.path(), UrlAccess::Fetch, &opts).unwrap();
        assert_eq!(asn64500(&db), Some(1));
        assert!(db.sources[0].date.as_deref().is_some_and(|n| n.contains("last good copy")), "{:?}", db.sources);
    }

    #[test]
    fn source_syntax_and_detection() {
        let s: AsnSource = "optional:tsv:/data/ip2asn.tsv".parse().unwrap();
        assert_eq!((s.optional, s.format, s.location.as_str()), (true, Some(Format::Tsv), "/data/ip2asn.tsv"));
        let s: AsnSource = "refresh=1d:https://example.invalid/asn.csv".parse().unwrap();
        assert!(s.is_url() && s.format.is_none());
        assert!("refresh=1d:/local.csv".parse::<AsnSource>().is_err());
        assert!("csv:".parse::<AsnSource>().is_err());
        let e = "xml:/tmp/asn.xml".parse::<AsnSource>().unwrap_err();
        assert!(e.contains("unknown format \"xml\" (give one of mmdb, csv, tsv)"), "{e}");
        assert!("/data/a:b.csv".parse::<AsnSource>().is_ok(), "a colon inside a path is no format");
        assert_eq!(detect(b"# c\n1.0.0.0\t1.0.0.255\t13335\tUS\tCLOUDFLARENET\n"), Some(Format::Tsv));
        assert_eq!(detect(b"1.0.0.0,1.0.0.255,13335,\"Cloudflare, Inc.\"\n"), Some(Format::Csv));
        assert_eq!(detect(b"hello\n"), None);
    }
}
