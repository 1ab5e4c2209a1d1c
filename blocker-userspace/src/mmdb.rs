//! MaxMind-format (MMDB) country databases: GeoLite2-Country, DB-IP Country Lite,
//! ip-location-db. Every network of the search tree is walked once.
//!
//! IPv4 in an IPv6 database lives at `::/96`; the same subtree is usually reachable
//! again through aliases (`::ffff:0:0/96` IPv4-mapped, `2002::/16` 6to4). The reader
//! yields the `::/96` subtree as IPv4 networks and skips the aliases, so IPv4 space
//! is counted once and never as IPv6. A database that stores IPv4 only under
//! `::ffff:0:0/96` (no `::/96` subtree) has those networks converted to IPv4 here.

use std::path::Path;

use anyhow::{Context as _, Result};
use maxminddb::{PathElement, Reader, WithinOptions};

use crate::{
    lists::{ip_to_u128, Family, Prefix},
    regions::RegionDb,
};

const METADATA_MARKER: &[u8] = b"\xAB\xCD\xEFMaxMind.com";

pub fn looks_like_mmdb(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(128 * 1024)..];
    tail.windows(METADATA_MARKER.len()).any(|w| w == METADATA_MARKER)
}

/// The country of a record: `country.iso_code` (GeoLite2, DB-IP), then
/// `country_code` (ip-location-db), then `registered_country.iso_code`.
fn country_of(result: &maxminddb::LookupResult<'_, Vec<u8>>) -> Result<Option<String>, maxminddb::MaxMindDbError> {
    for path in [
        &[PathElement::Key("country"), PathElement::Key("iso_code")][..],
        &[PathElement::Key("country_code")][..],
        &[PathElement::Key("registered_country"), PathElement::Key("iso_code")][..],
    ] {
        if let Some(code) = result.decode_path::<String>(path)? {
            return Ok(Some(code));
        }
    }
    Ok(None)
}

pub fn read(path: &Path, source: &str) -> Result<RegionDb> {
    let bytes = crate::input::read_file(path, crate::input::MAX_SOURCE_BYTES)?;
    let reader = Reader::from_source(bytes).with_context(|| format!("{source}: not a readable MMDB database"))?;
    let mut db = RegionDb::default();
    let mut networks = 0usize;
    for item in reader.networks(WithinOptions::default()).with_context(|| format!("{source}: cannot walk the tree"))? {
        let result = item.with_context(|| format!("{source}: corrupt search tree"))?;
        let network = result.network().with_context(|| format!("{source}: bad network"))?;
        let Some(code) = country_of(&result).with_context(|| format!("{source}: bad record for {network}"))? else {
            continue; // e.g. anonymous proxies with no country
        };
        networks += 1;
        let (family, addr) = ip_to_u128(network.network());
        let mut prefix = Prefix { family, addr, len: network.prefix() };
        // IPv4-mapped ::ffff:a.b.c.d/len (len >= 96) stored without a ::/96 subtree.
        if family == Family::V6 && prefix.len >= 96 && addr >> 32 == 0xffff {
            prefix = Prefix { family: Family::V4, addr: addr & 0xffff_ffff, len: prefix.len - 96 };
        }
        if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_alphabetic()) {
            anyhow::bail!("{source}: network {network}: country code {code:?} is not two letters");
        }
        db.add(&code, None, source, [prefix]);
    }
    anyhow::ensure!(networks > 0, "{source}: no network carries a country code");
    db.normalize();
    Ok(db)
}

#[cfg(test)]
mod tests {
    use blocker_tests::mmdb::{Layout, Writer};

    use super::*;

    fn v4(a: [u8; 4]) -> u128 {
        u128::from(u32::from_be_bytes(a))
    }

    fn prefixes(db: &RegionDb, cc: &str) -> Vec<String> {
        db.regions[cc].prefixes.iter().map(Prefix::to_string).collect()
    }

    fn write(name: &str, bytes: Vec<u8>) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("blocker-{name}-{}.mmdb", std::process::id()));
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn aliased_ipv4_subtree_is_read_once_as_ipv4() {
        let mut w = Writer::new();
        // IPv4 192.0.2.0/24 and 198.51.100.0/25 at ::/96; IPv6 2001:db8::/32.
        w.insert(v4([192, 0, 2, 0]), 96 + 24, "AU", &Layout::GeoIp2);
        w.insert(v4([198, 51, 100, 0]), 96 + 25, "NZ", &Layout::GeoIp2);
        w.insert(0x2001_0db8u128 << 96, 32, "AU", &Layout::GeoIp2);
        w.alias_ipv4(0xffffu128 << 32, 96); // ::ffff:0:0/96
        w.alias_ipv4(0x2002u128 << 112, 16); // 2002::/16
        let path = write("aliased", w.finish());
        assert!(looks_like_mmdb(&std::fs::read(&path).unwrap()));
        let db = read(&path, "test.mmdb").unwrap();
        assert_eq!(prefixes(&db, "AU"), ["192.0.2.0/24", "2001:db8::/32"]);
        assert_eq!(prefixes(&db, "NZ"), ["198.51.100.0/25"]);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn ipv4_mapped_only_database_and_ip_location_db_layout() {
        let mut w = Writer::new();
        w.insert((0xffffu128 << 32) | v4([203, 0, 113, 0]), 96 + 24, "JP", &Layout::IpLocationDb);
        w.insert(0x2001_0db8_0001u128 << 80, 48, "JP", &Layout::IpLocationDb);
        let path = write("mapped", w.finish());
        let db = read(&path, "test.mmdb").unwrap();
        assert_eq!(prefixes(&db, "JP"), ["203.0.113.0/24", "2001:db8:1::/48"]);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn not_an_mmdb_file() {
        let path = write("garbage", b"hello".to_vec());
        let e = read(&path, "bad.mmdb").unwrap_err();
        assert!(format!("{e:#}").contains("bad.mmdb: not a readable MMDB"), "{e:#}");
        let _ = std::fs::remove_file(path);
    }
}
