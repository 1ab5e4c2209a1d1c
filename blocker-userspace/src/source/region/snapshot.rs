//! The bundled snapshot (`data/countries.snapshot`), built from the ipverse
//! country-ip-blocks data set (CC0 1.0) by `cargo xtask snapshot`; it lets country
//! blocking work offline. Its format: deflate of
//! `magic, source, date, count, per country {code, name, per family {shift, count,
//! (delta of addr >> shift, len)*}}`, integers as LEB128 varints.

use std::io::{Read as _, Write as _};

use crate::{
    net::{Family, Prefix},
    source::region::db::{RegionDb, SourceInfo},
};

const MAGIC: &[u8] = b"BLKRGN1\n";
static BUNDLED: &[u8] = include_bytes!("../../../data/countries.snapshot");

/// Why a snapshot cannot be decoded.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("the region snapshot does not inflate: {error}")]
    Inflate { error: std::io::Error },
    #[error("the region snapshot is corrupt: {reason} at byte {at}")]
    Corrupt { reason: &'static str, at: usize },
}

impl RegionDb {
    /// The snapshot compiled into the binary.
    pub fn bundled() -> Result<RegionDb, SnapshotError> {
        decode_snapshot(BUNDLED)
    }
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u128) {
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

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u128);
    out.extend_from_slice(s.as_bytes());
}

/// The decoded bytes, and how far into them the decoder is.
pub(crate) struct Reader<'a> {
    pub(crate) raw: &'a [u8],
    pub(crate) at: usize,
}

type Result<T, E = SnapshotError> = std::result::Result<T, E>;

impl Reader<'_> {
    pub(crate) fn corrupt(&self, reason: &'static str) -> SnapshotError {
        SnapshotError::Corrupt { reason, at: self.at }
    }
    pub(crate) fn ensure(&self, ok: bool, reason: &'static str) -> Result<()> {
        if ok {
            Ok(())
        } else {
            Err(self.corrupt(reason))
        }
    }
    pub(crate) fn byte(&mut self) -> Result<u8> {
        let b = *self.raw.get(self.at).ok_or_else(|| self.corrupt("truncated"))?;
        self.at += 1;
        Ok(b)
    }
    pub(crate) fn varint(&mut self) -> Result<u128> {
        let mut v: u128 = 0;
        for shift in (0..128).step_by(7) {
            let b = self.byte()?;
            v |= u128::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.corrupt("varint too long"))
    }
    pub(crate) fn string(&mut self) -> Result<String> {
        let n = self.varint()?;
        let end = usize::try_from(n).ok().and_then(|n| self.at.checked_add(n)).filter(|&e| e <= self.raw.len());
        let end = end.ok_or_else(|| self.corrupt("truncated string"))?;
        let text = String::from_utf8(self.raw[self.at..end].to_vec()).map_err(|_| self.corrupt("not UTF-8"))?;
        self.at = end;
        Ok(text)
    }
}

/// Encodes a region database as a compressed snapshot.
pub fn encode_snapshot(db: &RegionDb, source: &str, date: &str) -> std::io::Result<Vec<u8>> {
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
    z.finish()
}

pub fn decode_snapshot(bytes: &[u8]) -> Result<RegionDb> {
    let mut raw = Vec::new();
    flate2::read::DeflateDecoder::new(bytes).read_to_end(&mut raw).map_err(|error| SnapshotError::Inflate { error })?;
    let mut r = Reader { raw: &raw, at: MAGIC.len() };
    r.ensure(raw.starts_with(MAGIC), "not a blocker region snapshot")?;
    let source = r.string()?;
    let date = r.string()?;
    let mut db = RegionDb::default();
    for _ in 0..r.varint()? {
        let code = r.string()?;
        let name = r.string()?;
        let mut prefixes = Vec::new();
        for family in [Family::V4, Family::V6] {
            let shift = r.byte()?;
            r.ensure(shift <= family.bits(), "bad shift")?;
            let mut unit = 0u128;
            for _ in 0..r.varint()? {
                unit = unit.checked_add(r.varint()?).ok_or_else(|| r.corrupt("address out of range"))?;
                let len = r.byte()?;
                r.ensure(len <= family.bits(), "bad prefix length")?;
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
    use crate::net::parse_prefix;

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
    fn a_damaged_snapshot_is_refused_with_where() {
        let mut db = RegionDb::default();
        db.add("DE", Some("Germany"), "test", [p("2.16.0.0/13")]);
        let bytes = encode_snapshot(&db, "test", "2026-01-01").unwrap();
        assert!(matches!(decode_snapshot(&bytes[..bytes.len() / 2]), Err(SnapshotError::Inflate { .. })));
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(b"BLKRGN1\n\x05test").unwrap();
        let truncated = z.finish().unwrap();
        assert!(matches!(
            decode_snapshot(&truncated),
            Err(SnapshotError::Corrupt { reason: "truncated string", at: 9 })
        ));
    }
}
