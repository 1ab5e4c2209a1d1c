//! Regions (countries) and their prefixes: the region database, the bundled
//! snapshot, country-code validation with suggestions.
//!
//! The bundled snapshot (`data/countries.snapshot`) is built from the ipverse
//! country-ip-blocks data set (CC0 1.0) by `cargo xtask snapshot`; it lets country
//! blocking work offline. Its format: deflate of
//! `magic, source, date, count, per country {code, name, per family {shift, count,
//! (delta of addr >> shift, len)*}}`, integers as LEB128 varints.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    path::Path,
};

use anyhow::{anyhow, bail, ensure, Context as _, Result};

use crate::lists::{read_list, Family, Prefix};

const MAGIC: &[u8] = b"BLKRGN1\n";
static BUNDLED: &[u8] = include_bytes!("../data/countries.snapshot");

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    /// Upper-case two-letter code (ISO 3166-1 alpha-2, or a registry code like EU).
    pub code: String,
    pub name: Option<String>,
    pub prefixes: Vec<Prefix>,
    /// Which source(s) contributed prefixes.
    pub sources: Vec<String>,
}

impl Region {
    pub fn count(&self, family: Family) -> usize {
        self.prefixes.iter().filter(|p| p.family == family).count()
    }
}

/// Where region data came from, for `blocker regions list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceInfo {
    pub name: String,
    pub date: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegionDb {
    pub regions: BTreeMap<String, Region>,
    pub sources: Vec<SourceInfo>,
}

/// A country code that is not in the loaded region data.
#[derive(Debug, thiserror::Error)]
#[error("unknown country code {code:?}{}", suggestion_text(.suggestions))]
pub struct UnknownCountry {
    pub code: String,
    pub suggestions: Vec<String>,
}

fn suggestion_text(s: &[String]) -> String {
    if s.is_empty() {
        "; `blocker regions list` shows the known codes".into()
    } else {
        format!("; did you mean {}?", s.join(", "))
    }
}

impl RegionDb {
    /// Prefixes over every region (a source's size, for the shrink check).
    pub fn prefix_count(&self) -> usize {
        self.regions.values().map(|r| r.prefixes.len()).sum()
    }
    /// The snapshot compiled into the binary.
    pub fn bundled() -> Result<RegionDb> {
        decode_snapshot(BUNDLED).context("the bundled region snapshot is corrupt")
    }

    /// Adds prefixes of `code` from `source`.
    pub fn add(&mut self, code: &str, name: Option<&str>, source: &str, prefixes: impl IntoIterator<Item = Prefix>) {
        let code = code.to_ascii_uppercase();
        let region = self.regions.entry(code.clone()).or_insert_with(|| Region {
            code,
            name: None,
            prefixes: Vec::new(),
            sources: Vec::new(),
        });
        if region.name.is_none() {
            region.name = name.map(str::to_owned);
        }
        if !region.sources.iter().any(|s| s == source) {
            region.sources.push(source.to_owned());
        }
        region.prefixes.extend(prefixes);
    }

    /// Sorts and deduplicates every region's prefixes.
    pub fn normalize(&mut self) {
        for r in self.regions.values_mut() {
            r.prefixes.sort_unstable();
            r.prefixes.dedup();
        }
    }

    pub fn merge(&mut self, other: RegionDb) {
        for (_, r) in other.regions {
            let source = r.sources.join(", ");
            self.add(&r.code, r.name.as_deref(), &source, r.prefixes);
        }
        self.sources.extend(other.sources);
        self.normalize();
    }

    /// The region for a user-given code (any case), or an error with suggestions.
    pub fn get(&self, code: &str) -> Result<&Region, UnknownCountry> {
        let upper = code.trim().to_ascii_uppercase();
        if let Some(r) = self.regions.get(&upper) {
            return Ok(r);
        }
        Err(UnknownCountry { code: code.to_owned(), suggestions: self.suggest(&upper) })
    }

    fn suggest(&self, upper: &str) -> Vec<String> {
        // A country name ("Germany") rather than a code.
        let by_name: Vec<String> = self
            .regions
            .values()
            .filter(|r| r.name.as_deref().is_some_and(|n| n.to_ascii_uppercase().starts_with(upper)) && upper.len() > 2)
            .map(|r| format!("{} ({})", r.code, r.name.as_deref().unwrap_or("")))
            .collect();
        if !by_name.is_empty() {
            return by_name.into_iter().take(5).collect();
        }
        // Codes one letter away, same first letter first.
        let chars: Vec<char> = upper.chars().collect();
        let mut near: Vec<(u8, &String)> = self
            .regions
            .keys()
            .filter_map(|k| {
                let kc: Vec<char> = k.chars().collect();
                if kc.len() != chars.len() {
                    return None;
                }
                let diff = kc.iter().zip(&chars).filter(|(a, b)| a != b).count();
                (diff == 1).then_some((u8::from(kc[0] != chars[0]), k))
            })
            .collect();
        near.sort();
        near.into_iter().take(6).map(|(_, k)| k.clone()).collect()
    }

    /// Codes of the regions whose prefixes contain the address.
    pub fn containing(&self, family: Family, addr: u128) -> Vec<&Region> {
        self.regions.values().filter(|r| r.prefixes.iter().any(|p| p.contains(family, addr))).collect()
    }

    /// Reads a country-ip-blocks style directory: `country/<cc>/ipv{4,6}-aggregated.txt`
    /// (or `<cc>/...` directly), names from the files' `# Country: Name (CC)` header.
    pub fn from_cidr_dir(dir: &Path, source: &str) -> Result<RegionDb> {
        let base = if dir.join("country").is_dir() { dir.join("country") } else { dir.to_owned() };
        let mut db = RegionDb::default();
        let entries = std::fs::read_dir(&base).with_context(|| format!("{}: cannot read directory", base.display()))?;
        for entry in entries {
            let entry = entry?;
            let code = entry.file_name().to_string_lossy().into_owned();
            if !entry.path().is_dir() || code.len() != 2 || !code.chars().all(|c| c.is_ascii_alphabetic()) {
                continue;
            }
            let mut name = None;
            let mut prefixes = Vec::new();
            for file in ["ipv4-aggregated.txt", "ipv6-aggregated.txt"] {
                let path = entry.path().join(file);
                if !path.exists() {
                    continue;
                }
                prefixes.extend(read_list(&path)?);
                if name.is_none() {
                    name = country_name_from_header(&crate::input::read_text(&path, crate::input::MAX_SOURCE_BYTES)?);
                }
            }
            db.add(&code, name.as_deref(), source, prefixes);
        }
        ensure!(!db.regions.is_empty(), "{}: no country directories found", base.display());
        db.sources.push(SourceInfo { name: source.to_owned(), date: None });
        db.normalize();
        Ok(db)
    }
}

/// "# Country: Germany (DE)" -> "Germany".
fn country_name_from_header(text: &str) -> Option<String> {
    let line = text.lines().find_map(|l| l.strip_prefix("# Country:"))?.trim();
    let name = match line.rfind(" (") {
        Some(i) => &line[..i],
        None => line,
    };
    Some(name.trim().to_owned()).filter(|n| !n.is_empty())
}

fn put_varint(out: &mut Vec<u8>, mut v: u128) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u128);
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8> {
        let (&b, rest) = self.0.split_first().ok_or_else(|| anyhow!("truncated"))?;
        self.0 = rest;
        Ok(b)
    }
    fn varint(&mut self) -> Result<u128> {
        let mut v: u128 = 0;
        for shift in (0..128).step_by(7) {
            let b = self.byte()?;
            v |= u128::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        bail!("varint too long")
    }
    fn string(&mut self) -> Result<String> {
        let n = self.varint()? as usize;
        ensure!(n <= self.0.len(), "truncated");
        let (s, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(String::from_utf8(s.to_vec())?)
    }
}

/// Encodes a region database as a compressed snapshot.
pub fn encode_snapshot(db: &RegionDb, source: &str, date: &str) -> Result<Vec<u8>> {
    let mut out = Vec::from(MAGIC);
    put_str(&mut out, source);
    put_str(&mut out, date);
    put_varint(&mut out, db.regions.len() as u128);
    for r in db.regions.values() {
        put_str(&mut out, &r.code);
        put_str(&mut out, r.name.as_deref().unwrap_or(""));
        for family in [Family::V4, Family::V6] {
            let mut ps: Vec<&Prefix> = r.prefixes.iter().filter(|p| p.family == family).collect();
            ps.sort();
            // Addresses are stored shifted right by the bits no prefix uses.
            let max_len = ps.iter().map(|p| p.len).max().unwrap_or(0);
            let shift = family.bits() - max_len;
            out.push(shift);
            put_varint(&mut out, ps.len() as u128);
            let mut prev = 0u128;
            for p in ps {
                let unit = if shift >= 128 { 0 } else { p.addr >> shift };
                put_varint(&mut out, unit - prev);
                out.push(p.len);
                prev = unit;
            }
        }
    }
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&out)?;
    Ok(z.finish()?)
}

pub fn decode_snapshot(bytes: &[u8]) -> Result<RegionDb> {
    let mut raw = Vec::new();
    flate2::read::DeflateDecoder::new(bytes).read_to_end(&mut raw)?;
    ensure!(raw.starts_with(MAGIC), "not a blocker region snapshot");
    let mut r = Reader(&raw[MAGIC.len()..]);
    let source = r.string()?;
    let date = r.string()?;
    let mut db = RegionDb::default();
    for _ in 0..r.varint()? {
        let code = r.string()?;
        let name = r.string()?;
        let mut prefixes = Vec::new();
        for family in [Family::V4, Family::V6] {
            let shift = r.byte()?;
            ensure!(shift <= family.bits(), "bad shift");
            let mut unit = 0u128;
            for _ in 0..r.varint()? {
                unit += r.varint()?;
                let len = r.byte()?;
                ensure!(len <= family.bits(), "bad prefix length");
                let addr = if shift >= 128 { 0 } else { unit << shift };
                prefixes.push(Prefix { family, addr, len });
            }
        }
        db.add(&code, Some(&name).filter(|n| !n.is_empty()).map(|n| n.as_str()), &source, prefixes);
    }
    db.sources.push(SourceInfo { name: source, date: Some(date) });
    Ok(db)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lists::parse_prefix;

    fn p(s: &str) -> Prefix {
        parse_prefix(s).unwrap()
    }

    #[test]
    fn snapshot_round_trips() {
        let mut db = RegionDb::default();
        db.add("de", Some("Germany"), "test", [p("2.16.0.0/13"), p("5.1.0.0/16"), p("2001:db8::/32"), p("2a00::/12")]);
        db.add("ZZ", None, "test", [p("0.0.0.0/0"), p("::/0"), p("255.255.255.255"), p("ffff::1")]);
        db.normalize();
        let bytes = encode_snapshot(&db, "test", "2026-01-01").unwrap();
        let back = decode_snapshot(&bytes).unwrap();
        assert_eq!(back.regions["DE"].prefixes, db.regions["DE"].prefixes);
        assert_eq!(back.regions["DE"].name.as_deref(), Some("Germany"));
        assert_eq!(back.regions["ZZ"].prefixes, db.regions["ZZ"].prefixes);
        assert_eq!(back.sources[0].date.as_deref(), Some("2026-01-01"));
    }

    #[test]
    fn bundled_snapshot_matches_the_shared_data() {
        let db = RegionDb::bundled().unwrap();
        let v4: usize = db.regions.values().map(|r| r.count(Family::V4)).sum();
        let v6: usize = db.regions.values().map(|r| r.count(Family::V6)).sum();
        // ../shared/data/README.md: 237 countries, 175,195 IPv4 and 67,839 IPv6 prefixes.
        assert_eq!((db.regions.len(), v4, v6), (237, 175_195, 67_839));
        assert_eq!(db.regions["DE"].name.as_deref(), Some("Germany"));
        let data = crate::lists::tests::shared_data().join("country-ip-blocks");
        let fresh = RegionDb::from_cidr_dir(&data, "x").unwrap();
        for (code, r) in &fresh.regions {
            assert_eq!(db.regions[code].prefixes, r.prefixes, "{code}");
        }
    }

    #[test]
    fn unknown_codes_get_suggestions() {
        let db = RegionDb::bundled().unwrap();
        assert_eq!(db.get("de").unwrap().code, "DE");
        let e = db.get("DX").unwrap_err();
        assert!(e.suggestions.contains(&"DE".to_string()) && e.suggestions.contains(&"DK".to_string()), "{e}");
        let e = db.get("germany").unwrap_err().to_string();
        assert!(e.contains("DE (Germany)"), "{e}");
        let e = db.get("XYZ").unwrap_err().to_string();
        assert!(e.contains("regions list"), "{e}");
    }

    #[test]
    fn name_from_header() {
        assert_eq!(
            country_name_from_header("# Country: Korea (the Republic of) (KR)\n"),
            Some("Korea (the Republic of)".into())
        );
    }
}
