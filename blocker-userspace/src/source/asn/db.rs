//! The ASN database every ASN source fills: each autonomous system with its
//! organisation and prefixes.

use std::collections::BTreeMap;

use super::Asn;
use crate::{
    net::{Family, Prefix},
    source::region::db::SourceInfo,
};

/// The longest organisation name kept (real ones are under 100 bytes).
pub const MAX_ORG_LEN: usize = 256;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutonomousSystem {
    pub asn: Asn,
    /// The organisation the data names (control characters replaced).
    pub org: Option<String>,
    pub prefixes: Vec<Prefix>,
}

impl AutonomousSystem {
    pub fn count(&self, family: Family) -> usize {
        self.prefixes.iter().filter(|p| p.family == family).count()
    }

    /// Addresses covered in a family (IPv6 in /64s), saturating.
    pub fn size(&self, family: Family) -> u128 {
        let shift = if family == Family::V6 { 64 } else { 0 };
        self.prefixes
            .iter()
            .filter(|p| p.family == family)
            .map(|p| {
                let host = u32::from(family.bits() - p.len);
                if host <= shift {
                    1
                } else {
                    1u128.checked_shl(host - shift).unwrap_or(u128::MAX)
                }
            })
            .fold(0u128, u128::saturating_add)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AsnDb {
    pub systems: BTreeMap<Asn, AutonomousSystem>,
    pub sources: Vec<SourceInfo>,
}

/// An AS number the loaded data has no prefix for.
#[derive(Debug, thiserror::Error)]
#[error("{asn} has no prefix in the ASN data ({data}): check the number, or give data that has it with --asn-source; `blocker regions list --asn` lists the known ones")]
pub struct UnknownAsn {
    pub asn: Asn,
    pub data: String,
}

/// An organisation name made safe to print: control characters replaced, cut to
/// `MAX_ORG_LEN` bytes on a character boundary.
pub fn clean_org(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len().min(MAX_ORG_LEN));
    for c in raw.trim().chars() {
        if out.len() + c.len_utf8() > MAX_ORG_LEN {
            break;
        }
        // Controls, and the invisible characters that reorder or hide text
        // (bidi overrides and isolates, zero-width ones, the BOM).
        let invisible =
            matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}');
        out.push(if c.is_control() || invisible { '?' } else { c });
    }
    (!out.is_empty()).then_some(out)
}

impl AsnDb {
    pub fn prefix_count(&self) -> usize {
        self.systems.values().map(|s| s.prefixes.len()).sum()
    }

    /// Adds prefixes of `asn`; the first organisation name given is kept.
    pub fn add(&mut self, asn: Asn, org: Option<&str>, prefixes: impl IntoIterator<Item = Prefix>) {
        let entry =
            self.systems.entry(asn).or_insert_with(|| AutonomousSystem { asn, org: None, prefixes: Vec::new() });
        if entry.org.is_none() {
            entry.org = org.and_then(clean_org);
        }
        entry.prefixes.extend(prefixes);
    }

    /// Sorts and deduplicates every system's prefixes.
    pub fn normalize(&mut self) {
        for s in self.systems.values_mut() {
            s.prefixes.sort_unstable();
            s.prefixes.dedup();
            // The whole table is held while a policy or the CrowdSec feed needs it.
            s.prefixes.shrink_to_fit();
        }
    }

    pub fn merge(&mut self, other: AsnDb) {
        for (_, s) in other.systems {
            self.add(s.asn, s.org.as_deref(), s.prefixes);
        }
        self.sources.extend(other.sources);
        self.normalize();
    }

    /// Where the data comes from, for messages.
    pub fn describe(&self) -> String {
        self.sources
            .iter()
            .map(|s| match &s.date {
                Some(d) => format!("{} of {d}", s.name),
                None => s.name.clone(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn get(&self, asn: Asn) -> Result<&AutonomousSystem, UnknownAsn> {
        self.systems.get(&asn).ok_or_else(|| UnknownAsn { asn, data: self.describe() })
    }

    /// The systems whose prefixes contain the address, most specific first.
    pub fn containing(&self, family: Family, addr: u128) -> Vec<&AutonomousSystem> {
        let mut out: Vec<(u8, &AutonomousSystem)> = self
            .systems
            .values()
            .filter_map(|s| {
                s.prefixes.iter().filter(|p| p.contains(family, addr)).map(|p| p.len).max().map(|len| (len, s))
            })
            .collect();
        out.sort_by_key(|(len, s)| (std::cmp::Reverse(*len), s.asn));
        out.into_iter().map(|(_, s)| s).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::parse_prefix;

    #[test]
    fn orgs_are_cleaned_and_bounded() {
        assert_eq!(clean_org("  Cloudflare, Inc. ").as_deref(), Some("Cloudflare, Inc."));
        assert_eq!(clean_org("evil\x1b[31m\n").as_deref(), Some("evil?[31m"));
        assert_eq!(clean_org("abc\u{202e}fed\u{200b}").as_deref(), Some("abc?fed?"));
        assert_eq!(clean_org("   "), None);
        let long = "é".repeat(300);
        let c = clean_org(&long).unwrap();
        assert!(c.len() <= MAX_ORG_LEN && c.chars().all(|x| x == 'é'));
    }

    #[test]
    fn containing_puts_the_most_specific_first_and_unknown_asns_say_what_to_do() {
        let mut db = AsnDb::default();
        db.add(Asn(1), Some("Big"), [parse_prefix("10.0.0.0/8").unwrap()]);
        db.add(Asn(2), Some("Small"), [parse_prefix("10.1.0.0/16").unwrap()]);
        db.add(Asn(1), Some("Other name"), [parse_prefix("2001:db8::/32").unwrap()]);
        let a = parse_prefix("10.1.2.3").unwrap();
        let found: Vec<u32> = db.containing(a.family, a.addr).iter().map(|s| s.asn.0).collect();
        assert_eq!(found, [2, 1]);
        assert_eq!(db.systems[&Asn(1)].org.as_deref(), Some("Big"));
        assert_eq!(db.systems[&Asn(1)].size(Family::V4), 1 << 24);
        assert_eq!(db.systems[&Asn(1)].size(Family::V6), 1 << 32);
        let e = db.get(Asn(3)).unwrap_err().to_string();
        assert!(e.starts_with("AS3 has no prefix in the ASN data") && e.contains("regions list --asn"), "{e}");
    }
}
