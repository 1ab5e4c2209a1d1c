//! Region source formats: the parsers that turn registry files, CSV range files and
//! MaxMind-format databases into a [`RegionDb`], and the `--country-source` syntax.
//!
//! `[optional:][FORMAT:]LOCATION` where FORMAT is `cidr-dir`, `rir`, `csv` or `mmdb`
//! (detected from the content when omitted) and LOCATION a path or an http(s) URL.
//! A source marked `optional:` that fails is skipped with a warning; any other
//! failing source aborts the load.

pub mod cidr_dir;
pub mod csv;
pub mod db;
pub mod mmdb;
pub mod rir;
pub mod snapshot;

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    str::FromStr,
};

use self::{
    csv::parse_csv,
    db::{RegionDb, SourceInfo},
    rir::parse_rir,
};
use crate::{
    net::{ip_to_u128, Family},
    source::{
        fetch::{CheckError, FetchError, FetchOptions, Fetched, ObtainError, UrlAccess},
        spec::Refresh,
    },
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// country-ip-blocks layout: `country/<cc>/ipv{4,6}-aggregated.txt`.
    CidrDir,
    /// RIR statistics exchange format (`delegated-<rir>-[extended-]latest`).
    Rir,
    /// `start,end,country` ranges (DB-IP, ip-location-db), dotted or numeric.
    Csv,
    /// MaxMind DB country database.
    Mmdb,
}

/// The names of the formats, as a source argument gives them.
const FORMAT_NAMES: [&str; 4] = ["cidr-dir", "rir", "csv", "mmdb"];

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "cidr-dir" => Format::CidrDir,
            "rir" => Format::Rir,
            "csv" => Format::Csv,
            "mmdb" => Format::Mmdb,
            other => return Err(format!("unknown format {other:?} ({})", FORMAT_NAMES.join(", "))),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionSource {
    pub optional: bool,
    pub format: Option<Format>,
    pub location: String,
    /// URL sources only: how often the daemon fetches it again (None: the policy's default).
    pub refresh: Option<Refresh>,
}

impl FromStr for RegionSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (modifiers, format, rest) = crate::source::spec::split_source(s, &FORMAT_NAMES)?;
        Ok(RegionSource {
            optional: modifiers.optional,
            format: format.map(str::parse).transpose()?,
            location: rest.to_owned(),
            refresh: modifiers.refresh,
        })
    }
}

impl RegionSource {
    pub fn is_url(&self) -> bool {
        crate::source::spec::is_url(&self.location)
    }
}

/// Loads one source (a file, a directory, or a URL through the cache, fetched
/// first when `access` allows).
pub fn load(
    source: &RegionSource,
    cache_dir: &Path,
    access: UrlAccess,
    opts: &FetchOptions,
) -> Result<RegionDb, RegionError> {
    let (mut db, note) = read_located(
        &source.location,
        cache_dir,
        access,
        opts,
        |path| load_path(source, path),
        RegionDb::prefix_count,
    )?;
    db.sources = vec![SourceInfo { name: source.location.clone(), date: note }];
    Ok(db)
}

/// Reads the data at `location`: a file, or a URL through the cache (fetched
/// first when `access` allows), with `parse`; and the fetch's note for a URL.
pub(crate) fn read_located<T: Send>(
    location: &str,
    cache_dir: &Path,
    access: UrlAccess,
    opts: &FetchOptions,
    parse: impl Fn(&Path) -> Result<T, RegionError> + Sync,
    count: fn(&T) -> usize,
) -> Result<(T, Option<String>), RegionError> {
    if !crate::source::spec::is_url(location) {
        return Ok((parse(Path::new(location))?, None));
    }
    let (data, fetched) = crate::source::fetch::obtain_parsed(location, cache_dir, access, opts, parse, count)
        .map_err(|e| match e {
            ObtainError::Fetch(e) => RegionError::Fetch(e),
            ObtainError::Parse(e) => e,
        })?;
    Ok((data, fetched.note))
}

/// Fetches a URL source into the cache, validated as its format.
pub fn fetch(source: &RegionSource, cache_dir: &Path, opts: &FetchOptions) -> Result<Fetched, FetchError> {
    let check = |path: &Path| -> Result<usize, CheckError> { Ok(load_path(source, path)?.prefix_count()) };
    crate::source::fetch::fetch_with(&source.location, cache_dir, &check, opts)
}

/// Reads the region data at `path` (the source's file, or a copy of its URL).
fn load_path(source: &RegionSource, path: &Path) -> Result<RegionDb, RegionError> {
    let name = source.location.as_str();
    let format = match source.format {
        Some(f) => f,
        None => detect(path)?,
    };
    let db = match format {
        Format::CidrDir => RegionDb::from_cidr_dir(path, name)?,
        Format::Mmdb => crate::source::region::mmdb::read(path, name)?,
        Format::Rir | Format::Csv => {
            let text = crate::source::input::read_text(path, crate::source::input::MAX_SOURCE_BYTES)?;
            let mut db = RegionDb::default();
            if format == Format::Rir {
                parse_rir(name, &text, &mut db)?;
            } else {
                parse_csv(name, &text, &mut db)?;
            }
            db.normalize();
            db
        }
    };
    Ok(db)
}

/// Guesses the format of a file from its content.
pub fn detect(path: &Path) -> Result<Format, RegionError> {
    if path.is_dir() {
        return Ok(Format::CidrDir);
    }
    let bytes = crate::source::input::read_file(path, crate::source::input::MAX_SOURCE_BYTES)?;
    if crate::source::region::mmdb::looks_like_mmdb(&bytes) {
        return Ok(Format::Mmdb);
    }
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(64 * 1024)]);
    let first = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#'));
    match first {
        Some(l) if l.contains('|') => Ok(Format::Rir),
        Some(l) if l.contains(',') => Ok(Format::Csv),
        _ => Err(RegionError::UnknownFormat { path: path.to_owned() }),
    }
}

/// Why region data could not be read. Each names the source (its path, URL or
/// name) and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    #[error(transparent)]
    Input(#[from] crate::source::input::InputError),
    #[error(transparent)]
    List(#[from] crate::source::cidr_list::ListError),
    /// One line of a RIR or CSV file.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// A file with no record at all: most likely another format.
    #[error("{source_name}: no {what}: not a {format} file?")]
    Empty { source_name: String, what: &'static str, format: &'static str },
    #[error("{path}: cannot tell the format; prefix the source with rir:, csv:, mmdb: or cidr-dir:")]
    UnknownFormat { path: PathBuf },
    #[error("{dir}: cannot read directory: {error}")]
    Directory { dir: PathBuf, error: std::io::Error },
    #[error("{dir}: no country directories found")]
    NoCountryDirectories { dir: PathBuf },
    #[error("{source_name}: {reason}")]
    Mmdb { source_name: String, reason: String },
    /// A URL source that could not be fetched (parsing its copy gives the
    /// other variants, naming the URL).
    #[error(transparent)]
    Fetch(#[from] crate::source::fetch::FetchError),
    #[error(transparent)]
    Snapshot(#[from] crate::source::region::snapshot::SnapshotError),
    #[error("country source {location} failed; nothing was applied")]
    SourceFailed {
        location: String,
        #[source]
        cause: Box<RegionError>,
    },
    #[error("no country data could be loaded from {count} source(s)")]
    NoData { count: usize },
    #[error("ASN source {location} failed; nothing was applied")]
    AsnSourceFailed {
        location: String,
        #[source]
        cause: Box<RegionError>,
    },
    #[error(
        "no AS number with prefixes in {sources}: every row was skipped (AS0, unrouted) or an optional source \
         was missing; give ASN data with at least one system, or no --asn-source for the bundled snapshot"
    )]
    NoAsnData { sources: String },
    #[error(transparent)]
    UnknownAsn(#[from] crate::source::asn::db::UnknownAsn),
}

/// A record that could not be read, naming source, line and content.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}:{line}: {reason}: {text:?}")]
pub struct RecordError {
    pub source_name: String,
    pub line: usize,
    pub text: String,
    pub reason: String,
}

pub(crate) fn record_error(source: &str, line: usize, text: &str, reason: impl Into<String>) -> RegionError {
    RecordError { source_name: source.to_owned(), line, text: text.to_owned(), reason: reason.into() }.into()
}

fn valid_code(cc: &str) -> bool {
    cc.len() == 2 && cc.bytes().all(|b| b.is_ascii_alphabetic())
}

/// An address in dotted/colon form, or as a decimal number (IPv4 unless larger
/// than 32 bits).
pub(crate) fn parse_csv_address(field: &str) -> Option<(Family, u128)> {
    if let Ok(ip) = field.parse::<IpAddr>() {
        return Some(ip_to_u128(ip));
    }
    let n: u128 = field.parse().ok()?;
    Some(if n > Family::V4.max_addr() { (Family::V6, n) } else { (Family::V4, n) })
}

/// Loads and merges region sources; optional ones that fail are skipped with a warning.
pub fn load_all(
    sources: &[RegionSource],
    cache_dir: &Path,
    access: UrlAccess,
    opts: &FetchOptions,
) -> Result<RegionDb, RegionError> {
    let mut db = RegionDb::default();
    for s in sources {
        match load(s, cache_dir, access, opts) {
            Ok(part) => db.merge(part),
            Err(e) if s.optional => log::warn!("optional country source {} skipped: {e:#}", s.location),
            Err(e) => return Err(RegionError::SourceFailed { location: s.location.clone(), cause: Box::new(e) }),
        }
    }
    if db.regions.is_empty() {
        return Err(RegionError::NoData { count: sources.len() });
    }
    Ok(db)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::net::Prefix;

    /// A region's prefixes as text.
    pub(crate) fn strs(db: &RegionDb, cc: &str) -> Vec<String> {
        db.regions[cc].prefixes.iter().map(Prefix::to_string).collect()
    }

    #[test]
    fn source_syntax() {
        let s: RegionSource = "optional:rir:/data/afrinic.txt".parse().unwrap();
        assert_eq!(
            s,
            RegionSource {
                optional: true,
                format: Some(Format::Rir),
                location: "/data/afrinic.txt".into(),
                refresh: None
            }
        );
        let s: RegionSource = "https://example.invalid/x.csv".parse().unwrap();
        assert_eq!(s.format, None);
        assert!(s.is_url());
        assert!("optional:".parse::<RegionSource>().is_err());
    }

    #[test]
    fn detects_formats() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::write(dir.join("a"), "# hi\n2|afrinic|1\n").unwrap();
        std::fs::write(dir.join("b"), "1.0.0.0,1.0.0.255,AU\n").unwrap();
        std::fs::write(dir.join("c"), "nothing\n").unwrap();
        assert_eq!(detect(&dir.join("a")).unwrap(), Format::Rir);
        assert_eq!(detect(&dir.join("b")).unwrap(), Format::Csv);
        assert!(detect(&dir.join("c")).is_err());
        assert_eq!(detect(dir).unwrap(), Format::CidrDir);
        let _ = std::fs::remove_dir_all(dir);
    }
}
