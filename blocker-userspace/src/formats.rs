//! Region source formats: the parsers that turn registry files, CSV range files and
//! MaxMind-format databases into a [`RegionDb`], and the `--country-source` syntax.
//!
//! `[optional:][FORMAT:]LOCATION` where FORMAT is `cidr-dir`, `rir`, `csv` or `mmdb`
//! (detected from the content when omitted) and LOCATION a path or an http(s) URL.
//! A source marked `optional:` that fails is skipped with a warning; any other
//! failing source aborts the load.

use std::{net::IpAddr, path::Path, str::FromStr};

use anyhow::{anyhow, bail, Result};

use crate::{
    fetch::{FetchOptions, UrlAccess},
    lists::{ip_to_u128, parse_prefix, range_to_prefixes, Family},
    regions::{RegionDb, SourceInfo},
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

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "cidr-dir" => Format::CidrDir,
            "rir" => Format::Rir,
            "csv" => Format::Csv,
            "mmdb" => Format::Mmdb,
            other => return Err(format!("unknown format {other:?} (cidr-dir, rir, csv, mmdb)")),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionSource {
    pub optional: bool,
    pub format: Option<Format>,
    pub location: String,
    /// URL sources only: how often the daemon fetches it again (None: the policy's default).
    pub refresh: Option<crate::watch::Refresh>,
}

impl FromStr for RegionSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut rest = s;
        let mut optional = false;
        let mut format = None;
        let mut refresh = None;
        loop {
            if let Some(r) = rest.strip_prefix("optional:") {
                optional = true;
                rest = r;
                continue;
            }
            if let (Some(r), tail) = crate::watch::strip_refresh(rest)? {
                refresh = Some(r);
                rest = tail;
                continue;
            }
            if let Some((head, tail)) = rest.split_once(':') {
                if ["cidr-dir", "rir", "csv", "mmdb"].contains(&head) {
                    format = Some(head.parse()?);
                    rest = tail;
                    continue;
                }
            }
            break;
        }
        if rest.is_empty() {
            return Err(format!("{s:?}: no path or URL"));
        }
        let source = RegionSource { optional, format, location: rest.to_owned(), refresh };
        if refresh.is_some() && !source.is_url() {
            return Err(format!("{s:?}: refresh= applies to URL sources only (files are watched for changes)"));
        }
        Ok(source)
    }
}

impl RegionSource {
    pub fn is_url(&self) -> bool {
        crate::fetch::is_url(&self.location)
    }
}

/// Loads one source (a file, a directory, or a URL through the cache, fetched
/// first when `access` allows).
pub fn load(source: &RegionSource, cache_dir: &Path, access: UrlAccess, opts: &FetchOptions) -> Result<RegionDb> {
    let (mut db, note) = if source.is_url() {
        let parse = |path: &Path| load_path(source, path);
        let (db, fetched) =
            crate::fetch::obtain_parsed(&source.location, cache_dir, access, opts, parse, RegionDb::prefix_count)?;
        (db, fetched.note)
    } else {
        (load_path(source, Path::new(&source.location))?, None)
    };
    db.sources = vec![SourceInfo { name: source.location.clone(), date: note }];
    Ok(db)
}

/// Fetches a URL source into the cache, validated as its format.
pub fn fetch(source: &RegionSource, cache_dir: &Path, opts: &FetchOptions) -> Result<crate::fetch::Fetched> {
    let check = |path: &Path| -> Result<usize> { Ok(load_path(source, path)?.prefix_count()) };
    crate::fetch::fetch_with(&source.location, cache_dir, &check, opts)
}

/// Reads the region data at `path` (the source's file, or a copy of its URL).
fn load_path(source: &RegionSource, path: &Path) -> Result<RegionDb> {
    let name = source.location.as_str();
    let format = match source.format {
        Some(f) => f,
        None => detect(path)?,
    };
    let db = match format {
        Format::CidrDir => RegionDb::from_cidr_dir(path, name)?,
        Format::Mmdb => crate::mmdb::read(path, name)?,
        Format::Rir | Format::Csv => {
            let text = crate::input::read_text(path, crate::input::MAX_SOURCE_BYTES)?;
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
pub fn detect(path: &Path) -> Result<Format> {
    if path.is_dir() {
        return Ok(Format::CidrDir);
    }
    let bytes = crate::input::read_file(path, crate::input::MAX_SOURCE_BYTES)?;
    if crate::mmdb::looks_like_mmdb(&bytes) {
        return Ok(Format::Mmdb);
    }
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(64 * 1024)]);
    let first = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#'));
    match first {
        Some(l) if l.contains('|') => Ok(Format::Rir),
        Some(l) if l.contains(',') => Ok(Format::Csv),
        _ => bail!("{}: cannot tell the format; prefix the source with rir:, csv:, mmdb: or cidr-dir:", path.display()),
    }
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

fn record_error(source: &str, line: usize, text: &str, reason: impl Into<String>) -> anyhow::Error {
    RecordError { source_name: source.to_owned(), line, text: text.to_owned(), reason: reason.into() }.into()
}

fn valid_code(cc: &str) -> bool {
    cc.len() == 2 && cc.bytes().all(|b| b.is_ascii_alphabetic())
}

/// Statuses that are delegations: the address space is in use in that country.
const RIR_STATUSES: [&str; 2] = ["allocated", "assigned"];

/// RIR statistics exchange format: skips the version line, summary lines and
/// comments; IPv4 values are address counts (split into exact CIDRs), IPv6 values
/// prefix lengths; only allocated and assigned records count.
pub fn parse_rir(source: &str, text: &str, db: &mut RegionDb) -> Result<()> {
    let mut records = 0usize;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split('|').collect();
        let err = |reason: &str| record_error(source, i + 1, raw, reason);
        // Version line: "2|afrinic|20260821|19600|..." (a version number first).
        if records == 0 && f.first().is_some_and(|v| v.parse::<f32>().is_ok()) {
            continue;
        }
        if f.len() >= 6 && f[5] == "summary" {
            continue;
        }
        if f.len() < 7 {
            return Err(err("expected registry|cc|type|start|value|date|status"));
        }
        records += 1;
        let (cc, kind, start, value, status) = (f[1], f[2], f[3], f[4], f[6]);
        if kind == "asn" || !RIR_STATUSES.contains(&status) {
            continue;
        }
        if !valid_code(cc) {
            return Err(err("country code is not two letters"));
        }
        let prefixes = match kind {
            "ipv4" => {
                let ip: IpAddr = start.parse().map_err(|_| err("bad IPv4 start address"))?;
                let (family, lo) = ip_to_u128(ip);
                if family != Family::V4 {
                    return Err(err("ipv4 record with an IPv6 address"));
                }
                let count: u128 = value.parse().map_err(|_| err("bad address count"))?;
                // Checked without arithmetic that could overflow: count may be any
                // 39-digit number.
                if count == 0 || count - 1 > Family::V4.max_addr() - lo {
                    return Err(err("address count out of range"));
                }
                range_to_prefixes(Family::V4, lo, lo + count - 1)
            }
            "ipv6" => {
                let p = parse_prefix(&format!("{start}/{value}")).map_err(|e| err(&e.to_string()))?;
                if p.family != Family::V6 {
                    return Err(err("ipv6 record with an IPv4 address"));
                }
                vec![p]
            }
            _ => return Err(err("unknown record type")),
        };
        db.add(cc, None, source, prefixes);
    }
    if records == 0 {
        bail!("{source}: no records: not a RIR statistics file?");
    }
    Ok(())
}

/// An address in dotted/colon form, or as a decimal number (IPv4 unless larger
/// than 32 bits).
fn parse_csv_address(field: &str) -> Option<(Family, u128)> {
    if let Ok(ip) = field.parse::<IpAddr>() {
        return Some(ip_to_u128(ip));
    }
    let n: u128 = field.parse().ok()?;
    Some(if n > Family::V4.max_addr() { (Family::V6, n) } else { (Family::V4, n) })
}

/// `start,end,country[,...]` ranges, addresses dotted/colon or numeric, fields
/// optionally quoted; a header line is skipped; empty and `ZZ` countries are
/// unassigned space and skipped.
pub fn parse_csv(source: &str, text: &str, db: &mut RegionDb) -> Result<()> {
    let mut rows = 0usize;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(|x| x.trim().trim_matches('"')).collect();
        let err = |reason: &str| record_error(source, i + 1, raw, reason);
        if f.len() < 3 {
            return Err(err("expected start,end,country"));
        }
        let (Some(start), Some(end)) = (parse_csv_address(f[0]), parse_csv_address(f[1])) else {
            // A header names its columns: words, with no digit, dot or colon. A
            // first row that merely fails to parse is an error like any other.
            let is_word = |x: &str| !x.is_empty() && !x.contains(|c: char| c.is_ascii_digit() || c == '.' || c == ':');
            if rows == 0 && i == 0 && is_word(f[0]) && is_word(f[1]) {
                log::info!("{source}: line 1 is a header, skipped: {}", crate::lists::quote(raw));
                continue;
            }
            return Err(err("bad start or end address"));
        };
        rows += 1;
        if start.0 != end.0 {
            return Err(err("start and end are of different address families"));
        }
        if end.1 < start.1 {
            return Err(err("end address before start address"));
        }
        let cc = f[2];
        if cc.is_empty() || cc.eq_ignore_ascii_case("ZZ") {
            continue;
        }
        if !valid_code(cc) {
            return Err(err("country code is not two letters"));
        }
        db.add(cc, None, source, range_to_prefixes(start.0, start.1, end.1));
    }
    if rows == 0 {
        bail!("{source}: no rows: not a start,end,country CSV file?");
    }
    Ok(())
}

/// Loads and merges region sources; optional ones that fail are skipped with a warning.
pub fn load_all(
    sources: &[RegionSource],
    cache_dir: &Path,
    access: UrlAccess,
    opts: &FetchOptions,
) -> Result<RegionDb> {
    let mut db = RegionDb::default();
    for s in sources {
        match load(s, cache_dir, access, opts) {
            Ok(part) => db.merge(part),
            Err(e) if s.optional => log::warn!("optional country source {} skipped: {e:#}", s.location),
            Err(e) => return Err(e.context(format!("country source {} failed; nothing was applied", s.location))),
        }
    }
    if db.regions.is_empty() {
        return Err(anyhow!("no country data could be loaded from {} source(s)", sources.len()));
    }
    Ok(db)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lists::Prefix;

    fn strs(db: &RegionDb, cc: &str) -> Vec<String> {
        db.regions[cc].prefixes.iter().map(Prefix::to_string).collect()
    }

    #[test]
    fn rir_records_become_exact_cidrs() {
        let text = "2|test|20260821|5|00000000|20260821|00000\n\
                    test|*|ipv4|*|3|summary\n\
                    # comment\n\
                    test|ZA|asn|1228|1|19910301|allocated|X\n\
                    test|ZA|ipv4|192.0.2.0|256|19910301|allocated|X\n\
                    test|KE|ipv4|198.51.100.0|96|20000101|assigned|Y\n\
                    test|ZZ|ipv4|203.0.113.0|256||available|\n\
                    test|ZA|ipv4|203.0.113.0|256||reserved|\n\
                    test|ZA|ipv6|2001:db8::|32|20051021|allocated|X\n";
        let mut db = RegionDb::default();
        parse_rir("t", text, &mut db).unwrap();
        db.normalize();
        assert_eq!(strs(&db, "ZA"), ["192.0.2.0/24", "2001:db8::/32"]);
        // 96 addresses: a /26 and a /27.
        assert_eq!(strs(&db, "KE"), ["198.51.100.0/26", "198.51.100.64/27"]);
        assert!(!db.regions.contains_key("ZZ"));
    }

    #[test]
    fn rir_errors_name_line_and_content() {
        let mut db = RegionDb::default();
        let e = parse_rir("afr.txt", "2|x|1|1|1|1|1\nx|ZA|ipv4|192.0.2.0|abc|1|allocated\n", &mut db).unwrap_err();
        assert_eq!(e.to_string(), "afr.txt:2: bad address count: \"x|ZA|ipv4|192.0.2.0|abc|1|allocated\"");
        let e = parse_rir("afr.txt", "x|ZA|ipv4|255.255.255.0|512|1|allocated\n", &mut db).unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
        // A count near 2^128 overflowed the end address (a panic in debug builds).
        let huge = format!("x|ZA|ipv4|10.0.0.0|{}|1|allocated\n", u128::MAX);
        let e = parse_rir("afr.txt", &huge, &mut db).unwrap_err();
        assert!(e.to_string().contains("address count out of range"), "{e}");
        let e = parse_rir("afr.txt", "x|ZA|ipv4\n", &mut db).unwrap_err();
        assert!(e.to_string().starts_with("afr.txt:1: expected"), "{e}");
    }

    #[test]
    fn real_afrinic_file() {
        let path = crate::lists::tests::shared_data().join("rir/delegated-afrinic-extended-latest.txt");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut db = RegionDb::default();
        parse_rir("afrinic", &text, &mut db).unwrap();
        db.normalize();
        // Every allocated/assigned IPv4 record's addresses, and nothing else, are covered.
        let mut expected: u128 = 0;
        let mut non_power_of_two = 0;
        for l in text.lines() {
            let f: Vec<&str> = l.split('|').collect();
            if f.len() >= 7 && f[2] == "ipv4" && RIR_STATUSES.contains(&f[6]) {
                let n: u128 = f[4].parse().unwrap();
                expected += n;
                non_power_of_two += usize::from(!n.is_power_of_two());
            }
        }
        assert!(non_power_of_two > 0, "the file has non-power-of-two counts");
        let covered: u128 = db
            .regions
            .values()
            .flat_map(|r| r.prefixes.iter().filter(|p| p.family == Family::V4))
            .map(|p| p.range().1 - p.range().0 + 1)
            .sum();
        assert_eq!(covered, expected);
        assert!(db.regions.contains_key("ZA") && db.regions["ZA"].count(Family::V6) > 0);
        assert!(!db.regions.contains_key("ZZ"));
    }

    #[test]
    fn csv_dotted_numeric_quoted_and_header() {
        let text = "start,end,country\n\
                    \"192.0.2.0\",\"192.0.2.255\",\"AU\"\n\
                    3325256704,3325256959,NZ\n\
                    2001:db8::,2001:db8:ffff:ffff:ffff:ffff:ffff:ffff,AU\n\
                    198.51.100.0,198.51.100.9,ZZ\n\
                    42540766411282592856903984951653826560,42540766411282592856903984951653826815,NZ\n";
        let mut db = RegionDb::default();
        parse_csv("c.csv", text, &mut db).unwrap();
        db.normalize();
        assert_eq!(strs(&db, "AU"), ["192.0.2.0/24", "2001:db8::/32"]);
        assert_eq!(strs(&db, "NZ"), ["198.51.100.0/24", "2001:db8::/120"]);
    }

    #[test]
    fn csv_errors_name_line_and_content() {
        let mut db = RegionDb::default();
        let e = parse_csv("c.csv", "1.0.0.0,1.0.0.255,AU\n1.0.1.0,1.0.0.0,AU\n", &mut db).unwrap_err();
        assert_eq!(e.to_string(), "c.csv:2: end address before start address: \"1.0.1.0,1.0.0.0,AU\"");
        let e = parse_csv("c.csv", "1.0.0.0,1.0.0.255,AU\n1.0.0.0,::1,AU\n", &mut db).unwrap_err();
        assert!(e.to_string().contains("different address families"), "{e}");
        let e = parse_csv("c.csv", "1.0.0.0,1.0.0.255,Australia\n", &mut db).unwrap_err();
        assert!(e.to_string().contains("two letters"), "{e}");
        // A malformed first row is not a header.
        let e = parse_csv("c.csv", "1.0.0,1.0.0.255,AU\n1.0.1.0,1.0.1.255,AU\n", &mut db).unwrap_err();
        assert!(e.to_string().starts_with("c.csv:1: bad start or end address"), "{e}");
        let e = parse_csv("c.csv", "start,1.0.0.255,AU\n", &mut db).unwrap_err();
        assert!(e.to_string().starts_with("c.csv:1:"), "{e}");
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
        let dir = std::env::temp_dir().join(format!("blocker-detect-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a"), "# hi\n2|afrinic|1\n").unwrap();
        std::fs::write(dir.join("b"), "1.0.0.0,1.0.0.255,AU\n").unwrap();
        std::fs::write(dir.join("c"), "nothing\n").unwrap();
        assert_eq!(detect(&dir.join("a")).unwrap(), Format::Rir);
        assert_eq!(detect(&dir.join("b")).unwrap(), Format::Csv);
        assert!(detect(&dir.join("c")).is_err());
        assert_eq!(detect(&dir).unwrap(), Format::CidrDir);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
