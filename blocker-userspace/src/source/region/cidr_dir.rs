//! The country-ip-blocks layout: `country/<cc>/ipv{4,6}-aggregated.txt`.

use std::path::Path;

use crate::source::{
    cidr_list::read_list,
    region::{
        db::{RegionDb, SourceInfo},
        RegionError,
    },
};

impl RegionDb {
    /// Reads a country-ip-blocks style directory: `country/<cc>/ipv{4,6}-aggregated.txt`
    /// (or `<cc>/...` directly), names from the files' `# Country: Name (CC)` header.
    pub fn from_cidr_dir(dir: &Path, source: &str) -> Result<RegionDb, RegionError> {
        let base = if dir.join("country").is_dir() { dir.join("country") } else { dir.to_owned() };
        let mut db = RegionDb::default();
        let unreadable = |error| RegionError::Directory { dir: base.clone(), error };
        let entries = std::fs::read_dir(&base).map_err(unreadable)?;
        for entry in entries {
            let entry = entry.map_err(unreadable)?;
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
                    name = country_name_from_header(&crate::source::input::read_text(
                        &path,
                        crate::source::input::MAX_SOURCE_BYTES,
                    )?);
                }
            }
            db.add(&code, name.as_deref(), source, prefixes);
        }
        if db.regions.is_empty() {
            return Err(RegionError::NoCountryDirectories { dir: base });
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_from_header() {
        assert_eq!(
            country_name_from_header("# Country: Korea (the Republic of) (KR)\n"),
            Some("Korea (the Republic of)".into())
        );
    }
}
