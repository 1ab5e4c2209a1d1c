//! `start,end,country` range files (DB-IP, ip-location-db), dotted or numeric.

use super::{parse_csv_address, record_error, valid_code, RegionError};
use crate::{net::range_to_prefixes, source::region::db::RegionDb};

/// `start,end,country[,...]` ranges, addresses dotted/colon or numeric, fields
/// optionally quoted; a header line is skipped; empty and `ZZ` countries are
/// unassigned space and skipped.
pub fn parse_csv(source: &str, text: &str, db: &mut RegionDb) -> Result<(), RegionError> {
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
                log::info!("{source}: line 1 is a header, skipped: {}", crate::source::input::quote(raw));
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
        return Err(RegionError::Empty {
            source_name: source.to_owned(),
            what: "rows",
            format: "start,end,country CSV",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::region::tests::strs;

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
    fn csv_errors_are_records_with_line_and_reason() {
        let e = parse_csv("c.csv", "1.0.0.0,1.0.0.255,AU\n1.0.0.0,::1,AU\n", &mut RegionDb::default()).unwrap_err();
        assert!(
            matches!(&e, RegionError::Record(r) if r.line == 2 && r.reason.contains("different address families")),
            "{e}"
        );
        assert!(matches!(
            parse_csv("c.csv", "", &mut RegionDb::default()),
            Err(RegionError::Empty { what: "rows", .. })
        ));
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
}
