//! Regions (countries) and their prefixes: the region database that every region
//! source fills, and country-code validation with suggestions.

use std::collections::BTreeMap;

use crate::net::{Family, Prefix};

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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
