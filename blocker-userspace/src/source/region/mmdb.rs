//! MaxMind-format (MMDB) country databases: GeoLite2-Country, DB-IP Country Lite,
//! ip-location-db. Every network of the search tree is walked once.
//!
//! IPv4 in an IPv6 database lives at `::/96`; the same subtree is usually reachable
//! again through aliases (`::ffff:0:0/96` IPv4-mapped, `2002::/16` 6to4). The reader
//! yields the `::/96` subtree as IPv4 networks and skips the aliases, so IPv4 space
//! is counted once and never as IPv6. A database that stores IPv4 only under
//! `::ffff:0:0/96` (no `::/96` subtree) has those networks converted to IPv4 here.

use std::path::Path;

use maxminddb::{PathElement, Reader, WithinOptions};

use super::{db::RegionDb, RegionError};
use crate::net::{ip_to_u128, Family, Prefix};

const METADATA_MARKER: &[u8] = b"\xAB\xCD\xEFMaxMind.com";

pub fn looks_like_mmdb(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(128 * 1024)..];
    tail.windows(METADATA_MARKER.len()).any(|w| w == METADATA_MARKER)
}

/// The country of a record: `country.iso_code` (GeoLite2, DB-IP), then
/// `country_code` (ip-location-db), then `registered_country.iso_code`.
fn country_of(result: &maxminddb::LookupResult<'_, &[u8]>) -> Result<Option<String>, maxminddb::MaxMindDbError> {
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

/// Checks that the search tree is a tree before anything walks it: every node is
/// reached by one path, except the IPv4 subtree's root, which real databases
/// alias from outside `::/96` (`::ffff:0:0/96`, `2002::/16`) and which the walk
/// skips there. A crafted file with shared nodes (2^128 paths through a few
/// nodes) or cycles is refused; this check and the walk after it take time in
/// proportion to the file's own node count.
fn check_search_tree(bytes: &[u8], node_count: u32, record_size: u16, ip_version: u16) -> Result<(), String> {
    let n = node_count as usize;
    let node_bytes = match record_size {
        24 => 6,
        28 => 7,
        32 => 8,
        other => return Err(format!("record size {other} (must be 24, 28 or 32)")),
    };
    if n.checked_mul(node_bytes).is_none_or(|tree| tree > bytes.len()) {
        return Err(format!("{n} nodes of {node_bytes} bytes do not fit in a file of {} bytes", bytes.len()));
    }
    let record = |node: usize, side: usize| -> usize {
        let b = &bytes[node * node_bytes..(node + 1) * node_bytes];
        let v = match (record_size, side) {
            (24, 0) => u32::from_be_bytes([0, b[0], b[1], b[2]]),
            (24, _) => u32::from_be_bytes([0, b[3], b[4], b[5]]),
            (28, 0) => u32::from_be_bytes([b[3] >> 4, b[0], b[1], b[2]]),
            (28, _) => u32::from_be_bytes([b[3] & 0x0f, b[4], b[5], b[6]]),
            (_, 0) => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            (_, _) => u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        };
        v as usize
    };
    let bits = if ip_version == 6 { 128 } else { 32 };
    let ipv4_start = (ip_version == 6)
        .then(|| {
            let mut node = 0;
            for _ in 0..96 {
                if node >= n {
                    break;
                }
                node = record(node, 0);
            }
            node
        })
        .filter(|&node| node < n && node != 0);
    let mut seen = vec![0u64; n.div_ceil(64)];
    let mut ipv4_reached_at_96 = false;
    // (node, depth, whether every bit of the path so far is 0: inside ::/96)
    let mut stack = vec![(0usize, 0u32, true)];
    while let Some((node, depth, zero_path)) = stack.pop() {
        if depth >= bits {
            return Err(format!("the search tree is deeper than {bits} bits (a cycle?)"));
        }
        for side in 0..2 {
            let child = record(node, side);
            if child >= n {
                continue; // data, or no data
            }
            let child_zero = zero_path && side == 0;
            let was_seen = seen[child / 64] & (1 << (child % 64)) != 0;
            seen[child / 64] |= 1 << (child % 64);
            if Some(child) == ipv4_start {
                // Reached once through ::/96, and from elsewhere only as an alias
                // (which the walk skips). Its place is ::/96, whichever path
                // reaches it first.
                if child_zero {
                    if ipv4_reached_at_96 {
                        return Err(format!("search tree node {child} is reached twice inside ::/96 (a cycle)"));
                    }
                    ipv4_reached_at_96 = true;
                }
                if !was_seen {
                    stack.push((child, 96, true));
                }
                continue;
            }
            if was_seen {
                return Err(format!("search tree node {child} is reached by two paths (shared nodes or a cycle)"));
            }
            stack.push((child, depth + 1, child_zero));
        }
    }
    Ok(())
}

pub fn read(path: &Path, source: &str) -> Result<RegionDb, RegionError> {
    let bytes = crate::source::input::read_file(path, crate::source::input::MAX_SOURCE_BYTES)?;
    read_bytes(bytes, source)
}

/// Reads an MMDB database held in memory (`source` names it in errors).
pub fn read_bytes(bytes: Vec<u8>, source: &str) -> Result<RegionDb, RegionError> {
    let mut db = RegionDb::default();
    let mut networks = 0usize;
    walk(&bytes, source, |prefix, network, result| {
        let Some(code) = country_of(result).map_err(|e| format!("bad record for {network}: {e}"))? else {
            return Ok(()); // e.g. anonymous proxies with no country
        };
        networks += 1;
        if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(format!("network {network}: country code {code:?} is not two letters"));
        }
        db.add(&code, None, source, [prefix]);
        Ok(())
    })?;
    if networks == 0 {
        return Err(RegionError::Mmdb {
            source_name: source.to_owned(),
            reason: "no network carries a country code".into(),
        });
    }
    db.normalize();
    Ok(db)
}

/// Walks every network of an MMDB database once, checked first (see
/// `check_search_tree`), handing `each` the network as a prefix (IPv4 as IPv4),
/// its text and its record. An error of `each` stops the walk, naming `source`.
pub(crate) fn walk(
    bytes: &[u8],
    source: &str,
    mut each: impl FnMut(Prefix, &dyn std::fmt::Display, &maxminddb::LookupResult<'_, &[u8]>) -> Result<(), String>,
) -> Result<(), RegionError> {
    let bad = |reason: String| RegionError::Mmdb { source_name: source.to_owned(), reason };
    let reader = Reader::from_source(bytes).map_err(|e| bad(format!("not a readable MMDB database: {e}")))?;
    let meta = reader.metadata();
    check_search_tree(bytes, meta.node_count, meta.record_size, meta.ip_version)
        .map_err(|e| bad(format!("not a valid MMDB database: {e}")))?;
    let networks_in =
        reader.networks(WithinOptions::default()).map_err(|e| bad(format!("cannot walk the tree: {e}")))?;
    for item in networks_in {
        let result = item.map_err(|e| bad(format!("corrupt search tree: {e}")))?;
        let network = result.network().map_err(|e| bad(format!("bad network: {e}")))?;
        let (family, addr) = ip_to_u128(network.network());
        let mut prefix = Prefix { family, addr, len: network.prefix() };
        // IPv4-mapped ::ffff:a.b.c.d/len (len >= 96) stored without a ::/96 subtree.
        if family == Family::V6 && prefix.len >= 96 && addr >> 32 == 0xffff {
            prefix = Prefix { family: Family::V4, addr: addr & 0xffff_ffff, len: prefix.len - 96 };
        }
        each(prefix, &network, &result).map_err(bad)?;
    }
    Ok(())
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

    /// The database in a file of its own, removed when the returned handle drops.
    fn write(name: &str, bytes: Vec<u8>) -> tempfile::NamedTempFile {
        let file = tempfile::Builder::new().prefix(name).suffix(".mmdb").tempfile().unwrap();
        std::fs::write(file.path(), bytes).unwrap();
        file
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
        let db = read(path.path(), "test.mmdb").unwrap();
        assert_eq!(prefixes(&db, "AU"), ["192.0.2.0/24", "2001:db8::/32"]);
        assert_eq!(prefixes(&db, "NZ"), ["198.51.100.0/25"]);
    }

    #[test]
    fn ipv4_mapped_only_database_and_ip_location_db_layout() {
        let mut w = Writer::new();
        w.insert((0xffffu128 << 32) | v4([203, 0, 113, 0]), 96 + 24, "JP", &Layout::IpLocationDb);
        w.insert(0x2001_0db8_0001u128 << 80, 48, "JP", &Layout::IpLocationDb);
        let path = write("mapped", w.finish());
        let db = read(path.path(), "test.mmdb").unwrap();
        assert_eq!(prefixes(&db, "JP"), ["203.0.113.0/24", "2001:db8:1::/48"]);
    }

    /// A crafted tree whose nodes are shared: 2^127 paths through 128 nodes. The
    /// walk would never end; the file is refused at once.
    #[test]
    fn shared_nodes_are_refused_in_time_proportional_to_the_file() {
        let mut w = Writer::new();
        let host = 0x2001_0db8u128 << 96;
        w.insert(host, 128, "AU", &Layout::GeoIp2);
        w.share_nodes_along(host, 128);
        let started = std::time::Instant::now();
        let e = read_bytes(w.finish(), "crafted.mmdb").unwrap_err();
        assert!(
            matches!(&e, RegionError::Mmdb { source_name, reason }
                if source_name == "crafted.mmdb" && reason.contains("reached by two paths")),
            "{e}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        // The aliases of real databases are not sharing.
        let mut w = Writer::new();
        w.insert(v4([192, 0, 2, 0]), 96 + 24, "AU", &Layout::GeoIp2);
        w.alias_ipv4(0xffffu128 << 32, 96);
        w.alias_ipv4(0x2002u128 << 112, 16);
        assert!(read_bytes(w.finish(), "aliases.mmdb").is_ok());
    }

    #[test]
    fn not_an_mmdb_file() {
        let path = write("garbage", b"hello".to_vec());
        let e = read(path.path(), "bad.mmdb").unwrap_err();
        assert!(matches!(&e, RegionError::Mmdb { reason, .. } if reason.starts_with("not a readable MMDB")), "{e}");
        assert!(format!("{e:#}").contains("bad.mmdb: not a readable MMDB"), "{e:#}");
    }
}
