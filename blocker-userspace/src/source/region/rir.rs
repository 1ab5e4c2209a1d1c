//! The RIR statistics exchange format (`delegated-<rir>-[extended-]latest`).

use std::net::IpAddr;

use super::{record_error, valid_code, RegionError};
use crate::{
    net::{ip_to_u128, parse_prefix, range_to_prefixes, Family},
    source::region::db::RegionDb,
};

/// Statuses that are delegations: the address space is in use in that country.
pub const RIR_STATUSES: [&str; 2] = ["allocated", "assigned"];

/// RIR statistics exchange format: skips the version line, summary lines and
/// comments; IPv4 values are address counts (split into exact CIDRs), IPv6 values
/// prefix lengths; only allocated and assigned records count.
pub fn parse_rir(source: &str, text: &str, db: &mut RegionDb) -> Result<(), RegionError> {
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
        return Err(RegionError::Empty { source_name: source.to_owned(), what: "records", format: "RIR statistics" });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::region::tests::strs;

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

    /// The record error's line and reason.
    fn refused(text: &str) -> (usize, String) {
        match parse_rir("afr.txt", text, &mut RegionDb::default()) {
            Err(RegionError::Record(r)) => (r.line, r.reason),
            other => panic!("expected a record error, got {other:?}"),
        }
    }

    #[test]
    fn rir_errors_name_line_and_content() {
        assert_eq!(refused("x|ZA|ipv4|255.255.255.0|512|1|allocated\n"), (1, "address count out of range".into()));
        assert_eq!(refused("2|x|1|1|1|1|1\nx|ZA|ipv6|192.0.2.0|32|1|allocated\n").0, 2);
        assert!(matches!(
            parse_rir("afr.txt", "# nothing\n", &mut RegionDb::default()),
            Err(RegionError::Empty { what: "records", .. })
        ));
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
}
