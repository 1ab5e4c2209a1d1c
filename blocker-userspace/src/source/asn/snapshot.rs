//! The bundled ASN snapshot (`data/asn.snapshot`), built by `cargo xtask
//! snapshot-asn` from ip-location-db's `asn` tables (RouteViews, the five RIRs
//! by way of the NRO, and DB-IP's IP to ASN Lite; CC BY 4.0); it lets ASN
//! policies work offline. Its format: deflate of `magic, source, date, count,
//! per system {asn delta, organisation}, per family {shift, count, per range
//! {start delta, span, system index}}`, addresses shifted right by the bits no
//! range uses, integers as LEB128 varints.

use std::io::{Read as _, Write as _};

use super::{db::AsnDb, Asn};
use crate::{
    net::{range_prefixes, Family},
    source::region::{
        db::SourceInfo,
        snapshot::{put_str, put_varint, Reader, SnapshotError},
    },
};

const MAGIC: &[u8] = b"BLKASN1\n";
static BUNDLED: &[u8] = include_bytes!("../../../data/asn.snapshot");

/// Where the bundled snapshot's data comes from, and its licence.
pub const DATA_SOURCE: &str = "ip-location-db asn (RouteViews, NRO, DB-IP IP to ASN Lite; CC BY 4.0)";

impl AsnDb {
    /// The snapshot compiled into the binary.
    pub fn bundled() -> Result<AsnDb, SnapshotError> {
        let mut db = decode(BUNDLED)?;
        for s in &mut db.sources {
            s.name = format!("bundled snapshot of {}", s.name);
        }
        Ok(db)
    }

    /// The date of the bundled snapshot's data (`YYYY-MM-DD`), without decoding it all.
    pub fn bundled_date() -> Result<String, SnapshotError> {
        let mut raw = Vec::new();
        // The header is in the first bytes: inflate only those.
        flate2::read::DeflateDecoder::new(BUNDLED)
            .take(4096)
            .read_to_end(&mut raw)
            .map_err(|error| SnapshotError::Inflate { error })?;
        let mut r = Reader { raw: &raw, at: MAGIC.len() };
        r.ensure(raw.starts_with(MAGIC), "not a blocker ASN snapshot")?;
        r.string()?;
        r.string()
    }
}

/// Encodes an ASN database: adjacent prefixes of one system become one range.
pub fn encode(db: &AsnDb, source: &str, date: &str) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::from(MAGIC);
    put_str(&mut out, source);
    put_str(&mut out, date);
    put_varint(&mut out, db.systems.len() as u128);
    let mut prev = 0u32;
    for s in db.systems.values() {
        put_varint(&mut out, u128::from(s.asn.0 - prev));
        put_str(&mut out, s.org.as_deref().unwrap_or(""));
        prev = s.asn.0;
    }
    for family in [Family::V4, Family::V6] {
        // (lo, hi, system index), merged where one system's prefixes touch.
        let ranges: Vec<(u128, u128, usize)> = db
            .systems
            .values()
            .enumerate()
            .flat_map(|(i, s)| s.prefixes.iter().filter(|p| p.family == family).map(move |p| (p.range(), i)))
            .map(|((lo, hi), i)| (lo, hi, i))
            .collect();
        // Each system's own prefixes are in order (normalized): touching ones merge.
        let mut merged: Vec<(u128, u128, usize)> = Vec::with_capacity(ranges.len());
        for r in ranges {
            match merged.last_mut() {
                Some(last) if last.2 == r.2 && (last.1 == u128::MAX || last.1 + 1 >= r.0) => last.1 = last.1.max(r.1),
                _ => merged.push(r),
            }
        }
        merged.sort_unstable();
        let aligned = |a: u128| if a == 0 { 128 } else { a.trailing_zeros() };
        let shift = merged
            .iter()
            .map(|&(lo, hi, _)| aligned(lo).min(if hi == family.max_addr() { 128 } else { aligned(hi + 1) }))
            .min()
            .unwrap_or(0)
            .min(u32::from(family.bits())) as u8;
        out.push(shift);
        put_varint(&mut out, merged.len() as u128);
        let unit = |a: u128| if shift >= 128 { 0 } else { a >> shift };
        let mut prev_lo = 0u128;
        for (lo, hi, i) in merged {
            put_varint(&mut out, unit(lo) - unit(prev_lo));
            put_varint(&mut out, unit(hi - lo));
            put_varint(&mut out, i as u128);
            prev_lo = lo;
        }
    }
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&out)?;
    z.finish()
}

pub fn decode(bytes: &[u8]) -> Result<AsnDb, SnapshotError> {
    let mut raw = Vec::new();
    flate2::read::DeflateDecoder::new(bytes).read_to_end(&mut raw).map_err(|error| SnapshotError::Inflate { error })?;
    let mut r = Reader { raw: &raw, at: MAGIC.len() };
    r.ensure(raw.starts_with(MAGIC), "not a blocker ASN snapshot")?;
    let source = r.string()?;
    let date = r.string()?;
    let mut asns: Vec<Asn> = Vec::new();
    let mut db = AsnDb::default();
    let mut asn = 0u128;
    for _ in 0..r.varint()? {
        asn += r.varint()?;
        let number = u32::try_from(asn).map_err(|_| r.corrupt("AS number over 32 bits"))?;
        r.ensure(number != 0 && asns.last().is_none_or(|l| l.0 < number), "AS numbers out of order")?;
        let org = r.string()?;
        asns.push(Asn(number));
        db.add(Asn(number), Some(&org), []);
    }
    for family in [Family::V4, Family::V6] {
        let shift = r.byte()?;
        r.ensure(shift <= family.bits(), "bad shift")?;
        let max_unit = if shift >= 128 { 0 } else { family.max_addr() >> shift };
        let mut lo_unit = 0u128;
        for _ in 0..r.varint()? {
            lo_unit = lo_unit
                .checked_add(r.varint()?)
                .filter(|u| *u <= max_unit)
                .ok_or_else(|| r.corrupt("address out of range"))?;
            let span = r.varint()?;
            let hi_unit =
                lo_unit.checked_add(span).filter(|u| *u <= max_unit).ok_or_else(|| r.corrupt("range out of range"))?;
            let i = usize::try_from(r.varint()?)
                .ok()
                .filter(|i| *i < asns.len())
                .ok_or_else(|| r.corrupt("bad system index"))?;
            let (lo, hi) = if shift >= 128 {
                (0, family.max_addr())
            } else {
                (lo_unit << shift, (hi_unit << shift) | ((1u128 << shift) - 1))
            };
            let system = db.systems.get_mut(&asns[i]).expect("added above");
            system.prefixes.extend(range_prefixes(family, lo, hi));
        }
    }
    db.normalize();
    db.sources.push(SourceInfo { name: source, date: Some(date) });
    Ok(db)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::parse_prefix;

    fn p(s: &str) -> crate::net::Prefix {
        parse_prefix(s).unwrap()
    }

    #[test]
    fn snapshot_round_trips_merging_touching_prefixes() {
        let mut db = AsnDb::default();
        db.add(Asn(13335), Some("Cloudflare, Inc."), [p("1.0.0.0/25"), p("1.0.0.128/25"), p("2606:4700::/32")]);
        db.add(Asn(4_200_000_000), None, [p("0.0.0.0/0"), p("::/0"), p("255.255.255.255"), p("ffff::1")]);
        db.add(Asn(7), Some("x"), [p("1.0.0.0/24")]); // overlaps another system
        db.normalize();
        let bytes = encode(&db, "test", "2026-06-17").unwrap();
        let back = decode(&bytes).unwrap();
        assert_eq!(back.systems[&Asn(13335)].prefixes, [p("1.0.0.0/24"), p("2606:4700::/32")]);
        assert_eq!(back.systems[&Asn(13335)].org.as_deref(), Some("Cloudflare, Inc."));
        // Prefixes inside another of the same system are covered by it.
        assert_eq!(back.systems[&Asn(4_200_000_000)].prefixes, [p("0.0.0.0/0"), p("::/0")]);
        assert_eq!(back.systems[&Asn(4_200_000_000)].org, None);
        assert_eq!(back.systems[&Asn(7)].prefixes, [p("1.0.0.0/24")]);
        assert_eq!(back.sources[0].date.as_deref(), Some("2026-06-17"));
    }

    #[test]
    fn a_damaged_snapshot_is_refused() {
        let mut db = AsnDb::default();
        db.add(Asn(1), Some("a"), [p("1.0.0.0/24")]);
        let bytes = encode(&db, "test", "2026-06-17").unwrap();
        assert!(decode(&bytes[..bytes.len() / 2]).is_err());
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        // One system, then a range whose index is past the systems.
        z.write_all(b"BLKASN1\n\x01t\x01d\x01\x01\x00\x00\x01\x00\x00\x05\x00").unwrap();
        let e = decode(&z.finish().unwrap()).unwrap_err();
        assert!(matches!(e, SnapshotError::Corrupt { reason: "bad system index", .. }), "{e}");
    }

    #[test]
    fn the_bundled_snapshot_is_the_full_table() {
        let db = AsnDb::bundled().unwrap();
        let v4: usize = db.systems.values().map(|s| s.count(Family::V4)).sum();
        let v6: usize = db.systems.values().map(|s| s.count(Family::V6)).sum();
        assert!(db.systems.len() > 80_000 && v4 > 400_000 && v6 > 100_000, "{} {v4} {v6}", db.systems.len());
        let cf = db.get(Asn(13335)).unwrap();
        assert_eq!(cf.org.as_deref(), Some("Cloudflare, Inc."));
        let one = p("1.1.1.1");
        assert!(db.containing(one.family, one.addr).iter().any(|s| s.asn == Asn(13335)));
        assert_eq!(AsnDb::bundled_date().unwrap(), db.sources[0].date.clone().unwrap());
    }
}
